//! The metadata filter language (Mastra's Mongo-style filters): parsed once into a [`Filter`]
//! tree, then either compiled to a parameterized SQL boolean expression over the `metadata
//! JSON` column of an index table ([`sql`]), or evaluated in Rust over a row's in-memory
//! metadata ([`eval`]). One parser, so both back-ends accept exactly the same filters and
//! give exactly the same errors; a seeded differential test holds their answers equal.
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
//!   `$gt: "2026-01-01"` compares strings as text, byte by byte (ISO dates order correctly
//!   that way).
//! - A field holding an array matches when any element matches (`{tags: "x"}` matches
//!   `tags: ["x", "y"]`). Only the array at the end of a path is searched; a path does not
//!   walk through arrays of objects (`items.name` does not look inside `items: [{...}]`).
//! - Negation follows SQL's three-valued logic, as Mastra's stores and its shared test suite
//!   do (not MongoDB's): a condition on a field that is missing or null is *unknown*, and so
//!   is its negation, so `{rating: {$not: {$lt: 4}}}`, `$ne`, `$nin` and `$nor` never match a
//!   row that has no `rating`. A row matches only when the whole filter is true. Exceptions,
//!   which are never unknown: `$exists`, `{field: null}` / `$eq: null` (missing or null) and
//!   so `$ne: null` (present and not null), and `$in`/`$nin` lists holding `null`. The parser
//!   resolves this once ([`lower`]): the tree it hands out is two-valued, with each negated
//!   condition guarded by "the field is present and not null" ([`Filter::NotNull`]), so the
//!   back-ends never see three values.
//! - Empty `$and: []` and `$nor: []` match every row, `$or: []` none (Mastra's suite).
//! - `$elemMatch` matches an array holding one element that passes all of its conditions:
//!   `{reviews: {$elemMatch: {score: {$gte: 4}, author: "u3"}}}` on objects, or
//!   `{scores: {$elemMatch: {$gte: 3, $lt: 5}}}` on scalars.
//! - A leading `metadata.` segment names the metadata object itself, as Mastra's memory
//!   filters write it: `metadata.thread_id` is `thread_id`.
//! - A field compared to an array (`{tags: ["a", "b"]}`) or to an object without operators
//!   (`{meta: {a: 1}}`) is rejected: whole-array and whole-object equality are rarely what
//!   was meant. Use `$in`/`$all`, or a dotted path such as `meta.a`.
//! - `$regex` uses DuckDB's RE2 syntax (no look-around, no back references); `$options`
//!   accepts `i`, `m` and `s`. A pattern RE2 cannot parse fails when the query runs. A
//!   filter with `$regex` is always evaluated by DuckDB (Rust's regex engine differs from
//!   RE2 in small ways, and a filter must mean one thing).
//!
//! Every condition is TRUE or FALSE, never NULL, so `NOT` means "does not match".

pub mod eval;
pub mod pg;
mod sql;

use std::fmt;

use duckdb::types::ToSqlOutput;
use duckdb::ToSql;
use serde_json::{Map, Value};

/// Deepest nesting of `$and`/`$or`/`$nor`/`$not` and operator objects we accept. Deep enough
/// for any hand-written filter; shallow enough that recursion and SQL size stay small.
pub const MAX_DEPTH: usize = 32;

/// A parsed, validated filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `{}` and `$nin: []` are true; `$in: []` and `$all: []` are false.
    Const(bool),
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// Some candidate of the field passes the test. The candidates are the field's value
    /// (absent when the field is missing) and, when it is an array, each of its elements.
    Any(Path, Candidate),
    /// The field is present, even when its value is null.
    Exists(Path),
    /// The field holds a string that contains this text.
    Substring(Path, String),
    /// The field holds an array of this length.
    Size(Path, u64),
    /// The field is present and its value is not null. Only made by [`lower`], as the guard of
    /// a negated condition.
    NotNull(Path),
    /// The field holds an array with an element for which the (already lowered) filter is
    /// true, its paths read from the element (an empty path: the element itself).
    ElemMatch(Path, Box<Filter>),
}

