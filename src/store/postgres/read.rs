//! Reads on PostgreSQL: search (exact, or through an HNSW index), count, fetch, and the
//! pending queue as the embedding pipeline reads it back.
//!
//! Scores are the DuckDB back-end's (and Mastra's): cosine `1 - distance` (a zero vector
//! scores -1, as DuckDB scores it, where pgvector says NaN), euclidean
//! `1 / (1 + distance)`, dot product the inner product; computed by pgvector, rounded to
//! `real` as DuckDB's are, best first, ties to the smaller id (bytewise, `COLLATE "C"`).
//! An exact search orders by that score, which no index can serve, so PostgreSQL scans
//! every row; an HNSW search orders by the index's own distance operator inside, so
//! pgvector walks its graph (`hnsw.ef_search` candidates, and since pgvector 0.8
//! iterative scans, so that a filter does not leave the top k short).
//!
//! Nothing here writes.

use std::collections::HashMap;

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use super::schema::{self, Names, NAMESPACE};
use super::{Client, Shared};
use crate::store::filter::pg::{self, PgParam};
use crate::store::metadata::hit_object;
use crate::store::text::fusion;
use crate::store::PendingDocument;
use crate::store::{Found, FoundBy, Hit, SearchMode, SearchRequest};
use crate::store::{IndexInfo, Metric, StoreError, MAX_EF_SEARCH};

/// pgvector's default `hnsw.ef_search`.
const DEFAULT_EF_SEARCH: u32 = 40;

pub(super) type Param = Box<dyn ToSql + Sync + Send>;

pub(super) fn boxed(param: PgParam) -> Param {
    match param {
        PgParam::Text(s) => Box::new(s),
        PgParam::Number(n) => Box::new(n),
        PgParam::Bool(b) => Box::new(b),
        PgParam::Int(i) => Box::new(i),
        PgParam::Path(p) => Box::new(p),
        PgParam::Json(v) => Box::new(v),
    }
}

pub(super) fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

/// pgvector's distance operator for a metric (the one its HNSW operator class indexes).
pub(super) fn distance_operator(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "<=>",
        Metric::Euclidean => "<->",
        Metric::Dotproduct => "<#>",
    }
}

/// A driver error on an index table: a table dropped by another process meanwhile is an
/// unknown index, not an internal failure.
pub(super) fn table_error(index: &str, e: &tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        return StoreError::unknown_index(index);
    }
    super::db_error(e)
}

/// Top k of `index` for `req`, in its mode. The caller has checked the vector against the
/// index and that the index keeps text when the mode needs it. A hybrid search reads both
/// lists in one repeatable-read transaction, so they see the same commit.
pub async fn search(
    client: &mut Client,
    shared: &Shared,
    index: &IndexInfo,
    req: &SearchRequest,
) -> Result<Vec<Hit>, StoreError> {
    let fail = |e: tokio_postgres::Error| table_error(&index.name, &e);
    if req.mode == SearchMode::Keyword {
        return keyword_hits(&***client, shared, index, req, req.top_k).await;
    }
    if req.mode == SearchMode::Vector && index.ann.is_none() {
        return vector_hits(&***client, shared, index, req, req.top_k).await;
    }
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(fail)?;
    let depth = match req.mode {
        SearchMode::Hybrid => fusion::depth(req.top_k),
        _ => req.top_k,
    };
    if index.ann.is_some() {
        let ef = req
            .ef_search
            .unwrap_or(DEFAULT_EF_SEARCH)
            .max(depth as u32)
            .min(MAX_EF_SEARCH);
        // SET takes no parameters; `ef` is an integer we bounded above.
        let mut settings = format!("SET LOCAL hnsw.ef_search = {ef};");
        if shared.iterative_scan {
            settings.push_str(" SET LOCAL hnsw.iterative_scan = strict_order;");
        }
        tx.batch_execute(&settings).await.map_err(fail)?;
    }
    let by_vector = vector_hits(&*tx, shared, index, req, depth).await?;
    let hits = if req.mode == SearchMode::Hybrid {
        let by_keyword = keyword_hits(&*tx, shared, index, req, depth).await?;
        fuse(by_vector, by_keyword, req)
    } else {
        by_vector
    };
    tx.commit().await.map_err(fail)?;
    Ok(hits)
}

