//! The in-process embedder: all-MiniLM-L6-v2 run on the CPU with candle.
//!
//! Owns finding the model files on disk, loading tokenizer, config and weights, and turning
//! texts into 384-wide, mean-pooled, L2-normalised vectors that match sentence-transformers.
//! It must not download anything ([`super::download`] does that, before the model is
//! loaded; the hashes both check are in [`super::pins`]) and must not touch the database; it only answers [`Embedder::embed`]. It refuses
//! weights or a tokenizer whose sha256 is not the pinned one: either would silently change
//! every vector.
//!
//! The forward pass is CPU-bound, so it runs on tokio's blocking pool, never on a runtime
//! worker: a long batch must not stall the JSON-RPC loop or the writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use super::bert::MiniLm;
use super::chunk::split;
use super::{EmbedError, EmbedFuture, Embedder, PiecesFuture};

/// Name recorded with every index this embedder fills.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Width of every vector this model produces.
pub const DIMENSION: usize = 384;
pub use super::pins::{MODEL_SHA256, TOKENIZER_SHA256};

/// sentence-transformers' `max_seq_length` for this model (sentence_bert_config.json). The
/// tokenizer.json it ships says 128, which is not what the reference embeddings used.
const MAX_TOKENS: usize = 256;
/// Most tokens of one chunk of a long text: the window less its two special tokens, so each
/// chunk is read whole. Chunks share an eighth of it (31 tokens, about a sentence) with the
/// one before, so a sentence cut at a chunk's end is read whole by the next.
pub const WINDOW: usize = MAX_TOKENS - 2;
/// Rows per forward pass. Texts are sorted by length first, so a chunk pads little; the cap
/// bounds the (rows x heads x len x len) attention buffers for big batches.
const CHUNK_ROWS: usize = 32;
/// Padded tokens per forward pass (rows x longest text): keeps a pass's attention scores
/// (rows x 12 heads x length²) within the caches' reach instead of hundreds of MB.
const CHUNK_TOKENS: usize = 2048;
/// The three files `stride-vectors model fetch` puts in place.
const REQUIRED_FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

/// all-MiniLM-L6-v2, loaded once and shared by every `embed` call.
#[derive(Clone)]
pub struct LocalEmbedder {
    shared: Arc<LocalModel>,
}

/// What the blocking task needs. Everything in it is read-only after loading, so concurrent
/// forward passes may share it without a lock.
struct LocalModel {
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation: how long a text really is.
    counter: Tokenizer,
    bert: MiniLm,
    device: Device,
    pad_id: u32,
}

// The Arc above is only sound to hand to spawn_blocking if this holds; fail the build, not
// a user, if a candle or tokenizers upgrade ever changes it.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<LocalModel>();
};

impl LocalEmbedder {
    /// Where the model lives: `explicit` (`--model-dir`) when given, else the cache
    /// directory that `stride-vectors model fetch` fills. An explicit directory that lacks the
    /// files is an error rather than a silent fallback, so a typo in the flag is noticed.
    pub fn find_model_dir(explicit: Option<&Path>) -> Result<PathBuf, EmbedError> {
        let dir = model_dir(explicit)?;
        match missing_files(&dir) {
            None => Ok(dir),
            Some(missing) => Err(not_found(&dir, &missing, explicit.is_some())),
        }
    }

    /// Loads tokenizer, config and weights from `dir` (see [`Self::find_model_dir`]), after
    /// checking the sha256 of the weights and the tokenizer.
    pub fn load(dir: &Path) -> Result<LocalEmbedder, EmbedError> {
        verify(&dir.join("model.safetensors"), MODEL_SHA256)?;
        verify(&dir.join("tokenizer.json"), TOKENIZER_SHA256)?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        let mut counter = tokenizer.clone();
        counter
            .with_truncation(None)
            .map_err(|e| EmbedError::Permanent(format!("cannot unset truncation: {e}")))?;
        let config = load_config(&dir.join("config.json"))?;
        let device = Device::Cpu;
        let bert = load_weights(&dir.join("model.safetensors"), &config, &device)?;
        let pad_id = u32::try_from(config.pad_token_id)
            .map_err(|_| EmbedError::Permanent("config.json: pad_token_id out of range".into()))?;
        tracing::info!(dir = %dir.display(), model = MODEL_NAME, "local embedding model loaded");
        let model = LocalModel {
            tokenizer,
            counter,
            bert,
            device,
            pad_id,
        };
        Ok(LocalEmbedder {
            shared: Arc::new(model),
        })
    }