/// A test on one candidate value of a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    /// Missing or JSON null: the same thing to a filter, as in MongoDB.
    Null,
    /// Of the operand's kind, and `candidate <cmp> operand` holds.
    Compare(Operand, Cmp),
    /// Equal to one of `values` (each compared within its kind), or null when `null`.
    OneOf { values: Vec<Operand>, null: bool },
    /// A string matching this RE2 pattern (flags already folded in as `(?ims)`).
    Regex(String),
}

/// A value a field is compared with. Never null (null has its own test).
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Text(String),
    Number(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    /// The SQL operator, the same in DuckDB and PostgreSQL.
    fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Gt => ">",
            Cmp::Gte => ">=",
            Cmp::Lt => "<",
            Cmp::Lte => "<=",
        }
    }
}

/// A validated field path: dot-separated segments, each `^[A-Za-z_][A-Za-z0-9_-]*$`. No
/// segments: the value itself (an array element, inside `$elemMatch`).
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// As the user wrote it, for error messages.
    pub name: String,
    pub segments: Vec<String>,
}

/// A filter, ready for both back-ends: the SQL expression with the values bound to its `?`
/// placeholders in order, and the tree for in-memory evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledFilter {
    pub sql: String,
    pub params: Vec<FilterParam>,
    pub filter: Filter,
}

impl CompiledFilter {
    /// The tree, when it can be evaluated in memory (it has no `$regex`).
    pub fn in_memory(&self) -> Option<&Filter> {
        (!self.filter.has_regex()).then_some(&self.filter)
    }
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

/// Parse and compile a filter object. `{}` compiles to `TRUE` with no parameters.
pub fn compile(filter: &Value) -> std::result::Result<CompiledFilter, FilterError> {
    let filter = parse(filter)?;
    let (sql, params) = sql::compile(&filter);
    Ok(CompiledFilter { sql, params, filter })
}

/// Parse and validate a filter object, and resolve its negations ([`lower`]).
pub fn parse(filter: &Value) -> std::result::Result<Filter, FilterError> {
    Ok(lower(filter_object(filter, 0)?, true))
}

impl Filter {
    fn has_regex(&self) -> bool {
        match self {
            Filter::And(parts) | Filter::Or(parts) => parts.iter().any(Filter::has_regex),
            Filter::Not(inner) | Filter::ElemMatch(_, inner) => inner.has_regex(),
            Filter::Any(_, Candidate::Regex(_)) => true,
            _ => false,
        }
    }

