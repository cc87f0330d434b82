//! RepAdapters: the only trainable parts of LaVIN besides `adapter_proj` and the modality token.
//!
//! Parameters keep the original PyTorch layout (`conv_A.weight` is `[r, C, 1]`, the grouped
//! up-projections `[C, r/groups, 1]`, `expert_weights.weight` `[2, C]`), so gradients, optimizer
//! moments and checkpoints map one to one onto the authors' key names.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Initializer};
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Tensor};

/// A 1x1 convolution over channels-last input, stored as PyTorch's `Conv1d` weight
/// `[out, in / groups, 1]` plus bias `[out]`.
#[derive(Module, Debug)]
pub struct Conv1x1<B: Backend> {
    pub weight: Param<Tensor<B, 3>>,
    pub bias: Param<Tensor<B, 1>>,
    groups: usize,
}

impl<B: Backend> Conv1x1<B> {
    pub fn new(
        d_in: usize,
        d_out: usize,
        groups: usize,
        init: Initializer,
        device: &B::Device,
    ) -> Self {
        let fan_in = d_in / groups;
        let weight = init.init_with([d_out, fan_in, 1], Some(fan_in), Some(d_out), device);
        let bias = Initializer::Zeros.init([d_out], device);
        Self {
            weight,
            bias,
            groups,
        }
    }

    /// `[..., T, in] -> [..., T, out]`; output channel block g reads input block g.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dense = self.dense();
        let [d_in, d_out] = dense.dims();
        let mut out_shape = x.dims();
        out_shape[D - 1] = d_out;
        let rows = x.shape().num_elements() / d_in;
        let y = x.reshape([rows, d_in]).matmul(dense) + self.bias.val().unsqueeze::<2>();
        y.reshape(out_shape)
    }

    /// The weight as one block-diagonal `[in, out]` matrix. The adapters' hidden width is a
    /// handful of channels, so the zero blocks cost nothing, while a grouped matmul needs the
    /// activations regrouped (strided copies) both ways.
    pub fn dense(&self) -> Tensor<B, 2> {
        let [d_out, fan_in, _] = self.weight.dims();
        let g = self.groups;
        let w = self.weight.val().reshape([d_out, fan_in]);
        if g == 1 {
            return w.transpose();
        }
        let per_out = d_out / g;
        let device = w.device();
        let rows = (0..g)
            .map(|k| {
                let zeros = |n: usize| Tensor::zeros([fan_in, n * per_out], &device);
                let block = w.clone().narrow(0, k * per_out, per_out).transpose();
                let mut parts = Vec::with_capacity(3);
                if k > 0 {
                    parts.push(zeros(k));
                }
                parts.push(block);
                if k + 1 < g {
                    parts.push(zeros(g - 1 - k));
                }
                Tensor::cat(parts, 1)
            })
            .collect();
        Tensor::cat(rows, 0)
    }
}

/// Plain RepAdapter (`visual_adapter_type = normal`): `conv_B(dropout(conv_A(x)))`.
/// Like the original it has no residual and ignores `scale`: its output replaces the input.
#[derive(Module, Debug)]
pub struct RepAdapter<B: Backend> {
    pub conv_a: Conv1x1<B>,
    pub conv_b: Conv1x1<B>,
    dropout: Dropout,
}

/// RepAdapter with a 2-expert router: `x + s*w0*B(a) + s*w1*D(a)`, `a = dropout(A x)`,
/// `w = softmax(E x0 / t)` where `x0` is the token the caller chose as router input.
#[derive(Module, Debug)]
pub struct RepAdapterRouter<B: Backend> {
    pub conv_a: Conv1x1<B>,
    pub conv_b: Conv1x1<B>,
    pub conv_d: Conv1x1<B>,
    pub expert_weights: TorchLinear<B>,
    dropout: Dropout,
    scale: f64,
    temperature: f64,
}

