//! Which checkpoints stay and when a run stops early, as burn-train strategies: [`KeepLast`] and
//! [`BestAccuracy`] implement its `CheckpointingStrategy` (combined by its
//! `ComposedCheckpointingStrategy`), [`Plateau`] its `EarlyStoppingStrategy`.
//!
//! Why not burn-train's own `KeepLastNCheckpoints`, `MetricCheckpointingStrategy` and
//! `MetricEarlyStoppingStrategy`: they count checkpoints by epoch, and LaVIN's are numbered by
//! optimizer step (mid-epoch ones included); and the metric ones read burn-train's event store,
//! which its event processor fills on a thread of its own with no way to wait for it, so right
//! after a validation the epoch's accuracy may not be there yet (seen: early stopping that never
//! fired). These read the accuracy the strategy measured ([`Accuracies`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use burn::train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn::train::metric::store::EventStoreClient;
use burn::train::EarlyStoppingStrategy;

/// Validation accuracy of each epoch (1-based, as burn-train counts), shared between the
/// strategy that measures it and the policies that read it.
#[derive(Debug, Clone, Default)]
pub struct Accuracies(Arc<Mutex<BTreeMap<usize, f64>>>);

impl Accuracies {
    /// Record epoch `epoch`'s accuracy.
    pub fn record(&self, epoch: usize, accuracy: f64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(epoch, accuracy);
    }

    /// Epoch `epoch`'s accuracy, if it was validated.
    pub fn get(&self, epoch: usize) -> Option<f64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&epoch)
            .copied()
    }
}

/// Keep the newest `n` checkpoints (0 = all). Checkpoints already on disk from before a resume
/// count as the oldest.
pub struct KeepLast {
    n: usize,
    saved: VecDeque<usize>,
}

impl KeepLast {
    /// Keep `n` (0 = all); `existing` = steps of checkpoints already in the folder.
    pub fn new(n: usize, existing: impl IntoIterator<Item = u64>) -> Self {
        Self {
            n,
            saved: existing.into_iter().map(|s| s as usize).collect(),
        }
    }
}

impl CheckpointingStrategy for KeepLast {
    fn checkpointing(
        &mut self,
        step: usize,
        _store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let mut actions = vec![CheckpointingAction::Save];
        if self.n == 0 {
            return actions;
        }
        self.saved.retain(|&s| s != step);
        self.saved.push_back(step);
        while self.saved.len() > self.n {
            if let Some(old) = self.saved.pop_front() {
                actions.push(CheckpointingAction::Delete(old));
            }
        }
        actions
    }
}

/// Keep the checkpoint of the epoch with the best validation accuracy. The checkpoint at step
/// `e x steps_per_epoch` closes epoch `e`; others (mid-epoch ones, and those from before a
/// resume, whose accuracy it has not seen) it leaves to the other strategies.
pub struct BestAccuracy {
    accuracies: Accuracies,
    steps_per_epoch: usize,
    best: Option<(f64, usize)>,
    disown: Vec<usize>,
}

impl BestAccuracy {
    /// `steps_per_epoch`: optimizer steps per epoch; `existing`: steps of checkpoints already in
    /// the folder.
    pub fn new(
        accuracies: Accuracies,
        steps_per_epoch: usize,
        existing: impl IntoIterator<Item = u64>,
    ) -> Self {
        Self {
            accuracies,
            steps_per_epoch: steps_per_epoch.max(1),
            best: None,
            disown: existing.into_iter().map(|s| s as usize).collect(),
        }
    }

    /// The actions when `step` is the best so far; `None` when it is not (or closes no
    /// validated epoch).
    fn judge(&mut self, step: usize) -> Option<Vec<CheckpointingAction>> {
        if step == 0 || step % self.steps_per_epoch != 0 {
            return None;
        }
        let acc = self.accuracies.get(step / self.steps_per_epoch)?;
        match self.best {
            Some((best, _)) if acc <= best => None,
            prev => {
                self.best = Some((acc, step));
                let mut actions = vec![CheckpointingAction::Save];
                if let Some((_, old)) = prev {
                    actions.push(CheckpointingAction::Delete(old));
                }
                Some(actions)
            }
        }
    }
}

impl CheckpointingStrategy for BestAccuracy {
    fn checkpointing(
        &mut self,
        step: usize,
        _store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        // burn-train's composed strategy deletes a checkpoint once every strategy has let go of
        // it (said `Delete` of it, or nothing at all when it was saved): let go of those from
        // before the resume at once, and of this one unless it is the best.
        let mut actions: Vec<_> = self
            .disown
            .drain(..)
            .filter(|&s| s != step)
            .map(CheckpointingAction::Delete)
            .collect();
        match self.judge(step) {
            Some(keep) => actions.extend(keep),
            None => actions.push(CheckpointingAction::Delete(step)),
        }
        actions
    }
}

/// Stop when the validation accuracy has not improved for `patience` epochs.
#[derive(Debug, Clone)]
pub struct Plateau {
    patience: usize,
    accuracies: Accuracies,
    best: Option<(f64, usize)>,
}

impl Plateau {
    /// Stop after `patience` epochs without a better accuracy.
    pub fn new(patience: usize, accuracies: Accuracies) -> Self {
        Self {
            patience,
            accuracies,
            best: None,
        }
    }
}

impl EarlyStoppingStrategy for Plateau {
    fn should_stop(&mut self, epoch: usize, _store: &EventStoreClient) -> bool {
        let Some(acc) = self.accuracies.get(epoch) else {
            return false;
        };
        match self.best {
            Some((best, best_epoch)) if acc <= best => epoch - best_epoch >= self.patience,
            _ => {
                self.best = Some((acc, epoch));
                false
            }
        }
    }
}
