//! Long texts in pieces: a text longer than the model's window is split into overlapping
//! pieces that each fit it. A piece ends at a sentence end (UAX #29 sentence boundaries)
//! whenever whole sentences fit; a sentence longer than the window is cut between words
//! (UAX #29 word boundaries); a single word longer than the window, between characters. The
//! next piece starts with the previous one's last sentences (or words), as many as fit in
//! `overlap` tokens, so a sentence cut off at a piece's end is read whole by the next one.
//!
//! It owns the splitting only: counting tokens is the caller's (the embedder's tokenizer),
//! and what becomes of the pieces is the pipeline's and the store's (`store::chunks`).

use unicode_segmentation::UnicodeSegmentation;

/// A piece of a text: its byte span (`text[start..end]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub start: usize,
    pub end: usize,
}

/// Split `text` into pieces of at most `window` tokens each (as `tokens` counts them), each
/// starting with up to `overlap` tokens of the previous one. A text that fits is one piece.
/// The pieces cover the text in order, and each starts after the previous one's start.
pub fn split(text: &str, window: usize, overlap: usize, tokens: impl Fn(&str) -> usize) -> Vec<Piece> {
    let window = window.max(1);
    if text.is_empty() || tokens(text) <= window {
        return vec![Piece {
            start: 0,
            end: text.len(),
        }];
    }
    let units = units(text, window, &tokens);
    let counts: Vec<usize> = units.iter().map(|u| tokens(&text[u.start..u.end])).collect();
    let mut pieces = Vec::new();
    let mut first = 0;
    loop {
        // As many whole units as fit, at least one (each fits on its own).
        let mut last = first;
        let mut sum = counts[first];
        while last + 1 < units.len() && sum + counts[last + 1] <= window {
            last += 1;
            sum += counts[last];
        }
        // Counts of units need not add up exactly (a tokenizer may merge across a
        // boundary): check the piece itself and give back units until it fits.
        while last > first && tokens(&text[units[first].start..units[last].end]) > window {
            last -= 1;
        }
        pieces.push(Piece {
            start: units[first].start,
            end: units[last].end,
        });
        if last + 1 == units.len() {
            return pieces;
        }
        // The next piece starts with the last units of this one that fit in `overlap`,
        // always after this one's start, and leaving room for the unit after this one (so
        // every piece goes further than the last).
        let mut next = last + 1;
        let mut carried = 0;
        while next > first + 1
            && carried + counts[next - 1] <= overlap
            && carried + counts[next - 1] + counts[last + 1] <= window
        {
            next -= 1;
            carried += counts[next];
        }
        first = next;
    }
}

/// The text in consecutive units of at most `window` tokens: sentences, or the words of a
/// sentence too long, or the characters of a word too long.
fn units(text: &str, window: usize, tokens: &impl Fn(&str) -> usize) -> Vec<Piece> {
    let mut out = Vec::new();
    for (start, sentence) in text.split_sentence_bound_indices() {
        if tokens(sentence) <= window {
            out.push(Piece {
                start,
                end: start + sentence.len(),
            });
            continue;
        }
        let words = sentence
            .split_word_bound_indices()
            .map(|(at, word)| (start + at, word));
        group(words, window, tokens, &mut out, |at, word, out| {
            let chars = word
                .char_indices()
                .map(|(i, c)| (at + i, &word[i..i + c.len_utf8()]));
            group(chars, window, tokens, out, |at, c, out| {
                // One character over the window: it goes alone (nothing smaller exists).
                out.push(Piece {
                    start: at,
                    end: at + c.len(),
                })
            });
        });
    }
    out
}

