//! The DuckDB back-end: the one place that opens the database file and runs its SQL.
//!
//! [`FileStore`] is a cheap-to-clone handle over `Arc<Shared>` (the mini-redis `Db` shape). Writes
//! go to the single writer actor ([`writer`]), which owns the only read-write connection and
//! group-commits; reads run on connections cloned from it ([`read`]). Index shapes live in a
//! [`Catalog`] that only the writer changes, after a commit, so a reader never sees an index
//! that is not in the file. [`schema`] makes and adopts the tables (Mastra's layout and our
//! bookkeeping), [`documents`] keeps the embedding queue and content hashes, and searches are
//! served from [`crate::store::memory`] once it has loaded.
//!
//! It is reached only through [`crate::store::Store`]; it must not know about MCP or the
//! PostgreSQL back-end, and it speaks in the plain types of [`crate::store::api`].

pub mod documents;
pub mod read;
pub mod schema;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use duckdb::{Config, Connection};

use crate::store::memory::{self, Memory};
use crate::store::{
    validate_index_name, Catalog, Engine, Hit, IndexInfo, MemoryReport, PendingDocument, SearchMode,
    SearchRequest, StoreError, StoreOptions, SupersededFeed, WriteOp, WriteOutcome, MAX_READERS,
};

/// Handle to an open database. Clone it freely: every clone talks to the same writer.
#[derive(Clone)]
pub struct FileStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    writer: writer::WriterHandle,
    /// Committed index shapes. `std` lock: held for a map lookup, never across an await.
    catalog: Arc<RwLock<Catalog>>,
    /// Idle reader connections. `std` mutex: only held to push or pop one.
    readers: Mutex<Vec<Connection>>,
    /// Reads running at once, so at most [`MAX_READERS`] connections ever exist. `tokio`
    /// semaphore: a read waits for a permit without holding a thread.
    reading: Arc<tokio::sync::Semaphore>,
    /// The writer and loader threads, joined when the store is released. `std` mutex:
    /// taken once.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Source of new reader connections (`try_clone` needs a connection; the writer's lives
    /// on its thread). Never used to run a query.
    /// `None` once released (the store failed and gives the file up).
    template: Mutex<Option<Connection>>,
    /// In-memory copies of the indexes, kept in step by the writer.
    memory: Arc<Memory>,
    superseded: writer::SupersededListener,
}

