//! SwiGLU feed-forward network: `w2(silu(w1 x) * w3 x)`.

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{backend::Backend, Tensor};

use super::frozen_linear::{BaseFormat, FrozenLinear};
use crate::kernels;
use crate::quant::QuantError;

#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub w1: FrozenLinear<B>,
    pub w2: FrozenLinear<B>,
    pub w3: FrozenLinear<B>,
}

impl<B: Backend> FeedForward<B> {
    pub fn new(dim: usize, hidden: usize, device: &B::Device) -> Self {
        let lin = |i, o| FrozenLinear::Dense(LinearConfig::new(i, o).with_bias(false).init(device));
        Self {
            w1: lin(dim, hidden),
            w2: lin(hidden, dim),
            w3: lin(dim, hidden),
        }
    }

    /// Stores w1, w2, w3 as `format` says (see [`FrozenLinear::convert`]).
    pub fn convert(self, format: BaseFormat) -> Result<Self, QuantError> {
        Ok(Self {
            w1: self.w1.convert(format)?,
            w2: self.w2.convert(format)?,
            w3: self.w3.convert(format)?,
        })
    }

    /// `[B, L, C] -> [B, L, C]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        // w1 x and w3 x stay in the weights' dtype up to the gate, which widens them: with a
        // half base, training keeps them half (the gate's backward reads both), losing nothing
        // (they are half products).
        let dtype = x.dtype();
        self.w2.forward(kernels::silu_gate_widening(
            self.w1.forward_in_weight_dtype(x.clone()),
            self.w3.forward_in_weight_dtype(x),
            dtype,
        ))
    }
}
