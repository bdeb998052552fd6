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
//! This file holds the connection: [`server_transport`], the writer and the line reader.
//! What a line becomes is [`classify`]'s; [`ids`] finds the `id` of a line that cannot be
//! parsed; [`call`] is the fast parse of `tools/call` requests.
//!
//! This module owns framing only: it knows nothing of tools, the store or ownership. Which
//! tools' arguments travel as text ([`RawArguments`]) is its caller's word.

mod call;
#[cfg(test)]
mod call_tests;
mod classify;
mod ids;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use futures::{Sink, Stream};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::RoleServer;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

pub(crate) use self::call::RawArguments;
use self::classify::{classify, Rejection};
use self::ids::{recover_id, Skeleton};

/// Longest line accepted (the limit rmcp applies, stated in the upsert tool's description).
const MAX_LINE: usize = 16 * 1024 * 1024;

type Writer = Arc<Mutex<Box<dyn AsyncWrite + Send + Unpin>>>;

/// The server side of one connection (stdio, or a relay's socket). The arguments of a
/// `tools/call` of a tool in `raw_argument_tools` reach it as [`RawArguments`], not as a
/// JSON object.
pub fn server_transport<R, W>(
    read: R,
    write: W,
    raw_argument_tools: &'static [&'static str],
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
        raw_argument_tools,
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
    /// The tools whose arguments are kept as text (see [`server_transport`]).
    raw_argument_tools: &'static [&'static str],
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
                Line::Whole(text) => match classify(&text, self.raw_argument_tools) {
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
