//! Embeddings: the [`Embedder`] trait, its three providers, and the pipeline that decides
//! when and whether to embed.
//!
//! - [`local`]: all-MiniLM-L6-v2 in process (candle), the default; no network.
//! - [`remote`]: Ollama (`/api/embed`, legacy `/api/embeddings`) and OpenAI-compatible
//!   `/v1/embeddings`, with retries and backoff.
//! - [`pipeline`]: debounce, dedup, batching and the durable pending queue.
//!
//! Providers only turn texts into vectors; they never touch the database.

pub mod local;
pub mod pipeline;
pub mod remote;

use std::fmt;
use std::sync::Arc;

/// A provider's answer: one vector per text, in order.
pub type EmbedFuture<'a> = futures::future::BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;

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

/// Turns texts into vectors.
pub trait Embedder: Send + Sync + 'static {
    /// Name recorded with each index it fills, e.g. `all-MiniLM-L6-v2`.
    fn model(&self) -> &str;
    /// Output width, when known before the first call.
    fn dimension(&self) -> Option<usize>;
    /// One vector per text, in order.
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a>;
    /// Whether it can embed now (a local model loads in the background).
    fn state(&self) -> ModelState {
        ModelState::Ready
    }
}

pub type SharedEmbedder = Arc<dyn Embedder>;

/// Where a model is in its life, as `stats` reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    Loading,
    Ready,
    Failed(String),
}

impl ModelState {
    pub fn label(&self) -> &'static str {
        match self {
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Failed(_) => "failed",
        }
    }
}

type Loaded = Option<Result<SharedEmbedder, EmbedError>>;

/// An embedder that is loaded on a blocking thread at start, so that `initialize` and
/// `tools/list` never wait for model weights. Calls made while it loads wait for it.
pub struct Background {
    model: String,
    dimension: Option<usize>,
    loaded: tokio::sync::watch::Receiver<Loaded>,
}

impl Background {
    /// Start `load` now on a blocking thread. Must be called inside a tokio runtime.
    pub fn spawn<F>(model: &str, dimension: Option<usize>, load: F) -> Background
    where
        F: FnOnce() -> Result<SharedEmbedder, EmbedError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let name = model.to_string();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = tokio::task::spawn_blocking(load)
                .await
                .unwrap_or_else(|e| Err(EmbedError::Permanent(format!("model loader crashed: {e}"))));
            match &result {
                Ok(_) => {
                    tracing::info!(model = %name, ms = started.elapsed().as_millis() as u64, "model ready")
                }
                Err(e) => tracing::error!(model = %name, error = %e, "model failed to load"),
            }
            let _ = tx.send(Some(result));
        });
        Background {
            model: model.to_string(),
            dimension,
            loaded: rx,
        }
    }

    async fn ready(&self) -> Result<SharedEmbedder, EmbedError> {
        let mut rx = self.loaded.clone();
        let loaded = rx
            .wait_for(|l| l.is_some())
            .await
            .map_err(|_| EmbedError::Permanent("the model loader went away".into()))?;
        match &*loaded {
            Some(Ok(e)) => Ok(e.clone()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(EmbedError::Transient("the model is still loading".into())),
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
    fn state(&self) -> ModelState {
        match &*self.loaded.borrow() {
            None => ModelState::Loading,
            Some(Ok(_)) => ModelState::Ready,
            Some(Err(e)) => ModelState::Failed(e.to_string()),
        }
    }
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
pub fn build(config: &crate::config::EmbedderConfig) -> Result<SharedEmbedder, EmbedError> {
    use crate::config::EmbedderConfig;
    Ok(match config {
        EmbedderConfig::Local { model_dir } => {
            let model_dir = model_dir.clone();
            Arc::new(Background::spawn(
                local::MODEL_NAME,
                Some(local::DIMENSION),
                move || {
                    let dir = local::LocalEmbedder::find_model_dir(model_dir.as_deref())?;
                    Ok(Arc::new(local::LocalEmbedder::load(&dir)?) as SharedEmbedder)
                },
            ))
        }
        EmbedderConfig::Ollama {
            url,
            model,
            dimension,
            timeout,
        } => Arc::new(remote::Ollama::new(url, model, *dimension, *timeout)?),
        EmbedderConfig::OpenAi {
            url,
            model,
            api_key,
            dimension,
            timeout,
        } => Arc::new(remote::OpenAi::new(
            url,
            api_key.clone(),
            model,
            *dimension,
            *timeout,
        )?),
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
