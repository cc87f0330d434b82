//! Gradient checkpointing per transformer block (LLaMA and ViT), as `torch.utils.checkpoint`
//! does it: the forward keeps only each block's input, and backward re-runs one block at a time
//! with a graph and backpropagates through it.
//!
//! ```text
//!   forward   ViT blocks ─feats─▶ projection, assembly ─h0─▶ LLaMA blocks ─hL─▶ head + loss
//!             (blocks without a graph; projection and assembly keep theirs: they are small)
//!   backward  loss ─dhL─▶ LLaMA block L-1 again ─▶ … ─▶ block 0 again ─dh0─▶ assembly,
//!             projection ─dfeats─▶ ViT blocks again, last to first
//! ```
//!
//! Why separate backward passes rather than one custom autodiff op that recomputes inside its
//! backward: Burn 0.21 runs an op's backward while holding its graph's lock, and a nested
//! `backward()` then locks every graph in its clean-up (a deadlock). Passes of their own, each
//! seeded with the gradient of the next (`sum(out * dh)`), need only the public API and give
//! the same gradients (`lavin-model/tests/recompute.rs`).
//!
//! Memory: Burn's `BalancedCheckpointing` recomputes element-wise ops only and keeps every
//! matmul's inputs, about 300 MB per LLaMA block for 7B at batch 4 x 512 (and ~120 MB per ViT-L
//! block). Here a block keeps its input (33.5 MB; 4 MB in the ViT) and one block's graph exists
//! at a time. The price is one more forward of the blocks. ViT blocks after the last feature
//! (none for ViT-L) are skipped: they do not reach the loss.
//!
//! Dropout: a block re-seeds the backend RNG from `(seed, block)` ([`block_seed`],
//! [`vision_seed`]) before its forward and before its recomputation, so both draw the same
//! masks. (They differ from an un-checkpointed run with the same seed; runs stay reproducible
//! and resumable, the trainer seeds each micro-batch.) Burn's CPU and CubeCL backends keep one
//! host-side RNG per process, which the seed resets.

use std::sync::Mutex;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use crate::clip::is_feature_block;
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

