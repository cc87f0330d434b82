//! LaVIN's training loop as burn-train's custom learning strategy: burn-train supplies the
//! learner (model, optimizer, lr scheduler), the data loaders, the metrics and their file
//! logger, the renderer, the checkpointer, the early stopping slot and the interrupter; the
//! strategy decides what its default loops decide differently from the original: the lr steps
//! once per optimizer step (not per micro-batch), the loss is divided by the accumulation, a
//! non-finite loss skips its batch, checkpoints are taken every N optimizer steps mid-epoch
//! (numbered by step), validation runs at the end or after every epoch, and a resumed run
//! continues at the same micro-batch with the same dropout masks. With several ranks the
//! gradients are averaged once per step ([`crate::distributed`]).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::data::dataloader::Progress;
use burn::module::AutodiffModule;
use burn::optim::GradientsAccumulator;
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::store::EventStoreClient;
use burn::train::{
    CloneEarlyStoppingStrategy, EventProcessorTraining, InferenceStep, Interrupter, Learner,
    LearnerEvent, LearningCheckpointer, LearningComponentsMarker, SupervisedLearningStrategy,
    SupervisedTrainingEventProcessor, TrainLoader, TrainingComponents, TrainingItem, ValidLoader,
};

use crate::config::TrainConfig;
use crate::distributed::{all_reduce_grads, Peer};
use crate::engine::loader::{Position, RankLoader, ValLoader};
use crate::engine::model::{StepOutput, Trainee};
use crate::engine::optimizer::{LavinOptimizer, StepSchedule};
use crate::engine::policies::Accuracies;
use crate::lr_sched::LrSchedule;
use crate::optim::{clip_coefficient, module_grad_norm};
use crate::params::lavin_trainable_name;
use crate::report::{MetricsLog, StepMetrics};
use crate::trainer::{checkpoint_meta, Halt, TrainError, TrainOutcome, TrainState};
use crate::validate::ValResult;

/// burn-train's component types of a LaVIN run.
pub type Components<B> = LearningComponentsMarker<B, StepSchedule, Trainee<B>, LavinOptimizer<B>>;

/// Everything the loop needs besides what burn-train hands it.
pub struct LavinStrategy<B: AutodiffBackend> {
    pub(crate) cfg: TrainConfig,
    pub(crate) state: TrainState,
    pub(crate) data_seed: u64,
    pub(crate) steps_per_epoch: usize,
    pub(crate) rank: usize,
    pub(crate) world: usize,
    pub(crate) trainable_params: usize,
    /// Typed handles on the loaders burn-train receives (their position and errors).
    pub(crate) position: Position,
    pub(crate) loader: RankLoader<B>,
    pub(crate) valid: ValLoader<B::InnerBackend>,
    pub(crate) optim: LavinOptimizer<B>,
    /// A clone of the learner's schedule: the run's position reaches its record through it.
    pub(crate) schedule: StepSchedule,
    /// Validation accuracy per epoch, read by the checkpointing and early stopping policies.
    pub(crate) accuracies: Accuracies,
    pub(crate) peer: Mutex<Option<Peer>>,
    /// What the run produced, read by [`crate::engine::train`] after `launch`.
    pub(crate) outcome: Arc<Mutex<Option<Result<TrainOutcome, TrainError>>>>,
}

impl<B: AutodiffBackend> SupervisedLearningStrategy<Components<B>> for LavinStrategy<B> {
    fn fit(
        &self,
        components: TrainingComponents<Components<B>>,
        mut learner: Learner<Components<B>>,
        train: TrainLoader<Components<B>>,
        valid: ValidLoader<Components<B>>,
        _starting_epoch: usize,
    ) -> (Trainee<B>, SupervisedTrainingEventProcessor<Components<B>>) {
        let mut events = components.event_processor;
        let mut saver = Saver {
            checkpointer: components.checkpointer,
            store: components.event_store,
            early_stopping: components.early_stopping,
        };
        let result = self.run(
            &mut learner,
            &mut events,
            &mut saver,
            &components.interrupter,
            train,
            valid,
        );
        // Waits for the checkpointer's writes to finish.
        drop(saver);
        let result = result.and_then(|outcome| {
            checkpoint_failure(&components.interrupter).map_or(Ok(outcome), Err)
        });
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        (learner.model(), events)
    }
}

