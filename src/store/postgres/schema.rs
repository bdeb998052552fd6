//! The PostgreSQL layout: pgvector, the index tables in Mastra's `PgVector` shape, our
//! bookkeeping schema, and the adoption of tables Mastra made.
//!
//! Index tables are created exactly as `@mastra/pg` 1.27 creates them (see the module
//! above), so that Mastra reads them without touching them. A table of that shape that we
//! have not registered (Mastra made it) is adopted: its dimension from the column type,
//! its metric and HNSW settings from its vector index's operator class and definition, as
//! Mastra reads them; with no vector index, cosine. A table of Mastra's older layout
//! (`vector_id` unique, no `namespace`) is first given the namespace column and index,
//! the migration Mastra itself runs on it.
//!
//! Every change here runs under one advisory lock, so processes starting together do
//! not race on `CREATE`. Identifiers are either validated names, double-quoted, or names
//! read from PostgreSQL's catalog, quoted by [`quote_ident`].

use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

use super::Client;
use crate::store::text::{self, TextSettings};
use crate::store::{quoted, validate_index_name, Hnsw, IndexInfo, Metric, StoreError};

/// Version of our PostgreSQL bookkeeping layout. A newer one is refused, not guessed at.
pub const FORMAT_VERSION: i64 = 1;

/// First key of every advisory lock we take (`pg_advisory_xact_lock(int, int)`): "SVEC".
pub const LOCK_CLASS: i32 = 0x5356_4543;

/// Namespace our rows live in: Mastra's default, so Mastra sees them without being told.
pub const NAMESPACE: &str = "default";

/// Identifiers, quoted and ready to paste into SQL text.
pub struct Names {
    /// The index tables' schema.
    pub tables: String,
    /// The tables' schema, unquoted (bound as a value in catalog queries).
    pub tables_raw: String,
    /// Our bookkeeping schema.
    pub book: String,
    /// Our bookkeeping schema, unquoted (it names the queue's notification channel).
    pub book_raw: String,
    /// pgvector's schema: types and operators are qualified with it, so nothing depends
    /// on the connection's `search_path`.
    pub pgvector: String,
}

impl Names {
    pub fn table(&self, index: &str) -> String {
        format!("{}.{}", self.tables, quoted(index))
    }

    /// The table as text for `to_regclass`.
    pub fn regclass(&self, index: &str) -> String {
        self.table(index)
    }

    pub fn vector(&self) -> String {
        format!("{}.vector", self.pgvector)
    }

    /// A pgvector operator, schema-qualified (`OPERATOR(public.<=>)`).
    pub fn op(&self, op: &str) -> String {
        format!("OPERATOR({}.{op})", self.pgvector)
    }
}

/// What [`prepare`] found.
pub struct Prepared {
    pub names: Names,
    pub pgvector_version: String,
}