/// The RNG seed of ViT block `block`'s dropout in a step seeded with `seed`.
pub fn vision_seed(seed: u64, block: usize) -> u64 {
    block_seed(seed ^ 0x5649_5349_4F4E, block)
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
    /// [`Lavin::loss`] and the gradients of `loss / divisor`, with the ViT and LLaMA blocks
    /// recomputed in backward (see the module docs). The backend RNG is re-seeded before each
    /// block from `seed` ([`vision_seed`], [`block_seed`]).
    pub fn loss_and_grads_recomputed(
        &self,
        batch: LavinBatch<B>,
        divisor: f64,
        seed: u64,
    ) -> LossAndGrads {
        let device = batch.tokens.device();
        let layers = &self.llama.layers;
        let vision = self.vision_forward(batch.images, seed);
        let p = self.prepare_from_feats(
            batch.tokens,
            batch.labels,
            batch.indicators,
            vision.feats.clone(),
        );
        let input = self.block_input(p.mask);

        // The LLaMA blocks with untracked parameters: no graph, only the inputs kept.
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

        // The projection and the modality token, then the vision tower, if any of them trains.
        if self.prepare_trains() {
            let mut grads = (p.h0 * Tensor::from_inner(dh)).sum().backward();
            let dfeats = vision.feats.grad(&grads);
            merge(
                &mut total,
                GradientsParams::from_module(&mut grads, self),
                self,
            );
            if let Some(dfeats) = dfeats {
                self.vision_backward(vision, dfeats, seed, &mut total);
            }
        }
        LossAndGrads {
            loss: value,
            grads: Some(total),
        }
    }

    /// The vision tower's blocks without a graph (those up to the last feature), keeping their
    /// inputs. The stem keeps its graph if it trains.
    fn vision_forward(&self, images: Tensor<B, 4>, seed: u64) -> VisionPass<B> {
        let tower = &self.clip;
        let device = images.device();
        let mode = tower.router_mode();
        let used = (0..tower.resblocks.len())
            .rfind(|&i| is_feature_block(i))
            .map_or(0, |i| i + 1);
        let x0 = tower.stem(images);
        let mut x = detached(x0.clone());
        let (mut inputs, mut feats) = (Vec::with_capacity(used), Vec::new());
        for (i, block) in tower.resblocks[..used].iter().enumerate() {
            let block = block.clone().no_grad();
            let out = seeded::<B, _>(&device, vision_seed(seed, i), || {
                block.forward(x.clone(), mode).0
            });
            inputs.push(std::mem::replace(&mut x, out));
            if is_feature_block(i) {
                feats.push(x.clone().narrow(1, 0, 1)); // class token [N, 1, W]
            }
        }
        let feats = Tensor::cat(feats, 1);
        let feats = if requires_grad(tower) {
            feats.require_grad()
        } else {
            feats
        };
        VisionPass { x0, inputs, feats }
    }

    /// Backward through the vision tower from the features' gradient `dfeats [N, F, W]`: each
    /// feature's gradient joins the residual stream's at its block's class token.
    fn vision_backward(
        &self,
        mut pass: VisionPass<B>,
        dfeats: Tensor<B::InnerBackend, 3>,
        seed: u64,
        total: &mut GradientsParams,
    ) {
        let tower = &self.clip;
        let device = pass.x0.device();
        let mode = tower.router_mode();
        let [n, t, w] = pass.x0.dims();
        let mut dx = Tensor::<B::InnerBackend, 3>::zeros([n, t, w], &device);
        let mut feature = dfeats.dims()[1];
        for i in (0..pass.inputs.len()).rev() {
            if is_feature_block(i) {
                feature -= 1;
                let row = dx.clone().narrow(1, 0, 1) + dfeats.clone().narrow(1, feature, 1);
                dx = dx.slice_assign([0..n, 0..1, 0..w], row);
            }
            let block = &tower.resblocks[i];
            let x = detached(pass.inputs.pop().expect("one input per block")).require_grad();
            let out = seeded::<B, _>(&device, vision_seed(seed, i), || {
                block.forward(x.clone(), mode).0
            });
            let mut grads = (out * Tensor::from_inner(dx)).sum().backward();
            dx = x
                .grad(&grads)
                .expect("a block's output depends on its input");
            merge(
                total,
                GradientsParams::from_module(&mut grads, block),
                block,
            );
        }
        let stem_trains = requires_grad(&tower.conv1)
            || requires_grad(&tower.class_embedding)
            || requires_grad(&tower.positional_embedding)
            || requires_grad(&tower.ln_pre);
        if stem_trains {
            let mut grads = (pass.x0 * Tensor::from_inner(dx)).sum().backward();
            merge(
                total,
                GradientsParams::from_module(&mut grads, tower),
                tower,
            );
        }
    }

    /// Whether [`Lavin::prepare`]'s output depends on a trainable parameter (always in LaVIN:
    /// the modality token and the projection train).
    fn prepare_trains(&self) -> bool {
        requires_grad(&self.clip)
            || requires_grad(&self.adapter_proj)
            || requires_grad(&self.adapter_modality_embedding)
            || requires_grad(&self.llama.tok_embeddings)
    }
}

/// The vision tower's forward without graphs ([`Lavin::vision_forward`]).
struct VisionPass<B: AutodiffBackend> {
    /// The stem's output (with its graph if the stem trains).
    x0: Tensor<B, 3>,
    /// The blocks' inputs, untracked.
    inputs: Vec<Tensor<B, 3>>,
    /// `[N, F, W]`: the features, a leaf that requires grad when the tower trains.
    feats: Tensor<B, 3>,
}

/// Whether any parameter of `module` requires grad.
fn requires_grad<B: AutodiffBackend, M: Module<B>>(module: &M) -> bool {
    let mut any = AnyRequiresGrad(false);
    module.visit(&mut any);
    any.0
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
