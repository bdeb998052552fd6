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
pub mod quantized;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};

use duckdb::Connection;
use rayon::prelude::*;

use self::columns::{Columns, Mask};
use self::quantized::{QueryCode, RowCode};
use crate::store::api::{Engine, MemoryReport, Metric, StoreError};
use crate::store::filter::Filter;
use crate::store::metadata::Metadata;

/// Rows below which one thread scans alone: splitting costs more than it saves.
const PARALLEL_MIN_ROWS: usize = 16_384;
/// Smallest share of a split scan: small enough to balance between busy threads.
const PART_MIN_ROWS: usize = 8_192;
/// How much lower the search threads' CPU priority is than the writer's (a nice value).
const SEARCH_NICE: libc::c_int = 10;
/// Rows per chunk: the most a single-row upsert copies (1.25 MiB at 1024 dimensions), and the
/// rows one filter mask covers.
const CHUNK_ROWS: usize = columns::ROWS;
/// Rows from which a search scans the int8 codes first (a quarter of the bytes) and
/// rescores the best candidates in f32; below it, the f32 scan alone is as fast.
const QUANTIZED_MIN_ROWS: usize = 65_536;
/// Candidates rescored in f32 beyond `k`: enough that the bound nearly always proves the
/// answer exact, few enough to cost nothing next to the scan.
const EXTRA_CANDIDATES: usize = 64;

/// Rows of one chunk: vectors row-major (unit length for cosine; a zero vector stays zero),
/// their int8 codes (row-major too) with each row's [`RowCode`], and each row's stored
/// metadata; once the chunk is full (and so never changes again), that metadata in columns
/// too, which answer a filter for the whole chunk at once.
#[derive(Debug, Clone, Default)]
struct Chunk {
    ids: Vec<String>,
    data: Vec<f32>,
    codes: Vec<i8>,
    code: Vec<RowCode>,
    metadata: Vec<Metadata>,
    columns: Option<Columns>,
}

/// One index in memory, as of one commit. Cloning it is cheap (it shares its chunks).
#[derive(Debug, Clone)]
pub struct MemoryIndex {
    metric: Metric,
    dimension: usize,
    chunks: Vec<Arc<Chunk>>,
    /// Rows stored, live or dead.
    rows: usize,
    /// One bit per stored row: set while the row is the current version of its id.
    live: Arc<Vec<u64>>,
    live_rows: usize,
    /// Bytes of the metadata of every stored row, live or dead, and of the chunks' columns.
    metadata_bytes: usize,
}

