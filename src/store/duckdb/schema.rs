//! The storage layout: DDL of the index tables (Mastra's `DuckDBVector` layout), our own
//! bookkeeping schema, and the adoption of tables found in the file.
//!
//! Mastra lists every base table of `main` as an index, so the only tables we put in `main`
//! are index tables, shaped exactly as Mastra makes them:
//! `id VARCHAR PRIMARY KEY, vector FLOAT[dim], metadata JSON`. Everything else lives in the
//! schema [`BOOKKEEPING`]. On open, a table of `main` with that shape that we have not
//! registered (a file Mastra wrote) is adopted with the cosine metric, and a registration
//! whose table is gone (Mastra deleted the index) is dropped.
//!
//! This module runs only at open time and from the writer; it never answers a client.

use duckdb::{params, Connection};

use super::Catalog;
use crate::store::api::{quoted, IndexInfo, Metric, TextSettings};
use crate::store::text;

/// Our schema inside the database file.
pub const BOOKKEEPING: &str = "stride_vectors";
/// Version of the bookkeeping layout. A file with a newer version is refused, not guessed at.
pub const FORMAT_VERSION: i64 = 1;

const BOOKKEEPING_DDL: &str = "
CREATE SCHEMA IF NOT EXISTS stride_vectors;
CREATE TABLE IF NOT EXISTS stride_vectors.meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS stride_vectors.indexes (
    name VARCHAR PRIMARY KEY,
    dimension INTEGER NOT NULL,
    metric VARCHAR NOT NULL,
    model VARCHAR,
    adopted BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
-- What each index does with text (keyword search). A table of its own rather than columns
-- added to `indexes`: DuckDB 1.5.5 cannot replay an ALTER TABLE from its WAL (GetDefault-
-- Database with no default database set), so a file killed after adding columns would not
-- open; an index with no row here (a file made before) has the defaults.
CREATE TABLE IF NOT EXISTS stride_vectors.index_text (
    name VARCHAR PRIMARY KEY,
    keeps_text BOOLEAN NOT NULL,
    text_field VARCHAR,
    language VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS stride_vectors.documents (
    index_name VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    embedded_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (index_name, id)
);
CREATE TABLE IF NOT EXISTS stride_vectors.pending (
    index_name VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    text VARCHAR NOT NULL,
    metadata VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    accepted_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (index_name, id)
);
";

/// Create the bookkeeping schema if needed, check its version, reconcile it with the tables
/// in `main`, and return the catalog. Runs in one transaction.
pub fn prepare(conn: &Connection) -> anyhow::Result<Catalog> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    match prepare_in_transaction(conn) {
        Ok(catalog) => {
            conn.execute_batch("COMMIT")?;
            Ok(catalog)
        }
        Err(e) => {
            // The transaction is already failed; a rollback error adds nothing useful.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn prepare_in_transaction(conn: &Connection) -> anyhow::Result<Catalog> {
    conn.execute_batch(BOOKKEEPING_DDL)?;
    check_format_version(conn)?;
    let tables = index_tables(conn)?;
    let registered = registered_indexes(conn)?;
    for (name, dimension) in &tables {
        match registered.get(name) {
            Some(info) if info.dimension == *dimension => continue,
            Some(_) => {
                tracing::warn!(index = %name, dimension, "table dimension changed outside stride-vectors; re-registering");
                unregister(conn, name)?;
            }
            None => {
                tracing::info!(index = %name, dimension, "adopting a table made outside stride-vectors (metric cosine)");
            }
        }
        let text = TextSettings::default();
        register(conn, name, *dimension, Metric::Cosine, true, &text)?;
    }
    for name in registered.keys().filter(|n| !tables.contains_key(*n)) {
        tracing::info!(index = %name, "index table is gone; dropping its registration");
        unregister(conn, name)?;
        conn.execute(
            "DELETE FROM stride_vectors.documents WHERE index_name = ?",
            params![name],
        )?;
    }
    registered_indexes(conn)
}

fn check_format_version(conn: &Connection) -> anyhow::Result<()> {
    let found: Option<String> = conn
        .prepare("SELECT value FROM stride_vectors.meta WHERE key = 'format_version'")?
        .query_map([], |row| row.get(0))?
        .next()
        .transpose()?;
    match found {
        None => {
            conn.execute(
                "INSERT INTO stride_vectors.meta VALUES ('format_version', ?)",
                params![FORMAT_VERSION.to_string()],
            )?;
        }
        Some(v) => {
            let version: i64 = v
                .parse()
                .map_err(|_| anyhow::anyhow!("unreadable format_version {v:?} in stride_vectors.meta"))?;
            anyhow::ensure!(
                version <= FORMAT_VERSION,
                "this file has stride-vectors format {version}; this build reads up to {FORMAT_VERSION}: upgrade stride-vectors"
            );
        }
    }
    Ok(())
}

/// Base tables of `main` shaped like an index, with their dimension. Other tables are left
/// alone (and logged), since they are somebody else's.
fn index_tables(conn: &Connection) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let mut stmt = conn.prepare(
        "SELECT c.table_name,
                list(c.column_name || ' ' || c.data_type ORDER BY c.ordinal_position)
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_catalog = c.table_catalog AND t.table_schema = c.table_schema
          AND t.table_name = c.table_name
         WHERE c.table_schema = 'main' AND t.table_type = 'BASE TABLE'
           AND c.table_catalog = current_database()
         GROUP BY c.table_name",
    )?;
    let rows = stmt.query_map([], |row| {
        let name: String = row.get(0)?;
        let columns: duckdb::types::Value = row.get(1)?;
        Ok((name, list_of_strings(columns)))
    })?;
    let mut out = std::collections::BTreeMap::new();
    for row in rows {
        let (name, columns) = row?;
        match index_dimension(&columns) {
            Some(dim) if crate::store::api::validate_index_name(&name).is_ok() => {
                out.insert(name, dim);
            }
            _ => tracing::warn!(table = %name, ?columns, "table in main is not an index table; ignoring it"),
        }
    }
    Ok(out)
}

fn list_of_strings(value: duckdb::types::Value) -> Vec<String> {
    match value {
        duckdb::types::Value::List(items) => items
            .into_iter()
            .filter_map(|v| match v {
                duckdb::types::Value::Text(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `["id VARCHAR", "vector FLOAT[384]", "metadata JSON"]` -> `Some(384)`.
fn index_dimension(columns: &[String]) -> Option<usize> {
    let [id, vector, metadata] = columns else {
        return None;
    };
    if id != "id VARCHAR" || metadata != "metadata JSON" {
        return None;
    }
    let dim = vector.strip_prefix("vector FLOAT[")?.strip_suffix(']')?;
    dim.parse().ok().filter(|&d: &usize| d > 0)
}

fn registered_indexes(conn: &Connection) -> anyhow::Result<Catalog> {
    let mut stmt = conn.prepare(
        "SELECT i.name, i.dimension, i.metric, i.model, i.adopted, t.keeps_text, t.text_field, t.language
         FROM stride_vectors.indexes i LEFT JOIN stride_vectors.index_text t USING (name)
         ORDER BY i.name",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, Option<String>>(3)?,
            row.get::<_, bool>(4)?,
            row.get::<_, Option<bool>>(5)?,
            row.get::<_, Option<String>>(6)?,
            row.get::<_, Option<String>>(7)?,
        ))
    })?;
    let mut catalog = Catalog::new();
    for row in rows {
        let (name, dimension, metric, model, adopted, keeps_text, text_field, language) = row?;
        let text = TextSettings {
            field: match keeps_text {
                Some(false) => None,
                _ => Some(text_field.unwrap_or_else(|| text::DEFAULT_FIELD.to_string())),
            },
            language: language.unwrap_or_else(|| text::DEFAULT_LANGUAGE.to_string()),
        };
        let metric = Metric::parse(&metric)
            .ok_or_else(|| anyhow::anyhow!("index {name:?} has an unknown metric {metric:?}"))?;
        let dimension = usize::try_from(dimension)?;
        catalog.insert(
            name.clone(),
            IndexInfo {
                name,
                dimension,
                metric,
                model,
                adopted,
                ann: None,
                text,
            },
        );
    }
    Ok(catalog)
}

/// Record an index in the bookkeeping table.
pub fn register(
    conn: &Connection,
    name: &str,
    dimension: usize,
    metric: Metric,
    adopted: bool,
    text: &TextSettings,
) -> duckdb::Result<usize> {
    conn.execute(
        "INSERT INTO stride_vectors.indexes (name, dimension, metric, adopted) VALUES (?, ?, ?, ?)",
        params![name, dimension as i64, metric.as_str(), adopted],
    )?;
    conn.execute(
        "INSERT OR REPLACE INTO stride_vectors.index_text (name, keeps_text, text_field, language)
         VALUES (?, ?, ?, ?)",
        params![name, text.field.is_some(), text.field.as_deref(), text.language],
    )
}

/// Forget an index's registration (its table is gone or is being dropped).
pub fn unregister(conn: &Connection, name: &str) -> duckdb::Result<()> {
    conn.execute("DELETE FROM stride_vectors.indexes WHERE name = ?", params![name])?;
    conn.execute(
        "DELETE FROM stride_vectors.index_text WHERE name = ?",
        params![name],
    )?;
    Ok(())
}

/// Record the embedding model that fills an index.
pub fn set_model(conn: &Connection, name: &str, model: &str) -> duckdb::Result<usize> {
    conn.execute(
        "UPDATE stride_vectors.indexes SET model = ? WHERE name = ?",
        params![model, name],
    )
}

/// DDL of an index table, exactly Mastra's. `name` must be validated.
pub fn create_index_table_sql(name: &str, dimension: usize) -> String {
    format!(
        "CREATE TABLE {} (id VARCHAR PRIMARY KEY, vector FLOAT[{dimension}], metadata JSON)",
        quoted(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recognises_the_mastra_layout() {
        assert_eq!(
            index_dimension(&cols(&["id VARCHAR", "vector FLOAT[384]", "metadata JSON"])),
            Some(384)
        );
        assert_eq!(
            index_dimension(&cols(&["id VARCHAR", "vector FLOAT[]", "metadata JSON"])),
            None
        );
        assert_eq!(
            index_dimension(&cols(&["id INTEGER", "vector FLOAT[3]", "metadata JSON"])),
            None
        );
        assert_eq!(index_dimension(&cols(&["id VARCHAR", "vector FLOAT[3]"])), None);
    }

    #[test]
    fn adopts_a_mastra_table_and_forgets_a_dropped_one() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE goals (id VARCHAR PRIMARY KEY, vector FLOAT[3], metadata JSON);
             CREATE TABLE notes (x INTEGER);",
        )
        .unwrap();
        let catalog = prepare(&conn).unwrap();
        let goals = &catalog["goals"];
        assert_eq!(
            (goals.dimension, goals.metric, goals.adopted),
            (3, Metric::Cosine, true)
        );
        assert!(!catalog.contains_key("notes"));

        conn.execute_batch("DROP TABLE goals").unwrap();
        assert!(prepare(&conn).unwrap().is_empty());
    }

    #[test]
    fn refuses_a_newer_format() {
        let conn = Connection::open_in_memory().unwrap();
        prepare(&conn).unwrap();
        conn.execute_batch("UPDATE stride_vectors.meta SET value = '99' WHERE key = 'format_version'")
            .unwrap();
        let err = prepare(&conn).unwrap_err().to_string();
        assert!(err.contains("format 99"), "{err}");
    }
}
