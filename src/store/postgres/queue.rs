//! The embedding queue on PostgreSQL, shared by every process on the database.
//!
//! One row per (index, id) in the bookkeeping schema's `pending` table holds the latest
//! accepted version, as on DuckDB, plus what sharing needs: when it is due (the debounce,
//! capped by the max wait counted from the first version not yet embedded), who holds it
//! and until when (`lease_until`, `claimed_by`), and why it was parked. A process takes
//! work with [`PgStore::claim`]: due, unleased rows of its model, locked with
//! `FOR UPDATE SKIP LOCKED` so that two processes never take the same row, and leased for
//! a while. In the same transaction a version whose text is the one already stored (another
//! process embedded an equal version) is finished on the spot: its metadata is written and
//! it leaves the queue, with no embedding. A process that dies with a claim lets its lease
//! run out, and then another one takes the row. Storing an embedding (the writer's
//! `StoreEmbedded`) checks the version again, under the row's lock, so a stale or doubled
//! embedding is never stored over a newer version.
//!
//! Processes wake each other with `LISTEN`/`NOTIFY` on one channel per bookkeeping schema:
//! a commit that adds or finishes queue work notifies ([`notify`]); each process keeps one
//! connection listening ([`listen`]) and counts what it hears in a `watch` channel the
//! pipeline waits on. Between notifications a process sleeps until the next due time or
//! lease expiry ([`PgStore::next_due`]), never polling on a short fixed period.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, GenericClient};

use super::schema::{Names, NAMESPACE};
use super::{PgStore, Shared};
use crate::retry::Retry;
use crate::store::metadata::hit_object;
use crate::store::PendingDocument;
use crate::store::StoreError;

type Key = (String, String);

/// Where one queued key stands, for a process waiting on a version it accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueState {
    /// The queued version and, if it failed for good, why.
    pub pending: Option<(u64, Option<String>)>,
    /// An embedding of a text is stored for this id.
    pub embedded: bool,
}

/// Counts of the queue, for `stats` and `flush`.
#[derive(Debug, Clone, Default)]
pub struct QueueCounts {
    /// Versions waiting or being embedded (parked ones excluded).
    pub pending: usize,
    pub parked: usize,
    /// Age of the oldest waiting version.
    pub oldest_ms: Option<u64>,
}

/// The channel processes notify each other on.
pub fn channel(names: &Names) -> String {
    format!("{}_queue", names.book_raw)
}

/// Tell every listening process that the queue changed (delivered at COMMIT).
pub async fn notify(c: &(impl GenericClient + Sync), names: &Names) -> Result<(), tokio_postgres::Error> {
    c.execute("SELECT pg_notify($1, '')", &[&channel(names)]).await?;
    Ok(())
}

