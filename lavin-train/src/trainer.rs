//! What a training run is made of around the loop (which lives in [`crate::engine`]): its
//! state and outcome, the seeded data order, the per-micro-batch seeds, resuming from a
//! checkpoint and writing one.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use lavin_model::lavin::Lavin;

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointMeta, FORMAT};
use crate::config::TrainConfig;
pub use crate::data::{BatchSource, BatchStats};
use crate::distributed::DistError;
pub use crate::engine::train;
use crate::optim::{trainable_params, AdamW, AdamWConfig, OptimError};
use crate::params::{assign_params, lavin_trainable_name, moments_from_host};
use crate::validate::ValResult;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Checkpoint problem.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Optimizer problem.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// File problem.
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    /// A data-parallel rank could not join or exchange.
    #[error(transparent)]
    Dist(#[from] DistError),
    /// burn-train's checkpointer could not write a checkpoint (the run stops after the step).
    #[error("writing a checkpoint failed: {0}")]
    CheckpointWrite(String),
    /// The data source failed.
    #[error("data: {0}")]
    Data(String),
    /// A checkpoint written with another global batch: its position in the epoch would not
    /// name the same examples.
    #[error(
        "{path}: written with batch_size x ranks = {saved}, this run has {now}; resume with \
         the same --batch-size, --nnodes and number of --devices"
    )]
    BatchMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// Its global batch.
        saved: usize,
        /// This run's.
        now: usize,
    },
    /// `train` runs as another number of ranks than the config names.
    #[error(
        "{given} data-parallel ranks, but the config names {expected} (--nnodes {nnodes} x \
         devices `{devices}`)"
    )]
    World {
        /// Ranks of the group `train` runs in.
        given: usize,
        /// `nnodes` x devices of the config.
        expected: usize,
        /// The config's nodes.
        nnodes: usize,
        /// The config's device list.
        devices: String,
    },
    /// Not enough examples for one batch.
    #[error("{n} training examples < one batch of {batch} (batch_size x ranks): nothing to train")]
    TooFewExamples {
        /// Examples.
        n: usize,
        /// Batch.
        batch: usize,
    },
}

/// The example order of `epoch`: a permutation of `0..n` from `seed` and `epoch` only (so a
/// resumed run sees the same order).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mix = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = rand::rngs::StdRng::seed_from_u64(mix);
    v.shuffle(&mut rng);
    v
}

/// `drop_last` micro-batches per epoch and rank: `floor(n / (batch_size * ranks))`.
pub fn steps_per_epoch(n: usize, batch_size: usize, world: usize) -> usize {
    n / (batch_size * world).max(1)
}

/// Where training stands (what a checkpoint restores).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainState {
    /// Epoch of the next micro-batch.
    pub epoch: usize,
    /// Next micro-batch index within the epoch.
    pub iteration: usize,
    /// Optimizer steps done.
    pub global_step: u64,
    /// Micro-batches seen.
    pub micro_step: u64,
    /// Skipped batches.
    pub skipped: u64,
}

/// Result of [`train`].
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Final state.
    pub state: TrainState,
    /// Loss per optimizer step (mean over its non-skipped micro-batches).
    pub losses: Vec<(u64, f64)>,
    /// Seconds spent in the loop.
    pub train_seconds: f64,
    /// Samples processed.
    pub samples: u64,
    /// Trainable parameter count.
    pub trainable_params: usize,
    /// Last checkpoint written (rank 0 only).
    pub last_checkpoint: Option<PathBuf>,
    /// Why training stopped early, if it did.
    pub halt: Option<Halt>,
    /// This rank (0 when alone).
    pub rank: usize,
    /// Validation at the end (rank 0, when a validation set was given and the run was not
    /// interrupted).
    pub val: Option<ValResult>,
}

/// Load a resume source into `model` and `optim`; returns the state to continue from.
/// A lavin-train checkpoint restores moments and counters; an original `.pth` only adapters and
/// epoch (fresh moments). A lavin-train checkpoint must come from a run with the same global
/// batch (`batch_size x ranks`) as `cfg`.
pub fn resume_from<B: AutodiffBackend>(
    path: &Path,
    cfg: &TrainConfig,
    model: Lavin<B>,
    optim: &mut AdamW<B::InnerBackend>,
    device: &B::Device,
) -> Result<(Lavin<B>, TrainState, u64), TrainError> {
    let ck = Checkpoint::load::<B::InnerBackend>(path, device)?;
    // Only the two fields that fix the data position are read, so a config from another version
    // of this crate still resumes.
    let saved = &ck.meta.config;
    if let (Some(batch), Some(devices)) = (saved["batch_size"].as_u64(), saved["devices"].as_str())
    {
        let nnodes = saved["nnodes"].as_u64().unwrap_or(1) as usize;
        let world = nnodes * lavin_backends::parse_devices(devices).map_or(1, |d| d.len());
        let (saved, now) = (batch as usize * world, cfg.batch_size * cfg.world_size());
        if saved != now {
            return Err(TrainError::BatchMismatch {
                path: path.to_path_buf(),
                saved,
                now,
            });
        }
    }
    ck.check_against(path, &trainable_params(&model, &lavin_trainable_name))?;
    let model = assign_params(model, &ck.model, &lavin_trainable_name, path)?;
    // `AutodiffBackend::InnerBackend` shares the device type.
    moments_from_host(
        optim,
        &ck.exp_avg,
        &ck.exp_avg_sq,
        &ck.meta.adam_steps,
        device,
    );
    let m = &ck.meta;
    Ok((
        model,
        TrainState {
            epoch: m.epoch,
            iteration: m.iteration,
            global_step: m.global_step,
            micro_step: m.micro_step,
            skipped: m.skipped,
        },
        m.data_seed,
    ))
}

/// What a checkpoint records of where the run stands.
pub(crate) fn checkpoint_meta(cfg: &TrainConfig, st: &TrainState, seed: u64) -> CheckpointMeta {
    CheckpointMeta {
        format: FORMAT.into(),
        epoch: st.epoch,
        iteration: st.iteration,
        global_step: st.global_step,
        micro_step: st.micro_step,
        skipped: st.skipped,
        data_seed: seed,
        adam_steps: Default::default(),
        config: serde_json::to_value(cfg).unwrap_or_default(),
        source: None,
    }
}

/// Why a run stopped before its last epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// `max_steps` optimizer steps were done.
    MaxSteps,
    /// Ctrl-C / SIGTERM ([`crate::interrupt`]) or the dashboard's quit.
    Interrupted,
    /// Validation accuracy stopped improving (`early_stopping` epochs).
    EarlyStopping,
}

/// The backend RNG seed of one micro-batch: a splitmix64 mix of the data seed, epoch and
/// iteration (all restored by a checkpoint).
pub fn micro_batch_seed(data_seed: u64, epoch: usize, iteration: usize) -> u64 {
    let mut z = data_seed
        ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (iteration as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fresh optimizer with the config's hyper-parameters (betas 0.9/0.95, eps 1e-8).
pub fn optimizer_for<B: burn::tensor::backend::Backend>(cfg: &TrainConfig) -> AdamW<B> {
    AdamW::new(AdamWConfig {
        weight_decay: cfg.weight_decay,
        ..AdamWConfig::default()
    })
}

#[cfg(test)]
mod tests;
