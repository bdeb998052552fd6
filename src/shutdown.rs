//! How the process learns it should stop, as a first-class concern (as in mini-redis).
//!
//! The server stops on stdin EOF (its client went away; rmcp's service ends by itself), on
//! SIGTERM and on SIGINT. Whatever the cause, `main` then lets the writer commit what it
//! has accepted and closes the database, so an acknowledged write is never lost.

/// Resolve when SIGTERM or SIGINT arrives; the value names the signal for the log.
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                tracing::warn!("cannot listen for signals; stopping only on stdin EOF");
                std::future::pending().await
            }
        }
    }
    #[cfg(not(unix))]
    {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}
