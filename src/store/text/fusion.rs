//! Hybrid search's last step: two ranked lists of one search (the vector list and the
//! keyword list, each already filtered and cut by `min_score`) become one, by reciprocal
//! rank fusion or by a weighted sum of normalised scores. Each fused hit keeps where each
//! list ranked and scored it.
//!
//! It sees ids and scores only: it must not know where the lists came from.

use std::collections::HashMap;

use crate::store::api::{Found, FoundBy, Fusion};

/// Candidates each list of a hybrid search brings to the fusion: at least this many, and
/// never fewer than the search's `top_k`.
const DEPTH: usize = 100;

/// How deep each list of a hybrid search of `top_k` results is read.
pub fn depth(top_k: usize) -> usize {
    top_k.max(DEPTH)
}

/// One fused hit: its id, its fused score, and what each list said of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub id: String,
    pub score: f64,
    pub found_by: FoundBy,
}

/// Fuse two lists (each best first, ids distinct) and keep the best `top_k`: higher fused
/// score first, equal scores by id.
///
/// - RRF: `Σ 1 / (k + rank)` over the lists that found the id (rank from 1).
/// - Weighted: each list's scores are scaled to [0, 1] by its own minimum and maximum (all
///   1 when they are equal), then `w · vector + (1 - w) · keyword`, 0 for a list that did
///   not find the id.
pub fn fuse(vector: &[(String, f64)], keyword: &[(String, f64)], fusion: Fusion, top_k: usize) -> Vec<Fused> {
    let mut fused: HashMap<&str, Fused> = HashMap::new();
    for (list, is_vector) in [(vector, true), (keyword, false)] {
        let (min, max) = list
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, s)| {
                (lo.min(*s), hi.max(*s))
            });
        for (i, (id, score)) in list.iter().enumerate() {
            let rank = i + 1;
            let part = match fusion {
                Fusion::Rrf { k } => 1.0 / (k + rank as f64),
                Fusion::Weighted { vector_weight } => {
                    let normalised = if max > min {
                        (score - min) / (max - min)
                    } else {
                        1.0
                    };
                    let weight = if is_vector {
                        vector_weight
                    } else {
                        1.0 - vector_weight
                    };
                    weight * normalised
                }
            };
            let entry = fused.entry(id.as_str()).or_insert_with(|| Fused {
                id: id.clone(),
                score: 0.0,
                found_by: FoundBy::default(),
            });
            entry.score += part;
            let found = Some(Found { rank, score: *score });
            if is_vector {
                entry.found_by.vector = found;
            } else {
                entry.found_by.keyword = found;
            }
        }
    }
    let mut hits: Vec<Fused> = fused.into_values().collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    hits.truncate(top_k);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[(&str, f64)]) -> Vec<(String, f64)> {
        items.iter().map(|(id, s)| (id.to_string(), *s)).collect()
    }

    #[test]
    fn rrf_adds_reciprocal_ranks_and_keeps_each_lists_rank_and_score() {
        let v = list(&[("a", 0.9), ("b", 0.8), ("c", 0.1)]);
        let k = list(&[("c", 7.0), ("a", 2.0)]);
        let hits = fuse(&v, &k, Fusion::Rrf { k: 60.0 }, 10);
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        assert!((hits[0].score - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-12);
        assert!((hits[1].score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
        assert_eq!(hits[1].found_by.keyword, Some(Found { rank: 1, score: 7.0 }));
        assert_eq!(hits[2].found_by.keyword, None);
        assert_eq!(fuse(&v, &k, Fusion::Rrf { k: 60.0 }, 1).len(), 1);
    }

    #[test]
    fn weighted_normalises_each_list_and_mixes_by_the_weight() {
        let v = list(&[("a", 0.9), ("b", 0.5)]);
        let k = list(&[("b", 10.0), ("c", 4.0), ("a", 1.0)]);
        let hits = fuse(&v, &k, Fusion::Weighted { vector_weight: 0.7 }, 10);
        let score = |id: &str| hits.iter().find(|h| h.id == id).unwrap().score;
        assert!((score("a") - 0.7).abs() < 1e-12, "a: 0.7·1 + 0.3·0");
        assert!((score("b") - 0.3).abs() < 1e-12, "b: 0.7·0 + 0.3·1");
        assert!(
            (score("c") - 0.3 * 3.0 / 9.0).abs() < 1e-12,
            "c: 0.3·(4-1)/(10-1)"
        );
        let only_keyword = fuse(&[], &k, Fusion::Weighted { vector_weight: 0.0 }, 10);
        assert_eq!(only_keyword[0].id, "b");
        let single = fuse(
            &list(&[("x", 0.2)]),
            &[],
            Fusion::Weighted { vector_weight: 0.5 },
            10,
        );
        assert!(
            (single[0].score - 0.5).abs() < 1e-12,
            "one score alone normalises to 1"
        );
    }
}
