//! burn-train's data loaders over LaVIN's data: a rank's micro-batches of an epoch in the seeded
//! order, and the validation problems in chunks of whole problems.
//!
//! The training loader starts where the strategy sets it ([`Position`]): the epoch decides the
//! order, the start the first micro-batch (a resumed run continues mid-epoch).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::data::{BatchSource, Row};
use crate::engine::model::{MicroBatch, ValChunk};
use crate::trainer::{epoch_order, micro_batch_seed};
use crate::validate::ValSet;

/// Where the next epoch's iteration starts: `(epoch, first micro-batch)`.
#[derive(Debug, Clone, Default)]
pub struct Position(Arc<Mutex<(usize, usize)>>);

impl Position {
    /// Start the next `iter()` at micro-batch `start` of `epoch`.
    pub fn set(&self, epoch: usize, start: usize) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = (epoch, start);
    }

    fn get(&self) -> (usize, usize) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a rank cuts the data.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Examples per micro-batch.
    pub batch: usize,
    /// This rank and the number of ranks.
    pub rank: usize,
    /// Ranks.
    pub world: usize,
    /// Data order and dropout seed.
    pub seed: u64,
    /// Micro-batches per optimizer step (the loss divisor).
    pub accum: usize,
    /// Recompute blocks in backward.
    pub recompute: bool,
}

/// The train loader of one rank.
pub struct RankLoader<B: AutodiffBackend> {
    source: Arc<dyn BatchSource<B> + Send + Sync>,
    plan: Plan,
    /// Micro-batches of this rank an epoch can hold (`drop_last`).
    range: Range<usize>,
    position: Position,
    device: B::Device,
    error: Arc<Mutex<Option<String>>>,
}

impl<B: AutodiffBackend> Clone for RankLoader<B> {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone(),
            plan: self.plan,
            range: self.range.clone(),
            position: self.position.clone(),
            device: self.device.clone(),
            error: self.error.clone(),
        }
    }
}

impl<B: AutodiffBackend> RankLoader<B> {
    /// `steps_per_epoch` micro-batches per epoch and rank, placed on `device`.
    pub fn new(
        source: Arc<dyn BatchSource<B> + Send + Sync>,
        plan: Plan,
        steps_per_epoch: usize,
        position: Position,
        device: B::Device,
    ) -> Self {
        Self {
            source,
            plan,
            range: 0..steps_per_epoch,
            position,
            device,
            error: Arc::default(),
        }
    }

    /// The error that ended the last iteration early, if one did (a batch that could not be
    /// built: the iterator cannot return it).
    pub fn take_error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

struct RankIter<'a, B: AutodiffBackend> {
    loader: &'a RankLoader<B>,
    epoch: usize,
    order: Vec<usize>,
    next: usize,
}

impl<B: AutodiffBackend> Iterator for RankIter<'_, B> {
    type Item = MicroBatch<B>;

    fn next(&mut self) -> Option<MicroBatch<B>> {
        let l = self.loader;
        if self.next >= l.range.end {
            return None;
        }
        let Plan {
            batch: b,
            rank,
            world,
            ..
        } = l.plan;
        // Micro-batch `g` of the epoch, in the order one rank with `world` times the
        // accumulation would see them.
        let g = self.next * world + rank;
        self.next += 1;
        match l.source.batch(&self.order[g * b..(g + 1) * b], &l.device) {
            Ok((batch, stats)) => Some(MicroBatch {
                batch,
                stats,
                seed: micro_batch_seed(l.plan.seed, self.epoch, g),
                divisor: l.plan.accum as f64,
                recompute: l.plan.recompute,
            }),
            Err(e) => {
                *l.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                self.next = l.range.end;
                None
            }
        }
    }
}

impl<B: AutodiffBackend> DataLoaderIterator<MicroBatch<B>> for RankIter<'_, B> {
    fn progress(&self) -> Progress {
        let b = self.loader.plan.batch;
        Progress::new(
            (self.next - self.loader.range.start) * b,
            self.loader.range.len() * b,
        )
    }
}

