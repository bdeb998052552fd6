//! One index's in-memory snapshot ([`MemoryIndex`], immutable once published), the
//! [`Builder`] the writer keeps it with, and the scan kernels a search runs over it: the
//! f32 and int8 scans, their split across the search pool, the candidate bound that keeps an
//! int8 scan exact, and top-k.
//!
//! It must not know about DuckDB or the writer: rows come in through [`Builder`], and what a
//! filter means is [`crate::store::filter`]'s.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use rayon::prelude::*;

use super::columns::{self, Columns, Mask};
use super::quantized::{self, QueryCode, RowCode};
use super::terms::{self, ChunkPostings, KeywordScored, QueryTerms, RowTerms, TextIndex};
use crate::store::api::Metric;
use crate::store::filter::Filter;
use crate::store::metadata::Metadata;
use crate::store::text::TextSettings;

/// Rows below which one thread scans alone: splitting costs more than it saves.
pub(super) const PARALLEL_MIN_ROWS: usize = 16_384;
/// Smallest share of a split scan: small enough to balance between busy threads.
pub(super) const PART_MIN_ROWS: usize = 8_192;
/// Rows per chunk: the most a single-row upsert copies (1.25 MiB at 1024 dimensions), and the
/// rows one filter mask covers.
pub(super) const CHUNK_ROWS: usize = columns::ROWS;
/// Rows from which a search scans the int8 codes first (a quarter of the bytes) and
/// rescores the best candidates in f32; below it, the f32 scan alone is as fast.
pub(super) const QUANTIZED_MIN_ROWS: usize = 65_536;
/// Candidates rescored in f32 beyond `k`: enough that the bound nearly always proves the
/// answer exact, few enough to cost nothing next to the scan.
pub(super) const EXTRA_CANDIDATES: usize = 64;

/// Rows of one chunk: vectors row-major (unit length for cosine; a zero vector stays zero),
/// their int8 codes (row-major too) with each row's [`RowCode`], and each row's stored
/// metadata; once the chunk is full (and so never changes again), that metadata in columns
/// too, which answer a filter for the whole chunk at once.
#[derive(Debug, Clone, Default)]
pub(super) struct Chunk {
    ids: Vec<String>,
    data: Vec<f32>,
    codes: Vec<i8>,
    code: Vec<RowCode>,
    metadata: Vec<Metadata>,
    columns: Option<Columns>,
    /// The rows' keyword postings (empty when the index keeps no text).
    postings: ChunkPostings,
}

