//! What becomes of one whole line: a message for rmcp, a line skipped in silence, or a
//! [`Rejection`] (the JSON-RPC error it is answered with).
//!
//! It decides and builds answers; it reads and writes nothing (that is the reader in
//! [`super`]), and it leaves `tools/call` requests to the fast parse ([`super::call`]).

use rmcp::service::RxJsonRpcMessage;
use rmcp::RoleServer;
use serde_json::Value;

use super::call::{tool_call, Fast};
use super::ids::recover_id;

/// Deepest nesting of arrays and objects accepted. serde_json refuses past 128 levels for
/// the whole message; below that a filter reaches the tool, which names its own limit.
const MAX_DEPTH: usize = 120;

/// Why a line was not handed to rmcp, and the answer it gets.
#[derive(Debug, PartialEq)]
pub(super) struct Rejection {
    pub(super) id: Option<Value>,
    pub(super) code: i32,
    pub(super) message: String,
    /// A JSON-RPC batch (an array): answered with id null, since MCP has no batches.
    pub(super) batch: bool,
}

impl Rejection {
    pub(super) fn to_line(&self) -> Vec<u8> {
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
pub(super) fn classify(
    line: &[u8],
    raw_argument_tools: &[&str],
) -> Result<Option<RxJsonRpcMessage<RoleServer>>, Rejection> {
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
    match tool_call(line, raw_argument_tools) {
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

/// Deepest nesting of `[` and `{` outside strings (an upper bound for malformed text).
///
/// Runs over every byte of every line, so it skips what cannot matter quickly: outside
/// strings a table marks the five bytes that do, inside strings `memchr` finds the quote or
/// backslash that ends the run.
pub(super) fn max_depth(text: &[u8]) -> usize {
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