/// Double-quote a name read from PostgreSQL's catalog (it may hold anything).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Make sure pgvector is there, create our schema if needed, check its version, and
/// reconcile registrations with the tables.
pub async fn prepare(client: &mut Client, schema: &str) -> Result<Prepared, String> {
    let fail = |e: tokio_postgres::Error| super::explain(&e);
    // pgvector first, on its own: any client may create it at the same moment (a unique
    // violation then only says that it exists now).
    if pgvector(&***client).await.map_err(fail)?.is_none() {
        match client.batch_execute("CREATE EXTENSION IF NOT EXISTS vector").await {
            Ok(()) => {}
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {}
            Err(e) => {
                return Err(format!(
                    "pgvector is not installed in this database, and creating it failed ({}). Install pgvector on the server and run CREATE EXTENSION vector as a user allowed to (on a managed service, enable the \"vector\" extension)",
                    super::explain(&e)
                ))
            }
        }
    }
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_CLASS])
        .await
        .map_err(fail)?;
    let (pgvector_version, pgvector_schema) = pgvector(&*tx)
        .await
        .map_err(fail)?
        .ok_or("pgvector was created but cannot be found in pg_extension")?;
    let book_raw = super::bookkeeping_schema(schema);
    let names = Names {
        tables: quoted(schema),
        tables_raw: schema.to_string(),
        book: quoted(&book_raw),
        book_raw: book_raw.clone(),
        pgvector: quote_ident(&pgvector_schema),
    };
    for s in [schema, book_raw.as_str()] {
        let exists = tx
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&s])
            .await
            .map_err(fail)?
            .is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {}", quoted(s)))
                .await
                .map_err(fail)?;
        }
    }
    // Only when missing: `CREATE INDEX IF NOT EXISTS` locks its table even when the index
    // is there, and a queue write of another process waiting on that lock while holding
    // an index's lock we want next is a deadlock.
    let ready = tx
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL AND to_regprocedure($2) IS NOT NULL",
            &[
                &format!("{}.pending_due", names.book),
                &format!("{}.lock_keys(bigint[])", names.book),
            ],
        )
        .await
        .map_err(fail)?
        .get::<_, bool>(0);
    if !ready {
        tx.batch_execute(&bookkeeping_ddl(&names.book))
            .await
            .map_err(fail)?;
    }
    check_format_version(&*tx, &names).await?;
    reconcile(&*tx, &names).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(fail)?;
    Ok(Prepared {
        names,
        pgvector_version,
    })
}

async fn pgvector(
    c: &(impl GenericClient + Sync),
) -> Result<Option<(String, String)>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "SELECT e.extversion::text, n.nspname::text FROM pg_extension e
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'",
            &[],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

fn bookkeeping_ddl(book: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {book}.meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS {book}.indexes (
            name TEXT PRIMARY KEY,
            dimension INTEGER NOT NULL,
            metric TEXT NOT NULL,
            model TEXT,
            adopted BOOLEAN NOT NULL DEFAULT false,
            hnsw_m INTEGER,
            hnsw_ef_construction INTEGER,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        -- Added with keyword search: databases made before it read as the defaults.
        ALTER TABLE {book}.indexes ADD COLUMN IF NOT EXISTS keeps_text BOOLEAN DEFAULT true;
        ALTER TABLE {book}.indexes ADD COLUMN IF NOT EXISTS text_field TEXT DEFAULT 'text';
        ALTER TABLE {book}.indexes ADD COLUMN IF NOT EXISTS language TEXT DEFAULT 'english';
        CREATE TABLE IF NOT EXISTS {book}.documents (
            index_name TEXT NOT NULL,
            id TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            embedded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (index_name, id)
        );
        CREATE TABLE IF NOT EXISTS {book}.pending (
            index_name TEXT NOT NULL,
            id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            text TEXT NOT NULL,
            metadata JSONB NOT NULL,
            content_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            accepted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            first_accepted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            due_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            lease_until TIMESTAMPTZ,
            claimed_by TEXT,
            parked_error TEXT,
            PRIMARY KEY (index_name, id)
        );
        CREATE INDEX IF NOT EXISTS pending_due ON {book}.pending (due_at);
        CREATE SEQUENCE IF NOT EXISTS {book}.seq;
        -- Takes the advisory locks of `keys` one after the other, in the order given: the
        -- caller sorts them, so that two transactions never wait on each other in a cycle.
        CREATE OR REPLACE FUNCTION {book}.lock_keys(keys bigint[]) RETURNS void
        LANGUAGE plpgsql AS $$
        DECLARE k bigint;
        BEGIN
            FOREACH k IN ARRAY keys LOOP
                PERFORM pg_advisory_xact_lock(k);
            END LOOP;
        END $$;"
    )
}