/// Fuse two lists of hits (see [`fusion::fuse`]); each hit keeps its metadata and vector.
fn fuse(by_vector: Vec<Hit>, by_keyword: Vec<Hit>, req: &SearchRequest) -> Vec<Hit> {
    let scores =
        |hits: &[Hit]| -> Vec<(String, f64)> { hits.iter().map(|h| (h.id.clone(), h.score)).collect() };
    let fused = fusion::fuse(&scores(&by_vector), &scores(&by_keyword), req.fusion, req.top_k);
    let mut rows: HashMap<String, Hit> = by_keyword
        .into_iter()
        .chain(by_vector)
        .map(|h| (h.id.clone(), h))
        .collect();
    fused
        .into_iter()
        .filter_map(|f| {
            let mut hit = rows.remove(&f.id)?;
            hit.score = f.score;
            hit.found_by = Some(f.found_by);
            Some(hit)
        })
        .collect()
}

/// The filter of `req` as SQL on alias `t`, its values appended to `params`.
fn filter_sql(req: &SearchRequest, params: &mut Vec<Param>) -> String {
    match &req.filter {
        Some(f) => {
            let (sql, values) = pg::compile(&f.filter, "t.metadata", params.len() + 1);
            params.extend(values.into_iter().map(boxed));
            sql
        }
        None => "TRUE".to_string(),
    }
}

/// The vector list: top `k` by similarity.
async fn vector_hits(
    c: &(impl GenericClient + Sync),
    shared: &Shared,
    index: &IndexInfo,
    req: &SearchRequest,
    k: usize,
) -> Result<Vec<Hit>, StoreError> {
    let names = &shared.names;
    let vector = req.query_vector()?.to_vec();
    let mut params: Vec<Param> = vec![Box::new(pgvector::Vector::from(vector))];
    let filter_sql = filter_sql(req, &mut params);
    let distance = format!(
        "(t.embedding {} $1::{})",
        names.op(distance_operator(index.metric)),
        names.vector()
    );
    let score = match index.metric {
        Metric::Cosine => format!("coalesce(1 - nullif({distance}, 'NaN'::float8), -1)"),
        Metric::Euclidean => format!("1 / (1 + {distance})"),
        Metric::Dotproduct => format!("{distance} * -1"),
    };
    let vector_column = if req.include_vector { ", t.embedding" } else { "" };
    let vector_out = if req.include_vector { ", embedding" } else { "" };
    let min_score = match req.min_score {
        Some(min) => {
            params.push(Box::new(min));
            format!("AND score >= ${}::float8", params.len())
        }
        None => String::new(),
    };
    params.push(Box::new(k as i64));
    let limit = format!("${}::int8", params.len());
    let table = names.table(&index.name);
    let inner = format!(
        "SELECT t.vector_id, ({score})::real AS score, t.metadata{vector_column}
         FROM {table} t WHERE t.namespace = '{NAMESPACE}' AND ({filter_sql})"
    );
    let sql = match index.ann {
        // The graph gives candidates in its own order; the best of them are re-sorted.
        Some(_) => format!(
            "SELECT vector_id, score::float8, metadata{vector_out} FROM ({inner} ORDER BY {distance} LIMIT {limit}) s
             WHERE score <> 'NaN'::real {min_score} ORDER BY score DESC, vector_id COLLATE \"C\""
        ),
        None => format!(
            "SELECT vector_id, score::float8, metadata{vector_out} FROM ({inner}) s
             WHERE score <> 'NaN'::real {min_score} ORDER BY score DESC, vector_id COLLATE \"C\" LIMIT {limit}"
        ),
    };
    let rows = c
        .query(&sql, &refs(&params))
        .await
        .map_err(|e| table_error(&index.name, &e))?;
    Ok(rows
        .iter()
        .map(|row| hit(row, req.include_vector, None))
        .collect())
}

