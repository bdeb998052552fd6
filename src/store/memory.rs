//! The in-memory copy of every index, kept exactly in step with the file by the writer.
//!
//! Because our writer is the only source of change, it can keep a copy of the vectors that
//! is never stale: it takes [`Memory`]'s write lock just before `COMMIT`, commits, applies
//! the same changes here, and releases the lock. A search holds the read lock for its whole
//! length (filter query included), so it sees the file and the copy at the same commit,
//! and never an uncommitted write.
//!
//! Per index: ids and a contiguous row-major `f32` array (normalised once for cosine), an
//! exact top-k scan with a dot-product kernel the compiler vectorises, a bounded heap, and
//! the scan split over the cores for large indexes. Scores and tie-breaking are those of
//! the DuckDB path in [`super::read`], which stays the reference implementation.
//!
//! This module holds no connection and runs no SQL; loading and filtering are done by the
//! store, which hands the rows and the allowed positions in.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::types::Metric;

/// Rows below which one thread scans alone: splitting costs more than it saves.
const PARALLEL_MIN_ROWS: usize = 16_384;

/// One index in memory.
#[derive(Debug, Clone)]
pub struct MemoryIndex {
    metric: Metric,
    dimension: usize,
    ids: Vec<String>,
    positions: HashMap<String, usize>,
    /// Row-major vectors; unit length for cosine (a zero vector stays zero).
    data: Vec<f32>,
}

/// A scored row: position and score.
#[derive(Debug, Clone, Copy)]
pub struct Scored {
    pub position: usize,
    pub score: f32,
}

impl MemoryIndex {
    pub fn new(dimension: usize, metric: Metric) -> Self {
        MemoryIndex {
            metric,
            dimension,
            ids: Vec::new(),
            positions: HashMap::new(),
            data: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn id(&self, position: usize) -> &str {
        &self.ids[position]
    }

    pub fn position(&self, id: &str) -> Option<usize> {
        self.positions.get(id).copied()
    }

    /// Bytes held: vectors, ids, and the id map (an estimate of its overhead).
    pub fn bytes(&self) -> usize {
        let ids: usize = self
            .ids
            .iter()
            .map(|s| s.len() * 2 + 2 * std::mem::size_of::<String>())
            .sum();
        self.data.len() * 4 + ids + self.positions.capacity() * 16
    }

    /// Bytes one more row of this width costs, for the memory budget.
    pub fn row_bytes(dimension: usize) -> usize {
        dimension * 4 + 96
    }

    /// Insert or replace `id`. The caller checked the width.
    pub fn upsert(&mut self, id: &str, vector: &[f32]) {
        let row = self.prepare(vector);
        match self.positions.get(id) {
            Some(&p) => self.data[p * self.dimension..(p + 1) * self.dimension].copy_from_slice(&row),
            None => {
                self.positions.insert(id.to_string(), self.ids.len());
                self.ids.push(id.to_string());
                self.data.extend_from_slice(&row);
            }
        }
    }

    /// Remove `id` by moving the last row into its place (order does not matter: ties are
    /// broken by id, never by position).
    pub fn remove(&mut self, id: &str) {
        let Some(p) = self.positions.remove(id) else {
            return;
        };
        let last = self.ids.len() - 1;
        let d = self.dimension;
        if p != last {
            self.data.copy_within(last * d..(last + 1) * d, p * d);
            self.ids.swap(p, last);
            self.positions.insert(self.ids[p].clone(), p);
        }
        self.ids.pop();
        self.data.truncate(last * d);
    }

    fn prepare(&self, vector: &[f32]) -> Vec<f32> {
        match self.metric {
            Metric::Cosine => normalised(vector),
            _ => vector.to_vec(),
        }
    }

    /// Exact top-k of `query` over all rows, or over `allowed` positions only. Equal scores
    /// go to the smaller id; rows whose score is NaN (a stored zero vector under cosine) are
    /// never hits.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&[usize]>,
        min_score: Option<f64>,
    ) -> Vec<Scored> {
        let query = self.prepare(query);
        let scan = Scan {
            index: self,
            query: &query,
            k,
            min_score,
        };
        let mut hits = match allowed {
            Some(rows) => scan.rows(rows.iter().copied()),
            None if self.len() < PARALLEL_MIN_ROWS => scan.rows(0..self.len()),
            None => scan.parallel(),
        };
        hits.sort_by(|a, b| self.better(a, b));
        hits
    }

    fn score(&self, query: &[f32], position: usize) -> f32 {
        let row = &self.data[position * self.dimension..(position + 1) * self.dimension];
        match self.metric {
            Metric::Cosine => {
                // A zero row has no direction: DuckDB scores it NaN and so do we.
                let s = dot(row, query);
                if s == 0.0 && row.iter().all(|x| *x == 0.0) {
                    f32::NAN
                } else {
                    s
                }
            }
            Metric::Dotproduct => dot(row, query),
            Metric::Euclidean => 1.0 / (1.0 + squared_distance(row, query).sqrt()),
        }
    }

    /// `Less` when `a` ranks before `b`: higher score, then smaller id.
    fn better(&self, a: &Scored, b: &Scored) -> Ordering {
        b.score
            .total_cmp(&a.score)
            .then_with(|| self.ids[a.position].cmp(&self.ids[b.position]))
    }
}

/// One search's parameters, shared by the serial and the parallel scan.
struct Scan<'a> {
    index: &'a MemoryIndex,
    query: &'a [f32],
    k: usize,
    min_score: Option<f64>,
}

