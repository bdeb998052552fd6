//! Creating and dropping indexes on PostgreSQL: the table, its HNSW index, its registration,
//! each under the index's exclusive lock.
//!
//! It must not write rows or the pending queue, except to forget the queue of a dropped
//! index.

use tokio_postgres::GenericClient;

use super::{invalid, names, Result};
use crate::store::postgres::schema::{self, Names};
use crate::store::postgres::PgStore;
use crate::store::{
    existing_text_matches, validate_dimension, validate_index_name, Hnsw, IndexInfo, Metric, TextRequest,
    TextSettings, WriteOutcome,
};

/// Widest `vector` column pgvector stores.
const MAX_PG_DIMENSION: usize = 16_000;
/// Widest vectors pgvector's HNSW indexes take.
const MAX_HNSW_DIMENSION: usize = 2_000;

/// Create `name` unless it exists with this shape; with `ann`, make sure its HNSW index
/// is that one. `model`, when given, is recorded on a new index.
pub(super) async fn create_index(
    store: &PgStore,
    name: &str,
    dimension: usize,
    metric: Metric,
    ann: Option<Hnsw>,
    model: Option<&str>,
    asked: &TextRequest,
) -> Result<WriteOutcome> {
    validate_index_name(name)?;
    validate_dimension(dimension)?;
    let text = &asked.settings();
    text.validate()?;
    if dimension > MAX_PG_DIMENSION {
        return Err(invalid(format!(
            "dimension: pgvector stores at most {MAX_PG_DIMENSION} dimensions, got {dimension}"
        )));
    }
    if let Some(ann) = ann {
        ann.validate("ann")?;
        if dimension > MAX_HNSW_DIMENSION {
            return Err(invalid(format!(
                "ann: pgvector's HNSW indexes take at most {MAX_HNSW_DIMENSION} dimensions; index \"{name}\" has {dimension} (leave ann out to search it exactly)"
            )));
        }
    }
    let names = names(store);
    let mut client = store.client().await?;
    // A table Mastra made since we started counts as existing.
    schema::adopt_if_present(&mut client, names, name).await?;
    let tx = client.transaction().await?;
    schema::lock_index(&*tx, names, name, true).await?;
    let created = match schema::registered(&*tx, names, name).await? {
        Some(existing) if (existing.dimension, existing.metric) != (dimension, metric) => {
            return Err(invalid(format!(
                "index \"{name}\" already exists with dimension {} and metric {}; asked for dimension {dimension} and metric {metric}",
                existing.dimension, existing.metric
            )));
        }
        Some(existing) => {
            existing_text_matches(&existing, asked)?;
            // An index made before keyword search has no text index yet: calling
            // create_index again adds it (a no-op when it is there).
            schema::create_text_index(&*tx, names, name, &existing.text).await?;
            if let Some(ann) = ann.filter(|a| existing.ann != Some(*a)) {
                tracing::info!(index = %name, m = ann.m, ef_construction = ann.ef_construction, "rebuilding the HNSW index");
                tx.batch_execute(&schema::drop_hnsw_sql(names, name)).await?;
                tx.batch_execute(&schema::create_hnsw_sql(names, name, metric, ann))
                    .await?;
                set_ann(&*tx, names, name, Some(ann)).await?;
            }
            false
        }
        None => {
            create_in(&*tx, names, name, dimension, metric, ann, text).await?;
            if let Some(model) = model {
                set_model(&*tx, names, name, model).await?;
            }
            true
        }
    };
    tx.commit().await?;
    Ok(WriteOutcome::IndexCreated { created })
}

/// Create and register an index table, in a transaction holding its exclusive lock.
pub(super) async fn create_in(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
    dimension: usize,
    metric: Metric,
    ann: Option<Hnsw>,
    text: &TextSettings,
) -> Result<()> {
    c.batch_execute(&schema::create_table_sql(names, name, dimension))
        .await?;
    schema::create_text_index(c, names, name, text).await?;
    if let Some(ann) = ann {
        c.batch_execute(&schema::create_hnsw_sql(names, name, metric, ann))
            .await?;
    }
    let info = IndexInfo {
        name: name.to_string(),
        dimension,
        metric,
        model: None,
        adopted: false,
        ann,
        text: text.clone(),
    };
    schema::register(c, names, &info).await?;
    Ok(())
}

async fn set_ann(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
    ann: Option<Hnsw>,
) -> Result<()> {
    c.execute(
        &format!(
            "UPDATE {}.indexes SET hnsw_m = $2, hnsw_ef_construction = $3 WHERE name = $1",
            names.book
        ),
        &[
            &name,
            &ann.map(|a| a.m as i32),
            &ann.map(|a| a.ef_construction as i32),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn set_model(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
    model: &str,
) -> Result<()> {
    c.execute(
        &format!("UPDATE {}.indexes SET model = $2 WHERE name = $1", names.book),
        &[&name, &model],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_index(store: &PgStore, name: &str) -> Result<WriteOutcome> {
    validate_index_name(name)?;
    let names = names(store);
    let mut client = store.client().await?;
    schema::adopt_if_present(&mut client, names, name).await?;
    let tx = client.transaction().await?;
    schema::lock_index(&*tx, names, name, true).await?;
    let existed = schema::registered(&*tx, names, name).await?.is_some();
    if existed {
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", names.table(name)))
            .await?;
        tx.execute(
            &format!("DELETE FROM {}.indexes WHERE name = $1", names.book),
            &[&name],
        )
        .await?;
    }
    // Pending documents of a dropped index would recreate it: they go too.
    schema::forget_index(&*tx, names, name).await?;
    tx.commit().await?;
    Ok(WriteOutcome::IndexDeleted { existed })
}
