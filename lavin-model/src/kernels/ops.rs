//! The fused ops' parameters, and (with flex) their forward and backward on flex tensors.

#[cfg(feature = "flex")]
use burn::backend::flex::FlexTensor;
#[cfg(feature = "flex")]
use burn::tensor::Shape;

#[cfg(feature = "flex")]
use super::flex::{f32s, shape, tensor, FusedOp};
#[cfg(feature = "flex")]
use super::rows;

#[cfg(feature = "flex")]
fn last_dim(t: &FlexTensor) -> usize {
    *shape(t).last().expect("fused: tensor of rank >= 1")
}

/// Inputs `[x [B, L, C], cos [L, hd], sin [L, hd]]`; the tables get no gradient.
#[derive(Clone, Debug)]
pub(crate) struct Rope;

#[cfg(feature = "flex")]
impl Rope {
    fn apply(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor, transpose: bool) -> FlexTensor {
        let dims = shape(x);
        let (seq, width) = (dims[1], dims[2]);
        let out = rows::rope(f32s(x), f32s(cos), f32s(sin), seq, width, transpose);
        tensor(out, dims)
    }
}

#[cfg(feature = "flex")]
impl FusedOp<3> for Rope {
    const SAVES: ([bool; 3], bool) = ([false, true, true], false);

    fn forward(&self, [x, cos, sin]: [&FlexTensor; 3]) -> FlexTensor {
        Self::apply(x, cos, sin, false)
    }

    fn backward(
        &self,
        [_, cos, sin]: [Option<&FlexTensor>; 3],
        _: Option<&FlexTensor>,
        grad: &FlexTensor,
        [need_x, ..]: [bool; 3],
    ) -> [Option<FlexTensor>; 3] {
        let (cos, sin) = (cos.expect("saved"), sin.expect("saved"));
        [
            need_x.then(|| Self::apply(grad, cos, sin, true)),
            None,
            None,
        ]
    }
}

/// `x [1, k] · w [k, n]` (inference only: plain flex).
#[cfg(feature = "flex")]
pub(crate) fn gemv(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let (k, n) = (shape(w)[0], shape(w)[1]);
    tensor(
        super::gemv::gemv(f32s(x), f32s(w), k, n),
        Shape::new([1, n]),
    )
}

/// `x [m, k] · w [k, n]` for a few rows (inference only: plain flex).
#[cfg(feature = "flex")]
pub(crate) fn matmul_few_rows(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let ([m, k], n) = ([shape(x)[0], shape(x)[1]], shape(w)[1]);
    tensor(
        rows::matmul_few_rows(f32s(x), f32s(w), m, k, n),
        Shape::new([m, n]),
    )
}

/// `[a, b, c, d] -> [a, c, b, d]` materialised: heads split off (or merged back into) the
/// channels, so that neither direction hands a strided tensor to a single-threaded copy.
#[derive(Clone, Debug)]
pub(crate) struct SwapMiddle;

#[cfg(feature = "flex")]
impl SwapMiddle {
    fn apply(x: &FlexTensor) -> FlexTensor {
        let dims = shape(x);
        let [a, b, c, d] = [dims[0], dims[1], dims[2], dims[3]];
        tensor(
            rows::swap_middle(f32s(x), [a, b, c, d]),
            Shape::new([a, c, b, d]),
        )
    }
}

#[cfg(feature = "flex")]
impl FusedOp<1> for SwapMiddle {
    const SAVES: ([bool; 1], bool) = ([false], false);

    fn forward(&self, [x]: [&FlexTensor; 1]) -> FlexTensor {
        Self::apply(x)
    }

    fn backward(
        &self,
        _: [Option<&FlexTensor>; 1],
        _: Option<&FlexTensor>,
        grad: &FlexTensor,
        [need]: [bool; 1],
    ) -> [Option<FlexTensor>; 1] {
        [need.then(|| Self::apply(grad))]
    }
}

/// `softmax(x * scale [+ bias])` over the last dimension; inputs `[x]` or `[x, bias]`, the
/// bias a constant (no gradient).
#[derive(Clone, Debug)]
pub(crate) struct Softmax {
    pub scale: f32,
}

#[cfg(feature = "flex")]
impl Softmax {
    fn forward_with(&self, x: &FlexTensor, bias: Option<&FlexTensor>) -> FlexTensor {
        let y = rows::softmax(f32s(x), last_dim(x), self.scale, bias.map(f32s));
        tensor(y, shape(x))
    }

    fn backward_of(&self, y: Option<&FlexTensor>, grad: &FlexTensor) -> FlexTensor {
        let y = y.expect("saved");
        let dx = rows::softmax_backward(f32s(y), f32s(grad), last_dim(y), self.scale);
        tensor(dx, shape(y))
    }
}

#[cfg(feature = "flex")]
impl FusedOp<1> for Softmax {
    const SAVES: ([bool; 1], bool) = ([false], true);

    fn forward(&self, [x]: [&FlexTensor; 1]) -> FlexTensor {
        self.forward_with(x, None)
    }

    fn backward(
        &self,
        _: [Option<&FlexTensor>; 1],
        y: Option<&FlexTensor>,
        grad: &FlexTensor,
        [need]: [bool; 1],
    ) -> [Option<FlexTensor>; 1] {
        [need.then(|| self.backward_of(y, grad))]
    }
}

