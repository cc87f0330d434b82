//! The training engine: LaVIN's loop inside burn-train.
//!
//! [`train`] builds burn-train's `SupervisedTraining` for one rank and launches it with
//! [`strategy::LavinStrategy`] as its custom training strategy. From burn-train: the `Learner`
//! (holding the model as [`model::Trainee`], whose record is the adapters only, the optimizer as
//! [`optimizer::LavinOptimizer`], the schedule as [`optimizer::StepSchedule`]), the data
//! loaders ([`loader`]), the metrics and their per-epoch file logs under
//! `<output-dir>/train` and `<output-dir>/valid` ([`metrics`]), the renderer, the checkpointer
//! (files in `<output-dir>/checkpoint`, see [`crate::checkpoint`]) with LaVIN's checkpointing
//! and early stopping strategies ([`policies`]), and the interrupter. Kept from LaVIN:
//! `metrics.jsonl` and the data-parallel exchange.

#[cfg(all(feature = "tui", unix))]
mod dashboard;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod optimizer;
pub mod policies;
pub mod strategy;

use std::sync::{Arc, Mutex};

use burn::tensor::backend::AutodiffBackend;
use burn::train::checkpoint::ComposedCheckpointingStrategy;
use burn::train::logger::InMemoryMetricLogger;
use burn::train::metric::LearningRateMetric;
use burn::train::{Learner, SupervisedTraining, TrainingStrategy};

use crate::checkpoint::{self, CheckpointRecorder};

use lavin_model::Lavin;

use crate::config::TrainConfig;
use crate::data::BatchSource;
use crate::distributed::{check_same_start, Peer};
use crate::optim::{trainable_params, AdamW};
use crate::params::lavin_trainable_name;
use crate::trainer::{optimizer_for, steps_per_epoch, TrainError, TrainOutcome, TrainState};
use crate::validate::ValSet;

use loader::{Plan, Position, RankLoader, ValLoader};
use metrics::{AccuracyMetric, StepMetric, StepValue};
use model::Trainee;
use optimizer::{LavinOptimizer, StepSchedule};
use policies::{Accuracies, BestAccuracy, KeepLast, Plateau};
use strategy::LavinStrategy;

/// Option rows per validation forward.
const VAL_ROWS: usize = 32;

