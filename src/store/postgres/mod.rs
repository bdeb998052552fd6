//! The PostgreSQL + pgvector back-end: many stride-vectors processes, on many machines,
//! writing one database directly. PostgreSQL gives what the DuckDB back-end builds itself:
//! concurrent writers, transactions, durability; so there is no writer actor and no owner
//! election here, only short transactions on a connection pool.
//!
//! Layout: Mastra's `PgVector` (`@mastra/pg` 1.27) one table per index in a configurable
//! schema (default `public`), `id SERIAL PRIMARY KEY, vector_id TEXT NOT NULL, embedding
//! vector(dim), metadata JSONB DEFAULT '{}', namespace VARCHAR(255) NOT NULL DEFAULT
//! 'default'` with a unique index on `(namespace, vector_id)`; we read and write the
//! `default` namespace, as Mastra does when it is given none. Tables of the older layout
//! (`vector_id` unique, no namespace) are adopted as they are. Our bookkeeping (shape,
//! metric, model, content hashes, the pending queue, a format version) lives in a schema of
//! its own ([`schema`]).
//!
//! Concurrency: every write is one transaction that first takes advisory locks, then reads
//! and writes: its index's lock, exclusive to create or drop the index or to change rows
//! chosen by a filter (no other write of the index runs between reading the filter and
//! writing), shared otherwise; then, under a shared one, one lock per id it touches, taken
//! in one global order ([`schema::lock_ids`]). So every write of an id (an upsert, a
//! delete, an accepted text, an embedding landing) runs alone for that id and sees what the
//! one before it committed: the last acknowledged operation wins, as with one writer.
//! Claims skip ids whose lock is held instead of waiting. A deadlock or serialization
//! failure reported anyway is retried, since nothing of it committed.
//!
//! Connections: a `deadpool` pool over `tokio-postgres`, with TLS (rustls, the system's
//! roots) when the URL asks for it. A failed connection is remembered for a short, growing
//! while, so that a database that is down answers every call at once with the reason
//! instead of making each wait for a timeout. Nothing here logs or returns the URL's
//! password: [`PgStore::location`] is the address without it.
//!
//! Reached only through [`super::Store`]; it must not know about MCP.

mod queue;
mod read;
mod schema;
mod write;

pub use queue::{QueueCounts, QueueState};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use super::{validate_index_name, IndexInfo, StoreError, MAX_INDEX_NAME};
use super::{Hit, SearchRequest, WriteOp, WriteOutcome};
use crate::retry::Backoff;
use crate::store::PendingDocument;

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PgOptions {
    /// A libpq URL (`postgres://user:password@host:port/db?sslmode=require`) or key=value
    /// string. It holds a password: never print it.
    pub url: String,
    /// Schema of the index tables (Mastra's `schemaName`).
    pub schema: String,
    /// Most connections this process opens.
    pub pool_size: usize,
    /// How long a claim on queued documents holds: past it, another process may take
    /// them (this one died, or is that slow).
    pub lease: Duration,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &"(hidden)")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Checks a schema name given by the user: the index-name pattern, so it is always safe
/// to double-quote.
pub fn validate_schema_name(name: &str) -> Result<(), String> {
    validate_index_name(name).map_err(|_| {
        format!(
            "--pg-schema: invalid schema name {name:?}: use 1 to {MAX_INDEX_NAME} letters, digits or underscores, not starting with a digit"
        )
    })
}

/// The bookkeeping schema that goes with the tables' schema: `stride_vectors` beside
/// `public`, `stride_vectors_<schema>` beside any other, so two stores in one database
/// never share a queue.
pub fn bookkeeping_schema(schema: &str) -> String {
    if schema == "public" {
        "stride_vectors".to_string()
    } else {
        format!("stride_vectors_{schema}")
    }
}

/// Handle to the database. Clone it freely.
#[derive(Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    /// Quoted identifiers, ready to paste: the tables' schema, ours, pgvector's.
    names: schema::Names,
    /// pgvector 0.8 added iterative index scans, which keep filtered HNSW searches full.
    iterative_scan: bool,
    location: String,
    /// What the queue's listening connection needs to reconnect on its own.
    pg_config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// Ticks when the queue changed (see [`queue::listen`]).
    events: tokio::sync::watch::Sender<u64>,
    /// How long this process's claims hold.
    lease: Duration,
    /// Who this process is in `claimed_by`.
    process: String,
    /// The last failure to connect, and until when calls fail at once with it. `std`
    /// mutex: held to read or set it, never across an await.
    down: Mutex<Option<Down>>,
    /// The queue's listening task: told to stop, and joined, at shutdown. `std` mutex:
    /// set once, taken once.
    listener: Mutex<Option<(tokio_util::sync::CancellationToken, tokio::task::JoinHandle<()>)>>,
}

struct Down {
    until: Instant,
    /// Failed attempts in a row (the backoff's count).
    failures: u32,
    reason: String,
}

