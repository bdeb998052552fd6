//! The keyword side of the in-memory copy: per index, the field its rows keep their text in,
//! the analyzer of its language and the vocabulary ([`TextIndex`]); per chunk of rows, the
//! postings of those rows ([`ChunkPostings`]), published with the same snapshot as their
//! vectors; and exact BM25 over them ([`keyword_search`]).
//!
//! Postings follow the rows' positions, which only ever grow (an upsert appends the new
//! version and retires the old one in the liveness bitmap), so a chunk's postings are
//! appended to while it fills and frozen into one sorted array when it is full. Document
//! frequencies are counted over live rows at search time, in the same pass as the scores
//! read the postings, so a retired or deleted row never counts and nothing needs undoing.
//! N (rows with at least one term) and the sum of their lengths are kept by the snapshot.
//!
//! It must not know about DuckDB, the writer or MCP; BM25's formula is [`crate::store::text`]'s.

use std::collections::HashMap;
use std::sync::RwLock;

use super::index::{in_parts, MemoryIndex, Rows, CHUNK_ROWS};
use crate::store::metadata::Metadata;
use crate::store::text::{idf, term_weight, Analyzer, TextSettings};

/// A posting: the row's place in its chunk (8 bits) and the term's frequency (24 bits,
/// saturating: a term repeated 16 million times in one row scores as if it were less).
const ROW_BITS: u32 = 24;
const MAX_TF: u32 = (1 << ROW_BITS) - 1;
const _: () = assert!(CHUNK_ROWS <= 256, "a posting keeps the row in 8 bits");

fn pack(row: usize, tf: u32) -> u32 {
    ((row as u32) << ROW_BITS) | tf.min(MAX_TF)
}

fn unpack(posting: u32) -> (usize, u32) {
    ((posting >> ROW_BITS) as usize, posting & MAX_TF)
}

/// One index's text settings in memory: where a row's text is, how it becomes terms, and
/// the terms seen so far (ids never change meaning; a term no row has any more keeps its id).
#[derive(Debug)]
pub struct TextIndex {
    settings: TextSettings,
    analyzer: Analyzer,
    vocabulary: RwLock<Vocabulary>,
}

/// Term to number, and the bytes it takes, kept as terms come (the memory budget asks for
/// them after every commit: counting them then would walk every term each time).
#[derive(Debug, Default)]
struct Vocabulary {
    ids: HashMap<Box<str>, u32>,
    bytes: usize,
}

impl Vocabulary {
    /// The number of `term`, given the next one when it is new.
    fn id(&mut self, term: &str) -> u32 {
        if let Some(&id) = self.ids.get(term) {
            return id;
        }
        let id = self.ids.len() as u32;
        self.insert(term.into(), id);
        id
    }

    fn insert(&mut self, term: Box<str>, id: u32) {
        // The term's bytes, its box, its number, and the table's overhead per entry.
        self.bytes += term.len() + 16 + 4 + 8;
        self.ids.insert(term, id);
    }
}

/// A row's terms: each distinct term id with its count, and the row's length (repeats
/// counted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowTerms {
    pub len: u32,
    pub counts: Vec<(u32, u32)>,
}

/// A query's terms: each term id the index knows, with how often the query names it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryTerms {
    pub known: Vec<(u32, u32)>,
}

impl TextIndex {
    /// `None` when the settings keep no text.
    pub fn new(settings: &TextSettings) -> Option<TextIndex> {
        settings.field.as_ref()?;
        Some(TextIndex {
            analyzer: settings.analyzer(),
            vocabulary: RwLock::new(Vocabulary::default()),
            settings: settings.clone(),
        })
    }

