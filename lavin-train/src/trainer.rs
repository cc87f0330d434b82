//! The training loop: epochs of seeded, `drop_last` batches; gradient accumulation with the loss
//! divided by `accum_iter`; non-finite-loss batches skipped and counted; LaVIN's lr schedule per
//! accumulation window; optional global-norm clipping; torch-exact AdamW on the adapters only;
//! checkpoints every N optimizer steps and at each epoch end; exact resume (same next batch,
//! same lr, same moments).
//!
//! Why not burn-train's `Learner`: in Burn 0.21 it checkpoints the whole model record per epoch
//! (13 GB for 7B), steps the lr scheduler once per micro-batch even with accumulation, drops the
//! partial accumulation without telling, and its optimizers have no parameter groups (one weight
//! decay for all). This loop uses Burn's pieces (autodiff, `GradientsParams`,
//! `GradientsAccumulator`, module mappers) and this crate's optimizer, schedule, checkpoint and
//! report modules.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::GradientsAccumulator;
use burn::tensor::backend::AutodiffBackend;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use lavin_model::lavin::Lavin;

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointMeta, FORMAT};
use crate::config::TrainConfig;
pub use crate::data::{BatchSource, BatchStats};
use crate::lr_sched::LrSchedule;
use crate::optim::{clip_and_step, trainable_params, AdamW, AdamWConfig, OptimError};
use crate::parallel::DataParallel;
use crate::params::{
    assign_params, collect_params, lavin_trainable_name, moments_from_host, moments_to_host,
};
use crate::report::{MetricsLog, Progress, StepMetrics};

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
    /// The data source failed.
    #[error("data: {0}")]
    Data(String),
    /// A checkpoint written with another global batch: its position in the epoch would not
    /// name the same examples.
    #[error(
        "{path}: written with batch_size x devices = {saved}, this run has {now}; resume with \
         the same --batch-size and number of --devices"
    )]
    BatchMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// Its global batch.
        saved: usize,
        /// This run's.
        now: usize,
    },
    /// `train` was given another number of devices than the config's `devices` lists.
    #[error("{given} devices given to train, but the config's devices `{listed}` name {expected}")]
    Devices {
        /// Devices passed.
        given: usize,
        /// The config's list.
        listed: String,
        /// Its length.
        expected: usize,
    },
    /// Not enough examples for one batch.
    #[error(
        "{n} training examples < one batch of {batch} (batch_size x devices): nothing to train"
    )]
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

/// `drop_last` micro-batches per epoch: `floor(n / (batch_size * devices))`.
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
    /// Last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
}

