//! The keyword index of one vector index: exact BM25 over the text each row keeps, with
//! Lucene's formula (k1 1.2, b 0.75; idf `ln(1 + (N - df + 0.5) / (df + 0.5))`, term part
//! `tf / (tf + k1 · (1 - b + b · dl / avgdl))`, summed over the query's terms as given).
//! N and avgdl count the documents that have at least one term, as Lucene counts a field's
//! documents; a filter narrows which documents are returned, never the statistics.
//!
//! Why our own postings rather than tantivy: tantivy stores each document's length as a
//! one-byte code, so its BM25 is close to, not exactly, the formula above; exact scores are
//! what the differential test holds us to (tests/bm25.rs, against bm25s).
//!
//! It owns the terms and postings of the rows it was given; it must not read or write the
//! store, and knows nothing of vectors. [`analyzer`] turns text into terms.

pub mod analyzer;

use std::collections::HashMap;

pub use analyzer::{Analyzer, LANGUAGES};

/// Lucene's defaults.
pub const K1: f64 = 1.2;
pub const B: f64 = 0.75;

/// One document's terms.
#[derive(Debug, Clone)]
struct Document {
    /// Number of terms, repeats counted.
    len: u32,
    /// Each distinct term and how often it occurs.
    counts: Vec<(String, u32)>,
}

/// A keyword hit: the row's id and its BM25 score.
#[derive(Debug, Clone, PartialEq)]
pub struct KeywordHit {
    pub id: String,
    pub score: f64,
}

/// Exact BM25 over the documents it holds, updated one row at a time.
#[derive(Debug, Clone, Default)]
pub struct KeywordIndex {
    documents: HashMap<String, Document>,
    /// term -> id -> term frequency.
    postings: HashMap<String, HashMap<String, u32>>,
    /// Sum of every document's length.
    total_len: u64,
}

impl KeywordIndex {
    /// Documents with at least one term.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// Set the terms of row `id` (its previous terms, if any, are forgotten). A row with no
    /// terms is not a document of the keyword index.
    pub fn put(&mut self, id: &str, terms: &[String]) {
        self.remove(id);
        if terms.is_empty() {
            return;
        }
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for term in terms {
            *counts.entry(term.as_str()).or_default() += 1;
        }
        let counts: Vec<(String, u32)> = counts.into_iter().map(|(t, n)| (t.to_string(), n)).collect();
        for (term, n) in &counts {
            self.postings
                .entry(term.clone())
                .or_default()
                .insert(id.to_string(), *n);
        }
        let len = terms.len() as u32;
        self.total_len += u64::from(len);
        self.documents.insert(id.to_string(), Document { len, counts });
    }

    /// Forget row `id`; nothing happens if it is not here.
    pub fn remove(&mut self, id: &str) {
        let Some(doc) = self.documents.remove(id) else {
            return;
        };
        self.total_len -= u64::from(doc.len);
        for (term, _) in doc.counts {
            if let Some(ids) = self.postings.get_mut(&term) {
                ids.remove(id);
                if ids.is_empty() {
                    self.postings.remove(&term);
                }
            }
        }
    }

    /// The `k` best documents for the query `terms` among those `keep` accepts, best first
    /// (equal scores by id); documents matching no term are not hits.
    pub fn search(&self, terms: &[String], k: usize, keep: impl Fn(&str) -> bool) -> Vec<KeywordHit> {
        let n = self.documents.len() as f64;
        if n == 0.0 || k == 0 {
            return Vec::new();
        }
        let avgdl = self.total_len as f64 / n;
        let mut scores: HashMap<&str, f64> = HashMap::new();
        for term in terms {
            let Some(ids) = self.postings.get(term) else {
                continue;
            };
            let df = ids.len() as f64;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for (id, tf) in ids {
                let tf = f64::from(*tf);
                let dl = f64::from(self.documents[id].len);
                *scores.entry(id.as_str()).or_default() += idf * tf / (tf + K1 * (1.0 - B + B * dl / avgdl));
            }
        }
        let mut hits: Vec<KeywordHit> = scores
            .into_iter()
            .filter(|(id, _)| keep(id))
            .map(|(id, score)| KeywordHit {
                id: id.to_string(),
                score,
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        hits.truncate(k);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn replacing_and_removing_rows_leaves_the_statistics_of_the_rows_left() {
        let mut index = KeywordIndex::default();
        index.put("a", &terms("sql job sql"));
        index.put("b", &terms("barista job"));
        index.put("a", &terms("rent lyon"));
        let mut fresh = KeywordIndex::default();
        fresh.put("b", &terms("barista job"));
        fresh.put("a", &terms("rent lyon"));
        let query = terms("job rent sql");
        assert_eq!(
            index.search(&query, 10, |_| true),
            fresh.search(&query, 10, |_| true)
        );
        index.remove("a");
        index.put("c", &[]);
        assert_eq!(index.len(), 1);
        assert_eq!(index.search(&terms("rent"), 10, |_| true), vec![]);
        let hits = index.search(&terms("job"), 10, |id| id != "b");
        assert!(hits.is_empty(), "a filter narrows the hits: {hits:?}");
    }
}