/// Run training from `state` (fresh: `TrainState::default()`) to `cfg.epochs` as one rank, on
/// burn-train; validate on `val` at the end (rank 0). Returns the trained model.
///
/// `optim` carries the moments (fresh or from [`crate::trainer::resume_from`]) and gets the
/// final ones back; `data_seed` fixes the data order. Alone (`peer` = `None`) this is the whole
/// run. As one rank of a data-parallel group ([`crate::distributed::run_ranks`]) rank `r` of
/// `w` takes micro-batch `r` of every `w` consecutive ones, the adapter gradients are averaged
/// over the ranks once per optimizer step, and only rank 0 logs, validates and writes
/// checkpoints: `w` ranks of batch `b` compute what one rank of batch `b` with `w` times the
/// accumulation computes.
#[allow(clippy::too_many_arguments)]
pub fn train<B, S>(
    cfg: &TrainConfig,
    model: Lavin<B>,
    optim: &mut AdamW<B::InnerBackend>,
    data: Arc<S>,
    state: TrainState,
    data_seed: u64,
    device: &B::Device,
    mut peer: Option<Peer>,
    val: Option<Arc<ValSet>>,
) -> Result<(Lavin<B::InnerBackend>, TrainOutcome), TrainError>
where
    B: AutodiffBackend,
    S: BatchSource<B> + Send + Sync + 'static,
{
    let (rank, world) = peer.as_ref().map_or((0, 1), |p| (p.rank, p.world));
    if world != cfg.world_size() {
        return Err(TrainError::World {
            given: world,
            expected: cfg.world_size(),
            nnodes: cfg.nnodes,
            devices: cfg.devices.clone(),
        });
    }
    let spe = steps_per_epoch(data.len(), cfg.batch_size, world);
    if spe == 0 {
        return Err(TrainError::TooFewExamples {
            n: data.len(),
            batch: cfg.batch_size * world,
        });
    }
    let naming = lavin_trainable_name;
    let n_trainable = trainable_params(&model, &naming)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    if let Some(p) = peer.as_mut() {
        check_same_start(p, &model, &naming)?;
    }
    let lead = rank == 0;
    let accum = cfg.accum_iter.max(1);
    let position = Position::default();
    let loader = RankLoader::new(
        data,
        Plan {
            batch: cfg.batch_size,
            rank,
            world,
            seed: data_seed,
            accum,
            recompute: cfg.gradient_checkpointing,
        },
        spe,
        position.clone(),
        device.clone(),
    );
    let valid = match val {
        Some(set) if lead => ValLoader::new(set, VAL_ROWS, device.clone()),
        _ => ValLoader::empty(device.clone()),
    };
    let adam = std::mem::replace(optim, optimizer_for(cfg));
    let optimizer = LavinOptimizer::<B>::new(adam);
    let schedule = StepSchedule::new(cfg.schedule(), spe, accum, state.global_step as usize);
    let outcome = Arc::new(Mutex::new(None));
    let accuracies = Accuracies::default();
    let strategy = LavinStrategy {
        cfg: cfg.clone(),
        state,
        data_seed,
        steps_per_epoch: spe,
        rank,
        world,
        trainable_params: n_trainable,
        position,
        loader: loader.clone(),
        valid: valid.clone(),
        optim: optimizer.clone(),
        schedule: schedule.clone(),
        accuracies: accuracies.clone(),
        peer: Mutex::new(peer),
        outcome: outcome.clone(),
    };
    let mut training = SupervisedTraining::new(&cfg.output_dir, Arc::new(loader), Arc::new(valid))
        .with_training_strategy(TrainingStrategy::Custom(Arc::new(strategy)))
        .metric_train_numeric(StepMetric::new(StepValue::Loss))
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train_numeric(StepMetric::new(StepValue::GradNorm))
        .metric_train_numeric(StepMetric::new(StepValue::TokensPerSecond))
        .metric_valid_numeric(AccuracyMetric::default())
        .renderer(metrics::renderer(cfg, lead))
        .num_epochs(cfg.epochs)
        // lavin-train prints its own messages; burn-train's would install a global logger.
        .with_application_logger(None);
    if lead {
        // burn-train's checkpointer; the records are the adapters, their moments and the run's
        // position (`crate::checkpoint`), numbered by optimizer step.
        // burn-train's checkpointer would ignore a folder it cannot make until its first write.
        let dir = checkpoint::dir_of(&cfg.output_dir);
        std::fs::create_dir_all(&dir).map_err(|source| crate::io::IoError::Io {
            path: dir.clone(),
            source,
        })?;
        checkpoint::clean_partial(&dir)?;
        let existing = checkpoint::list(&dir);
        let keep = ComposedCheckpointingStrategy::builder()
            .add(KeepLast::new(
                cfg.keep_last,
                existing.iter().map(|(s, _)| *s),
            ))
            .add(BestAccuracy::new(
                accuracies.clone(),
                spe / accum,
                existing.iter().map(|(s, _)| *s),
            ))
            .build();
        training = training
            .with_file_checkpointer(CheckpointRecorder::default())
            .with_checkpointing_strategy(keep);
        if let Some(patience) = cfg.early_stopping {
            training = training.early_stopping(Plateau::new(patience, accuracies.clone()));
        }
    } else {
        // Only rank 0 writes metric files.
        training = training.with_metric_logger(InMemoryMetricLogger::new());
    }
    let result = training.launch(Learner::new(
        Trainee { lavin: model },
        optimizer.clone(),
        schedule,
    ));
    let outcome = outcome
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("the strategy reports its outcome")?;
    *optim = std::mem::replace(&mut optimizer.state().adam, optimizer_for(cfg));
    Ok((result.model.lavin, outcome))
}
