//! LaVIN's optimizer and lr schedule behind burn-train's `Optimizer` and `LrScheduler`, so the
//! learner drives them.
//!
//! The optimizer state (torch-exact AdamW with timm's groups, keyed by original parameter
//! names, see [`crate::optim`]) lives behind a shared handle: burn-train's `Learner` has no
//! getter for its optimizer, and LaVIN's checkpoints (adapters and moments only, the original's
//! names) are written from it.

use std::sync::{Arc, Mutex, MutexGuard};

use burn::module::{ModuleVisitor, Param};
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use lavin_model::Lavin;

use crate::checkpoint::{CheckpointMeta, MomentsRecord};
use crate::engine::model::Trainee;
use crate::lr_sched::LrSchedule;
use crate::optim::{step_module, AdamW, MomentState, ParamNaming};
use crate::params::lavin_trainable_name;

/// What the optimizer step reads besides the gradients.
pub struct OptimState<B: Backend> {
    /// Moments and hyper-parameters.
    pub adam: AdamW<B>,
    /// Factor on this step's gradients (global-norm clipping, set by the strategy).
    pub grad_scale: f64,
}

/// AdamW on the adapters, as burn-train's optimizer.
pub struct LavinOptimizer<B: AutodiffBackend> {
    state: Arc<Mutex<OptimState<B::InnerBackend>>>,
}

impl<B: AutodiffBackend> Clone for LavinOptimizer<B> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }
}

impl<B: AutodiffBackend> LavinOptimizer<B> {
    /// Wrap `adam` (fresh or with resumed moments).
    pub fn new(adam: AdamW<B::InnerBackend>) -> Self {
        Self {
            state: Arc::new(Mutex::new(OptimState {
                adam,
                grad_scale: 1.0,
            })),
        }
    }

    /// The shared state (moments for checkpoints, the clipping factor).
    pub fn state(&self) -> MutexGuard<'_, OptimState<B::InnerBackend>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B: AutodiffBackend> Optimizer<Trainee<B>, B> for LavinOptimizer<B> {
    /// The moments by original parameter name (what burn-train's checkpointer writes as
    /// `optim-N.mpk`).
    type Record = MomentsRecord<B>;

    fn step(
        &mut self,
        lr: LearningRate,
        module: Trainee<B>,
        mut grads: GradientsParams,
    ) -> Trainee<B> {
        let mut st = self.state();
        let scale = st.grad_scale;
        // The moments were checked against the model's parameters when they were loaded, so a
        // failure here is a bug, not bad input.
        let (lavin, _) = step_module(
            &mut st.adam,
            module.lavin,
            &mut grads,
            lr,
            scale,
            &lavin_trainable_name,
        )
        .unwrap_or_else(|e| panic!("optimizer step: {e}"));
        Trainee { lavin }
    }

    fn step_multi(
        &mut self,
        lr: LearningRate,
        module: Trainee<B>,
        mut grads: MultiGradientsParams,
    ) -> Trainee<B> {
        let single = merge(&module.lavin, &mut grads);
        self.step(lr, module, single)
    }

    fn to_record(&self) -> MomentsRecord<B> {
        MomentsRecord::<B::InnerBackend>::of::<B>(&self.state().adam)
    }

    /// burn-train's own restore path (lavin-train resumes through
    /// [`crate::trainer::resume_from`]): the moments stay on the device the record was read to.
    fn load_record(self, record: MomentsRecord<B>) -> Self {
        {
            let adam = &mut self.state().adam;
            adam.reset();
            for r in record.moments {
                adam.set_state(
                    r.name,
                    MomentState {
                        step: r.step,
                        shape: r.exp_avg.shape,
                        exp_avg: r.exp_avg.values.inner(),
                        exp_avg_sq: r.exp_avg_sq.values.inner(),
                    },
                );
            }
        }
        self
    }
}

/// The gradients of the trainable parameters of `module` from several devices, summed on one.
fn merge<B: AutodiffBackend>(
    module: &Lavin<B>,
    multi: &mut MultiGradientsParams,
) -> GradientsParams {
    struct Merge<'a> {
        stack: Vec<String>,
        multi: &'a mut MultiGradientsParams,
        out: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Merge<'_> {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.stack.push(name.into());
        }
        fn exit_module(&mut self, _n: &str, _c: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if lavin_trainable_name
                .original_name(&self.stack.join("."))
                .is_none()
            {
                return;
            }
            if let Some((g, _)) = self.multi.remove::<B::InnerBackend, D>(p.id) {
                self.out.register::<B::InnerBackend, D>(p.id, g);
            }
        }
    }
    let mut m = Merge {
        stack: vec![],
        multi,
        out: GradientsParams::new(),
    };
    burn::module::Module::visit(module, &mut m);
    m.out
}

/// LaVIN's schedule as burn-train's scheduler: `step()` gives the lr of the next optimizer step
/// (the original's `adjust_learning_rate` at the first micro-batch of its accumulation window).
///
/// Its record is where the run stands ([`CheckpointMeta`] as JSON: the schedule's position is
/// the optimizer steps done, and the rest of the position belongs beside it); the strategy
/// sets it before each checkpoint ([`StepSchedule::set_position`]).
#[derive(Debug, Clone)]
pub struct StepSchedule {
    schedule: LrSchedule,
    /// Micro-batches per epoch and rank.
    steps_per_epoch: usize,
    /// Micro-batches per optimizer step.
    accum: usize,
    /// Optimizer steps taken.
    done: usize,
    /// The run's position at the last checkpoint (shared with the strategy).
    position: Arc<Mutex<Option<CheckpointMeta>>>,
}

impl StepSchedule {
    /// The schedule of a run with `steps_per_epoch` micro-batches per epoch (and rank) and
    /// `accum` per optimizer step, `done` optimizer steps in.
    pub fn new(schedule: LrSchedule, steps_per_epoch: usize, accum: usize, done: usize) -> Self {
        Self {
            schedule,
            steps_per_epoch,
            accum: accum.max(1),
            done,
            position: Arc::new(Mutex::new(None)),
        }
    }

    /// The lr of optimizer step `k` (0-based).
    pub fn lr_of(&self, k: usize) -> f64 {
        let per_epoch = (self.steps_per_epoch / self.accum).max(1);
        let (epoch, window) = (k / per_epoch, k % per_epoch);
        self.schedule.lr_at(LrSchedule::fractional_epoch(
            epoch,
            window * self.accum,
            self.steps_per_epoch,
        ))
    }

    /// Record `meta` as the run's position for the next checkpoint (every clone of this
    /// schedule, the learner's included, sees it).
    pub fn set_position(&self, meta: CheckpointMeta) {
        *self.position.lock().unwrap_or_else(|e| e.into_inner()) = Some(meta);
    }
}

impl LrScheduler for StepSchedule {
    type Record<B: Backend> = String;

    fn step(&mut self) -> LearningRate {
        let lr = self.lr_of(self.done);
        self.done += 1;
        lr
    }

    fn to_record<B: Backend>(&self) -> String {
        let position = self.position.lock().unwrap_or_else(|e| e.into_inner());
        // The position is set before every checkpoint; the error can only be a bug.
        serde_json::to_string(&*position).expect("a checkpoint position serializes")
    }

    fn load_record<B: Backend>(mut self, json: String) -> Self {
        if let Ok(Some(meta)) = serde_json::from_str::<Option<CheckpointMeta>>(&json) {
            self.done = meta.global_step as usize;
            self.set_position(meta);
        }
        self
    }
}
