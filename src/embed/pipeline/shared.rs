//! The pipeline on a queue shared by several processes (PostgreSQL): due versions come
//! from the database's claims, failures and parking are written back to it, and this
//! process keeps only what it has in flight and the callers waiting here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::state::{Entry, Key, State};
use super::worker::{Inner, BACKOFF};
use super::{FlushReport, Pipeline};
use crate::embed::EmbedError;
use crate::retry::{Backoff, Retry};
use crate::store::{Acceptance, QueuedVersion, SharedQueue};

impl Pipeline {
    /// [`Pipeline::flush`] on a shared queue: everything (of `index`) due now, then wait
    /// until the database holds nothing waiting for it (parked versions aside).
    pub(super) async fn flush_shared(
        &self,
        queue: &SharedQueue,
        index: Option<&str>,
        timeout: Duration,
    ) -> FlushReport {
        let mut progress = self.inner.progress.subscribe();
        let before = *progress.borrow_and_update();
        let deadline = Instant::now() + timeout;
        if let Err(e) = queue.make_due(index).await {
            self.inner.lock().last_error = Some(e.to_string());
        }
        self.inner.wake.notify_one();
        let mut events = queue.events();
        let mut counts = queue.counts(index).await.unwrap_or_default();
        while counts.pending > 0 && Instant::now() < deadline {
            // A notification, or a look every half second for what no one announces (a
            // lease running out).
            let until = deadline.min(Instant::now() + Duration::from_millis(500));
            let _ = tokio::time::timeout_at(until, events.changed()).await;
            match queue.counts(index).await {
                Ok(c) => counts = c,
                Err(e) => self.inner.lock().last_error = Some(e.to_string()),
            }
        }
        // The database shows a version done as soon as its transaction commits; this
        // process counts it a moment later, when the write's answer comes back. Versions
        // still in flight here are waited for, so that `committed` counts them.
        while self.inner.lock().pending_for(index) > 0 && Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, progress.changed()).await;
        }
        FlushReport {
            committed: *self.inner.progress.borrow() - before,
            pending: counts.pending,
            parked: counts.parked,
        }
    }
}

/// [`Inner::record`] on a shared queue: only the waiter is kept here (the database holds
/// the schedule); an unchanged document is indexed already.
pub(super) fn record_shared(
    state: &mut State,
    key: Key,
    seq: u64,
    status: Acceptance,
    wait: bool,
) -> Option<oneshot::Receiver<Result<(), String>>> {
    if status == Acceptance::Unchanged {
        state.resolve(&key, seq, Ok(()));
        return None;
    }
    wait.then(|| {
        let (tx, rx) = oneshot::channel();
        state.waiters.entry(key).or_default().push((seq, tx));
        rx
    })
}

impl Inner {
    /// [`Inner::fail`] on a shared queue: the versions go back to the database, due after
    /// a backoff that grows with the failures in a row here.
    pub(super) fn fail_shared(&self, queue: &SharedQueue, batch: Vec<(Key, Entry)>, error: &EmbedError) {
        let failures = self.shared_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let backoff = BACKOFF.delay_at_least(failures, error.retry_after());
        let versions: Vec<QueuedVersion> = batch.iter().map(|(k, e)| (k.clone(), e.seq)).collect();
        {
            let mut state = self.lock();
            state.last_error = Some(error.to_string());
            for (key, entry) in &batch {
                state.land(key, entry.seq);
                state.resolve(key, entry.seq, Err(error.to_string()));
            }
        }
        let queue = queue.clone();
        self.tasks.spawn(async move {
            if let Err(e) = queue.retry_later(&versions, backoff).await {
                tracing::warn!(error = %e, "could not give versions back; they return when their lease ends");
            }
        });
        self.progress.send_modify(|_| {});
    }
}

/// Between claims while the database cannot be reached: 1 s doubling up to 5 s.
const CLAIM_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), 2, Duration::from_secs(5));

/// The worker on a shared queue: claim what is due, embed it, store it; between claims,
/// sleep until the next due time or lease end, a notification, or a local wake-up.
pub(super) async fn shared_worker(inner: Arc<Inner>, queue: SharedQueue) {
    let model = inner.embedder.model().to_string();
    let mut events = queue.events();
    let mut unreachable = Retry::new(CLAIM_BACKOFF);
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        match queue.claim(&model, inner.config.batch_size).await {
            Ok(docs) if !docs.is_empty() => {
                unreachable.reset();
                let batch = inner.take_claimed(docs);
                tokio::select! {
                    _ = inner.process(batch) => {}
                    // What this process claimed goes back at shutdown (`release_claims`).
                    _ = inner.stop.cancelled() => return,
                }
                continue;
            }
            Ok(_) => unreachable.reset(),
            Err(e) => {
                inner.lock().last_error = Some(e.to_string());
                tokio::select! {
                    _ = tokio::time::sleep(unreachable.next_delay()) => {}
                    _ = inner.stop.cancelled() => return,
                }
                continue;
            }
        }
        let next = queue.next_due(&model).await.ok().flatten();
        let sleep = next.unwrap_or(BACKOFF.max).min(BACKOFF.max);
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = events.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = inner.stop.cancelled() => return,
        }
    }
}

/// On each change of a shared queue, answer this process's waiters whose versions were
/// finished elsewhere, and let `flush` look again.
pub(super) async fn follow_shared_queue(inner: std::sync::Weak<Inner>, queue: SharedQueue) {
    let mut events = queue.events();
    let Some(stop) = inner.upgrade().map(|i| i.stop.clone()) else {
        return;
    };
    loop {
        tokio::select! {
            changed = events.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        inner.resolve_shared_waiters().await;
        inner.progress.send_modify(|_| {});
    }
}
