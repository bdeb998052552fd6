/**
 * `StrideVector`: a Mastra vector store (`MastraVector`) that talks to a stride-vectors MCP
 * server instead of opening the database file itself. The server is the file's one writer,
 * so any number of Mastra processes, a frontend and Claude Desktop can share one
 * `stride-vectors.duckdb` without lock errors or lost writes.
 *
 * This module owns the translation between Mastra's vector API (argument shapes, validation
 * order, error messages, result shapes) and the server's MCP tools. It holds no data and no
 * filter logic of its own: filters go to the server unchanged, and the server's filter
 * language has Mastra's semantics. It must not talk to the database, and it must not retry
 * writes (the server acknowledges a write only after its commit; a retry could reorder it).
 */

import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

import { ErrorCategory, ErrorDomain, MastraError } from "@mastra/core/error";
import { MastraVector } from "@mastra/core/vector";
import type {
  CreateIndexParams,
  DeleteIndexParams,
  DeleteVectorParams,
  DeleteVectorsParams,
  DescribeIndexParams,
  IndexStats,
  QueryResult,
  QueryVectorParams,
  UpdateVectorParams,
  UpsertVectorParams,
} from "@mastra/core/vector";
import type { VectorFilter } from "@mastra/core/vector/filter";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

export type Metric = "cosine" | "euclidean" | "dotproduct";

export interface StrideVectorOptions {
  /** Mastra's store id. */
  id: string;
  /** The server to spawn. Default: `$STRIDE_VECTORS_BINARY`, else the `stride-vectors` of an
   * installed `@stride-vectors/server`, else `stride-vectors` on the PATH. */
  command?: string;
  /** Its arguments (default none; `db` adds `--db <db>`). */
  args?: string[];
  /** Extra environment for the server (added to `PATH`, `HOME` and the model variables). */
  env?: Record<string, string>;
  /** The DuckDB file. Every process naming the same file shares one owner. */
  db?: string;
  /** `DuckDBVector`'s name for `db` (so its options carry over as they are); `db` wins. */
  path?: string;
  /** `updateVector` of an id that is not stored throws (default `false`: it changes nothing
   * and returns, as Mastra's `DuckDBVector` and `PgVector` do). */
  strict?: boolean;
  /** An MCP client already connected to a stride-vectors server; nothing is spawned. */
  client?: Client;
  /** How long one tool call may take, in ms (default 120000). */
  timeoutMs?: number;
  /** What `updateVector`'s metadata does: `replace` the stored object (Mastra's SQL stores,
   * the default) or `merge` into it (JSON merge patch; `null` removes a key). */
  metadataUpdate?: "replace" | "merge";
}

/** `query` also takes a text, embedded by the server with the index's model, and ranks by
 * meaning (`vector`), by the words themselves (`keyword`, BM25 over the rows' `metadata.text`)
 * or by both fused (`hybrid`). */
export type StrideQueryParams = Omit<QueryVectorParams<VectorFilter>, "queryVector"> & {
  queryVector?: number[];
  /** Search by text instead of `queryVector` (a stride-vectors extension). In keyword and
   * hybrid modes, the words to look for. */
  queryText?: string;
  /** `vector`, `keyword` or `hybrid`. Left out: `hybrid` when `textQuery`, `vectorWeight` or
   * `fusion` is given; otherwise the server's choice (`hybrid` for a `queryText` on an index
   * that keeps text, `vector` for a `queryVector`). */
  mode?: "vector" | "keyword" | "hybrid";
  /** Mastra's DuckDBVector name for a hybrid search's text (with `queryVector`, or alone: the
   * server then embeds it too). */
  textQuery?: string;
  /** Mastra's DuckDBVector name: the vector list's weight in a hybrid search, 0 to 1
   * (weighted fusion; without it, hybrid uses reciprocal rank fusion). */
  vectorWeight?: number;
  /** The fusion exactly as the `search` tool takes it (`{method: "rrf", k}` or
   * `{method: "weighted", vector_weight}`); `vectorWeight` is its shorthand. */
  fusion?: { method: "rrf"; k?: number } | { method: "weighted"; vector_weight?: number };
  /** A long text that `embed` stored in chunks is one result by default: its best chunk,
   * under the document's id (`metadata.text` that chunk's text, `metadata.chunk` its place).
   * `true` returns every chunk as a row (ids `<id>#<n>`), as Mastra's own stores see them. */
  chunks?: boolean;
};

