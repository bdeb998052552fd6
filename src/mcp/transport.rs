//! Newline-delimited JSON-RPC framing that answers every request it cannot parse.
//!
//! rmcp's own stdio framing drops a line it cannot parse (garbage, a truncated line, a
//! message nested past serde_json's recursion limit, a line over 16 MiB) with a debug log
//! and no answer, so a client without a timeout waits forever. This transport reads lines
//! itself and, for each one that is not a message rmcp can take, writes a JSON-RPC error
//! instead: -32700 for text that is not JSON, -32600 for JSON that is too deep, too long or
//! not a JSON-RPC message, with the request's `id` whenever it can be read from the line
//! (`null` otherwise). Notifications (no `id`) get no answer, as JSON-RPC wants.
//!
//! Every line written (rmcp's answers and ours) goes through one writer under one lock, so
//! lines never interleave on stdout.
//!
//! This module owns framing only: it knows nothing of tools, the store or ownership.

use std::sync::Arc;

use futures::{Sink, Stream};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};

use super::args::{RawArguments, RAW_ARGUMENT_TOOLS};
use rmcp::RoleServer;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// Longest line accepted (the limit rmcp applies, stated in the upsert tool's description).
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// Deepest nesting of arrays and objects accepted. serde_json refuses past 128 levels for
/// the whole message; below that a filter reaches the tool, which names its own limit.
pub const MAX_DEPTH: usize = 120;
/// How much of an over-long line is kept to find its `id`.
const ID_PREFIX: usize = 64 * 1024;

type Writer = Arc<Mutex<Box<dyn AsyncWrite + Send + Unpin>>>;

/// The server side of one connection (stdio, or a relay's socket).
pub fn server_transport<R, W>(
    read: R,
    write: W,
) -> (
    impl Sink<TxJsonRpcMessage<RoleServer>, Error = std::io::Error> + Send + Unpin + 'static,
    impl Stream<Item = RxJsonRpcMessage<RoleServer>> + Send + Unpin + 'static,
)
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let writer: Writer = Arc::new(Mutex::new(Box::new(write)));
    let sink = Box::pin(futures::sink::unfold(
        writer.clone(),
        |writer, message: TxJsonRpcMessage<RoleServer>| async move {
            let mut line = serde_json::to_vec(&message).map_err(std::io::Error::other)?;
            line.push(b'\n');
            write_line(&writer, &line).await?;
            Ok::<_, std::io::Error>(writer)
        },
    ));
    let reader = Reader {
        input: BufReader::with_capacity(64 * 1024, read),
        writer,
    };
    let stream = Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        let message = reader.next_message().await?;
        Some((message, reader))
    }));
    (sink, stream)
}

async fn write_line(writer: &Writer, line: &[u8]) -> std::io::Result<()> {
    let mut out = writer.lock().await;
    out.write_all(line).await?;
    out.flush().await
}

struct Reader<R> {
    input: BufReader<R>,
    writer: Writer,
}