/// Greedily group consecutive `parts` (position, text) into units of at most `window`
/// tokens; a part alone over the window goes to `too_big`.
fn group<'a>(
    parts: impl Iterator<Item = (usize, &'a str)>,
    window: usize,
    tokens: &impl Fn(&str) -> usize,
    out: &mut Vec<Piece>,
    too_big: impl Fn(usize, &'a str, &mut Vec<Piece>),
) {
    let mut current: Option<(usize, usize, String)> = None;
    for (at, part) in parts {
        if tokens(part) > window {
            if let Some((start, end, _)) = current.take() {
                out.push(Piece { start, end });
            }
            too_big(at, part, out);
            continue;
        }
        match &mut current {
            Some((_, end, joined)) if tokens(&format!("{joined}{part}")) <= window => {
                joined.push_str(part);
                *end = at + part.len();
            }
            _ => {
                if let Some((start, end, _)) = current.take() {
                    out.push(Piece { start, end });
                }
                current = Some((at, at + part.len(), part.to_string()));
            }
        }
    }
    if let Some((start, end, _)) = current {
        out.push(Piece { start, end });
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    /// What every split must be: pieces within the window, in order, covering the text, and
    /// each overlapping the previous by at most `overlap` tokens.
    fn check(text: &str, window: usize, overlap: usize, pieces: &[Piece], what: &str) {
        assert_eq!(pieces.first().map(|p| p.start), Some(0), "{what}");
        assert_eq!(pieces.last().map(|p| p.end), Some(text.len()), "{what}");
        for p in pieces {
            assert!(p.start < p.end || text.is_empty(), "{what}: empty piece {p:?}");
            let n = words(&text[p.start..p.end]);
            // A single word is never cut by this counter (a word is one token).
            assert!(n <= window, "{what}: {n} tokens in {p:?}");
        }
        for pair in pieces.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                b.start > a.start && b.start <= a.end,
                "{what}: {a:?} then {b:?} leaves a gap or goes back"
            );
            assert!(b.end > a.end, "{what}: {b:?} does not go past {a:?}");
            let shared = words(&text[b.start..a.end]);
            assert!(
                shared <= overlap,
                "{what}: {shared} tokens shared by {a:?} and {b:?}"
            );
        }
    }

    #[test]
    fn a_text_that_fits_is_one_piece() {
        let text = "One sentence. Two sentences.";
        assert_eq!(
            split(text, 10, 2, words),
            [Piece {
                start: 0,
                end: text.len()
            }]
        );
        assert_eq!(split("", 10, 2, words), [Piece { start: 0, end: 0 }]);
    }

    #[test]
    fn pieces_end_at_sentence_ends_and_overlap_by_whole_sentences() {
        let text = "Alpha beta gamma. Delta epsilon. Zeta eta theta iota. Kappa lambda. Mu nu xi.";
        let pieces = split(text, 6, 3, words);
        check(text, 6, 3, &pieces, "sentences");
        let texts: Vec<&str> = pieces.iter().map(|p| &text[p.start..p.end]).collect();
        assert_eq!(
            texts,
            [
                "Alpha beta gamma. Delta epsilon. ",
                "Delta epsilon. Zeta eta theta iota. ",
                "Kappa lambda. Mu nu xi."
            ]
        );
    }

    #[test]
    fn a_sentence_over_the_window_is_cut_between_words() {
        let text = "one two three four five six seven eight nine ten eleven twelve.";
        let pieces = split(text, 4, 1, words);
        check(text, 4, 1, &pieces, "one long sentence");
        for p in &pieces {
            let piece = &text[p.start..p.end];
            assert!(
                !piece.starts_with(char::is_whitespace) || p.start == 0,
                "{piece:?}"
            );
        }
    }

    #[test]
    fn seeded_random_texts_split_within_the_window_in_order_and_overlapping_at_most_as_asked() {
        let vocabulary = ["a", "bb", "ccc", "dé", "e-f", "42", "Zoë"];
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut text = String::new();
            for _ in 0..rng.random_range(1..60) {
                for w in 0..rng.random_range(1..25) {
                    if w > 0 {
                        text.push(' ');
                    }
                    text.push_str(vocabulary[rng.random_range(0..vocabulary.len())]);
                }
                text.push_str([". ", "! ", "? ", "\n\n"][rng.random_range(0..4)]);
            }
            let window = rng.random_range(3..40);
            let overlap = rng.random_range(0..window);
            let pieces = split(&text, window, overlap, words);
            check(&text, window, overlap, &pieces, &format!("seed {seed}"));
        }
    }
}
