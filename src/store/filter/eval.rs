//! The in-memory back-end of the filter language: a [`Filter`] evaluated in Rust over a row's
//! [`Metadata`], so a search on the in-memory copy never asks DuckDB which rows match.
//!
//! It must mean exactly what the SQL back-end ([`super::sql`]) means: the same candidates
//! (the value at the path, then the elements when it is an array), the same type-strict
//! comparisons (strings byte by byte, numbers as `f64`), the same null rules. The seeded
//! differential test at the bottom of this file holds the two equal on random metadata and
//! random filters. `$regex` is not evaluated here (see [`super::CompiledFilter::in_memory`]).

use std::cmp::Ordering;

use super::{Candidate, Cmp, Filter, Operand, Path};
use crate::store::metadata::Metadata;

impl Filter {
    /// Whether a row with this stored metadata matches. Only for filters that
    /// [`super::CompiledFilter::in_memory`] hands out: a `$regex` test never matches here.
    pub fn matches(&self, row: &Metadata) -> bool {
        match self {
            Filter::Const(c) => *c,
            Filter::And(parts) => parts.iter().all(|p| p.matches(row)),
            Filter::Or(parts) => parts.iter().any(|p| p.matches(row)),
            Filter::Not(inner) => !inner.matches(row),
            Filter::Any(path, test) => {
                let value = resolve(row, path);
                passes(test, value)
                    || matches!(value, Some(Metadata::Array(items)) if items.iter().any(|i| passes(test, Some(i))))
            }
            Filter::Exists(path) => resolve(row, path).is_some(),
            Filter::Substring(path, needle) => {
                matches!(resolve(row, path), Some(Metadata::Text(s)) if s.contains(needle.as_str()))
            }
            Filter::Size(path, n) => {
                matches!(resolve(row, path), Some(Metadata::Array(items)) if items.len() as u64 == *n)
            }
            Filter::NotNull(path) => !matches!(resolve(row, path), None | Some(Metadata::Null)),
            Filter::ElemMatch(path, inner) => {
                matches!(resolve(row, path), Some(Metadata::Array(items)) if items.iter().any(|i| inner.matches(i)))
            }
        }
    }
}

/// The value at `path`; `None` when a segment is missing or crosses a non-object.
fn resolve<'a>(row: &'a Metadata, path: &Path) -> Option<&'a Metadata> {
    path.segments
        .iter()
        .try_fold(row, |value, segment| value.get(segment))
}

/// One candidate (`None`: the field is missing) against one test.
fn passes(test: &Candidate, value: Option<&Metadata>) -> bool {
    match test {
        Candidate::Null => matches!(value, None | Some(Metadata::Null)),
        Candidate::Compare(operand, cmp) => value.is_some_and(|v| compare(v, operand, *cmp)),
        Candidate::OneOf { values, null } => {
            (*null && matches!(value, None | Some(Metadata::Null)))
                || value.is_some_and(|v| values.iter().any(|o| compare(v, o, Cmp::Eq)))
        }
        Candidate::Regex(_) => false,
    }
}

/// `value <cmp> operand` when both are of one kind; false otherwise.
fn compare(value: &Metadata, operand: &Operand, cmp: Cmp) -> bool {
    let order = match (value, operand) {
        (Metadata::Text(v), Operand::Text(o)) => v.as_bytes().cmp(o.as_bytes()),
        (Metadata::Number(v), Operand::Number(o)) => match v.as_f64().and_then(|v| v.partial_cmp(o)) {
            Some(order) => order,
            None => return false,
        },
        (Metadata::Bool(v), Operand::Bool(o)) => v.cmp(o),
        _ => return false,
    };
    match cmp {
        Cmp::Eq => order == Ordering::Equal,
        Cmp::Gt => order == Ordering::Greater,
        Cmp::Gte => order != Ordering::Less,
        Cmp::Lt => order == Ordering::Less,
        Cmp::Lte => order != Ordering::Greater,
    }
}

#[cfg(test)]
mod differential {
    //! Random metadata and random filters, answered by DuckDB (the SQL back-end), by
    //! [`Filter::matches`] row by row, and by the in-memory copy's columns
    //! ([`crate::store::columns`]): the answers must be the same row for row. Seeded; the
    //! seed is printed with any difference (set `FILTER_SEED` to replay one).

    use duckdb::{params, Connection};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::{json, Map, Value};

    use super::super::compile;
    use super::super::pg::PgParam;
    use crate::store::memory::columns::{self, Columns};
    use crate::store::metadata::Metadata;