/// One line as read: whole, or, when it was too long, its top level ([`Skeleton`]).
enum Line {
    Whole(Vec<u8>),
    TooLong(Vec<u8>),
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// The next message rmcp can handle; every other line is answered here. `None` at EOF
    /// or when the connection fails.
    async fn next_message(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            let line = match self.read_line().await {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "reading a JSON-RPC line failed");
                    return None;
                }
            };
            let rejection = match line {
                Line::TooLong(skeleton) => Some(Rejection {
                    id: recover_id(&skeleton),
                    code: -32600,
                    message: format!(
                        "Invalid Request: the message is longer than {} MiB; send smaller batches",
                        MAX_LINE >> 20
                    ),
                    batch: false,
                }),
                Line::Whole(text) => match classify(&text) {
                    Ok(Some(message)) => return Some(message),
                    Ok(None) => None,
                    Err(rejection) => Some(rejection),
                },
            };
            if let Some(rejection) = rejection {
                tracing::warn!(code = rejection.code, id = %rejection.id.as_ref().map_or("none".into(), |v| v.to_string()), "{}", rejection.message);
                // A line without an id is a notification: JSON-RPC does not answer it. Text
                // that is not JSON and batches get an answer with id null.
                if rejection.id.is_some() || rejection.code == -32700 || rejection.batch {
                    if let Err(e) = write_line(&self.writer, &rejection.to_line()).await {
                        tracing::error!(error = %e, "writing a JSON-RPC error failed");
                        return None;
                    }
                }
            }
        }
    }

    async fn read_line(&mut self) -> std::io::Result<Option<Line>> {
        let mut line = Vec::new();
        // Once the line is too long: its top-level skeleton, to find the id wherever it is
        // (the TypeScript SDK writes `id` last, after the params).
        let mut skeleton: Option<Skeleton> = None;
        loop {
            let chunk = self.input.fill_buf().await?;
            if chunk.is_empty() {
                // EOF: a last line without its newline is still a line.
                return Ok(match (line.is_empty(), skeleton) {
                    (_, Some(s)) => Some(Line::TooLong(s.out)),
                    (true, None) => None,
                    (false, None) => Some(Line::Whole(line)),
                });
            }
            let (taken, done) = match memchr::memchr(b'\n', chunk) {
                Some(at) => (at + 1, true),
                None => (chunk.len(), false),
            };
            let body = &chunk[..if done { taken - 1 } else { taken }];
            if skeleton.is_none() && line.len() + body.len() > MAX_LINE {
                // From here on only the skeleton is kept, not 16 MiB of the line.
                let mut s = Skeleton::default();
                s.feed(&line);
                line = Vec::new();
                skeleton = Some(s);
            }
            match &mut skeleton {
                Some(s) => s.feed(body),
                None => line.extend_from_slice(body),
            }
            self.input.consume(taken);
            if done {
                if let Some(s) = skeleton {
                    return Ok(Some(Line::TooLong(s.out)));
                }
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    line.clear();
                    continue;
                }
                return Ok(Some(Line::Whole(line)));
            }
        }
    }
}

/// The top level of a JSON text, read a piece at a time: every member of the top-level
/// object with object and array values emptied (`"params":{}`) and strings cut at 1 KiB, at
/// most [`ID_PREFIX`] bytes of it. Enough for [`recover_id`], without keeping the line.
#[derive(Default)]
struct Skeleton {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Bytes kept of the top-level string being read.
    string_kept: usize,
    out: Vec<u8>,
}

impl Skeleton {
    const STRING_KEPT: usize = 1024;

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let top = self.depth == 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if top {
                        if self.string_kept > Self::STRING_KEPT {
                            // Cut short: drop a dangling escape before closing the string.
                            while self.out.last() == Some(&b'\\') {
                                self.out.pop();
                            }
                        }
                        self.keep(b'"');
                    }
                    continue;
                }
                if top {
                    self.string_kept += 1;
                    if self.string_kept <= Self::STRING_KEPT {
                        self.keep(b);
                    }
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.string_kept = 0;
                    if top {
                        self.keep(b);
                    }
                }
                b'{' | b'[' => {
                    if self.depth <= 1 {
                        self.keep(b);
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    if self.depth <= 2 {
                        self.keep(b);
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                _ if top => self.keep(b),
                _ => {}
            }
        }
    }

    fn keep(&mut self, b: u8) {
        if self.out.len() < ID_PREFIX {
            self.out.push(b);
        }
    }
}

/// Why a line was not handed to rmcp, and the answer it gets.
#[derive(Debug, PartialEq)]
struct Rejection {
    id: Option<Value>,
    code: i32,
    message: String,
    /// A JSON-RPC batch (an array): answered with id null, since MCP has no batches.
    batch: bool,
}

impl Rejection {
    fn to_line(&self) -> Vec<u8> {
        let answer = serde_json::json!({
            "jsonrpc": "2.0",
            "id": self.id.clone().unwrap_or(Value::Null),
            "error": {"code": self.code, "message": self.message},
        });
        let mut line = answer.to_string().into_bytes();
        line.push(b'\n');
        line
    }
}