impl FileStore {
    /// Open (or create) the database, adopt any Mastra tables, and start the writer.
    ///
    /// Fails when the file is held by another process or is not a DuckDB database.
    pub fn open(path: &Path, options: &StoreOptions) -> anyhow::Result<FileStore> {
        let conn = open_connection(path, options.threads, options.duckdb_memory_mb)?;
        let catalog = schema::prepare(&conn).with_context(|| format!("preparing {}", path.display()))?;
        let template = conn.try_clone().context("cloning the DuckDB connection")?;
        let loader = conn.try_clone().context("cloning the DuckDB connection")?;
        let memory = Arc::new(Memory::new(
            options.engine == Engine::Memory,
            options.memory_limit,
        )?);
        if memory.enabled {
            memory.mark_loading(catalog.keys().cloned());
        }
        let catalog = Arc::new(RwLock::new(catalog));
        let superseded = writer::SupersededListener::default();
        let (writer, writer_thread) = writer::spawn(
            conn,
            catalog.clone(),
            memory.clone(),
            (options.max_batch, options.writer_panic_on.clone()),
            superseded.clone(),
        )?;
        let reading = Arc::new(tokio::sync::Semaphore::new(MAX_READERS));
        let mut threads = vec![writer_thread];
        if memory.enabled {
            let (memory, catalog, writer) = (memory.clone(), catalog.clone(), writer.clone());
            let reading = reading.clone();
            let loader_thread =
                std::thread::Builder::new()
                    .name("stride-loader".into())
                    .spawn(move || {
                        let load =
                            std::panic::AssertUnwindSafe(|| load_all(&loader, &catalog, &memory, &writer));
                        if let Err(panic) = std::panic::catch_unwind(load) {
                            writer
                                .failure()
                                .set(writer::Failure::describe("loader", panic.as_ref()));
                            return;
                        }
                        // Every read permit, so that no query runs while DuckDB's limit is
                        // lowered to shed its cache (one did, and ran out of memory); reads
                        // wait those few milliseconds instead.
                        let all = futures::executor::block_on(reading.acquire_many(MAX_READERS as u32));
                        writer.shed_cache();
                        drop(all);
                    })?;
            threads.push(loader_thread);
        }
        Ok(FileStore {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                writer,
                catalog,
                readers: Mutex::new(Vec::new()),
                reading,
                threads: Mutex::new(threads),
                template: Mutex::new(Some(template)),
                memory,
                superseded,
            }),
        })
    }

    /// The versions each commit superseded, handed over right after the commit and before
    /// its requests are answered (the embedding pipeline drops them).
    pub fn superseded(&self) -> Arc<SupersededFeed> {
        self.shared.superseded.clone()
    }

    /// Exact top-k, from the in-memory copy when it is on and loaded, else from DuckDB
    /// (or from DuckDB when `engine` asks for it). Returns the engine that answered.
    ///
    /// On the copy, a search that needs nothing from the file (no `$regex`, no
    /// `include_vector`) runs on its snapshot alone: no reader connection, no DuckDB query.
    pub async fn search(
        &self,
        index: IndexInfo,
        req: SearchRequest,
        engine: Option<Engine>,
    ) -> Result<(Vec<Hit>, Engine), StoreError> {
        let memory = self.shared.memory.clone();
        if req.mode != SearchMode::Vector {
            return self.search_text(index, req, engine).await;
        }
        let want_memory = memory.enabled && engine != Some(Engine::Duckdb);
        if want_memory && !read::needs_file(&req) {
            if let Some(copy) = memory.snapshot(&index.name) {
                return on_snapshot(memory, copy, req).await;
            }
        }
        self.read(move |conn| {
            if want_memory {
                if let Some((copy, _read_transaction)) = memory.begin_read(conn, &index.name)? {
                    let file = Some((conn, &index));
                    return Ok((read::search_memory(&memory, &copy, &req, file)?, Engine::Memory));
                }
            }
            Ok((read::search(conn, &index, &req)?, Engine::Duckdb))
        })
        .await
    }

    /// A keyword or hybrid search: the keyword index lives in the in-memory copy, so it is
    /// served there (waiting for the copy while it loads), or refused with the reason.
    async fn search_text(
        &self,
        index: IndexInfo,
        req: SearchRequest,
        engine: Option<Engine>,
    ) -> Result<(Vec<Hit>, Engine), StoreError> {
        let memory = self.shared.memory.clone();
        let mode = req.mode.as_str();
        if engine == Some(Engine::Duckdb) {
            return Err(StoreError::invalid(format!(
                "engine: \"duckdb\" scans vectors only; a {mode} search is served by the memory engine (omit engine)"
            )));
        }
        if !memory.enabled {
            return Err(StoreError::invalid(format!(
                "mode: a {mode} search needs the in-memory engine, and this server runs with --search-engine duckdb; start it with --search-engine memory (the default)"
            )));
        }
        let settled = tokio::time::timeout(LOAD_WAIT, memory.settled(&index.name)).await;
        let Ok(settled) = settled else {
            return Err(StoreError::Internal(format!(
                "index \"{}\" is still loading into memory after {} s, and a {mode} search needs its copy; call again",
                index.name,
                LOAD_WAIT.as_secs()
            )));
        };
        let Some(copy) = settled else {
            if memory.over_budget(&index.name) {
                return Err(StoreError::invalid(format!(
                    "mode: index \"{}\" is not in memory (it does not fit the memory budget, --memory-limit {} MiB, or could not be loaded: the log says which), and a {mode} search needs its in-memory copy; raise --memory-limit, or search with mode \"vector\"",
                    index.name,
                    memory.limit_bytes >> 20
                )));
            }
            return Err(StoreError::unknown_index(&index.name));
        };
        if !read::needs_file(&req) {
            return on_snapshot(memory, copy, req).await;
        }
        self.read(move |conn| {
            let Some((copy, _read_transaction)) = memory.begin_read(conn, &index.name)? else {
                return Err(StoreError::Internal(format!(
                    "index \"{}\" left memory during the search; call again",
                    index.name
                )));
            };
            let file = Some((conn, &index));
            Ok((read::search_memory(&memory, &copy, &req, file)?, Engine::Memory))
        })
        .await
    }

    /// Bytes DuckDB holds in memory, by its own account (`duckdb_memory()`).
    pub async fn duckdb_memory(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT coalesce(sum(memory_usage_bytes), 0)::BIGINT FROM duckdb_memory()",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(|e| StoreError::internal("reading DuckDB's memory use", e))
        })
        .await
    }

    /// How `index` is served: engine, in-memory bytes, state of its copy.
    pub fn memory_report(&self, index: &str) -> MemoryReport {
        self.shared
            .memory
            .report()
            .get(index)
            .copied()
            .unwrap_or(MemoryReport::OFF)
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
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.shared.writer.submit(op).await
    }

    /// Let every accepted write commit, then checkpoint and close the database.
    /// Commit what is queued, checkpoint and close the writer's connection, and join the
    /// writer thread (the first of `threads`). A loader still reading is left to finish:
    /// it holds only a read connection, closed with the process.
    pub async fn shutdown(&self) {
        self.shared.writer.shutdown().await;
        let writer_thread = {
            let mut threads = lock(&self.shared.threads);
            (!threads.is_empty()).then(|| threads.remove(0))
        };
        if let Some(thread) = writer_thread {
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if let Ok(Err(_)) = joined.await {
                tracing::warn!("the writer thread ended in a panic");
            }
        }
    }

    /// Why the store broke, if it has (a writer or loader panic).
    pub fn failed(&self) -> Option<String> {
        self.shared.writer.failure().get()
    }

    /// Wait until the store breaks (never, if it does not).
    pub async fn wait_failed(&self) -> String {
        self.shared.writer.failure().wait().await
    }

    /// Let go of the file after a failure: drop every connection this handle keeps, wait
    /// for the reads running now (each drops its connection as it ends), refuse later ones,
    /// and join the writer and loader threads (each held one). When this returns no
    /// connection to the file is left in this process, so DuckDB has closed it and it may
    /// be opened again, here or elsewhere.
    pub async fn release(&self) {
        lock(&self.shared.template).take();
        lock(&self.shared.readers).clear();
        if let Ok(all) = self.shared.reading.acquire_many(MAX_READERS as u32).await {
            self.shared.reading.close();
            drop(all);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }

    /// Number of rows in `index`.
    pub async fn count(&self, index: IndexInfo) -> Result<u64, StoreError> {
        self.read(move |conn| read::count(conn, &index)).await
    }

    /// Rows by id, with their vectors; missing ids are absent.
    pub async fn fetch(&self, index: IndexInfo, ids: Vec<String>) -> Result<Vec<Hit>, StoreError> {
        self.read(move |conn| read::fetch(conn, &index, &ids)).await
    }

    /// Every document waiting to be embedded, oldest version first.
    pub async fn load_pending(&self) -> Result<Vec<PendingDocument>, StoreError> {
        self.read(|conn| {
            documents::load_pending(conn).map_err(|e| StoreError::internal("loading pending documents", e))
        })
        .await
    }

    /// The queued version (seq, text) of each (index, id) that still has one.
    pub async fn pending_texts(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<HashMap<(String, String), (u64, String)>, StoreError> {
        self.read(move |conn| {
            let mut texts = HashMap::new();
            for key in keys {
                let queued = documents::pending_of(conn, &key.0, &key.1)
                    .map_err(|e| StoreError::internal("reading pending texts", e))?;
                if let Some(queued) = queued {
                    texts.insert(key, (queued.seq, queued.text));
                }
            }
            Ok(texts)
        })
        .await
    }

    /// Run `f` on an idle reader connection, off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        // Held by the blocking task itself: a caller that gives up does not free it early.
        let permit = shared
            .reading
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
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
        if let Some(failure) = self.writer.failure().get() {
            return Err(StoreError::Failed(failure));
        }
        if let Some(conn) = lock(&self.readers).pop() {
            return Ok(conn);
        }
        match lock(&self.template).as_ref() {
            Some(template) => template
                .try_clone()
                .map_err(|e| StoreError::Internal(format!("opening a reader connection: {e}"))),
            None => Err(StoreError::Closed),
        }
    }

    fn return_reader(&self, conn: Connection) {
        // A released store keeps no connection: this one closes here.
        if lock(&self.template).is_some() {
            lock(&self.readers).push(conn);
        }
    }
}