    /// `p.q` is a key no filter path can name (a path's `.` separates segments).
    const KEYS: [&str; 6] = ["a", "b", "user-id", "n", "tags", "p.q"];
    /// Two texts longer than the columns copy ([`crate::store::columns::LONG_TEXT`]).
    const TEXTS: [&str; 11] = [
        "",
        "x",
        "X",
        "xy",
        "u1",
        "é",
        "2026-01-10",
        "2026-1",
        "z\u{1F600}",
        "xy-a-text-longer-than-what-the-columns-copy-so-it-is-checked-row-by-row",
        "xy-a-text-longer-than-what-the-columns-copy-so-it-is-checked-row-by-row!",
    ];
    const NUMBERS: [f64; 9] = [0.0, -0.0, 1.0, 1.5, -2.0, 5.0, 1e300, 9007199254740993.0, 0.1];

    fn scalar(rng: &mut StdRng) -> Value {
        match rng.random_range(0..10) {
            0 => Value::Null,
            1 => json!(rng.random_bool(0.5)),
            2..=4 => json!(TEXTS[rng.random_range(0..TEXTS.len())]),
            5 => json!(rng.random_range(-3i64..8)),
            6 => json!(u64::MAX - rng.random_range(0..2u64)),
            _ => json!(NUMBERS[rng.random_range(0..NUMBERS.len())]),
        }
    }

    fn value(rng: &mut StdRng, depth: usize) -> Value {
        match rng.random_range(0..10) {
            0..=5 => scalar(rng),
            6 | 7 => Value::Array(
                (0..rng.random_range(0..4))
                    .map(|_| value(rng, depth + 1))
                    .collect(),
            ),
            _ if depth < 2 => object(rng, depth + 1),
            _ => scalar(rng),
        }
    }

    fn object(rng: &mut StdRng, depth: usize) -> Value {
        let mut map = Map::new();
        for key in KEYS {
            if rng.random_bool(0.5) {
                map.insert(key.to_string(), value(rng, depth));
            }
        }
        Value::Object(map)
    }

    fn path(rng: &mut StdRng) -> String {
        let first = KEYS[rng.random_range(0..KEYS.len())];
        if rng.random_bool(0.1) {
            // Mastra's memory names fields this way; the prefix is the metadata itself.
            format!("metadata.{first}")
        } else if rng.random_bool(0.25) {
            format!("{first}.{}", KEYS[rng.random_range(0..KEYS.len())])
        } else {
            first.to_string()
        }
    }

    fn operand(rng: &mut StdRng) -> Value {
        let v = scalar(rng);
        if v.is_null() && rng.random_bool(0.5) {
            json!("x")
        } else {
            v
        }
    }

    fn field_test(rng: &mut StdRng, depth: usize) -> Value {
        let list =
            |rng: &mut StdRng| Value::Array((0..rng.random_range(0..4)).map(|_| operand(rng)).collect());
        let ordered = |rng: &mut StdRng| {
            if rng.random_bool(0.5) {
                json!(TEXTS[rng.random_range(0..TEXTS.len())])
            } else {
                json!(NUMBERS[rng.random_range(0..NUMBERS.len())])
            }
        };
        match rng.random_range(0..19) {
            15 | 17 if depth < 2 => json!({"$elemMatch": filter(rng, 2)}),
            16 | 18 if depth < 2 => match field_test(rng, depth + 1) {
                // Operators on the element itself.
                inner @ Value::Object(_) => json!({"$elemMatch": inner}),
                _ => json!({"$elemMatch": {"$gte": ordered(rng)}}),
            },
            0 => operand(rng),
            1 => json!({"$eq": operand(rng)}),
            2 => json!({"$ne": operand(rng)}),
            3 => json!({"$gt": ordered(rng)}),
            4 => json!({"$gte": ordered(rng)}),
            5 => json!({"$lt": ordered(rng), "$gt": ordered(rng)}),
            6 => json!({"$lte": ordered(rng)}),
            7 => json!({"$in": list(rng)}),
            8 => json!({"$nin": list(rng)}),
            9 => json!({"$exists": rng.random_bool(0.5)}),
            10 => json!({"$contains": operand(rng)}),
            11 => json!({"$contains": list(rng)}),
            12 => json!({"$all": list(rng)}),
            13 => json!({"$size": rng.random_range(0..3)}),
            _ if depth < 3 => match field_test(rng, depth + 1) {
                // `$not` takes an operator object, not a bare value.
                inner @ Value::Object(_) => json!({"$not": inner}),
                _ => json!({"$exists": true}),
            },
            _ => json!({"$exists": false}),
        }
    }