    /// Terms in the vocabulary.
    pub fn len(&self) -> usize {
        self.vocabulary
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A renumbering of this vocabulary, for compaction: see [`Renumbering`].
    pub(super) fn renumbering(&self) -> Renumbering {
        Renumbering {
            new: vec![u32::MAX; self.len()],
            kept: 0,
        }
    }

    /// A copy holding only the terms `renumbering` kept, under their new numbers.
    pub(super) fn renumbered(&self, renumbering: &Renumbering) -> TextIndex {
        let vocabulary = self.vocabulary.read().unwrap_or_else(|p| p.into_inner());
        let mut fresh = Vocabulary::default();
        for (term, old) in &vocabulary.ids {
            if let Some(&new) = renumbering.new.get(*old as usize).filter(|n| **n != u32::MAX) {
                fresh.insert(term.clone(), new);
            }
        }
        TextIndex {
            analyzer: self.settings.analyzer(),
            vocabulary: RwLock::new(fresh),
            settings: self.settings.clone(),
        }
    }

    /// The terms of a row: those of its metadata's text field when that is a string.
    pub fn row_terms(&self, metadata: &Metadata) -> RowTerms {
        let field = self.settings.field.as_deref().unwrap_or_default();
        let Some(Metadata::Text(text)) = metadata.get(field) else {
            return RowTerms::default();
        };
        let terms = self.analyzer.terms(text);
        if terms.is_empty() {
            return RowTerms::default();
        }
        let mut counts: HashMap<u32, u32> = HashMap::new();
        {
            let mut vocabulary = self.vocabulary.write().unwrap_or_else(|p| p.into_inner());
            for term in &terms {
                *counts.entry(vocabulary.id(term)).or_default() += 1;
            }
        }
        let mut counts: Vec<(u32, u32)> = counts.into_iter().collect();
        counts.sort_unstable();
        RowTerms {
            len: terms.len() as u32,
            counts,
        }
    }

    /// The terms of a query text, in the analyzer of the index.
    pub fn query_terms(&self, text: &str) -> QueryTerms {
        let terms = self.analyzer.terms(text);
        let vocabulary = self.vocabulary.read().unwrap_or_else(|p| p.into_inner());
        let mut known: Vec<(u32, u32)> = Vec::new();
        for term in &terms {
            if let Some(&id) = vocabulary.ids.get(term.as_str()) {
                match known.iter_mut().find(|(t, _)| *t == id) {
                    Some((_, n)) => *n += 1,
                    None => known.push((id, 1)),
                }
            }
        }
        QueryTerms { known }
    }

    /// Bytes of the vocabulary (terms and table, estimated).
    pub fn bytes(&self) -> usize {
        self.vocabulary.read().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

/// Term numbers old to new, given as compaction meets the live rows' terms: the terms no live
/// row has are left out of the new vocabulary (texts long gone would otherwise keep theirs).
pub(super) struct Renumbering {
    /// By old number: the new one, `u32::MAX` while not met.
    new: Vec<u32>,
    kept: u32,
}

impl Renumbering {
    /// A row's terms under the new numbers (sorted again).
    pub(super) fn apply(&mut self, terms: &mut RowTerms) {
        for (term, _) in &mut terms.counts {
            let new = &mut self.new[*term as usize];
            if *new == u32::MAX {
                *new = self.kept;
                self.kept += 1;
            }
            *term = *new;
        }
        terms.counts.sort_unstable();
    }
}

/// The postings of one chunk's rows.
#[derive(Debug, Clone, Default)]
pub(super) struct ChunkPostings {
    /// Each row's length (0: no terms).
    lengths: Vec<u32>,
    /// While the chunk fills: term -> postings, rows ascending.
    open: HashMap<u32, Vec<u32>>,
    /// Once full: distinct terms ascending, where each one's postings start, and the
    /// postings one after the other.
    terms: Vec<u32>,
    starts: Vec<u32>,
    postings: Vec<u32>,
}

impl ChunkPostings {
    /// Add the chunk's next row.
    pub(super) fn push(&mut self, terms: &RowTerms) {
        let row = self.lengths.len();
        self.lengths.push(terms.len);
        for &(term, tf) in &terms.counts {
            self.open.entry(term).or_default().push(pack(row, tf));
        }
    }

    /// The chunk is full: keep its postings in one sorted array.
    pub(super) fn freeze(&mut self) {
        let mut open: Vec<(u32, Vec<u32>)> = std::mem::take(&mut self.open).into_iter().collect();
        open.sort_unstable_by_key(|(term, _)| *term);
        let total = open.iter().map(|(_, p)| p.len()).sum();
        self.terms = Vec::with_capacity(open.len());
        self.starts = Vec::with_capacity(open.len() + 1);
        self.postings = Vec::with_capacity(total);
        for (term, postings) in open {
            self.terms.push(term);
            self.starts.push(self.postings.len() as u32);
            self.postings.extend(postings);
        }
        self.starts.push(self.postings.len() as u32);
    }

    pub(super) fn len_of(&self, row: usize) -> u32 {
        self.lengths.get(row).copied().unwrap_or(0)
    }

    /// The postings of `term` in this chunk.
    fn of(&self, term: u32) -> &[u32] {
        if let Some(open) = self.open.get(&term) {
            return open;
        }
        match self.terms.binary_search(&term) {
            Ok(i) => &self.postings[self.starts[i] as usize..self.starts[i + 1] as usize],
            Err(_) => &[],
        }
    }

    /// Each row's terms again (for compaction, which moves rows to new positions).
    pub(super) fn rows(&self) -> Vec<RowTerms> {
        let mut rows: Vec<RowTerms> = self
            .lengths
            .iter()
            .map(|&len| RowTerms {
                len,
                counts: Vec::new(),
            })
            .collect();
        let frozen = self.terms.iter().enumerate().map(|(i, term)| {
            (
                *term,
                &self.postings[self.starts[i] as usize..self.starts[i + 1] as usize],
            )
        });
        let open = self.open.iter().map(|(term, p)| (*term, p.as_slice()));
        for (term, postings) in frozen.chain(open) {
            for &posting in postings {
                let (row, tf) = unpack(posting);
                rows[row].counts.push((term, tf));
            }
        }
        for row in &mut rows {
            row.counts.sort_unstable();
        }
        rows
    }

    /// Bytes held (open tables estimated).
    pub(super) fn bytes(&self) -> usize {
        let open: usize = self.open.values().map(|p| p.capacity() * 4 + 48).sum();
        self.lengths.capacity() * 4
            + open
            + (self.terms.capacity() + self.starts.capacity() + self.postings.capacity()) * 4
    }
}

/// A keyword hit: the row's position and its BM25 score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeywordScored {
    pub position: usize,
    pub score: f64,
}

/// Exact BM25 top-k of `query` over the live rows of `index` that `rows` lets through, best
/// first, equal scores by id; rows that match no term are not hits.
///
/// Two passes over the query terms' postings, each split over the search pool by ranges
/// of chunks (a chunk's rows are a range of positions, so each part scores its own rows
/// with no sharing): the first counts each term's live postings (its document frequency,
/// for the whole index), the second scores.
pub(super) fn keyword_search(
    index: &MemoryIndex,
    query: &QueryTerms,
    k: usize,
    rows: Rows<'_>,
    min_score: Option<f64>,
) -> Vec<KeywordScored> {
    let (n, total_len) = index.text_totals();
    if n == 0 || k == 0 || query.known.is_empty() {
        return Vec::new();
    }
    let n = n as f64;
    let avgdl = total_len as f64 / n;
    let live_postings = |term: u32, chunks: std::ops::Range<usize>| {
        chunks.flat_map(move |c| {
            index
                .chunk_postings(c)
                .of(term)
                .iter()
                .map(move |&p| {
                    let (row, tf) = unpack(p);
                    (c * CHUNK_ROWS + row, tf)
                })
                .filter(|(position, _)| index.is_live(*position))
        })
    };
    let counts = in_parts(index.chunk_count(), |chunks| {
        query
            .known
            .iter()
            .map(|&(term, _)| live_postings(term, chunks.clone()).count())
            .collect::<Vec<usize>>()
    });
    let weights: Vec<(u32, f64)> = query
        .known
        .iter()
        .enumerate()
        .filter_map(|(t, &(term, times))| {
            let df: usize = counts.iter().map(|c| c[t]).sum();
            (df > 0).then(|| (term, f64::from(times) * idf(n, df as f64)))
        })
        .collect();
    let parts = in_parts(index.chunk_count(), |chunks| {
        let first = chunks.start * CHUNK_ROWS;
        // One slot per row of these chunks, and the rows touched, in the order first scored.
        let mut scores = vec![0f64; chunks.len() * CHUNK_ROWS];
        let mut touched: Vec<usize> = Vec::new();
        for &(term, weight) in &weights {
            for (position, tf) in live_postings(term, chunks.clone()) {
                let dl = f64::from(index.text_len_of(position));
                let slot = &mut scores[position - first];
                // Every term's part is positive (idf > 0, tf >= 1): zero means not yet scored.
                if *slot == 0.0 {
                    touched.push(position);
                }
                *slot += weight * term_weight(f64::from(tf), dl, avgdl);
            }
        }
        touched
            .into_iter()
            .map(|position| KeywordScored {
                position,
                score: scores[position - first],
            })
            .filter(|h| min_score.is_none_or(|m| h.score >= m) && index.admits(rows, h.position))
            .collect::<Vec<_>>()
    });
    let mut hits: Vec<KeywordScored> = parts.into_iter().flatten().collect();
    let better = |a: &KeywordScored, b: &KeywordScored| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| index.id(a.position).cmp(index.id(b.position)))
    };
    if hits.len() > k {
        hits.select_nth_unstable_by(k - 1, better);
        hits.truncate(k);
    }
    hits.sort_by(better);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postings_keep_rows_and_counts_before_and_after_freezing() {
        let mut chunk = ChunkPostings::default();
        let a = RowTerms {
            len: 3,
            counts: vec![(1, 2), (7, 1)],
        };
        let b = RowTerms {
            len: 1,
            counts: vec![(7, 1)],
        };
        chunk.push(&a);
        chunk.push(&RowTerms::default());
        chunk.push(&b);
        let before = chunk.rows();
        assert_eq!(chunk.of(7), [pack(0, 1), pack(2, 1)]);
        chunk.freeze();
        assert_eq!(chunk.of(7), [pack(0, 1), pack(2, 1)]);
        assert_eq!(chunk.of(1), [pack(0, 2)]);
        assert!(chunk.of(3).is_empty());
        assert_eq!(chunk.rows(), before);
        assert_eq!(before, vec![a, RowTerms::default(), b]);
        assert_eq!(unpack(pack(255, u32::MAX)), (255, MAX_TF));
    }
}