/// Between two attempts to reach a database that is down: 200 ms doubling up to 5 s.
pub(super) const RECONNECT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), 2, Duration::from_secs(5));
/// Between runs of a write that deadlocked or failed to serialize: 10 ms doubling.
const CONFLICT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(10), 2, Duration::from_secs(1));
/// Times a write is run again after a deadlock or serialization failure.
const RETRIES: usize = 5;

type Client = deadpool_postgres::Object;

impl PgStore {
    /// Connect, check pgvector, and prepare (or adopt) the layout. The error says what is
    /// wrong (unreachable, authentication, no pgvector) without the password.
    pub async fn connect(options: &PgOptions) -> anyhow::Result<PgStore> {
        validate_schema_name(&options.schema).map_err(anyhow::Error::msg)?;
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| anyhow::anyhow!("--database: not a PostgreSQL URL or connection string: {e}"))?;
        if config.get_application_name().is_none() {
            config.application_name("stride-vectors");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let location = location(&config, &options.schema);
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config()?);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(60)))
            .build()
            .context("building the PostgreSQL connection pool")?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| anyhow::anyhow!("{}", pool_error(&e)))
            .with_context(|| format!("connecting to {location}"))?;
        let prepared = schema::prepare(&mut client, &options.schema)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("preparing {location}"))?;
        drop(client);
        tracing::info!(database = %location, pgvector = %prepared.pgvector_version, "PostgreSQL ready");
        let store = PgStore {
            shared: Arc::new(Shared {
                pool,
                iterative_scan: version_at_least(&prepared.pgvector_version, (0, 8)),
                names: prepared.names,
                location,
                pg_config: config,
                tls,
                events: tokio::sync::watch::channel(0).0,
                lease: options.lease,
                process: process_name(),
                down: Mutex::new(None),
                listener: Mutex::new(None),
            }),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let listening = tokio::spawn(queue::listen(Arc::downgrade(&store.shared), stop.clone()));
        *store.shared.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, listening));
        Ok(store)
    }

    /// The database's address and schema, without the password.
    pub fn location(&self) -> String {
        self.shared.location.clone()
    }

    pub async fn index_info(&self, name: &str) -> Result<IndexInfo, StoreError> {
        validate_index_name(name)?;
        let mut client = self.client().await?;
        schema::lookup(&mut client, &self.shared.names, name)
            .await?
            .ok_or_else(|| StoreError::unknown_index(name))
    }

    /// Every index; tables Mastra made since we last looked are adopted first.
    pub async fn indexes(&self) -> Result<Vec<IndexInfo>, StoreError> {
        let names = &self.shared.names;
        let mut client = self.client().await?;
        let registered = schema::all(&**client, names).await?;
        let mut adopted = false;
        for table in schema::index_tables(&**client, names).await? {
            if !registered.iter().any(|i| i.name == table) {
                adopted |= schema::adopt_if_present(&mut client, names, &table)
                    .await?
                    .is_some();
            }
        }
        if !adopted {
            return Ok(registered);
        }
        schema::all(&**client, names).await
    }

    pub async fn search(&self, index: &IndexInfo, req: &SearchRequest) -> Result<Vec<Hit>, StoreError> {
        let mut client = self.client().await?;
        read::search(&mut client, &self.shared, index, req).await
    }

    pub async fn count(&self, index: &IndexInfo) -> Result<u64, StoreError> {
        let client = self.client().await?;
        read::count(&**client, &self.shared.names, index).await
    }

    pub async fn fetch(&self, index: &IndexInfo, ids: &[String]) -> Result<Vec<Hit>, StoreError> {
        let client = self.client().await?;
        read::fetch(&**client, &self.shared.names, index, ids).await
    }

    pub async fn load_pending(&self) -> Result<Vec<PendingDocument>, StoreError> {
        let client = self.client().await?;
        read::load_pending(&**client, &self.shared.names).await
    }

    pub async fn pending_texts(
        &self,
        keys: &[(String, String)],
    ) -> Result<std::collections::HashMap<(String, String), (u64, String)>, StoreError> {
        let client = self.client().await?;
        read::pending_texts(&**client, &self.shared.names, keys).await
    }

    /// Apply one write in its own transaction; answer once it committed. A deadlock or
    /// serialization failure rolled everything back, so the write is run again.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let mut attempt = 0;
        loop {
            match write::apply(self, &op).await {
                Err(Failure::Retry(e)) if attempt < RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "write conflicted; running it again");
                    tokio::time::sleep(CONFLICT_BACKOFF.delay(attempt as u32)).await;
                }
                Err(Failure::Retry(e)) => return Err(StoreError::Internal(e)),
                Err(Failure::Store(e)) => return Err(e),
                Ok(outcome) => return Ok(outcome),
            }
        }
    }

    pub async fn shutdown(&self) {
        self.shared.pool.close();
        let listener = self
            .shared
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, listening)) = listener {
            stop.cancel();
            // It ends at its next await; a connection attempt in progress is dropped.
            if tokio::time::timeout(Duration::from_secs(1), listening)
                .await
                .is_err()
            {
                tracing::warn!("the queue's listening task did not stop within 1 s");
            }
        }
    }

    /// A pooled connection, or at once the reason the database cannot be reached.
    async fn client(&self) -> Result<Client, StoreError> {
        if let Some(reason) = self.shared.still_down() {
            return Err(StoreError::Internal(reason));
        }
        match self.shared.pool.get().await {
            Ok(client) => {
                self.shared.up();
                Ok(client)
            }
            Err(e) => {
                let reason = pool_error(&e);
                self.shared.went_down(&reason);
                Err(StoreError::Internal(reason))
            }
        }
    }
}