/// Load a resume source into `model` and `optim`; returns the state to continue from.
/// A lavin-train checkpoint restores moments and counters; an original `.pth` only adapters and
/// epoch (fresh moments). A lavin-train checkpoint must come from a run with the same global
/// batch (`batch_size x devices`) as `cfg`.
pub fn resume_from<B: AutodiffBackend>(
    path: &Path,
    cfg: &TrainConfig,
    model: Lavin<B>,
    optim: &mut AdamW<B::InnerBackend>,
    device: &B::Device,
) -> Result<(Lavin<B>, TrainState, u64), TrainError> {
    let ck = Checkpoint::load(path)?;
    // Only the two fields that fix the data position are read, so a config from another version
    // of this crate still resumes.
    let saved = &ck.meta.config;
    if let (Some(batch), Some(devices)) = (saved["batch_size"].as_u64(), saved["devices"].as_str())
    {
        let world = lavin_backends::parse_devices(devices).map_or(1, |d| d.len());
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

fn save_checkpoint<B: AutodiffBackend>(
    cfg: &TrainConfig,
    model: &Lavin<B>,
    optim: &AdamW<B::InnerBackend>,
    st: &TrainState,
    seed: u64,
) -> Result<PathBuf, TrainError> {
    let (exp_avg, exp_avg_sq, adam_steps) = moments_to_host(optim);
    let ck = Checkpoint {
        meta: CheckpointMeta {
            format: FORMAT.into(),
            epoch: st.epoch,
            iteration: st.iteration,
            global_step: st.global_step,
            micro_step: st.micro_step,
            skipped: st.skipped,
            data_seed: seed,
            adam_steps,
            config: serde_json::to_value(cfg).unwrap_or_default(),
            source: None,
        },
        model: collect_params(model, &lavin_trainable_name),
        exp_avg,
        exp_avg_sq,
    };
    Ok(ck.save(&cfg.output_dir, cfg.keep_last)?)
}

/// Run training from `state` (fresh: `TrainState::default()`) to `cfg.epochs`.
///
/// `optim` carries the moments (fresh or from [`resume_from`]); `data_seed` fixes the data order.
/// `model` lives on `devices[0]`; with more devices each micro-batch of
/// `batch_size x devices` examples is split across them ([`DataParallel`]).
pub fn train<B: AutodiffBackend, S: BatchSource<B> + Sync>(
    cfg: &TrainConfig,
    mut model: Lavin<B>,
    optim: &mut AdamW<B::InnerBackend>,
    data: &S,
    mut state: TrainState,
    data_seed: u64,
    devices: &[B::Device],
) -> Result<(Lavin<B>, TrainOutcome), TrainError>
where
    Lavin<B>: AutodiffModule<B>,
{
    let world = devices.len();
    if world != cfg.world_size() {
        return Err(TrainError::Devices {
            given: world,
            listed: cfg.devices.clone(),
            expected: cfg.world_size(),
        });
    }
    let mut dp = DataParallel::new(&model, devices).with_recompute(cfg.gradient_checkpointing);
    let per_batch = cfg.batch_size * world;
    let spe = steps_per_epoch(data.len(), cfg.batch_size, world);
    if spe == 0 {
        return Err(TrainError::TooFewExamples {
            n: data.len(),
            batch: per_batch,
        });
    }
    let accum = cfg.accum_iter.max(1);
    let sched: LrSchedule = cfg.schedule();
    let naming = lavin_trainable_name;
    let trainable_params = trainable_params(&model, &naming)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let total_steps = (cfg.epochs * (spe / accum)) as u64;
    std::fs::create_dir_all(&cfg.output_dir).map_err(|source| crate::io::IoError::Io {
        path: cfg.output_dir.clone(),
        source,
    })?;
    let mut log = MetricsLog::open(&cfg.output_dir, Some(state.global_step).filter(|&s| s > 0))?;
    let mut progress = Progress::new(total_steps, state.global_step, false);
    let t0 = Instant::now();
    let mut losses = Vec::new();
    let mut samples_total = 0u64;
    let mut last_ck = None;

    let reached_max = |st: &TrainState| cfg.max_steps.is_some_and(|m| st.global_step >= m);
    while state.epoch < cfg.epochs && !reached_max(&state) {
        let order = epoch_order(data.len(), data_seed, state.epoch);
        let mut acc = GradientsAccumulator::<Lavin<B>>::new();
        let (mut win_loss, mut win_n, mut win_samples, mut win_tokens) =
            (0.0, 0usize, 0usize, 0usize);
        let mut win_start = Instant::now();
        let mut lr = sched.lr_for_micro_batch(state.epoch, state.iteration, spe, accum);
        while state.iteration < spe {
            let it = state.iteration;
            if LrSchedule::updates_at(it, accum) {
                lr = sched.lr_at(LrSchedule::fractional_epoch(state.epoch, it, spe));
                win_start = Instant::now();
            }
            let idx = &order[it * per_batch..(it + 1) * per_batch];
            // Dropout masks come from the backend RNG: reseeding it from what a checkpoint
            // restores makes `--resume` reproduce them too.
            let seed = micro_batch_seed(data_seed, state.epoch, it);
            let shards = dp
                .micro_batch(&model, data, idx, seed, (accum * world) as f64)
                .map_err(TrainError::Data)?;
            state.micro_step += 1;
            state.iteration += 1;
            for shard in shards {
                win_samples += shard.stats.samples;
                win_tokens += shard.stats.tokens;
                match shard.grads {
                    Some(grads) => {
                        win_loss += shard.loss;
                        win_n += 1;
                        acc.accumulate(&model, grads);
                    }
                    None => state.skipped += 1,
                }
            }
            if (it + 1) % accum != 0 {
                continue;
            }
            let mut grads = acc.grads();
            let (m, norm) = clip_and_step(optim, model, &mut grads, lr, cfg.clip_grad, &naming)?;
            model = m;
            dp.sync(&model);
            state.global_step += 1;
            samples_total += win_samples as u64;
            let secs = win_start.elapsed().as_secs_f64().max(1e-9);
            let metrics = StepMetrics {
                step: state.global_step,
                epoch: LrSchedule::fractional_epoch(state.epoch, it + 1 - accum, spe),
                loss: if win_n > 0 {
                    win_loss / win_n as f64
                } else {
                    f64::NAN
                },
                lr,
                grad_norm: norm,
                samples_per_sec: win_samples as f64 / secs,
                tokens_per_sec: win_tokens as f64 / secs,
                skipped: state.skipped,
            };
            log.log(&metrics)?;
            progress.update(&metrics);
            losses.push((state.global_step, metrics.loss));
            (win_loss, win_n, win_samples, win_tokens) = (0.0, 0, 0, 0);
            if reached_max(&state) && state.iteration < spe {
                last_ck = Some(save_checkpoint(cfg, &model, optim, &state, data_seed)?);
                progress.println(&format!("max_steps {} reached", state.global_step));
                break;
            }
            if cfg.checkpoint_every > 0
                && state.global_step % cfg.checkpoint_every as u64 == 0
                && state.iteration < spe
            {
                save_checkpoint(cfg, &model, optim, &state, data_seed)?;
            }
        }
        if state.iteration < spe {
            break; // stopped by max_steps inside the epoch
        }
        // A partial accumulation window at the epoch end is dropped (as the original, which
        // zeroes the gradients at the start of every epoch).
        state.epoch += 1;
        state.iteration = 0;
        last_ck = Some(save_checkpoint(cfg, &model, optim, &state, data_seed)?);
        progress.println(&format!(
            "epoch {} done, checkpoint {}",
            state.epoch,
            last_ck
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ));
    }
    progress.finish();
    Ok((
        model,
        TrainOutcome {
            state,
            losses,
            train_seconds: t0.elapsed().as_secs_f64(),
            samples: samples_total,
            trainable_params,
            last_checkpoint: last_ck,
        },
    ))
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
