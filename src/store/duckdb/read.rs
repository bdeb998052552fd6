//! Reads: nearest-neighbour search and row counts, on reader connections cloned from the
//! writer's (see [`super::Store::read`]).
//!
//! Search is kept behind the one function [`search`] so that the engine behind it can change
//! (an in-memory copy kept in step by the writer) without touching its callers. Scores are
//! Mastra's: cosine `1 - array_cosine_distance`, euclidean `1 / (1 + array_distance)`,
//! dot product `array_inner_product`; higher is always closer, ties go to the smaller id.
//!
//! Nothing here writes.

use duckdb::{params, params_from_iter, Connection, ToSql};
use serde_json::{Map, Value};

use crate::store::api::*;
use crate::store::filter::CompiledFilter;
use crate::store::memory::{MemoryIndex, Rows};
use crate::store::metadata::Metadata;
use crate::store::text::fusion;

fn score_sql(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "1 - array_cosine_distance(t.vector, q.v)",
        Metric::Euclidean => "1 / (1 + array_distance(t.vector, q.v))",
        Metric::Dotproduct => "array_inner_product(t.vector, q.v)",
    }
}

/// Exact top-k of `index` for `req`. The caller has checked the vector against the index.
pub fn search(conn: &Connection, index: &IndexInfo, req: &SearchRequest) -> Result<Vec<Hit>, StoreError> {
    let vector_column = if req.include_vector {
        ", t.vector::VARCHAR AS vector"
    } else {
        ""
    };
    let filter_sql = req.filter.as_ref().map_or("TRUE", |f| f.sql.as_str());
    let min_score_sql = if req.min_score.is_some() {
        "AND score >= ?"
    } else {
        ""
    };
    // The query vector is bound once as text (the crate cannot bind arrays) and cast.
    // A NaN score is never a hit (DuckDB scores a zero vector -1 under cosine, not NaN).
    let sql = format!(
        "WITH q AS (SELECT ?::FLOAT[{dim}] AS v)
         SELECT id, score, metadata{vector_out} FROM (
             SELECT t.id AS id, {score} AS score, t.metadata::VARCHAR AS metadata{vector_column}
             FROM {table} t, q
             WHERE {filter_sql}
         ) s
         WHERE NOT isnan(score) {min_score_sql}
         ORDER BY score DESC, id ASC
         LIMIT ?",
        dim = index.dimension,
        score = score_sql(index.metric),
        table = quoted(&index.name),
        vector_out = if req.include_vector { ", vector" } else { "" },
    );
    let query_text = vector_literal(req.query_vector()?);
    let mut params: Vec<&dyn ToSql> = vec![&query_text];
    if let Some(filter) = &req.filter {
        params.extend(filter.params.iter().map(|p| p as &dyn ToSql));
    }
    if let Some(min) = &req.min_score {
        params.push(min);
    }
    let limit = req.top_k as i64;
    params.push(&limit);

    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| StoreError::internal("preparing search", e))?;
    let rows = stmt
        .query_map(params_from_iter(params), |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, f64>(1)?,
                row.get::<_, Option<String>>(2)?,
                if req.include_vector {
                    row.get::<_, Option<String>>(3)?
                } else {
                    None
                },
            ))
        })
        .map_err(|e| StoreError::internal("searching", e))?;
    let mut hits = Vec::new();
    for row in rows {
        let (id, score, metadata, vector) = row.map_err(|e| StoreError::internal("reading a hit", e))?;
        hits.push(Hit {
            metadata: parse_metadata(&id, metadata.as_deref())?,
            vector: vector.map(|v| parse_vector(&id, &v)).transpose()?,
            id,
            score,
            found_by: None,
        });
    }
    Ok(hits)
}

/// Stored metadata is a JSON object; a row written by someone else may hold `null` or
/// another JSON value, which is served as `{}` or `{"value": ...}` rather than dropped.
fn parse_metadata(id: &str, text: Option<&str>) -> Result<Map<String, Value>, StoreError> {
    let Some(text) = text else { return Ok(Map::new()) };
    serde_json::from_str::<Value>(text)
        .map(crate::store::metadata::hit_object)
        .map_err(|e| StoreError::internal(&format!("metadata of id {id:?} is not JSON"), e))
}

fn parse_vector(id: &str, text: &str) -> Result<Vec<f32>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::internal(&format!("vector of id {id:?}"), e))
}