async fn check_format_version(c: &(impl GenericClient + Sync), names: &Names) -> Result<(), String> {
    let fail = |e: tokio_postgres::Error| super::explain(&e);
    let found = c
        .query_opt(
            &format!(
                "SELECT value FROM {}.meta WHERE key = 'format_version'",
                names.book
            ),
            &[],
        )
        .await
        .map_err(fail)?;
    match found {
        None => {
            c.execute(
                &format!("INSERT INTO {}.meta VALUES ('format_version', $1)", names.book),
                &[&FORMAT_VERSION.to_string()],
            )
            .await
            .map_err(fail)?;
            Ok(())
        }
        Some(row) => {
            let v: String = row.get(0);
            match v.parse::<i64>() {
                Ok(n) if n <= FORMAT_VERSION => Ok(()),
                _ => Err(format!(
                    "schema {} was written by a newer stride-vectors (format {v}, this one knows {FORMAT_VERSION}); upgrade stride-vectors",
                    names.book
                )),
            }
        }
    }
}

/// One index table found in the tables' schema, as its catalog describes it.
struct Found {
    dimension: usize,
    namespaced: bool,
    metric: Metric,
    ann: Option<Hnsw>,
}

/// Register the tables we do not know (or whose width changed), and forget registrations
/// whose table is gone (with their queue and hashes). Other processes create and drop
/// indexes meanwhile, so each name is settled under its own lock, from a fresh look.
async fn reconcile(c: &(impl GenericClient + Sync), names: &Names) -> Result<(), StoreError> {
    let mut candidates: Vec<String> = all(c, names).await?.into_iter().map(|i| i.name).collect();
    candidates.extend(index_tables(c, names).await?);
    candidates.sort();
    candidates.dedup();
    for name in &candidates {
        lock_index(c, names, name, true).await?;
        let registered = registered(c, names, name).await?;
        match (registered, describe_table(c, names, name).await?) {
            (Some(info), Some(found)) if info.dimension == found.dimension => {}
            (Some(_), Some(found)) => {
                tracing::warn!(index = %name, dimension = found.dimension, "table dimension changed outside stride-vectors; re-registering");
                unregister(c, names, name).await?;
                adopt(c, names, name, found).await?;
            }
            (None, Some(found)) => adopt(c, names, name, found).await?,
            (Some(_), None) => {
                tracing::info!(index = %name, "index table is gone; dropping its registration");
                unregister(c, names, name).await?;
                forget_index(c, names, name).await?;
            }
            (None, None) => {}
        }
    }
    Ok(())
}

/// Names of the tables in the tables' schema that have Mastra's columns.
pub async fn index_tables(c: &(impl GenericClient + Sync), names: &Names) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query(
            "SELECT c.relname::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'embedding' AND a.attnum > 0 AND NOT a.attisdropped
             JOIN pg_type ty ON ty.oid = a.atttypid AND ty.typname = 'vector'
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
               AND EXISTS (SELECT 1 FROM pg_attribute b WHERE b.attrelid = c.oid AND b.attname = 'vector_id'
                           AND b.attnum > 0 AND NOT b.attisdropped)
             ORDER BY 1",
            &[&names.tables_raw],
        )
        .await
        .map_err(|e| super::db_error(&e))?;
    Ok(rows
        .into_iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|name| {
            let ok = validate_index_name(name).is_ok();
            if !ok {
                tracing::warn!(table = %name, "skipping a vector table whose name is not a valid index name");
            }
            ok
        })
        .collect())
}

