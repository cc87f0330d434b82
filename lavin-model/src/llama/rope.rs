//! Rotary position embedding in Meta's layout: features `2i` and `2i+1` of each head rotate
//! together by `pos * theta^(-2i/d)`.
//!
//! Written out as `x * cos + swap_pairs(x) * sin` over the contiguous `[B, L, heads * d]`
//! projection, before the heads are split ([`kernels::rope`]). Burn's `RotaryEncoding` does the rotation as a
//! batched `[.., 2] x [2, 4]` matmul on the head-split (transposed) tensor, which on the CPU
//! backends costs more than the attention it feeds.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::kernels;

/// Precomputed `cos` and signed `sin` tables, `[max_len, head_dim]`, each value repeated for
/// both features of its pair.
#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    /// `-sin` on even features, `+sin` on odd ones (the pair swap supplies the partner).
    sin: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    /// Tables for positions `0..max_len`, computed as the original's `precompute_freqs_cis`
    /// (frequencies and angles in f32).
    pub fn new(head_dim: usize, max_len: usize, theta: f64, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(max_len * head_dim);
        let mut sin = Vec::with_capacity(max_len * head_dim);
        for p in 0..max_len {
            for f in &inv_freq {
                let angle = (p as f32 * f) as f64;
                let (s, c) = (angle.sin() as f32, angle.cos() as f32);
                cos.extend([c, c]);
                sin.extend([-s, s]);
            }
        }
        let table = |v: Vec<f32>| {
            Tensor::<B, 2>::from_data(TensorData::new(v, [max_len, head_dim]), device)
        };
        Self {
            cos: table(cos),
            sin: table(sin),
        }
    }

    /// Rotate `x [B, L, heads * head_dim]` (heads not yet split) at positions `pos..pos+L`.
    pub fn apply(&self, x: Tensor<B, 3>, pos: usize) -> Tensor<B, 3> {
        let l = x.dims()[1];
        let rows = |t: &Tensor<B, 2>| t.clone().narrow(0, pos, l);
        kernels::rope(x, rows(&self.cos), rows(&self.sin))
    }
}
