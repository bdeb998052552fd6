//! The local model against a golden reference: same token ids and the same vectors as an
//! independent float64 BERT forward (fixtures/minilm-golden.json), one text at a time and
//! in a padded batch. Needs the model on disk (`scripts/fetch-model`); a missing model is a
//! failure with the fetch hint, never a skip, so CI cannot pass without checking this.

mod common;

use common::Expect;
use stride_vectors::embed::local::{LocalEmbedder, DIMENSION, MODEL_NAME};
use stride_vectors::embed::Embedder;

use serde_json::{json, Value};

/// Largest difference allowed in any one component when the server binary is checked
/// against the float64 reference (through `embed` and `fetch`).
const MAX_COMPONENT_ERROR: f64 = 1e-5;

/// Cosine the golden file suggests: it was computed in float64, we run float32.
const MIN_COSINE: f64 = 0.9999;

struct Golden {
    text: String,
    ids: Vec<u32>,
    vector: Vec<f64>,
}

fn golden() -> (Vec<Golden>, Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/minilm-golden.json");
    let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let doc: Value = serde_json::from_str(&raw).unwrap();
    let sentences = doc["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Golden {
            text: s["text"].as_str().unwrap().to_string(),
            ids: serde_json::from_value(s["input_ids"].clone()).unwrap(),
            vector: serde_json::from_value(s["embedding_mean_l2"].clone()).unwrap(),
        })
        .collect::<Vec<_>>();
    assert_eq!(sentences.len(), 3, "the fixture should hold three sentences");
    (sentences, doc)
}

