//! Remote embedding providers over HTTP: Ollama and OpenAI-compatible servers.
//!
//! Each call is retried a few times with exponential backoff on timeouts, connection errors,
//! 429 and 5xx; what still fails is reported as [`EmbedError::Transient`] so the pipeline
//! keeps the documents pending and tries again later. A 4xx other than 429 is permanent.
//! Nothing here knows about the database or the pipeline.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::chunk::{split, Piece};
use super::{EmbedError, EmbedFuture, Embedder, PiecesFuture};
use crate::retry::Backoff;

/// Attempts per call before giving the batch back to the pipeline.
const ATTEMPTS: u32 = 3;
/// Between attempts of one call: 200 ms, then 800 ms (jittered; see `crate::retry`).
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), 4, Duration::from_secs(5));

fn client(timeout: Duration) -> Result<reqwest::Client, EmbedError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| EmbedError::Permanent(format!("building the HTTP client: {e}")))
}

/// Longest `Retry-After` waited for inside one call; a longer one goes back to the
/// pipeline, which schedules the documents after it.
const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why one HTTP attempt failed.
enum Attempt {
    /// Worth another try, not before the provider's `Retry-After` if it gave one.
    Retry(String, Option<Duration>),
    /// The endpoint does not exist (Ollama older than 0.3 has no `/api/embed`).
    NotFound,
    Fatal(String),
}

async fn post_json<T: for<'de> Deserialize<'de>>(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> Result<T, Attempt> {
    let mut req = http.post(url).json(body);
    if let Some(key) = bearer {
        req = req.bearer_auth(key);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Attempt::Retry(format!("POST {url}: {}", super::with_causes(&e)), None))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(Attempt::NotFound);
    }
    if !status.is_success() {
        // Only the delay-seconds form; an HTTP date is rare from embedding servers.
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let msg = format!(
            "POST {url}: HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        return Err(if status.as_u16() == 429 || status.is_server_error() {
            Attempt::Retry(msg, retry_after)
        } else {
            Attempt::Fatal(msg)
        });
    }
    resp.json::<T>()
        .await
        .map_err(|e| Attempt::Fatal(format!("POST {url}: unreadable answer: {e}")))
}

