//! Both ends of a relay: the link a relay keeps to the owner, and the owner's accept loop.
//!
//! A relay speaks MCP to the owner over the local socket, as one more MCP client: the owner
//! serves each connection with the same handler it serves its own stdio client with, so a
//! relayed call and a direct call run the same code.
//!
//! Two things travel on the link besides tool calls, and they are the hand-over protocol:
//! - **Owner leaving.** An owner that stops sends [`OWNER_LEAVING_METHOD`] to every relay, and
//!   answers every relayed call it will not finish with the JSON-RPC error
//!   [`OWNER_LEAVING_CODE`]. A relay that hears either (or loses the connection) sends the
//!   call again to whoever owns the file next, which may be itself. Calls are safe to repeat:
//!   writes are idempotent per id, and an acknowledged `embed` is in the durable queue.
//! - **Heartbeat.** The relay pings the owner (rmcp answers `ping` in its own task, off the
//!   path of tool calls, so a long flush or search does not delay it). An owner that has not
//!   answered for the owner timeout is *silent*: every call waiting on it is answered with
//!   an error naming its pid, and new calls get that answer at once, until it answers again
//!   or its connection closes (it died: take-over).
//!
//! This module owns the link and the accept loop; it decides nothing about roles (that is
//! [`super::supervise`]) and runs no tool itself.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientRequest, CustomNotification, ErrorCode, PingRequest,
    ServerNotification,
};
use rmcp::service::{NotificationContext, Peer, ServiceError};
use rmcp::{ErrorData, RoleClient, RoleServer, ServiceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Ownership;
use crate::platform::{Endpoint, Rendezvous, Transport};

/// The notification an owner sends to its relays when it starts to leave.
pub const OWNER_LEAVING_METHOD: &str = "notifications/stride-vectors/owner_leaving";
/// The JSON-RPC error an owner answers a relayed call with once it is leaving: "send this
/// call to the next owner". In the range JSON-RPC leaves to servers; only relays see it.
pub const OWNER_LEAVING_CODE: ErrorCode = ErrorCode(-32090);

/// The error a leaving owner answers a relayed call with.
pub fn owner_leaving_error() -> ErrorData {
    ErrorData::new(
        OWNER_LEAVING_CODE,
        format!(
            "the stride-vectors process that owns the database (pid {}) is leaving; send the call to the next owner",
            std::process::id()
        ),
        None,
    )
}

pub use crate::platform::ConnectError;

/// How a relayed call did not get the owner's answer.
#[derive(Debug)]
pub enum RelayFailure {
    /// The owner is leaving or gone, and did not run the call (or its answer was lost):
    /// send it to the next owner.
    OwnerLeft,
    /// The owner has not answered its heartbeat for the owner timeout. The text names it.
    Silent(String),
    /// The owner answered with a JSON-RPC error: that is the answer.
    Rpc(ErrorData),
    /// The link failed in another way.
    Other(ServiceError),
}

/// A live connection from this relay to the owner.
#[derive(Clone)]
pub struct RelayLink {
    peer: Peer<RoleClient>,
    /// Cancelled when the connection ends (the owner exited or died).
    closed: CancellationToken,
    /// Cancelled when the owner said it is leaving: no new call goes to it.
    leaving: CancellationToken,
    health: Arc<Health>,
    /// Identity, to tell one link from the next.
    id: Arc<()>,
    owner_pid: Arc<AtomicU32>,
}

/// What the heartbeat knows of the owner.
struct Health {
    /// When the owner last answered a ping (or the link was made). `std` mutex: read and
    /// written in one statement.
    last_answer: Mutex<Instant>,
    /// `true` while the owner has not answered for longer than `timeout`.
    silent: watch::Sender<bool>,
    timeout: Duration,
}

/// The relay's MCP client: it only listens for the owner's "leaving" notice.
#[derive(Clone)]
struct RelayClient {
    leaving: CancellationToken,
}

impl rmcp::ClientHandler for RelayClient {
    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleClient>,
    ) {
        if notification.method == OWNER_LEAVING_METHOD {
            tracing::info!("the owner is leaving; calls go to the next owner");
            self.leaving.cancel();
        }
    }
}

