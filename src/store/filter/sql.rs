//! The SQL back-end of the filter language: a [`Filter`] as a DuckDB boolean expression over
//! a `metadata JSON` column, with every user value and path bound as a `?` parameter.
//!
//! It owns the SQL text and nothing else: validation and meaning are the parser's
//! ([`super`]). Every expression produced here is TRUE or FALSE, never NULL.

use super::{Candidate, Cmp, Filter, FilterParam, Operand, Path};

/// Name of the lambda variable that stands for one candidate value of a field. Prefixed so
/// it cannot be mistaken for a column of the caller's query.
const ELEM: &str = "filter_elem";

/// The column the filter reads; inside `$elemMatch`, a lambda variable per nesting level.
const METADATA: &str = "metadata";

/// The SQL text of `filter` and the values for its placeholders, in order.
pub(super) fn compile(filter: &Filter) -> (String, Vec<FilterParam>) {
    let sql = expression(
        filter,
        &Root {
            name: METADATA.into(),
            level: 0,
        },
    );
    (sql.text, sql.params)
}

/// What the paths of an expression start from: the metadata column, or an array element.
struct Root {
    name: String,
    level: usize,
}

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

fn expression(filter: &Filter, root: &Root) -> Sql {
    let r = root.name.as_str();
    match filter {
        Filter::Const(true) => Sql::raw("TRUE"),
        Filter::Const(false) => Sql::raw("FALSE"),
        Filter::And(parts) => join(parts, " AND ", root),
        Filter::Or(parts) => join(parts, " OR ", root),
        Filter::Not(inner) => Sql::raw("(NOT ").append(expression(inner, root)).then(")"),
        Filter::Any(path, test) => match equal_to(test) {
            Some(values) => equal_any(r, path, values).unwrap_or_else(|| any_value(r, path, candidate(test))),
            None => any_value(r, path, candidate(test)),
        },
        Filter::Exists(path) => Sql::raw(&format!("coalesce(json_exists({r}, "))
            .bind(value_path(path))
            .then("), false)"),
        Filter::NotNull(path) => Sql::raw(&format!("coalesce(json_type({r}, "))
            .bind(value_path(path))
            .then(") <> 'NULL', false)"),
        Filter::Substring(path, needle) => substring(r, path, needle),
        Filter::Size(path, n) => Sql::raw(&format!("coalesce(json_type({r}, "))
            .bind(value_path(path))
            .then(&format!(") = 'ARRAY' AND json_array_length({r}, "))
            .bind(value_path(path))
            .then(") = ")
            .bind(FilterParam::Number(*n as f64))
            .then(", false)"),
        Filter::ElemMatch(path, inner) => {
            let item = Root {
                name: format!("filter_item{}", root.level),
                level: root.level + 1,
            };
            Sql::raw(&format!("coalesce(len(list_filter(json_extract({r}, "))
                .bind(elements_path(path))
                .then(&format!("), lambda {}: ", item.name))
                .append(expression(inner, &item))
                .then(")) > 0, false)")
        }
    }
}

fn join(parts: &[Filter], op: &str, root: &Root) -> Sql {
    join_sql(parts.iter().map(|p| expression(p, root)).collect(), op)
}