/// Longest a keyword or hybrid search waits for its index to load into memory at start.
const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A search that needs nothing from the file, on one snapshot, run on the search pool: no
/// reader connection, no DuckDB query.
async fn on_snapshot(
    memory: Arc<Memory>,
    copy: Arc<memory::MemoryIndex>,
    req: SearchRequest,
) -> Result<(Vec<Hit>, Engine), StoreError> {
    let pool = memory.clone();
    let hits = pool
        .run(move || read::search_memory(&memory, &copy, &req, None))
        .await??;
    Ok((hits, Engine::Memory))
}

/// Load every index into memory, one at a time, off every lock: each is read in a DuckDB
/// read transaction, and the writer replays onto it what was committed meanwhile.
fn load_all(conn: &Connection, catalog: &RwLock<Catalog>, memory: &Memory, writer: &writer::WriterHandle) {
    let names: Vec<String> = catalog
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    for name in names {
        let started = std::time::Instant::now();
        let Some(info) = catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
            .cloned()
        else {
            continue; // Dropped since the start: the writer keeps its slot.
        };
        let (builder, as_of) = match memory.begin_load(conn) {
            Ok((_read_transaction, as_of)) => (load_one(conn, &info, memory), as_of),
            Err(e) => {
                tracing::error!(index = %name, error = %e, "cannot load index into memory; searching it with DuckDB");
                (None, 0)
            }
        };
        tracing::debug!(index = %name, ms = started.elapsed().as_millis() as u64, "index read for memory");
        writer.loaded(name, builder, as_of);
    }
}

