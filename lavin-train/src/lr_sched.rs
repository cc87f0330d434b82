//! LaVIN's learning-rate schedule (`util/lr_sched.py` + `engine.py` of the original).
//!
//! * Base lr: `lr = blr * eff_batch / 256` unless an absolute lr is given, with
//!   `eff_batch = batch_size * accum_iter * world_size`.
//! * The schedule is evaluated at a *fractional epoch* `data_iter_step / steps_per_epoch + epoch`,
//!   and only on micro-batches where `data_iter_step % accum_iter == 0` (the value then holds for
//!   the whole accumulation window, i.e. for the optimizer step that ends it).
//! * `epoch < warmup`: `lr * epoch / warmup` (so the very first step has lr 0);
//!   otherwise half-cosine `min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * (epoch - warmup) / (epochs - warmup)))`.

use serde::{Deserialize, Serialize};

/// Resolve the absolute learning rate: `lr` if given, else `blr * eff_batch / 256`.
pub fn resolve_lr(lr: Option<f64>, blr: f64, eff_batch: usize) -> f64 {
    match lr {
        Some(lr) => lr,
        None => blr * eff_batch as f64 / 256.0,
    }
}

/// The warmup + half-cosine schedule, exactly as the original's `adjust_learning_rate`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak (absolute) learning rate.
    pub lr: f64,
    /// Floor of the cosine.
    pub min_lr: f64,
    /// Total number of epochs.
    pub epochs: f64,
    /// Linear warmup length, in (fractional) epochs.
    pub warmup_epochs: f64,
}

impl LrSchedule {
    /// Learning rate at a fractional epoch.
    pub fn lr_at(&self, epoch: f64) -> f64 {
        if epoch < self.warmup_epochs {
            self.lr * epoch / self.warmup_epochs
        } else {
            let span = self.epochs - self.warmup_epochs;
            if span <= 0.0 {
                return self.lr;
            }
            self.min_lr
                + (self.lr - self.min_lr)
                    * 0.5
                    * (1.0 + (std::f64::consts::PI * (epoch - self.warmup_epochs) / span).cos())
        }
    }

    /// Fractional epoch of micro-batch `data_iter_step` (0-based within the epoch).
    pub fn fractional_epoch(epoch: usize, data_iter_step: usize, steps_per_epoch: usize) -> f64 {
        data_iter_step as f64 / steps_per_epoch.max(1) as f64 + epoch as f64
    }

    /// Whether the original re-evaluates the schedule on this micro-batch.
    pub fn updates_at(data_iter_step: usize, accum_iter: usize) -> bool {
        data_iter_step % accum_iter.max(1) == 0
    }

    /// The lr in force for micro-batch `data_iter_step` of `epoch`: the value computed at the
    /// start of its accumulation window.
    pub fn lr_for_micro_batch(
        &self,
        epoch: usize,
        data_iter_step: usize,
        steps_per_epoch: usize,
        accum_iter: usize,
    ) -> f64 {
        let accum = accum_iter.max(1);
        let window_start = data_iter_step - data_iter_step % accum;
        self.lr_at(Self::fractional_epoch(epoch, window_start, steps_per_epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> serde_json::Value {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/parity/tiny-a/optim.json"
        );
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn matches_optim_json_schedule() {
        let j = fixture();
        let s = &j["lr_schedule"];
        let lr = resolve_lr(
            None,
            s["blr"].as_f64().unwrap(),
            s["eff_batch_size"].as_u64().unwrap() as usize,
        );
        assert!((lr - s["lr"].as_f64().unwrap()).abs() <= 1e-12 * lr);
        let sched = LrSchedule {
            lr,
            min_lr: s["min_lr"].as_f64().unwrap(),
            epochs: s["epochs"].as_f64().unwrap(),
            warmup_epochs: s["warmup_epochs"].as_f64().unwrap(),
        };
        let mut worst = 0.0f64;
        for v in s["values"].as_array().unwrap() {
            let e = v["epoch"].as_f64().unwrap();
            let want = v["lr"].as_f64().unwrap();
            let got = sched.lr_at(e);
            let rel = if want == 0.0 {
                got.abs()
            } else {
                ((got - want) / want).abs()
            };
            worst = worst.max(rel);
            // group with lr_scale 0.5
            let g = v["group_lr"].as_array().unwrap();
            let want_half = g[1].as_f64().unwrap();
            let got_half = got * 0.5;
            let rel_half = if want_half == 0.0 {
                got_half.abs()
            } else {
                ((got_half - want_half) / want_half).abs()
            };
            worst = worst.max(rel_half);
        }
        eprintln!("lr schedule max relative error: {worst:e}");
        assert!(worst <= 1e-12, "worst relative error {worst}");
    }

    #[test]
    fn lr_held_over_accumulation_window() {
        let s = LrSchedule {
            lr: 1.0,
            min_lr: 0.0,
            epochs: 4.0,
            warmup_epochs: 1.0,
        };
        // 10 micro-batches per epoch, accum 2: micro-batch 3 uses the value at step 2.
        assert_eq!(s.lr_for_micro_batch(0, 3, 10, 2), s.lr_at(0.2));
        assert_eq!(s.lr_for_micro_batch(0, 0, 10, 2), 0.0);
        assert!(LrSchedule::updates_at(4, 2));
        assert!(!LrSchedule::updates_at(5, 2));
    }

    #[test]
    fn warmup_equal_to_epochs_does_not_divide_by_zero() {
        let s = LrSchedule {
            lr: 1.0,
            min_lr: 0.0,
            epochs: 2.0,
            warmup_epochs: 2.0,
        };
        assert_eq!(s.lr_at(2.0), 1.0);
    }
}
