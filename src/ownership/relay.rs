//! Both ends of a relay: the link a relay keeps to the owner, and the owner's accept loop.
//!
//! A relay speaks MCP to the owner over the local socket, as one more MCP client: the owner
//! serves each connection with the same handler it serves its own stdio client with, so a
//! relayed call and a direct call run the same code.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rmcp::model::{CallToolRequestParams, CallToolResponse};
use rmcp::service::{Peer, ServiceError};
use rmcp::{RoleClient, ServiceExt};
use tokio_util::sync::CancellationToken;

use super::Ownership;

/// Why a relay could not reach the owner.
#[derive(Debug)]
pub enum ConnectError {
    /// Nobody answers yet (the owner is starting, or just died): try again shortly.
    Unreachable(String),
    /// Someone answers, but as another user: we must not send them our data.
    Foreign(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Unreachable(e) | ConnectError::Foreign(e) => f.write_str(e),
        }
    }
}

/// A live connection from this relay to the owner.
#[derive(Clone)]
pub struct RelayLink {
    peer: Peer<RoleClient>,
    /// Cancelled when the connection ends (the owner exited or died).
    closed: CancellationToken,
    /// Identity, to tell one link from the next.
    id: Arc<()>,
    owner_pid: Arc<std::sync::atomic::AtomicU32>,
}

impl RelayLink {
    /// Connect to the owner's socket; `Foreign` when the process there is not our user's.
    #[cfg(unix)]
    pub async fn connect(path: &std::path::Path) -> Result<RelayLink, ConnectError> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        if !super::socket::same_user(&stream) {
            return Err(ConnectError::Foreign(format!(
                "refusing to relay to {}: the process listening there runs as uid {}, not as this user; nothing was sent to it",
                path.display(),
                super::socket::peer_uid(&stream).map_or("unknown".to_string(), |u| u.to_string()),
            )));
        }
        let running =
            ().serve(stream.into_split())
                .await
                .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        let peer = running.peer().clone();
        let closed = CancellationToken::new();
        let done = closed.clone();
        tokio::spawn(async move {
            let _ = running.waiting().await;
            done.cancel();
        });
        Ok(RelayLink {
            peer,
            closed,
            id: Arc::new(()),
            owner_pid: Arc::default(),
        })
    }

    #[cfg(not(unix))]
    pub async fn connect(_path: &std::path::Path) -> Result<RelayLink, ConnectError> {
        Err(ConnectError::Unreachable(
            "relaying to another stride-vectors process is not supported on this platform yet".into(),
        ))
    }

    /// Forward one tool call to the owner.
    pub async fn call(&self, params: CallToolRequestParams) -> Result<CallToolResponse, ServiceError> {
        self.peer.call_tool_once(params).await
    }

    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub fn same(&self, other: &RelayLink) -> bool {
        Arc::ptr_eq(&self.id, &other.id)
    }

    /// The owner's PID, as last seen in a forwarded `stats` (0 before).
    pub fn owner_pid(&self) -> u32 {
        self.owner_pid.load(Ordering::Relaxed)
    }

    pub fn set_owner_pid(&self, pid: u32) {
        self.owner_pid.store(pid, Ordering::Relaxed)
    }
}

/// Serve every relay that connects, after checking it runs as our user.
#[cfg(unix)]
pub async fn accept(listener: tokio::net::UnixListener, ownership: Ownership) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a relay failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if !super::socket::same_user(&stream) {
            tracing::warn!("refused a relay connection from another user");
            continue;
        }
        let ownership = ownership.clone();
        tokio::spawn(async move {
            ownership.shared.relays.fetch_add(1, Ordering::SeqCst);
            let server = crate::mcp::StrideServer::new(ownership.clone());
            let (read, write) = stream.into_split();
            match server
                .serve(crate::mcp::transport::server_transport(read, write))
                .await
            {
                Ok(running) => {
                    tracing::info!(relays = ownership.relays(), "a relay connected");
                    let _ = running.waiting().await;
                }
                Err(e) => tracing::warn!(error = %e, "relay handshake failed"),
            }
            ownership.shared.relays.fetch_sub(1, Ordering::SeqCst);
            tracing::info!(relays = ownership.relays(), "a relay disconnected");
        });
    }
}