/// Parts joined by `op`: a lone part stands as it is, several are parenthesized, so callers
/// can nest the result freely.
fn join_sql(mut parts: Vec<Sql>, op: &str) -> Sql {
    if parts.len() == 1 {
        return parts.remove(0);
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

/// `$."a"."b"`: segments are quoted so `-` in a key is not read as path syntax. No
/// segments: `$`, the value itself.
fn json_path(path: &Path) -> String {
    let mut out = String::from("$");
    for segment in &path.segments {
        out.push_str(&format!(".\"{segment}\""));
    }
    out
}

/// The value at the path, as JSON (SQL NULL when missing).
fn value_path(path: &Path) -> FilterParam {
    FilterParam::Text(json_path(path))
}

/// The elements of the array at the path (an empty list when it is not an array).
fn elements_path(path: &Path) -> FilterParam {
    FilterParam::Text(format!("{}[*]", json_path(path)))
}

/// True when the field's value, or any element of it when it is an array, satisfies `pred`
/// (written over [`ELEM`]). The candidate list is never NULL (a missing field gives `[NULL]`),
/// so the result is TRUE or FALSE.
fn any_value(root: &str, path: &Path, pred: Sql) -> Sql {
    Sql::raw(&format!("(len(list_filter(list_concat([json_extract({root}, "))
        .bind(value_path(path))
        .then(&format!(")], json_extract({root}, "))
        .bind(elements_path(path))
        .then(&format!(")), lambda {ELEM}: "))
        .append(pred)
        .then(")) > 0)")
}

/// The operands of an equality test (`$eq`, `$in` without null), the common case that
/// [`equal_any`] answers faster.
fn equal_to(test: &Candidate) -> Option<&[Operand]> {
    match test {
        Candidate::Compare(value, Cmp::Eq) => Some(std::slice::from_ref(value)),
        Candidate::OneOf { values, null: false } => Some(values),
        _ => None,
    }
}

/// Largest integer below which every integer is exactly a double: an integer operand under
/// it equals exactly one stored integer.
const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// [`any_value`] with an equality test, in one JSON read of most rows instead of several.
///
/// DuckDB's `json_extract` does not return the stored text: it parses the document and
/// writes the value again (yyjson), so a string comes back with one spelling of its escapes,
/// a number written with a fraction or an exponent comes back as the shortest text of its
/// double (`3.0e0` and `30e-1` as `3.0`), and one written as an integer as that integer
/// (`-0` as `0`). Two values of one kind are equal exactly when those texts are, except
/// integers at or beyond 2^53, which several texts name as one double. So the operands are
/// written the same way (by the same functions, in the query) and compared as text: the
/// value itself, then, only for an array, its elements. A number has two spellings, as an
/// integer and as a double (three for zero, whose double has a sign); a number that is not
/// finite, or a large integer, keeps the general form (`None`). The differential test holds
/// both forms to the row evaluator on stored texts spelled every way.
fn equal_any(root: &str, path: &Path, values: &[Operand]) -> Option<Sql> {
    let written = |value: Sql| {
        Sql::raw("json_extract(json_array(")
            .append(value)
            .then("), '$[0]')::VARCHAR")
    };
    let mut spellings = Vec::new();
    for value in values {
        match value {
            Operand::Text(t) => spellings.push(written(
                Sql::raw("").bind(FilterParam::Text(t.clone())).then("::VARCHAR"),
            )),
            Operand::Bool(b) => spellings.push(written(
                Sql::raw("").bind(FilterParam::Bool(*b)).then("::BOOLEAN"),
            )),
            Operand::Number(n) if !n.is_finite() || (n.fract() == 0.0 && n.abs() >= EXACT_INTEGERS) => {
                return None;
            }
            Operand::Number(n) => {
                let number = || Sql::raw("").bind(FilterParam::Number(*n)).then("::DOUBLE");
                // Stored integers are the common case: tested first.
                if n.fract() == 0.0 {
                    spellings.push(written(number().then("::BIGINT")));
                }
                spellings.push(written(number()));
                if *n == 0.0 {
                    spellings.push(written(Sql::raw("-(").append(number()).then(")")));
                }
            }
        }
    }
    if spellings.is_empty() {
        return None;
    }
    let list = |open: &str, close: &str| {
        let mut out = Sql::raw(open);
        for (i, s) in spellings.iter().enumerate() {
            if i > 0 {
                out = out.then(", ");
            }
            out = out.append(s.clone());
        }
        out.then(close)
    };
    // Each `json_extract` parses the whole document again, so the value is read once for
    // every row, then again only where the document has a `[` somewhere (a plain search in
    // its text), to see whether the value is an array, and a third time for an array's
    // elements. DuckDB evaluates each part of `OR` and `AND` only on the rows the earlier
    // parts left undecided, as long as no function wraps them: so no outer `coalesce`,
    // and every part is TRUE or FALSE by itself (a missing value reads as '', which no
    // spelling is; a missing document fails `starts_with` before the rest is read).
    Some(
        Sql::raw(&format!("(coalesce(json_extract({root}, "))
            .bind(value_path(path))
            .then(")::VARCHAR, '') IN ")
            .append(list("(", ")"))
            .then(&format!(
                " OR (contains({root}::VARCHAR, '[') AND starts_with(coalesce(json_extract({root}, "
            ))
            .bind(value_path(path))
            .then(&format!(
                ")::VARCHAR, ''), '[') AND list_has_any(json_extract({root}, "
            ))
            .bind(elements_path(path))
            .then(")::VARCHAR[], ")
            .append(list("[", "]"))
            .then(")))"),
    )
}

/// Substring test on a string field. `contains()` rather than `LIKE`, so `%` and `_` in the
/// user's text are plain characters.
fn substring(root: &str, path: &Path, needle: &str) -> Sql {
    Sql::raw(&format!("coalesce(json_type({root}, "))
        .bind(value_path(path))
        .then(&format!(
            ") = 'VARCHAR' AND contains(json_extract_string({root}, "
        ))
        .bind(value_path(path))
        .then("), ")
        .bind(FilterParam::Text(needle.to_owned()))
        .then("), false)")
}

fn candidate(test: &Candidate) -> Sql {
    match test {
        Candidate::Null => is_null(),
        Candidate::Compare(value, cmp) => compare(value, *cmp),
        Candidate::OneOf { values, null } => member_of(values, *null),
        Candidate::Regex(pattern) => Sql::raw(&format!(
            "(json_type({ELEM}) = 'VARCHAR' AND regexp_matches(json_extract_string({ELEM}, '$'), "
        ))
        .bind(FilterParam::Text(pattern.clone()))
        .then("))"),
    }
}

/// Type test and typed reading of [`ELEM`] for one kind of operand. The type test keeps
/// comparisons type-strict; `TRY_CAST` keeps a wrong type from raising an error, since SQL
/// does not promise to evaluate the test first.
fn typed(kind: &Operand) -> (String, String) {
    match kind {
        Operand::Text(_) => (
            format!("json_type({ELEM}) = 'VARCHAR'"),
            format!("json_extract_string({ELEM}, '$')"),
        ),
        Operand::Number(_) => (
            format!("json_type({ELEM}) IN ('BIGINT', 'UBIGINT', 'DOUBLE')"),
            format!("TRY_CAST({ELEM} AS DOUBLE)"),
        ),
        Operand::Bool(_) => (
            format!("json_type({ELEM}) = 'BOOLEAN'"),
            format!("TRY_CAST({ELEM} AS BOOLEAN)"),
        ),
    }
}

/// Missing and JSON null are the same to a filter, as in MongoDB.
fn is_null() -> Sql {
    Sql::raw(&format!("(coalesce(json_type({ELEM}), 'NULL') = 'NULL')"))
}

fn param(value: &Operand) -> FilterParam {
    match value {
        Operand::Text(t) => FilterParam::Text(t.clone()),
        Operand::Number(n) => FilterParam::Number(*n),
        Operand::Bool(b) => FilterParam::Bool(*b),
    }
}

/// `ELEM <cmp> value`, typed.
fn compare(value: &Operand, cmp: Cmp) -> Sql {
    let op = cmp.sql();
    let (is_kind, read) = typed(value);
    Sql::raw(&format!("({is_kind} AND {read} {op} "))
        .bind(param(value))
        .then(")")
}

/// `ELEM` equals one of `values`: one typed `IN (...)` per kind present, then the null test.
fn member_of(values: &[Operand], null: bool) -> Sql {
    let kinds = [
        Operand::Text(String::new()),
        Operand::Number(0.0),
        Operand::Bool(false),
    ];
    let mut parts: Vec<Sql> = kinds.iter().filter_map(|kind| typed_in(kind, values)).collect();
    if null {
        parts.push(is_null());
    }
    join_sql(parts, " OR ")
}

fn typed_in(kind: &Operand, values: &[Operand]) -> Option<Sql> {
    let params: Vec<FilterParam> = values
        .iter()
        .filter(|v| std::mem::discriminant(*v) == std::mem::discriminant(kind))
        .map(param)
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

#[cfg(test)]
mod tests {
    use super::super::compile;
    use duckdb::{params, Connection};
    use serde_json::{json, Value};

    use super::super::FilterParam;

    pub(crate) const ROWS: &[(&str, Option<&str>)] = &[
        (
            "a",
            Some(
                r#"{"userId":"u1","n":5,"price":9.5,"tags":["x","y"],"flag":true,"nil":null,
                "createdAt":"2026-01-10","nested":{"deep":{"k":"v"}},"user-id":"dash",
                "title":"Hello 100% World","reviews":[{"score":4,"author":"u3"}]}"#,
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
                "nums":[3,4],"createdAt":"2026-02-01",
                "reviews":[{"score":3,"author":"u1"},{"score":5,"author":"u2"}]}"#,
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

    /// The same filter through SQL and through the in-memory evaluator.
    fn check(conn: &Connection, filter: Value, expected: &[&str]) {
        assert_eq!(ids(conn, filter.clone()), expected, "SQL, filter {filter}");
        let compiled = compile(&filter).expect("compiles");
        if let Some(tree) = compiled.in_memory() {
            let in_memory: Vec<&str> = ROWS
                .iter()
                .filter(|(_, text)| {
                    let value = text.map_or(Value::Null, |t| serde_json::from_str(t).expect("json"));
                    tree.matches(&crate::store::metadata::Metadata::from(&value))
                })
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(in_memory, expected, "in memory, filter {filter}");
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
        let (path, text) = (
            FilterParam::Text("$.\"user-id\"".into()),
            FilterParam::Text("x'); DROP TABLE t; --".into()),
        );
        assert_eq!(
            c.params,
            vec![
                path.clone(),
                text.clone(),
                path,
                FilterParam::Text("$.\"user-id\"[*]".into()),
                text,
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

    /// Other writers spell values in ways serde_json does not: an equality matches every
    /// spelling of an equal value, and only those ([`equal_any`]).
    #[test]
    fn equality_matches_every_spelling_of_the_value() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (id VARCHAR, metadata JSON)")
            .expect("create");
        let rows = [
            ("int", r#"{"g": 3}"#),
            ("fraction", r#"{"g": 3.0}"#),
            ("exponent", r#"{"g": 30E-1}"#),
            ("digits", r#"{"g": 3.0000000000000001}"#),
            ("array", r#"{"g": [ 1, 3.0e0 ]}"#),
            ("nested", r#"{"g": [[3]]}"#),
            ("text", r#"{"g": "3"}"#),
            ("escaped", r#"{"g": "\u0033"}"#),
            ("zero", r#"{"g": -0}"#),
            ("negative-zero", r#"{"g": -0.0}"#),
            ("tiny", r#"{"g": 1e-400}"#),
            ("big", r#"{"g": 9007199254740993}"#),
            ("slash", r#"{"g": ["a\/b", "\ud83d\ude00"]}"#),
            ("object", r#"{"g": {"3": 3}}"#),
        ];
        for (id, metadata) in rows {
            conn.execute("INSERT INTO t VALUES (?, ?)", params![id, metadata])
                .expect("insert");
        }
        let found = |filter: Value| ids(&conn, filter);
        assert_eq!(
            found(json!({"g": 3})),
            ["array", "digits", "exponent", "fraction", "int"]
        );
        assert_eq!(found(json!({"g": 3.0})), found(json!({"g": 3})));
        assert_eq!(found(json!({"g": "3"})), ["escaped", "text"]);
        assert_eq!(found(json!({"g": 0})), ["negative-zero", "tiny", "zero"]);
        assert_eq!(found(json!({"g": {"$in": ["a/b", "x"]}})), ["slash"]);
        assert_eq!(found(json!({"g": "\u{1F600}"})), ["slash"]);
        // Beyond 2^53 the general form answers: both integers are that double.
        assert_eq!(found(json!({"g": 9007199254740992u64})), ["big"]);
        assert_eq!(found(json!({"g": {"$ne": 3}})).len(), rows.len() - 5);
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
    fn negations_never_match_a_missing_field() {
        let conn = db();
        check(&conn, json!({"userId": {"$ne": "u1"}}), &["b"]);
        check(&conn, json!({"tags": {"$ne": "x"}}), &["c", "f"]);
        check(&conn, json!({"n": {"$ne": 5}}), &["b", "c", "f"]);
        // Mastra's suite: `{rating: {$not: {$lt: 4}}}` leaves out a row with no rating.
        // b's "5" is a text: `$lt: 6` is false there (not unknown), so its negation holds.
        check(&conn, json!({"n": {"$not": {"$lt": 6}}}), &["b", "c"]);
        // `$exists` is never unknown, so its negation does match missing fields.
        check(
            &conn,
            json!({"flag": {"$not": {"$exists": true}}}),
            &["c", "d", "e"],
        );
        // Double negation gives the condition back, unknowns stay out.
        check(&conn, json!({"userId": {"$not": {"$ne": "u1"}}}), &["a", "c"]);
        check(
            &conn,
            json!({"$not": {"$not": {"userId": {"$ne": "u1"}}}}),
            &["b"],
        );
    }

    #[test]
    fn empty_logical_lists_and_the_metadata_prefix() {
        let conn = db();
        let all = ["a", "b", "c", "d", "e", "f"];
        check(&conn, json!({"$and": []}), &all);
        check(&conn, json!({"$nor": []}), &all);
        check(&conn, json!({"$or": []}), &[]);
        check(&conn, json!({"$and": [], "userId": "u1"}), &["a", "c"]);
        check(&conn, json!({"$and": [{"$or": []}]}), &[]);
        check(&conn, json!({"$not": {"$or": []}}), &all);
        check(&conn, json!({"metadata.userId": "u1"}), &["a", "c"]);
        check(&conn, json!({"metadata.nested.deep.k": "v"}), &["a"]);
    }

    #[test]
    fn elem_match_needs_one_element_to_pass_every_condition() {
        let conn = db();
        check(
            &conn,
            json!({"reviews": {"$elemMatch": {"score": {"$gte": 5}}}}),
            &["c"],
        );
        check(
            &conn,
            json!({"reviews": {"$elemMatch": {"score": {"$gte": 4}, "author": "u2"}}}),
            &["c"],
        );
        // Both conditions hold in c, but never in the same element.
        check(
            &conn,
            json!({"reviews": {"$elemMatch": {"score": 3, "author": "u2"}}}),
            &[],
        );
        check(
            &conn,
            json!({"reviews": {"$elemMatch": {"author": {"$in": ["u1", "u3"]}}}}),
            &["a", "c"],
        );
        check(
            &conn,
            json!({"nums": {"$elemMatch": {"$gt": 2, "$lt": 4}}}),
            &["b", "c"],
        );
        check(
            &conn,
            json!({"reviews": {"$not": {"$elemMatch": {"score": 4}}}}),
            &["c"],
        );
        check(&conn, json!({"userId": {"$elemMatch": {"$eq": "u1"}}}), &[]);
        check(
            &conn,
            json!({"reviews": {"$elemMatch": {"$or": [{"score": {"$gt": 4}}, {"author": "u3"}]}}}),
            &["a", "c"],
        );
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
        check(&conn, json!({"userId": {"$nin": ["u1"]}}), &["b"]);
        check(&conn, json!({"tags": {"$nin": ["y", true]}}), &["b"]);
        // A list holding null is never unknown: missing counts as null.
        check(&conn, json!({"userId": {"$nin": ["u1", null]}}), &["b"]);
        check(
            &conn,
            json!({"userId": {"$in": ["u2", null]}}),
            &["b", "d", "e", "f"],
        );
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
        check(&conn, json!({"n": {"$not": {"$gt": 4}}}), &["b", "f"]);
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
            json!({"$nor": [{"userId": "u2"}, {"tags": "y"}]}),
            // f has no userId: unknown, and `$nor` of an unknown is unknown.
            &[],
        );
        check(&conn, json!({"$nor": [{"userId": "u1"}, {"tags": "x"}]}), &[]);
        check(&conn, json!({"$not": {"userId": "u1"}}), &["b"]);
        check(&conn, json!({"userId": "u1", "tags": "y"}), &["a", "c"]);
        check(
            &conn,
            json!({"$or": [{"$and": [{"userId": "u1"}, {"n": {"$gt": 6}}]}, {"flag": false}]}),
            &["b", "c"],
        );
        check(&conn, json!({"$and": [{}]}), &["a", "b", "c", "d", "e", "f"]);
    }
}