impl RelayLink {
    /// Connect to the owner's socket or pipe; `Foreign` when the process there is not our
    /// user's. `owner_timeout` bounds how long the owner may leave heartbeats unanswered,
    /// and the MCP handshake too: a frozen owner's socket still accepts connections.
    pub async fn connect(
        rendezvous: &Rendezvous,
        owner_timeout: Duration,
        ownership: &Ownership,
    ) -> Result<RelayLink, ConnectError> {
        let (stream, pid) = Transport::connect(rendezvous).await?;
        let pid = pid.unwrap_or(0);
        let leaving = CancellationToken::new();
        let client = RelayClient {
            leaving: leaving.clone(),
        };
        let running = match tokio::time::timeout(owner_timeout, client.serve(tokio::io::split(stream))).await {
            Ok(Ok(running)) => running,
            Ok(Err(e)) => return Err(ConnectError::Unreachable(e.to_string())),
            Err(_) => {
                return Err(ConnectError::Unreachable(format!(
                    "the owner (pid {pid}) accepted the connection but did not answer the MCP handshake within {} ms",
                    owner_timeout.as_millis()
                )))
            }
        };
        let peer = running.peer().clone();
        let closed = CancellationToken::new();
        let done = closed.clone();
        // Ends with the connection: `waiting` returns when the socket closes.
        ownership.spawn(async move {
            let _ = running.waiting().await;
            done.cancel();
        });
        let health = Arc::new(Health {
            last_answer: Mutex::new(Instant::now()),
            silent: watch::Sender::new(false),
            timeout: owner_timeout,
        });
        let link = RelayLink {
            peer,
            closed,
            leaving,
            health,
            id: Arc::new(()),
            owner_pid: Arc::new(AtomicU32::new(pid)),
        };
        // Ends when the link closes.
        ownership.spawn(heartbeat(link.clone()));
        Ok(link)
    }

    /// Forward one tool call to the owner. A silent owner answers [`RelayFailure::Silent`]
    /// at once, or as soon as it falls silent while the call waits; the call may still run
    /// if that process resumes, and the error says so.
    pub async fn call(&self, params: CallToolRequestParams) -> Result<CallToolResponse, RelayFailure> {
        if self.leaving.is_cancelled() || self.closed.is_cancelled() {
            return Err(RelayFailure::OwnerLeft);
        }
        let mut silent = self.health.silent.subscribe();
        if *silent.borrow_and_update() {
            return Err(RelayFailure::Silent(self.silence()));
        }
        tokio::select! {
            answer = self.peer.call_tool_once(params) => answer.map_err(|e| self.failure(e)),
            _ = silent.wait_for(|s| *s) => Err(RelayFailure::Silent(self.silence())),
        }
    }

    fn failure(&self, error: ServiceError) -> RelayFailure {
        match error {
            ServiceError::McpError(e) if e.code == OWNER_LEAVING_CODE => RelayFailure::OwnerLeft,
            ServiceError::McpError(e) => RelayFailure::Rpc(e),
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => RelayFailure::OwnerLeft,
            _ if self.closed.is_cancelled() => RelayFailure::OwnerLeft,
            e => RelayFailure::Other(e),
        }
    }

    /// What a call hears while the owner is silent.
    fn silence(&self) -> String {
        let pid = match self.owner_pid() {
            0 => "pid unknown".to_string(),
            pid => format!("pid {pid}"),
        };
        format!(
            "the stride-vectors process that owns the database ({pid}) does not respond: no answer to its heartbeat for {} ms (limit {} ms; --owner-timeout-ms). It may be stopped (a debugger, a suspended job) or overloaded. This call was not confirmed and may still take effect if that process resumes; this relay takes over as soon as the process exits",
            self.last_heartbeat().elapsed().as_millis(),
            self.health.timeout.as_millis(),
        )
    }

    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Whether the owner said it is leaving (calls then wait for the next owner).
    pub fn is_leaving(&self) -> bool {
        self.leaving.is_cancelled()
    }

    pub fn same(&self, other: &RelayLink) -> bool {
        Arc::ptr_eq(&self.id, &other.id)
    }

    /// The owner's PID: from the socket's peer credentials, else as last seen in a
    /// forwarded `stats` (0 before).
    pub fn owner_pid(&self) -> u32 {
        self.owner_pid.load(Ordering::Relaxed)
    }

    pub fn set_owner_pid(&self, pid: u32) {
        self.owner_pid.store(pid, Ordering::Relaxed)
    }

