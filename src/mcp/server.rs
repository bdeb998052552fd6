//! The MCP handler: server identity, instructions for the LLM, and tool dispatch.
//!
//! The tools themselves live one family per file (`indexes.rs`, `vectors.rs`, `search.rs`);
//! this file only joins their routers and says who we are.

use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ResultType,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{tool_handler, ErrorData, RoleServer, ServerHandler, ServiceExt};
use tokio_util::sync::CancellationToken;

use super::args::ToolError;
use crate::embed::pipeline::Pipeline;
use crate::ownership::relay::{
    owner_leaving_error, ConnRead, ConnWrite, RelayFailure, RelayLink, RelaySession,
};
use crate::ownership::{Backend, Ownership};
use crate::store::Store;

/// How long a call waits for the process to decide its role, or for a relay to find the
/// new owner after the old one left or died.
const SETTLE: Duration = Duration::from_secs(20);

/// What an LLM reads on `initialize` to learn how to use us.
pub const INSTRUCTIONS: &str = "\
stride-vectors stores embedding vectors in named indexes and finds the nearest ones.
- To index text, call embed {index, documents: [{id, text, metadata}]}: the server embeds it
  (debounced and deduplicated, so call it on every edit). Search text with
  search {index, query}. Use flush to wait until everything is indexed; stats shows progress.
- Start with list_indexes (Stride uses student_profiles, advice_history and goals) or
  describe_index to learn an index's dimension and metric.
- Write with upsert {index, vectors: [{id, vector, metadata}]}; pass create_index
  {dimension, metric} to create the index on first use. Rows with an existing id are replaced.