/// A message for rmcp, `None` for a line to skip silently, or the answer a bad line gets.
fn classify(line: &[u8]) -> Result<Option<RxJsonRpcMessage<RoleServer>>, Rejection> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let depth = max_depth(line);
    if depth > MAX_DEPTH {
        return Err(Rejection {
            id: recover_id(line),
            code: -32600,
            message: format!("Invalid Request: the message nests arrays and objects {depth} levels deep; at most {MAX_DEPTH} are accepted"),
            batch: false,
        });
    }
    match tool_call(line) {
        Fast::Message(message) => return Ok(Some(message)),
        Fast::Refused(rejection) => return Err(rejection),
        Fast::NotMine => {}
    }
    let error = match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line) {
        Ok(message) => return Ok(Some(message)),
        Err(e) => e,
    };
    let value = match serde_json::from_slice::<Value>(line) {
        Ok(value) => value,
        Err(e) => {
            return Err(Rejection {
                id: recover_id(line),
                code: -32700,
                message: format!("Parse error: {e}"),
                batch: false,
            })
        }
    };
    if value.is_array() {
        return Err(Rejection {
            id: None,
            code: -32600,
            message: "Invalid Request: JSON-RPC batches are not part of MCP; send one message per line"
                .into(),
            batch: true,
        });
    }
    let id = value
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .cloned();
    if id.is_none() {
        // A notification (or a stray answer) we do not understand: JSON-RPC answers neither.
        tracing::debug!(error = %error, "ignoring a message without id that is not JSON-RPC we know");
        return Ok(None);
    }
    Err(Rejection {
        id,
        code: -32600,
        message: format!("Invalid Request: {error}"),
        batch: false,
    })
}

/// What the fast path makes of a line (made once per line and matched at once, so the
/// variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Fast {
    /// A `tools/call` request, as rmcp's own parse would make it.
    Message(RxJsonRpcMessage<RoleServer>),
    /// A `tools/call` request (it has an id) whose params are wrong. rmcp would take it as
    /// an unknown method and answer -32601 "method not found"; the caller is owed -32602
    /// and the field at fault.
    Refused(Rejection),
    /// Anything else: rmcp's parse decides.
    NotMine,
}

/// A `tools/call` request, read in one pass into the message rmcp's own parse makes of it;
/// anything else and anything unusual takes rmcp's parse.
///
/// Why: rmcp reads a message through several buffered layers (an untagged enum, flattened
/// fields, the method tag), each a copy of the whole message in serde's `Content`. For an
/// upsert of 500 x 384 numbers that cost as much CPU as DuckDB's write of them (a profile
/// in BENCHMARKS.md). A test holds the two parses equal on generated calls.
///
/// The arguments of the tools in [`RAW_ARGUMENT_TOOLS`] are not even made a JSON tree: they
/// travel as [`RawArguments`] in the request's extensions, and the tool parses them once,
/// into its own types ([`super::args::Args`]).
fn tool_call(line: &[u8]) -> Fast {
    use rmcp::model::{
        CallToolRequest, CallToolRequestParams, ClientRequest, InputResponses, JsonObject, JsonRpcMessage,
        JsonRpcRequest, JsonRpcVersion2_0, RequestId, RequestMetaObject,
    };

    #[derive(serde::Deserialize)]
    struct Wire {
        #[allow(dead_code)]
        jsonrpc: JsonRpcVersion2_0,
        id: RequestId,
        method: String,
        params: Params,
        // rmcp refuses a request that also has `result` or `error` (even null): leave those
        // to it.
        #[serde(default, deserialize_with = "present")]
        result: bool,
        #[serde(default, deserialize_with = "present")]
        error: bool,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Params {
        #[serde(rename = "_meta", default)]
        meta: Option<JsonObject>,
        name: String,
        #[serde(default)]
        arguments: Option<Box<serde_json::value::RawValue>>,
        #[serde(default)]
        input_responses: Option<InputResponses>,
        #[serde(default)]
        request_state: Option<String>,
    }

    /// Just enough of a message to know whether it is a `tools/call` request.
    #[derive(serde::Deserialize)]
    struct Head {
        #[allow(dead_code)]
        jsonrpc: JsonRpcVersion2_0,
        id: RequestId,
        method: String,
        #[serde(default, deserialize_with = "present")]
        result: bool,
        #[serde(default, deserialize_with = "present")]
        error: bool,
    }

    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| true)
    }

    /// -32602 for a `tools/call` request whose params fail to read, or `NotMine`.
    fn refuse(line: &[u8], problem: impl FnOnce() -> String) -> Fast {
        match serde_json::from_slice::<Head>(line) {
            Ok(head) if head.method == "tools/call" && !head.result && !head.error => {
                Fast::Refused(Rejection {
                    id: serde_json::to_value(&head.id).ok(),
                    code: -32602,
                    message: format!("Invalid params: {}", problem()),
                    batch: false,
                })
            }
            _ => Fast::NotMine,
        }
    }

    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_slice(line);
    let wire: Wire = match serde_path_to_error::deserialize(&mut de) {
        Ok(wire) => wire,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            let at = format!(" at line {} column {}", inner.line(), inner.column());
            let message = message.strip_suffix(&at).unwrap_or(&message).to_string();
            return refuse(line, || {
                if path == "." {
                    message
                } else {
                    format!("{path}: {message}")
                }
            });
        }
    };
    if wire.method != "tools/call" || wire.result || wire.error {
        return Fast::NotMine;
    }
    let raw = wire.params.arguments;
    // Kept as text only when it is an object (then it parses as one later, for sure).
    let keep = RAW_ARGUMENT_TOOLS.contains(&wire.params.name.as_str())
        && raw.as_ref().is_some_and(|r| r.get().starts_with('{'));
    let mut params = CallToolRequestParams::new(wire.params.name);
    let mut kept = None;
    match raw {
        Some(raw) if keep => kept = Some(RawArguments(Arc::from(raw.get()))),
        Some(raw) => match serde_json::from_str::<Option<JsonObject>>(raw.get()) {
            Ok(arguments) => params.arguments = arguments,
            Err(_) => {
                return refuse(line, || {
                    format!("params.arguments: must be a JSON object, got {}", kind(raw.get()))
                })
            }
        },
        None => {}
    }
    params.input_responses = wire.params.input_responses;
    params.request_state = wire.params.request_state;
    let mut request = CallToolRequest::new(params);
    if let Some(meta) = wire.params.meta {
        request.extensions.insert(RequestMetaObject::from(meta));
    }
    if let Some(kept) = kept {
        request.extensions.insert(kept);
    }
    Fast::Message(JsonRpcMessage::Request(JsonRpcRequest::new(
        wire.id,
        ClientRequest::CallToolRequest(request),
    )))
}