/// Shape of one table, or `None` when it is not (or no longer) an index table.
async fn describe_table(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
) -> Result<Option<Found>, StoreError> {
    let fail = |e: tokio_postgres::Error| super::db_error(&e);
    let table = names.regclass(name);
    let Some(row) = c
        .query_opt(
            "SELECT a.atttypmod,
                    EXISTS (SELECT 1 FROM pg_attribute b WHERE b.attrelid = a.attrelid AND b.attname = 'namespace'
                            AND b.attnum > 0 AND NOT b.attisdropped)
             FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid AND ty.typname = 'vector'
             WHERE a.attrelid = to_regclass($1) AND a.attname = 'embedding' AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table],
        )
        .await
        .map_err(fail)?
    else {
        return Ok(None);
    };
    let typmod: i32 = row.get(0);
    let Ok(dimension) = usize::try_from(typmod) else {
        tracing::warn!(table = %name, "skipping a vector table without a fixed dimension");
        return Ok(None);
    };
    let index = c
        .query_opt(
            "SELECT am.amname::text, opc.opcname::text, pg_get_indexdef(i.indexrelid)
             FROM pg_index i
             JOIN pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_am am ON am.oid = ic.relam
             JOIN pg_opclass opc ON opc.oid = i.indclass[0]
             WHERE i.indrelid = to_regclass($1) AND opc.opcname LIKE 'vector%ops'
             ORDER BY (ic.relname = $2) DESC, ic.relname LIMIT 1",
            &[&table, &ann_index_name(name)],
        )
        .await
        .map_err(fail)?;
    let (metric, ann) = match index {
        None => (Metric::Cosine, None),
        Some(row) => {
            let (method, opclass, definition): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            let metric = if opclass.contains("l2") {
                Metric::Euclidean
            } else if opclass.contains("ip") {
                Metric::Dotproduct
            } else {
                Metric::Cosine
            };
            let ann = (method == "hnsw").then(|| Hnsw {
                m: setting(&definition, "m").unwrap_or(Hnsw::DEFAULT_M),
                ef_construction: setting(&definition, "ef_construction")
                    .unwrap_or(Hnsw::DEFAULT_EF_CONSTRUCTION),
            });
            (metric, ann)
        }
    };
    Ok(Some(Found {
        dimension,
        namespaced: row.get(1),
        metric,
        ann,
    }))
}

/// A numeric `WITH (name = 'n')` setting of an index definition.
fn setting(definition: &str, name: &str) -> Option<u32> {
    let lower = definition.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find(name) {
        let start = from + at;
        from = start + name.len();
        let before_ok = start == 0 || {
            let b = lower.as_bytes()[start - 1];
            !b.is_ascii_alphanumeric() && b != b'_'
        };
        let rest = lower[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let digits: String = rest[1..]
            .trim_start()
            .trim_start_matches('\'')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse() {
            return Some(n);
        }
    }
    None
}

/// Register a table made by someone else, after giving an old-layout table its namespace
/// (the migration `@mastra/pg` 1.27 runs itself).
async fn adopt(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
    found: Found,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| super::db_error(&e);
    if !found.namespaced {
        tracing::info!(index = %name, "giving an old Mastra table its namespace column, as @mastra/pg 1.27 does");
        let table = names.table(name);
        c.batch_execute(&format!(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS namespace VARCHAR(255) NOT NULL DEFAULT '{NAMESPACE}';
             CREATE UNIQUE INDEX IF NOT EXISTS {} ON {table} (namespace, vector_id);",
            quoted(&namespace_index_name(name))
        ))
        .await
        .map_err(fail)?;
        let legacy = c
            .query(
                "SELECT conname::text FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'u'
                 AND pg_get_constraintdef(oid) = 'UNIQUE (vector_id)'",
                &[&names.regclass(name)],
            )
            .await
            .map_err(fail)?;
        for row in legacy {
            let constraint: String = row.get(0);
            c.batch_execute(&format!(
                "ALTER TABLE {table} DROP CONSTRAINT {}",
                quote_ident(&constraint)
            ))
            .await
            .map_err(fail)?;
        }
    }
    tracing::info!(index = %name, dimension = found.dimension, metric = %found.metric, "adopting a table made outside stride-vectors");
    let info = IndexInfo {
        name: name.to_string(),
        dimension: found.dimension,
        metric: found.metric,
        model: None,
        adopted: true,
        ann: found.ann,
        text: TextSettings::default(),
    };
    register(c, names, &info).await?;
    create_text_index(c, names, name, &info.text).await
}

/// PostgreSQL's text search configuration for an index's language.
pub fn text_config(language: &str) -> &'static str {
    // Only a name of `text::LANGUAGES` ever reaches SQL: PostgreSQL ships a Snowball
    // configuration of each one's name, and `simple` stands for `none` (and anything else).
    text::LANGUAGES
        .iter()
        .copied()
        .find(|l| *l == language && *l != "none")
        .unwrap_or("simple")
}