/// Number of rows in `index`.
pub fn count(conn: &Connection, index: &IndexInfo) -> Result<u64, StoreError> {
    conn.query_row(
        &format!("SELECT count(*) FROM {}", quoted(&index.name)),
        params![],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
    .map_err(|e| StoreError::internal(&format!("counting index \"{}\"", index.name), e))
}

/// Fetch rows by id (for tests and `describe`-style lookups). Missing ids are absent.
pub fn fetch(conn: &Connection, index: &IndexInfo, ids: &[String]) -> Result<Vec<Hit>, StoreError> {
    let sql = format!(
        "SELECT id, metadata::VARCHAR, vector::VARCHAR FROM {} WHERE id = ?",
        quoted(&index.name)
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| StoreError::internal("preparing fetch", e))?;
    let mut hits = Vec::new();
    for id in ids {
        let mut rows = stmt
            .query_map(params![id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| StoreError::internal("fetching", e))?;
        if let Some(row) = rows.next() {
            let (id, metadata, vector) = row.map_err(|e| StoreError::internal("fetching", e))?;
            hits.push(Hit {
                metadata: parse_metadata(&id, metadata.as_deref())?,
                vector: Some(parse_vector(&id, &vector)?),
                score: 0.0,
                id,
                found_by: None,
            });
        }
    }
    Ok(hits)
}

/// Read a whole index into memory through Arrow (one contiguous copy per batch, no text).
pub fn load_index(conn: &Connection, index: &IndexInfo) -> Result<crate::store::memory::Builder, StoreError> {
    use duckdb::arrow::array::{Array, FixedSizeListArray, Float32Array, StringArray};
    use duckdb::arrow::compute::cast;
    use duckdb::arrow::datatypes::DataType;

    let fail = |e: &dyn std::fmt::Display| {
        StoreError::internal(&format!("loading index \"{}\" into memory", index.name), e)
    };
    let mut idx = crate::store::memory::Builder::with_text(index.dimension, index.metric, &index.text);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT id, vector, metadata::VARCHAR FROM {}",
            quoted(&index.name)
        ))
        .map_err(|e| fail(&e))?;
    for batch in stmt.query_arrow([]).map_err(|e| fail(&e))? {
        let ids = cast(batch.column(0), &DataType::Utf8).map_err(|e| fail(&e))?;
        let ids = ids
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| fail(&"id column is not text"))?;
        let vectors = batch
            .column(1)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| fail(&"vector column is not a fixed-size list"))?;
        let values = vectors
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| fail(&"vector values are not FLOAT"))?;
        let values = values.values();
        let metadata = cast(batch.column(2), &DataType::Utf8).map_err(|e| fail(&e))?;
        let metadata = metadata
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| fail(&"metadata column is not text"))?;
        let offset = vectors.offset() * index.dimension;
        let mut rows = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            // A NULL vector (possible in a table someone else wrote) has no place in a scan.
            if vectors.is_null(row) || ids.is_null(row) {
                continue;
            }
            let start = offset + row * index.dimension;
            let id = ids.value(row);
            let text = (!metadata.is_null(row)).then(|| metadata.value(row));
            let meta = Metadata::parse(text)
                .map_err(|e| fail(&format!("metadata of id {id:?} is not JSON: {e}")))?;
            rows.push((id, &values[start..start + index.dimension], meta));
        }
        // The batch's texts are analysed on every core.
        idx.upsert_many(rows);
    }
    Ok(idx)
}

/// Ids of the rows of `index` that match `filter`.
pub fn filter_ids(
    conn: &Connection,
    index: &IndexInfo,
    filter: &CompiledFilter,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let sql = format!("SELECT id FROM {} WHERE {}", quoted(&index.name), filter.sql);
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| StoreError::internal("preparing the filter", e))?;
    let rows = stmt
        .query_map(params_from_iter(filter.params.iter()), |r| r.get::<_, String>(0))
        .map_err(|e| StoreError::internal("filtering", e))?;
    rows.collect::<Result<_, _>>()
        .map_err(|e| StoreError::internal("filtering", e))
}

/// A row's metadata and, when asked, its stored vector.
pub type Details = (Map<String, Value>, Option<Vec<f32>>);

/// Metadata (and stored vectors) of the given ids, in one query.
pub fn details(
    conn: &Connection,
    index: &IndexInfo,
    ids: &[String],
    include_vector: bool,
) -> Result<std::collections::HashMap<String, Details>, StoreError> {
    let mut out = std::collections::HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    // One placeholder per id: the ids are bound, only the count shapes the text.
    let placeholders = vec!["?"; ids.len()].join(", ");
    let vector = if include_vector { ", vector::VARCHAR" } else { "" };
    let sql = format!(
        "SELECT id, metadata::VARCHAR{vector} FROM {} WHERE id IN ({placeholders})",
        quoted(&index.name)
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| StoreError::internal("preparing details", e))?;
    let rows = stmt
        .query_map(params_from_iter(ids.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                if include_vector {
                    r.get::<_, Option<String>>(2)?
                } else {
                    None
                },
            ))
        })
        .map_err(|e| StoreError::internal("reading details", e))?;
    for row in rows {
        let (id, metadata, vector) = row.map_err(|e| StoreError::internal("reading details", e))?;
        let metadata = parse_metadata(&id, metadata.as_deref())?;
        let vector = vector.map(|v| parse_vector(&id, &v)).transpose()?;
        out.insert(id, (metadata, vector));
    }
    Ok(out)
}

