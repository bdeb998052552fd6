//! Turning raw tool arguments into typed values, and store errors into tool errors.
//!
//! Tools receive their arguments as a JSON object and parse them here instead of through
//! rmcp's `Parameters`, because a parse failure must be a tool result with `isError: true`
//! whose message names the field (`vectors[2].vector[5]: invalid type: null, expected f32`),
//! not a JSON-RPC error that an LLM never sees.

use std::sync::Arc;

use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::store::StoreError;

/// The error half of every tool's result: the message shown to the caller.
pub type ToolError = String;

/// Parse `args` as `T`, naming the path of the first offending field.
pub fn parse<T: DeserializeOwned>(args: JsonObject) -> Result<T, ToolError> {
    serde_path_to_error::deserialize(Value::Object(args)).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("invalid arguments: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// The input schema advertised for `T`. Our argument types are plain structs, so schema
/// generation cannot fail; if it ever did, the tool would be listed without constraints
/// rather than taking the server down.
pub fn input_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_input::<T>().unwrap_or_else(|e| {
        tracing::error!(error = %e, "input schema generation failed");
        rmcp::handler::server::common::schema_for_empty_input()
    })
}

/// `schema` without schemars' numeric `format`s (`uint`, `uint64`, `float`, `double`...).
/// They are not JSON Schema formats: ajv, which the TypeScript SDK and Mastra validate with,
/// warns once per unknown format it meets. The bounds they imply stay as `minimum`.
pub fn portable_schema(schema: &JsonObject) -> Arc<JsonObject> {
    fn strip_map(map: &mut Map<String, Value>) {
        let numeric = map
            .get("format")
            .and_then(Value::as_str)
            .is_some_and(|f| f == "float" || f == "double" || f.starts_with("int") || f.starts_with("uint"));
        if numeric {
            map.remove("format");
        }
        map.values_mut().for_each(strip);
    }
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => strip_map(map),
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut schema = schema.clone();
    strip_map(&mut schema);
    Arc::new(schema)
}

/// Present a store error to the caller; internal ones are logged with their detail too.
pub fn tool_error(tool: &str, err: StoreError) -> ToolError {
    if let StoreError::Internal(detail) = &err {
        tracing::error!(tool, error = %detail, "tool failed");
    }
    err.to_string()
}

/// Metadata must be a JSON object (or absent). `field` names it in the message.
pub fn metadata_object(field: &str, value: Option<Value>) -> Result<Map<String, Value>, ToolError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(format!(
            "{field}: metadata must be a JSON object, got {}",
            kind(&other)
        )),
    }
}

/// A filter must be a JSON object (or absent/null).
pub fn filter_object(value: Option<Value>) -> Result<Option<Value>, ToolError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(other) => Err(format!("filter: must be a JSON object, got {}", kind(&other))),
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Row {
        #[allow(dead_code)]
        vector: Vec<f32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Args {
        #[allow(dead_code)]
        rows: Vec<Row>,
    }

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn parse_errors_name_the_field_path() {
        let err = parse::<Args>(obj(
            serde_json::json!({"rows": [{"vector": [1.0]}, {"vector": [1.0, null]}]}),
        ))
        .unwrap_err();
        assert!(err.starts_with("rows[1].vector[1]:"), "{err}");
        let err = parse::<Args>(obj(serde_json::json!({}))).unwrap_err();
        assert!(err.contains("missing field `rows`"), "{err}");
        let err = parse::<Args>(obj(serde_json::json!({"rows": [], "topK": 3}))).unwrap_err();
        assert!(err.contains("unknown field `topK`"), "{err}");
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert!(metadata_object("m", None).unwrap().is_empty());
        let err = metadata_object("vectors[0].metadata", Some(Value::from("x"))).unwrap_err();
        assert_eq!(
            err,
            "vectors[0].metadata: metadata must be a JSON object, got a string"
        );
    }

    #[test]
    fn portable_schemas_drop_numeric_formats_and_keep_bounds() {
        let schema = obj(serde_json::json!({
            "type": "object",
            "properties": {
                "top_k": {"type": "integer", "format": "uint", "minimum": 0},
                "score": {"type": "number", "format": "float"},
                "when": {"type": "string", "format": "date-time"},
                "items": {"anyOf": [{"type": "integer", "format": "int64"}, {"type": "null"}]}
            }
        }));
        let portable = Value::Object((*portable_schema(&schema)).clone());
        assert_eq!(
            portable,
            serde_json::json!({
                "type": "object",
                "properties": {
                    "top_k": {"type": "integer", "minimum": 0},
                    "score": {"type": "number"},
                    "when": {"type": "string", "format": "date-time"},
                    "items": {"anyOf": [{"type": "integer"}, {"type": "null"}]}
                }
            })
        );
    }
}