/// What kind of JSON value `text` (valid JSON) is, for a message.
fn kind(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// Deepest nesting of `[` and `{` outside strings (an upper bound for malformed text).
///
/// Runs over every byte of every line, so it skips what cannot matter quickly: outside
/// strings a table marks the five bytes that do, inside strings `memchr` finds the quote or
/// backslash that ends the run.
fn max_depth(text: &[u8]) -> usize {
    const fn structural() -> [bool; 256] {
        let mut table = [false; 256];
        table[b'"' as usize] = true;
        table[b'[' as usize] = true;
        table[b']' as usize] = true;
        table[b'{' as usize] = true;
        table[b'}' as usize] = true;
        table
    }
    static STRUCTURAL: [bool; 256] = structural();
    let (mut depth, mut max) = (0usize, 0usize);
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        i += 1;
        if !STRUCTURAL[b as usize] {
            continue;
        }
        match b {
            b'"' => loop {
                // Past the string: its closing quote, or the end of malformed text.
                let rest = text.get(i..).unwrap_or_default();
                let Some(at) = memchr::memchr2(b'"', b'\\', rest) else {
                    return max;
                };
                i += at + 1;
                if text[i - 1] == b'"' {
                    break;
                }
                i += 1; // the escaped byte
            },
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            _ => depth = depth.saturating_sub(1),
        }
    }
    max
}

/// The `id` member of the top-level object, read by a scanner that needs neither the rest of
/// the line to be valid nor complete: a string or a number, else `None`.
fn recover_id(text: &[u8]) -> Option<Value> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                let end = string_end(text, i)?;
                if depth == 1 && &text[i..=end] == b"\"id\"" {
                    let mut j = end + 1;
                    while j < text.len() && text[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if text.get(j) == Some(&b':') {
                        return id_value(text, j + 1);
                    }
                }
                i = end + 1;
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index of the quote that closes the string opening at `start`.
fn string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut escaped = false;
    for (offset, &b) in text[start + 1..].iter().enumerate() {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => return Some(start + 1 + offset),
            _ => {}
        }
    }
    None
}

