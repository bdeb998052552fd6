//! The writer's side of every in-memory copy ([`Keeper`]): one [`Builder`] per index served
//! from memory, the changes committed while an index loads, and what each committed
//! [`Change`] does to a builder. It runs on the writer thread only and publishes through
//! [`Memory`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering as AtomicOrdering;

use super::{Builder, Change, Memory, Slot};

/// The writer's side of every copy: one [`Builder`] per index served from memory, and the
/// changes committed while an index loads. Lives on the writer thread only.
#[derive(Debug, Default)]
pub struct Keeper {
    builders: HashMap<String, Builder>,
    /// Per loading index, the changes committed since loading began, by commit number.
    backlog: HashMap<String, Vec<(u64, Change)>>,
}

impl Keeper {
    /// Apply one commit's changes and publish the indexes they touched. The caller holds
    /// the gate (taken before `COMMIT`).
    pub fn apply(&mut self, memory: &Memory, changes: Vec<Change>) {
        if !memory.enabled {
            return;
        }
        let commit = memory.commits.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        let mut touched = HashSet::new();
        for change in changes {
            let index = change.index().to_string();
            match change {
                Change::Create {
                    dimension,
                    metric,
                    text,
                    ..
                } => {
                    self.backlog.remove(&index);
                    self.builders
                        .insert(index.clone(), Builder::with_text(dimension, metric, &text));
                    touched.insert(index);
                }
                Change::Drop { .. } => {
                    self.backlog.remove(&index);
                    self.builders.remove(&index);
                    touched.remove(&index);
                    memory.set_slot(&index, None);
                }
                change => {
                    if let Some(builder) = self.builders.get_mut(&index) {
                        change.apply_to(builder);
                        touched.insert(index);
                    } else if matches!(memory.slots().get(&index), Some(Slot::Loading)) {
                        self.backlog.entry(index).or_default().push((commit, change));
                    }
                }
            }
        }
        for index in touched {
            self.publish(memory, &index);
        }
    }

    /// A copy the loader read as of `as_of` commits (`None`: it could not be read). Kept
    /// if the index is still loading, after replaying what was committed since.
    pub fn loaded(&mut self, memory: &Memory, index: &str, builder: Option<Builder>, as_of: u64) {
        if !matches!(memory.slots().get(index), Some(Slot::Loading)) {
            return; // Dropped or recreated meanwhile: the writer's own copy rules.
        }
        let backlog = self.backlog.remove(index).unwrap_or_default();
        let Some(mut builder) = builder else {
            memory.set_slot(index, Some(Slot::OverBudget));
            return;
        };
        for (commit, change) in backlog {
            if commit > as_of {
                change.apply_to(&mut builder);
            }
        }
        tracing::info!(
            index,
            rows = builder.len(),
            mb = builder.bytes() >> 20,
            "index loaded into memory"
        );
        self.builders.insert(index.to_string(), builder);
        self.publish(memory, index);
    }

    fn publish(&mut self, memory: &Memory, index: &str) {
        let Some(builder) = self.builders.get(index) else {
            return;
        };
        let others: usize = self
            .builders
            .iter()
            .filter(|(name, _)| name.as_str() != index)
            .map(|(_, b)| b.bytes())
            .sum();
        if others + builder.bytes() > memory.limit_bytes {
            tracing::warn!(
                index,
                limit_mb = memory.limit_bytes >> 20,
                "index does not fit the memory budget; searching it with DuckDB"
            );
            self.builders.remove(index);
            memory.set_slot(index, Some(Slot::OverBudget));
            return;
        }
        memory.set_slot(index, Some(Slot::Ready(builder.snapshot())));
    }
}

impl Change {
    fn index(&self) -> &str {
        match self {
            Change::Create { index, .. }
            | Change::Drop { index }
            | Change::Upsert { index, .. }
            | Change::Metadata { index, .. }
            | Change::Delete { index, .. } => index,
        }
    }

    fn apply_to(&self, builder: &mut Builder) {
        match self {
            Change::Upsert { rows, .. } => builder.upsert_many(
                rows.iter()
                    .map(|(id, v, m)| (id.as_str(), v.as_slice(), m.clone())),
            ),
            Change::Metadata { id, metadata, .. } => builder.set_metadata(id, metadata.clone()),
            Change::Delete { ids, .. } => ids.iter().for_each(|id| builder.remove(id)),
            Change::Create { .. } | Change::Drop { .. } => {}
        }
    }
}