impl PgStore {
    /// Take up to `max` due versions of `model` that nobody holds, leased to this process;
    /// versions whose text is already the stored one are finished here instead.
    pub async fn claim(&self, model: &str, max: usize) -> Result<Vec<PendingDocument>, StoreError> {
        let names = &self.shared.names;
        let fail = |e: tokio_postgres::Error| super::db_error(&e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        let rows = tx
            .query(
                &format!(
                    "SELECT p.index_name, p.id, p.seq, p.text, p.metadata, p.content_hash,
                            EXISTS (SELECT 1 FROM {book}.documents d WHERE d.index_name = p.index_name
                                    AND d.id = p.id AND d.content_hash = p.content_hash AND d.model = p.model)
                     FROM {book}.pending p
                     WHERE p.model = $1 AND p.due_at <= now() AND p.parked_error IS NULL
                       AND (p.lease_until IS NULL OR p.lease_until < now())
                     ORDER BY p.due_at, p.seq LIMIT $2 FOR UPDATE OF p SKIP LOCKED",
                    book = names.book
                ),
                &[&model, &(max as i64)],
            )
            .await
            .map_err(fail)?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut finished = 0;
        for row in &rows {
            let doc = PendingDocument {
                index: row.get(0),
                id: row.get(1),
                seq: row.get::<_, i64>(2).max(0) as u64,
                text: row.get(3),
                metadata: hit_object(row.get::<_, Value>(4)),
                hash: row.get(5),
            };
            // A write of this id is running (its transaction holds the id's lock): leave
            // the version for later rather than wait, as SKIP LOCKED does for the rows.
            if !super::schema::try_lock_id(&*tx, names, &doc.index, &doc.id).await? {
                continue;
            }
            if row.get::<_, bool>(6) && self.finish_unchanged(&*tx, &doc).await? {
                finished += 1;
                continue;
            }
            tx.execute(
                &format!(
                    "UPDATE {}.pending SET lease_until = now() + make_interval(secs => $3), claimed_by = $4
                     WHERE index_name = $1 AND id = $2",
                    names.book
                ),
                &[
                    &doc.index,
                    &doc.id,
                    &self.shared.lease.as_secs_f64(),
                    &self.shared.process,
                ],
            )
            .await
            .map_err(fail)?;
            claimed.push(doc);
        }
        if finished > 0 {
            notify(&*tx, names).await.map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(claimed)
    }

    /// The stored row still holds an embedding of this very text: write the queued
    /// metadata onto it and drop the version. False when the row is gone meanwhile.
    async fn finish_unchanged(
        &self,
        c: &(impl GenericClient + Sync),
        doc: &PendingDocument,
    ) -> Result<bool, StoreError> {
        let names = &self.shared.names;
        let updated = c
            .execute(
                &format!(
                    "UPDATE {} SET metadata = $2 WHERE namespace = '{NAMESPACE}' AND vector_id = $1",
                    names.table(&doc.index)
                ),
                &[&doc.id, &Value::Object(doc.metadata.clone())],
            )
            .await
            .map_err(|e| super::read::table_error(&doc.index, &e))?;
        if updated == 0 {
            return Ok(false);
        }
        c.execute(
            &format!(
                "DELETE FROM {}.pending WHERE index_name = $1 AND id = $2",
                names.book
            ),
            &[&doc.index, &doc.id],
        )
        .await
        .map_err(|e| super::db_error(&e))?;
        Ok(true)
    }

    /// Give versions back to the queue, due again after `delay` (a transient failure).
    /// A version replaced meanwhile is left alone.
    pub async fn retry_later(&self, versions: &[(Key, u64)], delay: Duration) -> Result<(), StoreError> {
        self.update_versions(
            versions,
            "due_at = now() + make_interval(secs => $4), lease_until = NULL, claimed_by = NULL",
            &delay.as_secs_f64(),
        )
        .await
    }

    /// Set versions aside for good (a permanent failure): kept, shown, not claimed again
    /// until their text changes or `flush` asks.
    pub async fn park(&self, versions: &[(Key, u64)], error: &str) -> Result<(), StoreError> {
        self.update_versions(
            versions,
            "parked_error = $4, lease_until = NULL, claimed_by = NULL",
            &error,
        )
        .await
    }

    async fn update_versions(
        &self,
        versions: &[(Key, u64)],
        set: &str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<(), StoreError> {
        let names = &self.shared.names;
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {}.pending SET {set} WHERE index_name = $1 AND id = $2 AND seq = $3",
            names.book
        );
        for ((index, id), seq) in versions {
            client
                .execute(&sql, &[index, id, &(*seq as i64), value])
                .await
                .map_err(|e| super::db_error(&e))?;
        }
        notify(&**client, names).await.map_err(|e| super::db_error(&e))?;
        Ok(())
    }

    /// How long until a version of `model` may next be claimed (its due time, or the end
    /// of its lease); `None` when nothing waits.
    pub async fn next_due(&self, model: &str) -> Result<Option<Duration>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT extract(epoch FROM min(CASE WHEN lease_until > now() THEN lease_until ELSE due_at END) - now())::float8
                     FROM {}.pending WHERE model = $1 AND parked_error IS NULL",
                    self.shared.names.book
                ),
                &[&model],
            )
            .await
            .map_err(|e| super::db_error(&e))?;
        Ok(row
            .get::<_, Option<f64>>(0)
            .map(|secs| Duration::from_secs_f64(secs.max(0.0))))
    }

    /// Make every version (of `index`, or all) due now, parked ones included.
    pub async fn make_due(&self, index: Option<&str>) -> Result<(), StoreError> {
        let names = &self.shared.names;
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "UPDATE {}.pending SET due_at = least(due_at, now()), parked_error = NULL
                     WHERE $1::text IS NULL OR index_name = $1",
                    names.book
                ),
                &[&index],
            )
            .await
            .map_err(|e| super::db_error(&e))?;
        notify(&**client, names).await.map_err(|e| super::db_error(&e))?;
        Ok(())
    }

    /// Counts of the queue (of `index`, or all).
    pub async fn queue_counts(&self, index: Option<&str>) -> Result<QueueCounts, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*) FILTER (WHERE parked_error IS NULL), count(*) FILTER (WHERE parked_error IS NOT NULL),
                            (extract(epoch FROM now() - min(first_accepted_at) FILTER (WHERE parked_error IS NULL)) * 1000)::float8
                     FROM {}.pending WHERE $1::text IS NULL OR index_name = $1",
                    self.shared.names.book
                ),
                &[&index],
            )
            .await
            .map_err(|e| super::db_error(&e))?;
        Ok(QueueCounts {
            pending: row.get::<_, i64>(0).max(0) as usize,
            parked: row.get::<_, i64>(1).max(0) as usize,
            oldest_ms: row.get::<_, Option<f64>>(2).map(|ms| ms.max(0.0) as u64),
        })
    }

    /// Parked versions, by index and id, with their errors (at most `limit`).
    pub async fn parked(&self, limit: usize) -> Result<Vec<(String, String, String)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT index_name, id, parked_error FROM {}.pending WHERE parked_error IS NOT NULL
                     ORDER BY index_name, id LIMIT $1",
                    self.shared.names.book
                ),
                &[&(limit as i64)],
            )
            .await
            .map_err(|e| super::db_error(&e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Where each key stands: its queued version, and whether a text of it is stored.
    pub async fn queue_states(&self, keys: &[Key]) -> Result<HashMap<Key, QueueState>, StoreError> {
        let indexes: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT k.index_name, k.id, p.seq, p.parked_error, d.id IS NOT NULL
                     FROM unnest($1::text[], $2::text[]) AS k(index_name, id)
                     LEFT JOIN {book}.pending p ON p.index_name = k.index_name AND p.id = k.id
                     LEFT JOIN {book}.documents d ON d.index_name = k.index_name AND d.id = k.id",
                    book = self.shared.names.book
                ),
                &[&indexes, &ids],
            )
            .await
            .map_err(|e| super::db_error(&e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let seq: Option<i64> = r.get(2);
                (
                    (r.get(0), r.get(1)),
                    QueueState {
                        pending: seq.map(|s| (s.max(0) as u64, r.get(3))),
                        embedded: r.get(4),
                    },
                )
            })
            .collect())
    }

    /// Hand back what this process holds (a clean stop): others may take it at once.
    pub async fn release_claims(&self) -> Result<(), StoreError> {
        let names = &self.shared.names;
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "UPDATE {}.pending SET lease_until = NULL, claimed_by = NULL WHERE claimed_by = $1",
                    names.book
                ),
                &[&self.shared.process],
            )
            .await
            .map_err(|e| super::db_error(&e))?;
        notify(&**client, names).await.map_err(|e| super::db_error(&e))?;
        Ok(())
    }

    /// Ticks each time another process (or this one) says the queue changed, and after a
    /// reconnect of the listening connection (what was said meanwhile is lost).
    pub fn queue_events(&self) -> watch::Receiver<u64> {
        self.shared.events.subscribe()
    }
}