/// A Linear in PyTorch layout (`weight [out, in]`): used for the small trainable layers so
/// their names, shapes and gradients are the original's.
#[derive(Module, Debug)]
pub struct TorchLinear<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> TorchLinear<B> {
    pub fn new(
        d_in: usize,
        d_out: usize,
        init: Initializer,
        bias_init: Initializer,
        device: &B::Device,
    ) -> Self {
        Self {
            weight: init.init_with([d_out, d_in], Some(d_in), Some(d_out), device),
            bias: bias_init.init_with([d_out], Some(d_in), Some(d_out), device),
        }
    }

    /// `[..., in] -> [..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let w = self.weight.val().transpose().unsqueeze::<D>();
        x.matmul(w) + self.bias.val().unsqueeze::<D>()
    }
}

/// PyTorch's `nn.Linear` default init (kaiming-uniform with a = sqrt(5) = U(±1/sqrt(fan_in))).
fn torch_linear_init() -> Initializer {
    Initializer::KaimingUniform {
        gain: 1.0 / 3f64.sqrt(),
        fan_out_only: false,
    }
}

fn xavier() -> Initializer {
    Initializer::XavierUniform { gain: 1.0 }
}

impl<B: Backend> RepAdapter<B> {
    pub fn new(
        channels: usize,
        hidden: usize,
        groups: usize,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            conv_a: Conv1x1::new(channels, hidden, 1, xavier(), device),
            conv_b: Conv1x1::new(hidden, channels, groups, Initializer::Zeros, device),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// `[B, T, C] -> [B, T, C]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.conv_b
            .forward(self.dropout.forward(self.conv_a.forward(x)))
    }
}

impl<B: Backend> RepAdapterRouter<B> {
    pub fn new(
        channels: usize,
        hidden: usize,
        groups: usize,
        scale: f64,
        temperature: f64,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            conv_a: Conv1x1::new(channels, hidden, 1, xavier(), device),
            conv_b: Conv1x1::new(hidden, channels, groups, Initializer::Zeros, device),
            conv_d: Conv1x1::new(hidden, channels, groups, Initializer::Zeros, device),
            expert_weights: TorchLinear::new(
                channels,
                2,
                torch_linear_init(),
                torch_linear_init(),
                device,
            ),
            dropout: DropoutConfig::new(dropout).init(),
            scale,
            temperature,
        }
    }

    /// Router weights from the chosen router-input rows: `[..., C] -> [..., 2]`.
    pub fn route<const D: usize>(&self, x0: Tensor<B, D>) -> Tensor<B, D> {
        softmax(self.expert_weights.forward(x0) / self.temperature, D - 1)
    }

    /// `x [B, T, C]`, `weights` broadcastable to `[B, T, 2]` (`[B, 1, 2]` for LLaMA's per-item
    /// routing, `[1, T, 2]` for CLIP's item-0 routing) -> `[B, T, C]`:
    /// `x + s·w0·B(a) + s·w1·D(a)` with `a = dropout(A x)`.
    pub fn forward(&self, x: Tensor<B, 3>, weights: Tensor<B, 3>) -> Tensor<B, 3> {
        let a = self.dropout.forward(self.conv_a.forward(x.clone()));
        let [n, t, _] = a.dims();
        let w = (weights * self.scale).expand([n, t, 2]);
        if crate::kernels::enabled() {
            return x + self.experts_merged(a, w);
        }
        x + self.experts(a, w)
    }

    /// The two experts weighted by the router: `w0·B(a) + w1·D(a)`.
    fn experts(&self, a: Tensor<B, 3>, w: Tensor<B, 3>) -> Tensor<B, 3> {
        let (w0, w1) = (w.clone().narrow(2, 0, 1), w.narrow(2, 1, 1));
        self.conv_b.forward(a.clone()) * w0 + self.conv_d.forward(a) * w1
    }

    /// The fast path of [`experts`](Self::experts): one matmul
    /// over the small side (the maps are linear), `[w0 a | w1 a | w0 | w1] · [B; D; b_b; b_d]`,
    /// so the full-size activations see one matmul and one add instead of two convs, two
    /// scalings and two adds.
    fn experts_merged(&self, a: Tensor<B, 3>, w: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, t, r] = a.dims();
        let c = self.conv_b.bias.dims()[0];
        let (w0, w1) = (w.clone().narrow(2, 0, 1), w.narrow(2, 1, 1));
        let lhs = Tensor::cat(vec![a.clone() * w0.clone(), a * w1.clone(), w0, w1], 2);
        let rhs = Tensor::cat(
            vec![
                self.conv_b.dense(),
                self.conv_d.dense(),
                self.conv_b.bias.val().unsqueeze::<2>(),
                self.conv_d.bias.val().unsqueeze::<2>(),
            ],
            0,
        );
        let k = 2 * r + 2;
        lhs.reshape([n * t, k]).matmul(rhs).reshape([n, t, c])
    }
}