    /// The path a condition is about, when it is unknown on a missing or null field (see the
    /// module doc); `None` for the conditions that are never unknown, and for `And`/`Or`/`Not`.
    fn unknown_when_missing(&self) -> Option<&Path> {
        match self {
            Filter::Any(_, Candidate::Null | Candidate::OneOf { null: true, .. }) => None,
            Filter::Any(path, _)
            | Filter::Substring(path, _)
            | Filter::Size(path, _)
            | Filter::ElemMatch(path, _) => Some(path),
            _ => None,
        }
    }
}

/// The two-valued filter that is true exactly where `filter`, read in three-valued logic, is
/// `truth`: `lower(f, true)` is where `f` is true, `lower(f, false)` where `f` is false (and
/// not unknown). A negation swaps the two, `And`/`Or` swap under `false` (De Morgan), and the
/// falsity of a condition that can be unknown is "the field is known, and the condition does
/// not hold". The result has `Not` only around single conditions.
fn lower(filter: Filter, truth: bool) -> Filter {
    match filter {
        Filter::Const(c) => Filter::Const(c == truth),
        Filter::And(parts) => join(parts.into_iter().map(|p| lower(p, truth)).collect(), truth, truth),
        Filter::Or(parts) => join(
            parts.into_iter().map(|p| lower(p, truth)).collect(),
            !truth,
            !truth,
        ),
        Filter::Not(inner) => lower(*inner, !truth),
        condition if truth => condition,
        condition => match condition.unknown_when_missing().cloned() {
            Some(path) => Filter::And(vec![Filter::NotNull(path), not(condition)]),
            None => not(condition),
        },
    }
}

/// `And`/`Or` of `parts`; a single part stands alone and none is `empty`.
fn join(mut parts: Vec<Filter>, and: bool, empty: bool) -> Filter {
    if parts.len() <= 1 {
        return parts.pop().unwrap_or(Filter::Const(empty));
    }
    if and {
        Filter::And(parts)
    } else {
        Filter::Or(parts)
    }
}

fn not(inner: Filter) -> Filter {
    Filter::Not(Box::new(inner))
}

// ---------------------------------------------------------------------------------------------
// Logical level: filter objects, `$and`, `$or`, `$nor`, `$not`

fn filter_object(filter: &Value, depth: usize) -> Result<Filter> {
    check_depth(depth)?;
    let Some(object) = filter.as_object() else {
        return fail(format!("must be an object, got {}", show(filter)));
    };
    let parts = object
        .iter()
        .map(|(key, value)| clause(key, value, depth))
        .collect::<Result<Vec<_>>>()?;
    Ok(join(parts, true, true))
}

fn clause(key: &str, value: &Value, depth: usize) -> Result<Filter> {
    match key {
        "$and" => Ok(join(sub_filters(key, value, depth)?, true, true)),
        "$or" => Ok(join(sub_filters(key, value, depth)?, false, false)),
        "$nor" => Ok(not(join(sub_filters(key, value, depth)?, false, false))),
        "$not" if value.as_object().is_some_and(|o| !o.is_empty()) => {
            Ok(not(filter_object(value, depth + 1)?))
        }
        "$not" => fail(format!(
            "\"$not\" needs a non-empty filter object, got {}",
            show(value)
        )),
        _ if key.starts_with('$') => fail(format!("unknown operator {key:?}")),
        _ => field_clause(key, value, depth),
    }
}

fn sub_filters(op: &str, value: &Value, depth: usize) -> Result<Vec<Filter>> {
    let items = match value.as_array() {
        Some(items) if items.iter().all(Value::is_object) => items,
        _ => {
            return fail(format!(
                "{op:?} needs an array of filter objects, got {}",
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

impl Path {
    /// A leading `metadata.` is dropped: it names the metadata object itself (Mastra's memory
    /// writes `metadata.thread_id`).
    fn parse(name: &str) -> Result<Path> {
        if !name.split('.').all(valid_segment) {
            return fail(format!("invalid field path {name:?}"));
        }
        let within = name.strip_prefix("metadata.").unwrap_or(name);
        Ok(Path {
            name: name.to_owned(),
            segments: within.split('.').map(str::to_owned).collect(),
        })
    }

    /// The element itself, inside `$elemMatch` on `field`.
    fn element(field: &Path) -> Path {
        Path {
            name: format!("{}.$elemMatch", field.name),
            segments: Vec::new(),
        }
    }
}

/// `^[A-Za-z_][A-Za-z0-9_-]*$`: strict enough that no quote or path syntax gets through.
fn valid_segment(segment: &str) -> bool {
    let mut chars = segment.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn field_clause(path: &str, value: &Value, depth: usize) -> Result<Filter> {
    let field = Path::parse(path)?;
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

fn field_object(field: &Path, map: &Map<String, Value>, depth: usize) -> Result<Filter> {
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
fn operator_object(field: &Path, ops: &Map<String, Value>, depth: usize) -> Result<Filter> {
    check_depth(depth)?;
    let parts = ops
        .iter()
        // `$options` only modifies `$regex`, which reads it from `ops`.
        .filter(|(op, _)| op.as_str() != "$options" || !ops.contains_key("$regex"))
        .map(|(op, value)| operator(field, op, value, ops, depth))
        .collect::<Result<Vec<_>>>()?;
    Ok(join(parts, true, true))
}

fn operator(field: &Path, op: &str, value: &Value, ops: &Map<String, Value>, depth: usize) -> Result<Filter> {
    match op {
        "$eq" => Ok(equals(field, scalar_operand(field, op, value)?)),
        "$ne" => Ok(not(equals(field, scalar_operand(field, op, value)?))),
        "$gt" => ordered(field, op, value, Cmp::Gt),
        "$gte" => ordered(field, op, value, Cmp::Gte),
        "$lt" => ordered(field, op, value, Cmp::Lt),
        "$lte" => ordered(field, op, value, Cmp::Lte),
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
        "$elemMatch" => elem_match(field, value, depth),
        _ => fail(format!("unknown operator {op:?} on field {:?}", field.name)),
    }
}

// ---------------------------------------------------------------------------------------------
// Operators

/// The field's value, or one of its elements, equals `value` (null: is missing or null).
fn equals(field: &Path, value: Option<Operand>) -> Filter {
    let test = match value {
        Some(v) => Candidate::Compare(v, Cmp::Eq),
        None => Candidate::Null,
    };
    Filter::Any(field.clone(), test)
}

fn ordered(field: &Path, op: &str, value: &Value, cmp: Cmp) -> Result<Filter> {
    match value {
        Value::String(s) => Ok(Filter::Any(
            field.clone(),
            Candidate::Compare(Operand::Text(s.clone()), cmp),
        )),
        Value::Number(n) => match n.as_f64() {
            Some(n) => Ok(Filter::Any(
                field.clone(),
                Candidate::Compare(Operand::Number(n), cmp),
            )),
            None => Err(needs(op, field, "a number or a string", value)),
        },
        _ => Err(needs(op, field, "a number or a string", value)),
    }
}

fn one_of(field: &Path, op: &str, value: &Value) -> Result<Filter> {
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
        return Ok(Filter::Const(false));
    }
    let null = values.iter().any(Option::is_none);
    let values = values.into_iter().flatten().collect();
    Ok(Filter::Any(field.clone(), Candidate::OneOf { values, null }))
}

fn exists(field: &Path, value: &Value) -> Result<Filter> {
    let Some(wanted) = value.as_bool() else {
        return Err(needs("$exists", field, "true or false", value));
    };
    let present = Filter::Exists(field.clone());
    Ok(if wanted { present } else { not(present) })
}

fn contains(field: &Path, value: &Value) -> Result<Filter> {
    match value {
        Value::Array(_) => all_of(field, "$contains", value),
        Value::String(s) => Ok(Filter::Or(vec![
            Filter::Substring(field.clone(), s.clone()),
            equals(field, Some(Operand::Text(s.clone()))),
        ])),
        Value::Number(_) | Value::Bool(_) => Ok(equals(field, scalar_operand(field, "$contains", value)?)),
        _ => Err(needs(
            "$contains",
            field,
            "a string, number, boolean or an array of them",
            value,
        )),
    }
}

/// Every listed value is the field's value or one of its elements (MongoDB's `$all`).
fn all_of(field: &Path, op: &str, value: &Value) -> Result<Filter> {
    let Some(items) = value.as_array() else {
        return Err(needs(op, field, "an array", value));
    };
    if items.is_empty() {
        // MongoDB: `$all: []` matches nothing.
        return Ok(Filter::Const(false));
    }
    let parts = items
        .iter()
        .map(|item| match scalar(item) {
            Some(s) => Ok(equals(field, s)),
            None => Err(needs(
                op,
                field,
                "an array of strings, numbers, booleans or null",
                value,
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(join(parts, true, true))
}

fn negated(field: &Path, value: &Value, depth: usize) -> Result<Filter> {
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

/// Conditions on one element: field conditions on objects (`{score: {$gte: 4}}`, logical
/// operators allowed), or operators on the element itself (`{$gte: 3}`).
fn elem_match(field: &Path, value: &Value, depth: usize) -> Result<Filter> {
    let Some(conditions) = value.as_object().filter(|o| !o.is_empty()) else {
        return Err(needs(
            "$elemMatch",
            field,
            "a non-empty object of conditions",
            value,
        ));
    };
    let logical = |k: &str| matches!(k, "$and" | "$or" | "$nor" | "$not");
    let on_element = conditions.keys().all(|k| k.starts_with('$') && !logical(k));
    let inner = if on_element {
        operator_object(&Path::element(field), conditions, depth + 1)?
    } else if conditions.keys().any(|k| k.starts_with('$') && !logical(k)) {
        return Err(needs(
            "$elemMatch",
            field,
            "either field conditions or operators, not both",
            value,
        ));
    } else {
        filter_object(value, depth + 1)?
    };
    Ok(Filter::ElemMatch(field.clone(), Box::new(lower(inner, true))))
}

fn regex(field: &Path, value: &Value, options: Option<&Value>) -> Result<Filter> {
    let Some(pattern) = value.as_str() else {
        return Err(needs("$regex", field, "a string", value));
    };
    let flags = regex_flags(field, options)?;
    Ok(Filter::Any(
        field.clone(),
        Candidate::Regex(format!("{flags}{pattern}")),
    ))
}

/// MongoDB's `i`, `m`, `s` options as an RE2 inline-flag prefix such as `(?is)`.
fn regex_flags(field: &Path, options: Option<&Value>) -> Result<String> {
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

fn size(field: &Path, value: &Value) -> Result<Filter> {
    let Some(n) = value.as_u64() else {
        return Err(needs("$size", field, "a non-negative integer", value));
    };
    Ok(Filter::Size(field.clone(), n))
}

/// A scalar operand: `Some` value, or `None` for null. Arrays and objects are not scalars.
fn scalar(value: &Value) -> Option<Option<Operand>> {
    match value {
        Value::String(s) => Some(Some(Operand::Text(s.clone()))),
        Value::Number(n) => n.as_f64().map(|n| Some(Operand::Number(n))),
        Value::Bool(b) => Some(Some(Operand::Bool(*b))),
        Value::Null => Some(None),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn scalar_operand(field: &Path, op: &str, value: &Value) -> Result<Option<Operand>> {
    scalar(value).ok_or_else(|| needs(op, field, "a string, number, boolean or null", value))
}

// ---------------------------------------------------------------------------------------------
// Errors

fn fail<T>(message: String) -> Result<T> {
    Err(FilterError(format!("filter: {message}")))
}

fn needs(op: &str, field: &Path, what: &str, got: &Value) -> FilterError {
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
    use serde_json::json;

    fn error(filter: Value) -> String {
        match compile(&filter) {
            Ok(c) => panic!("expected an error for {filter}, got {}", c.sql),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn regex_keeps_a_filter_out_of_memory() {
        assert!(compile(&json!({"a": 1, "$or": [{"b": {"$gt": 2}}]}))
            .unwrap()
            .in_memory()
            .is_some());
        assert!(compile(&json!({"a": 1, "$nor": [{"b": {"$regex": "x"}}]}))
            .unwrap()
            .in_memory()
            .is_none());
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
        assert!(error(json!({"$or": {}})).contains(r#""$or" needs an array of filter objects"#));
        assert!(error(json!({"$and": [1]})).contains(r#""$and" needs an array"#));
        assert!(error(json!({"$not": 1})).contains(r#""$not" needs a non-empty filter object"#));
        assert!(error(json!({"$not": {}})).contains(r#""$not" needs a non-empty filter object"#));
        assert!(error(json!({"r": {"$elemMatch": {}}}))
            .contains(r#""$elemMatch" on field "r" needs a non-empty object"#));
        assert!(error(json!({"r": {"$elemMatch": {"$gt": 1, "a": 1}}})).contains("not both"));
        assert!(error(json!({"r": {"$elemMatch": {"a": {"$foo": 1}}}}))
            .contains(r#"unknown operator "$foo" on field "a""#));
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