/// Keep one connection listening on the queue's channel, reconnecting with backoff; each
/// notification (and each reconnect) ticks `events`. Ends when `stop` is cancelled (the
/// store's shutdown) or the store is dropped.
pub async fn listen(shared: std::sync::Weak<Shared>, stop: tokio_util::sync::CancellationToken) {
    tokio::select! {
        _ = listen_until_dropped(shared) => {}
        _ = stop.cancelled() => {}
    }
}

async fn listen_until_dropped(shared: std::sync::Weak<Shared>) {
    let mut retry = Retry::new(super::RECONNECT_BACKOFF);
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let (config, tls, channel, events) = (
            strong.pg_config.clone(),
            strong.tls.clone(),
            channel(&strong.names),
            strong.events.clone(),
        );
        drop(strong);
        match config.connect(tls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                // Aborted when this connection is given up, or when this task is dropped.
                let pump = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => {
                                if tx.send(()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(
                                    "the queue's listening connection failed: {}",
                                    super::explain(&e)
                                );
                                return;
                            }
                        }
                    }
                }));
                let listening = client
                    .batch_execute(&format!("LISTEN {}", super::schema::quote_ident(&channel)))
                    .await;
                match listening {
                    Ok(()) => {
                        retry.reset();
                        // Anything said while we were not listening is lost: look again.
                        events.send_modify(|n| *n += 1);
                        while rx.recv().await.is_some() {
                            if shared.strong_count() == 0 {
                                return;
                            }
                            events.send_modify(|n| *n += 1);
                        }
                    }
                    Err(e) => tracing::warn!("cannot LISTEN for queue changes: {}", super::explain(&e)),
                }
                pump.abort();
            }
            Err(e) => tracing::warn!(
                "cannot open the queue's listening connection: {}",
                super::explain(&e)
            ),
        }
        tokio::time::sleep(retry.next_delay()).await;
    }
}