impl<B: AutodiffBackend> DataLoader<B, MicroBatch<B>> for RankLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<MicroBatch<B>> + 'a> {
        let (epoch, start) = self.position.get();
        Box::new(RankIter {
            loader: self,
            epoch,
            order: epoch_order(self.source.len(), self.plan.seed, epoch),
            next: start.max(self.range.start),
        })
    }

    fn num_items(&self) -> usize {
        self.range.len() * self.plan.batch
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, MicroBatch<B>>> {
        Arc::new(Self {
            device: device.clone(),
            ..self.clone()
        })
    }

    /// Micro-batches `start..end` of this rank's epoch.
    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, MicroBatch<B>>> {
        let first = self.range.start + start.min(self.range.len());
        let last = self.range.start + end.min(self.range.len());
        Arc::new(Self {
            range: first..last.max(first),
            ..self.clone()
        })
    }
}

/// The validation loader: whole problems, up to `rows` option rows per chunk.
pub struct ValLoader<B: Backend> {
    /// `None`: a run without a validation split.
    set: Option<Arc<ValSet>>,
    /// Problem ranges, one per chunk.
    chunks: Arc<Vec<Range<usize>>>,
    device: B::Device,
    error: Arc<Mutex<Option<String>>>,
}

impl<B: Backend> Clone for ValLoader<B> {
    fn clone(&self) -> Self {
        Self {
            set: self.set.clone(),
            chunks: self.chunks.clone(),
            device: self.device.clone(),
            error: self.error.clone(),
        }
    }
}

impl<B: Backend> ValLoader<B> {
    /// Chunks of at most `rows` option rows (a problem with more is a chunk of its own).
    pub fn new(set: Arc<ValSet>, rows: usize, device: B::Device) -> Self {
        let mut chunks = Vec::new();
        let (mut start, mut n_rows) = (0, 0);
        for (i, &(_, n, _)) in set.problems.iter().enumerate() {
            if n_rows > 0 && n_rows + n > rows.max(1) {
                chunks.push(start..i);
                (start, n_rows) = (i, 0);
            }
            n_rows += n;
        }
        if start < set.problems.len() {
            chunks.push(start..set.problems.len());
        }
        Self {
            set: Some(set),
            chunks: Arc::new(chunks),
            device,
            error: Arc::default(),
        }
    }

    /// A loader with no problems (runs without a validation split).
    pub fn empty(device: B::Device) -> Self {
        Self {
            set: None,
            chunks: Arc::default(),
            device,
            error: Arc::default(),
        }
    }

    /// The error that ended the last iteration early, if one did.
    pub fn take_error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Expected accuracy of uniform guessing.
    pub fn chance(&self) -> f64 {
        self.set.as_ref().map_or(0.0, |s| s.chance())
    }
}

struct ValIter<'a, B: Backend> {
    loader: &'a ValLoader<B>,
    next: usize,
}

impl<B: Backend> Iterator for ValIter<'_, B> {
    type Item = ValChunk<B>;

    fn next(&mut self) -> Option<ValChunk<B>> {
        let l = self.loader;
        let set = l.set.as_ref()?;
        let range = l.chunks.get(self.next)?.clone();
        self.next += 1;
        let problems = &set.problems[range];
        let first_row = problems[0].0;
        let (last, n, _) = problems[problems.len() - 1];
        let rows: Vec<&Row> = set.source.rows[first_row..last + n].iter().collect();
        match set.source.make_batch::<B>(&rows, &l.device) {
            Ok((batch, _)) => Some(ValChunk {
                batch,
                problems: problems
                    .iter()
                    .map(|&(row, n, answer)| (row - first_row, n, answer))
                    .collect(),
            }),
            Err(e) => {
                *l.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                self.next = l.chunks.len();
                None
            }
        }
    }
}

impl<B: Backend> DataLoaderIterator<ValChunk<B>> for ValIter<'_, B> {
    fn progress(&self) -> Progress {
        Progress::new(self.next, self.loader.chunks.len())
    }
}

impl<B: Backend> DataLoader<B, ValChunk<B>> for ValLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<ValChunk<B>> + 'a> {
        Box::new(ValIter {
            loader: self,
            next: 0,
        })
    }

    fn num_items(&self) -> usize {
        self.set.as_ref().map_or(0, |s| s.problems.len())
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, ValChunk<B>>> {
        Arc::new(Self {
            device: device.clone(),
            ..self.clone()
        })
    }

    /// Chunks `start..end`.
    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, ValChunk<B>>> {
        let end = end.min(self.chunks.len());
        let start = start.min(end);
        Arc::new(Self {
            chunks: Arc::new(self.chunks[start..end].to_vec()),
            ..self.clone()
        })
    }
}
