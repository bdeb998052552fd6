//! The metadata filter language (Mastra's Mongo-style filters) compiled to a parameterized SQL
//! boolean expression over the `metadata JSON` column of an index table.
//!
//! This module owns the language: which operators exist, what they mean, and the error text
//! when a filter is wrong. It must not touch connections or run queries (outside its tests):
//! the caller pastes [`CompiledFilter::sql`] into its own `WHERE` and binds
//! [`CompiledFilter::params`] in order.
//!
//! Safety rule: nothing the user wrote is pasted into SQL. Values and JSON paths are bound as
//! `?` parameters; the SQL text holds only constants written here.
//!
//! Semantics follow MongoDB, which is what Mastra's filter docs describe:
//!
//! - Comparisons are type-strict: `"5"` never equals `5`, `$gt: 3` ignores string fields and
//!   `$gt: "2026-01-01"` compares strings as text (ISO dates order correctly that way).
//! - A field holding an array matches when any element matches (`{tags: "x"}` matches
//!   `tags: ["x", "y"]`). Only the array at the end of a path is searched; a path does not
//!   walk through arrays of objects (`items.name` does not look inside `items: [{...}]`).
//! - A missing field (or a NULL `metadata`) matches `$ne`, `$nin`, `$not` and `{field: null}`,
//!   never `$eq`, `$gt`, `$in` and the like.
//! - A field compared to an array (`{tags: ["a", "b"]}`) or to an object without operators
//!   (`{meta: {a: 1}}`) is rejected: whole-array and whole-object equality are rarely what
//!   was meant. Use `$in`/`$all`, or a dotted path such as `meta.a`.
//! - `$regex` uses DuckDB's RE2 syntax (no look-around, no back references); `$options`
//!   accepts `i`, `m` and `s`. A pattern RE2 cannot parse fails when the query runs.
//!
//! Every condition produced here is TRUE or FALSE, never NULL, so `NOT` means "does not match".

use std::fmt;

use duckdb::types::ToSqlOutput;
use duckdb::ToSql;
use serde_json::{Map, Value};

/// Deepest nesting of `$and`/`$or`/`$nor`/`$not` and operator objects we accept. Deep enough
/// for any hand-written filter; shallow enough that recursion and SQL size stay small.
pub const MAX_DEPTH: usize = 32;

/// Name of the lambda variable that stands for one candidate value of a field. Prefixed so
/// it cannot be mistaken for a column of the caller's query.
const ELEM: &str = "filter_elem";

/// A SQL boolean expression plus the values bound to its `?` placeholders, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledFilter {
    pub sql: String,
    pub params: Vec<FilterParam>,
}

/// A bound value. All are bound as text or numbers; never pasted into SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterParam {
    Text(String),
    Number(f64),
    Bool(bool),
}

impl ToSql for FilterParam {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        Ok(match self {
            FilterParam::Text(s) => ToSqlOutput::from(s.as_str()),
            FilterParam::Number(n) => ToSqlOutput::from(*n),
            FilterParam::Bool(b) => ToSqlOutput::from(*b),
        })
    }
}

/// Error whose message quotes the offending part of the filter.
#[derive(Debug)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FilterError {}

type Result<T> = std::result::Result<T, FilterError>;

/// Compile a filter object. `{}` compiles to `TRUE` with no parameters.
pub fn compile(filter: &Value) -> std::result::Result<CompiledFilter, FilterError> {
    let sql = filter_object(filter, 0)?;
    Ok(CompiledFilter {
        sql: sql.text,
        params: sql.params,
    })
}

// ---------------------------------------------------------------------------------------------
// SQL fragments

/// SQL text with its parameters. Text and parameters only ever grow together, so the order
/// of `?` in the text and of values in `params` cannot drift apart.
#[derive(Debug, Clone, Default)]
struct Sql {
    text: String,
    params: Vec<FilterParam>,
}

impl Sql {
    fn raw(text: &str) -> Sql {
        Sql {
            text: text.to_owned(),
            params: Vec::new(),
        }
    }

    fn then(mut self, text: &str) -> Sql {
        self.text.push_str(text);
        self
    }

    fn bind(mut self, param: FilterParam) -> Sql {
        self.text.push('?');
        self.params.push(param);
        self
    }

    fn append(mut self, other: Sql) -> Sql {
        self.text.push_str(&other.text);
        self.params.extend(other.params);
        self
    }
}