/// The `tsvector` of a row of table alias `t` (the expression the GIN index holds, so a
/// search that writes it the same way uses the index). The field is a checked plain key.
pub fn tsvector_sql(text: &TextSettings, alias: &str) -> Option<String> {
    // A catalog edited by hand could hold anything: only a checked field reaches SQL.
    text.validate().ok()?;
    let field = text.field.as_deref()?;
    Some(format!(
        "to_tsvector('{}'::regconfig, coalesce({alias}metadata->>'{field}', ''))",
        text_config(&text.language)
    ))
}

/// The GIN index of an index's text (none when it keeps no text).
pub async fn create_text_index(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
    text: &TextSettings,
) -> Result<(), StoreError> {
    let Some(tsvector) = tsvector_sql(text, "") else {
        return Ok(());
    };
    c.batch_execute(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} USING gin ({tsvector})",
        quoted(&text_index_name(name)),
        names.table(name)
    ))
    .await
    .map_err(|e| super::db_error(&e))
}

/// The name of an index table's text index, hashed when too long.
fn text_index_name(name: &str) -> String {
    let full = format!("{name}_text_idx");
    if full.len() <= 63 {
        return full;
    }
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    let suffix = format!("_tx_{}_idx", &digest[..32]);
    format!("{}{suffix}", &name[..63 - suffix.len()])
}

/// Record an index in the catalog (its model, if any, is recorded apart).
pub async fn register(
    c: &(impl GenericClient + Sync),
    names: &Names,
    info: &IndexInfo,
) -> Result<(), StoreError> {
    let (text, ann) = (&info.text, info.ann);
    c.execute(
        &format!(
            "INSERT INTO {}.indexes (name, dimension, metric, adopted, hnsw_m, hnsw_ef_construction,
                                     keeps_text, text_field, language)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            names.book
        ),
        &[
            &info.name,
            &(info.dimension as i32),
            &info.metric.as_str(),
            &info.adopted,
            &ann.map(|a| a.m as i32),
            &ann.map(|a| a.ef_construction as i32),
            &text.field.is_some(),
            &text.field.as_deref().unwrap_or(text::DEFAULT_FIELD),
            &text.language,
        ],
    )
    .await
    .map_err(|e| super::db_error(&e))?;
    Ok(())
}

async fn unregister(c: &(impl GenericClient + Sync), names: &Names, name: &str) -> Result<(), StoreError> {
    c.execute(
        &format!("DELETE FROM {}.indexes WHERE name = $1", names.book),
        &[&name],
    )
    .await
    .map_err(|e| super::db_error(&e))?;
    Ok(())
}

/// The queue and hashes of an index that is gone.
pub async fn forget_index(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
) -> Result<(), StoreError> {
    for table in ["documents", "pending"] {
        c.execute(
            &format!("DELETE FROM {}.{table} WHERE index_name = $1", names.book),
            &[&name],
        )
        .await
        .map_err(|e| super::db_error(&e))?;
    }
    Ok(())
}

const INDEX_COLUMNS: &str =
    "name, dimension, metric, model, adopted, hnsw_m, hnsw_ef_construction, keeps_text, text_field, language";

fn index_info(row: &tokio_postgres::Row) -> Result<IndexInfo, StoreError> {
    let name: String = row.get(0);
    let metric: String = row.get(2);
    let metric = Metric::parse(&metric)
        .ok_or_else(|| StoreError::Internal(format!("index {name:?} has an unknown metric {metric:?}")))?;
    let m: Option<i32> = row.get(5);
    let ef: Option<i32> = row.get(6);
    let keeps_text: Option<bool> = row.get(7);
    let field: Option<String> = row.get(8);
    let language: Option<String> = row.get(9);
    let text = TextSettings {
        field: match keeps_text {
            Some(false) => None,
            _ => Some(field.unwrap_or_else(|| text::DEFAULT_FIELD.to_string())),
        },
        language: language.unwrap_or_else(|| text::DEFAULT_LANGUAGE.to_string()),
    };
    Ok(IndexInfo {
        text,
        dimension: row.get::<_, i32>(1).max(0) as usize,
        metric,
        model: row.get(3),
        adopted: row.get(4),
        ann: m.zip(ef).map(|(m, ef)| Hnsw {
            m: m.max(0) as u32,
            ef_construction: ef.max(0) as u32,
        }),
        name,
    })
}

