//! The in-memory copy of every index, kept exactly in step with the file by the writer, and
//! searched without ever making the writer wait.
//!
//! Because our writer is the only source of change, it can keep a copy of the vectors that
//! is never stale. Each index is published as an immutable snapshot ([`MemoryIndex`], an
//! `Arc` per version): a search takes the current one and scans it with no lock held, so no
//! search, however long, delays a commit. The writer changes its own [`Builder`] per index
//! and publishes a new snapshot after each commit. A snapshot shares all its storage with
//! the previous one except what changed: rows live in fixed-size chunks behind `Arc`s, an
//! upsert appends to the last chunk (copied if a search still holds it) and retires the
//! row it replaces in a small liveness bitmap; dead rows are compacted away once they are a
//! quarter of the index. A commit's cost here is its change plus one chunk and one bitmap.
//!
//! Each row carries its stored metadata ([`Metadata`]), so a search filters in Rust and
//! answers from one snapshot, with no DuckDB query at all. A full chunk also holds its
//! metadata as columns ([`Columns`]) that answer a filter for all its rows at once, as a row
//! mask, so only matching rows are scored and a selective filter makes a search cheaper;
//! the open last chunk is asked row by row (the filter language's evaluator). Two kinds of
//! search still need the file: a filter with `$regex` (RE2 is DuckDB's) and
//! `include_vector` (the copy holds cosine rows normalised). Those must see the file and
//! the copy at the same commit: [`Memory::begin_read`] takes the current snapshot and opens
//! a DuckDB read transaction on the search's connection under the read side of a *gate*;
//! the writer holds the write side only across `COMMIT` and publishing. So both views are
//! of the same commit, and the gate is held by a search for microseconds.
//!
//! Loading an index (at start) reads it in such a read transaction, off every lock; the
//! writer keeps the changes committed meanwhile and replays them onto the loaded copy when
//! it arrives ([`Keeper::loaded`]).
//!
//! An index that keeps text also has its keyword index here ([`terms`]): each chunk holds
//! the BM25 postings of its rows, so the words of a commit are published in the same
//! snapshot as its vectors, and a keyword or hybrid search reads one commit's words and
//! vectors. Loading and compaction carry them like the rows.
//!
//! Per index: an exact top-k scan with a dot-product kernel the compiler vectorises, a
//! bounded heap, and the scan split over the cores for large indexes. Scores and
//! tie-breaking are those of the DuckDB path in [`super::read`], the reference.
//!
//! Scans run on one bounded pool ([`Memory::run`], a `rayon` pool of one thread per core),
//! never on threads made per search, so many searches at once share the cores instead of
//! multiplying threads. The pool's threads run at a lower CPU priority than the rest of
//! the process (Linux: nice +10): when searches keep every core busy, the writer's commits
//! still get the CPU first, and with nothing else to do the searches lose nothing.
//!
//! This module runs no SQL beyond opening and closing read transactions; loading is done by
//! the store, which hands rows in, and what a filter means is [`super::filter`]'s.

pub mod columns;
mod index;
mod keeper;
pub mod quantized;
#[cfg(test)]
mod quantized_tests;
pub mod terms;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};

use duckdb::Connection;

pub use self::index::{dot, Builder, MemoryIndex, Rows, Scored};
pub use self::keeper::Keeper;
pub use self::terms::{KeywordScored, QueryTerms, TextIndex};
use crate::store::api::{Engine, MemoryReport, Metric, StoreError};
use crate::store::metadata::Metadata;
use crate::store::text::TextSettings;

/// A committed change, as the writer records it for the in-memory copy.
#[derive(Debug, Clone)]
pub enum Change {
    Create {
        index: String,
        dimension: usize,
        metric: Metric,
        text: TextSettings,
    },
    Drop {
        index: String,
    },
    Upsert {
        index: String,
        rows: Vec<(String, Vec<f32>, Metadata)>,
    },
    /// New metadata for a stored row (its vector unchanged).
    Metadata {
        index: String,
        id: String,
        metadata: Metadata,
    },
    Delete {
        index: String,
        ids: Vec<String>,
    },
}

/// The in-memory engine: the copies, the budget, and whether it is on at all.
/// How an index is served right now, as searches see it.
#[derive(Debug, Clone)]
pub enum Slot {
    Loading,
    Ready(Arc<MemoryIndex>),
    OverBudget,
}

/// The shared face of the in-memory copies: the published snapshots and the gate.
#[derive(Debug)]
pub struct Memory {
    pub limit_bytes: usize,
    pub enabled: bool,
    /// Searches take the read side to start (snapshot + DuckDB transaction); the writer
    /// takes the write side across `COMMIT` and publishing. Holds nothing.
    gate: RwLock<()>,
    /// Published snapshots. `std` mutex: held to clone or replace one `Arc`.
    slots: Mutex<HashMap<String, Slot>>,
    /// Commits published so far: how a loaded copy knows which changes it lacks.
    commits: AtomicU64,
    /// Where scans run (see the module comment).
    pool: rayon::ThreadPool,
    /// Ticks whenever a slot changes (a search waiting for a load watches it).
    changed: tokio::sync::watch::Sender<u64>,
}

/// Ends a read transaction opened by [`Memory::begin_read`] when dropped.
pub struct ReadTransaction<'a> {
    conn: &'a Connection,
}

