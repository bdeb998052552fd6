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

use super::transport::RawArguments;
use crate::store::filter::{self, CompiledFilter};
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

/// The tools whose arguments are large enough to be kept as text by the transport
/// ([`RawArguments`]), so they are parsed once, straight into their type, instead of into
/// a JSON tree first. Every caller of [`super::transport::server_transport`] hands it this
/// list; [`raw_arguments`] gives the arguments back where a tree is needed (a relayed call).
pub const RAW_ARGUMENT_TOOLS: &[&str] = &["upsert"];

/// A tool's arguments parsed as `T` (from [`RawArguments`] when the transport kept them, else
/// from rmcp's object), or the tool error that names the field at fault. As an extractor it
/// never fails the call itself: a bad argument is the tool's error to report.
pub struct Args<T>(pub Result<T, ToolError>);

impl<'a, S, T: DeserializeOwned>
    rmcp::handler::server::common::FromContextPart<rmcp::handler::server::tool::ToolCallContext<'a, S>>
    for Args<T>
{
    fn from_context_part(
        context: &mut rmcp::handler::server::tool::ToolCallContext<'a, S>,
    ) -> Result<Self, rmcp::ErrorData> {
        use rmcp::handler::server::common::AsRequestContext;
        let raw = context
            .as_request_context()
            .extensions
            .get::<RawArguments>()
            .map(|r| r.0.clone());
        Ok(Args(match raw {
            Some(text) => parse_text(&text),
            None => parse(context.arguments.take().unwrap_or_default()),
        }))
    }
}

/// [`parse`] from JSON text, straight into `T`. A text that does not parse that way takes
/// the object route ([`parse`]) instead, so every answer, error messages included, is the
/// one [`parse`] gives (a typed parse refuses `1e40` for an `f32` where the object route
/// reads infinity and the vector check names it; duplicate keys differ too).
pub fn parse_text<T: DeserializeOwned>(text: &str) -> Result<T, ToolError> {
    if let Ok(parsed) = serde_json::from_str(text) {
        return Ok(parsed);
    }
    match serde_json::from_str::<JsonObject>(text) {
        Ok(object) => parse(object),
        Err(e) => Err(format!("invalid arguments: {e}")),
    }
}

/// The arguments as an object, from [`RawArguments`] when the transport kept them there.
pub fn raw_arguments(extensions: &rmcp::model::Extensions) -> Option<Result<JsonObject, String>> {
    extensions
        .get::<RawArguments>()
        .map(|raw| serde_json::from_str(&raw.0).map_err(|e| e.to_string()))
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

/// The metadata filter given as argument `field`, compiled: absent or null is none, anything
/// else must be a JSON object, and messages name `field`. A write (`allow_empty: false`)
/// refuses `{}`: a write that means "every row" by accident is refused, `delete_index`
/// drops a whole index on purpose.
pub fn filter_arg(
    field: &str,
    value: Option<Value>,
    allow_empty: bool,
) -> Result<Option<CompiledFilter>, ToolError> {
    let value = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(v @ Value::Object(_)) => v,
        Some(other) => return Err(format!("{field}: must be a JSON object, got {}", kind(&other))),
    };
    if !allow_empty && value.as_object().is_some_and(|o| o.is_empty()) {
        return Err(format!(
            "{field}: an empty filter would match every row; name the rows (use delete_index to drop a whole index)"
        ));
    }
    // The language's messages start with "filter: "; name the argument instead.
    filter::compile(&value)
        .map(Some)
        .map_err(|e| e.to_string().replacen("filter", field, 1))
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

    /// Arguments the transport kept as text give the same answers, errors included.
    #[test]
    fn parsing_text_says_what_parsing_the_object_says() {
        for case in [
            r#"{"rows": [{"vector": [1.0]}, {"vector": [1.0, null]}]}"#,
            r#"{"rows": [{"vector": [1e40]}]}"#,
            r#"{"rows": [{"vector": ["1"]}]}"#,
            r#"{}"#,
            r#"{"rows": [], "topK": 3}"#,
            r#"{"rows": [{"vector": [], "x": 1}]}"#,
            r#"{"rows": [{"vector": [0.5, -2, 3e-3]}]}"#,
            r#"{"rows": [{"vector": [1]}], "rows": [{"vector": [2]}]}"#,
        ] {
            let object: JsonObject = serde_json::from_str(case).unwrap();
            let from_object = parse::<Args>(object).map(|a| format!("{a:?}"));
            let from_text = parse_text::<Args>(case).map(|a| format!("{a:?}"));
            assert_eq!(from_text, from_object, "{case}");
        }
        assert!(parse_text::<Args>(r#"{"rows": []} x"#).is_err(), "trailing text");
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