/// The registration of `name`, if any.
pub async fn registered(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
) -> Result<Option<IndexInfo>, StoreError> {
    let row = c
        .query_opt(
            &format!(
                "SELECT {INDEX_COLUMNS} FROM {}.indexes WHERE name = $1",
                names.book
            ),
            &[&name],
        )
        .await
        .map_err(|e| super::db_error(&e))?;
    row.as_ref().map(index_info).transpose()
}

/// Every registered index, by name.
pub async fn all(c: &(impl GenericClient + Sync), names: &Names) -> Result<Vec<IndexInfo>, StoreError> {
    let rows = c
        .query(
            &format!("SELECT {INDEX_COLUMNS} FROM {}.indexes ORDER BY name", names.book),
            &[],
        )
        .await
        .map_err(|e| super::db_error(&e))?;
    rows.iter().map(index_info).collect()
}

/// The registration of `name`; a table made since we started (by Mastra) is adopted first.
pub async fn lookup(client: &mut Client, names: &Names, name: &str) -> Result<Option<IndexInfo>, StoreError> {
    if let Some(info) = registered(&***client, names, name).await? {
        return Ok(Some(info));
    }
    adopt_if_present(client, names, name).await
}

/// Adopt `name` if a table of that name is there and unregistered (under the lock).
pub async fn adopt_if_present(
    client: &mut Client,
    names: &Names,
    name: &str,
) -> Result<Option<IndexInfo>, StoreError> {
    let fail = |e: tokio_postgres::Error| super::db_error(&e);
    let present = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&names.regclass(name)])
        .await
        .map_err(fail)?
        .get::<_, bool>(0);
    if !present {
        return Ok(None);
    }
    let tx = client.transaction().await.map_err(fail)?;
    lock_index(&*tx, names, name, true).await?;
    if registered(&*tx, names, name).await?.is_none() {
        if let Some(found) = describe_table(&*tx, names, name).await? {
            adopt(&*tx, names, name, found).await?;
        }
    }
    let info = registered(&*tx, names, name).await?;
    tx.commit().await.map_err(fail)?;
    Ok(info)
}

/// The advisory lock of one index for the rest of the transaction: shared for row
/// changes, exclusive to create or drop it.
pub async fn lock_index(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
    exclusive: bool,
) -> Result<(), StoreError> {
    let sql = if exclusive {
        "SELECT pg_advisory_xact_lock($1, hashtext($2))"
    } else {
        "SELECT pg_advisory_xact_lock_shared($1, hashtext($2))"
    };
    let key = format!("{}.{name}", names.tables_raw);
    c.execute(sql, &[&LOCK_CLASS, &key])
        .await
        .map_err(|e| super::db_error(&e))?;
    Ok(())
}

