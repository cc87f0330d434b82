//! The model as burn-train drives it: [`Trainee`] wraps [`Lavin`] (burn-train's step traits
//! cannot be implemented on another crate's type) and says what one training micro-batch and
//! one validation chunk compute.

use std::sync::Mutex;

use burn::module::{
    AutodiffModule, Content, Devices, HasAutodiffModule, Module, ModuleDisplay,
    ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ElementConversion;
use burn::train::{InferenceStep, ItemLazy, TrainOutput, TrainStep};

use lavin_model::{Lavin, LavinBatch};

use crate::checkpoint::AdapterRecord;
use crate::data::BatchStats;
use crate::params::{assign_params, lavin_trainable_name};

/// [`Lavin`] as burn-train's training model (and, on the inner backend, its inference model).
///
/// Its `Module` impl is written out rather than derived for one reason: its record is
/// [`AdapterRecord`], the adapters only, so burn-train's checkpointer never writes the frozen
/// base (13 GB at 7B). Visiting, mapping and moving between devices go to the whole model as
/// the derive would (the field is named `lavin` in module paths).
#[derive(Debug, Clone)]
pub struct Trainee<B: Backend> {
    /// The model; the optimizer and the checkpoints name its parameters from here.
    pub lavin: Lavin<B>,
}

const FIELD: &str = "lavin";
const CONTAINER: &str = "Struct:Trainee";

impl<B: Backend> Module<B> for Trainee<B> {
    type Record = AdapterRecord<B>;

    /// burn-train's own restore path; lavin-train resumes through
    /// [`crate::trainer::resume_from`], which checks names and shapes first and says what is
    /// wrong instead of panicking.
    fn load_record(self, record: AdapterRecord<B>) -> Self {
        let host = record.into_host();
        let lavin = assign_params(
            self.lavin,
            &host,
            &lavin_trainable_name,
            std::path::Path::new("<adapter record>"),
        )
        .unwrap_or_else(|e| panic!("loading an adapter record: {e}"));
        Self { lavin }
    }

    fn into_record(self) -> AdapterRecord<B> {
        AdapterRecord::of(&self.lavin, &lavin_trainable_name)
    }

    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        visitor.enter_module(FIELD, CONTAINER);
        self.lavin.visit(visitor);
        visitor.exit_module(FIELD, CONTAINER);
    }

    fn map<M: ModuleMapper<B>>(self, mapper: &mut M) -> Self {
        mapper.enter_module(FIELD, CONTAINER);
        let lavin = self.lavin.map(mapper);
        mapper.exit_module(FIELD, CONTAINER);
        Self { lavin }
    }

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        self.lavin.collect_devices(devices)
    }

    fn to_device(self, device: &B::Device) -> Self {
        Self {
            lavin: self.lavin.to_device(device),
        }
    }

    fn fork(self, device: &B::Device) -> Self {
        Self {
            lavin: self.lavin.fork(device),
        }
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for Trainee<B> {
    type InnerModule = Trainee<B::InnerBackend>;

    fn valid(&self) -> Trainee<B::InnerBackend> {
        Trainee {
            lavin: self.lavin.valid(),
        }
    }

    fn from_inner(module: Trainee<B::InnerBackend>) -> Self {
        Self {
            lavin: Lavin::from_inner(module.lavin),
        }
    }
}

impl<B: AutodiffBackend> HasAutodiffModule<B> for Trainee<B::InnerBackend> {
    type TrainModule = Trainee<B>;
}

impl<B: Backend> std::fmt::Display for Trainee<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trainee {{ {FIELD}: {} }}", self.lavin)
    }
}

impl<B: Backend> ModuleDisplayDefault for Trainee<B> {
    fn content(&self, content: Content) -> Option<Content> {
        self.lavin.content(content)
    }

    fn num_params(&self) -> usize {
        Module::num_params(self)
    }
}

impl<B: Backend> ModuleDisplay for Trainee<B> {}

