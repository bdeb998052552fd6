//! A stand-in for the remote embedding services the tests cannot reach: it speaks Ollama's
//! real wire format (`POST /api/embed` with `{model, input: [..]}` answering
//! `{model, embeddings}`, and the legacy `POST /api/embeddings` with `{model, prompt}`
//! answering `{embedding}`) and OpenAI's (`POST /v1/embeddings` with `{model, input}`
//! answering `{object: "list", data: [{object, index, embedding}], model, usage}`, with a
//! bearer key). It returns deterministic vectors and records every text it was asked to embed.
//!
//! Like real providers, it can refuse: a request holding a text that contains
//! [`POISON`] is answered HTTP 400 as a whole; a text containing [`ZERO`] gets an all-zero
//! vector; a text containing [`WIDE`] gets one dimension too many; and `throttle` makes
//! the next calls answer 429 with a `Retry-After`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const DIM: usize = 8;
/// A text the provider refuses (HTTP 400 for the whole request).
pub const POISON: &str = "POISON";
/// A text the provider embeds as all zeros.
pub const ZERO: &str = "ZERO-VECTOR";
/// A text the provider embeds with one dimension too many.
pub const WIDE: &str = "TOO-WIDE";

#[derive(Clone, Default)]
pub struct MockOllama {
    /// One entry per HTTP call: the texts it carried.
    pub calls: Arc<Mutex<Vec<Vec<String>>>>,
    /// When each call arrived.
    pub times: Arc<Mutex<Vec<std::time::Instant>>>,
    /// When set, every call answers HTTP 503.
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    /// Milliseconds each answer is held back after the call was recorded (a slow model).
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Answer 404 on /api/embed, like an Ollama older than 0.3.
    pub legacy_only: bool,
    /// Calls still to be answered 429 with `Retry-After: retry_after_secs`.
    pub throttle: Arc<std::sync::atomic::AtomicU64>,
    pub retry_after_secs: Arc<std::sync::atomic::AtomicU64>,
    /// Calls refused (400 or 429), with the texts they carried.
    pub refused: Arc<Mutex<Vec<Vec<String>>>>,
    /// The `Authorization` header of the last call.
    pub last_auth: Arc<Mutex<Option<String>>>,
    pub url: String,
}

/// The vector the mock gives `text`: derived from its bytes, never all zero.
pub fn vector_of(text: &str) -> Vec<f32> {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(text.as_bytes());
    (0..DIM).map(|i| (h[i] as f32 - 127.5) / 128.0).collect()
}

impl MockOllama {
    pub async fn start(legacy_only: bool) -> MockOllama {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mock = MockOllama {
            legacy_only,
            url,
            ..Default::default()
        };
        let m = mock.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let m = m.clone();
                tokio::spawn(async move {
                    let _ = m.serve(stream).await;
                });
            }
        });
        mock
    }

    pub fn texts(&self) -> Vec<String> {
        self.calls.lock().unwrap().iter().flatten().cloned().collect()
    }

    fn record(&self, texts: Vec<String>) {
        self.times.lock().unwrap().push(std::time::Instant::now());
        self.calls.lock().unwrap().push(texts);
    }

    /// How many calls carried `text`, answered or refused.
    pub fn times_asked(&self, text: &str) -> usize {
        let answered = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter(|t| *t == text)
            .count();
        let refused = self
            .refused
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter(|t| *t == text)
            .count();
        answered + refused
    }

    /// Wait until a call carried `text` (the mock may still hold its answer); panic after
    /// `within`.
    pub async fn wait_until_asked(&self, text: &str, within: std::time::Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.times_asked(text) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{text:?} was never sent to the provider"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn first_call(&self) -> Option<std::time::Instant> {
        self.times.lock().unwrap().first().copied()
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    async fn serve(&self, mut stream: TcpStream) -> std::io::Result<()> {
        loop {
            let Some((path, auth, body)) = read_request(&mut stream).await? else {
                return Ok(());
            };
            *self.last_auth.lock().unwrap() = auth;
            let (status, answer) = self.answer(&path, &body);
            let retry_after = if status.starts_with("429") {
                format!(
                    "retry-after: {}\r\n",
                    self.retry_after_secs.load(std::sync::atomic::Ordering::SeqCst)
                )
            } else {
                String::new()
            };
            let delay = self.delay_ms.load(std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            let text = answer.to_string();
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{retry_after}content-length: {}\r\n\r\n{text}",
                text.len()
            );
            stream.write_all(response.as_bytes()).await?;
        }
    }

    fn answer(&self, path: &str, body: &Value) -> (&'static str, Value) {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return ("503 Service Unavailable", json!({"error": "model is loading"}));
        }
        match path {
            "/api/embed" if !self.legacy_only => {
                let Some(texts) = input_texts(body) else {
                    return ("400 Bad Request", json!({"error": "input required"}));
                };
                let throttled = self
                    .throttle
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok();
                if throttled {
                    self.refused.lock().unwrap().push(texts);
                    return ("429 Too Many Requests", json!({"error": "slow down"}));
                }
                if texts.iter().any(|t| t.contains(POISON)) {
                    self.refused.lock().unwrap().push(texts);
                    return (
                        "400 Bad Request",
                        json!({"error": "input contains a forbidden token"}),
                    );
                }
                let embeddings: Vec<Vec<f32>> = texts
                    .iter()
                    .map(|t| {
                        if t.contains(ZERO) {
                            vec![0.0; DIM]
                        } else if t.contains(WIDE) {
                            vec![0.5; DIM + 1]
                        } else {
                            vector_of(t)
                        }
                    })
                    .collect();
                self.record(texts);
                (
                    "200 OK",
                    json!({"model": body["model"], "embeddings": embeddings}),
                )
            }
            "/v1/embeddings" => {
                let Some(texts) = input_texts(body) else {
                    return ("400 Bad Request", json!({"error": {"message": "input required"}}));
                };
                // Answer in reverse order: clients must use `index`, not the position.
                let data: Vec<Value> = texts
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector_of(t)}))
                    .collect();
                self.record(texts);
                (
                    "200 OK",
                    json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
                )
            }
            "/api/embeddings" => {
                let text = body["prompt"].as_str().unwrap_or_default().to_string();
                let embedding = vector_of(&text);
                self.record(vec![text]);
                ("200 OK", json!({"embedding": embedding}))
            }
            _ => ("404 Not Found", json!({"error": "not found"})),
        }
    }
}

/// `input` as both APIs accept it: one string or a list of strings.
fn input_texts(body: &Value) -> Option<Vec<String>> {
    match &body["input"] {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect(),
        ),
        _ => None,
    }
}

/// Read one HTTP/1.1 request; `None` when the client closed the connection.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<(String, Option<String>, Value)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let auth = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_string())
    });
    let body = serde_json::from_slice(&buf[header_end..header_end + length]).unwrap_or(Value::Null);
    Ok(Some((path, auth, body)))
}