/// Run `call` up to [`ATTEMPTS`] times while it asks to be retried.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, Attempt>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Attempt>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(Attempt::Retry(msg, after))
                if attempt < ATTEMPTS && after.is_none_or(|a| a <= MAX_INLINE_RETRY_AFTER) =>
            {
                tracing::debug!(attempt, error = %msg, "embedding request failed; retrying");
                tokio::time::sleep(BACKOFF.delay_at_least(attempt, after)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn finish(result: Result<Vec<Vec<f32>>, Attempt>, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    let vectors = match result {
        Ok(v) => v,
        Err(Attempt::Retry(m, Some(after))) => return Err(EmbedError::Throttled(m, after)),
        Err(Attempt::Retry(m, None)) => return Err(EmbedError::Transient(m)),
        Err(Attempt::Fatal(m)) => return Err(EmbedError::Permanent(m)),
        Err(Attempt::NotFound) => {
            return Err(EmbedError::Permanent(
                "embedding endpoint not found (HTTP 404)".into(),
            ))
        }
    };
    if vectors.len() != expected {
        return Err(EmbedError::Permanent(format!(
            "the provider returned {} vectors for {expected} texts",
            vectors.len()
        )));
    }
    Ok(vectors)
}

/// Ollama: `POST {url}/api/embed` with a batch; falls back to the legacy one-text
/// `POST {url}/api/embeddings` when the server is too old to have the first.
pub struct Ollama {
    http: reqwest::Client,
    url: String,
    model: String,
    dimension: Option<usize>,
    window: Option<usize>,
}

#[derive(Deserialize)]
struct OllamaBatch {
    embeddings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct OllamaLegacy {
    embedding: Vec<f32>,
}

impl Ollama {
    pub fn new(
        url: &str,
        model: &str,
        dimension: Option<usize>,
        timeout: Duration,
    ) -> Result<Self, EmbedError> {
        Ok(Ollama {
            http: client(timeout)?,
            url: url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            dimension,
            window: None,
        })
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let url = format!("{}/api/embed", self.url);
        let body = json!({"model": self.model, "input": texts});
        match with_retries(|| post_json::<OllamaBatch>(&self.http, &url, None, &body)).await {
            Err(Attempt::NotFound) => self.embed_legacy(texts).await,
            other => finish(other.map(|b| b.embeddings), texts.len()),
        }
    }

    async fn embed_legacy(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let url = format!("{}/api/embeddings", self.url);
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            let body = json!({"model": self.model, "prompt": text});
            let one = with_retries(|| post_json::<OllamaLegacy>(&self.http, &url, None, &body)).await;
            out.push(finish(one.map(|r| vec![r.embedding]), 1)?.remove(0));
        }
        Ok(out)
    }
}

impl Embedder for Ollama {
    fn model(&self) -> &str {
        &self.model
    }
    fn dimension(&self) -> Option<usize> {
        self.dimension
    }
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(self.embed_batch(texts))
    }
    fn pieces<'a>(&'a self, text: &'a str) -> PiecesFuture<'a> {
        spawn_pieces(text, self.window)
    }
}

impl Ollama {
    /// Embed a text longer than `window` tokens in chunks (see [`pieces`]).
    pub fn with_window(mut self, window: Option<usize>) -> Self {
        self.window = window;
        self
    }
}

/// OpenAI-compatible `POST {base}/v1/embeddings` (OpenAI, Mistral, vLLM, LM Studio, ...).
pub struct OpenAi {
    http: reqwest::Client,
    endpoint: String,
    api_key: Option<String>,
    model: String,
    dimension: Option<usize>,
    window: Option<usize>,
}

#[derive(Deserialize)]
struct OpenAiAnswer {
    data: Vec<OpenAiItem>,
}

#[derive(Deserialize)]
struct OpenAiItem {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

impl OpenAi {
    pub fn new(
        base: &str,
        api_key: Option<String>,
        model: &str,
        dimension: Option<usize>,
        timeout: Duration,
    ) -> Result<Self, EmbedError> {
        let base = base.trim_end_matches('/');
        let endpoint = if base.ends_with("/v1") {
            format!("{base}/embeddings")
        } else {
            format!("{base}/v1/embeddings")
        };
        Ok(OpenAi {
            http: client(timeout)?,
            endpoint,
            api_key,
            model: model.to_string(),
            dimension,
            window: None,
        })
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = json!({"model": self.model, "input": texts});
        let answer = with_retries(|| {
            post_json::<OpenAiAnswer>(&self.http, &self.endpoint, self.api_key.as_deref(), &body)
        })
        .await;
        let ordered = answer.map(|mut a| {
            // The spec gives each item its index; order by it in case a server reorders.
            a.data.sort_by_key(|item| item.index.unwrap_or(0));
            a.data.into_iter().map(|item| item.embedding).collect()
        });
        finish(ordered, texts.len())
    }
}

impl Embedder for OpenAi {
    fn model(&self) -> &str {
        &self.model
    }
    fn dimension(&self) -> Option<usize> {
        self.dimension
    }
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(self.embed_batch(texts))
    }
    fn pieces<'a>(&'a self, text: &'a str) -> PiecesFuture<'a> {
        spawn_pieces(text, self.window)
    }
}

impl OpenAi {
    /// Embed a text longer than `window` tokens in chunks (see [`pieces`]).
    pub fn with_window(mut self, window: Option<usize>) -> Self {
        self.window = window;
        self
    }
}

/// A remote model's tokenizer is not ours to run: a text's tokens are counted as its words
/// and punctuation marks (UAX #29 word boundaries that are not spaces), which any subword
/// tokenizer makes at least as many tokens of.
pub fn approx_tokens(text: &str) -> usize {
    use unicode_segmentation::UnicodeSegmentation;
    text.split_word_bounds().filter(|w| !w.trim().is_empty()).count()
}

/// The pieces a remote model embeds `text` in: the whole text without a `window`, else
/// chunks of at most `window` tokens ([`approx_tokens`]) sharing an eighth of it.
pub fn pieces(text: &str, window: Option<usize>) -> Vec<Piece> {
    match window {
        Some(w) => split(text, w, w / 8, approx_tokens),
        None => vec![Piece {
            start: 0,
            end: text.len(),
        }],
    }
}

/// [`pieces`] on a blocking thread (a long text takes a while to count), as a future.
fn spawn_pieces(text: &str, window: Option<usize>) -> PiecesFuture<'static> {
    let text = text.to_string();
    Box::pin(async move {
        match window {
            None => Ok(pieces(&text, None)),
            Some(_) => tokio::task::spawn_blocking(move || pieces(&text, window))
                .await
                .map_err(|e| EmbedError::Transient(format!("splitting a text: {e}"))),
        }
    })
}