/** Where each list of a keyword or hybrid search ranked a hit (rank from 1) and its score. */
export interface FoundBy {
  vector?: { rank: number; score: number };
  keyword?: { rank: number; score: number };
}

/** A hit; keyword and hybrid searches also say which lists found it. */
export type StrideQueryResult = QueryResult & { foundBy?: FoundBy };

export interface EmbedDocument {
  id: string;
  text: string;
  metadata?: Record<string, unknown>;
}

export interface EmbedParams {
  indexName: string;
  documents: EmbedDocument[];
  /** Answer once the documents are embedded and committed (default: once safely queued). */
  wait?: boolean;
}

export interface EmbedResult {
  index: string;
  model: string;
  documents: { id: string; status: string; error?: string }[];
}

/** The server's `upsert` takes at most 16 MiB per message: bigger loads go in parts. */
const MAX_UPSERT_BYTES = 15 * 1024 * 1024;
const DEFAULT_TOP_K = 10;
const STORE = "STRIDE";

export class StrideVector extends MastraVector<VectorFilter> {
  private readonly options: StrideVectorOptions;
  private client?: Client;
  private connecting?: Promise<Client>;
  private readonly ownsClient: boolean;

  constructor(options: StrideVectorOptions) {
    super({ id: options.id });
    this.options = options;
    this.client = options.client;
    this.ownsClient = options.client === undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Indexes

  async createIndex({ indexName, dimension, metric = "cosine" }: CreateIndexParams): Promise<void> {
    // Before anything else: Mastra's suite asks for a refusal even when the name exists.
    if (!Number.isInteger(dimension) || dimension <= 0) {
      throw userError("CREATE_INDEX", "INVALID_DIMENSION", `dimension must be a positive integer, got ${dimension}`, {
        indexName,
      });
    }
    await this.call("create_index", { index: indexName, dimension, metric }, "CREATE_INDEX", indexName);
  }

  async listIndexes(): Promise<string[]> {
    const r = await this.call("list_indexes", {}, "LIST_INDEXES");
    return (r.indexes as { index: string }[]).map((i) => i.index);
  }

  async describeIndex({ indexName }: DescribeIndexParams): Promise<IndexStats> {
    const r = await this.call("describe_index", { index: indexName }, "DESCRIBE_INDEX", indexName);
    return { dimension: r.dimension as number, count: r.count as number, metric: r.metric as Metric };
  }

  async deleteIndex({ indexName }: DeleteIndexParams): Promise<void> {
    await this.call("delete_index", { index: indexName }, "DELETE_INDEX", indexName);
  }

  // -------------------------------------------------------------------------------------------
  // Vectors

  /**
   * Insert or replace vectors; returns their ids (generated when `ids` is not given). With
   * `deleteFilter`, the rows it matches are deleted in the same transaction first. A load
   * too big for one message (16 MiB) is sent in parts, each atomic; `deleteFilter` then
   * goes with the first part.
   */
  async upsert({ indexName, vectors, metadata, ids, deleteFilter }: UpsertVectorParams<VectorFilter>): Promise<string[]> {
    if (!Array.isArray(vectors) || vectors.length === 0) {
      throw userError("UPSERT", "EMPTY_VECTORS", "vectors must be a non-empty array", { indexName });
    }
    if (metadata && metadata.length > 0 && metadata.length !== vectors.length) {
      throw userError(
        "UPSERT",
        "METADATA_LENGTH_MISMATCH",
        `metadata has ${metadata.length} entries for ${vectors.length} vectors`,
        { indexName },
      );
    }
    if (ids && ids.length !== vectors.length) {
      throw userError("UPSERT", "IDS_LENGTH_MISMATCH", `ids has ${ids.length} entries for ${vectors.length} vectors`, {
        indexName,
      });
    }
    vectors.forEach((v, i) => checkVector(`vectors[${i}]`, v, "UPSERT", indexName));
    const rowIds = ids ?? vectors.map(() => randomUUID());
    const rows = vectors.map((vector, i) => ({
      id: rowIds[i],
      vector,
      metadata: plainMetadata(metadata?.[i], `metadata[${i}]`, "UPSERT", indexName),
    }));
    const filter = deleteFilter && !isEmpty(deleteFilter) ? deleteFilter : undefined;
    for (const [n, part] of parts(rows).entries()) {
      const args: Record<string, unknown> = { index: indexName, vectors: part };
      if (n === 0 && filter) args.delete_filter = filter;
      await this.call("upsert", args, "UPSERT", indexName);
    }
    return rowIds;
  }

  /** Top-k by vector (Mastra's `queryVector`), by text (`queryText`, embedded by the
   * server), by keyword (BM25) or both fused (`mode`, or Mastra's `textQuery` and
   * `vectorWeight`). */
  async query(params: StrideQueryParams): Promise<StrideQueryResult[]> {
    const { indexName, queryVector, queryText, textQuery, vectorWeight, fusion, topK = DEFAULT_TOP_K, filter, includeVector = false } =
      params;
    if (!(topK > 0)) {
      throw userError("QUERY", "INVALID_TOP_K", `topK must be a positive number, got ${topK}`, { indexName });
    }
    const mode = params.mode ?? (textQuery !== undefined || vectorWeight !== undefined || fusion !== undefined ? "hybrid" : "vector");
    const args: Record<string, unknown> = { index: indexName, top_k: Math.max(1, Math.floor(topK)) };
    if (queryText !== undefined && textQuery !== undefined && queryText !== textQuery) {
      throw userError("QUERY", "INVALID_ARGS", "queryText and textQuery name the same text: give one", { indexName });
    }
    const text = textQuery ?? queryText;
    if (queryVector !== undefined) checkVector("queryVector", queryVector, "QUERY", indexName);
    if (mode === "vector") {
      // Named only when asked: left out, the server chooses (hybrid for a text query on an
      // index that keeps text).
      if (params.mode === "vector") args.mode = "vector";
      if (queryVector !== undefined && text !== undefined) {
        throw userError("QUERY", "INVALID_ARGS", "give either queryVector or queryText, not both (or mode: \"hybrid\")", { indexName });
      } else if (queryVector !== undefined) {
        args.vector = queryVector;
      } else if (text !== undefined) {
        args.query = text;
      } else {
        throw userError("QUERY", "INVALID_ARGS", "queryVector (or queryText) is required: stride-vectors has no metadata-only query", {
          indexName,
        });
      }
    } else {
      if (text === undefined) {
        throw userError("QUERY", "INVALID_ARGS", `a ${mode} search needs its text: give textQuery (or queryText)`, { indexName });
      }
      args.mode = mode;
      args.query = text;
      if (queryVector !== undefined) args.vector = queryVector;
      if (vectorWeight !== undefined && fusion !== undefined) {
        throw userError("QUERY", "INVALID_ARGS", "vectorWeight is fusion's shorthand: give one of them", { indexName });
      }
      if (vectorWeight !== undefined) args.fusion = { method: "weighted", vector_weight: vectorWeight };
      if (fusion !== undefined) args.fusion = fusion;
    }
    if (filter && !isEmpty(filter)) args.filter = filter;
    if (includeVector) args.include_vector = true;
    if (params.chunks) args.chunks = true;
    const r = await this.call("search", args, "QUERY", indexName);
    type Hit = { id: string; score: number; metadata: Record<string, unknown>; vector?: number[]; found_by?: FoundBy };
    return (r.results as Hit[]).map((hit) => {
      const out: StrideQueryResult = { id: hit.id, score: hit.score, metadata: hit.metadata };
      if (includeVector && hit.vector) out.vector = hit.vector;
      if (hit.found_by) out.foundBy = hit.found_by;
      return out;
    });
  }

  /**
   * Change the vector and/or metadata of one row (`id`) or of every row `filter` matches.
   * Metadata is replaced, as in Mastra's SQL stores; a vector-only update keeps it.
   */
  async updateVector(params: UpdateVectorParams<VectorFilter>): Promise<void> {
    const { indexName, update } = params;
    const id = (params as { id?: string }).id;
    const filter = (params as { filter?: VectorFilter }).filter;
    if (id !== undefined && filter !== undefined) {
      throw userError("UPDATE_VECTOR", "MUTUALLY_EXCLUSIVE", "id and filter are mutually exclusive: give only one", {
        indexName,
      });
    }
    if (id === undefined && filter === undefined) {
      throw userError("UPDATE_VECTOR", "NO_TARGET", "Either id or filter must be provided", { indexName });
    }
    if (!update || (update.vector === undefined && update.metadata === undefined)) {
      throw userError("UPDATE_VECTOR", "NO_UPDATES", "No updates provided: give update.vector, update.metadata or both", {
        indexName,
      });
    }
    if (filter !== undefined && isEmpty(filter)) {
      throw userError("UPDATE_VECTOR", "EMPTY_FILTER", "Cannot update with empty filter", { indexName });
    }
    const args: Record<string, unknown> = { index: indexName };
    if (id !== undefined) {
      args.id = id;
      if (!this.options.strict) args.if_missing = "ignore";
    } else args.filter = filter;
    if (update.vector !== undefined) {
      checkVector("update.vector", update.vector, "UPDATE_VECTOR", indexName);
      args.vector = update.vector;
    }
    if (update.metadata !== undefined) {
      args.metadata = plainMetadata(update.metadata, "update.metadata", "UPDATE_VECTOR", indexName);
      args.metadata_mode = this.options.metadataUpdate ?? "replace";
    }
    await this.call("update", args, "UPDATE_VECTOR", indexName);
  }

  async deleteVector({ indexName, id }: DeleteVectorParams): Promise<void> {
    await this.call("delete", { index: indexName, ids: [id] }, "DELETE_VECTOR", indexName);
  }

  async deleteVectors({ indexName, ids, filter }: DeleteVectorsParams<VectorFilter>): Promise<void> {
    if (ids !== undefined && filter !== undefined) {
      throw userError("DELETE_VECTORS", "MUTUALLY_EXCLUSIVE", "ids and filter are mutually exclusive: give only one", {
        indexName,
      });
    }
    if (ids === undefined && filter === undefined) {
      throw userError("DELETE_VECTORS", "NO_TARGET", "Either filter or ids must be provided", { indexName });
    }
    if (ids !== undefined && ids.length === 0) {
      throw userError("DELETE_VECTORS", "EMPTY_IDS", "Cannot delete with empty ids array", { indexName });
    }
    if (filter !== undefined && isEmpty(filter)) {
      throw userError("DELETE_VECTORS", "EMPTY_FILTER", "Cannot delete with empty filter", { indexName });
    }
    await this.call("delete", ids !== undefined ? { index: indexName, ids } : { index: indexName, filter }, "DELETE_VECTORS", indexName);
  }

  // -------------------------------------------------------------------------------------------
  // Text in, vectors out (stride-vectors extensions)

  /**
   * Index texts: the server embeds them with its model, debounced, deduplicated and batched;
   * an accepted document is never lost. The index is created with the model's dimension on
   * first use. `wait: true` answers once they are searchable.
   */
  async embed({ indexName, documents, wait }: EmbedParams): Promise<EmbedResult> {
    const args: Record<string, unknown> = { index: indexName, documents };
    if (wait !== undefined) args.wait = wait;
    return (await this.call("embed", args, "EMBED", indexName)) as unknown as EmbedResult;
  }

  /** Wait until every queued text (of `indexName`, or of all indexes) is embedded and committed. */
  async flush({ indexName, timeoutMs }: { indexName?: string; timeoutMs?: number } = {}): Promise<Record<string, unknown>> {
    const args: Record<string, unknown> = {};
    if (indexName !== undefined) args.index = indexName;
    if (timeoutMs !== undefined) args.timeout_ms = timeoutMs;
    return this.call("flush", args, "FLUSH", indexName);
  }

  /** The server's counters: role (owner or relay), queue, memory, model. */
  async stats(): Promise<Record<string, unknown>> {
    return this.call("stats", {}, "STATS");
  }

  /** `DuckDBVector`'s name for [`disconnect`], so a swap needs no other change. */
  async close(): Promise<void> {
    await this.disconnect();
  }

  /** Close the connection; a server this store spawned exits (after finishing its writes). */
  async disconnect(): Promise<void> {
    const client = this.client ?? (await this.connecting?.catch(() => undefined));
    this.client = undefined;
    this.connecting = undefined;
    if (client && this.ownsClient) await client.close();
  }

  // -------------------------------------------------------------------------------------------
  // The MCP side

  private async connect(): Promise<Client> {
    if (this.client) return this.client;
    this.connecting ??= (async () => {
      const { command, args } = serverCommand(this.options);
      const transport = new StdioClientTransport({
        command,
        args,
        env: { ...inheritedEnv(), ...(this.options.env ?? {}) },
        stderr: "inherit",
      });
      const client = new Client({ name: "@stride-vectors/mastra", version: "0.1.0" });
      await client.connect(transport);
      this.client = client;
      return client;
    })();
    try {
      return await this.connecting;
    } catch (e) {
      this.connecting = undefined;
      throw new MastraError(
        {
          id: errorId("CONNECT", "FAILED"),
          domain: ErrorDomain.MASTRA_VECTOR,
          category: ErrorCategory.THIRD_PARTY,
          text: `could not start or reach the stride-vectors server: ${(e as Error).message}`,
        },
        e,
      );
    }
  }

  /** One tool call; its structured result, or a `MastraError` carrying the server's message. */
  private async call(
    tool: string,
    args: Record<string, unknown>,
    operation: string,
    indexName?: string,
  ): Promise<Record<string, unknown>> {
    const client = await this.connect();
    let result;
    try {
      result = await client.callTool({ name: tool, arguments: args }, undefined, {
        timeout: this.options.timeoutMs ?? 120_000,
      });
    } catch (e) {
      throw new MastraError(
        {
          id: errorId(operation, "FAILED"),
          domain: ErrorDomain.MASTRA_VECTOR,
          category: ErrorCategory.THIRD_PARTY,
          text: `${tool}: ${(e as Error).message}`,
          details: indexName === undefined ? {} : { indexName },
        },
        e,
      );
    }
    if (result.isError) {
      const content = result.content as { type: string; text?: string }[];
      const text = content.map((c) => c.text ?? "").join("\n") || `${tool} failed`;
      throw new MastraError({
        id: errorId(operation, "FAILED"),
        domain: ErrorDomain.MASTRA_VECTOR,
        category: ErrorCategory.USER,
        text,
        details: indexName === undefined ? {} : { indexName },
      });
    }
    return (result.structuredContent ?? {}) as Record<string, unknown>;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function errorId(operation: string, status: string): Uppercase<string> {
  return `MASTRA_VECTOR_${STORE}_${operation}_${status}`.toUpperCase() as Uppercase<string>;
}

function userError(operation: string, status: string, text: string, details: Record<string, string>): MastraError {
  return new MastraError({
    id: errorId(operation, status),
    domain: ErrorDomain.MASTRA_VECTOR,
    category: ErrorCategory.USER,
    text,
    details,
  });
}

/** JSON turns NaN and Infinity into null: refuse them here, by position. */
function checkVector(field: string, vector: unknown, operation: string, indexName: string): void {
  if (!Array.isArray(vector) || vector.length === 0) {
    throw userError(operation, "INVALID_VECTOR", `${field} must be a non-empty array of numbers`, { indexName });
  }
  const at = vector.findIndex((x) => typeof x !== "number" || !Number.isFinite(x));
  if (at >= 0) {
    throw userError(operation, "INVALID_VECTOR_VALUE", `${field}[${at}]: ${String(vector[at])} is not a finite number`, {
      indexName,
    });
  }
}

/** Metadata as the JSON the server will store; what JSON cannot hold is refused by name. */
function plainMetadata(metadata: unknown, where: string, operation: string, indexName: string): Record<string, unknown> {
  if (metadata === undefined || metadata === null) return {};
  let text: string;
  try {
    text = JSON.stringify(metadata);
  } catch (e) {
    throw userError(operation, "INVALID_METADATA", `${where}: not JSON (${(e as Error).message})`, { indexName });
  }
  const value = JSON.parse(text);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw userError(operation, "INVALID_METADATA", `${where}: must be an object`, { indexName });
  }
  return value;
}

function isEmpty(filter: unknown): boolean {
  return typeof filter === "object" && filter !== null && !Array.isArray(filter) && Object.keys(filter).length === 0;
}

/** Rows grouped into messages under [`MAX_UPSERT_BYTES`]. A row's size is bounded without
 * encoding its vector: no JSON number is longer than 24 characters, plus a comma. */
function parts(rows: { id: string; vector: number[]; metadata: Record<string, unknown> }[]) {
  const out: (typeof rows)[] = [];
  let part: typeof rows = [];
  let bytes = 0;
  for (const row of rows) {
    const size = 64 + row.id.length * 6 + row.vector.length * 25 + JSON.stringify(row.metadata).length;
    if (part.length > 0 && bytes + size > MAX_UPSERT_BYTES) {
      out.push(part);
      part = [];
      bytes = 0;
    }
    part.push(row);
    bytes += size;
  }
  if (part.length > 0) out.push(part);
  return out;
}

function serverCommand(options: StrideVectorOptions): { command: string; args: string[] } {
  const args = [...(options.args ?? [])];
  const db = options.db ?? options.path;
  if (db !== undefined) args.push("--db", db);
  if (options.command !== undefined) return { command: options.command, args };
  const own = process.env.STRIDE_VECTORS_BINARY;
  if (own) return { command: own, args };
  try {
    const require = createRequire(import.meta.url);
    const pkg = require.resolve("@stride-vectors/server/package.json");
    const launcher = path.join(path.dirname(pkg), "bin", "stride-vectors.js");
    if (existsSync(launcher)) return { command: process.execPath, args: [launcher, ...args] };
  } catch {
    // Not installed: fall back to the PATH.
  }
  return { command: "stride-vectors", args };
}

/** What a stdio server needs of our environment: the SDK's safe defaults plus the model's. */
function inheritedEnv(): Record<string, string> {
  const keep = ["HOME", "PATH", "USER", "LOGNAME", "SHELL", "TERM", "TMPDIR", "LANG"];
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined) continue;
    if (keep.includes(key) || key.startsWith("STRIDE_VECTORS_") || key === "VECTOR_DB_DIR" || key === "XDG_CACHE_HOME") {
      env[key] = value;
    }
  }
  return env;
}
