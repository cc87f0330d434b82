//! The fast paths, in one place. The model code calls these functions where the paper's maths
//! has rotary embedding, scaled softmax, RMSNorm, the SiLU gate, QuickGELU, cross-entropy, the
//! head split/merge transpose and few-row matmuls; [`reference`] holds the same maths as plain
//! Burn tensor code, which is what runs when the fast paths are off ([`set_enabled`]) and what
//! the tests (`tests/kernels.rs`) compare every output and gradient against.
//!
//! Which body runs is decided here and nowhere else:
//! - burn-flex, f32, plain or under `Autodiff` ([`flex`](self)): one multi-threaded pass per op
//!   over `f32` rows ([`rows`](self)) with a hand-written backward, and the batch-1
//!   matrix-vector kernel (`gemv`), where Burn's composed version makes one single-threaded pass
//!   per elementary op;
//! - the other autodiff backends (CUDA, wgpu, ndarray): lean autodiff ops (`lean_autodiff`),
//!   whose forward is the composed maths and whose graph keeps only what their hand-written
//!   backward reads (training memory at 7B);
//! - anything else: [`reference`].
//!
//! Why `TypeId` and not a backend extension trait (Burn's `custom-*-kernel` pattern): the model
//! is generic over plain `B: Backend`, so any Burn backend, ours or a user's, runs it unchanged.
//! An extension trait would put a `B: LavinKernels` bound on every model type and every caller
//! (about 170 places) and shut out backends that do not implement it. Recognising the few
//! backends that have a fast path by `TypeId` at these entry points keeps the bound plain and
//! costs nothing at run time (the primitives move across with `Any`).

#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod gemv;
mod lean_autodiff;
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
mod ops;
#[cfg(feature = "flex")]
mod rows;
#[cfg(feature = "flex")]
mod vexp;

use core::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Int, Tensor, TensorPrimitive};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the fused and lean versions off (`false`) or back on for the whole process: every op
/// then takes its composed version, as Burn alone would run it. For A/B measurements
/// (`lavin-train bench --composed-ops`) and for ruling the fused ops out when a result looks
/// wrong; the numbers agree within float rounding either way.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether the fused and lean versions run (see [`set_enabled`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A fused op: flex's kernels, else the lean autodiff version, else (`Err`) the composed one.
#[cfg(feature = "flex")]
fn dispatch<B: Backend, O: flex::FusedOp<N>, const N: usize>(
    op: &O,
    inputs: [FloatTensor<B>; N],
) -> Result<FloatTensor<B>, [FloatTensor<B>; N]> {
    if !enabled() {
        return Err(inputs);
    }
    flex::run::<B, O, N>(op, inputs).or_else(|inputs| lean_autodiff::run::<B, O, N>(op, inputs))
}

#[cfg(not(feature = "flex"))]
fn dispatch<B: Backend, O: 'static, const N: usize>(
    op: &O,
    inputs: [FloatTensor<B>; N],
) -> Result<FloatTensor<B>, [FloatTensor<B>; N]> {
    if !enabled() {
        return Err(inputs);
    }
    lean_autodiff::run::<B, O, N>(op, inputs)
}

/// Whether the fused ops on `B` run as lean autodiff ops ([`lean_autodiff`]): the autodiff backends
/// compiled into this crate other than flex, which has kernels of its own.
pub fn has_lean_ops<B: Backend>() -> bool {
    lean_autodiff::registered::<B>()
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn wrap<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// Interleaved rotary embedding of `x [B, L, C]` (heads side by side in `C`) with tables
/// `cos`, `sin [L, head_dim]` holding `(c, c)` and `(-s, s)` per pair of channels.
///
/// A half `x` is rotated in f32 and rounded back to its dtype (the original's `.float()` then
/// `type_as`).
pub fn rope<B: Backend>(x: Tensor<B, 3>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 3> {
    let dtype = x.dtype();
    if dtype != DType::F32 {
        return match widening::<B, _, 3>(&ops::Rope, [prim(x), prim(cos), prim(sin)], dtype) {
            Ok(y) => wrap(y),
            Err([x, cos, sin]) => {
                rope(wrap::<B, 3>(x).cast(DType::F32), wrap(cos), wrap(sin)).cast(dtype)
            }
        };
    }
    match dispatch::<B, _, _>(&ops::Rope, [prim(x), prim(cos), prim(sin)]) {
        Ok(y) => wrap(y),
        Err([x, cos, sin]) => reference::rope(wrap(x), wrap(cos), wrap(sin)),
    }
}

/// The lean autodiff op computing `op` in f32 on (partly) half inputs with its output in `out`
/// ([`lean_autodiff::run_widening`]); `Err` where there is none.
fn widening<B: Backend, O: Clone + core::fmt::Debug + Send + Sync + 'static, const N: usize>(
    op: &O,
    inputs: [FloatTensor<B>; N],
    out: DType,
) -> Result<FloatTensor<B>, [FloatTensor<B>; N]> {
    if !enabled() {
        return Err(inputs);
    }
    lean_autodiff::run_widening::<B, O, N>(op, inputs, out)
}

/// Whether a half-precision frozen base keeps its attention activations (q, k, v and the
/// attention probabilities) in half: on the lean autodiff backends, where that halves what
/// training keeps for the backward. Elsewhere they are widened to f32 as they come out of the
/// frozen matmuls.
pub fn half_attention<B: Backend>() -> bool {
    enabled() && lean_autodiff::registered::<B>()
}

/// `a [.., m, k] · b [.., k, n]` in f32 for half `a`, `b` (no broadcasting): attention scores
/// that never exist in half. The lean op keeps the half inputs for its backward.
pub fn matmul_wide<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    match widening::<B, _, 2>(&ops::Matmul, [prim(a), prim(b)], DType::F32) {
        Ok(y) => wrap(y),
        Err([a, b]) => wrap::<B, D>(a)
            .cast(DType::F32)
            .matmul(wrap::<B, D>(b).cast(DType::F32)),
    }
}

