//! Data parallelism over `--devices`: one model replica per device, one worker thread per device
//! for each micro-batch, gradients averaged on the first (main) device, as PyTorch DDP.
//!
//! The pattern is burn-train's `MultiDevicesTrainStep` (a thread per device, `GradientsParams`
//! moved to the main device and summed in a `GradientsAccumulator`), with two changes that
//! matter for LaVIN: the replicas are made once and only the trainable adapters are copied to
//! them after each optimizer step (burn-train forks the whole model, 13 GB of frozen LLaMA for
//! 7B, on every step), and each shard's loss is divided by the number of shards so the step
//! uses the mean gradient (DDP's all-reduce mean; burn-train sums).
//!
//! With `world` shards of `batch_size` examples, one data-parallel micro-batch computes exactly
//! what `world` consecutive accumulation micro-batches on one device compute: the test
//! `tests/data_parallel.rs` checks this bit for bit.

use std::sync::Mutex;

use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;

use lavin_model::lavin::Lavin;

use crate::data::{BatchSource, BatchStats};
use crate::params::{assign_params, collect_params, lavin_trainable_name};

/// What one device computed for its shard of a micro-batch.
pub struct Shard {
    /// The shard's loss (mean over its target tokens).
    pub loss: f64,
    /// Gradients of `loss / divisor` on the main device; `None` when the loss is not finite.
    pub grads: Option<GradientsParams>,
    /// Examples and tokens of the shard.
    pub stats: BatchStats,
}

/// The model's replicas on the devices after the first.
pub struct DataParallel<B: AutodiffBackend> {
    devices: Vec<B::Device>,
    replicas: Vec<Lavin<B>>,
    /// Gradient checkpointing: [`Lavin::loss_and_grads_recomputed`] instead of one graph.
    recompute: bool,
}

impl<B: AutodiffBackend> DataParallel<B>
where
    Lavin<B>: AutodiffModule<B>,
{
    /// Replicate `model` (which lives on `devices[0]`) onto the other devices.
    ///
    /// # Panics
    /// If `devices` is empty.
    pub fn new(model: &Lavin<B>, devices: &[B::Device]) -> Self {
        assert!(!devices.is_empty(), "data parallelism needs a device");
        let replicas = devices[1..].iter().map(|d| model.clone().fork(d)).collect();
        Self {
            devices: devices.to_vec(),
            replicas,
            recompute: false,
        }
    }

    /// Recompute each ViT and LLaMA block in backward (gradient checkpointing) when `on`.
    pub fn with_recompute(mut self, on: bool) -> Self {
        self.recompute = on;
        self
    }

    /// Number of devices (shards per micro-batch).
    pub fn world(&self) -> usize {
        self.devices.len()
    }

    /// The device that holds the main model, the gradients and the optimizer state.
    pub fn main_device(&self) -> &B::Device {
        &self.devices[0]
    }

    /// Copy the trainable parameters of `model` to every replica (after an optimizer step).
    /// Only the adapters travel (a few MB); the frozen base stays where it was placed.
    pub fn sync(&mut self, model: &Lavin<B>) {
        if self.replicas.is_empty() {
            return;
        }
        let params = collect_params(model, &lavin_trainable_name);
        let here = std::path::Path::new("<main replica>");
        self.replicas = std::mem::take(&mut self.replicas)
            .into_iter()
            .map(|r| {
                assign_params(r, &params, &lavin_trainable_name, here)
                    .expect("replicas have the main model's parameters")
            })
            .collect();
    }

    /// Forward and backward of one micro-batch: `indices` is cut into `world` equal shards, shard
    /// `k` runs on device `k` in its own thread with the backend RNG seeded from `seed` and `k`,
    /// and its loss is divided by `divisor` before backward.
    pub fn micro_batch<S>(
        &self,
        model: &Lavin<B>,
        data: &S,
        indices: &[usize],
        seed: u64,
        divisor: f64,
    ) -> Result<Vec<Shard>, String>
    where
        S: BatchSource<B> + Sync,
    {
        let world = self.world();
        let per = indices.len() / world;
        // Seeding and the forward pass hold this lock: with a process-global RNG (the CPU
        // backends) each shard's dropout masks then come from its own seed, whatever the thread
        // timing. Backward, the bulk of the work, runs in parallel.
        let launch = Mutex::new(());
        let launch = &launch;
        let run = |k: usize, m: Lavin<B>, dev: B::Device| -> Result<Shard, String> {
            let (batch, stats) = data.batch(&indices[k * per..(k + 1) * per], &dev)?;
            if self.recompute {
                // Seeds and serialises its own RNG use (`lavin_model::recompute`).
                let out = m.loss_and_grads_recomputed(batch, divisor, shard_seed(seed, k));
                return Ok(Shard {
                    loss: out.loss,
                    grads: out.grads,
                    stats,
                });
            }
            let loss = {
                let _guard = launch.lock().unwrap_or_else(|e| e.into_inner());
                B::seed(&dev, shard_seed(seed, k));
                m.loss(batch)
            };
            let value: f64 = loss.clone().into_scalar().elem();
            let grads = value
                .is_finite()
                .then(|| GradientsParams::from_grads(loss.div_scalar(divisor).backward(), &m));
            Ok(Shard {
                loss: value,
                grads,
                stats,
            })
        };
        let mut shards = if world == 1 {
            vec![run(0, model.clone(), self.devices[0].clone())?]
        } else {
            let models = std::iter::once(model).chain(&self.replicas);
            std::thread::scope(|s| {
                let workers: Vec<_> = models
                    .zip(&self.devices)
                    .enumerate()
                    .map(|(k, (m, dev))| {
                        let (m, dev) = (m.clone(), dev.clone());
                        s.spawn(move || run(k, m, dev))
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("data-parallel worker panicked"))
                    .collect::<Result<Vec<_>, String>>()
            })?
        };
        for (k, sh) in shards.iter_mut().enumerate().skip(1) {
            if let Some(g) = sh.grads.take() {
                sh.grads = Some(g.to_device(self.main_device(), &self.replicas[k - 1]));
            }
        }
        Ok(shards)
    }
}

/// The RNG seed of shard `k`: shard 0 keeps the micro-batch seed (a one-device run is unchanged).
fn shard_seed(seed: u64, k: usize) -> u64 {
    seed.wrapping_add((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