/// Whether a search on the in-memory copy needs the file too: a filter only DuckDB can
/// evaluate (`$regex`), or stored vectors to return.
pub fn needs_file(req: &SearchRequest) -> bool {
    req.include_vector || req.filter.as_ref().is_some_and(|f| f.in_memory().is_none())
}

/// Exact top-k from the in-memory copy: filter, scores and metadata all from `memory`.
/// When [`needs_file`] says so, `file` is a reader connection in a read transaction at the
/// same commit as `memory` (see [`crate::store::memory::Memory::begin_read`]), and the index.
pub fn search_memory(
    pool: &crate::store::memory::Memory,
    memory: &MemoryIndex,
    req: &SearchRequest,
    file: Option<(&Connection, &IndexInfo)>,
) -> Result<Vec<Hit>, StoreError> {
    let needs = || StoreError::Internal("this search needs the file, and was given none".into());
    let allowed;
    let rows = match &req.filter {
        None => Rows::All,
        Some(f) => match f.in_memory() {
            Some(tree) => Rows::Matching(tree),
            None => {
                let (conn, index) = file.ok_or_else(needs)?;
                allowed = filter_ids(conn, index, f)?;
                Rows::Allowed(&allowed)
            }
        },
    };
    let ranked = pool.install(|| rank_in_memory(memory, req, rows))?;
    let mut vectors = if req.include_vector {
        let (conn, index) = file.ok_or_else(needs)?;
        let ids: Vec<String> = ranked.iter().map(|r| memory.id(r.0).to_string()).collect();
        details(conn, index, &ids, true)?
    } else {
        std::collections::HashMap::new()
    };
    let mut hits = Vec::with_capacity(ranked.len());
    for &(position, score, found_by) in &ranked {
        let id = memory.id(position).to_string();
        let vector = if req.include_vector {
            let (_, vector) = vectors
                .remove(&id)
                .ok_or_else(|| StoreError::Internal(format!("id {id:?} is in memory but not in the file")))?;
            vector
        } else {
            None
        };
        hits.push(Hit {
            metadata: memory.metadata(position).to_map(),
            score,
            vector,
            id,
            found_by,
        });
    }
    Ok(hits)
}

/// The ranked rows of one search on a snapshot, in the search's mode: (position, score,
/// which lists found it).
fn rank_in_memory(
    memory: &MemoryIndex,
    req: &SearchRequest,
    rows: Rows<'_>,
) -> Result<Vec<(usize, f64, Option<FoundBy>)>, StoreError> {
    let keyword_terms = || {
        let text = memory
            .text()
            .ok_or_else(|| StoreError::Internal("a keyword search on an index that keeps no text".into()))?;
        Ok::<_, StoreError>(text.query_terms(req.text.as_deref().unwrap_or("")))
    };
    Ok(match req.mode {
        SearchMode::Vector => memory
            .search(req.query_vector()?, req.top_k, rows, req.min_score)
            .into_iter()
            .map(|s| (s.position, s.score as f64, None))
            .collect(),
        SearchMode::Keyword => memory
            .keyword_search(&keyword_terms()?, req.top_k, rows, req.min_score)
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let found = Found {
                    rank: i + 1,
                    score: s.score,
                };
                (
                    s.position,
                    s.score,
                    Some(FoundBy {
                        vector: None,
                        keyword: Some(found),
                    }),
                )
            })
            .collect(),
        SearchMode::Hybrid => {
            let depth = fusion::depth(req.top_k);
            let by_vector = memory.search(req.query_vector()?, depth, rows, req.min_score);
            let by_keyword = memory.keyword_search(&keyword_terms()?, depth, rows, req.min_score);
            let mut positions = std::collections::HashMap::new();
            let mut list = |hits: Vec<(usize, f64)>| -> Vec<(String, f64)> {
                hits.into_iter()
                    .map(|(position, score)| {
                        let id = memory.id(position).to_string();
                        positions.insert(id.clone(), position);
                        (id, score)
                    })
                    .collect()
            };
            let by_vector = list(by_vector.iter().map(|s| (s.position, s.score as f64)).collect());
            let by_keyword = list(by_keyword.iter().map(|s| (s.position, s.score)).collect());
            fusion::fuse(&by_vector, &by_keyword, req.fusion, req.top_k)
                .into_iter()
                .map(|f| (positions[&f.id], f.score, Some(f.found_by)))
                .collect()
        }
    })
}