    /// The token ids the model sees for `text`, special tokens included.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        Ok(self.shared.encode(text)?.get_ids().to_vec())
    }

    /// How many tokens `text` is, special tokens left out and nothing cut: what a text must
    /// stay within (the window less two) to be read whole.
    pub fn count_tokens(&self, text: &str) -> Result<usize, EmbedError> {
        let encoding = self
            .shared
            .counter
            .encode(text, false)
            .map_err(|e| EmbedError::Permanent(format!("tokenizing failed: {e}")))?;
        Ok(encoding.get_ids().len())
    }
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The weights are not worth printing; the name says which model this is.
        f.debug_struct("LocalEmbedder")
            .field("model", &MODEL_NAME)
            .finish_non_exhaustive()
    }
}

impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        MODEL_NAME
    }

    fn dimension(&self) -> Option<usize> {
        Some(DIMENSION)
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        // Owned copies: the blocking task may outlive this borrow if the caller is dropped.
        let model = Arc::clone(&self.shared);
        let texts = texts.to_vec();
        Box::pin(async move {
            if texts.is_empty() {
                return Ok(Vec::new());
            }
            match tokio::task::spawn_blocking(move || model.embed_blocking(&texts)).await {
                Ok(result) => result,
                Err(e) => Err(join_error(e)),
            }
        })
    }

    /// Pieces of at most the window less its two special tokens, counted by the model's own
    /// tokenizer, so that every piece is read whole.
    fn pieces<'a>(&'a self, text: &'a str) -> PiecesFuture<'a> {
        let me = self.clone();
        let text = text.to_string();
        Box::pin(async move {
            let split = move || {
                // A text the tokenizer fails on counts one token per byte: still split, and
                // the embedding then reports the tokenizer's error.
                let count = |s: &str| me.count_tokens(s).unwrap_or(s.len());
                split(&text, WINDOW, WINDOW / 8, count)
            };
            tokio::task::spawn_blocking(split).await.map_err(join_error)
        })
    }
}

