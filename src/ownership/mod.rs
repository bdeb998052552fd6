//! Who owns the database file: one owner per file, relays for everyone else, take-over.
//!
//! Every MCP client starts its own stride-vectors process, and DuckDB lets only one process
//! open a file. So each process, on start, tries to take the owner lock ([`lock`]):
//!
//! - The **owner** opens DuckDB read-write and listens on a local socket or named pipe
//!   ([`crate::platform`]) where other processes reach it. If DuckDB's file is held by a program that is not
//!   stride-vectors, the owner says so in every data call, keeps answering `initialize`
//!   and `tools/list`, and retries the open with backoff.
//! - A **relay** connects to that socket and forwards every tool call to the owner, speaking
//!   MCP ([`relay`]). When the owner goes away its socket closes at once; the relays race for
//!   the lock, one becomes the owner (DuckDB replays its WAL, the pipeline resumes pending
//!   documents), the others connect to it.
//! - An owner that **stops** (its client left, SIGTERM, SIGINT) hands over at once, whether
//!   relays are attached or not: it turns new relayed calls away with "owner leaving" and
//!   tells every relay so, lets the calls in flight finish (for a bounded time), commits,
//!   closes the database and exits; the lock goes with the process. A relay sends every call
//!   the owner did not answer to the next owner. See `main.rs`'s `stop` for the order.
//!
//! This module publishes the current [`Backend`] through a `watch` channel; the MCP handler
//! reads it and never touches locks or sockets itself.

pub mod lock;
pub mod relay;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServeConfig;
use crate::embed::pipeline::Pipeline;
use crate::platform::{Endpoint, Rendezvous, Transport};
use crate::retry::{Backoff, Retry};
use crate::store::Store;
use lock::OwnerLock;
use relay::{RelayLink, ServeRelay};

/// The database, open in this process.
#[derive(Clone)]
pub struct Local {
    pub store: Store,
    pub pipeline: Pipeline,
}

/// Where tool calls go right now.
#[derive(Clone)]
pub enum Backend {
    /// Deciding who owns the file (the first instants of a process).
    Starting,
    /// We own the file and it is open here.
    Local(Local),
    /// We own the lock but cannot open the file; the text says why.
    Unavailable(String),
    /// Another stride-vectors process owns the file; calls are forwarded to it.
    Relay(RelayLink),
}

/// Cheap-to-clone view of this process's role, shared by every MCP session it serves.
#[derive(Clone)]
pub struct Ownership {
    backend: watch::Receiver<Backend>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Relays currently connected to us (when we own the file).
    relays: AtomicUsize,
    /// Held for the life of the process once we are the owner. `std` mutex: set once.
    lock: Mutex<Option<OwnerLock>>,
    rendezvous: Rendezvous,
    /// A relay's bound on an owner that does not answer its heartbeat.
    owner_timeout: Duration,
    /// Set once this owner starts to leave: relayed calls are turned away from then on.
    leaving: AtomicBool,
    /// Relayed calls running here now, and a wake-up for when that drops to zero.
    relayed_calls: AtomicUsize,
    relayed_idle: Notify,
    /// The relays connected to us. `std` mutex: held to push, remove or copy, never across
    /// an await.
    attached: Mutex<Vec<relay::Attached>>,
    /// Stops this ownership term's accept loop when we leave. `std` mutex: replaced when a
    /// new term begins, cloned otherwise.
    accept_stop: Mutex<CancellationToken>,
    /// The last failure of a store this process owned (a writer or loader panic), for
    /// `stats`. `std` mutex: set and read in one statement.
    last_failure: Mutex<Option<String>>,
    /// Why this owner cannot listen for relays (its socket could not be bound), while that
    /// lasts; it retries in the background. `std` mutex: set and read in one statement.
    relay_socket_error: Mutex<Option<String>>,
    /// How a relay's connection is served (the MCP handler, given by `main`).
    serve_relay: ServeRelay,
    /// Cancelled when the process stops (a child of `main`'s token): every task below
    /// ends at its next await.
    stop: CancellationToken,
    /// Every task this module starts (the supervisor, accept loops, relay connections,
    /// heartbeats, "leaving" notices); `main` waits for them at exit.
    tasks: TaskTracker,
}

