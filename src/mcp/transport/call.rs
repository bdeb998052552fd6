//! The fast parse of `tools/call` requests: one pass into the message rmcp's own parse
//! makes, instead of rmcp's buffered layers (see [`tool_call`]).
//!
//! Every other line, and any call it finds unusual, is left to rmcp's parse; it must not
//! read, write or answer lines itself (that is [`super`] and [`super::classify`]).

use std::sync::Arc;

use rmcp::service::RxJsonRpcMessage;
use rmcp::RoleServer;

use super::classify::Rejection;

/// A call's arguments exactly as they came on the wire, kept for the tools the caller
/// names (see [`tool_call`]) in the request's extensions. rmcp's copy of the arguments is
/// then empty.
#[derive(Debug, Clone)]
pub(crate) struct RawArguments(pub(crate) Arc<str>);

/// What the fast path makes of a line (made once per line and matched at once, so the
/// variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub(super) enum Fast {
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
/// The arguments of the tools named in `raw_argument_tools` (the caller's list, see
/// [`super::server_transport`]) are not even made a JSON tree: they travel as
/// [`RawArguments`] in the request's extensions, and the tool parses them once, into its
/// own types.
pub(super) fn tool_call(line: &[u8], raw_argument_tools: &[&str]) -> Fast {
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
    // Text after the message (`{...} x`) makes the line unparsable for rmcp too: its
    // parse refuses it, and the caller gets -32700.
    if wire.method != "tools/call" || wire.result || wire.error || de.end().is_err() {
        return Fast::NotMine;
    }
    let raw = wire.params.arguments;
    // Kept as text only when it is an object (then it parses as one later, for sure).
    let keep = raw_argument_tools.contains(&wire.params.name.as_str())
        && raw.as_ref().is_some_and(|r| r.get().starts_with('{'));
    let mut params = CallToolRequestParams::new(wire.params.name);
    let mut kept = None;
    match raw {
        Some(raw) if keep => kept = Some(RawArguments(Arc::from(raw.get()))),
        Some(raw) => match serde_json::from_str::<Option<JsonObject>>(raw.get()) {
            Ok(arguments) => params.arguments = arguments,
            // An object that does not read as one holds a string that is not text (half of
            // a surrogate pair): rmcp refuses the whole line, and so the caller gets -32700.
            Err(_) if raw.get().starts_with('{') => return Fast::NotMine,
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