/// burn-train's checkpointer (rank 0 only), its event store (handed to the checkpointing and
/// early stopping strategies) and the early stopping strategy, as `fit` receives them.
struct Saver<B: AutodiffBackend> {
    checkpointer: Option<LearningCheckpointer<Components<B>>>,
    store: Arc<EventStoreClient>,
    early_stopping: Option<Box<dyn CloneEarlyStoppingStrategy>>,
}

/// burn-train's checkpointer reports a failed write by stopping the interrupter with the
/// error: that ends the run as an error, not as a Ctrl-C.
fn checkpoint_failure(interrupter: &Interrupter) -> Option<TrainError> {
    let msg = interrupter.get_message()?;
    let failed = ["I/O Error", "Recorder error", "Unknown error"]
        .iter()
        .any(|p| msg.starts_with(p));
    failed.then(|| TrainError::CheckpointWrite(msg))
}

/// What one accumulation window adds up: sums of loss, counts, and the stop flag; with several
/// ranks these travel in the gradients' exchange.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    loss: f64,
    n: f64,
    samples: f64,
    tokens: f64,
    skipped: f64,
    stop: f64,
}

impl Window {
    fn to_vec(self) -> Vec<f64> {
        vec![
            self.loss,
            self.n,
            self.samples,
            self.tokens,
            self.skipped,
            self.stop,
        ]
    }

    /// Totals over the ranks from their mean.
    fn from_mean(mean: &[f64], world: usize) -> Self {
        let w = world as f64;
        Self {
            loss: mean[0] * w,
            n: (mean[1] * w).round(),
            samples: (mean[2] * w).round(),
            tokens: (mean[3] * w).round(),
            skipped: (mean[4] * w).round(),
            stop: mean[5],
        }
    }
}

