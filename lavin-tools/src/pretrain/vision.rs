//! Stage 1: the tiny CLIP vision tower, trained with supervised multi-task heads (colour,
//! shape, count, position) on the class token after every 4th block — exactly the features
//! LaVIN feeds the LLaMA. The heads are discarded; the tower's visual adapters stay at their
//! identity initialisation (frozen here) so the exported weights are a plain CLIP.

use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use lavin_model::clip::VisionTower;
use lavin_model::LavinConfig;

use super::data::{PretrainData, HEADS};
use super::util::{scheduled_step, set_trainable, Rng};
use super::PretrainError;
use lavin_train::optim::{AdamW, AdamWConfig};

/// The tower plus one linear head per feature token (all label groups concatenated).
#[derive(Module, Debug)]
pub struct VisionPretrainer<B: Backend> {
    pub tower: VisionTower<B>,
    pub heads: Vec<Linear<B>>,
}

/// How stage 1 went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VisionReport {
    pub epochs: usize,
    pub steps: usize,
    pub initial_loss: f64,
    pub final_loss: f64,
    /// Train accuracy per label group (colour, shape, count, position) on the last feature
    /// token, measured in the last epoch.
    pub train_accuracy: [f64; 4],
    pub seconds: f64,
}

impl VisionReport {
    /// The tower came from an earlier run (`--init-from`, `--clip-epochs 0`).
    pub fn reused() -> Self {
        Self {
            epochs: 0,
            steps: 0,
            initial_loss: f64::NAN,
            final_loss: f64::NAN,
            train_accuracy: [f64::NAN; 4],
            seconds: 0.0,
        }
    }
}

const BATCH: usize = 32;
const LR: f64 = 3e-3;

fn n_classes() -> usize {
    HEADS.iter().map(|h| h.1).sum()
}

impl<B: Backend> VisionPretrainer<B> {
    /// Summed cross entropy over features and label groups, and the last feature's
    /// per-group correct counts.
    fn loss(&self, images: Tensor<B, 4>, labels: &[[usize; 4]]) -> (Tensor<B, 1>, [usize; 4]) {
        let device = images.device();
        let n = labels.len();
        let (feats, _) = self.tower.forward(images); // [N, F, W]
        let f_count = feats.dims()[1];
        let ce = CrossEntropyLossConfig::new().init(&device);
        let mut total = Tensor::<B, 1>::zeros([1], &device);
        let mut correct = [0usize; 4];
        for (f, head) in self.heads.iter().enumerate().take(f_count) {
            let logits = head.forward(feats.clone().narrow(1, f, 1).squeeze_dim::<2>(1));
            let mut off = 0;
            for (g, (_, k)) in HEADS.iter().enumerate() {
                let lg = logits.clone().narrow(1, off, *k);
                let t: Vec<i64> = labels.iter().map(|l| l[g] as i64).collect();
                let t = Tensor::<B, 1, Int>::from_data(TensorData::new(t, [n]), &device);
                total = total + ce.forward(lg.clone(), t.clone());
                if f + 1 == f_count {
                    let hit: i64 = lg
                        .argmax(1)
                        .squeeze_dim::<1>(1)
                        .equal(t)
                        .int()
                        .sum()
                        .into_scalar()
                        .elem();
                    correct[g] = hit as usize;
                }
                off += k;
            }
        }
        (total / (f_count * HEADS.len()) as f64, correct)
    }
}

/// Random flips quadruple the 599 train pictures (a ViT from scratch is data-hungry): colour,
/// shape and count do not change; the position label follows the flip.
fn flipped(px: &[f32], hw: usize, h: bool, v: bool) -> Vec<f32> {
    let mut out = vec![0f32; px.len()];
    for c in 0..3 {
        for y in 0..hw {
            let sy = if v { hw - 1 - y } else { y };
            for x in 0..hw {
                let sx = if h { hw - 1 - x } else { x };
                out[(c * hw + y) * hw + x] = px[(c * hw + sy) * hw + sx];
            }
        }
    }
    out
}