impl Shared {
    fn still_down(&self) -> Option<String> {
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let d = down.as_ref()?;
        let left = d.until.checked_duration_since(Instant::now())?;
        Some(format!(
            "{} (next attempt in {} ms)",
            d.reason,
            left.as_millis().max(1)
        ))
    }

    fn went_down(&self, reason: &str) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let failures = down.as_ref().map_or(1, |d| d.failures.saturating_add(1));
        let delay = RECONNECT_BACKOFF.delay(failures);
        tracing::warn!(
            retry_in_ms = delay.as_millis() as u64,
            "PostgreSQL unreachable: {reason}"
        );
        *down = Some(Down {
            until: Instant::now() + delay,
            failures,
            reason: reason.to_string(),
        });
    }

    fn up(&self) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down.take().is_some() {
            tracing::info!("PostgreSQL reachable again");
        }
    }
}

/// Why a write did not commit: a refusal or failure to report, or a conflict worth
/// running the write again for.
enum Failure {
    Store(StoreError),
    Retry(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(code)
                if *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                Failure::Retry(explain(&e))
            }
            _ => Failure::Store(db_error(&e)),
        }
    }
}

/// A driver error as a store error, in words a user can act on.
fn db_error(e: &tokio_postgres::Error) -> StoreError {
    StoreError::engine(explain(e))
}

/// What went wrong, never with the password (the driver's messages do not carry it).
pub(crate) fn explain(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let what = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            "PostgreSQL refused the credentials (authentication failed)"
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            "the PostgreSQL database does not exist"
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            "the PostgreSQL user lacks a privilege"
        } else if *code == SqlState::UNDEFINED_FILE
            || (*code == SqlState::UNDEFINED_OBJECT && db.message().contains("vector"))
        {
            "pgvector is missing"
        } else if *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
        {
            "PostgreSQL closed the connection (it is restarting, or an administrator ended the session); retry: a new connection is opened"
        } else {
            "PostgreSQL"
        };
        return format!("{what}: {} (SQLSTATE {})", db.message(), code.code());
    }
    if e.is_closed() {
        return format!(
            "the connection to PostgreSQL was lost during the call ({e}); if it was a write, it may or may not have committed: every write is safe to repeat"
        );
    }
    format!("cannot reach PostgreSQL: {e}")
}

fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => explain(e),
        PoolError::Timeout(kind) => format!("cannot reach PostgreSQL: timed out ({kind:?})"),
        PoolError::Closed => "the PostgreSQL connection pool is closed (the server is stopping)".into(),
        other => format!("cannot reach PostgreSQL: {other}"),
    }
}

/// `host:port/database` as the config names them, with the user, without the password.
fn location(config: &tokio_postgres::Config, schema: &str) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{db} (schema {schema})", hosts.join(","))
}

/// TLS with the system's roots (see [`crate::platform::tls_roots`]), through rustls and
/// ring (no OpenSSL, nothing to build).
fn tls_config() -> anyhow::Result<rustls::ClientConfig> {
    let roots = crate::platform::tls_roots();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(config)
}

/// This process in `claimed_by`: host, pid and a random part (pids are reused).
fn process_name() -> String {
    let nonce: u64 = rand::random();
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!("{host}:{}:{:08x}", std::process::id(), nonce as u32)
}

/// Whether a `major.minor[.patch]` version is at least `want`.
fn version_at_least(version: &str, want: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_location_never_shows_the_password() {
        let config: tokio_postgres::Config =
            "postgres://alice:s3cret@db.example.com:6543/app?sslmode=require"
                .parse()
                .unwrap();
        let shown = location(&config, "public");
        assert_eq!(shown, "postgres://alice@db.example.com:6543/app (schema public)");
        assert!(!shown.contains("s3cret"));
        let options = PgOptions {
            url: "postgres://alice:s3cret@h/db".into(),
            schema: "public".into(),
            pool_size: 4,
            lease: Duration::from_secs(30),
        };
        assert!(!format!("{options:?}").contains("s3cret"));
    }

    #[test]
    fn schemas_pair_with_their_bookkeeping() {
        assert_eq!(bookkeeping_schema("public"), "stride_vectors");
        assert_eq!(bookkeeping_schema("tenant_a"), "stride_vectors_tenant_a");
        assert!(validate_schema_name("tenant_a").is_ok());
        assert!(validate_schema_name("a\"; drop").is_err());
    }

    #[test]
    fn pgvector_versions_compare_by_number() {
        assert!(version_at_least("0.8.2", (0, 8)));
        assert!(version_at_least("0.10.0", (0, 8)));
        assert!(!version_at_least("0.7.4", (0, 8)));
    }
}