impl<B: AutodiffBackend> LavinStrategy<B> {
    fn run(
        &self,
        learner: &mut Learner<Components<B>>,
        events: &mut SupervisedTrainingEventProcessor<Components<B>>,
        saver: &mut Saver<B>,
        interrupter: &Interrupter,
        train: TrainLoader<Components<B>>,
        valid: ValidLoader<Components<B>>,
    ) -> Result<TrainOutcome, TrainError> {
        let cfg = &self.cfg;
        let mut state = self.state.clone();
        let (rank, world, spe) = (self.rank, self.world, self.steps_per_epoch);
        let lead = rank == 0;
        let accum = cfg.accum_iter.max(1);
        let naming = lavin_trainable_name;
        let total_steps = cfg.epochs * (spe / accum);
        let mut peer = self.peer.lock().unwrap_or_else(|e| e.into_inner());
        let mut log = None;
        if lead {
            std::fs::create_dir_all(&cfg.output_dir).map_err(|source| crate::io::IoError::Io {
                path: cfg.output_dir.clone(),
                source,
            })?;
            log = Some(MetricsLog::open(
                &cfg.output_dir,
                Some(state.global_step).filter(|&s| s > 0),
            )?);
            // burn-train numbers epochs from 1 and starts counting at 1: a resumed run's epoch
            // goes to its own folder of the metric logs.
            if state.epoch > 0 {
                events.process_train(LearnerEvent::EndEpoch(state.epoch));
                events.process_valid(LearnerEvent::EndEpoch(state.epoch));
            }
        }
        let t0 = Instant::now();
        let mut losses = Vec::new();
        let mut samples_total = 0u64;
        let mut last_ck = None;
        let mut halt = None;
        let mut epoch_val = None;
        let reached_max = |st: &TrainState| cfg.max_steps.is_some_and(|m| st.global_step >= m);

        while state.epoch < cfg.epochs && !reached_max(&state) {
            self.position.set(state.epoch, state.iteration);
            let mut batches = train.iter();
            let mut acc = GradientsAccumulator::<Trainee<B>>::new();
            let mut win = Window::default();
            let mut win_start = Instant::now();
            while state.iteration < spe {
                let it = state.iteration;
                if LrSchedule::updates_at(it, accum) {
                    win_start = Instant::now();
                }
                let Some(micro) = batches.next() else {
                    return Err(TrainError::Data(self.loader.take_error().unwrap_or_else(
                        || format!("the data ended at micro-batch {it} of {spe}"),
                    )));
                };
                let stats = micro.stats;
                let out = learner.train_step(micro);
                state.micro_step += 1;
                state.iteration += 1;
                win.samples += stats.samples as f64;
                win.tokens += stats.tokens as f64;
                if out.item.skipped {
                    win.skipped += 1.0;
                } else {
                    win.loss += out.item.loss;
                    win.n += 1.0;
                    acc.accumulate(&learner.model(), out.grads);
                }
                if (it + 1) % accum != 0 {
                    continue;
                }
                if crate::interrupt::requested() && !interrupter.should_stop() {
                    interrupter.stop(Some("Ctrl-C / SIGTERM"));
                }
                win.stop = f64::from(u8::from(interrupter.should_stop()));
                let model = learner.model();
                let mut grads = acc.grads();
                if let Some(p) = peer.as_mut() {
                    let (mean, extras) = all_reduce_grads::<B, _, _>(
                        p,
                        &model.lavin,
                        grads,
                        &win.to_vec(),
                        &naming,
                    )?;
                    grads = mean;
                    win = Window::from_mean(&extras, world);
                }
                // Global-norm clipping: the optimizer scales this step's gradients.
                let norm = module_grad_norm(&model.lavin, &grads, &naming);
                self.optim.state().grad_scale =
                    cfg.clip_grad.map_or(1.0, |c| clip_coefficient(norm, c));
                learner.lr_step();
                let lr = learner.lr_current();
                learner.optimizer_step(grads);
                state.global_step += 1;
                state.skipped += win.skipped.round() as u64;
                samples_total += win.samples.round() as u64;
                let secs = win_start.elapsed().as_secs_f64().max(1e-9);
                let loss = if win.n > 0.0 {
                    win.loss / win.n
                } else {
                    f64::NAN
                };
                let metrics = StepMetrics {
                    step: state.global_step,
                    epoch: LrSchedule::fractional_epoch(state.epoch, it + 1 - accum, spe),
                    loss,
                    lr,
                    grad_norm: norm,
                    samples_per_sec: win.samples / secs,
                    tokens_per_sec: win.tokens / secs,
                    skipped: state.skipped,
                };
                if let Some(log) = &mut log {
                    log.log(&metrics)?;
                    events.process_train(LearnerEvent::ProcessedItem(TrainingItem::new(
                        StepOutput {
                            loss,
                            stats: crate::data::BatchStats {
                                samples: win.samples as usize,
                                tokens: win.tokens as usize,
                            },
                            skipped: false,
                            grad_norm: Some(norm),
                            seconds: secs,
                        },
                        batches.progress(),
                        Progress::new(state.global_step as usize, total_steps),
                        Some(state.global_step as usize),
                        Some(lr),
                    )));
                }
                losses.push((state.global_step, loss));
                if win.stop > 0.0 {
                    halt = Some(Halt::Interrupted);
                } else if reached_max(&state) {
                    halt = Some(Halt::MaxSteps);
                }
                win = Window::default();
                if halt.is_some() {
                    break;
                }
                if lead
                    && cfg.checkpoint_every > 0
                    && state.global_step % cfg.checkpoint_every as u64 == 0
                    && state.iteration < spe
                {
                    self.checkpoint(learner, saver, &state)?;
                }
            }
            drop(batches);
            if state.iteration >= spe {
                // A partial accumulation window at the epoch end is dropped (as the original,
                // which zeroes the gradients at the start of every epoch).
                if peer.is_none() {
                    state.skipped += win.skipped as u64;
                }
                state.epoch += 1;
                state.iteration = 0;
                if lead {
                    events.process_train(LearnerEvent::EndEpoch(state.epoch));
                }
            }
            let epoch_done = state.iteration == 0 && halt.is_none();
            if epoch_done && cfg.validate_every_epoch {
                epoch_val = None;
                if lead && valid.num_items() > 0 {
                    epoch_val = Some(self.validate(learner, events, valid.clone(), &state)?);
                }
                if state.epoch < cfg.epochs && self.early_stop(saver, peer.as_mut(), state.epoch)? {
                    halt = Some(Halt::EarlyStopping);
                }
            }
            if lead {
                let ck = self.checkpoint(learner, saver, &state)?;
                let what = match halt {
                    Some(Halt::MaxSteps) => format!("max_steps {} reached", state.global_step),
                    Some(Halt::EarlyStopping) => format!(
                        "early stopping after epoch {}: no better validation accuracy for {} \
                         epochs",
                        state.epoch,
                        cfg.early_stopping.unwrap_or(0)
                    ),
                    Some(Halt::Interrupted) => format!(
                        "interrupted after step {}; continue with --resume {}",
                        state.global_step,
                        ck.display()
                    ),
                    None => format!("epoch {} done", state.epoch),
                };
                eprintln!("lavin-train: {what}, checkpoint {}", ck.display());
                last_ck = Some(ck);
            }
            if halt.is_some() {
                break;
            }
        }
        let train_seconds = t0.elapsed().as_secs_f64();
        // With validation after every epoch, the last epoch's stands unless steps followed it.
        let validated = epoch_val.is_some() && state.iteration == 0 && halt != Some(Halt::MaxSteps);
        let val = if validated {
            epoch_val
        } else if lead && halt != Some(Halt::Interrupted) && valid.num_items() > 0 {
            Some(self.validate(learner, events, valid, &state)?)
        } else {
            None
        };
        Ok(TrainOutcome {
            state,
            losses,
            train_seconds,
            samples: samples_total,
            trainable_params: self.trainable_params,
            last_checkpoint: last_ck,
            halt,
            rank,
            val,
        })
    }

