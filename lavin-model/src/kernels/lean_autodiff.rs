//! The fused ops on every other autodiff backend (CUDA, wgpu, ndarray): the forward is the
//! composed maths run untracked on the inner backend, the backward is written by hand, and the
//! graph keeps only what that backward reads.
//!
//! Burn's autodiff records each elementary op with the tensors its own backward needs. Per
//! LLaMA block at the paper's batch (4 x 512, 7B, f32 activations) the composed versions keep:
//! softmax its `exp` besides its output (one more `[4, 32, 512, 512]` tensor, 134 MB); the SiLU
//! gate `a`, `sigmoid(a)`, `silu(a)` and `b` where `a` and `b` suffice (two more FFN-sized
//! tensors, 180 MB); rotary, for q and k, the input and its pair-swapped copy where the
//! constant tables suffice (134 MB); RMSNorm the normalised input besides the input. Over 32
//! blocks that is about 15 GB of a 7B training step's activations, and fewer kernels in the
//! backward pass. Cross-entropy keeps the logits only, not its vocabulary-wide intermediates.
//!
//! With a half-precision base, [`run_widening`] computes an op in f32 on half inputs and keeps
//! them half: the FFN gate's `w1 x` and `w3 x`, rotary on half q and k, the attention scores
//! from half q and k (never rounded to half themselves) and probabilities rounded to half.
//! That halves what attention keeps per block (q, k, v and the probabilities: 234 -> 117 MB at
//! 7B), as the original's fp16 activations do.
//!
//! Like `quant.rs`, the ops are found by `TypeId` in a table filled for the autodiff backends
//! compiled into this crate, so the model keeps its plain `B: Backend` bound.

use core::any::{Any, TypeId};
use core::fmt::Debug;
use std::collections::HashMap;
use std::sync::OnceLock;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::{DType, FloatDType, Shape, Tensor, TensorMetadata, TensorPrimitive};

use super::ops::{CrossEntropy, Matmul, RmsNorm, Rope, SiluGate, Softmax, Swish};
use super::reference;

/// One op on `N` f32 inputs, generic over the inner backend.
pub(crate) trait LeanOp<const N: usize>: Clone + Send + Sync + Debug + 'static {
    /// Which inputs, and whether the output, the backward pass reads.
    const SAVES: ([bool; N], bool);
    fn forward<I: Backend>(&self, inputs: [FloatTensor<I>; N]) -> FloatTensor<I>;
    /// Gradients of the inputs whose `need` is set (the others may be `None`); unsaved inputs
    /// and an unsaved output arrive as `None`.
    fn backward<I: Backend>(
        &self,
        inputs: [Option<FloatTensor<I>>; N],
        output: Option<FloatTensor<I>>,
        grad: FloatTensor<I>,
        need: [bool; N],
    ) -> [Option<FloatTensor<I>>; N];
}

/// `Ok(output)` when `B` is one of the registered autodiff backends and every input is f32;
/// otherwise the inputs come back for the caller's composed version.
pub(crate) fn run<B: Backend, O: 'static, const N: usize>(
    op: &O,
    inputs: [FloatTensor<B>; N],
) -> Result<FloatTensor<B>, [FloatTensor<B>; N]> {
    if inputs.iter().any(|t| t.dtype() != DType::F32) {
        return Err(inputs);
    }
    let key = (TypeId::of::<B>(), TypeId::of::<O>(), N);
    match table()
        .get(&key)
        .and_then(|f| f.downcast_ref::<Entry<O, B, N>>())
    {
        Some(f) => Ok(f(op, inputs)),
        None => Err(inputs),
    }
}

/// Whether `B` runs the lean versions (a registered autodiff backend).
pub(crate) fn registered<B: Backend>() -> bool {
    table().keys().any(|(b, _, _)| *b == TypeId::of::<B>())
}