/// `adapter_proj`: two Linear layers with SiLU between, CLIP width -> LLaMA dim.
/// (The original names them `conv_A`/`conv_B` although they are Linear layers.)
#[derive(Module, Debug)]
pub struct AdapterProj<B: Backend> {
    pub conv_a: TorchLinear<B>,
    pub conv_b: TorchLinear<B>,
}

impl<B: Backend> AdapterProj<B> {
    pub fn new(d_in: usize, hidden: usize, d_out: usize, device: &B::Device) -> Self {
        Self {
            conv_a: TorchLinear::new(d_in, hidden, xavier(), Initializer::Zeros, device),
            conv_b: TorchLinear::new(hidden, d_out, xavier(), Initializer::Zeros, device),
        }
    }

    /// `[B, F, W] -> [B, F, C]`
    pub fn forward(&self, feats: Tensor<B, 3>) -> Tensor<B, 3> {
        self.conv_b
            .forward(burn::tensor::activation::silu(self.conv_a.forward(feats)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    type B = NdArray;

    #[test]
    fn grouped_conv_matches_per_group_matmul() {
        let dev = Default::default();
        let conv = Conv1x1::<B>::new(
            4,
            6,
            2,
            Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            },
            &dev,
        );
        let x = Tensor::<B, 3>::random([1, 3, 4], Distribution::Default, &dev);
        let y = conv.forward(x.clone());
        // Reference: out channels 0..3 read inputs 0..2, 3..6 read 2..4.
        let w = conv.weight.val().reshape([6, 2]);
        let lo = x
            .clone()
            .narrow(2, 0, 2)
            .matmul(w.clone().narrow(0, 0, 3).transpose().unsqueeze());
        let hi = x
            .narrow(2, 2, 2)
            .matmul(w.narrow(0, 3, 3).transpose().unsqueeze());
        let expected = Tensor::cat(vec![lo, hi], 2) + conv.bias.val().unsqueeze();
        y.into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::default());
        let _ = TensorData::from([0.0f32]);
    }

    #[test]
    fn merged_experts_equal_the_plain_formula() {
        let dev = Default::default();
        let mut router = RepAdapterRouter::<B>::new(6, 4, 2, 0.7, 3.0, 0.0, &dev);
        // Non-zero up-projections and biases, so both experts contribute.
        let rand = |shape: [usize; 3]| {
            Param::from_tensor(Tensor::<B, 3>::random(shape, Distribution::Default, &dev))
        };
        router.conv_b.weight = rand([6, 2, 1]);
        router.conv_d.weight = rand([6, 2, 1]);
        router.conv_b.bias = Param::from_tensor(Tensor::random([6], Distribution::Default, &dev));
        router.conv_d.bias = Param::from_tensor(Tensor::random([6], Distribution::Default, &dev));
        let a = Tensor::<B, 3>::random([2, 3, 4], Distribution::Default, &dev);
        let x0 = Tensor::<B, 3>::random([2, 1, 6], Distribution::Default, &dev);
        let w = router.route(x0).expand([2, 3, 2]);
        let merged = router.experts_merged(a.clone(), w.clone());
        let plain = router.experts(a, w);
        assert!(plain.clone().abs().max().into_scalar() > 0.1);
        merged
            .into_data()
            .assert_approx_eq::<f32>(&plain.into_data(), Tolerance::default());
    }
}