    /// When the owner last answered a heartbeat.
    pub fn last_heartbeat(&self) -> Instant {
        *self.health.last_answer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the owner has been silent for longer than the owner timeout.
    pub fn is_silent(&self) -> bool {
        *self.health.silent.borrow()
    }
}

/// Ping the owner every tenth of the owner timeout (at most every second), one ping at a
/// time. The owner is marked silent once nothing has answered for the whole timeout, and
/// not silent as soon as a ping is answered (a stopped owner that resumes answers the ping
/// that was waiting).
async fn heartbeat(link: RelayLink) {
    let timeout = link.health.timeout;
    let period = (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = link.closed.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let ping = link
            .peer
            .send_request(ClientRequest::PingRequest(PingRequest::default()));
        tokio::pin!(ping);
        loop {
            let silent_at = tokio::time::Instant::from_std(link.last_heartbeat() + timeout);
            tokio::select! {
                _ = link.closed.cancelled() => return,
                answer = &mut ping => {
                    // An error answer is an answer too: the owner is alive.
                    if matches!(answer, Ok(_) | Err(ServiceError::McpError(_))) {
                        *link.health.last_answer.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                        if link.health.silent.send_replace(false) {
                            tracing::info!(owner_pid = link.owner_pid(), "the owner answers again");
                        }
                    }
                    break;
                }
                _ = tokio::time::sleep_until(silent_at), if !link.is_silent() => {
                    link.health.silent.send_replace(true);
                    tracing::warn!(
                        owner_pid = link.owner_pid(),
                        timeout_ms = timeout.as_millis() as u64,
                        "the owner does not answer its heartbeat; waiting calls are told so"
                    );
                }
            }
        }
    }
}

/// One relay's MCP session on this owner, once its handshake is done.
pub struct RelaySession {
    /// Where to send "owner leaving".
    pub peer: Peer<RoleServer>,
    /// Ends when the connection ends.
    pub done: BoxFuture<'static, ()>,
}

/// The reading half of a relay's connection, whatever the OS's transport.
pub type ConnRead = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
/// The writing half of a relay's connection.
pub type ConnWrite = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Serves one relay's connection with the MCP handler until `end` is cancelled or the
/// connection closes; `None` when the handshake failed. Given by `main`, so that this
/// module knows nothing of `mcp/`.
pub type ServeRelay = Arc<
    dyn Fn(Ownership, ConnRead, ConnWrite, CancellationToken) -> BoxFuture<'static, Option<RelaySession>>
        + Send
        + Sync,
>;

/// One relay connected to us: where to send "leaving", and how to end it.
pub(super) struct Attached {
    id: u64,
    peer: Peer<RoleServer>,
    end: CancellationToken,
}

/// Tell every attached relay that this owner is leaving (each within `within`).
pub(super) async fn announce_leaving(attached: Vec<(Peer<RoleServer>, u64)>, within: Duration) {
    let sends = attached.into_iter().map(|(peer, id)| async move {
        let notice = ServerNotification::CustomNotification(CustomNotification::new(
            OWNER_LEAVING_METHOD,
            Some(serde_json::json!({ "pid": std::process::id() })),
        ));
        match tokio::time::timeout(within, peer.send_notification(notice)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(relay = id, error = %e, "could not tell a relay we leave"),
            Err(_) => tracing::debug!(relay = id, "telling a relay we leave timed out"),
        }
    });
    futures::future::join_all(sends).await;
}

impl Attached {
    pub(super) fn peer(&self) -> (Peer<RoleServer>, u64) {
        (self.peer.clone(), self.id)
    }

    pub(super) fn end(&self) {
        self.end.cancel();
    }
}

/// Serve every relay that connects, after checking it runs as our user. Ends when
/// `stop` is cancelled (the owner leaves); the connections end through [`Ownership`].
pub async fn accept(mut listener: Transport, ownership: Ownership, stop: CancellationToken) {
    let mut next_id = 0u64;
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a relay failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        let (ownership, id) = (ownership.clone(), next_id);
        ownership.clone().spawn(async move {
            ownership.shared.relays.fetch_add(1, Ordering::SeqCst);
            let (read, write) = tokio::io::split(stream);
            let end = CancellationToken::new();
            let serve = ownership.shared.serve_relay.clone();
            if let Some(session) = serve(
                ownership.clone(),
                Box::new(read),
                Box::new(write),
                end.child_token(),
            )
            .await
            {
                ownership.attach(Attached {
                    id,
                    peer: session.peer,
                    end,
                });
                tracing::info!(relays = ownership.relays(), "a relay connected");
                session.done.await;
                ownership.detach(id);
            }
            ownership.shared.relays.fetch_sub(1, Ordering::SeqCst);
            tracing::info!(relays = ownership.relays(), "a relay disconnected");
        });
    }
}