/// Which rows a search may return, besides being live.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    All,
    /// Those whose metadata matches (a filter the evaluator handles).
    Matching(&'a Filter),
    /// Those whose id is in the set (a filter DuckDB evaluated).
    Allowed(&'a HashSet<String>),
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
            chunks: Vec::new(),
            rows: 0,
            live: Arc::new(Vec::new()),
            live_rows: 0,
            metadata_bytes: 0,
        }
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.live_rows
    }

    pub fn is_empty(&self) -> bool {
        self.live_rows == 0
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn id(&self, position: usize) -> &str {
        &self.chunks[position / CHUNK_ROWS].ids[position % CHUNK_ROWS]
    }

    /// The row's stored metadata.
    pub fn metadata(&self, position: usize) -> &Metadata {
        &self.chunks[position / CHUNK_ROWS].metadata[position % CHUNK_ROWS]
    }

    fn vector(&self, position: usize) -> &[f32] {
        let offset = (position % CHUNK_ROWS) * self.dimension;
        &self.chunks[position / CHUNK_ROWS].data[offset..offset + self.dimension]
    }

    fn codes(&self, position: usize) -> (&[i8], &RowCode) {
        let chunk = &self.chunks[position / CHUNK_ROWS];
        let offset = (position % CHUNK_ROWS) * self.dimension;
        (
            &chunk.codes[offset..offset + self.dimension],
            &chunk.code[position % CHUNK_ROWS],
        )
    }

    fn is_live(&self, position: usize) -> bool {
        self.live[position / 64] & (1 << (position % 64)) != 0
    }

    /// The rows of chunk `c` a search may consider: the live ones, narrowed by `rows` when
    /// that can be answered for the whole chunk at once (a filter on a full chunk, from its
    /// columns). With `false`, every row of the mask must still be asked ([`Self::admits`]).
    fn chunk_rows(&self, c: usize, rows: Rows<'_>) -> (Mask, bool) {
        let words = CHUNK_ROWS / 64;
        let live: Mask = std::array::from_fn(|i| self.live.get(c * words + i).copied().unwrap_or(0));
        match rows {
            Rows::All => (live, true),
            Rows::Matching(filter) => match &self.chunks[c].columns {
                Some(columns) => (columns.matching(filter, live, &self.chunks[c].metadata), true),
                None => (live, false),
            },
            Rows::Allowed(_) => (live, false),
        }
    }

    /// Whether `rows` lets the row at `position` through (liveness aside).
    fn admits(&self, rows: Rows<'_>, position: usize) -> bool {
        match rows {
            Rows::All => true,
            Rows::Matching(filter) => filter.matches(self.metadata(position)),
            Rows::Allowed(ids) => ids.contains(self.id(position)),
        }
    }

    /// Bytes held: vectors, ids and metadata of every stored row (an estimate of their
    /// overhead included), and the liveness bitmap.
    pub fn bytes(&self) -> usize {
        self.rows * Self::row_bytes(self.dimension) + self.metadata_bytes + self.live.len() * 8
    }

    /// Bytes one more row of this width costs before its metadata, for the memory budget:
    /// its f32 vector, its int8 codes and their [`RowCode`], and the id and bookkeeping.
    pub fn row_bytes(dimension: usize) -> usize {
        dimension * 5 + 12 + 96
    }

    /// Append a row (the caller checked the width); copies the last chunk if a published
    /// snapshot still shares it.
    fn push(&mut self, id: &str, vector: &[f32], metadata: Metadata) -> usize {
        let row = self.prepare(vector);
        self.push_prepared(id, &row, metadata)
    }

    /// Append a row already normalised for the metric.
    fn push_prepared(&mut self, id: &str, row: &[f32], metadata: Metadata) -> usize {
        let position = self.rows;
        if position.is_multiple_of(CHUNK_ROWS) {
            self.chunks.push(Arc::new(Chunk {
                ids: Vec::with_capacity(CHUNK_ROWS),
                data: Vec::with_capacity(CHUNK_ROWS * self.dimension),
                codes: Vec::with_capacity(CHUNK_ROWS * self.dimension),
                code: Vec::with_capacity(CHUNK_ROWS),
                metadata: Vec::with_capacity(CHUNK_ROWS),
                columns: None,
            }));
        }
        let last = self.chunks.last_mut().expect("a chunk was just ensured");
        let chunk = Arc::make_mut(last);
        chunk.ids.push(id.to_string());
        chunk.data.extend_from_slice(row);
        let code = quantized::encode(row, &mut chunk.codes);
        chunk.code.push(code);
        self.metadata_bytes += metadata.bytes();
        chunk.metadata.push(metadata);
        if chunk.metadata.len() == CHUNK_ROWS {
            let columns = Columns::build(&chunk.metadata);
            self.metadata_bytes += columns.bytes();
            chunk.columns = Some(columns);
        }
        self.rows += 1;
        let live = Arc::make_mut(&mut self.live);
        if live.len() * 64 < self.rows {
            live.push(0);
        }
        live[position / 64] |= 1 << (position % 64);
        self.live_rows += 1;
        position
    }

    fn kill(&mut self, position: usize) {
        if self.is_live(position) {
            Arc::make_mut(&mut self.live)[position / 64] &= !(1 << (position % 64));
            self.live_rows -= 1;
        }
    }

    fn prepare(&self, vector: &[f32]) -> Vec<f32> {
        match self.metric {
            Metric::Cosine => normalised(vector),
            _ => vector.to_vec(),
        }
    }

    /// Exact top-k of `query` over the live rows that `rows` lets through. Equal scores go
    /// to the smaller id; rows whose score is NaN (none are stored today) are
    /// never hits. A row is tested against the filter before it is scored, so a selective
    /// filter makes a search cheaper, not dearer. Large cosine and dot-product indexes are
    /// searched through their int8 codes first ([`Self::search_quantized`]), with the same
    /// answer.
    pub fn search(&self, query: &[f32], k: usize, rows: Rows<'_>, min_score: Option<f64>) -> Vec<Scored> {
        let query = self.prepare(query);
        if self.rows >= QUANTIZED_MIN_ROWS {
            if let Some(hits) = self.search_quantized(&query, k, rows, min_score) {
                return hits;
            }
        }
        self.search_f32(&query, k, rows, min_score)
    }

    /// The reference: every row scored in f32. `query` is prepared.
    fn search_f32(&self, query: &[f32], k: usize, rows: Rows<'_>, min_score: Option<f64>) -> Vec<Scored> {
        let scan = Scan {
            index: self,
            query,
            k,
            min_score,
            rows,
        };
        let mut hits = scan.run();
        hits.sort_by(|a, b| self.better(a, b));
        hits
    }

    /// The same answer as [`Self::search_f32`], found by scanning the int8 codes for the
    /// rows with the highest score bound, rescoring those in f32, and proving that every
    /// other row's bound is below the k-th score found (see [`super::quantized`]). `None`
    /// when the proof fails (then the caller scans in f32), and for the euclidean metric,
    /// whose score the bound does not cover. `query` is prepared.
    fn search_quantized(
        &self,
        query: &[f32],
        k: usize,
        rows: Rows<'_>,
        min_score: Option<f64>,
    ) -> Option<Vec<Scored>> {
        if self.metric == Metric::Euclidean || k == 0 {
            return None;
        }
        let code = QueryCode::new(query);
        let scan = CandidateScan {
            index: self,
            query: &code,
            keep: k + EXTRA_CANDIDATES.max(k),
            min_score,
            rows,
            bar: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
        };
        let found = scan.run();
        let mut top = TopK::new(self, k);
        for (position, _) in &found.kept {
            let score = self.score(query, *position);
            if score.is_nan() || min_score.is_some_and(|m| (score as f64) < m) {
                continue;
            }
            top.offer(Scored {
                position: *position,
                score,
            });
        }
        let mut hits = top.into_vec();
        hits.sort_by(|a, b| self.better(a, b));
        // Every row left out must be unable to reach the k-th score (ties included: a tie
        // could go to a smaller id). With fewer than k hits, no row may have been left out.
        let proven = match found.best_left_out {
            None => true,
            Some(left_out) => hits.len() == k && left_out < hits[k - 1].score as f64,
        };
        proven.then_some(hits)
    }

    fn score(&self, query: &[f32], position: usize) -> f32 {
        let row = self.vector(position);
        match self.metric {
            Metric::Cosine => {
                // A zero row has no direction. DuckDB's `array_cosine_distance` calls it 2
                // (score -1, the lowest there is), and so do we, so both engines and Mastra
                // rank it the same: last.
                let s = dot(row, query);
                if s == 0.0 && row.iter().all(|x| *x == 0.0) {
                    -1.0
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
            .then_with(|| self.id(a.position).cmp(self.id(b.position)))
    }
}

/// The writer's side of one index: the newest [`MemoryIndex`] and where each id lives.
/// Only the writer thread has one; searches see the snapshots it publishes.
#[derive(Debug, Clone)]
pub struct Builder {
    index: MemoryIndex,
    positions: HashMap<String, usize>,
}

impl Builder {
    pub fn new(dimension: usize, metric: Metric) -> Self {
        Builder {
            index: MemoryIndex::new(dimension, metric),
            positions: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.index.bytes() + self.positions.capacity() * 16
    }

    /// Insert or replace `id`: the new version is appended, the old one retired.
    pub fn upsert(&mut self, id: &str, vector: &[f32], metadata: Metadata) {
        if let Some(old) = self.positions.get(id).copied() {
            self.index.kill(old);
        }
        let position = self.index.push(id, vector, metadata);
        self.positions.insert(id.to_string(), position);
        self.compact_if_worth_it();
    }

    /// Give `id` new metadata: the row is appended again with its vector, the old one
    /// retired (the same path as an upsert, so a snapshot never changes in place).
    pub fn set_metadata(&mut self, id: &str, metadata: Metadata) {
        let Some(old) = self.positions.get(id).copied() else {
            return;
        };
        let row = self.index.vector(old).to_vec();
        self.index.kill(old);
        let position = self.index.push_prepared(id, &row, metadata);
        self.positions.insert(id.to_string(), position);
        self.compact_if_worth_it();
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(position) = self.positions.remove(id) {
            self.index.kill(position);
            self.compact_if_worth_it();
        }
    }

    /// The current version, to publish.
    pub fn snapshot(&self) -> Arc<MemoryIndex> {
        Arc::new(self.index.clone())
    }

    /// Rewrite the rows without the dead ones once they are a quarter of what is stored
    /// (and more than a few chunks), so memory and scan time follow the live rows.
    fn compact_if_worth_it(&mut self) {
        let dead = self.index.rows - self.index.live_rows;
        if dead < 4 * CHUNK_ROWS || dead * 4 < self.index.rows {
            return;
        }
        let empty = MemoryIndex::new(self.index.dimension, self.index.metric);
        let old = std::mem::replace(&mut self.index, empty);
        self.positions.clear();
        for position in (0..old.rows).filter(|p| old.is_live(*p)) {
            // Rows are stored prepared: copy them as they are, not normalised again.
            let new_position = self.index.push_prepared(
                old.id(position),
                old.vector(position),
                old.metadata(position).clone(),
            );
            self.positions.insert(old.id(position).to_string(), new_position);
        }
    }
}

/// One search's parameters, shared by the serial and the parallel scan.
struct Scan<'a> {
    index: &'a MemoryIndex,
    query: &'a [f32],
    k: usize,
    min_score: Option<f64>,
    rows: Rows<'a>,
}

impl Scan<'_> {
    fn chunks(&self, chunks: std::ops::Range<usize>) -> Vec<Scored> {
        let mut heap = TopK::new(self.index, self.k);
        for c in chunks {
            let (mask, exact) = self.index.chunk_rows(c, self.rows);
            for position in columns::rows(mask).map(|r| c * CHUNK_ROWS + r) {
                if !exact && !self.index.admits(self.rows, position) {
                    continue;
                }
                let score = self.index.score(self.query, position);
                if score.is_nan() || self.min_score.is_some_and(|m| (score as f64) < m) {
                    continue;
                }
                heap.offer(Scored { position, score });
            }
        }
        heap.into_vec()
    }

    /// Every chunk ([`in_parts`]), each part's best merged.
    fn run(&self) -> Vec<Scored> {
        let found = in_parts(self.index.chunks.len(), |r| self.chunks(r));
        let mut merged = TopK::new(self.index, self.k);
        for hit in found.into_iter().flatten() {
            merged.offer(hit);
        }
        merged.into_vec()
    }
}

/// `scan` over `chunks` chunks split in parts, each part's answer: one part on this thread
/// below [`PARALLEL_MIN_ROWS`], else a few parts per thread of the current pool (small enough
/// to balance between busy threads), scanned by whichever threads are free.
fn in_parts<T: Send>(chunks: usize, scan: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    let rows = chunks * CHUNK_ROWS;
    if rows < PARALLEL_MIN_ROWS {
        return vec![scan(0..chunks)];
    }
    let parts = (rayon::current_num_threads() * 4).clamp(1, rows.div_ceil(PART_MIN_ROWS).max(1));
    let each = chunks.div_ceil(parts);
    (0..parts)
        .map(|t| (t * each).min(chunks)..((t + 1) * each).min(chunks))
        .filter(|r| !r.is_empty())
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(&scan)
        .collect()
}

/// One quantized search's first pass: the rows with the highest score bounds.
struct CandidateScan<'a> {
    index: &'a MemoryIndex,
    query: &'a QueryCode,
    /// How many candidates to keep.
    keep: usize,
    min_score: Option<f64>,
    rows: Rows<'a>,
    /// The highest "lowest kept bound" of any part's full candidate heap (f64 bits), shared
    /// by the parts of a parallel scan. The merged heap keeps the best `keep` bounds of all
    /// parts, so its lowest is at least this: a row at or below it can never be kept, and
    /// every part may turn it away without asking the filter.
    bar: AtomicU64,
}

/// What a first pass found: the kept rows with their bounds, and the highest bound of a
/// row that could be a hit but was not kept.
struct Candidates {
    kept: Vec<(usize, f64)>,
    best_left_out: Option<f64>,
}

impl CandidateScan<'_> {
    fn bar(&self) -> f64 {
        f64::from_bits(self.bar.load(AtomicOrdering::Relaxed))
    }

    /// Raises the bar to `to` if that is higher; returns the bar.
    fn raise_bar(&self, to: f64) -> f64 {
        let mut now = self.bar.load(AtomicOrdering::Relaxed);
        loop {
            if f64::from_bits(now) >= to {
                return f64::from_bits(now);
            }
            match self.bar.compare_exchange_weak(
                now,
                to.to_bits(),
                AtomicOrdering::Relaxed,
                AtomicOrdering::Relaxed,
            ) {
                Ok(_) => return to,
                Err(seen) => now = seen,
            }
        }
    }

    fn chunks(&self, chunks: std::ops::Range<usize>) -> Candidates {
        let mut best = BoundHeap::new(self.keep);
        for c in chunks {
            let mut bar = self.bar();
            // A filter the columns answer leaves only matching rows in the mask; any other
            // is asked only about rows whose bound would be kept: nearly every row is turned
            // away by its bound first, which costs less than the filter. A row turned away
            // unasked counts as left out (as if it matched), which can only make the proof
            // stricter.
            let (mask, exact) = self.index.chunk_rows(c, self.rows);
            for position in columns::rows(mask).map(|r| c * CHUNK_ROWS + r) {
                let (codes, code) = self.index.codes(position);
                let bound = self
                    .query
                    .upper_bound(quantized::dot_i8(&self.query.codes, codes), code);
                // A row that cannot reach min_score is no hit, kept or not.
                if self.min_score.is_some_and(|m| bound < m) {
                    continue;
                }
                if bound <= bar || !best.would_keep(bound) {
                    best.left_out(Some(bound));
                    continue;
                }
                if exact || self.index.admits(self.rows, position) {
                    best.offer(position, bound);
                    if let Some(lowest) = best.lowest_if_full() {
                        bar = self.raise_bar(lowest);
                    }
                }
            }
        }
        best.finish()
    }

    /// Every chunk ([`in_parts`]), the parts' candidates merged.
    fn run(&self) -> Candidates {
        let found = in_parts(self.index.chunks.len(), |r| self.chunks(r));
        let mut best = BoundHeap::new(self.keep);
        for part in found {
            best.left_out(part.best_left_out);
            for (position, bound) in part.kept {
                best.offer(position, bound);
            }
        }
        best.finish()
    }
}