/// The 64-bit advisory lock key of one id of one index (the one-key lock space, apart
/// from the two-key locks of whole indexes).
pub fn id_key(names: &Names, index: &str, id: &str) -> i64 {
    let mut hasher = Sha256::new();
    for part in [names.book_raw.as_str(), index, id] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Lock the ids a write is about, for the rest of its transaction, after its index lock:
/// every write of an id (rows, queue, stored texts, embeddings landing) then runs alone
/// for that id, and sees what the one before it committed. Keys are taken in one global
/// order, so two writers never deadlock on them.
pub async fn lock_ids<S: AsRef<str>>(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    ids: &[S],
) -> Result<(), StoreError> {
    // A chunk's id also takes its document's lock: every write of a long text acts on all
    // of its rows, under the document's id.
    let mut keys: Vec<i64> = ids
        .iter()
        .flat_map(|id| [Some(id.as_ref()), crate::store::chunks::chunk_shaped(id.as_ref())])
        .flatten()
        .map(|id| id_key(names, index, id))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    c.execute(&format!("SELECT {}.lock_keys($1)", names.book), &[&keys])
        .await
        .map_err(|e| super::db_error(&e))?;
    Ok(())
}

/// Take the lock of one id if nobody holds it; false when someone does.
pub async fn try_lock_id(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let row = c
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1)",
            &[&id_key(names, index, id)],
        )
        .await
        .map_err(|e| super::db_error(&e))?;
    Ok(row.get(0))
}

/// The DDL of a new index table, exactly as `@mastra/pg` 1.27 writes it.
pub fn create_table_sql(names: &Names, name: &str, dimension: usize) -> String {
    let table = names.table(name);
    format!(
        "CREATE TABLE {table} (
            id SERIAL PRIMARY KEY,
            vector_id TEXT NOT NULL,
            embedding {vector}({dimension}),
            metadata JSONB DEFAULT '{{}}'::jsonb,
            namespace VARCHAR(255) NOT NULL DEFAULT '{NAMESPACE}'
        );
        CREATE UNIQUE INDEX {unique} ON {table} (namespace, vector_id);",
        vector = names.vector(),
        unique = quoted(&namespace_index_name(name)),
    )
}

/// `CREATE INDEX` of an HNSW index for `metric`, named as Mastra names its vector index
/// (so Mastra reads the metric and settings from it). The numbers are checked integers.
pub fn create_hnsw_sql(names: &Names, name: &str, metric: Metric, ann: Hnsw) -> String {
    let ops = match metric {
        Metric::Cosine => "vector_cosine_ops",
        Metric::Euclidean => "vector_l2_ops",
        Metric::Dotproduct => "vector_ip_ops",
    };
    format!(
        "CREATE INDEX {} ON {} USING hnsw (embedding {}.{ops}) WITH (m = {}, ef_construction = {})",
        quoted(&ann_index_name(name)),
        names.table(name),
        names.pgvector,
        ann.m,
        ann.ef_construction
    )
}

pub fn drop_hnsw_sql(names: &Names, name: &str) -> String {
    format!(
        "DROP INDEX IF EXISTS {}.{}",
        names.tables,
        quoted(&ann_index_name(name))
    )
}

/// Mastra's name for an index table's vector index (PostgreSQL cuts names at 63 bytes,
/// as it does for Mastra).
fn ann_index_name(name: &str) -> String {
    let full = format!("{name}_vector_idx");
    full.chars().take(63).collect()
}

/// Mastra's name for the unique `(namespace, vector_id)` index, hashed when too long.
fn namespace_index_name(name: &str) -> String {
    let full = format!("{name}_namespace_vector_id_idx");
    if full.len() <= 63 {
        return full;
    }
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    let suffix = format!("_ns_{}_idx", &digest[..32]);
    format!("{}{suffix}", &name[..63 - suffix.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_settings_are_read_from_the_definition() {
        let def = "CREATE INDEX docs_vector_idx ON public.docs USING hnsw (embedding vector_cosine_ops) WITH (m='24', ef_construction='100')";
        assert_eq!(setting(def, "m"), Some(24));
        assert_eq!(setting(def, "ef_construction"), Some(100));
        assert_eq!(setting("... WITH (lists = 100)", "m"), None);
    }

    #[test]
    fn long_names_get_mastras_hashed_namespace_index() {
        assert_eq!(namespace_index_name("goals"), "goals_namespace_vector_id_idx");
        let long = "a".repeat(63);
        let name = namespace_index_name(&long);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("_idx") && name.contains("_ns_"));
    }

    #[test]
    fn catalog_names_are_quoted_safely() {
        assert_eq!(quote_ident("ext"), "\"ext\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
