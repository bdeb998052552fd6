//! DuckDB and nothing else: the one place that opens the database file and runs SQL.
//!
//! [`Store`] is a cheap-to-clone handle over `Arc<Shared>` (the mini-redis `Db` shape). Writes
//! go to the single writer actor ([`writer`]), which owns the only read-write connection and
//! group-commits; reads run on connections cloned from it ([`read`]). Index shapes live in a
//! [`Catalog`] that only the writer changes, after a commit, so a reader never sees an index
//! that is not in the file.
//!
//! This module must not know about MCP: it speaks in plain Rust types and [`StoreError`].

pub mod documents;
pub mod filter;
pub mod read;
pub mod schema;
pub mod types;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use duckdb::{Config, Connection};

pub use types::*;

/// Index name to shape, as committed. Written by the writer thread only.
pub type Catalog = BTreeMap<String, IndexInfo>;

/// Handle to an open database. Clone it freely: every clone talks to the same writer.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    writer: writer::WriterHandle,
    /// Committed index shapes. `std` lock: held for a map lookup, never across an await.
    catalog: Arc<RwLock<Catalog>>,
    /// Idle reader connections. `std` mutex: only held to push or pop one.
    readers: Mutex<Vec<Connection>>,
    /// Source of new reader connections (`try_clone` needs a connection; the writer's lives
    /// on its thread). Never used to run a query.
    template: Mutex<Connection>,
}

impl Store {
    /// Open (or create) the database, adopt any Mastra tables, and start the writer.
    ///
    /// Fails when the file is held by another process or is not a DuckDB database.
    pub fn open(path: &Path, max_batch: usize, threads: u32) -> anyhow::Result<Store> {
        let conn = open_connection(path, threads)?;
        let catalog = schema::prepare(&conn).with_context(|| format!("preparing {}", path.display()))?;
        let template = conn.try_clone().context("cloning the DuckDB connection")?;
        let catalog = Arc::new(RwLock::new(catalog));
        let writer = writer::spawn(conn, catalog.clone(), max_batch)?;
        Ok(Store {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                writer,
                catalog,
                readers: Mutex::new(Vec::new()),
                template: Mutex::new(template),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The committed shape of one index.
    pub fn index_info(&self, name: &str) -> Result<IndexInfo, StoreError> {
        validate_index_name(name)?;
        self.catalog_read()
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::unknown_index(name))
    }

    /// All committed indexes, by name.
    pub fn indexes(&self) -> Vec<IndexInfo> {
        self.catalog_read().values().cloned().collect()
    }

    fn catalog_read(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        // A panic while holding the lock cannot leave the map half-written (writes replace it
        // whole), so a poisoned lock is still safe to read.
        self.shared
            .catalog
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Send one write to the writer and wait until it is committed (or refused).
    pub async fn write(&self, op: writer::WriteOp) -> Result<writer::WriteOutcome, StoreError> {
        self.shared.writer.submit(op).await
    }

    /// Let every accepted write commit, then checkpoint and close the database.
    pub async fn shutdown(&self) {
        self.shared.writer.shutdown().await;
    }

    /// Run `f` on an idle reader connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let conn = shared.take_reader()?;
            let result = f(&conn);
            shared.return_reader(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("reader task failed: {e}")))?
    }
}

impl Shared {
    fn take_reader(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = lock(&self.readers).pop() {
            return Ok(conn);
        }
        lock(&self.template)
            .try_clone()
            .map_err(|e| StoreError::Internal(format!("opening a reader connection: {e}")))
    }

    fn return_reader(&self, conn: Connection) {
        lock(&self.readers).push(conn);
    }
}

/// Lock a mutex whose data stays valid even if a holder panicked (a `Vec` of idle
/// connections, or a connection used only for `try_clone`).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Open the file read-write with extension auto-install and auto-load off: nothing may try
/// to download at run time, and the statically linked `json` extension is all we need.
fn open_connection(path: &Path, threads: u32) -> anyhow::Result<Connection> {
    let mut config = Config::default()
        .enable_autoload_extension(false)?
        .with("autoinstall_known_extensions", "false")?;
    if threads > 0 {
        config = config.threads(i64::from(threads))?;
    }
    Connection::open_with_flags(path, config)
        .with_context(|| format!("opening DuckDB database {}", path.display()))
}
