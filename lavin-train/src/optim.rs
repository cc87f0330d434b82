//! AdamW exactly as `torch.optim.AdamW` (single-tensor path), with timm's two parameter groups,
//! global-norm gradient clipping (`torch.nn.utils.clip_grad_norm_`), and a [`ModuleMapper`] that
//! applies it to the trainable (adapter) parameters of a Burn module.
//!
//! State is keyed by the parameter's **original** (PyTorch) name, e.g.
//! `layers.0.adapter_attn.conv_A.weight`, never by Burn's `ParamId` (which is not stable across
//! processes), so checkpoints are readable and resumable.
//!
//! Update rule for step `t` (f32 tensors, scalars in f64 as Python computes them):
//! ```text
//! p  <- p * (1 - lr * wd)                       (decay group only)
//! m  <- m + (g - m) * (1 - beta1)               (torch's lerp_)
//! v  <- v * beta2 + (1 - beta2) * g * g
//! p  <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```

use std::collections::BTreeMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

/// Errors of the optimizer.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// Gradient and parameter shapes differ.
    #[error("parameter `{name}`: gradient shape {grad:?} differs from parameter shape {param:?}")]
    GradShape {
        /// Original parameter name.
        name: String,
        /// Parameter shape.
        param: Vec<usize>,
        /// Gradient shape.
        grad: Vec<usize>,
    },
    /// Stored moments do not fit the parameter (e.g. a checkpoint from another config).
    #[error(
        "parameter `{name}`: optimizer state has shape {state:?}, parameter has shape {param:?}"
    )]
    StateShape {
        /// Original parameter name.
        name: String,
        /// Shape recorded with the state.
        state: Vec<usize>,
        /// Parameter shape.
        param: Vec<usize>,
    },
    /// Two trainable Burn parameters map to the same original name.
    #[error("two trainable parameters map to the original name `{0}`")]
    DuplicateName(String),
}

/// AdamW hyper-parameters (the learning rate is passed per step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay (LaVIN: 0.9).
    pub beta1: f64,
    /// Second-moment decay (LaVIN: 0.95).
    pub beta2: f64,
    /// Denominator epsilon (PyTorch default 1e-8; Burn's default is 1e-5!).
    pub eps: f64,
    /// Decoupled weight decay of the decay group (LaVIN: 0.02).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.02,
        }
    }
}

/// timm's `param_groups_weight_decay` rule: no decay for `ndim <= 1` or names ending in `.bias`.
pub fn decays(name: &str, ndim: usize) -> bool {
    !(ndim <= 1 || name.ends_with(".bias"))
}

/// Adam moments of one parameter, stored flat (1-D) with the parameter's shape alongside.
#[derive(Debug, Clone)]
pub struct MomentState<B: Backend> {
    /// Number of updates applied (torch's per-parameter `step`).
    pub step: u64,
    /// First moment, flattened.
    pub exp_avg: Tensor<B, 1>,
    /// Second moment, flattened.
    pub exp_avg_sq: Tensor<B, 1>,
    /// Shape of the parameter the moments belong to.
    pub shape: Vec<usize>,
}

/// AdamW with per-name state.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    states: BTreeMap<String, MomentState<B>>,
}

