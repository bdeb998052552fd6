//! Text: what an index does with the words its rows keep. The analyzer ([`analyzer`]: words
//! to terms, the same for documents and queries), BM25's formula, which a back-end with
//! postings applies exactly (the in-memory engine, `store/memory/terms.rs`), and the fusion
//! of a vector list with a keyword list ([`fusion`]).
//!
//! BM25 is Lucene's (k1 1.2, b 0.75; idf `ln(1 + (N - df + 0.5) / (df + 0.5))`, term part
//! `tf / (tf + k1 · (1 - b + b · dl / avgdl))`, summed over the query's terms as given). N
//! and avgdl count the documents that have at least one term, as Lucene counts a field's
//! documents; a filter narrows which documents are returned, never the statistics.
//!
//! Why our own postings rather than tantivy: tantivy stores each document's length as a
//! one-byte code, so its BM25 is close to, not exactly, the formula above; exact scores are
//! what the differential test holds us to (tests/bm25.rs, against bm25s).
//!
//! It owns no rows and reads no store: it must not know about vectors, SQL or MCP.

pub mod analyzer;
pub mod fusion;

pub use analyzer::{Analyzer, LANGUAGES};

use super::api::StoreError;

/// Lucene's defaults.
pub const K1: f64 = 1.2;
pub const B: f64 = 0.75;

/// Where an index keeps a row's text unless told otherwise: Mastra's convention.
pub const DEFAULT_FIELD: &str = "text";
/// The language of an index unless told otherwise.
pub const DEFAULT_LANGUAGE: &str = "english";
/// Most query terms a keyword search takes (more are refused, naming the count).
pub const MAX_QUERY_TERMS: usize = 1024;

/// BM25's inverse document frequency of a term found in `df` of `n` documents.
pub fn idf(n: f64, df: f64) -> f64 {
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// BM25's weight of a term occurring `tf` times in a document of `dl` terms.
pub fn term_weight(tf: f64, dl: f64, avgdl: f64) -> f64 {
    tf / (tf + K1 * (1.0 - B + B * dl / avgdl))
}

/// What an index does with text: the metadata field that holds a row's text (`None`: the
/// index keeps no text and has no keyword search) and the language of its analyzer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSettings {
    pub field: Option<String>,
    pub language: String,
}

impl Default for TextSettings {
    fn default() -> Self {
        TextSettings {
            field: Some(DEFAULT_FIELD.to_string()),
            language: DEFAULT_LANGUAGE.to_string(),
        }
    }
}

/// What `create_index` asks of an index's text, part by part: a part left out takes the
/// default on a new index and what the index has on an existing one (so a caller that never
/// names them, as Mastra's `createIndex`, can repeat the call on any index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextRequest {
    /// `Some(None)`: keep no text.
    pub field: Option<Option<String>>,
    pub language: Option<String>,
}

impl TextRequest {
    /// The settings of a new index made with this request.
    pub fn settings(&self) -> TextSettings {
        let defaults = TextSettings::default();
        TextSettings {
            field: self.field.clone().unwrap_or(defaults.field),
            language: self.language.clone().unwrap_or(defaults.language),
        }
    }
}

impl TextSettings {
    /// Check a field name and a language as given to `create_index`. A field is a plain
    /// metadata key (letters, digits, underscores; 1 to 63): PostgreSQL's keyword index
    /// names it in its definition, so it must need no quoting.
    pub fn validate(&self) -> Result<(), StoreError> {
        if let Some(field) = &self.field {
            let mut chars = field.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && field.len() <= 63;
            if !ok {
                return Err(StoreError::invalid(format!(
                    "text_field: {field:?} is not a plain metadata key: use 1 to 63 letters, digits or underscores, not starting with a digit (or null to keep no text)"
                )));
            }
        }
        if !LANGUAGES.contains(&self.language.as_str()) {
            return Err(StoreError::invalid(format!(
                "language: {:?} is not one of {}",
                self.language,
                LANGUAGES.join(", ")
            )));
        }
        Ok(())
    }

    /// The analyzer of this language (checked by [`Self::validate`]; an unknown one read
    /// from a file edited by hand analyses as `none`).
    pub fn analyzer(&self) -> Analyzer {
        Analyzer::new(&self.language).unwrap_or_else(|_| Analyzer::none())
    }
}
