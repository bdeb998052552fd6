//! Updates on PostgreSQL: a stored row's vector and metadata by id or filter, and the same
//! metadata change on the version of it still queued to embed (JSON merge patch, as
//! DuckDB's `json_merge_patch`).
//!
//! It must not insert or delete rows.

use serde_json::{Map, Value};
use tokio_postgres::GenericClient;

use super::chunks::{documents_named, stored_documents, DocumentRows};
use super::rows::{drop_pending, forget_hashes, stored_matching_rows};
use super::{existing, invalid, names, table_failure, Result, Scope};
use crate::store::postgres::schema::{Names, NAMESPACE};
use crate::store::postgres::PgStore;
use crate::store::{chunks, validate_index_name, validate_vector, MetadataMode, Target, WriteOutcome};

pub(super) async fn update(
    store: &PgStore,
    index: &str,
    target: &Target,
    vector: Option<&[f32]>,
    metadata: Option<&Map<String, Value>>,
    (mode, skip_missing): (MetadataMode, bool),
) -> Result<WriteOutcome> {
    validate_index_name(index)?;
    if vector.is_none() && metadata.is_none() {
        return Err(invalid("update needs a vector, metadata, or both".into()));
    }
    if let Target::Ids(ids) = target {
        if let Some(at) = ids.iter().position(|id| id.is_empty()) {
            return Err(invalid(format!("id: the id is empty (ids[{at}])")));
        }
    }
    let names = names(store);
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let info = existing(&*tx, names, index, Scope::of(target)).await?;
    if let Some(v) = vector {
        validate_vector("vector", v, Some(info.dimension))?;
    }
    let field = info.text.field.clone();
    // Every document's rows: all chunks of a long text. Checked before any change.
    let documents: Vec<(String, DocumentRows)> = match target {
        Target::Ids(ids) => {
            let (named, _) = documents_named(&*tx, names, index, ids).await?;
            let stored = stored_documents(&*tx, names, index, &named).await?;
            if !skip_missing {
                if let Some(id) = named.into_iter().find(|id| !stored.iter().any(|(d, _)| d == id)) {
                    return Err(invalid(format!(
                        "id: no vector with id {id:?} in index \"{index}\""
                    )));
                }
            }
            stored
        }
        Target::Filter(filter) => {
            // A filter that matches one chunk changes its whole document.
            let matched = stored_matching_rows(&*tx, names, index, filter).await?;
            let docs: Vec<String> = chunks::by_document(&matched)
                .into_iter()
                .map(|(d, _)| d)
                .collect();
            stored_documents(&*tx, names, index, &docs).await?
        }
    };
    if vector.is_some() {
        chunks::check_no_chunks(&documents)?;
    }
    for (doc, rows) in &documents {
        for (id, _) in rows {
            update_one(&*tx, names, index, id, vector, metadata, mode, field.as_deref()).await?;
        }
        if let (None, Some(patch)) = (vector, metadata) {
            patch_queued(&*tx, names, index, doc, patch, mode).await?;
        }
    }
    tx.commit().await?;
    Ok(WriteOutcome::Updated {
        count: documents.len(),
    })
}

/// Update one stored row (false, and nothing changed, when it is gone: the caller read it
/// under the id's lock, so it is not). A chunk of a long text keeps its own piece of the
/// text (in `field`) and its place.
#[allow(clippy::too_many_arguments)]
async fn update_one(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    id: &str,
    vector: Option<&[f32]>,
    metadata: Option<&Map<String, Value>>,
    mode: MetadataMode,
    field: Option<&str>,
) -> Result<bool> {
    let table = names.table(index);
    let Some(row) = c
        .query_opt(
            &format!(
                "SELECT metadata FROM {table} WHERE namespace = '{NAMESPACE}' AND vector_id = $1 FOR UPDATE"
            ),
            &[&id],
        )
        .await
        .map_err(|e| table_failure(index, e))?
    else {
        return Ok(false);
    };
    let stored: Option<Value> = row.get(0);
    let new_metadata = metadata.map(|patch| match apply_patch(stored.clone(), patch, mode) {
        Value::Object(mut new) => {
            if let Some(Value::Object(old)) = &stored {
                chunks::keep_chunk_fields(id, &mut new, old, field);
            }
            Value::Object(new)
        }
        other => other,
    });
    let new_vector = vector.map(|v| pgvector::Vector::from(v.to_vec()));
    c.execute(
        &format!(
            "UPDATE {table} SET embedding = coalesce($2::{vector}, embedding), metadata = coalesce($3::jsonb, metadata)
             WHERE namespace = '{NAMESPACE}' AND vector_id = $1",
            vector = names.vector()
        ),
        &[&id, &new_vector, &new_metadata],
    )
    .await?;
    let ids = [id.to_string()];
    if vector.is_some() {
        // A new vector supersedes any text still waiting to be embedded for this id.
        forget_hashes(c, names, index, &[id]).await?;
        drop_pending(c, names, index, &ids).await?;
    }
    Ok(true)
}

/// A version of `doc` waiting to be embedded gets an update's metadata change too, so that
/// it does not bring the old metadata back when it lands.
async fn patch_queued(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    doc: &str,
    patch: &Map<String, Value>,
    mode: MetadataMode,
) -> Result<()> {
    {
        let id = doc;
        let queued = c
            .query_opt(
                &format!(
                    "SELECT metadata FROM {}.pending WHERE index_name = $1 AND id = $2 FOR UPDATE",
                    names.book
                ),
                &[&index, &id],
            )
            .await?;
        if let Some(row) = queued {
            let patched = apply_patch(Some(row.get::<_, Value>(0)), patch, mode);
            c.execute(
                &format!(
                    "UPDATE {}.pending SET metadata = $3 WHERE index_name = $1 AND id = $2",
                    names.book
                ),
                &[&index, &id, &patched],
            )
            .await?;
        }
    }
    Ok(())
}

/// The metadata an update leaves: `patch` merged into `stored` (JSON merge patch, RFC
/// 7396, as DuckDB's `json_merge_patch` does it), or `patch` alone.
fn apply_patch(stored: Option<Value>, patch: &Map<String, Value>, mode: MetadataMode) -> Value {
    match mode {
        MetadataMode::Replace => Value::Object(patch.clone()),
        MetadataMode::Merge => {
            let mut target = stored.unwrap_or(Value::Null);
            merge_patch(&mut target, &Value::Object(patch.clone()));
            target
        }
    }
}

/// RFC 7396: an object patch merges key by key (`null` removes), anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "keep": 1});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}, "n": [1]}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "keep": 1, "n": [1]}));
        let mut scalar = json!("text");
        merge_patch(&mut scalar, &json!({"x": 1}));
        assert_eq!(scalar, json!({"x": 1}));
        let mut null = Value::Null;
        merge_patch(&mut null, &json!({"x": {"y": null}}));
        assert_eq!(null, json!({"x": {}}));
    }
}
