//! The in-memory engine against brute force on seeded random indexes: scores, order, filters, and snapshots under writes.

use std::collections::HashSet;

use super::index::*;
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

#[test]
fn compaction_forgets_the_terms_no_live_row_has_and_keeps_the_rest_searchable() {
    use crate::store::text::TextSettings;
    let settings = TextSettings {
        field: Some("text".into()),
        language: "none".into(),
    };
    let mut idx = Builder::with_text(2, Metric::Cosine, &settings);
    let text = |t: String| Metadata::from(&serde_json::json!({ "text": t }));
    // Each of 8 ids rewritten 1,000 times with a text of its own unique token: without
    // compaction's renumbering the vocabulary would keep all 8,000.
    for round in 0..1000 {
        let rows: Vec<(String, Metadata)> = (0..8)
            .map(|i| (format!("d{i}"), text(format!("common u{round}x{i}"))))
            .collect();
        idx.upsert_many(
            rows.iter()
                .map(|(id, m)| (id.as_str(), &[1.0f32, 0.0][..], m.clone())),
        );
    }
    let snapshot = idx.snapshot();
    let vocabulary = snapshot.text().unwrap().len();
    assert!(vocabulary < 2000, "{vocabulary} terms kept for 9 live ones");
    let search = |q: &str| {
        let terms = snapshot.text().unwrap().query_terms(q);
        let hits = snapshot.keyword_search(&terms, 10, Rows::All, None);
        hits.iter()
            .map(|h| snapshot.id(h.position).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(search("u999x3"), ["d3"]);
    assert!(search("u0x3").is_empty(), "an old text no longer matches");
    assert_eq!(search("common").len(), 8);
}