impl Scan<'_> {
    fn rows(&self, rows: impl Iterator<Item = usize>) -> Vec<Scored> {
        let mut heap = TopK::new(self.index, self.k);
        for position in rows {
            let score = self.index.score(self.query, position);
            if score.is_nan() || self.min_score.is_some_and(|m| (score as f64) < m) {
                continue;
            }
            heap.offer(Scored { position, score });
        }
        heap.into_vec()
    }

    fn parallel(&self) -> Vec<Scored> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
        let chunk = self.index.len().div_ceil(threads);
        let mut merged = TopK::new(self.index, self.k);
        std::thread::scope(|scope| {
            let parts: Vec<_> = (0..threads)
                .map(|t| {
                    let start = (t * chunk).min(self.index.len());
                    let end = ((t + 1) * chunk).min(self.index.len());
                    scope.spawn(move || self.rows(start..end))
                })
                .collect();
            for part in parts {
                // A scan thread only does arithmetic on slices it was given; if it panicked
                // the rows it held would be missing, so the search must fail loudly too.
                let hits = part.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                for hit in hits {
                    merged.offer(hit);
                }
            }
        });
        merged.into_vec()
    }
}

/// The `k` best hits seen so far; the worst of them on top of the heap.
struct TopK<'a> {
    index: &'a MemoryIndex,
    k: usize,
    heap: BinaryHeap<Ranked<'a>>,
}

struct Ranked<'a> {
    hit: Scored,
    index: &'a MemoryIndex,
}

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked<'_> {}
impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked<'_> {
    /// Greater means worse, so the max-heap keeps the worst kept hit on top.
    fn cmp(&self, other: &Self) -> Ordering {
        self.index.better(&self.hit, &other.hit)
    }
}

impl<'a> TopK<'a> {
    fn new(index: &'a MemoryIndex, k: usize) -> Self {
        TopK {
            index,
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    fn offer(&mut self, hit: Scored) {
        let ranked = Ranked {
            hit,
            index: self.index,
        };
        if self.heap.len() < self.k {
            self.heap.push(ranked);
        } else if self.heap.peek().is_some_and(|worst| ranked < *worst) {
            self.heap.pop();
            self.heap.push(ranked);
        }
    }

    fn into_vec(self) -> Vec<Scored> {
        self.heap.into_iter().map(|r| r.hit).collect()
    }
}

/// Eight independent accumulators: the shape LLVM turns into SIMD without `unsafe`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = dot(v, v).sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(metric: Metric, rows: &[(&str, [f32; 2])]) -> MemoryIndex {
        let mut idx = MemoryIndex::new(2, metric);
        for (id, v) in rows {
            idx.upsert(id, v);
        }
        idx
    }

    fn ids(idx: &MemoryIndex, hits: &[Scored]) -> Vec<String> {
        hits.iter().map(|h| idx.id(h.position).to_string()).collect()
    }

    #[test]
    fn kernel_matches_the_naive_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.125).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }

    #[test]
    fn top_k_orders_by_score_then_id_and_skips_zero_rows() {
        let idx = index(
            Metric::Cosine,
            &[
                ("b", [1.0, 0.0]),
                ("a", [2.0, 0.0]),
                ("c", [0.0, 1.0]),
                ("z", [0.0, 0.0]),
            ],
        );
        let hits = idx.search(&[1.0, 0.0], 3, None, None);
        assert_eq!(ids(&idx, &hits), ["a", "b", "c"]);
        let hits = idx.search(&[1.0, 0.0], 2, Some(&[1, 2]), None);
        assert_eq!(ids(&idx, &hits), ["a", "c"]);
        assert_eq!(idx.search(&[1.0, 0.0], 10, None, Some(0.5)).len(), 2);
    }

    #[test]
    fn remove_keeps_positions_consistent() {
        let mut idx = index(
            Metric::Dotproduct,
            &[("a", [1.0, 0.0]), ("b", [2.0, 0.0]), ("c", [3.0, 0.0])],
        );
        idx.remove("a");
        idx.upsert("b", &[5.0, 0.0]);
        assert_eq!(idx.len(), 2);
        let hits = idx.search(&[1.0, 0.0], 5, None, None);
        assert_eq!(ids(&idx, &hits), ["b", "c"]);
        assert_eq!(hits[0].score, 5.0);
        assert_eq!(idx.position("c").map(|p| idx.id(p).to_string()), Some("c".into()));
    }

    #[test]
    fn parallel_scan_equals_serial() {
        let mut idx = MemoryIndex::new(4, Metric::Euclidean);
        for i in 0..(PARALLEL_MIN_ROWS + 500) {
            let x = (i % 97) as f32;
            idx.upsert(&format!("r{i}"), &[x, 1.0, (i % 13) as f32, 2.0]);
        }
        let all: Vec<usize> = (0..idx.len()).collect();
        let parallel = idx.search(&[3.0, 1.0, 5.0, 2.0], 25, None, None);
        let serial = idx.search(&[3.0, 1.0, 5.0, 2.0], 25, Some(&all), None);
        assert_eq!(ids(&idx, &parallel), ids(&idx, &serial));
    }
}