    fn filter(rng: &mut StdRng, depth: usize) -> Value {
        let mut map = Map::new();
        for _ in 0..rng.random_range(0..3) {
            match rng.random_range(0..8) {
                0 if depth < 3 => {
                    let op = ["$and", "$or", "$nor"][rng.random_range(0..3)];
                    let parts = (0..rng.random_range(0..3))
                        .map(|_| filter(rng, depth + 1))
                        .collect();
                    map.insert(op.to_string(), Value::Array(parts));
                }
                1 if depth < 3 => {
                    map.insert("$not".to_string(), filter(rng, depth + 1));
                }
                _ => {
                    map.insert(path(rng), field_test(rng, 0));
                }
            }
        }
        Value::Object(map)
    }

    // -----------------------------------------------------------------------------------------
    // The model: the documented semantics, read straight off the JSON filter in three-valued
    // logic (`None` is unknown), with no lowering. The parser's two-valued tree must match
    // exactly the rows the model calls true.

    type Truth = Option<bool>;

    fn and3(parts: impl IntoIterator<Item = Truth>) -> Truth {
        let mut unknown = false;
        for p in parts {
            match p {
                Some(false) => return Some(false),
                None => unknown = true,
                Some(true) => {}
            }
        }
        if unknown {
            None
        } else {
            Some(true)
        }
    }

    fn or3(parts: impl IntoIterator<Item = Truth>) -> Truth {
        and3(parts.into_iter().map(not3)).map(|b| !b)
    }

    fn not3(t: Truth) -> Truth {
        t.map(|b| !b)
    }

    fn model_object(filter: &Value, row: Option<&Value>) -> Truth {
        and3(
            filter
                .as_object()
                .unwrap()
                .iter()
                .map(|(key, arg)| match key.as_str() {
                    "$and" => and3(arg.as_array().unwrap().iter().map(|f| model_object(f, row))),
                    "$or" => or3(arg.as_array().unwrap().iter().map(|f| model_object(f, row))),
                    "$nor" => not3(or3(arg.as_array().unwrap().iter().map(|f| model_object(f, row)))),
                    "$not" => not3(model_object(arg, row)),
                    path => {
                        let path = path.strip_prefix("metadata.").unwrap_or(path);
                        let value = row.and_then(|row| {
                            path.split('.')
                                .try_fold(row, |v, segment| v.as_object()?.get(segment))
                        });
                        model_field(arg, value)
                    }
                }),
        )
    }

    fn model_field(test: &Value, value: Option<&Value>) -> Truth {
        match test.as_object() {
            Some(ops) => and3(
                ops.iter()
                    .filter(|(op, _)| op.as_str() != "$options")
                    .map(|(op, arg)| model_operator(op, arg, value)),
            ),
            None => model_operator("$eq", test, value),
        }
    }