/// `op` computed in f32 on inputs of which some are half (f16 or bf16), with its output in
/// `out`: the inputs are widened inside the op and kept as they came in the graph, their
/// gradients come back in their own dtypes, and a half output is what the backward keeps. Ops
/// registered through [`Widening`] only; `Err` also when nothing is half.
pub(crate) fn run_widening<B: Backend, O: Clone + Debug + Send + Sync + 'static, const N: usize>(
    op: &O,
    inputs: [FloatTensor<B>; N],
    out: DType,
) -> Result<FloatTensor<B>, [FloatTensor<B>; N]> {
    let dtypes: Vec<DType> = inputs.iter().map(|t| t.dtype()).collect();
    let float = |d: &DType| matches!(d, DType::F32 | DType::F16 | DType::BF16);
    if !dtypes.iter().chain([&out]).all(float)
        || dtypes.iter().chain([&out]).all(|d| *d == DType::F32)
    {
        return Err(inputs);
    }
    let key = (TypeId::of::<B>(), TypeId::of::<Widening<O>>(), N);
    match table()
        .get(&key)
        .and_then(|f| f.downcast_ref::<Entry<Widening<O>, B, N>>())
    {
        Some(f) => Ok(f(
            &Widening {
                op: op.clone(),
                inputs: dtypes,
                out,
            },
            inputs,
        )),
        None => Err(inputs),
    }
}

/// See [`run_widening`].
#[derive(Clone, Debug)]
pub(crate) struct Widening<O> {
    op: O,
    /// The inputs' dtypes, which their gradients take.
    inputs: Vec<DType>,
    out: DType,
}

impl<O: LeanOp<N>, const N: usize> LeanOp<N> for Widening<O> {
    const SAVES: ([bool; N], bool) = O::SAVES;

    fn forward<I: Backend>(&self, inputs: [FloatTensor<I>; N]) -> FloatTensor<I> {
        cast::<I>(self.op.forward::<I>(inputs.map(widen::<I>)), self.out)
    }

    fn backward<I: Backend>(
        &self,
        inputs: [Option<FloatTensor<I>>; N],
        output: Option<FloatTensor<I>>,
        grad: FloatTensor<I>,
        need: [bool; N],
    ) -> [Option<FloatTensor<I>>; N] {
        let wide = inputs.map(|t| t.map(widen::<I>));
        let grads = self
            .op
            .backward::<I>(wide, output.map(widen::<I>), widen::<I>(grad), need);
        let mut dtypes = self.inputs.iter();
        grads.map(|g| {
            let dtype = *dtypes.next().expect("one dtype per input");
            g.map(|g| cast::<I>(g, dtype))
        })
    }
}

fn widen<I: Backend>(t: FloatTensor<I>) -> FloatTensor<I> {
    cast::<I>(t, DType::F32)
}

/// `t` in `dtype` (a float dtype); no op when it already is.
fn cast<I: Backend>(t: FloatTensor<I>, dtype: DType) -> FloatTensor<I> {
    if t.dtype() == dtype {
        return t;
    }
    let to = match dtype {
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    };
    I::float_cast(t, to)
}

type Entry<O, B, const N: usize> = fn(&O, [FloatTensor<B>; N]) -> FloatTensor<B>;
type Table = HashMap<(TypeId, TypeId, usize), Box<dyn Any + Send + Sync>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        #[allow(unused_mut)]
        let mut table = Table::new();
        #[allow(unused_macros)]
        macro_rules! inner {
            ($($i:ty),*) => {$(
                add::<$i, NoCheckpointing>(&mut table);
                add::<$i, BalancedCheckpointing>(&mut table);
            )*};
        }
        // flex has its own kernels (`flex.rs`).
        #[cfg(feature = "ndarray")]
        inner!(burn::backend::NdArray<f32>);
        #[cfg(feature = "wgpu")]
        inner!(burn::backend::Wgpu);
        #[cfg(feature = "cuda")]
        inner!(burn::backend::Cuda);
        table
    })
}

#[allow(dead_code)]
fn add<I: Backend, C: CheckpointStrategy>(table: &mut Table) {
    fn entry<I: Backend, C: CheckpointStrategy, O: LeanOp<N>, const N: usize>(table: &mut Table) {
        let f: Entry<O, Autodiff<I, C>, N> = tracked::<I, C, O, N>;
        let key = (TypeId::of::<Autodiff<I, C>>(), TypeId::of::<O>(), N);
        table.insert(key, Box::new(f));
    }
    entry::<I, C, Rope, 3>(table);
    entry::<I, C, Softmax, 1>(table);
    entry::<I, C, Softmax, 2>(table);
    entry::<I, C, RmsNorm, 2>(table);
    entry::<I, C, SiluGate, 2>(table);
    entry::<I, C, Widening<SiluGate>, 2>(table);
    entry::<I, C, Widening<Rope>, 3>(table);
    entry::<I, C, Widening<Softmax>, 1>(table);
    entry::<I, C, Widening<Softmax>, 2>(table);
    entry::<I, C, Widening<Matmul>, 2>(table);
    entry::<I, C, Swish, 1>(table);
    entry::<I, C, CrossEntropy, 2>(table);
}