impl Drop for ReadTransaction<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            tracing::debug!(error = %e, "ending a read transaction");
        }
    }
}

/// Open a DuckDB read transaction and make it take its snapshot now (DuckDB starts a
/// transaction's view of a database when a query first touches it).
fn begin(conn: &Connection) -> Result<ReadTransaction<'_>, StoreError> {
    conn.execute_batch("BEGIN TRANSACTION; SELECT count(*) FROM stride_vectors.meta;")
        .inspect_err(|_| {
            // A connection left inside a transaction by a failed read: end it and retry.
            let _ = conn.execute_batch("ROLLBACK");
        })
        .or_else(|_| conn.execute_batch("BEGIN TRANSACTION; SELECT count(*) FROM stride_vectors.meta;"))
        .map_err(|e| StoreError::internal("starting a read transaction", e))?;
    Ok(ReadTransaction { conn })
}

impl Memory {
    pub fn new(enabled: bool, limit_bytes: usize) -> Result<Memory, StoreError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("stride-search-{i}"))
            .start_handler(|_| crate::platform::lower_thread_priority())
            .panic_handler(|_| tracing::error!("a search panicked; it answers with an error"))
            .build()
            .map_err(|e| StoreError::internal("starting the search threads", e))?;
        Ok(Memory {
            limit_bytes,
            enabled,
            gate: RwLock::new(()),
            slots: Mutex::new(HashMap::new()),
            commits: AtomicU64::new(0),
            pool,
            changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Run `f` on the search pool and wait for it without blocking the async runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pool.spawn(move || {
            // The receiver may have gone (the caller gave up): nothing to answer then.
            let _ = tx.send(f());
        });
        rx.await
            .map_err(|_| StoreError::Internal("a search stopped before it answered".into()))
    }

    /// Run `f` on the search pool from a blocking thread (a search that also reads the file).
    pub fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.pool.install(f)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // Every update replaces one whole entry: a panicking holder leaves a usable map.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Set (or, with `None`, remove) the slot of `index`, and wake whoever waits on a load.
    fn set_slot(&self, index: &str, slot: Option<Slot>) {
        match slot {
            Some(slot) => self.slots().insert(index.to_string(), slot),
            None => self.slots().remove(index),
        };
        self.changed.send_modify(|n| *n += 1);
    }

    /// How `index` is served once it is no longer loading: its snapshot, or `None` (not
    /// in memory: over the budget, or gone). Waits while it loads.
    pub async fn settled(&self, index: &str) -> Option<Arc<MemoryIndex>> {
        let mut changes = self.changed.subscribe();
        loop {
            match self.slots().get(index) {
                Some(Slot::Ready(copy)) => return Some(copy.clone()),
                Some(Slot::Loading) => {}
                _ => return None,
            }
            if changes.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Whether `index` is over the memory budget (and so searched by DuckDB).
    pub fn over_budget(&self, index: &str) -> bool {
        matches!(self.slots().get(index), Some(Slot::OverBudget))
    }

    /// Mark indexes as loading (before the loader starts on them).
    pub fn mark_loading(&self, names: impl IntoIterator<Item = String>) {
        let mut slots = self.slots();
        for name in names {
            slots.insert(name, Slot::Loading);
        }
        drop(slots);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The current snapshot of `index` and a DuckDB read transaction on `conn` at the same
    /// commit; `None` (and no transaction) when the index is not served from memory.
    pub fn begin_read<'a>(
        &self,
        conn: &'a Connection,
        index: &str,
    ) -> Result<Option<(Arc<MemoryIndex>, ReadTransaction<'a>)>, StoreError> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let Some(copy) = self.snapshot(index) else {
            return Ok(None);
        };
        Ok(Some((copy, begin(conn)?)))
    }

    /// A read transaction for loading, and the number of commits it includes.
    pub fn begin_load<'a>(&self, conn: &'a Connection) -> Result<(ReadTransaction<'a>, u64), StoreError> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let txn = begin(conn)?;
        Ok((txn, self.commits.load(AtomicOrdering::SeqCst)))
    }

    /// The current snapshot of `index`, when it is served from memory. Enough on its own for
    /// a search that needs nothing from the file.
    pub fn snapshot(&self, index: &str) -> Option<Arc<MemoryIndex>> {
        match self.slots().get(index) {
            Some(Slot::Ready(copy)) => Some(copy.clone()),
            _ => None,
        }
    }

    /// Held by the writer across `COMMIT` and publishing.
    pub fn gate(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Engine, bytes and state of the copy per index, for `stats` and `describe_index`.
    pub fn report(&self) -> HashMap<String, MemoryReport> {
        self.slots()
            .iter()
            .map(|(name, slot)| {
                let report = match slot {
                    Slot::Ready(i) => MemoryReport {
                        engine: Engine::Memory,
                        bytes: i.bytes(),
                        text_bytes: i.text_bytes(),
                        state: "ready",
                    },
                    Slot::Loading => MemoryReport {
                        engine: Engine::Duckdb,
                        bytes: 0,
                        text_bytes: 0,
                        state: "loading",
                    },
                    Slot::OverBudget => MemoryReport {
                        engine: Engine::Duckdb,
                        bytes: 0,
                        text_bytes: 0,
                        state: "over_budget",
                    },
                };
                (name.clone(), report)
            })
            .collect()
    }
}