/// Join conditions with `AND`/`OR`; `empty` stands for an empty list. The result is always a
/// single parenthesized (or atomic) expression, so callers can nest it freely.
fn join(mut parts: Vec<Sql>, op: &str, empty: &str) -> Sql {
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_else(|| Sql::raw(empty));
    }
    let mut out = Sql::raw("(");
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out = out.then(op);
        }
        out = out.append(part);
    }
    out.then(")")
}

fn not(inner: Sql) -> Sql {
    Sql::raw("(NOT ").append(inner).then(")")
}

// ---------------------------------------------------------------------------------------------
// Logical level: filter objects, `$and`, `$or`, `$nor`, `$not`

fn filter_object(filter: &Value, depth: usize) -> Result<Sql> {
    check_depth(depth)?;
    let Some(object) = filter.as_object() else {
        return fail(format!("must be an object, got {}", show(filter)));
    };
    let parts = object
        .iter()
        .map(|(key, value)| clause(key, value, depth))
        .collect::<Result<Vec<_>>>()?;
    Ok(join(parts, " AND ", "TRUE"))
}

fn clause(key: &str, value: &Value, depth: usize) -> Result<Sql> {
    match key {
        "$and" => Ok(join(sub_filters(key, value, depth)?, " AND ", "TRUE")),
        "$or" => Ok(join(sub_filters(key, value, depth)?, " OR ", "FALSE")),
        "$nor" => Ok(not(join(sub_filters(key, value, depth)?, " OR ", "FALSE"))),
        "$not" if value.is_object() => Ok(not(filter_object(value, depth + 1)?)),
        "$not" => fail(format!("\"$not\" needs a filter object, got {}", show(value))),
        _ if key.starts_with('$') => fail(format!("unknown operator {key:?}")),
        _ => field_clause(key, value, depth),
    }
}

fn sub_filters(op: &str, value: &Value, depth: usize) -> Result<Vec<Sql>> {
    let items = match value.as_array() {
        Some(items) if !items.is_empty() && items.iter().all(Value::is_object) => items,
        _ => {
            return fail(format!(
                "{op:?} needs a non-empty array of filter objects, got {}",
                show(value)
            ))
        }
    };
    items.iter().map(|item| filter_object(item, depth + 1)).collect()
}

