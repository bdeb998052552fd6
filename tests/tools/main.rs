//! Every tool's happy path and its refusals, against the real binary on a real file.
//!
//! One file per tool family, as in `src/mcp/`: [`indexes`] (create, list, describe, delete,
//! HNSW), [`vectors`] (upsert, update, delete, fetch), [`search`]. This file holds the tool
//! list and what the families share.

#[path = "../common/mod.rs"]
mod common;
mod indexes;
mod search;
mod text;
mod vectors;

use common::*;
use serde_json::{json, Value};

fn ids_of(result: &Value) -> Vec<String> {
    result["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn tools_list_shows_every_tool_with_an_object_output_schema_and_annotations() {
    let db = temp_db();
    let server = start(&db.path).await;
    let info = server.client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().expect("server info").name,
        "stride-vectors"
    );
    assert!(info.instructions.as_deref().unwrap_or("").contains("upsert"));

    let tools = server.client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "create_index",
            "delete",
            "delete_index",
            "describe_index",
            "embed",
            "fetch",
            "flush",
            "list_indexes",
            "search",
            "stats",
            "update",
            "upsert"
        ]
    );
    for tool in &tools {
        let out = tool
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no output schema", tool.name));
        assert_eq!(
            out.get("type"),
            Some(&json!("object")),
            "{} output schema root",
            tool.name
        );
        assert_eq!(
            tool.input_schema.get("type"),
            Some(&json!("object")),
            "{} input schema root",
            tool.name
        );
        assert!(
            tool.description.as_deref().is_some_and(|d| d.len() > 40),
            "{} description",
            tool.name
        );
        let ann = tool
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{} annotations", tool.name));
        let read_only =
            ["list_indexes", "describe_index", "search", "fetch", "stats"].contains(&tool.name.as_ref());
        assert_eq!(ann.read_only_hint, Some(read_only), "{} readOnlyHint", tool.name);
    }
    let upsert = tools.iter().find(|t| t.name == "upsert").expect("upsert");
    assert!(upsert.description.as_deref().unwrap_or("").contains("16 MiB"));
    server.stop().await;
}
