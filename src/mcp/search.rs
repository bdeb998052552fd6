//! The `search` tool: exact nearest neighbours of a vector, with an optional metadata filter.

use rmcp::{model::JsonObject, tool, tool_router, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::args::{filter_arg, input_schema, parse, tool_error, ToolError};
use super::StrideServer;
use crate::store::{validate_vector, Engine, Metric, MAX_EF_SEARCH};
use crate::store::{SearchRequest, MAX_TOP_K};

const DEFAULT_TOP_K: i64 = 10;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// Index to search.
    pub index: String,
    /// Query vector, with the index's dimension. Give exactly one of `vector` and `query`.
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    /// Query text, embedded at once with the index's model (never debounced).
    #[serde(default)]
    pub query: Option<String>,
    /// Number of results, 1 to 1000 (default 10).
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Metadata filter, MongoDB style as in Mastra: `{"outcome": "helpful"}`,
    /// `{"userId": {"$ne": "u1"}}`, `{"$and": [{"a": {"$gte": 3}}, {"tags": {"$in": ["x"]}}]}`.
    /// Operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $contains $all $size $regex
    /// (with $options i, m, s) $elemMatch $not $and $or $nor; nested fields with dots.
    /// Mastra's semantics: $ne, $nin, $not and $nor never match a row missing the field.
    #[serde(default)]
    pub filter: Option<Value>,
    /// Drop results scoring below this.
    #[serde(default)]
    pub min_score: Option<f64>,
    /// Return each result's vector too (default false).
    #[serde(default)]
    pub include_vector: Option<bool>,
    /// Force an engine for this call (`duckdb` is the reference scan); default: the
    /// server's `--search-engine`. With PostgreSQL, only `postgres`.
    #[serde(default)]
    pub engine: Option<Engine>,
    /// On an index with an HNSW index (PostgreSQL): candidates the graph search keeps,
    /// 1 to 1000 (default 40, and never fewer than top_k). More is better recall, slower.
    #[serde(default)]
    pub ef_search: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchHit {
    pub id: String,
    /// Higher is closer. cosine: 1 - cosine distance; euclidean: 1 / (1 + distance);
    /// dotproduct: the inner product.
    pub score: f64,
    pub metadata: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchResult {
    /// Best first; equal scores are ordered by id.
    pub results: Vec<SearchHit>,
    /// The engine that answered: `memory`, `duckdb` or `postgres`.
    pub engine: Engine,
}

#[tool_router(router = search_tools, vis = "pub(crate)")]
impl StrideServer {
    /// Find the `top_k` stored vectors closest to `vector` (or to the text `query`, embedded
    /// with the index's model) in `index` (exact search),
    /// optionally restricted by a metadata `filter` and a `min_score`. Reads only committed
    /// data: a write is visible to every search that starts after it was acknowledged.
    #[tool(
        name = "search",
        input_schema = input_schema::<SearchArgs>(),
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn search(&self, args: JsonObject) -> Result<Json<SearchResult>, ToolError> {
        let args: SearchArgs = parse(args)?;
        let top_k = args.top_k.unwrap_or(DEFAULT_TOP_K);
        if !(1..=MAX_TOP_K as i64).contains(&top_k) {
            return Err(format!("top_k: must be between 1 and {MAX_TOP_K}, got {top_k}"));
        }
        if let Some(min) = args.min_score.filter(|m| !m.is_finite()) {
            return Err(format!("min_score: must be a finite number, got {min}"));
        }
        if let Some(ef) = args.ef_search.filter(|ef| !(1..=MAX_EF_SEARCH).contains(ef)) {
            return Err(format!(
                "ef_search: must be between 1 and {MAX_EF_SEARCH}, got {ef}"
            ));
        }
        let filter = filter_arg("filter", args.filter, true)?;
        let info = self
            .store()?
            .index_info(&args.index)
            .await
            .map_err(|e| tool_error("search", e))?;
        let vector = match (args.vector, args.query) {
            (Some(v), None) => v,
            (None, Some(q)) if q.trim().is_empty() => return Err("query: the text is empty".into()),
            (None, Some(q)) => self.pipeline()?.embed_query(&info, &q).await?,
            (Some(_), Some(_)) => return Err("give either `vector` or `query`, not both".into()),
            (None, None) => return Err("give `vector` (numbers) or `query` (text) to search with".into()),
        };
        validate_vector("vector", &vector, Some(info.dimension)).map_err(|e| tool_error("search", e))?;
        if info.metric == Metric::Cosine && vector.iter().all(|x| *x == 0.0) {
            return Err(
                "vector: an all-zero vector has no direction, so no cosine score can be computed with it"
                    .into(),
            );
        }
        let req = SearchRequest {
            vector,
            top_k: top_k as usize,
            filter,
            min_score: args.min_score,
            include_vector: args.include_vector.unwrap_or(false),
            ef_search: args.ef_search,
        };
        let (hits, engine) = self
            .store()?
            .search(info, req, args.engine)
            .await
            .map_err(|e| tool_error("search", e))?;
        let results = hits
            .into_iter()
            .map(|h| SearchHit {
                id: h.id,
                score: h.score,
                metadata: h.metadata,
                vector: h.vector,
            })
            .collect();
        Ok(Json(SearchResult { results, engine }))
    }
}