impl LocalModel {
    fn encode(&self, text: &str) -> Result<Encoding, EmbedError> {
        self.tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Permanent(format!("tokenizing failed: {e}")))
    }

    /// Embeds in chunks of similar length and puts the vectors back in input order. The
    /// chunks run on one thread per core: many of a forward pass's operations (softmax,
    /// GELU, layer norms, attention's small products) use one core each, so one pass at a
    /// time left the other core mostly idle.
    fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunks = chunk_by_size(&order, &encodings, threads);

        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || -> Result<Vec<(usize, Vec<f32>)>, EmbedError> {
            let mut done = Vec::new();
            loop {
                let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(chunk) = chunks.get(at) else {
                    return Ok(done);
                };
                let batch: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
                let vectors = self
                    .forward(&batch)
                    .map_err(|e| EmbedError::Permanent(format!("{MODEL_NAME} forward pass failed: {e}")))?;
                done.extend(chunk.iter().copied().zip(vectors.into_iter().map(l2_normalised)));
            }
        };
        let results: Vec<_> = std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads.min(chunks.len()))
                .map(|_| scope.spawn(work))
                .collect();
            let mut results = vec![work()];
            for helper in helpers {
                results.push(helper.join().unwrap_or_else(|_| {
                    Err(EmbedError::Permanent(format!(
                        "{MODEL_NAME}: a forward pass panicked"
                    )))
                }));
            }
            results
        });
        let mut out = vec![Vec::new(); encodings.len()];
        for result in results {
            for (i, v) in result? {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One padded forward pass; returns the mask-aware mean of the last hidden states.
    /// Padding goes on the right and is masked out of both attention and the mean, so each
    /// row equals what the text alone would give (positions 0..len are unchanged).
    fn forward(&self, batch: &[&Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = batch.len();
        let width = batch.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let (ids, types, mask) = padded_inputs(batch, width, self.pad_id);
        let ids = Tensor::from_vec(ids, (rows, width), &self.device)?;
        let types = Tensor::from_vec(types, (rows, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;

        let hidden = self.bert.forward(&ids, &types, &mask)?; // (rows, width, 384)
        let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, width, 1)
        let summed = hidden.broadcast_mul(&weights)?.sum(1)?; // (rows, 384)
        let counts = weights.sum(1)?; // (rows, 1); at least 2: [CLS] and [SEP]
        summed.broadcast_div(&counts)?.to_vec2::<f32>()
    }
}

/// Texts (indexes into `encodings`, sorted by length) in chunks for the forward passes: at
/// most [`CHUNK_ROWS`] rows and [`CHUNK_TOKENS`] padded tokens each (attention's buffers grow
/// with rows x length²), and at least one chunk per thread while there are texts to share.
fn chunk_by_size(order: &[usize], encodings: &[Encoding], threads: usize) -> Vec<Vec<usize>> {
    let share = order.len().div_ceil(threads.max(1)).max(1);
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for &i in order {
        let width = encodings[i].get_ids().len().max(1);
        // Sorted by length: this text is the longest of the chunk so far.
        let rows_fit = (CHUNK_TOKENS / width).max(1);
        if !current.is_empty() && (current.len() >= CHUNK_ROWS.min(share).min(rows_fit)) {
            chunks.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Row-major ids, token types and attention mask, each `batch.len() * width` long.
fn padded_inputs(batch: &[&Encoding], width: usize, pad_id: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let cells = batch.len() * width;
    let (mut ids, mut types, mut mask) = (
        Vec::with_capacity(cells),
        Vec::with_capacity(cells),
        Vec::with_capacity(cells),
    );
    for e in batch {
        let len = e.get_ids().len();
        let pad = width - len;
        ids.extend_from_slice(e.get_ids());
        ids.extend(std::iter::repeat_n(pad_id, pad));
        types.extend_from_slice(e.get_type_ids());
        types.extend(std::iter::repeat_n(0, pad));
        mask.extend(std::iter::repeat_n(1, len));
        mask.extend(std::iter::repeat_n(0, pad));
    }
    (ids, types, mask)
}

/// sentence-transformers' Normalize module; a zero vector (impossible in practice) is kept
/// as is rather than turned into NaNs.
fn l2_normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer, EmbedError> {
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| EmbedError::Permanent(format!("cannot load {}: {e}", path.display())))?;
    // The shipped tokenizer.json pads every text to 128 and truncates at 128. We pad per
    // batch ourselves (with a mask), and sentence-transformers, whose vectors we must
    // reproduce, truncates this model at 256 (sentence_bert_config.json).
    tokenizer.with_padding(None);
    let truncation = TruncationParams {
        max_length: MAX_TOKENS,
        ..Default::default()
    };
    tokenizer
        .with_truncation(Some(truncation))
        .map_err(|e| EmbedError::Permanent(format!("cannot set truncation: {e}")))?;
    Ok(tokenizer)
}

fn load_config(path: &Path) -> Result<Config, EmbedError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EmbedError::Permanent(format!("cannot read {}: {e}", path.display())))?;
    let config: Config = serde_json::from_str(&text)
        .map_err(|e| EmbedError::Permanent(format!("bad {}: {e}", path.display())))?;
    // Another BERT dropped into --model-dir would load fine and silently write vectors
    // that disagree with the recorded model name and dimension.
    if config.hidden_size != DIMENSION {
        return Err(EmbedError::Permanent(format!(
            "{} has hidden_size {}, but {MODEL_NAME} is {DIMENSION} wide; is this the right model?",
            path.display(),
            config.hidden_size
        )));
    }
    Ok(config)
}

fn load_weights(path: &Path, config: &Config, device: &Device) -> Result<MiniLm, EmbedError> {
    let bad = |e: candle_core::Error| {
        EmbedError::Permanent(format!("cannot load weights from {}: {e}", path.display()))
    };
    // SAFETY: mapping is unsafe because another process could change the file under us.
    // The file is ours: `model fetch` wrote it and `load` checked its sha256, and nothing
    // rewrites it while the server runs (a refetch replaces it with a rename, which leaves
    // this mapping on the old inode).
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }.map_err(bad)?;
    // Tensor names in this file are `embeddings.*` / `encoder.*` (no `bert.` prefix);
    // MiniLm::load tries those first and `bert.` second, so either layout works.
    MiniLm::load(vb, config).map_err(bad)
}

/// Refuses a file whose sha256 is not `want`, naming both hashes and the fix.
fn verify(path: &Path, want: &str) -> Result<(), EmbedError> {
    let got = super::pins::file_sha256(path)
        .map_err(|e| EmbedError::Permanent(format!("cannot read {}: {e}", path.display())))?;
    if got != want {
        return Err(EmbedError::Permanent(format!(
            "{} has sha256 {got}, expected {want}: the file is damaged or is not {MODEL_NAME}'s; \
             run `stride-vectors model fetch` to replace it",
            path.display()
        )));
    }
    Ok(())
}

/// The directory the model is read from and fetched into: `explicit` when given, else the
/// cache (see [`default_model_dir`]).
pub fn model_dir(explicit: Option<&Path>) -> Result<PathBuf, EmbedError> {
    match explicit {
        Some(dir) => Ok(dir.to_path_buf()),
        None => default_model_dir(),
    }
}

fn default_model_dir() -> Result<PathBuf, EmbedError> {
    // Empty variables count as unset, as `${X:-}` does in a shell.
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("STRIDE_VECTORS_MODEL_DIR") {
        return Ok(dir);
    }
    // The user's cache directory: $XDG_CACHE_HOME or ~/.cache on Linux, ~/Library/Caches on
    // macOS, %LOCALAPPDATA% on Windows.
    let Some(cache) = dirs::cache_dir() else {
        return Err(EmbedError::Permanent(
            "cannot locate the user's cache directory (on Unix: neither XDG_CACHE_HOME nor HOME \
             is set); pass --model-dir or set STRIDE_VECTORS_MODEL_DIR"
                .into(),
        ));
    };
    Ok(cache.join("stride-vectors").join("models").join(MODEL_NAME))
}

/// The required files absent from `dir`, or `None` when all are there.
pub fn missing_files(dir: &Path) -> Option<Vec<&'static str>> {
    let missing: Vec<_> = REQUIRED_FILES
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    (!missing.is_empty()).then_some(missing)
}

/// The error that says which files are missing from `dir` and how to get them.
pub fn not_found(dir: &Path, missing: &[&str], explicit: bool) -> EmbedError {
    let fix = if explicit {
        "point --model-dir at a directory holding model.safetensors, tokenizer.json and \
         config.json, or run `stride-vectors model fetch --model-dir DIR` to fill it"
    } else {
        "run `stride-vectors model fetch` to download it (83.5 MB, once), \
         or pass --model-dir DIR to use a copy you already have"
    };
    EmbedError::Permanent(format!(
        "{MODEL_NAME} not found in {}: missing {}; {fix}",
        dir.display(),
        missing.join(", ")
    ))
}

fn join_error(e: tokio::task::JoinError) -> EmbedError {
    // Cancelled means the runtime is shutting down; the texts can be embedded next time.
    if e.is_cancelled() {
        EmbedError::Transient(format!("embedding task cancelled: {e}"))
    } else {
        EmbedError::Permanent(format!("embedding task panicked: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_gives_unit_length_and_keeps_zero() {
        let v = l2_normalised(vec![3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(l2_normalised(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn an_explicit_dir_without_the_files_is_an_error_that_says_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let msg = match LocalEmbedder::find_model_dir(Some(dir.path())) {
            Err(EmbedError::Permanent(msg)) => msg,
            other => panic!("expected a Permanent error, got {other:?}"),
        };
        assert!(
            msg.contains("model.safetensors") && msg.contains("stride-vectors model fetch"),
            "{msg}"
        );
    }
}