/// The keyword list: PostgreSQL's full-text search over the index's text field in its
/// language, any query word matching, ranked by `ts_rank_cd` (cover density; not BM25).
async fn keyword_hits(
    c: &(impl GenericClient + Sync),
    shared: &Shared,
    index: &IndexInfo,
    req: &SearchRequest,
    k: usize,
) -> Result<Vec<Hit>, StoreError> {
    let names = &shared.names;
    let tsvector = schema::tsvector_sql(&index.text, "t.")
        .ok_or_else(|| StoreError::invalid(format!("mode: index \"{}\" keeps no text", index.name)))?;
    let config = schema::text_config(&index.text.language);
    let mut params: Vec<Param> = vec![Box::new(req.text.clone().unwrap_or_default())];
    let filter_sql = filter_sql(req, &mut params);
    let vector_column = if req.include_vector { ", t.embedding" } else { "" };
    let min_score = match req.min_score {
        Some(min) => {
            params.push(Box::new(min));
            format!(
                "AND ts_rank_cd({tsvector}, q.query)::float8 >= ${}::float8",
                params.len()
            )
        }
        None => String::new(),
    };
    params.push(Box::new(k as i64));
    let limit = format!("${}::int8", params.len());
    // plainto_tsquery joins the query's lexemes with AND (each quoted by PostgreSQL);
    // any of them may match, so the ANDs become ORs.
    let sql = format!(
        "WITH q AS (SELECT replace(plainto_tsquery('{config}'::regconfig, $1)::text, ' & ', ' | ')::tsquery AS query)
         SELECT t.vector_id, ts_rank_cd({tsvector}, q.query)::float8 AS score, t.metadata{vector_column}
         FROM {table} t, q
         WHERE t.namespace = '{NAMESPACE}' AND {tsvector} @@ q.query AND ({filter_sql}) {min_score}
         ORDER BY score DESC, t.vector_id COLLATE \"C\" LIMIT {limit}",
        table = names.table(&index.name),
    );
    let rows = c
        .query(&sql, &refs(&params))
        .await
        .map_err(|e| table_error(&index.name, &e))?;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let score: f64 = row.get(1);
            let found = FoundBy {
                vector: None,
                keyword: Some(Found { rank: i + 1, score }),
            };
            hit(row, req.include_vector, Some(found))
        })
        .collect())
}

/// A hit from a row of (id, score, metadata[, embedding]).
fn hit(row: &tokio_postgres::Row, include_vector: bool, found_by: Option<FoundBy>) -> Hit {
    Hit {
        id: row.get(0),
        score: row.get(1),
        metadata: hit_object(row.get::<_, Option<Value>>(2).unwrap_or(Value::Null)),
        vector: if include_vector {
            row.get::<_, Option<pgvector::Vector>>(3).map(|v| v.to_vec())
        } else {
            None
        },
        found_by,
    }
}

/// Rows in `index`.
pub async fn count(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &IndexInfo,
) -> Result<u64, StoreError> {
    let row = c
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE namespace = '{NAMESPACE}'",
                names.table(&index.name)
            ),
            &[],
        )
        .await
        .map_err(|e| table_error(&index.name, &e))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// Rows by id, in the order asked; missing ids are absent.
pub async fn fetch(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &IndexInfo,
    ids: &[String],
) -> Result<Vec<Hit>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT vector_id, metadata, embedding FROM {} WHERE namespace = '{NAMESPACE}' AND vector_id = ANY($1::text[])",
                names.table(&index.name)
            ),
            &[&ids],
        )
        .await
        .map_err(|e| table_error(&index.name, &e))?;
    let mut found: HashMap<String, Hit> = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        let hit = Hit {
            metadata: hit_object(row.get::<_, Option<Value>>(1).unwrap_or(Value::Null)),
            vector: Some(
                row.get::<_, Option<pgvector::Vector>>(2)
                    .map(|v| v.to_vec())
                    .unwrap_or_default(),
            ),
            score: 0.0,
            id: id.clone(),
            found_by: None,
        };
        found.insert(id, hit);
    }
    Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
}

/// Every pending document, oldest version first.
pub async fn load_pending(
    c: &(impl GenericClient + Sync),
    names: &Names,
) -> Result<Vec<PendingDocument>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT index_name, id, seq, text, metadata, content_hash FROM {}.pending ORDER BY seq",
                names.book
            ),
            &[],
        )
        .await
        .map_err(|e| super::db_error(&e))?;
    Ok(rows
        .iter()
        .map(|r| PendingDocument {
            index: r.get(0),
            id: r.get(1),
            seq: r.get::<_, i64>(2).max(0) as u64,
            text: r.get(3),
            metadata: hit_object(r.get::<_, Value>(4)),
            hash: r.get(5),
        })
        .collect())
}

/// The queued version (seq, text) of each (index, id) that still has one.
pub async fn pending_texts(
    c: &(impl GenericClient + Sync),
    names: &Names,
    keys: &[(String, String)],
) -> Result<HashMap<(String, String), (u64, String)>, StoreError> {
    let indexes: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let rows = c
        .query(
            &format!(
                "SELECT p.index_name, p.id, p.seq, p.text FROM {}.pending p
                 JOIN unnest($1::text[], $2::text[]) AS k(index_name, id)
                   ON p.index_name = k.index_name AND p.id = k.id",
                names.book
            ),
            &[&indexes, &ids],
        )
        .await
        .map_err(|e| super::db_error(&e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                (r.get::<_, String>(0), r.get::<_, String>(1)),
                (r.get::<_, i64>(2).max(0) as u64, r.get::<_, String>(3)),
            )
        })
        .collect())
}