#[cfg(feature = "flex")]
impl FusedOp<2> for Softmax {
    const SAVES: ([bool; 2], bool) = ([false, false], true);

    fn forward(&self, [x, bias]: [&FlexTensor; 2]) -> FlexTensor {
        self.forward_with(x, Some(bias))
    }

    fn backward(
        &self,
        _: [Option<&FlexTensor>; 2],
        y: Option<&FlexTensor>,
        grad: &FlexTensor,
        [need, _]: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        [need.then(|| self.backward_of(y, grad)), None]
    }
}

/// Inputs `[logits [N, V], targets [N]]` (ids as f32); output the per-row loss `[N]`.
#[derive(Clone, Debug)]
pub(crate) struct CrossEntropy;

#[cfg(feature = "flex")]
impl FusedOp<2> for CrossEntropy {
    const SAVES: ([bool; 2], bool) = ([true, true], false);

    fn forward(&self, [logits, targets]: [&FlexTensor; 2]) -> FlexTensor {
        let nll = rows::cross_entropy(f32s(logits), f32s(targets), last_dim(logits));
        tensor(nll, shape(targets))
    }

    fn backward(
        &self,
        [logits, targets]: [Option<&FlexTensor>; 2],
        _: Option<&FlexTensor>,
        grad: &FlexTensor,
        [need, _]: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        let (logits, targets) = (logits.expect("saved"), targets.expect("saved"));
        let dx = need.then(|| {
            let v = last_dim(logits);
            let dx = rows::cross_entropy_backward(f32s(logits), f32s(targets), f32s(grad), v);
            tensor(dx, shape(logits))
        });
        [dx, None]
    }
}

/// Inputs `[x [.., C], gamma [C]]`.
#[derive(Clone, Debug)]
pub(crate) struct RmsNorm {
    pub eps: f32,
}

#[cfg(feature = "flex")]
impl FusedOp<2> for RmsNorm {
    const SAVES: ([bool; 2], bool) = ([true, true], false);

    fn forward(&self, [x, gamma]: [&FlexTensor; 2]) -> FlexTensor {
        tensor(rows::rms_norm(f32s(x), f32s(gamma), self.eps), shape(x))
    }

    fn backward(
        &self,
        [x, gamma]: [Option<&FlexTensor>; 2],
        _: Option<&FlexTensor>,
        grad: &FlexTensor,
        [need_x, need_gamma]: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        let (x, gamma) = (x.expect("saved"), gamma.expect("saved"));
        let (dx, dgamma) = rows::rms_norm_backward(
            f32s(x),
            f32s(gamma),
            f32s(grad),
            self.eps,
            need_x,
            need_gamma,
        );
        [
            dx.map(|d| tensor(d, shape(x))),
            dgamma.map(|d| tensor(d, shape(gamma))),
        ]
    }
}

/// `a * sigmoid(alpha a)`: QuickGELU with alpha 1.702.
#[derive(Clone, Debug)]
pub(crate) struct Swish {
    pub alpha: f32,
}

#[cfg(feature = "flex")]
impl FusedOp<1> for Swish {
    const SAVES: ([bool; 1], bool) = ([true], false);

    fn forward(&self, [a]: [&FlexTensor; 1]) -> FlexTensor {
        tensor(rows::swish(f32s(a), None, self.alpha), shape(a))
    }

    fn backward(
        &self,
        [a]: [Option<&FlexTensor>; 1],
        _: Option<&FlexTensor>,
        grad: &FlexTensor,
        [need]: [bool; 1],
    ) -> [Option<FlexTensor>; 1] {
        let a = a.expect("saved");
        [need.then(|| {
            let (da, _) = rows::swish_backward(f32s(a), None, f32s(grad), self.alpha, false);
            tensor(da, shape(a))
        })]
    }
}

/// `silu(a) * b`: LLaMA's gated MLP activation.
#[derive(Clone, Debug)]
pub(crate) struct SiluGate;

#[cfg(feature = "flex")]
impl FusedOp<2> for SiluGate {
    const SAVES: ([bool; 2], bool) = ([true, true], false);

    fn forward(&self, [a, b]: [&FlexTensor; 2]) -> FlexTensor {
        assert_eq!(shape(a), shape(b), "silu_gate: shapes differ");
        tensor(rows::swish(f32s(a), Some(f32s(b)), 1.0), shape(a))
    }

    fn backward(
        &self,
        [a, b]: [Option<&FlexTensor>; 2],
        _: Option<&FlexTensor>,
        grad: &FlexTensor,
        [need_a, need_b]: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        let (a, b) = (a.expect("saved"), b.expect("saved"));
        let dims = shape(a);
        let (da, db) = rows::swish_backward(f32s(a), Some(f32s(b)), f32s(grad), 1.0, need_b);
        [
            need_a.then(|| tensor(da, dims.clone())),
            db.map(|d| tensor(d, dims)),
        ]
    }
}

/// `a b` over the last two dimensions, batched over the others (no broadcasting): the
/// attention scores of half q and k, computed in f32 (`lean` only, through its widening).
#[derive(Clone, Debug)]
pub(crate) struct Matmul;