/// Rows up to which [`matmul`] splits the columns across threads itself.
const FEW_ROWS: usize = 16;

/// `x [m, k] · w [k, n]`. On plain flex a single row (a decode step at batch 1, a class token)
/// goes through the matrix-vector kernel of [`gemv`], and up to [`FEW_ROWS`] rows through a
/// column split of gemm; everything else, training included, through Burn's matmul.
pub fn matmul<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    let rows = x.dims()[0];
    if rows > FEW_ROWS {
        return x.matmul(w);
    }
    #[cfg(feature = "flex")]
    return match flex::plain::<B, 2>([prim(x), prim(w)], |[x, w]| {
        if rows == 1 {
            ops::gemv(x, w)
        } else {
            ops::matmul_few_rows(x, w)
        }
    }) {
        Ok(y) => wrap(y),
        Err([x, w]) => wrap::<B, 2>(x).matmul(wrap(w)),
    };
    #[cfg(not(feature = "flex"))]
    x.matmul(w)
}

/// `x.swap_dims(1, 2)` for `x [a, b, c, d]`, as a contiguous tensor where that is faster.
pub fn swap_middle<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    match dispatch::<B, _, _>(&ops::SwapMiddle, [prim(x)]) {
        Ok(y) => wrap(y),
        Err([x]) => wrap::<B, 4>(x).swap_dims(1, 2),
    }
}

/// `softmax(x * scale + bias)` over the last dimension of `x [.., R, S]`, with `bias [R, S]`
/// (0 or -inf: an attention mask) shared by the leading dimensions.
pub fn softmax_scaled<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: f64,
    bias: Option<Tensor<B, 2>>,
) -> Tensor<B, D> {
    let op = ops::Softmax {
        scale: scale as f32,
    };
    match bias {
        None => match dispatch::<B, _, _>(&op, [prim(x)]) {
            Ok(y) => wrap(y),
            Err([x]) => reference::softmax_scaled(wrap(x), scale, None),
        },
        Some(bias) => match dispatch::<B, _, _>(&op, [prim(x), prim(bias)]) {
            Ok(y) => wrap(y),
            Err([x, bias]) => reference::softmax_scaled(wrap(x), scale, Some(wrap(bias))),
        },
    }
}

/// [`softmax_scaled`] of `x` (any float dtype) computed in f32, with the probabilities in
/// `dtype`: half attention probabilities, as the original's `softmax(scores.float()).type_as(q)`.
/// The lean op keeps only those half probabilities for its backward.
pub fn softmax_scaled_as<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: f64,
    bias: Option<Tensor<B, 2>>,
    dtype: DType,
) -> Tensor<B, D> {
    let op = ops::Softmax {
        scale: scale as f32,
    };
    let widened = match bias {
        None => widening::<B, _, 1>(&op, [prim(x)], dtype).map_err(|[x]| (x, None)),
        Some(bias) => widening::<B, _, 2>(&op, [prim(x), prim(bias)], dtype)
            .map_err(|[x, bias]| (x, Some(wrap(bias)))),
    };
    match widened {
        Ok(y) => wrap(y),
        Err((x, bias)) => softmax_scaled(wrap::<B, D>(x).cast(DType::F32), scale, bias).cast(dtype),
    }
}