    /// Queue a checkpoint with burn-train's checkpointer (rank 0), numbered by optimizer step;
    /// its checkpointing strategy decides which older ones go. Returns its model file.
    fn checkpoint(
        &self,
        learner: &Learner<Components<B>>,
        saver: &mut Saver<B>,
        state: &TrainState,
    ) -> Result<std::path::PathBuf, TrainError> {
        let Some(checkpointer) = saver.checkpointer.as_mut() else {
            return Err(TrainError::Data(
                "internal: rank 0 has no checkpointer".into(),
            ));
        };
        self.schedule
            .set_position(checkpoint_meta(&self.cfg, state, self.data_seed));
        checkpointer.checkpoint(learner, state.global_step as usize, &saver.store);
        Ok(crate::checkpoint::path(
            &self.cfg.output_dir,
            state.global_step,
        ))
    }

    /// burn-train's early stopping on the validation accuracy after `epoch` (1-based, as the
    /// event store counts), decided on rank 0 and shared with every rank.
    fn early_stop(
        &self,
        saver: &mut Saver<B>,
        peer: Option<&mut Peer>,
        epoch: usize,
    ) -> Result<bool, TrainError> {
        let mut stop = match saver.early_stopping.as_mut() {
            Some(es) if self.rank == 0 => es.should_stop(epoch, &saver.store),
            _ => false,
        };
        if let Some(p) = peer {
            // Rank 0 decides; the mean of (1, 0, 0, ...) is non-zero exactly when it stopped.
            let mean = p.all_reduce_mean(&[f32::from(u8::from(stop))])?;
            stop = mean[0] > 0.0;
        }
        Ok(stop)
    }

    /// Accuracy on the validation problems, each chunk reported to burn-train's metrics.
    fn validate(
        &self,
        learner: &Learner<Components<B>>,
        events: &mut SupervisedTrainingEventProcessor<Components<B>>,
        valid: ValidLoader<Components<B>>,
        state: &TrainState,
    ) -> Result<ValResult, TrainError> {
        eprintln!(
            "lavin-train: validating on {} val problems",
            valid.num_items()
        );
        let model = learner.model().valid();
        let (mut correct, mut n) = (0usize, 0usize);
        let mut chunks = valid.iter();
        let global = Progress::new(state.global_step as usize, state.global_step as usize);
        while let Some(chunk) = chunks.next() {
            let out = InferenceStep::step(&model, chunk);
            correct += out.correct;
            n += out.problems;
            events.process_valid(LearnerEvent::ProcessedItem(TrainingItem::new(
                out,
                chunks.progress(),
                global.clone(),
                None,
                None,
            )));
        }
        if let Some(e) = self.valid.take_error() {
            return Err(TrainError::Data(e));
        }
        events.process_valid(LearnerEvent::EndEpoch(state.epoch.max(1)));
        let accuracy = correct as f64 / n.max(1) as f64;
        self.accuracies.record(state.epoch.max(1), accuracy);
        Ok(ValResult {
            accuracy,
            chance: self.valid.chance(),
            n,
        })
    }
}