#[derive(Debug)]
struct Node<O>(O);

impl<I: Backend, O: LeanOp<N>, const N: usize> Backward<I, N> for Node<O> {
    type State = ([Option<FloatTensor<I>>; N], Option<FloatTensor<I>>);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<I>(&ops.node);
        let (inputs, output) = ops.state;
        let need = ops.parents.each_ref().map(Option::is_some);
        let out = self.0.backward::<I>(inputs, output, grad, need);
        for (parent, g) in ops.parents.into_iter().zip(out) {
            if let (Some(parent), Some(g)) = (parent, g) {
                grads.register::<I>(parent.id, g);
            }
        }
    }
}

fn tracked<I: Backend, C: CheckpointStrategy, O: LeanOp<N>, const N: usize>(
    op: &O,
    inputs: [FloatTensor<Autodiff<I, C>>; N],
) -> FloatTensor<Autodiff<I, C>> {
    let nodes = inputs.each_ref().map(|t| t.node.clone());
    let prims = inputs.map(|t| t.primitive);
    let (keep_inputs, keep_output) = O::SAVES;
    let mut keep = keep_inputs.into_iter();
    let saved = prims
        .each_ref()
        .map(|p| keep.next().unwrap_or(false).then(|| p.clone()));
    let output = op.forward::<I>(prims);
    match Node(op.clone())
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = (saved, keep_output.then(|| output.clone()));
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

// Moving between primitives of unknown rank and tensors of a fixed one.

fn wrap<I: Backend, const D: usize>(p: FloatTensor<I>) -> Tensor<I, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn prim<I: Backend, const D: usize>(t: Tensor<I, D>) -> FloatTensor<I> {
    t.into_primitive().tensor()
}

/// `x` as `dims` (same element count).
fn as_shape<I: Backend, const D: usize>(x: FloatTensor<I>, dims: [usize; D]) -> Tensor<I, D> {
    wrap(I::float_reshape(x, Shape::new(dims)))
}

/// `x [.., w]` as `[rows, w]`, with its original shape.
fn as_rows<I: Backend>(x: FloatTensor<I>) -> (Tensor<I, 2>, Shape) {
    let shape = x.shape();
    let width = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / width.max(1);
    (as_shape(x, [rows, width]), shape)
}

/// `x` flattened (element-wise ops), with its original shape.
fn as_flat<I: Backend>(x: FloatTensor<I>) -> (Tensor<I, 1>, Shape) {
    let shape = x.shape();
    (as_shape(x, [shape.num_elements()]), shape)
}

fn back<I: Backend, const D: usize>(t: Tensor<I, D>, shape: Shape) -> FloatTensor<I> {
    I::float_reshape(prim(t), shape)
}

fn saved<I: Backend>(t: Option<FloatTensor<I>>) -> FloatTensor<I> {
    t.expect("lean op: a tensor its SAVES keeps")
}

impl LeanOp<3> for Rope {
    const SAVES: ([bool; 3], bool) = ([false, true, true], false);

    fn forward<I: Backend>(&self, [x, cos, sin]: [FloatTensor<I>; 3]) -> FloatTensor<I> {
        prim(reference::rope::<I>(wrap(x), wrap(cos), wrap(sin)))
    }

    /// `dx = g cos + swap(g sin)`, which is the same map with the two `sin` entries of each
    /// pair swapped (for rotation tables, the rotation by the opposite angle).
    fn backward<I: Backend>(
        &self,
        [_, cos, sin]: [Option<FloatTensor<I>>; 3],
        _: Option<FloatTensor<I>>,
        grad: FloatTensor<I>,
        [need_x, ..]: [bool; 3],
    ) -> [Option<FloatTensor<I>>; 3] {
        let dx = need_x.then(|| {
            let sin = wrap::<I, 2>(saved::<I>(sin));
            let [l, hd] = sin.dims();
            let swapped = sin.reshape([l, hd / 2, 2]).flip([2]).reshape([l, hd]);
            let cos = wrap::<I, 2>(saved::<I>(cos));
            prim(reference::rope::<I>(wrap(grad), cos, swapped))
        });
        [dx, None, None]
    }
}

/// `dx = scale · y ⊙ (g - Σ g ⊙ y)` over the last dimension.
fn softmax_backward<I: Backend>(
    y: FloatTensor<I>,
    grad: FloatTensor<I>,
    scale: f32,
) -> FloatTensor<I> {
    let (y, shape) = as_rows::<I>(y);
    let (g, _) = as_rows::<I>(grad);
    let dot = (g.clone() * y.clone()).sum_dim(1);
    back(((g - dot) * y).mul_scalar(scale), shape)
}

impl LeanOp<1> for Softmax {
    const SAVES: ([bool; 1], bool) = ([false], true);

    fn forward<I: Backend>(&self, [x]: [FloatTensor<I>; 1]) -> FloatTensor<I> {
        let (x, shape) = as_rows::<I>(x);
        back(reference::softmax_scaled(x, self.scale as f64, None), shape)
    }

    fn backward<I: Backend>(
        &self,
        _: [Option<FloatTensor<I>>; 1],
        y: Option<FloatTensor<I>>,
        grad: FloatTensor<I>,
        [need]: [bool; 1],
    ) -> [Option<FloatTensor<I>>; 1] {
        [need.then(|| softmax_backward::<I>(saved::<I>(y), grad, self.scale))]
    }
}

/// Inputs `[x [.., R, S], bias [R, S]]`; the bias (a mask) gets no gradient.
impl LeanOp<2> for Softmax {
    const SAVES: ([bool; 2], bool) = ([false, false], true);

    fn forward<I: Backend>(&self, [x, bias]: [FloatTensor<I>; 2]) -> FloatTensor<I> {
        let shape = x.shape();
        let bias = wrap::<I, 2>(bias);
        let [r, s] = bias.dims();
        let x = as_shape::<I, 3>(x, [shape.num_elements() / (r * s).max(1), r, s]);
        back(
            reference::softmax_scaled(x, self.scale as f64, Some(bias)),
            shape,
        )
    }

    fn backward<I: Backend>(
        &self,
        _: [Option<FloatTensor<I>>; 2],
        y: Option<FloatTensor<I>>,
        grad: FloatTensor<I>,
        [need_x, _]: [bool; 2],
    ) -> [Option<FloatTensor<I>>; 2] {
        [
            need_x.then(|| softmax_backward::<I>(saved::<I>(y), grad, self.scale)),
            None,
        ]
    }
}

/// `y = x r γ` with `r = (mean(x²) + eps)^-½` per row:
/// `dx = r (g ⊙ γ) - x r³ mean(g ⊙ γ ⊙ x)`, `dγ = Σ_rows g ⊙ x r`.
impl LeanOp<2> for RmsNorm {
    const SAVES: ([bool; 2], bool) = ([true, true], false);

    fn forward<I: Backend>(&self, [x, gamma]: [FloatTensor<I>; 2]) -> FloatTensor<I> {
        let (x, shape) = as_rows::<I>(x);
        back(
            reference::rms_norm(x, wrap::<I, 1>(gamma), self.eps as f64),
            shape,
        )
    }

    fn backward<I: Backend>(
        &self,
        [x, gamma]: [Option<FloatTensor<I>>; 2],
        _: Option<FloatTensor<I>>,
        grad: FloatTensor<I>,
        [need_x, need_gamma]: [bool; 2],
    ) -> [Option<FloatTensor<I>>; 2] {
        let (x, shape) = as_rows::<I>(saved::<I>(x));
        let gamma = wrap::<I, 1>(saved::<I>(gamma));
        let (g, _) = as_rows::<I>(grad);
        let width = x.dims()[1];
        let r = (x.clone().square().mean_dim(1) + self.eps as f64)
            .sqrt()
            .recip();
        let dgamma = need_gamma.then(|| {
            prim(
                (g.clone() * x.clone() * r.clone())
                    .sum_dim(0)
                    .reshape([width]),
            )
        });
        let dx = need_x.then(|| {
            let gg = g * gamma.unsqueeze::<2>();
            let m = (gg.clone() * x.clone()).mean_dim(1);
            let r3 = r.clone() * r.clone() * r.clone();
            back(gg * r - x * (r3 * m), shape)
        });
        [dx, dgamma]
    }
}

/// `y = a σ(a) b`: `da = g b σ(a) (1 + a (1 - σ(a)))`, `db = g a σ(a)`.
impl LeanOp<2> for SiluGate {
    const SAVES: ([bool; 2], bool) = ([true, true], false);

    fn forward<I: Backend>(&self, [a, b]: [FloatTensor<I>; 2]) -> FloatTensor<I> {
        let (a, shape) = as_flat::<I>(a);
        let (b, _) = as_flat::<I>(b);
        back(reference::silu_gate(a, b), shape)
    }

    fn backward<I: Backend>(
        &self,
        [a, b]: [Option<FloatTensor<I>>; 2],
        _: Option<FloatTensor<I>>,
        grad: FloatTensor<I>,
        [need_a, need_b]: [bool; 2],
    ) -> [Option<FloatTensor<I>>; 2] {
        let (a, shape) = as_flat::<I>(saved::<I>(a));
        let (b, _) = as_flat::<I>(saved::<I>(b));
        let (g, _) = as_flat::<I>(grad);
        let s = sigmoid(a.clone());
        let db = need_b.then(|| back(g.clone() * a.clone() * s.clone(), shape.clone()));
        let da = need_a.then(|| {
            let ds = (a * (s.clone().neg() + 1.0) + 1.0) * s;
            back(g * b * ds, shape)
        });
        [da, db]
    }
}

/// `y = u σ(α u)`: `du = g (s + α u s (1 - s))`, `s = σ(α u)`.
impl LeanOp<1> for Swish {
    const SAVES: ([bool; 1], bool) = ([true], false);

    fn forward<I: Backend>(&self, [u]: [FloatTensor<I>; 1]) -> FloatTensor<I> {
        let (u, shape) = as_flat::<I>(u);
        back(reference::swish(u, self.alpha as f64), shape)
    }

    fn backward<I: Backend>(
        &self,
        [u]: [Option<FloatTensor<I>>; 1],
        _: Option<FloatTensor<I>>,
        grad: FloatTensor<I>,
        [need]: [bool; 1],
    ) -> [Option<FloatTensor<I>>; 1] {
        [need.then(|| {
            let (u, shape) = as_flat::<I>(saved::<I>(u));
            let (g, _) = as_flat::<I>(grad);
            let s = sigmoid(u.clone() * self.alpha as f64);
            let du = s.clone() + u * (s.clone().neg() + 1.0) * s * self.alpha as f64;
            back(g * du, shape)
        })]
    }
}

/// `y = a b` (batched over the leading dimensions): `da = g bᵀ`, `db = aᵀ g`.
impl LeanOp<2> for Matmul {
    const SAVES: ([bool; 2], bool) = ([true, true], false);

    fn forward<I: Backend>(&self, [a, b]: [FloatTensor<I>; 2]) -> FloatTensor<I> {
        I::float_matmul(a, b)
    }

    fn backward<I: Backend>(
        &self,
        [a, b]: [Option<FloatTensor<I>>; 2],
        _: Option<FloatTensor<I>>,
        grad: FloatTensor<I>,
        [need_a, need_b]: [bool; 2],
    ) -> [Option<FloatTensor<I>>; 2] {
        let t = |x: FloatTensor<I>| {
            let d = x.shape().num_dims();
            I::float_swap_dims(x, d - 2, d - 1)
        };
        let da = need_a.then(|| I::float_matmul(grad.clone(), t(saved::<I>(b))));
        let db = need_b.then(|| I::float_matmul(t(saved::<I>(a)), grad));
        [da, db]
    }
}

/// Inputs `[logits [N, V], ids [N]]` (ids as f32, no gradient): `nll = logsumexp(x) - x[id]`,
/// `dx = g (softmax(x) - onehot(id))`. Keeps the logits, where the composed version keeps
/// vocabulary-wide intermediates of its log-softmax besides.
impl LeanOp<2> for CrossEntropy {
    const SAVES: ([bool; 2], bool) = ([true, true], false);

    fn forward<I: Backend>(&self, [logits, ids]: [FloatTensor<I>; 2]) -> FloatTensor<I> {
        let ids = wrap::<I, 1>(ids).int();
        prim(reference::cross_entropy::<I>(wrap(logits), ids))
    }

    fn backward<I: Backend>(
        &self,
        [logits, ids]: [Option<FloatTensor<I>>; 2],
        _: Option<FloatTensor<I>>,
        grad: FloatTensor<I>,
        [need, _]: [bool; 2],
    ) -> [Option<FloatTensor<I>>; 2] {
        let dx = need.then(|| {
            let ids = wrap::<I, 1>(saved::<I>(ids)).int().unsqueeze_dim::<2>(1);
            let g = wrap::<I, 1>(grad).unsqueeze_dim::<2>(1);
            let p = softmax(wrap::<I, 2>(saved::<I>(logits)), 1);
            prim((p * g.clone()).scatter(1, ids, g.neg(), IndexingUpdateOp::Add))
        });
        [dx, None]
    }
}