- Read with search {index, vector or query, top_k, filter}. A text query is searched by meaning
  and by its words together (mode \"hybrid\", the default for text); use mode \"keyword\" to
  look up exact names, codes or rare terms, and mode \"vector\" for paraphrases. Each row keeps
  its text in metadata.text, returned with every hit. Filters are MongoDB style on metadata:
  {\"userId\": {\"$ne\": \"u1\"}}, {\"$and\": [{\"outcome\": \"helpful\"}, {\"score\": {\"$gte\": 3}}]}.
- update changes one row; its metadata is merged by default (metadata_mode \"replace\" overwrites).
- delete removes rows by ids or by filter; delete_index drops a whole index.
- Every write is acknowledged only after it is committed. Errors name the field at fault:
  fix the argument and call again.";

/// The server: a store handle and the routes to every tool.
#[derive(Clone)]
pub struct StrideServer {
    ownership: Ownership,
    tool_router: ToolRouter<StrideServer>,
    /// This session is a relay's connection to us (the owner): a call that comes while we
    /// leave is answered "owner leaving", so that the relay sends it to the next owner.
    relayed: bool,
}

impl StrideServer {
    pub fn new(ownership: Ownership) -> Self {
        StrideServer {
            ownership,
            tool_router: Self::router(),
            relayed: false,
        }
    }

    /// The handler of one relay's connection to this owner.
    pub fn for_relay(ownership: Ownership) -> Self {
        StrideServer {
            relayed: true,
            ..Self::new(ownership)
        }
    }

    pub(crate) fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// The open database, or the reason it is not open in this process.
    pub(crate) fn store(&self) -> Result<Store, ToolError> {
        self.local().map(|l| l.store)
    }

    pub(crate) fn pipeline(&self) -> Result<Pipeline, ToolError> {
        self.local().map(|l| l.pipeline)
    }

    fn local(&self) -> Result<crate::ownership::Local, ToolError> {
        match self.ownership.current() {
            Backend::Local(local) => Ok(local),
            Backend::Unavailable(why) => Err(why),
            Backend::Starting => Err("the server is still starting; retry in a moment".into()),
            // Tools run locally only when the backend is local; a relay forwards instead.
            Backend::Relay(_) => Err("this call reached a relay's local handler; retry".into()),
        }
    }

    /// Forward a call to the owner, following the ownership to the next owner (or to this
    /// process) when the owner leaves or dies before answering. Every tool is safe to
    /// repeat: writes are idempotent upserts, merges and deletes, an acknowledged `embed` is
    /// in the durable queue, and reads have no effect.
    ///
    /// Only "owner leaving" (its notice, its error, or a lost connection) sends a call
    /// elsewhere. Anything else the owner answered, a JSON-RPC error included, is the answer
    /// and is passed back at once, unchanged.
    async fn relay_call(
        &self,
        mut link: RelayLink,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // The caller's `_meta` (protocol revision, client info, progress token) describes the
        // caller's session with us, not ours with the owner.
        request.meta = None;
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            match link.call(request.clone()).await {
                Ok(response) => {
                    let failure = self.ownership.last_failure();
                    return Ok(relayed(&request.name, &link, failure, response));
                }
                Err(RelayFailure::Rpc(error)) => return Err(error),
                Err(RelayFailure::Silent(why)) => {
                    return Ok(CallToolResult::error(vec![ContentBlock::text(why)]).into())
                }
                Err(RelayFailure::Other(e)) => {
                    tracing::warn!(tool = %request.name, error = %e, "relayed call failed");
                    return Err(ErrorData::internal_error(
                        format!(
                            "relaying {} to the owning stride-vectors process failed: {e}",
                            request.name
                        ),
                        None,
                    ));
                }
                Err(RelayFailure::OwnerLeft) => {
                    tracing::warn!(tool = %request.name, "the owner left or died before answering; following the ownership");
                    // Until the deadline: a next owner seen for a moment may itself leave
                    // before we look again (owners come and go fast under hand-overs), which
                    // leaves us starting or on the old link; wait on rather than give up.
                    loop {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        match self.ownership.moved_on(&link, left).await {
                            Backend::Relay(next) if !next.same(&link) => {
                                link = next;
                                break;
                            }
                            Backend::Relay(_) | Backend::Starting if left.is_zero() => {
                                return Ok(gave_up());
                            }
                            // Back to waiting for the next change (after a breath, so that a
                            // closed ownership channel cannot make this spin).
                            Backend::Relay(_) | Backend::Starting => {
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await
                            }
                            // We own the file now (or know why nobody can).
                            _ => {
                                return self
                                    .tool_router
                                    .call(ToolCallContext::new(self, request, context))
                                    .await
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A relayed call's answer when no owner took over within [`SETTLE`].
fn gave_up() -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(format!(
        "the stride-vectors process that owned the database left, and no new owner answered within {} s; retry the call",
        SETTLE.as_secs()
    ))])
    .into()
}

impl StrideServer {
    /// Every tool, joined from the per-family routers, with schemas every validator accepts.
    pub fn router() -> ToolRouter<StrideServer> {
        let mut router = Self::index_tools()
            + Self::vector_tools()
            + Self::search_tools()
            + Self::embed_tools()
            + Self::stats_tools();
        for route in router.map.values_mut() {
            route.attr.input_schema = super::args::portable_schema(&route.attr.input_schema);
            if let Some(output) = &route.attr.output_schema {
                route.attr.output_schema = Some(super::args::portable_schema(output));
            }
        }
        router
    }

    /// Tool descriptions, as `tools/list` shows them (used to write `schemas/`).
    pub fn tools() -> Vec<Tool> {
        Self::router().list_all()
    }
}

/// Serve one relay's connection to this owner (what `main` gives [`Ownership::start`]).
pub fn serve_relay(
    ownership: Ownership,
    read: ConnRead,
    write: ConnWrite,
    end: CancellationToken,
) -> BoxFuture<'static, Option<RelaySession>> {
    Box::pin(async move {
        let server = StrideServer::for_relay(ownership);
        match server
            .serve_with_ct(
                super::transport::server_transport(read, write, super::args::RAW_ARGUMENT_TOOLS),
                end,
            )
            .await
        {
            Ok(running) => Some(RelaySession {
                peer: running.peer().clone(),
                done: Box::pin(async move {
                    let _ = running.waiting().await;
                }),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "relay handshake failed");
                None
            }
        }
    })
}

/// The owner's answer, in the shape every client revision expects from us. The owner
/// answered our own session with it, which may be on an older revision (no `resultType`);
/// the handler strips or keeps `resultType` for the caller's revision, so it must be there.
/// On a relay, `stats` also describes this process: its role, its PID and the owner's, when
/// the owner last answered its heartbeat, and this process's own store `failure`.
fn relayed(
    tool: &str,
    link: &RelayLink,
    failure: Option<String>,
    response: CallToolResponse,
) -> CallToolResponse {
    let CallToolResponse::Complete(mut result) = response else {
        return response;
    };
    result.result_type.get_or_insert(ResultType::COMPLETE);
    if tool != "stats" || result.is_error == Some(true) {
        return CallToolResponse::Complete(result);
    }
    if let Some(serde_json::Value::Object(stats)) = result.structured_content.as_mut() {
        if let Some(pid) = stats.get("pid").and_then(|p| p.as_u64()) {
            link.set_owner_pid(pid as u32);
        }
        stats.insert("role".into(), "relay".into());
        stats.insert("pid".into(), std::process::id().into());
        let heard = link.last_heartbeat().elapsed().as_millis() as u64;
        stats.insert("owner_heartbeat_ms_ago".into(), heard.into());
        // This process's own failures, not the owner's.
        match failure {
            Some(failure) => stats.insert("store_failure".into(), failure.into()),
            None => stats.remove("store_failure"),
        };
        let text = serde_json::Value::Object(stats.clone()).to_string();
        result.content = vec![ContentBlock::text(text)];
    }
    CallToolResponse::Complete(result)
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for StrideServer {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match self.ownership.settled(SETTLE).await {
            Backend::Relay(link) => {
                // The owner needs the arguments as an object, even those the transport kept
                // as text for a tool of ours.
                let mut request = request;
                if let Some(arguments) = super::args::raw_arguments(&context.extensions) {
                    request.arguments = Some(arguments.map_err(|e| ErrorData::invalid_params(e, None))?);
                }
                self.relay_call(link, request, context).await
            }
            _ if self.relayed => {
                // A leaving owner runs no new relayed call; one that was running when we
                // started to leave and failed on the closing store goes to the next owner.
                let Some(_running) = self.ownership.enter_relayed_call() else {
                    return Err(owner_leaving_error());
                };
                let answer = self
                    .tool_router
                    .call(ToolCallContext::new(self, request, context))
                    .await;
                let failed = match &answer {
                    Ok(CallToolResponse::Complete(result)) => result.is_error == Some(true),
                    Ok(_) => false,
                    Err(_) => true,
                };
                if failed && self.ownership.is_leaving() {
                    return Err(owner_leaving_error());
                }
                answer
            }
            _ => {
                self.tool_router
                    .call(ToolCallContext::new(self, request, context))
                    .await
            }
        }
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("stride-vectors", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}