fn id_value(text: &[u8], from: usize) -> Option<Value> {
    let mut i = from;
    while i < text.len() && text[i].is_ascii_whitespace() {
        i += 1;
    }
    let end = match text.get(i)? {
        b'"' => string_end(text, i)? + 1,
        b'-' | b'0'..=b'9' => {
            let mut j = i + 1;
            while j < text.len() && matches!(text[j], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                j += 1;
            }
            j
        }
        _ => return None,
    };
    serde_json::from_slice::<Value>(&text[i..end])
        .ok()
        .filter(|v| v.is_string() || v.is_number())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain byte-by-byte reading of [`max_depth`], to hold the fast one to.
    fn max_depth_plain(text: &[u8]) -> usize {
        let (mut depth, mut max) = (0usize, 0usize);
        let (mut in_string, mut escaped) = (false, false);
        for &b in text {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    #[test]
    fn max_depth_reads_as_the_plain_scan_on_generated_text() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let alphabet = b"[]{}\"\\ab1,:";
        for case in 0..50_000 {
            let len = rng.random_range(0..40);
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            assert_eq!(
                max_depth(&text),
                max_depth_plain(&text),
                "case {case}: {}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    fn deep_and(levels: usize) -> String {
        let mut filter = r#"{"a":1}"#.to_string();
        for _ in 0..levels {
            filter = format!(r#"{{"$and":[{filter}]}}"#);
        }
        format!(
            r#"{{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{{"name":"search","arguments":{{"index":"x","vector":[1],"filter":{filter}}}}}}}"#
        )
    }

    #[test]
    fn ids_are_recovered_from_broken_and_partial_lines() {
        assert_eq!(
            recover_id(br#"{"jsonrpc":"2.0","id":7,"method":"tools/li"#),
            Some(7.into())
        );
        assert_eq!(
            recover_id(br#"{"params":{"id":3},"id":"a\"b"}"#),
            Some("a\"b".into())
        );
        assert_eq!(recover_id(br#"{"method":"x","params":{"id":3}"#), None);
        assert_eq!(recover_id(b"hello"), None);
        assert_eq!(recover_id(br#"{"id": -12 , "x": ["#), Some((-12).into()));
        assert_eq!(recover_id(br#"{"id":null}"#), None);
    }

    #[test]
    fn every_bad_line_with_an_id_gets_an_answer_with_that_id() {
        let garbage = classify(b"hello").unwrap_err();
        assert_eq!((garbage.id, garbage.code), (None, -32700));
        let truncated = classify(br#"{"jsonrpc":"2.0","id":7,"method":"tools/li"#).unwrap_err();
        assert_eq!((truncated.id, truncated.code), (Some(7.into()), -32700));
        let deep = classify(deep_and(100).as_bytes()).unwrap_err();
        assert_eq!((deep.id, deep.code), (Some(41.into()), -32600));
        assert!(deep.message.contains("levels deep"), "{}", deep.message);
        let deep_array = format!(
            r#"{{"jsonrpc":"2.0","id":"d","method":"ping","params":{{"x":{}1{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(classify(deep_array.as_bytes()).unwrap_err().id, Some("d".into()));
        let not_jsonrpc = classify(br#"{"id":5,"hello":"world"}"#).unwrap_err();
        assert_eq!((not_jsonrpc.id, not_jsonrpc.code), (Some(5.into()), -32600));
        let line = String::from_utf8(not_jsonrpc_line()).unwrap();
        assert!(line.ends_with('\n') && line.contains(r#""id":5"#), "{line}");
    }

    fn not_jsonrpc_line() -> Vec<u8> {
        classify(br#"{"id":5,"hello":"world"}"#).unwrap_err().to_line()
    }

    /// rmcp takes a `tools/call` with wrong params for an unknown method (-32601); the
    /// caller gets -32602 and the field at fault instead.
    #[test]
    fn a_tool_call_with_wrong_params_is_told_which() {
        let refused = |line: &str| classify(line.as_bytes()).unwrap_err();
        let r = refused(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"upsert","arguments":[1]}}"#,
        );
        assert_eq!((r.id, r.code), (Some(3.into()), -32602));
        assert_eq!(
            r.message,
            "Invalid params: params.arguments: must be a JSON object, got an array"
        );
        let r = refused(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":5}}"#);
        assert_eq!((r.id, r.code), (Some("a".into()), -32602));
        assert!(
            r.message
                .starts_with("Invalid params: params.name: invalid type: integer `5`"),
            "{}",
            r.message
        );
        let r = refused(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call"}"#);
        assert_eq!(r.message, "Invalid params: missing field `params`");
        // Not a call: rmcp decides, as before.
        assert!(classify(br#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#).is_ok());
    }

    #[test]
    fn a_filter_the_tool_can_refuse_still_reaches_the_tool() {
        // 58 levels of $and are 116 levels of JSON with the envelope: under serde_json's
        // limit, so the search tool answers with its own "nested deeper than 32" error.
        assert!(matches!(classify(deep_and(58).as_bytes()), Ok(Some(_))));
        assert!(classify(br#"{"jsonrpc":"2.0","method":"notifications/whatever"}"#).is_ok());
    }

    /// Generated `tools/call`-like lines (fields present, null, missing or of the wrong kind,
    /// in any order, with stray fields): whenever the fast parse answers, rmcp's own parse
    /// gives the same message, and for every call rmcp accepts, the fast parse answers.
    /// Seeded; `CALL_SEED=n` replays a run.
    #[test]
    fn the_fast_tool_call_parse_is_rmcps_parse() {
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        let seed = std::env::var("CALL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::rng().random());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        fn pick(rng: &mut rand::rngs::StdRng, options: &[&str]) -> Option<String> {
            let i = rng.random_range(0..=options.len());
            options.get(i).map(|s| s.to_string())
        }
        fn object(rng: &mut rand::rngs::StdRng, fields: Vec<(&str, Option<String>)>) -> String {
            let mut parts: Vec<String> = fields
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k:?}:{v}")))
                .collect();
            parts.shuffle(rng);
            format!("{{{}}}", parts.join(","))
        }
        let (mut fast_answered, mut calls_accepted, mut refused) = (0, 0, 0);
        for round in 0..20_000 {
            let meta = pick(
                &mut rng,
                &[
                    r#"{"progressToken":7}"#,
                    r#"{"a":{"b":[1,2.5]}}"#,
                    "null",
                    "{}",
                    "3",
                ],
            );
            let arguments = pick(
                &mut rng,
                &[
                    r#"{"index":"x","vectors":[{"id":"a","vector":[0.1,-2e-3,1e300,3],"metadata":{"k":null}}]}"#,
                    r#"{"filter":{"$and":[{"a":{"$gt":1}}]},"top_k":18446744073709551615}"#,
                    "{}",
                    "null",
                    "[1]",
                    r#""text""#,
                ],
            );
            let fields = vec![
                (
                    "name",
                    pick(&mut rng, &[r#""upsert""#, r#""search""#, "5", r#""""#]),
                ),
                ("arguments", arguments),
                ("_meta", meta),
                ("requestState", pick(&mut rng, &[r#""s1""#, "null", "1"])),
                ("inputResponses", pick(&mut rng, &[r#"{"r":{"x":1}}"#, "null"])),
                ("extra", pick(&mut rng, &["1", r#"{"y":[]}"#])),
            ];
            let params = object(&mut rng, fields);
            let fields = vec![
                (
                    "jsonrpc",
                    pick(&mut rng, &[r#""2.0""#, r#""2.0""#, r#""2.0""#, r#""1.0""#]),
                ),
                ("id", pick(&mut rng, &["1", r#""abc""#, "-4", "null", "1.5"])),
                (
                    "method",
                    pick(
                        &mut rng,
                        &[
                            r#""tools/call""#,
                            r#""tools/call""#,
                            r#""tools/list""#,
                            r#""ping""#,
                        ],
                    ),
                ),
                ("params", (rng.random_range(0..8) > 0).then_some(params)),
                (
                    "result",
                    (rng.random_range(0..12) == 0).then(|| "null".to_string()),
                ),
                ("error", (rng.random_range(0..12) == 0).then(|| "{}".to_string())),
                ("other", (rng.random_range(0..4) == 0).then(|| "true".to_string())),
            ];
            let line = object(&mut rng, fields);
            let fast = match tool_call(line.as_bytes()) {
                Fast::Message(mut message) => {
                    // Arguments kept as text are the arguments: put them back to compare.
                    if let rmcp::model::JsonRpcMessage::Request(r) = &mut message {
                        if let rmcp::model::ClientRequest::CallToolRequest(call) = &mut r.request {
                            if let Some(raw) = call.extensions.get::<RawArguments>() {
                                assert!(call.params.arguments.is_none());
                                call.params.arguments = Some(serde_json::from_str(&raw.0).unwrap());
                            }
                        }
                    }
                    Fast::Message(message)
                }
                other => other,
            };
            let reference = serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line.as_bytes());
            let is_call = matches!(
                &reference,
                Ok(rmcp::model::JsonRpcMessage::Request(r))
                    if matches!(r.request, rmcp::model::ClientRequest::CallToolRequest(_))
            );
            calls_accepted += usize::from(is_call);
            match (&fast, &reference) {
                (Fast::Message(fast), Ok(reference)) => {
                    fast_answered += 1;
                    assert_eq!(
                        serde_json::to_value(fast).unwrap(),
                        serde_json::to_value(reference).unwrap(),
                        "seed {seed}, round {round}: {line}"
                    );
                }
                (Fast::Message(_), Err(e)) => {
                    panic!("seed {seed}, round {round}: rmcp refuses ({e}) what the fast parse took: {line}")
                }
                (Fast::Refused(rejection), _) => {
                    refused += 1;
                    assert!(
                        !is_call,
                        "seed {seed}, round {round}: refused a call rmcp takes: {line}"
                    );
                    assert_eq!(rejection.code, -32602, "{line}");
                    assert!(rejection.id.is_some(), "{line}");
                    assert!(
                        rejection.message.starts_with("Invalid params: "),
                        "{}",
                        rejection.message
                    );
                }
                (Fast::NotMine, _) => assert!(
                    !is_call,
                    "seed {seed}, round {round}: a call only rmcp took: {line}"
                ),
            }
        }
        assert!(refused > 100, "seed {seed}: only {refused} refused");
        assert!(
            fast_answered > 200,
            "seed {seed}: only {fast_answered} calls generated"
        );
        assert_eq!(fast_answered, calls_accepted);
    }

    #[tokio::test]
    async fn lines_are_read_whole_and_over_long_ones_keep_their_top_level() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = Reader {
            input: BufReader::new(server),
            writer: Arc::new(Mutex::new(Box::new(tokio::io::sink()))),
        };
        let big = format!(r#"{{"id":9,"x":"{}"}}"#, "y".repeat(MAX_LINE));
        // The TypeScript SDK's order: the id after 16 MiB of params, which hold decoy ids,
        // escaped quotes and brackets inside strings.
        let params = r#"{"id":1,"s":"a\"}{[\\","v":[0.5,{"id":2}]}"#.repeat(MAX_LINE / 40);
        let sdk = format!(
            r#"{{"method":"tools/call","params":{{"a":[{params}]}},"jsonrpc":"2.0","id":"last-\"q"}}"#
        );
        tokio::spawn(async move {
            client.write_all(b"\r\n  \n{\"a\":1}\r\n").await.unwrap();
            client.write_all(big.as_bytes()).await.unwrap();
            client.write_all(b"\n").await.unwrap();
            client.write_all(sdk.as_bytes()).await.unwrap();
            client.write_all(b"\nlast").await.unwrap();
        });
        assert!(matches!(reader.read_line().await.unwrap(), Some(Line::Whole(l)) if l == b"{\"a\":1}"));
        match reader.read_line().await.unwrap() {
            Some(Line::TooLong(top)) => {
                assert_eq!(top, br#"{"id":9,"x":""#.iter().chain(&[b'y'; 1024]).chain(br#""}"#).copied().collect::<Vec<u8>>());
                assert_eq!(recover_id(&top), Some(9.into()));
            }
            _ => panic!("expected an over-long line"),
        }
        match reader.read_line().await.unwrap() {
            Some(Line::TooLong(top)) => {
                assert_eq!(
                    top,
                    br#"{"method":"tools/call","params":{},"jsonrpc":"2.0","id":"last-\"q"}"#
                );
                assert_eq!(recover_id(&top), Some("last-\"q".into()));
            }
            _ => panic!("expected an over-long line"),
        }
        assert!(matches!(reader.read_line().await.unwrap(), Some(Line::Whole(l)) if l == b"last"));
        assert!(reader.read_line().await.unwrap().is_none());
    }
}
