//! The `search` tool: exact nearest neighbours of a vector (or of a text's embedding), BM25
//! over the rows' kept text, or both fused; with an optional metadata filter.

use rmcp::{model::JsonObject, tool, tool_router, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::args::{filter_arg, input_schema, parse, tool_error, ToolError};
use super::StrideServer;
use crate::store::{validate_vector, Engine, FoundBy, Fusion, IndexInfo, Metric, SearchMode, MAX_EF_SEARCH};
use crate::store::{SearchRequest, MAX_TOP_K};

const DEFAULT_TOP_K: i64 = 10;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// Index to search.
    pub index: String,
    /// Query vector, with the index's dimension. A `vector` search takes `vector` or
    /// `query`; a `hybrid` search takes `query` and may take `vector` too (it then replaces
    /// the query's embedding); a `keyword` search takes `query` only.
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    /// Query text: embedded at once with the index's model (never debounced) for the
    /// vector list, analysed in the index's language for the keyword list.
    #[serde(default)]
    pub query: Option<String>,
    /// `vector`: by meaning, nearest embeddings. `keyword`: by the words themselves, BM25
    /// over each row's kept text (names, codes, rare terms, exact phrasing). `hybrid`: both
    /// lists under the same filter, fused; the best choice for a question typed by a
    /// person. Default: `hybrid` when `query` text is given and the index keeps text (it
    /// ranked best on a public benchmark), else `vector`.
    #[serde(default)]
    pub mode: Option<SearchMode>,
    /// How a `hybrid` search fuses its lists: `{"method": "rrf", "k": 60}` (reciprocal
    /// rank fusion, the default) or `{"method": "weighted", "vector_weight": 0.7}` (each
    /// list's scores scaled to 0..1, then mixed; 1 is vector only, 0 keyword only).
    #[serde(default)]
    pub fusion: Option<FusionArgs>,
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
    /// Drop results scoring below this, in each list's own score (similarity for the
    /// vector list, BM25 for the keyword list), before any fusion.
    #[serde(default)]
    pub min_score: Option<f64>,
    /// Return each result's vector too (default false).
    #[serde(default)]
    pub include_vector: Option<bool>,
    /// A long text that `embed` stored in chunks is one result by default: its best chunk,
    /// under the document's id, with that chunk's text and its place in the document
    /// (`metadata.chunk`: `n`, `count`, and the `start`..`end` character span). `true`
    /// returns chunks as rows instead (ids `<id>#<n>`, from 0), several per document if
    /// they rank so.
    #[serde(default)]
    pub chunks: Option<bool>,
    /// Force an engine for this call (`duckdb` is the reference scan); default: the
    /// server's `--search-engine`. With PostgreSQL, only `postgres`.
    #[serde(default)]
    pub engine: Option<Engine>,
    /// On an index with an HNSW index (PostgreSQL): candidates the graph search keeps,
    /// 1 to 1000 (default 40, and never fewer than top_k). More is better recall, slower.
    #[serde(default)]
    pub ef_search: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FusionArgs {
    /// `rrf` or `weighted`.
    pub method: FusionMethod,
    /// RRF's constant, greater than 0 (default 60): larger flattens the rank weights.
    #[serde(default)]
    pub k: Option<f64>,
    /// Weighted fusion's share of the vector list, 0 to 1 (default 0.7).
    #[serde(default)]
    pub vector_weight: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethod {
    Rrf,
    Weighted,
}

impl FusionArgs {
    fn fusion(&self) -> Result<Fusion, ToolError> {
        match self.method {
            FusionMethod::Rrf => {
                if self.vector_weight.is_some() {
                    return Err("fusion.vector_weight: belongs to method \"weighted\"; rrf takes k".into());
                }
                let k = self.k.unwrap_or(Fusion::DEFAULT_RRF_K);
                if !(k.is_finite() && k > 0.0) {
                    return Err(format!("fusion.k: must be a number greater than 0, got {k}"));
                }
                Ok(Fusion::Rrf { k })
            }
            FusionMethod::Weighted => {
                if self.k.is_some() {
                    return Err("fusion.k: belongs to method \"rrf\"; weighted takes vector_weight".into());
                }
                let w = self.vector_weight.unwrap_or(Fusion::DEFAULT_VECTOR_WEIGHT);
                if !(0.0..=1.0).contains(&w) {
                    return Err(format!("fusion.vector_weight: must be between 0 and 1, got {w}"));
                }
                Ok(Fusion::Weighted { vector_weight: w })
            }
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchHit {
    pub id: String,
    /// Higher is closer. Vector mode: cosine 1 - cosine distance, euclidean
    /// 1 / (1 + distance), dotproduct the inner product. Keyword mode: BM25 (PostgreSQL:
    /// `ts_rank_cd`). Hybrid: the fused score.
    pub score: f64,
    pub metadata: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// Keyword and hybrid searches: the rank (from 1) and score each list gave this hit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_by: Option<FoundBy>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchResult {
    /// Best first; equal scores are ordered by id.
    pub results: Vec<SearchHit>,
    /// The engine that answered: `memory`, `duckdb` or `postgres`.
    pub engine: Engine,
    /// The mode that ranked them.
    pub mode: SearchMode,
}

impl StrideServer {
    /// The mode of a search given a `query` text and no `mode`: hybrid, which ranked best on
    /// the public benchmark (BENCHMARKS.md, run 14: SciFact nDCG@10 0.719 against 0.645 by
    /// vector and 0.686 by keyword), when the index keeps text and its keyword list can be
    /// served now (the in-memory copy loaded and not bypassed by `engine: duckdb`, or
    /// PostgreSQL); but vector, as before keyword search existed, rather than failing or
    /// waiting, and for a text alone that the keyword list cannot use (only stop words, or
    /// too long). A `vector` or a `fusion` given with the text asks for hybrid.
    fn default_text_mode(
        &self,
        args: &SearchArgs,
        info: &IndexInfo,
        query: &str,
    ) -> Result<SearchMode, ToolError> {
        let served = match self.store()?.memory_report(&info.name).engine {
            Engine::Memory => args.engine != Some(Engine::Duckdb),
            Engine::Postgres => true,
            Engine::Duckdb => false,
        };
        if info.text.field.is_none() || !served {
            return Ok(SearchMode::Vector);
        }
        let searchable = SearchRequest::probe(SearchMode::Keyword, query)
            .check_text(info)
            .is_ok();
        if searchable || args.vector.is_some() || args.fusion.is_some() {
            Ok(SearchMode::Hybrid)
        } else {
            Ok(SearchMode::Vector)
        }
    }
}

#[tool_router(router = search_tools, vis = "pub(crate)")]
impl StrideServer {
    /// Find the `top_k` best rows of `index` for a question. Three modes: `hybrid` (the
    /// default for a text `query`: meaning and words, fused; best for a question typed by
    /// a person), `keyword` (BM25 over each row's kept text: names, product codes, rare or
    /// exact words), and `vector` (nearest embeddings only: the default for a `vector`;
    /// for paraphrases that share no word with the rows). Optionally restricted by a
    /// metadata `filter` and a `min_score`.
    /// Reads only committed data: a write is visible to every search that starts after it
    /// was acknowledged.
    #[tool(
        name = "search",
        input_schema = input_schema::<SearchArgs>(),
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn search(&self, args: JsonObject) -> Result<Json<SearchResult>, ToolError> {
        let mut args: SearchArgs = parse(args)?;
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
        let filter = filter_arg("filter", args.filter.take(), true)?;
        let info = self
            .store()?
            .index_info(&args.index)
            .await
            .map_err(|e| tool_error("search", e))?;
        if args.query.as_deref().is_some_and(|q| q.trim().is_empty()) {
            return Err("query: the text is empty".into());
        }
        let mode = match (args.mode, &args.query) {
            (Some(mode), _) => mode,
            (None, Some(q)) => self.default_text_mode(&args, &info, q)?,
            (None, None) => SearchMode::Vector,
        };
        let fusion = match (&args.fusion, mode) {
            (None, _) => Fusion::default(),
            (Some(f), SearchMode::Hybrid) => f.fusion()?,
            (Some(_), _) => {
                return Err(format!(
                    "fusion: only a hybrid search fuses two lists; this one is mode \"{}\"",
                    mode.as_str()
                ))
            }
        };
        let text = args.query;
        let vector = match (mode, args.vector, &text) {
            (SearchMode::Keyword, Some(_), _) => {
                return Err("vector: a keyword search ranks by words; give the text as `query`, without `vector` (or use mode \"hybrid\")".into())
            }
            (SearchMode::Keyword, None, None) => {
                return Err("query: a keyword search needs the query text".into())
            }
            (SearchMode::Keyword, None, Some(_)) => None,
            (SearchMode::Vector, Some(_), Some(_)) => {
                return Err("give either `vector` or `query`, not both (or use mode \"hybrid\", which takes both)".into())
            }
            (SearchMode::Hybrid, _, None) => {
                return Err("query: a hybrid search needs the query text (and may take a `vector` too)".into())
            }
            (_, Some(v), _) => Some(v),
            (_, None, Some(q)) => {
                // Checked before the embedding is paid for: the index must keep text.
                if mode != SearchMode::Vector {
                    let probe = SearchRequest::probe(mode, q);
                    probe.check_text(&info).map_err(|e| tool_error("search", e))?;
                }
                Some(self.pipeline()?.embed_query(&info, q).await?)
            }
            (_, None, None) => {
                return Err("give `vector` (numbers) or `query` (text) to search with".into())
            }
        };
        if let Some(vector) = &vector {
            validate_vector("vector", vector, Some(info.dimension)).map_err(|e| tool_error("search", e))?;
            if info.metric == Metric::Cosine && vector.iter().all(|x| *x == 0.0) {
                return Err(
                    "vector: an all-zero vector has no direction, so no cosine score can be computed with it"
                        .into(),
                );
            }
        }
        let req = SearchRequest {
            vector,
            text,
            mode,
            fusion,
            top_k: top_k as usize,
            filter,
            min_score: args.min_score,
            include_vector: args.include_vector.unwrap_or(false),
            ef_search: args.ef_search,
            chunks: args.chunks.unwrap_or(false),
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
                found_by: h.found_by,
            })
            .collect();
        Ok(Json(SearchResult {
            results,
            engine,
            mode,
        }))
    }
}