/// One index in memory, as of one commit. Cloning it is cheap (it shares its chunks).
#[derive(Debug, Clone)]
pub struct MemoryIndex {
    metric: Metric,
    dimension: usize,
    chunks: Vec<Arc<Chunk>>,
    /// Rows stored, live or dead.
    pub(super) rows: usize,
    /// One bit per stored row: set while the row is the current version of its id.
    live: Arc<Vec<u64>>,
    live_rows: usize,
    /// Bytes of the metadata of every stored row, live or dead, and of the chunks' columns.
    metadata_bytes: usize,
    /// The keyword side, when the index keeps text.
    text: Option<Arc<TextIndex>>,
    /// Live rows with at least one term, and the sum of their lengths: BM25's N and avgdl.
    text_docs: usize,
    text_len: u64,
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
            text: None,
            text_docs: 0,
            text_len: 0,
        }
    }

    /// The keyword side, when the index keeps text.
    pub fn text(&self) -> Option<&TextIndex> {
        self.text.as_deref()
    }

    /// Live rows with terms, and the sum of their lengths.
    pub(super) fn text_totals(&self) -> (usize, u64) {
        (self.text_docs, self.text_len)
    }

    pub(super) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub(super) fn chunk_postings(&self, c: usize) -> &ChunkPostings {
        &self.chunks[c].postings
    }

    /// Terms in the row at `position` (repeats counted).
    pub(super) fn text_len_of(&self, position: usize) -> u32 {
        self.chunks[position / CHUNK_ROWS]
            .postings
            .len_of(position % CHUNK_ROWS)
    }

    /// Exact BM25 top-k of a query's terms over the live rows `rows` lets through (see
    /// [`terms::keyword_search`]); nothing when the index keeps no text.
    pub fn keyword_search(
        &self,
        query: &QueryTerms,
        k: usize,
        rows: Rows<'_>,
        min_score: Option<f64>,
    ) -> Vec<KeywordScored> {
        terms::keyword_search(self, query, k, rows, min_score)
    }

    /// Bytes of the keyword side: postings, lengths and vocabulary.
    pub fn text_bytes(&self) -> usize {
        match &self.text {
            None => 0,
            Some(text) => text.bytes() + self.chunks.iter().map(|c| c.postings.bytes()).sum::<usize>(),
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

    pub(super) fn vector(&self, position: usize) -> &[f32] {
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

    pub(super) fn is_live(&self, position: usize) -> bool {
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
    pub(super) fn admits(&self, rows: Rows<'_>, position: usize) -> bool {
        match rows {
            Rows::All => true,
            Rows::Matching(filter) => filter.matches(self.metadata(position)),
            Rows::Allowed(ids) => ids.contains(self.id(position)),
        }
    }

    /// Bytes held: vectors, ids and metadata of every stored row (an estimate of their
    /// overhead included), and the liveness bitmap.
    pub fn bytes(&self) -> usize {
        self.rows * Self::row_bytes(self.dimension)
            + self.metadata_bytes
            + self.live.len() * 8
            + self.text_bytes()
    }

    /// Bytes one more row of this width costs before its metadata, for the memory budget:
    /// its f32 vector, its int8 codes and their [`RowCode`], and the id and bookkeeping.
    pub fn row_bytes(dimension: usize) -> usize {
        dimension * 5 + 12 + 96
    }

    /// The terms a row's metadata gives (none when the index keeps no text).
    fn row_terms(&self, metadata: &Metadata) -> RowTerms {
        self.text
            .as_ref()
            .map_or_else(RowTerms::default, |t| t.row_terms(metadata))
    }

    /// Append a row already normalised for the metric, with its terms.
    fn push_prepared(&mut self, id: &str, row: &[f32], metadata: Metadata, terms: &RowTerms) -> usize {
        let position = self.rows;
        if position.is_multiple_of(CHUNK_ROWS) {
            self.chunks.push(Arc::new(Chunk {
                ids: Vec::with_capacity(CHUNK_ROWS),
                data: Vec::with_capacity(CHUNK_ROWS * self.dimension),
                codes: Vec::with_capacity(CHUNK_ROWS * self.dimension),
                code: Vec::with_capacity(CHUNK_ROWS),
                metadata: Vec::with_capacity(CHUNK_ROWS),
                columns: None,
                postings: ChunkPostings::default(),
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
        chunk.postings.push(terms);
        if chunk.metadata.len() == CHUNK_ROWS {
            let columns = Columns::build(&chunk.metadata);
            self.metadata_bytes += columns.bytes();
            chunk.columns = Some(columns);
            chunk.postings.freeze();
        }
        if terms.len > 0 {
            self.text_docs += 1;
            self.text_len += u64::from(terms.len);
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
            let len = self.text_len_of(position);
            if len > 0 {
                self.text_docs -= 1;
                self.text_len -= u64::from(len);
            }
        }
    }

    pub(super) fn prepare(&self, vector: &[f32]) -> Vec<f32> {
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
    pub(super) fn search_f32(
        &self,
        query: &[f32],
        k: usize,
        rows: Rows<'_>,
        min_score: Option<f64>,
    ) -> Vec<Scored> {
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
    pub(super) fn search_quantized(
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
    /// An index that keeps no text.
    pub fn new(dimension: usize, metric: Metric) -> Self {
        Builder {
            index: MemoryIndex::new(dimension, metric),
            positions: HashMap::new(),
        }
    }

    /// An index whose rows keep their text as `text` says, with its keyword side.
    pub fn with_text(dimension: usize, metric: Metric, text: &TextSettings) -> Self {
        let mut builder = Builder::new(dimension, metric);
        builder.index.text = TextIndex::new(text).map(Arc::new);
        builder
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
        let terms = self.index.row_terms(&metadata);
        self.upsert_with_terms(id, vector, metadata, &terms);
        self.compact_if_worth_it();
    }

    /// [`Self::upsert`] of many rows, in order, their texts analysed on every core first
    /// (the analysis is most of a text row's cost; the rest is a copy).
    pub fn upsert_many<'a>(&mut self, rows: impl IntoIterator<Item = (&'a str, &'a [f32], Metadata)>) {
        let rows: Vec<(&str, &[f32], Metadata)> = rows.into_iter().collect();
        let terms: Vec<RowTerms> = match &self.index.text {
            Some(text) if rows.len() > 1 => rows.par_iter().map(|(_, _, m)| text.row_terms(m)).collect(),
            _ => rows.iter().map(|(_, _, m)| self.index.row_terms(m)).collect(),
        };
        for ((id, vector, metadata), terms) in rows.into_iter().zip(&terms) {
            self.upsert_with_terms(id, vector, metadata, terms);
        }
        // After the whole batch: compaction renumbers terms, which the batch's were not.
        self.compact_if_worth_it();
    }

    fn upsert_with_terms(&mut self, id: &str, vector: &[f32], metadata: Metadata, terms: &RowTerms) {
        if let Some(old) = self.positions.get(id).copied() {
            self.index.kill(old);
        }
        let row = self.index.prepare(vector);
        let position = self.index.push_prepared(id, &row, metadata, terms);
        self.positions.insert(id.to_string(), position);
    }

    /// Give `id` new metadata: the row is appended again with its vector, the old one
    /// retired (the same path as an upsert, so a snapshot never changes in place).
    pub fn set_metadata(&mut self, id: &str, metadata: Metadata) {
        let Some(old) = self.positions.get(id).copied() else {
            return;
        };
        let row = self.index.vector(old).to_vec();
        self.index.kill(old);
        let terms = self.index.row_terms(&metadata);
        let position = self.index.push_prepared(id, &row, metadata, &terms);
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
        // Terms are renumbered as the live rows are met; the vocabulary keeps those only.
        let mut renumbering = self.index.text.as_ref().map(|text| text.renumbering());
        let old = std::mem::replace(&mut self.index, empty);
        self.positions.clear();
        for (c, chunk) in old.chunks.iter().enumerate() {
            // Terms move with their rows: no text is analysed again.
            let terms = chunk.postings.rows();
            for (row, mut terms) in terms.into_iter().enumerate() {
                let position = c * CHUNK_ROWS + row;
                if !old.is_live(position) {
                    continue;
                }
                if let Some(renumbering) = &mut renumbering {
                    renumbering.apply(&mut terms);
                }
                // Rows are stored prepared: copy them as they are, not normalised again.
                let new_position = self.index.push_prepared(
                    old.id(position),
                    old.vector(position),
                    old.metadata(position).clone(),
                    &terms,
                );
                self.positions.insert(old.id(position).to_string(), new_position);
            }
        }
        if let (Some(text), Some(renumbering)) = (&old.text, &renumbering) {
            self.index.text = Some(Arc::new(text.renumbered(renumbering)));
        }
    }
}

/// One search's parameters, shared by the serial and the parallel scan.
pub(super) struct Scan<'a> {
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
pub(super) fn in_parts<T: Send>(chunks: usize, scan: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
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
pub(super) struct CandidateScan<'a> {
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
pub(super) struct Candidates {
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
pub(super) struct BoundHeap {
    keep: usize,
    heap: BinaryHeap<std::cmp::Reverse<(OrderedBound, usize)>>,
    best_left_out: Option<f64>,
}

/// An f64 bound ordered totally (bounds are never NaN: they come from finite rows).
#[derive(Clone, Copy, PartialEq)]
pub(super) struct OrderedBound(f64);
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
pub(super) struct TopK<'a> {
    index: &'a MemoryIndex,
    k: usize,
    heap: BinaryHeap<Ranked<'a>>,
}

pub(super) struct Ranked<'a> {
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

pub(super) fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
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

pub(super) fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = dot(v, v).sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| x / norm).collect()
}