fn check_depth(depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return fail(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Field level: `{path: value}` and `{path: {$op: value, ...}}`

/// A validated field path and its DuckDB JSON path.
struct Field {
    /// As the user wrote it, for error messages.
    name: String,
    /// `$."a"."b"`: segments are quoted so `-` in a key is not read as path syntax.
    json_path: String,
}

impl Field {
    fn parse(name: &str) -> Result<Field> {
        if !name.split('.').all(valid_segment) {
            return fail(format!("invalid field path {name:?}"));
        }
        let quoted: Vec<String> = name.split('.').map(|s| format!("\"{s}\"")).collect();
        Ok(Field {
            name: name.to_owned(),
            json_path: format!("$.{}", quoted.join(".")),
        })
    }

    /// The value at the path, as JSON (SQL NULL when missing).
    fn value_path(&self) -> FilterParam {
        FilterParam::Text(self.json_path.clone())
    }

    /// The elements of the array at the path (an empty list when it is not an array).
    fn elements_path(&self) -> FilterParam {
        FilterParam::Text(format!("{}[*]", self.json_path))
    }
}

/// `^[A-Za-z_][A-Za-z0-9_-]*$`: strict enough that no quote or path syntax gets through.
fn valid_segment(segment: &str) -> bool {
    let mut chars = segment.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn field_clause(path: &str, value: &Value, depth: usize) -> Result<Sql> {
    let field = Field::parse(path)?;
    match value {
        Value::Object(map) => field_object(&field, map, depth),
        Value::Array(_) => fail(format!(
            "field {:?} is compared to an array {}; use \"$in\" (any of) or \"$all\" (every one of)",
            field.name,
            show(value)
        )),
        _ => operator(&field, "$eq", value, &Map::new(), depth),
    }
}

fn field_object(field: &Field, map: &Map<String, Value>, depth: usize) -> Result<Sql> {
    let operators = map.keys().filter(|k| k.starts_with('$')).count();
    if map.is_empty() {
        fail(format!("field {:?} has an empty operator object", field.name))
    } else if operators == map.len() {
        operator_object(field, map, depth + 1)
    } else if operators == 0 {
        fail(format!(
            "field {:?} is compared to an object {}; object equality is not supported, use a dotted path like \"{}.key\"",
            field.name,
            show(&Value::Object(map.clone())),
            field.name
        ))
    } else {
        fail(format!(
            "field {:?} mixes operators and plain keys in {}",
            field.name,
            show(&Value::Object(map.clone()))
        ))
    }
}

/// All operators of one object, ANDed.
fn operator_object(field: &Field, ops: &Map<String, Value>, depth: usize) -> Result<Sql> {
    check_depth(depth)?;
    let parts = ops
        .iter()
        // `$options` only modifies `$regex`, which reads it from `ops`.
        .filter(|(op, _)| op.as_str() != "$options" || !ops.contains_key("$regex"))
        .map(|(op, value)| operator(field, op, value, ops, depth))
        .collect::<Result<Vec<_>>>()?;
    Ok(join(parts, " AND ", "TRUE"))
}

fn operator(field: &Field, op: &str, value: &Value, ops: &Map<String, Value>, depth: usize) -> Result<Sql> {
    match op {
        "$eq" => Ok(any_value(field, compare(scalar_operand(field, op, value)?, "="))),
        "$ne" => Ok(not(any_value(
            field,
            compare(scalar_operand(field, op, value)?, "="),
        ))),
        "$gt" => ordered(field, op, value, ">"),
        "$gte" => ordered(field, op, value, ">="),
        "$lt" => ordered(field, op, value, "<"),
        "$lte" => ordered(field, op, value, "<="),
        "$in" => one_of(field, op, value),
        "$nin" => Ok(not(one_of(field, op, value)?)),
        "$exists" => exists(field, value),
        "$contains" => contains(field, value),
        "$all" => all_of(field, op, value),
        "$not" => negated(field, value, depth),
        "$regex" => regex(field, value, ops.get("$options")),
        "$options" => fail(format!(
            "\"$options\" on field {:?} needs \"$regex\" beside it",
            field.name
        )),
        "$size" => size(field, value),
        _ => fail(format!("unknown operator {op:?} on field {:?}", field.name)),
    }
}

// ---------------------------------------------------------------------------------------------
// Operators

/// True when the field's value, or any element of it when it is an array, satisfies `pred`
/// (written over [`ELEM`]). The candidate list is never NULL (a missing field gives `[NULL]`),
/// so the result is TRUE or FALSE.
fn any_value(field: &Field, pred: Sql) -> Sql {
    Sql::raw("(len(list_filter(list_concat([json_extract(metadata, ")
        .bind(field.value_path())
        .then(")], json_extract(metadata, ")
        .bind(field.elements_path())
        .then(&format!(")), lambda {ELEM}: "))
        .append(pred)
        .then(")) > 0)")
}

fn ordered(field: &Field, op: &str, value: &Value, sql_op: &str) -> Result<Sql> {
    match scalar(value) {
        Some(s @ (Scalar::Text(_) | Scalar::Number(_))) => Ok(any_value(field, compare(s, sql_op))),
        _ => Err(needs(op, field, "a number or a string", value)),
    }
}

fn one_of(field: &Field, op: &str, value: &Value) -> Result<Sql> {
    let Some(items) = value.as_array() else {
        return Err(needs(op, field, "an array", value));
    };
    let values = items
        .iter()
        .map(|item| {
            scalar(item)
                .ok_or_else(|| needs(op, field, "an array of strings, numbers, booleans or null", value))
        })
        .collect::<Result<Vec<_>>>()?;
    if values.is_empty() {
        return Ok(Sql::raw("FALSE"));
    }
    Ok(any_value(field, member_of(&values)))
}

fn exists(field: &Field, value: &Value) -> Result<Sql> {
    let Some(wanted) = value.as_bool() else {
        return Err(needs("$exists", field, "true or false", value));
    };
    // Present even when its value is JSON null, as in MongoDB.
    let present = Sql::raw("coalesce(json_exists(metadata, ")
        .bind(field.value_path())
        .then("), false)");
    Ok(if wanted { present } else { not(present) })
}

fn contains(field: &Field, value: &Value) -> Result<Sql> {
    match value {
        Value::Array(_) => all_of(field, "$contains", value),
        Value::String(s) => {
            let equal = any_value(field, compare(Scalar::Text(s), "="));
            Ok(join(vec![substring(field, s), equal], " OR ", "FALSE"))
        }
        Value::Number(_) | Value::Bool(_) => Ok(any_value(
            field,
            compare(scalar_operand(field, "$contains", value)?, "="),
        )),
        _ => Err(needs(
            "$contains",
            field,
            "a string, number, boolean or an array of them",
            value,
        )),
    }
}

/// Substring test on a string field. `contains()` rather than `LIKE`, so `%` and `_` in the
/// user's text are plain characters.
fn substring(field: &Field, needle: &str) -> Sql {
    Sql::raw("coalesce(json_type(metadata, ")
        .bind(field.value_path())
        .then(") = 'VARCHAR' AND contains(json_extract_string(metadata, ")
        .bind(field.value_path())
        .then("), ")
        .bind(FilterParam::Text(needle.to_owned()))
        .then("), false)")
}

/// Every listed value is the field's value or one of its elements (MongoDB's `$all`).
fn all_of(field: &Field, op: &str, value: &Value) -> Result<Sql> {
    let Some(items) = value.as_array() else {
        return Err(needs(op, field, "an array", value));
    };
    if items.is_empty() {
        // MongoDB: `$all: []` matches nothing.
        return Ok(Sql::raw("FALSE"));
    }
    let parts = items
        .iter()
        .map(|item| match scalar(item) {
            Some(s) => Ok(any_value(field, compare(s, "="))),
            None => Err(needs(
                op,
                field,
                "an array of strings, numbers, booleans or null",
                value,
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(join(parts, " AND ", "TRUE"))
}

fn negated(field: &Field, value: &Value, depth: usize) -> Result<Sql> {
    match value.as_object() {
        Some(ops) if !ops.is_empty() && ops.keys().all(|k| k.starts_with('$')) => {
            Ok(not(operator_object(field, ops, depth + 1)?))
        }
        _ => Err(needs(
            "$not",
            field,
            "an operator object like {\"$gt\": 5}",
            value,
        )),
    }
}

fn regex(field: &Field, value: &Value, options: Option<&Value>) -> Result<Sql> {
    let Some(pattern) = value.as_str() else {
        return Err(needs("$regex", field, "a string", value));
    };
    let flags = regex_flags(field, options)?;
    let pred = Sql::raw(&format!(
        "(json_type({ELEM}) = 'VARCHAR' AND regexp_matches(json_extract_string({ELEM}, '$'), "
    ))
    .bind(FilterParam::Text(format!("{flags}{pattern}")))
    .then("))");
    Ok(any_value(field, pred))
}

/// MongoDB's `i`, `m`, `s` options as an RE2 inline-flag prefix such as `(?is)`.
fn regex_flags(field: &Field, options: Option<&Value>) -> Result<String> {
    let Some(options) = options else {
        return Ok(String::new());
    };
    let Some(text) = options.as_str() else {
        return Err(needs("$options", field, "a string of i, m, s", options));
    };
    if let Some(bad) = text.chars().find(|c| !matches!(*c, 'i' | 'm' | 's')) {
        return fail(format!(
            "\"$options\" on field {:?}: option {bad:?} is not supported (use i, m, s)",
            field.name
        ));
    }
    let flags: String = ['i', 'm', 's']
        .into_iter()
        .filter(|c| text.contains(*c))
        .collect();
    Ok(if flags.is_empty() {
        flags
    } else {
        format!("(?{flags})")
    })
}

fn size(field: &Field, value: &Value) -> Result<Sql> {
    let Some(n) = value.as_u64() else {
        return Err(needs("$size", field, "a non-negative integer", value));
    };
    Ok(Sql::raw("coalesce(json_type(metadata, ")
        .bind(field.value_path())
        .then(") = 'ARRAY' AND json_array_length(metadata, ")
        .bind(field.value_path())
        .then(") = ")
        .bind(FilterParam::Number(n as f64))
        .then(", false)"))
}

// ---------------------------------------------------------------------------------------------
// Predicates over one candidate value ([`ELEM`], a JSON value or NULL)

#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Text(&'a str),
    Number(f64),
    Bool(bool),
    Null,
}

fn scalar(value: &Value) -> Option<Scalar<'_>> {
    match value {
        Value::String(s) => Some(Scalar::Text(s)),
        Value::Number(n) => n.as_f64().map(Scalar::Number),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        Value::Null => Some(Scalar::Null),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn scalar_operand<'a>(field: &Field, op: &str, value: &'a Value) -> Result<Scalar<'a>> {
    scalar(value).ok_or_else(|| needs(op, field, "a string, number, boolean or null", value))
}

/// Type test and typed reading of [`ELEM`] for one kind of scalar. The type test keeps
/// comparisons type-strict; `TRY_CAST` keeps a wrong type from raising an error, since SQL
/// does not promise to evaluate the test first.
fn typed(kind: Scalar<'_>) -> (String, String) {
    match kind {
        Scalar::Text(_) => (
            format!("json_type({ELEM}) = 'VARCHAR'"),
            format!("json_extract_string({ELEM}, '$')"),
        ),
        Scalar::Number(_) => (
            format!("json_type({ELEM}) IN ('BIGINT', 'UBIGINT', 'DOUBLE')"),
            format!("TRY_CAST({ELEM} AS DOUBLE)"),
        ),
        Scalar::Bool(_) | Scalar::Null => (
            format!("json_type({ELEM}) = 'BOOLEAN'"),
            format!("TRY_CAST({ELEM} AS BOOLEAN)"),
        ),
    }
}

/// Missing and JSON null are the same to a filter, as in MongoDB.
fn is_null() -> Sql {
    Sql::raw(&format!("(coalesce(json_type({ELEM}), 'NULL') = 'NULL')"))
}

fn param(s: Scalar<'_>) -> Option<FilterParam> {
    match s {
        Scalar::Text(t) => Some(FilterParam::Text(t.to_owned())),
        Scalar::Number(n) => Some(FilterParam::Number(n)),
        Scalar::Bool(b) => Some(FilterParam::Bool(b)),
        Scalar::Null => None,
    }
}

/// `ELEM <sql_op> value`, typed. Null only ever comes with `=`.
fn compare(s: Scalar<'_>, sql_op: &str) -> Sql {
    let Some(p) = param(s) else {
        return is_null();
    };
    let (is_kind, read) = typed(s);
    Sql::raw(&format!("({is_kind} AND {read} {sql_op} "))
        .bind(p)
        .then(")")
}

/// `ELEM` equals one of `values`: one typed `IN (...)` per kind present.
fn member_of(values: &[Scalar<'_>]) -> Sql {
    let kinds = [Scalar::Text(""), Scalar::Number(0.0), Scalar::Bool(false)];
    let mut parts: Vec<Sql> = kinds
        .into_iter()
        .filter_map(|kind| typed_in(kind, values))
        .collect();
    if values.iter().any(|v| matches!(v, Scalar::Null)) {
        parts.push(is_null());
    }
    join(parts, " OR ", "FALSE")
}

fn typed_in(kind: Scalar<'_>, values: &[Scalar<'_>]) -> Option<Sql> {
    let params: Vec<FilterParam> = values
        .iter()
        .filter(|v| std::mem::discriminant(*v) == std::mem::discriminant(&kind))
        .filter_map(|v| param(*v))
        .collect();
    if params.is_empty() {
        return None;
    }
    let (is_kind, read) = typed(kind);
    let mut sql = Sql::raw(&format!("({is_kind} AND {read} IN ("));
    for (i, p) in params.into_iter().enumerate() {
        if i > 0 {
            sql = sql.then(", ");
        }
        sql = sql.bind(p);
    }
    Some(sql.then("))"))
}

// ---------------------------------------------------------------------------------------------
// Errors

fn fail<T>(message: String) -> Result<T> {
    Err(FilterError(format!("filter: {message}")))
}

fn needs(op: &str, field: &Field, what: &str, got: &Value) -> FilterError {
    FilterError(format!(
        "filter: {op:?} on field {:?} needs {what}, got {}",
        field.name,
        show(got)
    ))
}

/// A value as JSON, cut short so a huge filter does not flood the message.
fn show(value: &Value) -> String {
    const LIMIT: usize = 80;
    let text = serde_json::to_string(value).unwrap_or_else(|_| String::from("<unprintable>"));
    if text.chars().count() <= LIMIT {
        return text;
    }
    let cut: String = text.chars().take(LIMIT).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckdb::{params, Connection};
    use serde_json::json;

    const ROWS: &[(&str, Option<&str>)] = &[
        (
            "a",
            Some(
                r#"{"userId":"u1","n":5,"price":9.5,"tags":["x","y"],"flag":true,"nil":null,
                "createdAt":"2026-01-10","nested":{"deep":{"k":"v"}},"user-id":"dash",
                "title":"Hello 100% World"}"#,
            ),
        ),
        (
            "b",
            Some(
                r#"{"userId":"u2","n":"5","tags":"x","flag":false,"createdAt":"2025-12-31",
                "nums":[1,2,3],"title":"hello_world"}"#,
            ),
        ),
        (
            "c",
            Some(
                r#"{"userId":"u1","n":10,"tags":["y","z"],"nested":{"deep":{"k":"w"}},
                "nums":[3,4],"createdAt":"2026-02-01"}"#,
            ),
        ),
        ("d", Some("{}")),
        ("e", None),
        (
            "f",
            Some(r#"{"n":-1.5,"tags":[1,"1",null,true],"flag":"true","nums":[]}"#),
        ),
    ];

    fn db() -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (id VARCHAR, metadata JSON)")
            .expect("create");
        for (id, metadata) in ROWS {
            conn.execute("INSERT INTO t VALUES (?, ?)", params![id, metadata])
                .expect("insert");
        }
        conn
    }

    fn ids(conn: &Connection, filter: Value) -> Vec<String> {
        let compiled = compile(&filter).expect("compiles");
        let sql = format!("SELECT id FROM t WHERE {} ORDER BY id", compiled.sql);
        let mut stmt = conn.prepare(&sql).expect("prepares");
        let rows = stmt
            .query_map(duckdb::params_from_iter(compiled.params.iter()), |row| {
                row.get::<_, String>(0)
            })
            .expect("runs");
        rows.collect::<duckdb::Result<Vec<_>>>().expect("reads")
    }

    fn check(conn: &Connection, filter: Value, expected: &[&str]) {
        assert_eq!(ids(conn, filter.clone()), expected, "filter {filter}");
    }

    fn error(filter: Value) -> String {
        match compile(&filter) {
            Ok(c) => panic!("expected an error for {filter}, got {}", c.sql),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_filter_is_true() {
        let c = compile(&json!({})).expect("compiles");
        assert_eq!(c.sql, "TRUE");
        assert!(c.params.is_empty());
        check(&db(), json!({}), &["a", "b", "c", "d", "e", "f"]);
    }

    #[test]
    fn path_and_values_are_bound_not_pasted() {
        let c = compile(&json!({"user-id": {"$eq": "x'); DROP TABLE t; --"}})).expect("compiles");
        assert!(!c.sql.contains("user-id") && !c.sql.contains("DROP"), "{}", c.sql);
        assert_eq!(
            c.params,
            vec![
                FilterParam::Text("$.\"user-id\"".into()),
                FilterParam::Text("$.\"user-id\"[*]".into()),
                FilterParam::Text("x'); DROP TABLE t; --".into()),
            ]
        );
        assert_eq!(c.sql.matches('?').count(), c.params.len());
    }

    #[test]
    fn eq_is_type_strict_and_searches_arrays() {
        let conn = db();
        check(&conn, json!({"userId": "u1"}), &["a", "c"]);
        check(&conn, json!({"userId": {"$eq": "u2"}}), &["b"]);
        check(&conn, json!({"n": 5}), &["a"]);
        check(&conn, json!({"n": 5.0}), &["a"]);
        check(&conn, json!({"n": "5"}), &["b"]);
        check(&conn, json!({"n": -1.5}), &["f"]);
        check(&conn, json!({"tags": "x"}), &["a", "b"]);
        check(&conn, json!({"tags": 1}), &["f"]);
        check(&conn, json!({"tags": "1"}), &["f"]);
        check(&conn, json!({"flag": true}), &["a"]);
        check(&conn, json!({"flag": false}), &["b"]);
        check(&conn, json!({"flag": "true"}), &["f"]);
        check(&conn, json!({"tags": true}), &["f"]);
        check(&conn, json!({"nested.deep.k": "v"}), &["a"]);
        check(&conn, json!({"user-id": "dash"}), &["a"]);
    }

    #[test]
    fn null_matches_missing_and_json_null() {
        let conn = db();
        check(&conn, json!({"nil": null}), &["a", "b", "c", "d", "e", "f"]);
        check(&conn, json!({"flag": null}), &["c", "d", "e"]);
        check(&conn, json!({"tags": null}), &["d", "e", "f"]);
        check(&conn, json!({"flag": {"$ne": null}}), &["a", "b", "f"]);
    }

    #[test]
    fn ne_matches_missing_fields() {
        let conn = db();
        check(&conn, json!({"userId": {"$ne": "u1"}}), &["b", "d", "e", "f"]);
        check(&conn, json!({"tags": {"$ne": "x"}}), &["c", "d", "e", "f"]);
        check(&conn, json!({"n": {"$ne": 5}}), &["b", "c", "d", "e", "f"]);
    }

    #[test]
    fn ordering_compares_numbers_and_strings_separately() {
        let conn = db();
        check(&conn, json!({"n": {"$gt": 4}}), &["a", "c"]);
        check(&conn, json!({"n": {"$gte": 5, "$lt": 10}}), &["a"]);
        check(&conn, json!({"n": {"$lte": 5}}), &["a", "f"]);
        check(&conn, json!({"n": {"$lt": 0}}), &["f"]);
        check(&conn, json!({"nums": {"$gt": 3}}), &["c"]);
        check(&conn, json!({"createdAt": {"$gte": "2026-01-01"}}), &["a", "c"]);
        check(&conn, json!({"createdAt": {"$lt": "2026-01-01"}}), &["b"]);
        check(&conn, json!({"n": {"$gt": "4"}}), &["b"]);
    }

    #[test]
    fn in_and_nin() {
        let conn = db();
        check(&conn, json!({"userId": {"$in": ["u2", "zz"]}}), &["b"]);
        check(&conn, json!({"tags": {"$in": ["z", 1]}}), &["c", "f"]);
        check(&conn, json!({"n": {"$in": [5, 10]}}), &["a", "c"]);
        check(
            &conn,
            json!({"flag": {"$in": [false, null]}}),
            &["b", "c", "d", "e"],
        );
        check(&conn, json!({"n": {"$in": []}}), &[]);
        check(&conn, json!({"userId": {"$nin": ["u1"]}}), &["b", "d", "e", "f"]);
        check(&conn, json!({"tags": {"$nin": ["y", true]}}), &["b", "d", "e"]);
        check(&conn, json!({"n": {"$nin": []}}), &["a", "b", "c", "d", "e", "f"]);
    }

    #[test]
    fn exists() {
        let conn = db();
        check(&conn, json!({"nil": {"$exists": true}}), &["a"]);
        check(&conn, json!({"flag": {"$exists": true}}), &["a", "b", "f"]);
        check(&conn, json!({"flag": {"$exists": false}}), &["c", "d", "e"]);
        check(&conn, json!({"nested.deep": {"$exists": true}}), &["a", "c"]);
    }

    #[test]
    fn contains_all_and_size() {
        let conn = db();
        check(&conn, json!({"tags": {"$contains": "y"}}), &["a", "c"]);
        check(&conn, json!({"tags": {"$contains": ["x", "y"]}}), &["a"]);
        check(&conn, json!({"title": {"$contains": "World"}}), &["a"]);
        check(&conn, json!({"title": {"$contains": "100%"}}), &["a"]);
        check(&conn, json!({"title": {"$contains": "o_w"}}), &["b"]);
        check(&conn, json!({"title": {"$contains": "%"}}), &["a"]);
        check(&conn, json!({"nums": {"$contains": 3}}), &["b", "c"]);
        check(&conn, json!({"tags": {"$all": ["y", "z"]}}), &["c"]);
        check(&conn, json!({"tags": {"$all": ["x"]}}), &["a", "b"]);
        check(&conn, json!({"tags": {"$all": []}}), &[]);
        check(&conn, json!({"nums": {"$size": 0}}), &["f"]);
        check(&conn, json!({"tags": {"$size": 2}}), &["a", "c"]);
    }

    #[test]
    fn not_and_regex() {
        let conn = db();
        check(&conn, json!({"n": {"$not": {"$gt": 4}}}), &["b", "d", "e", "f"]);
        check(&conn, json!({"userId": {"$regex": "^u[12]$"}}), &["a", "b", "c"]);
        check(
            &conn,
            json!({"title": {"$regex": "^hello", "$options": "i"}}),
            &["a", "b"],
        );
        check(&conn, json!({"title": {"$regex": "^hello"}}), &["b"]);
        check(&conn, json!({"tags": {"$regex": "^[xz]$"}}), &["a", "b", "c"]);
    }

    #[test]
    fn logical_operators() {
        let conn = db();
        check(&conn, json!({"$or": [{"userId": "u2"}, {"n": 10}]}), &["b", "c"]);
        check(&conn, json!({"$and": [{"userId": "u1"}, {"tags": "x"}]}), &["a"]);
        check(
            &conn,
            json!({"$nor": [{"userId": "u1"}, {"tags": "x"}]}),
            &["d", "e", "f"],
        );
        check(&conn, json!({"$not": {"userId": "u1"}}), &["b", "d", "e", "f"]);
        check(&conn, json!({"userId": "u1", "tags": "y"}), &["a", "c"]);
        check(
            &conn,
            json!({"$or": [{"$and": [{"userId": "u1"}, {"n": {"$gt": 6}}]}, {"flag": false}]}),
            &["b", "c"],
        );
        check(&conn, json!({"$and": [{}]}), &["a", "b", "c", "d", "e", "f"]);
    }

    #[test]
    fn error_messages_name_the_culprit() {
        assert_eq!(
            error(json!({"meta.x": {"$foo": 1}})),
            r#"filter: unknown operator "$foo" on field "meta.x""#
        );
        assert_eq!(error(json!({"$foo": []})), r#"filter: unknown operator "$foo""#);
        assert_eq!(
            error(json!({"tag": {"$in": "x"}})),
            r#"filter: "$in" on field "tag" needs an array, got "x""#
        );
        assert_eq!(
            error(json!({"a;drop": 1})),
            r#"filter: invalid field path "a;drop""#
        );
        for bad in [
            "", "a..b", ".a", "a.", "1a", "a b", "a'b", "a\"b", "a[0]", "a*", "é",
        ] {
            let mut filter = Map::new();
            filter.insert(bad.to_owned(), json!(1));
            let message = error(Value::Object(filter));
            assert!(message.contains("invalid field path"), "{bad}: {message}");
        }
        assert!(
            error(json!({"n": {"$gt": true}})).contains(r#""$gt" on field "n" needs a number or a string"#)
        );
        assert!(error(json!({"tags": ["a", "b"]})).contains(r#"field "tags" is compared to an array"#));
        assert!(error(json!({"m": {"a": 1}})).contains(r#"field "m" is compared to an object"#));
        assert!(error(json!({"m": {"$gt": 1, "a": 1}})).contains("mixes operators and plain keys"));
        assert!(error(json!({"m": {}})).contains("empty operator object"));
        assert!(error(json!({"$or": []})).contains(r#""$or" needs a non-empty array"#));
        assert!(error(json!({"$and": [1]})).contains(r#""$and" needs a non-empty array"#));
        assert!(error(json!({"$not": 1})).contains(r#""$not" needs a filter object"#));
        assert!(error(json!({"m": {"$not": 1}})).contains(r#""$not" on field "m" needs an operator object"#));
        assert!(error(json!({"m": {"$exists": 1}})).contains("true or false"));
        assert!(error(json!({"m": {"$in": [[1]]}})).contains("array of strings"));
        assert!(error(json!({"m": {"$contains": {"a": 1}}})).contains(r#""$contains" on field "m""#));
        assert!(error(json!({"m": {"$options": "i"}})).contains("needs \"$regex\""));
        assert!(error(json!({"m": {"$regex": "a", "$options": "x"}})).contains("'x' is not supported"));
        assert!(error(json!({"m": {"$size": -1}})).contains("non-negative integer"));
        assert!(error(json!([])).contains("must be an object"));
    }

    #[test]
    fn depth_is_limited() {
        let mut filter = json!({"a": 1});
        for _ in 0..MAX_DEPTH {
            filter = json!({"$and": [filter]});
        }
        assert!(compile(&filter).is_ok());
        let filter = json!({"$and": [filter]});
        assert!(error(filter).contains("nested deeper than 32 levels"));
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(500);
        let message = error(json!({"tag": {"$in": long}}));
        assert!(message.len() < 200, "{message}");
        assert!(message.ends_with('…'));
    }
}
