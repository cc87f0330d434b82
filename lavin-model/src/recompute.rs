//! Gradient checkpointing per LLaMA block, as `torch.utils.checkpoint` does it: the forward
//! keeps only each block's input, and backward re-runs one block at a time with a graph and
//! backpropagates through it.
//!
//! ```text
//!   forward   prepare (graph kept) ─h0─▶ block 0 ─h1─▶ … ─hL─▶ head + loss      (blocks: no graph)
//!   backward  loss ─dhL─▶ block L-1 again ─dh─▶ … ─▶ block 0 again ─dh0─▶ prepare
//! ```
//!
//! Why separate backward passes rather than one custom autodiff op that recomputes inside its
//! backward: Burn 0.21 runs an op's backward while holding its graph's lock, and a nested
//! `backward()` then locks every graph in its clean-up (a deadlock). Passes of their own, each
//! seeded with the gradient of the next (`sum(out * dh)`), need only the public API and give
//! the same gradients (`tests/recompute.rs`).
//!
//! Memory: Burn's `BalancedCheckpointing` recomputes element-wise ops only and keeps every
//! matmul's inputs, about 300 MB per block for 7B at batch 4 x 512. Here a block keeps its input
//! (33.5 MB) and one block's graph exists at a time. The price is one more forward of the
//! blocks.
//!
//! Dropout: a block re-seeds the backend RNG from `(seed, block)` before its forward and before
//! its recomputation, so both draw the same masks. (They differ from an un-checkpointed run with
//! the same seed; runs stay reproducible and resumable, the trainer seeds each micro-batch.)

use std::sync::Mutex;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use crate::lavin::{Lavin, LavinBatch};

/// Seeding the backend RNG and drawing from it, held together: the CPU backends' RNG is one per
/// process, and data-parallel shards run in threads.
static RNG: Mutex<()> = Mutex::new(());

fn seeded<B: AutodiffBackend, T>(device: &B::Device, seed: u64, f: impl FnOnce() -> T) -> T {
    let _guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    B::seed(device, seed);
    f()
}

/// The RNG seed of block `block`'s dropout in a step seeded with `seed` (SplitMix64).
pub fn block_seed(seed: u64, block: usize) -> u64 {
    let mut z = seed ^ (block as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One micro-batch's loss and gradients.
pub struct LossAndGrads {
    /// The loss (mean over target tokens, not divided).
    pub loss: f64,
    /// Gradients of `loss / divisor` for the trainable parameters; `None` when the loss is not
    /// finite (nothing is backpropagated).
    pub grads: Option<GradientsParams>,
}

impl<B: AutodiffBackend> Lavin<B> {
    /// [`Lavin::loss`] and the gradients of `loss / divisor`, with the LLaMA blocks recomputed
    /// in backward (see the module docs). The backend RNG is seeded with `seed` for the vision
    /// tower and with [`block_seed`] for each block.
    pub fn loss_and_grads_recomputed(
        &self,
        batch: LavinBatch<B>,
        divisor: f64,
        seed: u64,
    ) -> LossAndGrads {
        let device = batch.tokens.device();
        let layers = &self.llama.layers;
        let p = seeded::<B, _>(&device, seed, || self.prepare(batch));
        let input = self.block_input(p.mask);

        // Forward through the blocks with untracked parameters: no graph, only the inputs kept.
        let mut inputs = Vec::with_capacity(layers.len());
        let mut h = detached(p.h0.clone());
        for (i, block) in layers.iter().enumerate() {
            let block = block.clone().no_grad();
            let out = seeded::<B, _>(&device, block_seed(seed, i), || {
                block.forward(h.clone(), &input, None, None).0
            });
            inputs.push(std::mem::replace(&mut h, out));
        }

        let top = h.require_grad();
        let loss = self.loss_from_hidden(top.clone(), p.targets);
        let value: f64 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return LossAndGrads {
                loss: value,
                grads: None,
            };
        }
        let mut grads = loss.div_scalar(divisor).backward();
        let mut total = GradientsParams::from_module(&mut grads, self);
        let mut dh = top
            .grad(&grads)
            .expect("the loss depends on the last hidden states");

        for (i, block) in layers.iter().enumerate().rev() {
            let x = detached(inputs.pop().expect("one input per block")).require_grad();
            let out = seeded::<B, _>(&device, block_seed(seed, i), || {
                block.forward(x.clone(), &input, None, None).0
            });
            let mut grads = (out * Tensor::from_inner(dh)).sum().backward();
            dh = x
                .grad(&grads)
                .expect("a block's output depends on its input");
            merge(
                &mut total,
                GradientsParams::from_module(&mut grads, block),
                block,
            );
        }

        // The vision tower's adapters, the projection and the modality token, if any trains.
        if self.prepare_trains() {
            let mut grads = (p.h0 * Tensor::from_inner(dh)).sum().backward();
            merge(
                &mut total,
                GradientsParams::from_module(&mut grads, self),
                self,
            );
        }
        LossAndGrads {
            loss: value,
            grads: Some(total),
        }
    }

    /// Whether [`Lavin::prepare`]'s output depends on a trainable parameter (always in LaVIN:
    /// the modality token and the projection train).
    fn prepare_trains(&self) -> bool {
        let mut any = AnyRequiresGrad(false);
        self.clip.visit(&mut any);
        self.adapter_proj.visit(&mut any);
        self.adapter_modality_embedding.visit(&mut any);
        self.llama.tok_embeddings.visit(&mut any);
        any.0
    }
}

/// The same values without a graph.
fn detached<B: AutodiffBackend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    Tensor::from_inner(x.inner())
}

struct AnyRequiresGrad(bool);

impl<B: AutodiffBackend> ModuleVisitor<B> for AnyRequiresGrad {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0 |= param.is_require_grad();
    }
}

/// Moves the gradients of `module`'s parameters from `from` into `into`, adding where `into`
/// already has one.
fn merge<B: AutodiffBackend, M: AutodiffModule<B>>(
    into: &mut GradientsParams,
    from: GradientsParams,
    module: &M,
) {
    struct Merge<'a> {
        into: &'a mut GradientsParams,
        from: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Merge<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let Some(g) = self.from.remove::<B::InnerBackend, D>(param.id) else {
                return;
            };
            let sum = match self.into.remove::<B::InnerBackend, D>(param.id) {
                Some(old) => old + g,
                None => g,
            };
            self.into.register(param.id, sum);
        }
    }
    if !from.is_empty() {
        module.visit(&mut Merge { into, from });
    }
}

#[cfg(test)]
mod tests;
