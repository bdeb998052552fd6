//! The int8 first pass against the f32 scan, on seeded random indexes: the same hits with
//! the same scores, bit for bit, whenever the quantized search answers, and it answers for
//! nearly every query on ordinary data. `QUANT_SEED=n` replays a run.

use std::collections::HashSet;

use super::index::*;
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
                    let min = (q % 5 == 4).then(|| reference.get(4).map_or(0.0, |h| h.score as f64 - 1e-3));
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
