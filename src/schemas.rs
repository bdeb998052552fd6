//! The `schemas/` folder: one JSON Schema file per tool input and output, generated from
//! the Rust types through the same tool list `tools/list` serves, so the files cannot drift
//! from what clients see. `stride-vectors schemas --check` fails when a file is stale.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::mcp::StrideServer;

/// File name to content, for every tool.
pub fn render() -> Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    for tool in StrideServer::tools() {
        let input = serde_json::Value::Object((*tool.input_schema).clone());
        files.insert(format!("{}.input.json", tool.name), pretty(&input)?);
        let output = tool
            .output_schema
            .as_ref()
            .with_context(|| format!("tool {} has no output schema", tool.name))?;
        files.insert(
            format!("{}.output.json", tool.name),
            pretty(&serde_json::Value::Object((**output).clone()))?,
        );
    }
    Ok(files)
}

fn pretty(v: &serde_json::Value) -> Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

/// Write every schema file into `dir`.
pub fn write(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = render()?;
    for (name, content) in &files {
        let path = dir.join(name);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.len())
}

/// Names of files in `dir` that are missing, different, or left over from a removed tool.
pub fn stale(dir: &Path) -> Result<Vec<String>> {
    let files = render()?;
    let mut stale = Vec::new();
    for (name, content) in &files {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(existing) if &existing == content => {}
            _ => stale.push(name.clone()),
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !files.contains_key(&name) {
                stale.push(name);
            }
        }
    }
    Ok(stale)
}
