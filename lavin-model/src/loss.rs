//! Mean cross entropy over targets != 0 (PyTorch's `ignore_index=0`).
//!
//! Burn's `CrossEntropyLoss::with_pad_tokens` zeroes padded targets but still divides by all
//! of them, which is not the original's loss.

use burn::tensor::{backend::Backend, Int, Tensor};

use crate::kernels;

/// `logits [B, L, V]`, `targets [B, L]` -> `[1]`. NaN when every target is 0, like PyTorch.
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let [b, l, v] = logits.dims();
    let nll = kernels::cross_entropy(logits.reshape([b * l, v]), targets.clone().reshape([b * l]));
    let keep = targets.not_equal_elem(0).float();
    let count = keep.clone().sum();
    (nll.reshape([b, l]) * keep).sum() / count
}