/// The `keep` highest bounds seen, the lowest of them on top, and the highest bound that
/// was turned away.
struct BoundHeap {
    keep: usize,
    heap: BinaryHeap<std::cmp::Reverse<(OrderedBound, usize)>>,
    best_left_out: Option<f64>,
}

/// An f64 bound ordered totally (bounds are never NaN: they come from finite rows).
#[derive(Clone, Copy, PartialEq)]
struct OrderedBound(f64);
impl Eq for OrderedBound {}
impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl BoundHeap {
    fn new(keep: usize) -> BoundHeap {
        BoundHeap {
            keep,
            heap: BinaryHeap::with_capacity(keep + 1),
            best_left_out: None,
        }
    }

    fn left_out(&mut self, bound: Option<f64>) {
        if let Some(b) = bound {
            self.best_left_out = Some(self.best_left_out.map_or(b, |o| o.max(b)));
        }
    }

    fn lowest_if_full(&self) -> Option<f64> {
        (self.heap.len() == self.keep)
            .then(|| self.heap.peek().map(|r| r.0 .0 .0))
            .flatten()
    }

    fn would_keep(&self, bound: f64) -> bool {
        self.heap.len() < self.keep || self.heap.peek().is_some_and(|r| bound > r.0 .0 .0)
    }

    fn offer(&mut self, position: usize, bound: f64) {
        if self.heap.len() < self.keep {
            self.heap.push(std::cmp::Reverse((OrderedBound(bound), position)));
            return;
        }
        let lowest = self.heap.peek().map_or(f64::INFINITY, |r| r.0 .0 .0);
        if bound > lowest {
            let std::cmp::Reverse((out, _)) = self.heap.pop().expect("the heap is full");
            self.left_out(Some(out.0));
            self.heap.push(std::cmp::Reverse((OrderedBound(bound), position)));
        } else {
            self.left_out(Some(bound));
        }
    }

    fn finish(self) -> Candidates {
        Candidates {
            kept: self
                .heap
                .into_iter()
                .map(|std::cmp::Reverse((b, p))| (p, b.0))
                .collect(),
            best_left_out: self.best_left_out,
        }
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

    fn index(metric: Metric, rows: &[(&str, [f32; 2])]) -> Builder {
        let mut idx = Builder::new(2, metric);
        for (id, v) in rows {
            idx.upsert(id, v, Metadata::Null);
        }
        idx
    }

    pub(super) fn ids(idx: &MemoryIndex, hits: &[Scored]) -> Vec<String> {
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
    fn top_k_orders_by_score_then_id_and_ranks_zero_rows_last() {
        let idx = index(
            Metric::Cosine,
            &[
                ("b", [1.0, 0.0]),
                ("a", [2.0, 0.0]),
                ("c", [0.0, 1.0]),
                ("z", [0.0, 0.0]),
            ],
        )
        .snapshot();
        let hits = idx.search(&[1.0, 0.0], 3, Rows::All, None);
        assert_eq!(ids(&idx, &hits), ["a", "b", "c"]);
        let hits = idx.search(&[0.0, 1.0], 4, Rows::All, None);
        assert_eq!(ids(&idx, &hits), ["c", "a", "b", "z"]);
        assert_eq!(hits[3].score, -1.0);
        let allowed: HashSet<String> = ["a", "c"].map(String::from).into();
        let hits = idx.search(&[1.0, 0.0], 2, Rows::Allowed(&allowed), None);
        assert_eq!(ids(&idx, &hits), ["a", "c"]);
        assert_eq!(idx.search(&[1.0, 0.0], 10, Rows::All, Some(0.5)).len(), 2);
    }

    #[test]
    fn a_published_snapshot_never_changes_under_later_writes() {
        let mut idx = index(
            Metric::Dotproduct,
            &[("a", [1.0, 0.0]), ("b", [2.0, 0.0]), ("c", [3.0, 0.0])],
        );
        let before = idx.snapshot();
        idx.remove("a");
        idx.upsert("b", &[5.0, 0.0], Metadata::Null);
        idx.upsert("d", &[4.0, 0.0], Metadata::Null);
        let after = idx.snapshot();
        let old = before.search(&[1.0, 0.0], 5, Rows::All, None);
        assert_eq!(ids(&before, &old), ["c", "b", "a"]);
        assert_eq!(old[1].score, 2.0);
        let new = after.search(&[1.0, 0.0], 5, Rows::All, None);
        assert_eq!(ids(&after, &new), ["b", "d", "c"]);
        assert_eq!(new[0].score, 5.0);
        assert_eq!(after.len(), 3);
    }

    #[test]
    fn rewriting_most_rows_compacts_and_keeps_every_live_row() {
        let mut idx = Builder::new(2, Metric::Euclidean);
        for round in 0..6 {
            for i in 0..2000 {
                idx.upsert(&format!("r{i}"), &[i as f32, round as f32], Metadata::Null);
            }
        }
        for i in (0..2000).step_by(2) {
            idx.remove(&format!("r{i}"));
        }
        let snap = idx.snapshot();
        assert_eq!(snap.len(), 1000);
        assert!(
            snap.rows < 2 * 2000,
            "dead rows were compacted: {} stored",
            snap.rows
        );
        let hits = snap.search(&[1.0, 5.0], 1, Rows::All, None);
        assert_eq!(ids(&snap, &hits), ["r1"]);
        assert_eq!(hits[0].score, 1.0);
    }

    #[test]
    fn a_loaded_copy_gets_the_changes_committed_while_it_was_read() {
        let memory = Memory::new(true, 1 << 30).unwrap();
        memory.mark_loading(["goals".to_string()]);
        let mut keeper = Keeper::default();
        let upsert = |id: &str, x: f32| Change::Upsert {
            index: "goals".into(),
            rows: vec![(id.to_string(), vec![x, 0.0], Metadata::Null)],
        };
        keeper.apply(&memory, vec![upsert("a", 1.0)]);
        // The loader's read transaction starts here: it sees commit 1, not what follows.
        let as_of = memory.commits.load(AtomicOrdering::SeqCst);
        keeper.apply(
            &memory,
            vec![
                upsert("b", 2.0),
                Change::Delete {
                    index: "goals".into(),
                    ids: vec!["a".into()],
                },
            ],
        );
        assert!(matches!(memory.slots().get("goals"), Some(Slot::Loading)));
        let mut read = Builder::new(2, Metric::Dotproduct);
        read.upsert("a", &[1.0, 0.0], Metadata::Null);
        keeper.loaded(&memory, "goals", Some(read), as_of);
        let Some(Slot::Ready(copy)) = memory.slots().get("goals").cloned() else {
            panic!("the loaded copy is published");
        };
        let hits = copy.search(&[1.0, 0.0], 10, Rows::All, None);
        assert_eq!(ids(&copy, &hits), ["b"]);
        // A copy for an index dropped meanwhile is thrown away.
        keeper.apply(
            &memory,
            vec![Change::Drop {
                index: "goals".into(),
            }],
        );
        keeper.loaded(&memory, "goals", Some(Builder::new(2, Metric::Dotproduct)), as_of);
        assert!(memory.slots().get("goals").is_none());
    }

    #[test]
    fn filters_see_the_metadata_of_each_snapshot() {
        let meta = |g: i64| Metadata::from(&serde_json::json!({"group": g}));
        let mut idx = Builder::new(2, Metric::Dotproduct);
        idx.upsert("a", &[1.0, 0.0], meta(1));
        idx.upsert("b", &[2.0, 0.0], meta(2));
        let before = idx.snapshot();
        idx.set_metadata("a", meta(2));
        idx.set_metadata("missing", meta(2));
        let after = idx.snapshot();
        let group2 = crate::store::filter::parse(&serde_json::json!({"group": 2})).unwrap();
        let hits = before.search(&[1.0, 0.0], 5, Rows::Matching(&group2), None);
        assert_eq!(ids(&before, &hits), ["b"]);
        let hits = after.search(&[1.0, 0.0], 5, Rows::Matching(&group2), None);
        assert_eq!(ids(&after, &hits), ["b", "a"]);
        assert_eq!(hits[1].score, 1.0, "the vector is kept");
        assert_eq!(after.len(), 2);
        assert_eq!(after.metadata(hits[1].position), &meta(2));
    }

    #[test]
    fn parallel_scan_equals_serial() {
        let mut idx = Builder::new(4, Metric::Euclidean);
        for i in 0..(PARALLEL_MIN_ROWS + 500) {
            let x = (i % 97) as f32;
            idx.upsert(&format!("r{i}"), &[x, 1.0, (i % 13) as f32, 2.0], Metadata::Null);
        }
        let snap = idx.snapshot();
        let all: HashSet<String> = (0..snap.len()).map(|i| format!("r{i}")).collect();
        let parallel = snap.search(&[3.0, 1.0, 5.0, 2.0], 25, Rows::All, None);
        let serial = snap.search(&[3.0, 1.0, 5.0, 2.0], 25, Rows::Allowed(&all), None);
        assert_eq!(ids(&snap, &parallel), ids(&snap, &serial));
    }
}

/// The int8 first pass against the f32 scan, on seeded random indexes: the same hits with
/// the same scores, bit for bit, whenever the quantized search answers, and it answers for
/// nearly every query on ordinary data. `QUANT_SEED=n` replays a run.
#[cfg(test)]
mod quantized_tests {
    use super::tests::ids;
    use super::*;
    use rand::{Rng, SeedableRng};

    fn seed() -> u64 {
        std::env::var("QUANT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::rng().random())
    }

    /// `kind` 0: independent rows; 1: a few tight clusters with exact duplicates (many
    /// near-ties, the hard case for the bound); 2: varied norms (what dot product sees).
    fn build(rng: &mut rand::rngs::StdRng, metric: Metric, dim: usize, n: usize, kind: u8) -> Builder {
        let centres: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let mut b = Builder::new(dim, metric);
        for i in 0..n {
            let v: Vec<f32> = match kind {
                0 => (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
                1 if i % 50 == 0 => vec![0.0; dim],
                1 if i % 7 == 0 => centres[i % 4].clone(),
                1 => centres[i % 4]
                    .iter()
                    .map(|c| c + rng.random_range(-0.01f32..0.01))
                    .collect(),
                _ => {
                    let norm = rng.random_range(0.01f32..20.0);
                    (0..dim).map(|_| norm * rng.random_range(-1.0f32..1.0)).collect()
                }
            };
            let meta = Metadata::from(&serde_json::json!({"group": i % 10}));
            b.upsert(&format!("r{i:06}"), &v, meta);
        }
        // Replaced and removed rows leave dead slots that must stay out.
        for i in (0..n).step_by(11) {
            let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            b.upsert(&format!("r{i:06}"), &v, Metadata::Null);
        }
        for i in (3..n).step_by(13) {
            b.remove(&format!("r{i:06}"));
        }
        b
    }

    fn same(a: &[Scored], b: &[Scored]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.position == y.position && x.score.to_bits() == y.score.to_bits())
    }

    #[test]
    fn quantized_search_equals_the_f32_scan() {
        let seed = seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let filter = crate::store::filter::parse(&serde_json::json!({"group": {"$in": [1, 4, 7]}})).unwrap();
        let (mut answered, mut asked, mut answered_plain, mut asked_plain) = (0, 0, 0, 0);
        // (rows, dim): serial and parallel first passes, narrow and model-wide rows.
        for (n, dim) in [(3_000, 3), (5_000, 384), (PARALLEL_MIN_ROWS + 3_000, 24)] {
            for metric in [Metric::Cosine, Metric::Dotproduct] {
                for kind in 0..3u8 {
                    let snap = build(&mut rng, metric, dim, n, kind).snapshot();
                    let allowed: HashSet<String> = (0..n)
                        .filter(|_| rng.random_bool(0.2))
                        .map(|i| format!("r{i:06}"))
                        .collect();
                    // The filter asked row by row: what the chunks' columns must answer.
                    let matching: HashSet<String> = (0..snap.rows)
                        .filter(|p| snap.is_live(*p) && filter.matches(snap.metadata(*p)))
                        .map(|p| snap.id(p).to_string())
                        .collect();
                    for q in 0..12 {
                        let query: Vec<f32> = match q % 3 {
                            // A stored row's direction: its own score is the top one.
                            0 => snap.vector(rng.random_range(0..snap.rows)).to_vec(),
                            _ => (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
                        };
                        let query = snap.prepare(&query);
                        let k = [1, 10, 100][q % 3];
                        let rows = match q % 4 {
                            0 | 1 => Rows::All,
                            2 => Rows::Matching(&filter),
                            _ => Rows::Allowed(&allowed),
                        };
                        let reference = snap.search_f32(&query, k, rows, None);
                        // A min_score just under the 5th hit: only a few rows may pass it.
                        let min =
                            (q % 5 == 4).then(|| reference.get(4).map_or(0.0, |h| h.score as f64 - 1e-3));
                        let reference = if min.is_some() {
                            snap.search_f32(&query, k, rows, min)
                        } else {
                            reference
                        };
                        if matches!(rows, Rows::Matching(_)) {
                            let by_row = snap.search_f32(&query, k, Rows::Allowed(&matching), min);
                            assert!(
                                same(&reference, &by_row),
                                "seed {seed}: n {n} {metric:?} kind {kind} query {q}: the columns' \
                                 filter {:?} != row by row {:?}",
                                ids(&snap, &reference),
                                ids(&snap, &by_row)
                            );
                        }
                        asked += 1;
                        if kind == 0 {
                            asked_plain += 1;
                        }
                        if let Some(got) = snap.search_quantized(&query, k, rows, min) {
                            answered += 1;
                            if kind == 0 {
                                answered_plain += 1;
                            }
                            assert!(
                                same(&got, &reference),
                                "seed {seed}: n {n} dim {dim} {metric:?} kind {kind} query {q} k {k}: \
                                 quantized {:?} != f32 {:?}",
                                ids(&snap, &got),
                                ids(&snap, &reference)
                            );
                        }
                    }
                }
            }
        }
        // The fast path must be the usual path on ordinary data, or the test proves little.
        assert!(
            answered_plain * 10 >= asked_plain * 9,
            "seed {seed}: {answered_plain}/{asked_plain} answered on independent rows"
        );
        eprintln!("seed {seed}: the quantized pass answered {answered} of {asked} searches");
    }

    #[test]
    fn the_public_search_uses_the_codes_at_scale_and_agrees() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let snap = build(&mut rng, Metric::Cosine, 8, QUANTIZED_MIN_ROWS + 10, 0).snapshot();
        let query: Vec<f32> = (0..8).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let prepared = snap.prepare(&query);
        assert!(snap.search_quantized(&prepared, 10, Rows::All, None).is_some());
        assert!(same(
            &snap.search(&query, 10, Rows::All, None),
            &snap.search_f32(&prepared, 10, Rows::All, None)
        ));
    }
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
            .start_handler(|_| lower_priority())
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

    /// Mark indexes as loading (before the loader starts on them).
    pub fn mark_loading(&self, names: impl IntoIterator<Item = String>) {
        let mut slots = self.slots();
        for name in names {
            slots.insert(name, Slot::Loading);
        }
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

/// Make the calling thread yield the CPU to the rest of the process when cores are short.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // Linux keeps a nice value per thread; PRIO_PROCESS with a thread id sets that thread's.
    // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, SEARCH_NICE)
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "lowering a search thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// The writer's side of every copy: one [`Builder`] per index served from memory, and the
/// changes committed while an index loads. Lives on the writer thread only.
#[derive(Debug, Default)]
pub struct Keeper {
    builders: HashMap<String, Builder>,
    /// Per loading index, the changes committed since loading began, by commit number.
    backlog: HashMap<String, Vec<(u64, Change)>>,
}

impl Keeper {
    /// Apply one commit's changes and publish the indexes they touched. The caller holds
    /// the gate (taken before `COMMIT`).
    pub fn apply(&mut self, memory: &Memory, changes: Vec<Change>) {
        if !memory.enabled {
            return;
        }
        let commit = memory.commits.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        let mut touched = HashSet::new();
        for change in changes {
            let index = change.index().to_string();
            match change {
                Change::Create {
                    dimension, metric, ..
                } => {
                    self.backlog.remove(&index);
                    self.builders
                        .insert(index.clone(), Builder::new(dimension, metric));
                    touched.insert(index);
                }
                Change::Drop { .. } => {
                    self.backlog.remove(&index);
                    self.builders.remove(&index);
                    touched.remove(&index);
                    memory.slots().remove(&index);
                }
                change => {
                    if let Some(builder) = self.builders.get_mut(&index) {
                        change.apply_to(builder);
                        touched.insert(index);
                    } else if matches!(memory.slots().get(&index), Some(Slot::Loading)) {
                        self.backlog.entry(index).or_default().push((commit, change));
                    }
                }
            }
        }
        for index in touched {
            self.publish(memory, &index);
        }
    }

    /// A copy the loader read as of `as_of` commits (`None`: it could not be read). Kept
    /// if the index is still loading, after replaying what was committed since.
    pub fn loaded(&mut self, memory: &Memory, index: &str, builder: Option<Builder>, as_of: u64) {
        if !matches!(memory.slots().get(index), Some(Slot::Loading)) {
            return; // Dropped or recreated meanwhile: the writer's own copy rules.
        }
        let backlog = self.backlog.remove(index).unwrap_or_default();
        let Some(mut builder) = builder else {
            memory.slots().insert(index.to_string(), Slot::OverBudget);
            return;
        };
        for (commit, change) in backlog {
            if commit > as_of {
                change.apply_to(&mut builder);
            }
        }
        tracing::info!(
            index,
            rows = builder.len(),
            mb = builder.bytes() >> 20,
            "index loaded into memory"
        );
        self.builders.insert(index.to_string(), builder);
        self.publish(memory, index);
    }

    fn publish(&mut self, memory: &Memory, index: &str) {
        let Some(builder) = self.builders.get(index) else {
            return;
        };
        let others: usize = self
            .builders
            .iter()
            .filter(|(name, _)| name.as_str() != index)
            .map(|(_, b)| b.bytes())
            .sum();
        if others + builder.bytes() > memory.limit_bytes {
            tracing::warn!(
                index,
                limit_mb = memory.limit_bytes >> 20,
                "index does not fit the memory budget; searching it with DuckDB"
            );
            self.builders.remove(index);
            memory.slots().insert(index.to_string(), Slot::OverBudget);
            return;
        }
        memory
            .slots()
            .insert(index.to_string(), Slot::Ready(builder.snapshot()));
    }
}

impl Change {
    fn index(&self) -> &str {
        match self {
            Change::Create { index, .. }
            | Change::Drop { index }
            | Change::Upsert { index, .. }
            | Change::Metadata { index, .. }
            | Change::Delete { index, .. } => index,
        }
    }

    fn apply_to(&self, builder: &mut Builder) {
        match self {
            Change::Upsert { rows, .. } => rows
                .iter()
                .for_each(|(id, v, m)| builder.upsert(id, v, m.clone())),
            Change::Metadata { id, metadata, .. } => builder.set_metadata(id, metadata.clone()),
            Change::Delete { ids, .. } => ids.iter().for_each(|id| builder.remove(id)),
            Change::Create { .. } | Change::Drop { .. } => {}
        }
    }
}