/// A relayed call counted as running until this is dropped.
pub struct RelayedCall {
    shared: Arc<Shared>,
}

impl Drop for RelayedCall {
    fn drop(&mut self) {
        if self.shared.relayed_calls.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.relayed_idle.notify_waiters();
        }
    }
}

impl Ownership {
    /// Start deciding ownership of `config.db_path` in the background; once we own it,
    /// relays' connections are served with `serve_relay`.
    pub fn start(config: ServeConfig, serve_relay: ServeRelay, stop: CancellationToken) -> Ownership {
        let (tx, rx) = watch::channel(Backend::Starting);
        let shared = Arc::new(Shared {
            relays: AtomicUsize::new(0),
            lock: Mutex::new(None),
            rendezvous: Rendezvous::for_database(&config.db_path),
            owner_timeout: config.owner_timeout,
            leaving: AtomicBool::new(false),
            relayed_calls: AtomicUsize::new(0),
            relayed_idle: Notify::new(),
            attached: Mutex::new(Vec::new()),
            accept_stop: Mutex::new(CancellationToken::new()),
            last_failure: Mutex::new(None),
            relay_socket_error: Mutex::new(None),
            serve_relay,
            stop,
            tasks: TaskTracker::new(),
        });
        let ownership = Ownership { backend: rx, shared };
        if config.postgres.is_some() {
            ownership.spawn(connect_postgres(config, tx, ownership.shared.stop.clone()));
        } else {
            ownership.spawn(supervise(config, tx, ownership.clone()));
        }
        ownership
    }