    fn model_operator(op: &str, arg: &Value, value: Option<&Value>) -> Truth {
        let known = value.is_some_and(|v| !v.is_null());
        let candidates: Vec<Option<&Value>> = match value {
            Some(Value::Array(items)) => std::iter::once(value).chain(items.iter().map(Some)).collect(),
            _ => vec![value],
        };
        let is_null = |c: &Option<&Value>| c.is_none_or(Value::is_null);
        let equal = |c: &Option<&Value>, x: &Value| match (c, x) {
            (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Some(a @ (Value::String(_) | Value::Bool(_))), b) => *a == b,
            _ => false,
        };
        let eq = |x: &Value| -> Truth {
            if x.is_null() {
                Some(candidates.iter().any(is_null))
            } else if !known {
                None
            } else {
                Some(candidates.iter().any(|c| equal(c, x)))
            }
        };
        let ordered = |x: &Value, keep: fn(std::cmp::Ordering) -> bool| -> Truth {
            if !known {
                return None;
            }
            Some(candidates.iter().any(|c| {
                let order = match (c, x) {
                    (Some(Value::Number(a)), Value::Number(b)) => {
                        a.as_f64().unwrap().partial_cmp(&b.as_f64().unwrap())
                    }
                    (Some(Value::String(a)), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
                    _ => None,
                };
                order.is_some_and(keep)
            }))
        };
        let list = || arg.as_array().unwrap();
        let one_of = || -> Truth {
            if list().is_empty() {
                Some(false)
            } else if list().iter().any(Value::is_null) {
                Some(list().iter().any(|x| eq(x) == Some(true)))
            } else {
                or3(list().iter().map(eq))
            }
        };
        let all_of = || -> Truth {
            if list().is_empty() {
                Some(false)
            } else {
                and3(list().iter().map(eq))
            }
        };
        match op {
            "$eq" => eq(arg),
            "$ne" => not3(eq(arg)),
            "$gt" => ordered(arg, |o| o.is_gt()),
            "$gte" => ordered(arg, |o| o.is_ge()),
            "$lt" => ordered(arg, |o| o.is_lt()),
            "$lte" => ordered(arg, |o| o.is_le()),
            "$in" => one_of(),
            "$nin" => not3(one_of()),
            "$all" => all_of(),
            "$exists" => Some(value.is_some() == arg.as_bool().unwrap()),
            "$contains" => match arg {
                Value::Array(_) => all_of(),
                Value::String(needle) => {
                    let substring =
                        known.then(|| matches!(value, Some(Value::String(s)) if s.contains(needle.as_str())));
                    or3([substring, eq(arg)])
                }
                _ => eq(arg),
            },
            "$size" => known
                .then(|| matches!(value, Some(Value::Array(a)) if a.len() as u64 == arg.as_u64().unwrap())),
            "$not" => not3(model_field(arg, value)),
            "$elemMatch" => known.then(|| {
                let Some(Value::Array(items)) = value else {
                    return false;
                };
                let on_element =
                    arg.as_object().unwrap().keys().all(|k| {
                        k.starts_with('$') && !["$and", "$or", "$nor", "$not"].contains(&k.as_str())
                    });
                items.iter().any(|item| {
                    let truth = if on_element {
                        model_field(arg, Some(item))
                    } else {
                        model_object(arg, Some(item))
                    };
                    truth == Some(true)
                })
            }),
            other => panic!("the model has no {other}"),
        }
    }

    /// 300 stored metadata texts: no metadata, JSON null, an array and a string (written by
    /// someone else), then random objects, half of them spelled as another writer might.
    fn dataset(rng: &mut StdRng) -> Vec<Option<String>> {
        (0..300)
            .map(|i| match i {
                0 => None,
                1 => Some("null".into()),
                2 => Some("[1, \"x\"]".into()),
                3 => Some("\"x\"".into()),
                _ if rng.random_bool(0.5) => {
                    let value = object(rng, 0);
                    let mut text = String::new();
                    respell(&value, rng, &mut text);
                    Some(text)
                }
                _ => Some(object(rng, 0).to_string()),
            })
            .collect()
    }

    /// `value` as JSON text, spelled at random as other writers do: numbers with a fraction
    /// or an exponent (`3.0`, `3e0`, `1.5E0`), characters of strings as `\u` escapes (astral
    /// ones as surrogate pairs), `\/`, and spaces. It parses back to the same value.
    fn respell(value: &Value, rng: &mut StdRng, out: &mut String) {
        let space = |rng: &mut StdRng, out: &mut String| {
            if rng.random_bool(0.3) {
                out.push(' ');
            }
        };
        match value {
            Value::Number(n) if n.is_f64() => {
                let x = n.as_f64().unwrap();
                match rng.random_range(0..4) {
                    0 => out.push_str(&format!("{x:e}")),
                    1 => out.push_str(&format!("{x:E}")),
                    // More digits than a double holds: they round to the same double.
                    2 => out.push_str(&format!("{x:.20e}")),
                    _ => out.push_str(&n.to_string()),
                }
            }
            Value::Number(n) => match rng.random_range(0..5) {
                0 => out.push_str(&format!("{n}.0")),
                1 => out.push_str(&format!("{n}e0")),
                2 => out.push_str(&format!("{n}E+0")),
                3 => out.push_str(&format!("{n}.000000000000000000001")),
                _ => out.push_str(&n.to_string()),
            },
            Value::String(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' | '\\' => {
                            out.push('\\');
                            out.push(c);
                        }
                        '/' if rng.random_bool(0.5) => out.push_str("\\/"),
                        c if (c as u32) < 0x20 || rng.random_bool(0.3) => {
                            let mut units = [0u16; 2];
                            for unit in c.encode_utf16(&mut units) {
                                out.push_str(&format!("\\u{:04x}", unit));
                            }
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    space(rng, out);
                    respell(item, rng, out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                out.push('{');
                for (i, (key, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    space(rng, out);
                    respell(&Value::String(key.clone()), rng, out);
                    out.push(':');
                    space(rng, out);
                    respell(item, rng, out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    fn seed() -> u64 {
        std::env::var("FILTER_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20261123u64)
    }

    /// The same random filters, compiled for PostgreSQL ([`super::super::pg`]) and run
    /// against a real PostgreSQL, must select the same rows as the row evaluator, which the
    /// test below holds equal to DuckDB and to the three-valued model.
    ///
    /// `scripts/test` starts a throwaway cluster (`scripts/postgres`) and sets
    /// `STRIDE_VECTORS_TEST_POSTGRES` (a libpq connection string) and
    /// `STRIDE_VECTORS_TEST_PSQL` (its `psql`). Each query is sent with `\bind`, so the
    /// values travel as bound parameters of the extended protocol, as a driver sends them.
    /// Without the variables the test says so and passes, unless
    /// `STRIDE_VECTORS_REQUIRE_POSTGRES=1` (set by `scripts/test`) makes that a failure.
    #[test]
    fn postgres_agrees_on_random_filters() {
        let (Ok(url), Ok(psql)) = (
            std::env::var("STRIDE_VECTORS_TEST_POSTGRES"),
            std::env::var("STRIDE_VECTORS_TEST_PSQL"),
        ) else {
            assert!(
                std::env::var("STRIDE_VECTORS_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "STRIDE_VECTORS_TEST_POSTGRES or STRIDE_VECTORS_TEST_PSQL is not set, and STRIDE_VECTORS_REQUIRE_POSTGRES=1"
            );
            eprintln!(
                "postgres_agrees_on_random_filters: no test PostgreSQL (scripts/test starts one); not run"
            );
            return;
        };
        let seed = seed();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut script =
            String::from("\\set ON_ERROR_STOP 1\nCREATE TEMP TABLE t (i int4, metadata jsonb);\n");
        let mut rows = Vec::new();
        for (i, stored) in dataset(&mut rng).into_iter().enumerate() {
            match &stored {
                None => script += &format!("INSERT INTO t VALUES ({i}, NULL);\n"),
                Some(text) => {
                    script += &format!(
                        "INSERT INTO t VALUES ($1::int4, $2::text::jsonb) \\bind {i} {} \\g\n",
                        psql_arg(text)
                    )
                }
            }
            rows.push(Metadata::parse(stored.as_deref()).unwrap());
        }
        let mut cases = Vec::new();
        for _ in 0..1500 {
            let raw = filter(&mut rng, 0);
            let Ok(compiled) = compile(&raw) else { continue };
            let tree = compiled.in_memory().expect("no $regex is generated").clone();
            let (sql, params) = super::super::pg::compile(&tree, "metadata", 1);
            assert!(!sql.contains('\n'), "one line per query: {sql}");
            let args: Vec<String> = params.iter().map(pg_param_arg).collect();
            script += &format!(
                "SELECT coalesce(string_agg(i::text, ',' ORDER BY i), '') FROM t WHERE {sql} \\bind {} \\g\n",
                args.join(" ")
            );
            cases.push((raw, tree, sql));
        }
        assert!(cases.len() > 1000, "only {} filters compiled", cases.len());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("filters.sql");
        std::fs::write(&file, &script).unwrap();
        let out = std::process::Command::new(&psql)
            .args(["-X", "-A", "-t", "-q", "-d", &url, "-f"])
            .arg(&file)
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answers: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(answers.len(), cases.len(), "one answer per query");
        for (round, ((raw, tree, sql), answer)) in cases.iter().zip(answers).enumerate() {
            let from_pg: Vec<usize> = answer
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            let in_memory: Vec<usize> = (0..rows.len()).filter(|i| tree.matches(&rows[*i])).collect();
            assert_same_rows(
                "PostgreSQL",
                &from_pg,
                &in_memory,
                &rows,
                format_args!("seed {seed}, filter {round}: {raw}; SQL {sql}"),
            );
        }
    }

    /// Panic, naming the rows only one side selected and showing one of them, unless
    /// `engine` selected the same rows as the row evaluator.
    fn assert_same_rows(
        engine: &str,
        selected: &[usize],
        in_memory: &[usize],
        rows: &[Metadata],
        case: std::fmt::Arguments,
    ) {
        if selected == in_memory {
            return;
        }
        let only_engine: Vec<_> = selected.iter().filter(|i| !in_memory.contains(i)).collect();
        let only_memory: Vec<_> = in_memory.iter().filter(|i| !selected.contains(i)).collect();
        let example = only_engine
            .first()
            .or(only_memory.first())
            .map(|i| rows[**i].to_value());
        panic!("{case}: rows differ; only {engine} {only_engine:?}, only memory {only_memory:?}; e.g. {example:?}");
    }

    /// One argument of a psql backslash command: single-quoted, with psql's escapes.
    fn psql_arg(text: &str) -> String {
        format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
    }

    /// A parameter as the text PostgreSQL reads for the type its placeholder casts to.
    fn pg_param_arg(param: &PgParam) -> String {
        psql_arg(&match param {
            PgParam::Text(t) => t.clone(),
            PgParam::Number(n) => format!("{n:?}"),
            PgParam::Bool(b) => b.to_string(),
            PgParam::Int(n) => n.to_string(),
            PgParam::Json(v) => v.to_string(),
            // Segments are letters, digits, `_` and `-`: quoted, they need no escape.
            PgParam::Path(segments) => format!(
                "{{{}}}",
                segments
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        })
    }

    #[test]
    fn memory_and_sql_agree_on_random_filters() {
        let seed = seed();
        let mut rng = StdRng::seed_from_u64(seed);
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (i INTEGER, metadata JSON)")
            .unwrap();
        let mut rows = Vec::new();
        let mut stored_values = Vec::new();
        let mut respelled = 0;
        for (i, stored) in dataset(&mut rng).into_iter().enumerate() {
            conn.execute("INSERT INTO t VALUES (?, ?)", params![i, stored])
                .unwrap();
            rows.push(Metadata::parse(stored.as_deref()).unwrap());
            let value = stored.as_ref().map(|t| serde_json::from_str::<Value>(t).unwrap());
            respelled += usize::from(value.as_ref().is_some_and(|v| Some(v.to_string()) != stored));
            stored_values.push(value);
        }
        // Other writers' spellings are in the file, not only serde_json's.
        assert!(respelled > 100, "only {respelled} texts spelled another way");
        let chunks: Vec<Columns> = rows.chunks(columns::ROWS).map(Columns::build).collect();
        let (mut compared, mut elem_matches, mut empty_logicals) = (0, 0, 0);
        for round in 0..1500 {
            let raw = filter(&mut rng, 0);
            let Ok(compiled) = compile(&raw) else { continue };
            let tree = compiled.in_memory().expect("no $regex is generated");
            let sql = format!("SELECT i FROM t WHERE {} ORDER BY i", compiled.sql);
            let mut stmt = conn.prepare(&sql).unwrap();
            let from_sql: Vec<usize> = stmt
                .query_map(duckdb::params_from_iter(compiled.params.iter()), |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap()
                .map(|r| r.unwrap() as usize)
                .collect();
            let in_memory: Vec<usize> = (0..rows.len()).filter(|i| tree.matches(&rows[*i])).collect();
            let by_model: Vec<usize> = (0..rows.len())
                .filter(|i| model_object(&raw, stored_values[*i].as_ref()) == Some(true))
                .collect();
            assert_eq!(
                in_memory, by_model,
                "seed {seed}, round {round}: filter {raw}: rows differ from the three-valued model"
            );
            let by_columns: Vec<usize> = rows
                .chunks(columns::ROWS)
                .zip(&chunks)
                .enumerate()
                .flat_map(|(c, (chunk, cols))| {
                    let mut all = columns::NONE;
                    (0..chunk.len()).for_each(|r| all[r / 64] |= 1 << (r % 64));
                    columns::rows(cols.matching(tree, all, chunk)).map(move |r| c * columns::ROWS + r)
                })
                .collect();
            assert_eq!(
                by_columns, in_memory,
                "seed {seed}, round {round}: filter {raw}: columns differ from rows"
            );
            assert_same_rows(
                "DuckDB",
                &from_sql,
                &in_memory,
                &rows,
                format_args!("seed {seed}, round {round}: filter {raw}"),
            );
            compared += 1;
            let text = raw.to_string();
            elem_matches += usize::from(text.contains("$elemMatch") && !by_model.is_empty());
            empty_logicals += usize::from(text.contains(":[]") && text.contains("\"$"));
        }
        assert!(compared > 1000, "only {compared} filters compiled");
        // The newer operators are exercised, not just generated.
        assert!(
            elem_matches > 30,
            "only {elem_matches} $elemMatch filters matched rows"
        );
        assert!(
            empty_logicals > 30,
            "only {empty_logicals} filters with an empty list"
        );
    }
}