/// One micro-batch and how to run it.
pub struct MicroBatch<B: Backend> {
    /// The examples.
    pub batch: LavinBatch<B>,
    /// Their count and target tokens.
    pub stats: BatchStats,
    /// Backend RNG seed for this micro-batch's dropout masks.
    pub seed: u64,
    /// The loss is divided by this before backward (the accumulation window).
    pub divisor: f64,
    /// Recompute each block in backward (gradient checkpointing).
    pub recompute: bool,
}

/// What a micro-batch reports (already on the host: burn-train's item is read on its event
/// thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct StepOutput {
    /// Loss (mean over target tokens), NaN when skipped.
    pub loss: f64,
    /// Examples and target tokens.
    pub stats: BatchStats,
    /// The loss was not finite: no gradients, the batch counts as skipped.
    pub skipped: bool,
    /// Global gradient norm of the optimizer step this micro-batch closed (set by the
    /// strategy on the window's last micro-batch; `None` otherwise).
    pub grad_norm: Option<f64>,
    /// Wall seconds of the optimizer step (set with `grad_norm`).
    pub seconds: f64,
}

impl ItemLazy for StepOutput {
    type ItemSync = StepOutput;
    fn sync(self) -> StepOutput {
        self
    }
}

impl<B: AutodiffBackend> TrainStep for Trainee<B> {
    type Input = MicroBatch<B>;
    type Output = StepOutput;

    fn step(&self, item: MicroBatch<B>) -> TrainOutput<StepOutput> {
        let (loss, grads) = loss_and_grads(
            &self.lavin,
            item.batch,
            item.divisor,
            item.seed,
            item.recompute,
        );
        let skipped = grads.is_none();
        TrainOutput {
            grads: grads.unwrap_or_else(GradientsParams::new),
            item: StepOutput {
                loss,
                stats: item.stats,
                skipped,
                grad_norm: None,
                seconds: f64::NAN,
            },
        }
    }
}

/// Forward and backward of one micro-batch with the backend RNG seeded from `seed`: its loss and
/// the gradients of `loss / divisor` (`None` when the loss is not finite: the batch is skipped).
fn loss_and_grads<B: AutodiffBackend>(
    model: &Lavin<B>,
    batch: LavinBatch<B>,
    divisor: f64,
    seed: u64,
    recompute: bool,
) -> (f64, Option<GradientsParams>) {
    if recompute {
        // Seeds and serialises its own RNG use (`lavin_model::recompute`).
        let out = model.loss_and_grads_recomputed(batch, divisor, seed);
        return (out.loss, out.grads);
    }
    // The CPU backends' RNG is process-global: with ranks on threads of one process, seeding and
    // the forward pass (where dropout draws) hold this lock so each rank's masks come from its
    // own seed. Backward, the bulk of the work, runs in parallel.
    static RNG: Mutex<()> = Mutex::new(());
    let device = batch.tokens.device();
    let loss = {
        let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(&device, seed);
        model.loss(batch)
    };
    let value: f64 = loss.clone().into_scalar().elem();
    let grads = value
        .is_finite()
        .then(|| GradientsParams::from_grads(loss.div_scalar(divisor).backward(), model));
    (value, grads)
}

/// Whole validation problems: their option rows as one batch, and where each problem's rows
/// are.
pub struct ValChunk<B: Backend> {
    /// Every option row of the chunk's problems.
    pub batch: LavinBatch<B>,
    /// Per problem: `(first row in the chunk, options, correct option)`.
    pub problems: Vec<(usize, usize, usize)>,
}

/// Problems answered right in a validation chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValOutput {
    /// Right answers.
    pub correct: usize,
    /// Problems.
    pub problems: usize,
}

impl ItemLazy for ValOutput {
    type ItemSync = ValOutput;
    fn sync(self) -> ValOutput {
        self
    }
}

impl<B: Backend> InferenceStep for Trainee<B> {
    type Input = ValChunk<B>;
    type Output = ValOutput;

    fn step(&self, item: ValChunk<B>) -> ValOutput {
        let scores = crate::validate::answer_scores(&self.lavin, item.batch);
        let mut correct = 0;
        for &(first, n, answer) in &item.problems {
            let s = &scores[first..first + n];
            let best = (0..n).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap_or(0);
            correct += usize::from(best == answer);
        }
        ValOutput {
            correct,
            problems: item.problems.len(),
        }
    }
}
