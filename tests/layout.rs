//! The module map holds: which part of `src/` may use which, read from the `crate::` paths
//! of every source file (comments aside). The arrows allowed are the design's:
//! `main → mcp → {ownership, embed} → store`, with `config` at the side (it parses flags
//! into the config structs the modules own, and no module imports it but `ownership`,
//! which is handed the whole server config, and `mcp`), and `retry` (the one backoff
//! policy) and `platform` (what differs between operating systems) leaves anyone may use;
//! system calls (`libc`, `windows_sys`) only in `platform`; the tools that are not the
//! server (`bin/`: the demo and the bench; `client`, `schemas`) may use anything and
//! nothing uses them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "mcp",
        &["ownership", "embed", "store", "config", "retry", "platform"],
    ),
    ("ownership", &["embed", "store", "config", "retry", "platform"]),
    ("embed", &["store", "retry", "platform"]),
    ("store", &["retry", "platform"]),
    ("config", &["embed", "store"]),
    ("retry", &[]),
    ("platform", &[]),
];
/// Not part of the server: they may use any module, and no module may use them.
const TOOLS: &[&str] = &["bin", "client", "schemas", "shutdown"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `store/postgres/mod.rs` -> [store, postgres].
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().unwrap();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// Every module path a file names with `crate::a::b` (top two segments).
fn crate_paths(text: &str) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        if at > 0 && text.as_bytes()[at - 1].is_ascii_alphanumeric() {
            continue; // `stride_vectors_crate::` or the like
        }
        let rest = &text[at + "crate::".len()..];
        let segments: Vec<String> = rest
            .split("::")
            .take(2)
            .map(|s| {
                s.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            })
            .take_while(|s: &String| !s.is_empty() && s.chars().next().unwrap().is_ascii_lowercase())
            .collect();
        if !segments.is_empty() {
            found.insert(segments);
        }
    }
    found
}

/// The source without its comment lines (doc links name modules without using them).
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every source file under `src/`: its module path and its code.
fn all_files() -> Vec<(Vec<String>, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&root).unwrap().to_path_buf();
            (module_of(&rel), code(&std::fs::read_to_string(&f).unwrap()))
        })
        .collect()
}

#[test]
fn top_level_modules_use_only_the_allowed_arrows() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, text) in all_files() {
        let Some(top) = module.first().map(String::as_str) else {
            continue;
        };
        if matches!(top, "main" | "lib") || TOOLS.contains(&top) {
            continue;
        }
        let may = allowed
            .get(top)
            .unwrap_or_else(|| panic!("src/{top} is not in the module map of this test"));
        for used in crate_paths(&text) {
            let target = used[0].as_str();
            if target != top && !may.contains(&target) {
                wrong.push(format!("{} uses crate::{}", module.join("/"), used.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows the module map does not allow:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_model_downloader_and_loader_share_pins_and_not_each_other() {
    for (module, text) in all_files() {
        let name = module.join("/");
        if name == "embed/download" {
            assert!(
                !text.contains("super::local") && !text.contains("embed::local"),
                "{name} uses local"
            );
        }
        if name == "embed/local" {
            assert!(
                !text.contains("super::download") && !text.contains("embed::download"),
                "{name} uses download"
            );
        }
    }
}

#[test]
fn system_calls_live_only_in_the_platform_files() {
    let mut wrong = Vec::new();
    for (module, text) in all_files() {
        let name = module.join("/");
        if module.first().is_some_and(|m| m == "platform") {
            continue;
        }
        for call in ["libc::", "windows_sys::"] {
            if text.contains(call) {
                wrong.push(format!("{name} uses {call}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "system calls outside src/platform/:\n{}",
        wrong.join("\n")
    );
}