fn load_model() -> LocalEmbedder {
    let dir = match LocalEmbedder::find_model_dir(None) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    match LocalEmbedder::load(&dir) {
        Ok(model) => model,
        Err(e) => panic!("loading {}: {e}", dir.display()),
    }
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector widths differ");
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn assert_matches(got: &[f32], want: &Golden, how: &str) {
    assert_eq!(got.len(), DIMENSION, "{how}: width for {:?}", want.text);
    let norm = got.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    assert!(
        (norm - 1.0).abs() < 1e-4,
        "{how}: {:?} is not unit length ({norm})",
        want.text
    );
    let c = cosine(got, &want.vector);
    assert!(
        c > MIN_COSINE,
        "{how}: cosine {c} for {:?} is below {MIN_COSINE}",
        want.text
    );
}

#[tokio::test]
async fn the_model_describes_itself() {
    let model = load_model();
    assert_eq!(model.model(), MODEL_NAME);
    assert_eq!(model.dimension(), Some(DIMENSION));
}

#[tokio::test]
async fn token_ids_match_the_reference_tokenizer() {
    let model = load_model();
    for g in golden().0 {
        assert_eq!(
            model.token_ids(&g.text).unwrap(),
            g.ids,
            "token ids for {:?}",
            g.text
        );
    }
}

#[tokio::test]
async fn each_sentence_alone_matches_the_reference_vector() {
    let model = load_model();
    for g in golden().0 {
        let got = model.embed(std::slice::from_ref(&g.text)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_matches(&got[0], &g, "alone");
    }
}

/// One call with texts of different lengths goes through padding and the attention mask;
/// a long text in the middle makes the golden sentences mostly padding, and checks order.
#[tokio::test]
async fn a_padded_batch_matches_the_reference_vectors_in_order() {
    let model = load_model();
    let (golden, doc) = golden();
    let long = "A much longer text about budgets, savings goals and monthly spending, \
                written only so that the other sentences in this batch need a lot of padding."
        .to_string();
    let texts = vec![
        golden[0].text.clone(),
        long,
        golden[1].text.clone(),
        golden[2].text.clone(),
    ];
    let got = model.embed(&texts).await.unwrap();
    assert_eq!(got.len(), texts.len());
    assert_matches(&got[0], &golden[0], "batch");
    assert_matches(&got[2], &golden[1], "batch");
    assert_matches(&got[3], &golden[2], "batch");

    // The similarities the reference reports: cat/kitten close, revenue unrelated.
    let pairs = [("0-1", 0, 2), ("0-2", 0, 3), ("1-2", 2, 3)];
    for (key, i, j) in pairs {
        let want = doc["cosine"][key].as_f64().unwrap();
        let b: Vec<f64> = got[j].iter().map(|x| *x as f64).collect();
        let c = cosine(&got[i], &b);
        assert!((c - want).abs() < 1e-3, "cosine {key}: got {c}, reference {want}");
    }
}

#[tokio::test]
async fn an_empty_batch_and_an_empty_text_are_fine() {
    let model = load_model();
    assert!(model.embed(&[]).await.unwrap().is_empty());
    let got = model.embed(&[String::new()]).await.unwrap();
    assert_eq!(got[0].len(), DIMENSION);
    assert_eq!(model.token_ids("").unwrap(), vec![101, 102], "[CLS] [SEP]");
}

#[tokio::test]
async fn long_texts_are_truncated_at_256_tokens() {
    let model = load_model();
    let long = "word ".repeat(600);
    assert_eq!(model.token_ids(&long).unwrap().len(), 256);
    let got = model.embed(&[long]).await.unwrap();
    assert_eq!(got[0].len(), DIMENSION);
}

/// The tokenizer decides every token id: a changed one must be refused on load, naming the
/// file, both hashes and the command that repairs it, not silently produce other vectors.
#[tokio::test]
async fn a_changed_tokenizer_is_refused_when_the_model_loads() {
    let real = LocalEmbedder::find_model_dir(None).unwrap_or_else(|e| panic!("{e}"));
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        real.join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(real.join("config.json"), tmp.path().join("config.json")).unwrap();
    let mut tokenizer = std::fs::read(real.join("tokenizer.json")).unwrap();
    tokenizer.extend_from_slice(b" ");
    std::fs::write(tmp.path().join("tokenizer.json"), tokenizer).unwrap();
    let err = LocalEmbedder::load(tmp.path()).expect_err("a changed tokenizer must not load");
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer.json")
            && msg.contains(stride_vectors::embed::local::TOKENIZER_SHA256)
            && msg.contains("stride-vectors model fetch"),
        "{msg}"
    );
}

/// The server binary (this build's, or another target's under Wine or qemu: see
/// scripts/test-platforms) embeds the reference sentences through `embed` and stores the
/// reference vectors: every component within 1e-5 of the float64 forward.
#[tokio::test]
async fn the_server_binary_stores_the_reference_vectors() {
    let (sentences, _) = golden();
    let model_dir = LocalEmbedder::find_model_dir(None).unwrap_or_else(|e| panic!("{e}"));
    let db = common::temp_db();
    let mut cmd = common::bare_command(&db.path);
    cmd.arg("--model-dir")
        .arg(&model_dir)
        .args(["--model-fetch", "false"]);
    let s = common::start_with(cmd).await;
    let documents: Vec<Value> = sentences
        .iter()
        .enumerate()
        .map(|(i, g)| json!({"id": format!("s{i}"), "text": g.text}))
        .collect();
    s.ok(
        "embed",
        json!({"index": "golden", "documents": documents, "wait": true}),
    )
    .await;
    let ids: Vec<String> = (0..sentences.len()).map(|i| format!("s{i}")).collect();
    let fetched = s.ok("fetch", json!({"index": "golden", "ids": ids})).await;
    for (i, want) in sentences.iter().enumerate() {
        let row = fetched["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == json!(format!("s{i}")))
            .unwrap_or_else(|| panic!("s{i} missing: {fetched}"));
        let got: Vec<f64> = serde_json::from_value(row["vector"].clone()).unwrap();
        assert_eq!(got.len(), DIMENSION);
        let worst = got
            .iter()
            .zip(&want.vector)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        eprintln!("{:?}: largest component error {worst:e}", want.text);
        assert!(
            worst <= MAX_COMPONENT_ERROR,
            "{:?}: a component is {worst:e} away from the reference",
            want.text
        );
    }
    s.stop().await;
}

#[test]
fn a_long_text_splits_into_pieces_the_model_reads_whole() {
    use stride_vectors::embed::chunk::split;
    let model = load_model();
    // The model's own count, uncut (its input is cut at 256 with [CLS] and [SEP]).
    let count = |s: &str| model.count_tokens(s).expect("tokenize");
    let sentences = [
        "Students in Lyon often share a flat to keep the rent under 450 euros a month.",
        "A part-time job at Deliveroo pays about 12 euros an hour, tips included.",
        "The L3 statistics course asks for a laptop that runs R and Python comfortably.",
        "Cooking at home on weekdays saves roughly 150 euros each month compared with the canteen.",
        "Erasmus grants for a semester in Spain cover part of the rent and the flights.",
    ];
    let text: String = (0..150)
        .map(|i| sentences[i % sentences.len()])
        .collect::<Vec<_>>()
        .join(" ");
    assert!(count(&text) > 1000, "a text far over the window");
    let pieces = split(&text, 254, 64, count);
    assert!(pieces.len() >= 4, "{} pieces", pieces.len());
    for p in &pieces {
        let piece = &text[p.start..p.end];
        assert!(count(piece) <= 254, "{} tokens: {piece:?}", count(piece));
        // What the model reads of it is all of it: [CLS], the piece, [SEP].
        assert_eq!(model.token_ids(piece).unwrap().len(), count(piece) + 2);
        assert!(
            piece.trim_end().ends_with('.'),
            "pieces end at sentence ends: {piece:?}"
        );
    }
}
