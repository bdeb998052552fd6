//! The pipeline's schedule: versions waiting for their due time, in flight, parked, and the
//! callers waiting on them. Plain maps under one `std` mutex, changed in small steps that
//! keep them consistent; no I/O, no await, no clock but the instants it is handed.

use std::collections::{BTreeSet, HashMap};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::store::{PendingDocument, Superseded};

pub type Key = (String, String);
/// Told whether its version was indexed, or why not.
pub(super) type Waiter = oneshot::Sender<Result<(), String>>;

/// queue when it is due) once the texts held in memory pass [`TEXT_BUDGET`].
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) text: Option<String>,
    pub(super) hash: String,
    pub(super) first_seen: Instant,
    pub(super) due: Instant,
    pub(super) attempts: u32,
}

impl Entry {
    /// A queued version read back from the database, due now.
    pub(super) fn from_queue(doc: PendingDocument, now: Instant) -> (Key, Entry) {
        let entry = Entry {
            seq: doc.seq,
            text: Some(doc.text),
            hash: doc.hash,
            first_seen: now,
            due: now,
            attempts: 0,
        };
        ((doc.index, doc.id), entry)
    }
}

/// A version being embedded.
pub(super) struct Flight {
    pub(super) seq: u64,
    pub(super) first_seen: Instant,
    /// A committed write superseded this version while it was embedded: the writer will
    /// refuse it, it is not pending any more, and a failure does not bring it back.
    pub(super) superseded: bool,
}

/// A version that failed for a reason retrying will not fix (a 4xx, a zero vector, a
/// mismatched width). It stays in the durable queue, is shown by `stats`, and is retried
/// only when its text changes, when `flush` asks, or after a restart.
pub(super) struct Parked {
    pub(super) seq: u64,
    pub(super) hash: String,
    pub(super) error: String,
    pub(super) first_seen: Instant,
}

/// Most bytes of waiting texts kept in memory; beyond it texts stay only in the database.
pub(super) const TEXT_BUDGET: usize = 64 << 20;

/// What a waiter is told when a later write to its id won.
pub(super) const SUPERSEDED: &str = "superseded by a later write to this id (upsert, update with a vector, delete or delete_index) before it was stored";

#[derive(Default)]
pub(super) struct State {
    pub(super) waiting: HashMap<Key, Entry>,
    pub(super) schedule: BTreeSet<(Instant, u64, Key)>,
    pub(super) in_flight: HashMap<Key, Flight>,
    pub(super) parked: HashMap<Key, Parked>,
    pub(super) waiters: HashMap<Key, Vec<(u64, Waiter)>>,
    /// Bytes of the texts held by `waiting`.
    pub(super) text_bytes: usize,
    pub(super) last_error: Option<String>,
}

impl State {
    pub(super) fn unschedule(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.waiting.remove(key)?;
        self.schedule.remove(&(entry.due, entry.seq, key.clone()));
        self.text_bytes -= entry.text.as_ref().map_or(0, String::len);
        Some(entry)
    }

    pub(super) fn schedule(&mut self, key: Key, mut entry: Entry) {
        self.unschedule(&key);
        let len = entry.text.as_ref().map_or(0, String::len);
        if self.text_bytes + len > TEXT_BUDGET {
            entry.text = None;
        }
        self.text_bytes += entry.text.as_ref().map_or(0, String::len);
        self.schedule.insert((entry.due, entry.seq, key.clone()));
        self.waiting.insert(key, entry);
    }

    /// The newest version of `key` this pipeline knows, anywhere.
    pub(super) fn newest_seq(&self, key: &Key) -> Option<u64> {
        let w = self.waiting.get(key).map(|e| e.seq);
        let f = self.live_flight(key).map(|f| f.seq);
        let p = self.parked.get(key).map(|p| p.seq);
        w.max(f).max(p)
    }

    /// Answer the waiters of `key` up to version `upto`: indexed, or why not.
    pub(super) fn resolve(&mut self, key: &Key, upto: u64, outcome: Result<(), String>) {
        let Some(list) = self.waiters.get_mut(key) else {
            return;
        };
        for (_, tx) in list.extract_if(.., |(seq, _)| *seq <= upto) {
            let _ = tx.send(outcome.clone());
        }
        if list.is_empty() {
            self.waiters.remove(key);
        }
    }

    /// The in-flight version of `key` is done with (up to `seq`): take it out, and say
    /// whether a committed write had superseded it meanwhile.
    pub(super) fn land(&mut self, key: &Key, seq: u64) -> bool {
        match self.in_flight.get(key) {
            Some(f) if f.seq <= seq => self.in_flight.remove(key).is_some_and(|f| f.superseded),
            _ => false,
        }
    }

    /// The version of `key` being embedded, unless a committed write superseded it.
    pub(super) fn live_flight(&self, key: &Key) -> Option<&Flight> {
        self.in_flight.get(key).filter(|f| !f.superseded)
    }

    /// Parked versions are not counted: nothing will happen to them until asked. Nor are
    /// superseded versions still in flight: the writer will refuse them.
    pub(super) fn pending_for(&self, index: Option<&str>) -> usize {
        let matches = |k: &&Key| index.is_none_or(|i| k.0 == i);
        let flying = self.in_flight.iter().filter(|(k, f)| matches(k) && !f.superseded);
        self.waiting.keys().filter(matches).count() + flying.count()
    }

    /// Parked versions of `index` (or of all).
    pub(super) fn parked_for(&self, index: Option<&str>) -> usize {
        self.parked
            .keys()
            .filter(|k| index.is_none_or(|i| k.0 == i))
            .count()
    }

    /// Forget versions (waiting or parked) a committed write superseded; their waiters
    /// learn why. In flight ones are marked: the writer refuses them when they come to be
    /// stored, and a failure neither retries nor parks them.
    pub(super) fn forget(&mut self, superseded: &[Superseded]) {
        for event in superseded {
            let hit = |k: &Key, seq: u64| {
                k.0 == event.index
                    && seq < event.before_seq
                    && event.ids.as_ref().is_none_or(|ids| ids.contains(&k.1))
            };
            let keys: Vec<Key> = (self.waiting.iter().map(|(k, e)| (k, e.seq)))
                .chain(self.parked.iter().map(|(k, p)| (k, p.seq)))
                .filter(|(k, seq)| hit(k, *seq))
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                let seq = match self.unschedule(&key) {
                    Some(entry) => Some(entry.seq),
                    None => self.parked.remove(&key).map(|p| p.seq),
                };
                if let Some(seq) = seq {
                    self.resolve(&key, seq, Err(SUPERSEDED.into()));
                }
            }
            let flying: Vec<(Key, u64)> = (self.in_flight.iter_mut())
                .filter(|(k, f)| !f.superseded && hit(k, f.seq))
                .map(|(k, f)| {
                    f.superseded = true;
                    (k.clone(), f.seq)
                })
                .collect();
            for (key, seq) in flying {
                self.resolve(&key, seq, Err(SUPERSEDED.into()));
            }
        }
    }
}