    /// Run `task` as one of ours: it is dropped at its next await once the process stops,
    /// and [`Ownership::stop_tasks`] waits for it.
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.shared.stop.clone();
        self.shared.tasks.spawn(async move {
            tokio::select! {
                _ = task => {}
                _ = stop.cancelled() => {}
            }
        });
    }

    /// Stop every task of this module and wait for them, up to `within`; false if some
    /// still ran then (they are dropped with the runtime).
    pub async fn stop_tasks(&self, within: Duration) -> bool {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        let done = tokio::time::timeout(within, self.shared.tasks.wait())
            .await
            .is_ok();
        if !done {
            tracing::warn!(
                tasks = self.shared.tasks.len(),
                "ownership tasks still running at exit"
            );
        }
        done
    }

    pub fn current(&self) -> Backend {
        self.backend.borrow().clone()
    }

    /// The backend once it is decided, waiting up to `timeout` for the start to finish.
    pub async fn settled(&self, timeout: Duration) -> Backend {
        let mut rx = self.backend.clone();
        // Whether it settled or timed out, the answer is the backend as it is now.
        let _ = tokio::time::timeout(timeout, rx.wait_for(|b| !matches!(b, Backend::Starting))).await;
        self.current()
    }

    /// Wait until the backend is no longer the relay link `from` (the owner went away and
    /// a new route was found), up to `timeout`.
    pub async fn moved_on(&self, from: &RelayLink, timeout: Duration) -> Backend {
        let mut rx = self.backend.clone();
        let _ = tokio::time::timeout(
            timeout,
            rx.wait_for(|b| match b {
                Backend::Relay(link) => !link.same(from),
                Backend::Starting => false,
                _ => true,
            }),
        )
        .await;
        self.current()
    }

    /// The last failure of a store this process owned, if any.
    pub fn last_failure(&self) -> Option<String> {
        self.shared
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the other processes on this file cannot relay to us, while they cannot.
    pub fn relay_socket_error(&self) -> Option<String> {
        self.shared
            .relay_socket_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_relay_socket_error(&self, why: Option<String>) {
        *self
            .shared
            .relay_socket_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = why;
    }

    pub fn relays(&self) -> usize {
        self.shared.relays.load(Ordering::SeqCst)
    }

    /// Count a relayed call as running, unless this owner is leaving (then the call must go
    /// to the next owner, and `None` says so).
    pub fn enter_relayed_call(&self) -> Option<RelayedCall> {
        // Counted before the check: `begin_leaving` sets the flag before it waits for the
        // count, so a call either sees the flag or is waited for.
        self.shared.relayed_calls.fetch_add(1, Ordering::SeqCst);
        let call = RelayedCall {
            shared: self.shared.clone(),
        };
        (!self.is_leaving()).then_some(call)
    }

    /// Whether this owner has started to leave.
    pub fn is_leaving(&self) -> bool {
        self.shared.leaving.load(Ordering::SeqCst)
    }

    /// Start leaving: turn new relayed calls away, stop accepting relays, and tell every
    /// attached relay to move to the next owner.
    pub async fn begin_leaving(&self) {
        self.shared.leaving.store(true, Ordering::SeqCst);
        self.shared
            .accept_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancel();
        let attached: Vec<_> = self.attached().iter().map(relay::Attached::peer).collect();
        relay::announce_leaving(attached, Duration::from_millis(500)).await;
    }

    /// Wait until no relayed call runs here, up to `timeout`; true when none does.
    pub async fn relayed_calls_done(&self, timeout: Duration) -> bool {
        let idle = async {
            loop {
                let woken = self.shared.relayed_idle.notified();
                if self.shared.relayed_calls.load(Ordering::SeqCst) == 0 {
                    return;
                }
                woken.await;
            }
        };
        tokio::time::timeout(timeout, idle).await.is_ok()
    }

    /// Close every relay connection (they then take over or reconnect).
    pub fn end_relays(&self) {
        for relay in self.attached().iter() {
            relay.end();
        }
    }

    fn attached(&self) -> std::sync::MutexGuard<'_, Vec<relay::Attached>> {
        self.shared.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn attach(&self, relay: relay::Attached) {
        // A relay that connected as we started to leave hears it too.
        if self.is_leaving() {
            let peer = relay.peer();
            self.spawn(relay::announce_leaving(vec![peer], Duration::from_millis(500)));
        }
        self.attached().push(relay);
    }

    fn detach(&self, id: u64) {
        self.attached().retain(|r| r.peer().1 != id);
    }

    pub fn rendezvous(&self) -> &Rendezvous {
        &self.shared.rendezvous
    }

    /// Take the owner lock out, for the caller to keep until the process exits (see
    /// `main.rs`): dropped with the rest of the ownership, it could be released while a
    /// DuckDB connection of ours is still closing.
    pub fn take_lock(&self) -> Option<OwnerLock> {
        self.shared.lock.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Whether this process holds the owner lock (and so its socket file is ours).
    pub fn holds_lock(&self) -> bool {
        self.shared
            .lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// Between looks at a rendezvous that a person must fix: 1 s, doubling up to 10 s.
const TROUBLE_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), 2, Duration::from_secs(10));
/// How long the owner lock may be held by a process we cannot connect to before calls are
/// told so (an owner binds its socket right after taking the lock, and a dead one's lock
/// goes with it within milliseconds).
const OWNER_UNREACHABLE: Duration = Duration::from_secs(2);
/// Between looks for an owner that is starting or whose lock is still being released:
/// short and flat (a take-over waits on it).
const TAKE_OVER_POLL: Backoff = Backoff::new(Duration::from_millis(25), 1, Duration::from_millis(25));

/// Try to own the file; relay to the owner while someone else does; take over when the
/// owner goes away. Ends only once we are the owner (the process then owns it until exit).
async fn supervise(config: ServeConfig, tx: watch::Sender<Backend>, ownership: Ownership) {
    let rendezvous = ownership.shared.rendezvous.clone();
    let mut quiet = false;
    // Something is wrong that a person must fix (the socket's directory, another user's
    // process, the lock file): look again, less and less often.
    let mut trouble = Retry::new(TROUBLE_BACKOFF);
    // Since when the lock has been held by a process we cannot reach.
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        if let Err(e) = rendezvous.check_private_dir() {
            let _ = tx.send(Backend::Unavailable(e.to_string()));
            tracing::error!("{e}");
            tokio::time::sleep(trouble.next_delay()).await;
            continue;
        }
        match OwnerLock::try_acquire(&rendezvous.lock) {
            Ok(Some(lock)) => {
                unreachable_since = None;
                *ownership.shared.lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(lock);
                // Calls wait for the database to open here instead of going to a dead link.
                tx.send_if_modified(|b| {
                    !matches!(std::mem::replace(b, Backend::Starting), Backend::Starting)
                });
                tracing::info!(pid = std::process::id(), "this process owns the database");
                become_owner(&config, &tx, &ownership).await;
                // Owners keep the file until the process exits, unless the store breaks.
                let failure = match ownership.current() {
                    Backend::Local(local) => local.store.wait_failed().await,
                    _ => return,
                };
                let had_relays = step_down(&ownership, &tx, failure).await;
                if had_relays {
                    // Leave the file to a relay first: we just failed with it.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                quiet = false;
                continue;
            }
            Ok(None) => {
                match RelayLink::connect(&rendezvous, ownership.shared.owner_timeout, &ownership).await {
                    Ok(link) => {
                        trouble.reset();
                        unreachable_since = None;
                        tracing::info!(socket = %rendezvous.address.display(), "relaying to the owner");
                        let _ = tx.send(Backend::Relay(link.clone()));
                        link.closed().await;
                        tracing::warn!("the owner went away; taking over or reconnecting");
                        quiet = false;
                    }
                    Err(relay::ConnectError::Foreign(why)) => {
                        tracing::error!("{why}");
                        let _ = tx.send(Backend::Unavailable(why));
                        tokio::time::sleep(trouble.next_delay()).await;
                    }
                    Err(e) => {
                        // The owner is starting (socket not bound yet) or just died (lock not
                        // yet released): try again shortly. An owner that stays out of reach
                        // cannot listen: calls then hear why, and we look less often.
                        let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() < OWNER_UNREACHABLE {
                            if !quiet {
                                tracing::debug!(error = %e, "owner not reachable yet");
                                quiet = true;
                            }
                            tokio::time::sleep(TAKE_OVER_POLL.delay(1)).await;
                            continue;
                        }
                        let why = format!(
                            "another stride-vectors process owns {} but cannot be reached at {} ({e}) for {} s; its own stats say why. Retrying in the background",
                            config.db_path.display(),
                            rendezvous.address.display(),
                            since.elapsed().as_secs()
                        );
                        let first = !matches!(&*tx.borrow(), Backend::Unavailable(_));
                        if first {
                            tracing::error!("{why}");
                        }
                        let _ = tx.send(Backend::Unavailable(why));
                        tokio::time::sleep(trouble.next_delay()).await;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Backend::Unavailable(format!(
                    "cannot take the owner lock {}: {e}",
                    rendezvous.lock.display()
                )));
                tokio::time::sleep(trouble.next_delay()).await;
            }
        }
    }
}

/// How long a stopping owner lets relayed calls in flight finish.
pub const DRAIN: Duration = Duration::from_secs(2);

/// The store this process owns broke: give the file up as a leaving owner does (relays
/// told, calls in flight finished), say why in every call meanwhile, drop every connection
/// and the owner lock, so that the file is opened again, by a relay or by us. Returns
/// whether relays were attached.
async fn step_down(ownership: &Ownership, tx: &watch::Sender<Backend>, failure: String) -> bool {
    tracing::error!(error = %failure, "the store failed; giving the database up");
    *ownership
        .shared
        .last_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(failure.clone());
    let had_relays = ownership.relays() > 0;
    ownership.begin_leaving().await;
    ownership.relayed_calls_done(DRAIN).await;
    let said = crate::store::StoreError::Failed(failure).to_string();
    if let Backend::Local(local) = tx.send_replace(Backend::Unavailable(said)) {
        local.pipeline.shutdown(Duration::ZERO).await;
        local.store.release().await;
    }
    Transport::remove(&ownership.shared.rendezvous);
    ownership.end_relays();
    ownership
        .shared
        .lock
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    had_relays
}

/// Listen for relays, then open the database, retrying with backoff while another program
/// holds DuckDB's lock.
async fn become_owner(config: &ServeConfig, tx: &watch::Sender<Backend>, ownership: &Ownership) {
    // A new term: relayed calls are welcome again.
    ownership.shared.leaving.store(false, Ordering::SeqCst);
    if let Err(e) = listen_for_relays(ownership) {
        // Our own client is served all the same; the others hear why they cannot be (see
        // `supervise`), `stats` says it here, and the socket is tried again until it works.
        let why = format!(
            "cannot listen for relays at {}: {e}; other stride-vectors processes on this file cannot reach this one until it can (retrying in the background)",
            ownership.shared.rendezvous.address.display()
        );
        tracing::error!("{why}");
        ownership.set_relay_socket_error(Some(why));
        let again = ownership.clone();
        ownership.spawn(async move {
            let mut trouble = Retry::new(TROUBLE_BACKOFF);
            loop {
                tokio::time::sleep(trouble.next_delay()).await;
                if again.is_leaving() {
                    return;
                }
                if listen_for_relays(&again).is_ok() {
                    again.set_relay_socket_error(None);
                    tracing::info!("listening for relays now");
                    return;
                }
            }
        });
    }
    open_with_backoff(config, tx, &ownership.shared.stop).await;
}

/// Bind the socket and start a new accept loop for this ownership term.
fn listen_for_relays(ownership: &Ownership) -> std::io::Result<()> {
    let listener = Transport::listen(&ownership.shared.rendezvous)?;
    let stop = ownership.shared.stop.child_token();
    *ownership
        .shared
        .accept_stop
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = stop.clone();
    ownership.spawn(relay::accept(listener, ownership.clone(), stop));
    tracing::info!(address = %ownership.shared.rendezvous.address.display(), "listening for relays");
    Ok(())
}

/// Between attempts to open a database that cannot be opened: 200 ms doubling up to 5 s.
const OPEN_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), 2, Duration::from_secs(5));

/// Open the store, retrying with backoff (up to every 5 s) while it cannot be opened, and
/// saying why in every data call meanwhile.
async fn open_with_backoff(config: &ServeConfig, tx: &watch::Sender<Backend>, stop: &CancellationToken) {
    let mut retry = Retry::new(OPEN_BACKOFF);
    loop {
        match open_local(config, stop.child_token()).await {
            Ok(local) => {
                let _ = tx.send(Backend::Local(local));
                return;
            }
            Err(e) => {
                let message = format!("{e:#}");
                let delay = retry.next_delay();
                tracing::error!(
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot open the database: {message}"
                );
                let _ = tx.send(Backend::Unavailable(unavailable_text(config, &message)));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// What a data call answers while the store cannot be opened.
fn unavailable_text(config: &ServeConfig, error: &str) -> String {
    if config.postgres.is_some() {
        format!("PostgreSQL is not usable yet; retrying in the background: {error}")
    } else if error.contains("Could not set lock") || error.contains("Conflicting lock") {
        format!("the database file is locked by another program that is not stride-vectors; retrying the open in the background. DuckDB says: {error}")
    } else {
        format!("the database cannot be opened; retrying in the background: {error}")
    }
}

/// With PostgreSQL there is nothing to own: every process writes directly.
async fn connect_postgres(config: ServeConfig, tx: watch::Sender<Backend>, stop: CancellationToken) {
    open_with_backoff(&config, &tx, &stop).await;
}

/// Open the store and start its pipeline, whose tasks stop with `stop` (or its shutdown).
async fn open_local(config: &ServeConfig, stop: CancellationToken) -> anyhow::Result<Local> {
    let store = match &config.postgres {
        Some(options) => Store::connect(options).await?,
        None => {
            let (path, options) = (config.db_path.clone(), config.store.clone());
            tokio::task::spawn_blocking(move || Store::open(&path, &options)).await??
        }
    };
    let embedder = crate::embed::build(&config.embedder).map_err(|e| anyhow::anyhow!("embedder: {e}"))?;
    let pipeline = Pipeline::start(Arc::new(store.clone()), embedder, config.pipeline.clone(), stop).await?;
    Ok(Local { store, pipeline })
}