/// Read one index, unless it cannot fit the budget anyway.
fn load_one(conn: &Connection, info: &IndexInfo, memory: &Memory) -> Option<memory::Builder> {
    let rows = read::count(conn, info).ok()? as usize;
    if rows.saturating_mul(memory::MemoryIndex::row_bytes(info.dimension)) > memory.limit_bytes {
        tracing::warn!(index = %info.name, rows, limit_mb = memory.limit_bytes >> 20, "index does not fit the memory budget; searching it with DuckDB");
        return None;
    }
    match read::load_index(conn, info) {
        Ok(builder) => Some(builder),
        Err(e) => {
            tracing::error!(index = %info.name, error = %e, "cannot load index into memory; searching it with DuckDB");
            None
        }
    }
}

/// Lock a mutex whose data stays valid even if a holder panicked (a `Vec` of idle
/// connections, or a connection used only for `try_clone`).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Open the file read-write with extension auto-install and auto-load off: nothing may try
/// to download at run time, and the statically linked `json` extension is all we need.
fn open_connection(path: &Path, threads: u32, memory_mb: u32) -> anyhow::Result<Connection> {
    let mut config = Config::default()
        .enable_autoload_extension(false)?
        .with("autoinstall_known_extensions", "false")?;
    if threads > 0 {
        config = config.threads(i64::from(threads))?;
    }
    if memory_mb > 0 {
        config = config.max_memory(&format!("{memory_mb}MiB"))?;
    }
    let conn = Connection::open_with_flags(path, config)
        .with_context(|| format!("opening DuckDB database {}", path.display()))?;
    conn.execute_batch(STORE_FLOATS_PLAIN)
        .context("turning off DuckDB's float compression")?;
    conn.execute_batch(CHECKPOINT_THRESHOLD)
        .context("setting DuckDB's checkpoint threshold")?;
    Ok(conn)
}

/// Fold the WAL into the file every 64 MiB of it instead of DuckDB's 16 MiB. Each automatic
/// checkpoint runs inside a COMMIT, so a writer waits on it, and it rewrites the table's last,
/// partly filled row group (up to 122,880 rows) whatever the WAL holds: fewer checkpoints
/// is less work, not the same work later. Measured with `bench/upsert_client.py --calls 120
/// --runs 5` (60,000 x 384, one call at a time): 12,147 vectors/s against 10,739, and a
/// smaller resident set (321 against 380 MiB). The price: up to 64 MiB of WAL to replay
/// after a crash, and DuckDB holds that much unfolded data in its buffers meanwhile (well
/// within the 256 MiB it keeps beside the in-memory copy). A clean stop still checkpoints.
const CHECKPOINT_THRESHOLD: &str = "SET GLOBAL checkpoint_threshold = '64MiB'";

/// Store the floats of new row groups as they are. DuckDB's float codecs (ALP, ALP-RD, and
/// the older Chimp and Patas) find nothing to squeeze in embedding vectors: measured with
/// DuckDB 1.5.2 on 100,000 x 384 (BENCHMARKS.md, run 8), the file was larger with them
/// (333 vs 269 MiB) and a full scan four times slower (300 vs 73 ms), which is what the
/// DuckDB engine's search is. Row groups written before keep their codec; any DuckDB reads
/// both, so Mastra still reads our file. A setting of this process, not of the file.
const STORE_FLOATS_PLAIN: &str = "SET GLOBAL disabled_compression_methods = 'alp,alprd,chimp,patas'";

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings that are ours and not DuckDB's defaults hold on the writer's connection.
    #[test]
    fn the_connection_stores_floats_plain_and_checkpoints_every_64_mib() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = open_connection(&dir.path().join("x.duckdb"), 1, 64).expect("opens");
        let setting = |name: &str| -> String {
            conn.query_row("SELECT current_setting(?)::VARCHAR", [name], |r| r.get(0))
                .expect("reads the setting")
        };
        assert_eq!(setting("checkpoint_threshold"), "64.0 MiB");
        assert_eq!(setting("disabled_compression_methods"), "Chimp,Patas,ALP,ALPRD");
    }
}