impl<B: Backend> AdamW<B> {
    /// A fresh optimizer (no moments yet).
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            states: BTreeMap::new(),
        }
    }

    /// Moments of one parameter.
    pub fn state(&self, name: &str) -> Option<&MomentState<B>> {
        self.states.get(name)
    }

    /// All moments, by original name (sorted).
    pub fn states(&self) -> &BTreeMap<String, MomentState<B>> {
        &self.states
    }

    /// Install moments (e.g. from a checkpoint), replacing any existing ones for `name`.
    pub fn set_state(&mut self, name: impl Into<String>, state: MomentState<B>) {
        self.states.insert(name.into(), state);
    }

    /// Drop all moments (fresh optimizer, same hyper-parameters).
    pub fn reset(&mut self) {
        self.states.clear();
    }

    /// One AdamW update of parameter `name` (any rank). `ndim`-based grouping uses `D`.
    pub fn step_tensor<const D: usize>(
        &mut self,
        name: &str,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        lr: f64,
    ) -> Result<Tensor<B, D>, OptimError> {
        let shape = param.dims();
        let gshape = grad.dims();
        if shape != gshape {
            return Err(OptimError::GradShape {
                name: name.to_string(),
                param: shape.to_vec(),
                grad: gshape.to_vec(),
            });
        }
        let n: usize = shape.iter().product();
        let out = self.step_flat(name, &shape, param.reshape([n]), grad.reshape([n]), lr)?;
        Ok(out.reshape(shape))
    }

    /// Core update on flattened tensors; `shape` is the parameter's real shape (it decides the
    /// weight-decay group and is checked against stored moments).
    pub fn step_flat(
        &mut self,
        name: &str,
        shape: &[usize],
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        lr: f64,
    ) -> Result<Tensor<B, 1>, OptimError> {
        let c = self.config;
        let n = param.dims()[0];
        if grad.dims()[0] != n {
            return Err(OptimError::GradShape {
                name: name.to_string(),
                param: shape.to_vec(),
                grad: grad.dims().to_vec(),
            });
        }
        let device = param.device();
        let state = match self.states.remove(name) {
            Some(s) => {
                if s.shape != shape {
                    let err = OptimError::StateShape {
                        name: name.to_string(),
                        state: s.shape.clone(),
                        param: shape.to_vec(),
                    };
                    self.states.insert(name.to_string(), s);
                    return Err(err);
                }
                s
            }
            None => MomentState {
                step: 0,
                exp_avg: Tensor::zeros([n], &device),
                exp_avg_sq: Tensor::zeros([n], &device),
                shape: shape.to_vec(),
            },
        };
        let step = state.step + 1;
        let wd = if decays(name, shape.len()) {
            c.weight_decay
        } else {
            0.0
        };
        let mut p = param;
        if wd != 0.0 {
            p = p.mul_scalar(1.0 - lr * wd);
        }
        let m = state.exp_avg.clone() + (grad.clone() - state.exp_avg).mul_scalar(1.0 - c.beta1);
        let v =
            state.exp_avg_sq.mul_scalar(c.beta2) + grad.clone().mul_scalar(1.0 - c.beta2) * grad;
        let bc1 = 1.0 - c.beta1.powi(step as i32);
        let bc2 = 1.0 - c.beta2.powi(step as i32);
        let step_size = lr / bc1;
        let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(c.eps);
        let p = p - (m.clone() / denom).mul_scalar(step_size);
        self.states.insert(
            name.to_string(),
            MomentState {
                step,
                exp_avg: m,
                exp_avg_sq: v,
                shape: shape.to_vec(),
            },
        );
        Ok(p)
    }
}

/// torch `clip_grad_norm_` coefficient: `min(max_norm / (total_norm + 1e-6), 1)`.
pub fn clip_coefficient(total_norm: f64, max_norm: f64) -> f64 {
    (max_norm / (total_norm + 1e-6)).min(1.0)
}

/// Global L2 norm of a set of gradients (`sqrt(sum ||g_i||^2)`), as `clip_grad_norm_` computes it.
pub fn global_norm<B: Backend, const D: usize>(grads: &[Tensor<B, D>]) -> f64 {
    let mut sum = SumOfSquares::default();
    grads.iter().for_each(|g| sum.add(g.clone()));
    sum.norm()
}

/// Sum of squares over many tensors, kept on the device: an asynchronous backend synchronises
/// once when the norm is read, not once per parameter (hundreds of stalls per step at 7B).
/// Accumulated in f32 like torch's `clip_grad_norm_`.
struct SumOfSquares<B: Backend> {
    sum: Option<Tensor<B, 1>>,
}

impl<B: Backend> Default for SumOfSquares<B> {
    fn default() -> Self {
        Self { sum: None }
    }
}

impl<B: Backend> SumOfSquares<B> {
    fn add<const D: usize>(&mut self, g: Tensor<B, D>) {
        let sq = g.square().sum();
        self.sum = Some(match self.sum.take() {
            Some(acc) => acc + sq,
            None => sq,
        });
    }

    fn norm(self) -> f64 {
        self.sum
            .map_or(0.0, |s| s.into_scalar().elem::<f64>())
            .sqrt()
    }
}

/// Maps a Burn module path (`a.b.0.weight`) to the parameter's original name; `None` = frozen.
pub trait ParamNaming {
    /// Original name of the parameter at `burn_path`, or `None` if it must not be trained.
    fn original_name(&self, burn_path: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> ParamNaming for F {
    fn original_name(&self, burn_path: &str) -> Option<String> {
        self(burn_path)
    }
}

/// Visits a module and reports every trainable float parameter with its original name.
struct PathTracker {
    stack: Vec<String>,
}

impl PathTracker {
    fn path(&self) -> String {
        self.stack.join(".")
    }
}

struct NormVisitor<'a, B: AutodiffBackend, N> {
    path: PathTracker,
    naming: &'a N,
    grads: &'a GradientsParams,
    sum: SumOfSquares<B::InnerBackend>,
}

impl<B: AutodiffBackend, N: ParamNaming> ModuleVisitor<B> for NormVisitor<'_, B, N> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.naming.original_name(&self.path.path()).is_none() {
            return;
        }
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.sum.add(g);
        }
    }
}