/// Position classes: 0 centred, 1 top, 2 bottom, 3 left, 4 right.
fn flip_position(p: usize, h: bool, v: bool) -> usize {
    match p {
        1 | 2 if v => 3 - p,
        3 | 4 if h => 7 - p,
        _ => p,
    }
}

/// Trains the tower of `config` on the train images; returns the tower (inner backend values
/// kept on the autodiff backend) and a report.
pub fn train_vision<B: AutodiffBackend>(
    config: &LavinConfig,
    data: &PretrainData,
    epochs: usize,
    seed: u64,
    device: &B::Device,
) -> Result<(VisionTower<B>, VisionReport), PretrainError> {
    let t0 = Instant::now();
    let w = config.clip.width;
    let model = VisionPretrainer::<B> {
        tower: VisionTower::new(config, device),
        heads: (0..config.n_feats())
            .map(|_| LinearConfig::new(w, n_classes()).init(device))
            .collect(),
    };
    let trainable = |p: &str| !p.contains("adapter");
    let mut model = set_trainable(model, &trainable);
    let naming = |p: &str| trainable(p).then(|| p.to_string());
    let mut optim = AdamW::<B::InnerBackend>::new(AdamWConfig {
        weight_decay: 0.05,
        ..AdamWConfig::default()
    });
    let hw = config.clip.input_resolution;
    let n = data.images.len();
    let batch = BATCH.min(n.max(1));
    let spe = (n / batch).max(1);
    let mut rng = Rng(seed ^ 0xC11F);
    let (mut first, mut last) = (f64::NAN, f64::NAN);
    let mut acc = [0f64; 4];
    let mut steps = 0;
    for epoch in 0..epochs {
        let order = rng.permutation(n);
        let (mut hits, mut seen) = ([0usize; 4], 0usize);
        let mut ep_loss = 0.0;
        for it in 0..spe {
            let idx = &order[(it * batch).min(n)..((it + 1) * batch).min(n)];
            if idx.is_empty() {
                break;
            }
            let mut pix = Vec::with_capacity(idx.len() * 3 * hw * hw);
            let mut labels = Vec::with_capacity(idx.len());
            for &i in idx {
                let (h, v) = (rng.below(2) == 1, rng.below(2) == 1);
                let mut l = data.images[i].attributes.0;
                pix.extend(flipped(&data.images[i].pixels, hw, h, v));
                l[3] = flip_position(l[3], h, v);
                labels.push(l);
            }
            let images =
                Tensor::<B, 4>::from_data(TensorData::new(pix, [idx.len(), 3, hw, hw]), device);
            let (loss, correct) = model.loss(images, &labels);
            let v: f64 = loss.clone().into_scalar().elem();
            if first.is_nan() {
                first = v;
            }
            ep_loss += v;
            for g in 0..4 {
                hits[g] += correct[g];
            }
            seen += idx.len();
            let progress = epoch as f64 + it as f64 / spe as f64;
            let epochs_f = epochs as f64;
            model = scheduled_step(
                &mut optim, model, loss, LR, progress, 1.0, epochs_f, &naming,
            )?;
            steps += 1;
        }
        last = ep_loss / spe as f64;
        for g in 0..4 {
            acc[g] = hits[g] as f64 / seen.max(1) as f64;
        }
        eprintln!(
            "clip epoch {}/{epochs}: loss {last:.4}, train acc colour {:.3} shape {:.3} count {:.3} position {:.3} ({:.0}s)",
            epoch + 1,
            acc[0],
            acc[1],
            acc[2],
            acc[3],
            t0.elapsed().as_secs_f64()
        );
    }
    let tower = model.tower.valid();
    // Back onto the autodiff backend (frozen) for the LLaMA stage.
    let tower = VisionTower::<B>::from_inner(tower);
    Ok((
        tower,
        VisionReport {
            epochs,
            steps,
            initial_loss: first,
            final_loss: last,
            train_accuracy: acc,
            seconds: t0.elapsed().as_secs_f64(),
        },
    ))
}