/// Per-row cross-entropy `logsumexp(logits[r]) - logits[r, targets[r]]` of `logits [N, V]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    // Token ids travel as f32 (exact below 2^24); they are a constant of the op.
    let ids = targets.clone().float();
    match dispatch::<B, _, _>(&ops::CrossEntropy, [prim(logits), prim(ids)]) {
        Ok(y) => wrap(y),
        Err([logits, _]) => reference::cross_entropy(wrap(logits), targets),
    }
}

/// LLaMA's RMSNorm over the last dimension, `x / sqrt(mean(x²) + eps) * gamma`.
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    match dispatch::<B, _, _>(&ops::RmsNorm { eps: eps as f32 }, [prim(x), prim(gamma)]) {
        Ok(y) => wrap(y),
        Err([x, gamma]) => reference::rms_norm(wrap(x), wrap(gamma), eps),
    }
}

/// `silu(a) * b` for `a`, `b` of one shape.
pub fn silu_gate<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    if a.dims() != b.dims() {
        return reference::silu_gate(a, b);
    }
    match dispatch::<B, _, _>(&ops::SiluGate, [prim(a), prim(b)]) {
        Ok(y) => wrap(y),
        Err([a, b]) => reference::silu_gate(wrap(a), wrap(b)),
    }
}

/// `silu(a) * b` in `dtype` for `a`, `b` of one shape in a dtype that may be narrower (half
/// products of the frozen weights). The lean autodiff op keeps the narrow inputs for its
/// backward; everywhere else they are widened first, which is the same arithmetic.
pub fn silu_gate_widening<B: Backend, const D: usize>(
    mut a: Tensor<B, D>,
    mut b: Tensor<B, D>,
    dtype: DType,
) -> Tensor<B, D> {
    let narrow = a.dtype() != dtype && a.dtype() == b.dtype() && a.dims() == b.dims();
    if narrow && dtype == DType::F32 {
        match widening::<B, _, 2>(&ops::SiluGate, [prim(a), prim(b)], dtype) {
            Ok(y) => return wrap(y),
            Err([a0, b0]) => (a, b) = (wrap(a0), wrap(b0)),
        }
    }
    silu_gate(a.cast(dtype), b.cast(dtype))
}

/// CLIP's QuickGELU, `u * sigmoid(1.702 u)`.
pub fn quick_gelu<B: Backend, const D: usize>(u: Tensor<B, D>) -> Tensor<B, D> {
    const ALPHA: f64 = 1.702;
    match dispatch::<B, _, _>(
        &ops::Swish {
            alpha: ALPHA as f32,
        },
        [prim(u)],
    ) {
        Ok(y) => wrap(y),
        Err([u]) => reference::swish(wrap(u), ALPHA),
    }
}

/// The same ops composed from Burn's elementary ones (any backend, any dtype).
pub mod reference {
    use burn::tensor::activation::{log_softmax, sigmoid, silu, softmax};
    use burn::tensor::{backend::Backend, DType, Int, Tensor};

    pub fn cross_entropy<B: Backend>(
        logits: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1> {
        let picked = log_softmax(logits, 1).gather(1, targets.unsqueeze_dim(1));
        -picked.squeeze_dim::<1>(1)
    }

    pub fn rope<B: Backend>(x: Tensor<B, 3>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 3> {
        let [b, l, c] = x.dims();
        let heads = c / cos.dims()[1];
        let table = |t: Tensor<B, 2>| t.repeat_dim(1, heads).unsqueeze_dim::<3>(0);
        // One flip rather than a cat of the two halves: one kernel instead of three on the GPU.
        let swapped = x
            .clone()
            .reshape([b, l, c / 2, 2])
            .flip([3])
            .reshape([b, l, c]);
        x * table(cos) + swapped * table(sin)
    }

    pub fn softmax_scaled<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        scale: f64,
        bias: Option<Tensor<B, 2>>,
    ) -> Tensor<B, D> {
        let x = x.mul_scalar(scale);
        let x = match bias {
            Some(b) => x + b.unsqueeze::<D>(),
            None => x,
        };
        softmax(x, D - 1)
    }

    /// As `burn::nn::RmsNorm::forward` (statistics in f32).
    pub fn rms_norm<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        gamma: Tensor<B, 1>,
        eps: f64,
    ) -> Tensor<B, D> {
        let dtype = x.dtype();
        let rms = (x.clone().cast(DType::F32).square().mean_dim(D - 1) + eps).sqrt();
        (x / rms.cast(dtype)) * gamma.unsqueeze()
    }

    pub fn silu_gate<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
        silu(a) * b
    }

    pub fn swish<B: Backend, const D: usize>(u: Tensor<B, D>, alpha: f64) -> Tensor<B, D> {
        u.clone() * sigmoid(u * alpha)
    }
}