/// Global L2 norm of the gradients of the trainable parameters of `module`.
pub fn module_grad_norm<B, M, N>(module: &M, grads: &GradientsParams, naming: &N) -> f64
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    N: ParamNaming,
{
    let mut v = NormVisitor::<B, N> {
        path: PathTracker { stack: Vec::new() },
        naming,
        grads,
        sum: SumOfSquares::default(),
    };
    module.visit(&mut v);
    v.sum.norm()
}

/// Names and shapes of the trainable parameters of a module (in visiting order).
pub fn trainable_params<B, M, N>(module: &M, naming: &N) -> Vec<(String, Vec<usize>)>
where
    B: Backend,
    M: burn::module::Module<B>,
    N: ParamNaming,
{
    struct Lister<'a, N> {
        path: PathTracker,
        naming: &'a N,
        out: Vec<(String, Vec<usize>)>,
    }
    impl<B: Backend, N: ParamNaming> ModuleVisitor<B> for Lister<'_, N> {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.path.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _c: &str) {
            self.path.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(n) = self.naming.original_name(&self.path.path()) {
                self.out.push((n, param.val().dims().to_vec()));
            }
        }
    }
    let mut l = Lister {
        path: PathTracker { stack: Vec::new() },
        naming,
        out: Vec::new(),
    };
    module.visit(&mut l);
    l.out
}

/// What one [`step_module`] call did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// Original names of the parameters updated.
    pub updated: Vec<String>,
    /// Trainable parameters that had no gradient (left unchanged, moments untouched).
    pub without_grad: Vec<String>,
}

struct StepMapper<'a, B: AutodiffBackend, N> {
    path: PathTracker,
    naming: &'a N,
    optim: &'a mut AdamW<B::InnerBackend>,
    grads: &'a mut GradientsParams,
    lr: f64,
    grad_scale: f64,
    report: StepReport,
    error: Option<OptimError>,
}

impl<B: AutodiffBackend, N: ParamNaming> ModuleMapper<B> for StepMapper<'_, B, N> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(name) = self.naming.original_name(&self.path.path()) else {
            return param;
        };
        if self.error.is_some() {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            self.report.without_grad.push(name);
            return Param::from_mapped_value(id, tensor, mapper);
        };
        if self.report.updated.contains(&name) {
            self.error = Some(OptimError::DuplicateName(name));
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let grad = if self.grad_scale != 1.0 {
            grad.mul_scalar(self.grad_scale)
        } else {
            grad
        };
        let device = tensor.device();
        let inner = tensor.clone().inner();
        let grad = grad.to_device(&device);
        match self.optim.step_tensor(&name, inner, grad, self.lr) {
            Ok(new) => {
                self.report.updated.push(name);
                let t = Tensor::from_inner(new).require_grad();
                Param::from_mapped_value(id, t, mapper)
            }
            Err(e) => {
                self.error = Some(e);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

/// Apply one AdamW step to every trainable parameter of `module` that has a gradient in `grads`.
///
/// Parameters for which `naming` returns `None` (frozen) are untouched. `grad_scale` multiplies
/// every gradient first (use [`clip_coefficient`] for global-norm clipping, 1.0 otherwise).
/// Consumed gradients are removed from `grads`.
pub fn step_module<B, M, N>(
    optim: &mut AdamW<B::InnerBackend>,
    module: M,
    grads: &mut GradientsParams,
    lr: f64,
    grad_scale: f64,
    naming: &N,
) -> Result<(M, StepReport), OptimError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    N: ParamNaming,
{
    let mut mapper = StepMapper::<B, N> {
        path: PathTracker { stack: Vec::new() },
        naming,
        optim,
        grads,
        lr,
        grad_scale,
        report: StepReport::default(),
        error: None,
    };
    let module = module.map(&mut mapper);
    match mapper.error {
        Some(e) => Err(e),
        None => Ok((module, mapper.report)),
    }
}

/// One optimizer update as training makes it: the global gradient norm of the trainable
/// parameters (logged; with `clip = Some(max_norm)` also used to scale the gradients as
/// `clip_grad_norm_` does), then [`step_module`]. Returns the updated module and the norm.
pub fn clip_and_step<B, M, N>(
    optim: &mut AdamW<B::InnerBackend>,
    module: M,
    grads: &mut GradientsParams,
    lr: f64,
    clip: Option<f64>,
    naming: &N,
) -> Result<(M, f64), OptimError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    N: ParamNaming,
{
    let norm = module_grad_norm(&module, grads, naming);
    let scale = clip.map_or(1.0, |c| clip_coefficient(norm, c));
    let (module, _) = step_module(optim, module, grads, lr, scale, naming)?;
    Ok((module, norm))
}

#[cfg(test)]
mod tests;