/// How searches are served.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The in-memory copy (DuckDB while it loads, or for indexes over the memory budget).
    Memory,
    /// DuckDB's brute-force scan: the reference implementation.
    Duckdb,
}

/// One index's place in memory.
#[derive(Debug)]
pub enum Slot {
    /// Not loaded yet: searches use DuckDB.
    Loading,
    Ready(MemoryIndex),
    /// Did not fit in the memory budget: searches use DuckDB.
    OverBudget,
}

/// Every index's copy, behind one lock (see the module doc for why one).
#[derive(Debug, Default)]
pub struct MemoryState {
    pub slots: HashMap<String, Slot>,
}

impl MemoryState {
    pub fn used_bytes(&self) -> usize {
        self.slots
            .values()
            .map(|s| if let Slot::Ready(i) = s { i.bytes() } else { 0 })
            .sum()
    }
}

/// How one index is served.
#[derive(Debug, Clone, Copy)]
pub struct MemoryReport {
    pub engine: Engine,
    pub bytes: usize,
    /// `ready`, `loading`, `over_budget`, or `off` (the engine is `duckdb`).
    pub state: &'static str,
}

impl MemoryReport {
    pub const OFF: MemoryReport = MemoryReport {
        engine: Engine::Duckdb,
        bytes: 0,
        state: "off",
    };
}

/// A committed change, as the writer records it for the in-memory copy.
#[derive(Debug, Clone)]
pub enum Change {
    Create {
        index: String,
        dimension: usize,
        metric: Metric,
    },
    Drop {
        index: String,
    },
    Upsert {
        index: String,
        rows: Vec<(String, Vec<f32>)>,
    },
    Delete {
        index: String,
        ids: Vec<String>,
    },
}

/// The in-memory engine: the copies, the budget, and whether it is on at all.
#[derive(Debug)]
pub struct Memory {
    pub state: std::sync::RwLock<MemoryState>,
    pub limit_bytes: usize,
    pub enabled: bool,
}

impl Memory {
    pub fn new(enabled: bool, limit_bytes: usize) -> Memory {
        Memory {
            state: Default::default(),
            limit_bytes,
            enabled,
        }
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, MemoryState> {
        // Every update replaces whole rows or whole slots; a panicking holder cannot leave a
        // row half written, so the state stays usable.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, MemoryState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply committed changes. Called by the writer with the write lock it took before
    /// `COMMIT`, so no search sees the file and the copy disagree.
    pub fn apply(&self, state: &mut MemoryState, changes: Vec<Change>) {
        if !self.enabled {
            return;
        }
        for change in changes {
            match change {
                Change::Create {
                    index,
                    dimension,
                    metric,
                } => {
                    state
                        .slots
                        .insert(index, Slot::Ready(MemoryIndex::new(dimension, metric)));
                }
                Change::Drop { index } => {
                    state.slots.remove(&index);
                }
                Change::Delete { index, ids } => {
                    if let Some(Slot::Ready(idx)) = state.slots.get_mut(&index) {
                        ids.iter().for_each(|id| idx.remove(id));
                    }
                }
                Change::Upsert { index, rows } => self.upsert(state, &index, rows),
            }
        }
    }

    fn upsert(&self, state: &mut MemoryState, index: &str, rows: Vec<(String, Vec<f32>)>) {
        let used = state.used_bytes();
        let Some(slot) = state.slots.get_mut(index) else {
            return;
        };
        let Slot::Ready(idx) = slot else { return };
        let added = rows.len() * MemoryIndex::row_bytes(idx.dimension);
        if used + added > self.limit_bytes {
            tracing::warn!(
                index,
                limit_mb = self.limit_bytes >> 20,
                "index outgrew the memory budget; searching it with DuckDB"
            );
            *slot = Slot::OverBudget;
            return;
        }
        for (id, vector) in rows {
            idx.upsert(&id, &vector);
        }
    }

    /// Engine, bytes and state of the copy per index, for `stats` and `describe_index`.
    pub fn report(&self) -> HashMap<String, MemoryReport> {
        let state = self.read();
        state
            .slots
            .iter()
            .map(|(name, slot)| {
                let report = match slot {
                    Slot::Ready(i) => MemoryReport {
                        engine: Engine::Memory,
                        bytes: i.bytes(),
                        state: "ready",
                    },
                    Slot::Loading => MemoryReport {
                        engine: Engine::Duckdb,
                        bytes: 0,
                        state: "loading",
                    },
                    Slot::OverBudget => MemoryReport {
                        engine: Engine::Duckdb,
                        bytes: 0,
                        state: "over_budget",
                    },
                };
                (name.clone(), report)
            })
            .collect()
    }
}

impl MemoryIndex {
    pub fn dimension(&self) -> usize {
        self.dimension
    }
}
