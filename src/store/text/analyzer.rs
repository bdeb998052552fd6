//! Text to index terms, the same way for documents and queries: Unicode word segmentation
//! (UAX #29), lowercase, stop words dropped and Snowball stemming in the index's language,
//! then accents folded (NFKD without combining marks). Stemming comes before folding because
//! the Snowball rules of languages such as French read the accents.
//!
//! It owns only this pipeline; it must not know about indexes, rows or scoring.

use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

/// The languages an index may name: every Snowball stemmer, and `none` (words are only
/// lowercased and folded; no stop words, no stemming).
pub const LANGUAGES: &[&str] = &[
    "none",
    "arabic",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hungarian",
    "italian",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "spanish",
    "swedish",
    "tamil",
    "turkish",
];

/// One language's analyzer.
pub struct Analyzer {
    stemmer: Option<Stemmer>,
    stop_words: std::collections::HashSet<String>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("stems", &self.stemmer.is_some())
            .field("stop_words", &self.stop_words.len())
            .finish()
    }
}

impl Analyzer {
    /// The analyzer of `language` (one of [`LANGUAGES`]); the error names the choices.
    pub fn new(language: &str) -> Result<Analyzer, String> {
        let algorithm = match language {
            "none" => None,
            "arabic" => Some(Algorithm::Arabic),
            "danish" => Some(Algorithm::Danish),
            "dutch" => Some(Algorithm::Dutch),
            "english" => Some(Algorithm::English),
            "finnish" => Some(Algorithm::Finnish),
            "french" => Some(Algorithm::French),
            "german" => Some(Algorithm::German),
            "greek" => Some(Algorithm::Greek),
            "hungarian" => Some(Algorithm::Hungarian),
            "italian" => Some(Algorithm::Italian),
            "norwegian" => Some(Algorithm::Norwegian),
            "portuguese" => Some(Algorithm::Portuguese),
            "romanian" => Some(Algorithm::Romanian),
            "russian" => Some(Algorithm::Russian),
            "spanish" => Some(Algorithm::Spanish),
            "swedish" => Some(Algorithm::Swedish),
            "tamil" => Some(Algorithm::Tamil),
            "turkish" => Some(Algorithm::Turkish),
            other => {
                return Err(format!(
                    "language: {other:?} is not one of {}",
                    LANGUAGES.join(", ")
                ))
            }
        };
        let stop_words = stop_words(language).iter().map(|w| w.to_string()).collect();
        Ok(Analyzer {
            stemmer: algorithm.map(Stemmer::create),
            stop_words,
        })
    }

    /// Words lowercased and folded, nothing dropped or stemmed (the language `none`).
    pub fn none() -> Analyzer {
        Analyzer {
            stemmer: None,
            stop_words: Default::default(),
        }
    }

    /// The terms of `text`, in order, repeats kept (they are the term frequencies).
    pub fn terms(&self, text: &str) -> Vec<String> {
        text.unicode_words()
            .filter_map(|word| {
                let lower = word.to_lowercase();
                if self.stop_words.contains(&lower) {
                    return None;
                }
                let stemmed = match &self.stemmer {
                    Some(stemmer) => stemmer.stem(&lower).into_owned(),
                    None => lower,
                };
                let folded: String = stemmed.nfkd().filter(|c| !is_combining_mark(*c)).collect();
                (!folded.is_empty()).then_some(folded)
            })
            .collect()
    }
}

/// Stop words: Lucene's English set (the `StandardAnalyzer`'s 33 words) and French's
/// (Snowball's list, short forms); other languages are stemmed without a stop list.
fn stop_words(language: &str) -> &'static [&'static str] {
    match language {
        "english" => &[
            "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
            "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they",
            "this", "to", "was", "will", "with",
        ],
        "french" => &[
            "au", "aux", "avec", "ce", "ces", "dans", "de", "des", "du", "elle", "en", "et", "eux", "il",
            "je", "la", "le", "les", "leur", "lui", "ma", "mais", "me", "même", "mes", "moi", "mon", "ne",
            "nos", "notre", "nous", "on", "ou", "par", "pas", "pour", "qu", "que", "qui", "sa", "se", "ses",
            "son", "sur", "ta", "te", "tes", "toi", "ton", "tu", "un", "une", "vos", "votre", "vous", "c",
            "d", "j", "l", "à", "m", "n", "s", "t", "y", "été", "est", "sont",
        ],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_drops_stop_words_stems_and_folds() {
        let a = Analyzer::new("english").unwrap();
        assert_eq!(
            a.terms("The runners were Running to the café, XK-42b!"),
            ["runner", "were", "run", "cafe", "xk", "42b"]
        );
    }

    #[test]
    fn french_stems_before_folding_and_queries_match_documents() {
        let a = Analyzer::new("french").unwrap();
        let doc = a.terms("Les étudiantes cherchent un emploi à Lyon");
        let query = a.terms("étudiante Emploi");
        assert!(query.iter().all(|t| doc.contains(t)), "{doc:?} {query:?}");
        assert!(!doc.iter().any(|t| t == "les" || t == "un"), "{doc:?}");
    }

    #[test]
    fn none_only_lowercases_and_folds_and_unknown_languages_are_named() {
        let a = Analyzer::new("none").unwrap();
        assert_eq!(a.terms("The Zoë ÉTÉ"), ["the", "zoe", "ete"]);
        let err = Analyzer::new("klingon").err().unwrap();
        assert!(
            err.starts_with("language: \"klingon\" is not one of none, arabic"),
            "{err}"
        );
    }
}
