//! Scaled dot-product attention written as two batched matmuls around a softmax, as the
//! original LaVIN computes it.
//!
//! Burn 0.21's `module::attention` on the flex CPU backend runs the `(batch, head)` pairs one
//! after another with single-threaded gemms; as batched matmuls they spread over all cores
//! (`small`, batch 8 on 2 cores: image encoding 696 -> 624 ms, prefill 1125 -> 1255 tok/s), and
//! under autodiff Burn decomposes `attention` into these same ops anyway. A single query row
//! (a decode step) stays with Burn's kernel, which is faster there (93 vs 85 tok/s at batch 1).

use burn::tensor::module::attention;
use burn::tensor::{backend::Backend, Bool, DType, Tensor};

use crate::kernels;

/// `softmax(q kᵀ / √d, masked) v` for `q [B, H, L, d]`, `k, v [B, H, Lk, d]`; `mask [L, Lk]`
/// (the same for every item and head) is true where a query must not see a key.
pub fn sdpa<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 2, Bool>>,
) -> Tensor<B, 4> {
    let [b, h, l, d] = q.dims();
    let lk = k.dims()[2];
    let dtype = v.dtype();
    let scale = (d as f64).powf(-0.5);
    // The mask as an additive bias (0 or -inf) inside the softmax pass: `mask_fill` with an
    // expanded mask copies the broadcast mask element by element in every layer.
    let bias =
        |m: Tensor<B, 2, Bool>| Tensor::zeros([l, lk], &m.device()).mask_fill(m, f32::NEG_INFINITY);
    if l == 1 {
        let mask = mask.map(|m| m.reshape([1, 1, l, lk]).expand([b, h, l, lk]));
        let wide = |t: Tensor<B, 4>| t.cast(DType::F32);
        let out = attention(wide(q), wide(k), wide(v), mask, None, Default::default());
        return out.cast(dtype);
    }
    if dtype == DType::F32 {
        let scores = q.matmul(k.swap_dims(2, 3));
        return kernels::softmax_scaled(scores, scale, mask.map(bias)).matmul(v);
    }
    // Half q, k, v: scores in f32 (never rounded to half), probabilities rounded to half for
    // the product with v, as flash attention does. Training keeps only the half tensors.
    let scores = kernels::matmul_wide(q, k.swap_dims(2, 3));
    kernels::softmax_scaled_as(scores, scale, mask.map(bias), dtype).matmul(v)
}
