//! `stride-vectors-demo`, the README's main job: it indexes the sample Stride documents
//! through a child server and prints searches on stdout. Its stderr is quiet by default (the
//! client's and the server's INFO lines would bury the results) and full with `--verbose`.

mod common;

/// Runs the demo on `db` with `extra` flags; it must succeed. Returns stdout and stderr.
async fn demo(db: &std::path::Path, extra: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stride-vectors-demo"))
        .args([
            "--fixtures",
            concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/stride-sample.json"),
        ])
        .arg("--db")
        .arg(db)
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("STRIDE_VECTORS_LOG")
        .output()
        .await
        .expect("run the demo");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "demo {extra:?} failed: {stderr}");
    (stdout, stderr)
}

#[tokio::test]
async fn the_demo_prints_searches_and_logs_only_warnings_unless_verbose() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("demo.duckdb");
    let (stdout, stderr) = demo(&db, &[]).await;
    assert!(
        stdout.contains("embed student_profiles: {\"indexed\": 6}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("search goals for \"buying photo equipment\""),
        "{stdout}"
    );
    assert!(
        !stderr.contains(" INFO "),
        "a quiet demo logs no INFO lines:\n{stderr}"
    );

    // Again, verbose: everything is unchanged, and the logs are back.
    let (stdout, stderr) = demo(&db, &["--verbose"]).await;
    assert!(
        stdout.contains("embed student_profiles: {\"unchanged\": 6}"),
        "{stdout}"
    );
    assert!(
        stderr.contains(" INFO "),
        "--verbose shows the INFO lines:\n{stderr}"
    );
}
