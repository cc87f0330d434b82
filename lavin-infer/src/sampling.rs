//! Next-token selection on the device: greedy, temperature, top-p (nucleus) and top-k, seeded.
//!
//! The sampler works on a logits tensor `[B, V]` where it lives (CPU or GPU) and brings back only
//! the `B` chosen ids. Sampling follows the original LaVIN `sample_top_p`:
//! `probs = softmax(logits / T)`, sort descending, `cumsum`, zero every entry whose
//! `cumsum - prob > top_p`, renormalise, draw one index from the remaining distribution.
//! The draw is an inverse-CDF lookup with one uniform number per row taken from a seeded
//! [`StdRng`], so a run with the same seed gives the same tokens on the same backend
//! (the original's `torch.multinomial` stream cannot be reproduced bit for bit).

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    /// Argmax of the logits.
    Greedy,
    /// Sample from `softmax(logits / temperature)` restricted by `top_p` (and `top_k` when > 0).
    Sample {
        /// Sampling temperature (> 0).
        temperature: f32,
        /// Nucleus threshold in `[0, 1]`; `1.0` keeps everything.
        top_p: f32,
        /// Keep only the `top_k` most likely tokens; `0` disables the cut.
        top_k: usize,
    },
}

impl Decoding {
    /// The original's rule: a temperature of 0 (or less) means greedy, otherwise top-p sampling.
    pub fn from_params(temperature: f32, top_p: f32, top_k: usize) -> Self {
        if temperature <= 0.0 {
            Decoding::Greedy
        } else {
            Decoding::Sample {
                temperature,
                top_p,
                top_k,
            }
        }
    }
}

/// Errors for sampling settings that make no sense.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingError {
    /// `top_p` outside `[0, 1]` or not a number.
    #[error("top-p must be within [0, 1], got {0}")]
    TopP(f32),
    /// A temperature that is not a finite number.
    #[error("generation temperature must be a finite number >= 0, got {0}")]
    Temperature(f32),
}

/// A seeded next-token sampler. Keep one per generation run: its random stream advances with
/// every sampled step.
#[derive(Debug, Clone)]
pub struct Sampler {
    decoding: Decoding,
    rng: StdRng,
}

impl Sampler {
    /// A sampler for `decoding`, its random stream seeded with `seed`.
    pub fn new(decoding: Decoding, seed: u64) -> Result<Self, SamplingError> {
        if let Decoding::Sample {
            temperature, top_p, ..
        } = decoding
        {
            if !temperature.is_finite() || temperature <= 0.0 {
                return Err(SamplingError::Temperature(temperature));
            }
            if !(0.0..=1.0).contains(&top_p) {
                return Err(SamplingError::TopP(top_p));
            }
        }
        Ok(Self {
            decoding,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The decoding rule of this sampler.
    pub fn decoding(&self) -> Decoding {
        self.decoding
    }

    /// Choose one token per row of `logits` `[B, V]`; returns the `B` ids.
    pub fn sample<B: Backend>(&mut self, logits: Tensor<B, 2>) -> Vec<u32> {
        let ids = match self.decoding {
            Decoding::Greedy => logits.argmax(1),
            Decoding::Sample {
                temperature,
                top_p,
                top_k,
            } => {
                let [b, _] = logits.dims();
                let uniforms: Vec<f32> = (0..b).map(|_| self.rng.random::<f32>()).collect();
                sample_top_p(logits, temperature, top_p, top_k, uniforms)
            }
        };
        ids_to_host(ids)
    }
}

/// One token per row of `logits` `[B, V]`, row `k` chosen by `samplers[k]` (its own decoding
/// rule and random stream). Only rows with `draw[k]` take a number from their stream, so a
/// row's draws do not depend on its neighbours; the others get some id the caller ignores.
/// A row gives the same id as its sampler would alone (same operations, one readback for all).
pub fn sample_rows<B: Backend>(
    logits: Tensor<B, 2>,
    samplers: &mut [Sampler],
    draw: &[bool],
) -> Vec<u32> {
    let [b, v] = logits.dims();
    assert_eq!(samplers.len(), b, "one sampler per row");
    assert_eq!(draw.len(), b, "one draw flag per row");
    let greedy: Vec<bool> = samplers
        .iter()
        .map(|s| s.decoding == Decoding::Greedy)
        .collect();
    if greedy.iter().all(|&g| g) {
        return ids_to_host(logits.argmax(1));
    }
    let device = logits.device();
    let (mut temps, mut top_ps, mut top_ks, mut uniforms) = (
        Vec::with_capacity(b),
        Vec::with_capacity(b),
        Vec::with_capacity(b),
        Vec::with_capacity(b),
    );
    for (s, &d) in samplers.iter_mut().zip(draw) {
        let (t, p, k) = match s.decoding {
            // Placeholder settings: greedy rows take the argmax below.
            Decoding::Greedy => (1.0, 1.0, 0),
            Decoding::Sample {
                temperature,
                top_p,
                top_k,
            } => (
                temperature,
                // `Sampler::sample` skips the nucleus cut at 1: a cumulative sum that rounds
                // above 1 must not cut anything here either.
                if top_p >= 1.0 { f32::INFINITY } else { top_p },
                top_k,
            ),
        };
        let needs_draw = d && s.decoding != Decoding::Greedy;
        temps.push(t);
        top_ps.push(p);
        top_ks.push(if k == 0 || k >= v { v } else { k } as i64);
        uniforms.push(if needs_draw {
            s.rng.random::<f32>()
        } else {
            0.0
        });
    }
    let column = |x: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(x, [b, 1]), &device);
    let probs = softmax(logits.clone().div(column(temps).expand([b, v])), 1);
    let (sorted, order) = probs.sort_descending_with_indices(1);
    let before = sorted.clone().cumsum(1) - sorted.clone();
    let mut kept = sorted.mask_fill(before.greater(column(top_ps).expand([b, v])), 0.0);
    let rank = Tensor::<B, 1, Int>::arange(0..v as i64, &device)
        .reshape([1, v])
        .expand([b, v]);
    let ks = Tensor::<B, 2, Int>::from_data(TensorData::new(top_ks, [b, 1]), &device);
    kept = kept.mask_fill(rank.greater_equal(ks.expand([b, v])), 0.0);
    let cdf = kept.clone().cumsum(1);
    let total = cdf.clone().narrow(1, v - 1, 1);
    let threshold = (total * column(uniforms)).expand([b, v]);
    let chosen = cdf.lower_equal(threshold).int().sum_dim(1);
    let last_kept = kept
        .greater_elem(0.0)
        .int()
        .sum_dim(1)
        .sub_scalar(1)
        .clamp_min(0);
    let sampled = order.gather(1, chosen.min_pair(last_kept));
    let is_greedy = Tensor::<B, 2, Int>::from_data(
        TensorData::new(greedy.iter().map(|&g| g as i64).collect(), [b, 1]),
        &device,
    )
    .equal_elem(1);
    ids_to_host(sampled.mask_where(is_greedy, logits.argmax(1)))
}

/// Reads a `[B, 1]` id tensor back to the host.
fn ids_to_host<B: Backend>(ids: Tensor<B, 2, Int>) -> Vec<u32> {
    ids.into_data()
        .iter::<i64>()
        .map(|id| id.max(0) as u32)
        .collect()
}

/// Top-p / top-k sampling of `[B, V]` logits with the given uniforms (one per row, in `[0, 1)`);
/// returns the chosen ids `[B, 1]`, still on the device.
pub fn sample_top_p<B: Backend>(
    logits: Tensor<B, 2>,
    temperature: f32,
    top_p: f32,
    top_k: usize,
    uniforms: Vec<f32>,
) -> Tensor<B, 2, Int> {
    let device = logits.device();
    let [b, v] = logits.dims();
    let probs = softmax(logits.div_scalar(temperature), 1);
    // [B, V] each, descending.
    let (sorted, order) = probs.sort_descending_with_indices(1);
    let mut kept = sorted.clone();
    if top_p < 1.0 {
        let before = sorted.clone().cumsum(1) - sorted;
        kept = kept.mask_fill(before.greater_elem(top_p), 0.0);
    }
    if top_k > 0 && top_k < v {
        let rank = Tensor::<B, 1, Int>::arange(0..v as i64, &device)
            .reshape([1, v])
            .expand([b, v]);
        kept = kept.mask_fill(rank.greater_equal_elem(top_k as i64), 0.0);
    }
    // Inverse CDF: the chosen rank is the number of entries whose cumulative mass is <= u * total.
    let cdf = kept.clone().cumsum(1);
    let total = cdf.clone().narrow(1, v - 1, 1); // [B, 1]
    let u = Tensor::<B, 2>::from_data(TensorData::new(uniforms, [b, 1]), &device);
    let threshold = (total * u).expand([b, v]);
    let rank = cdf.lower_equal(threshold).int().sum_dim(1); // [B, 1]
                                                            // Never step past the last kept entry (rounding when u * total rounds up to total).
    let last_kept = kept
        .greater_elem(0.0)
        .int()
        .sum_dim(1)
        .sub_scalar(1)
        .clamp_min(0);
    let rank = rank.min_pair(last_kept);
    order.gather(1, rank)
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn logits(rows: &[&[f32]]) -> Tensor<B, 2> {
        let v = rows[0].len();
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), v]), &Default::default())
    }

    fn log_probs(p: &[f32]) -> Vec<f32> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn greedy_is_argmax_per_row() {
        let mut s = Sampler::new(Decoding::Greedy, 0).unwrap();
        let ids = s.sample(logits(&[&[0.1, 3.0, -1.0, 2.9], &[5.0, 0.0, 0.0, 0.0]]));
        assert_eq!(ids, vec![1, 0]);
    }

    #[test]
    fn zero_temperature_means_greedy() {
        assert_eq!(Decoding::from_params(0.0, 0.75, 0), Decoding::Greedy);
        assert!(matches!(
            Decoding::from_params(0.1, 0.75, 0),
            Decoding::Sample { .. }
        ));
    }

    #[test]
    fn rejects_bad_settings() {
        let bad_p = Decoding::Sample {
            temperature: 1.0,
            top_p: 1.5,
            top_k: 0,
        };
        assert_eq!(
            Sampler::new(bad_p, 0).unwrap_err(),
            SamplingError::TopP(1.5)
        );
        let bad_t = Decoding::Sample {
            temperature: f32::NAN,
            top_p: 0.5,
            top_k: 0,
        };
        assert!(matches!(
            Sampler::new(bad_t, 0),
            Err(SamplingError::Temperature(_))
        ));
    }

    #[test]
    fn tiny_top_p_or_top_k_one_is_argmax() {
        let l = logits(&[&[0.0, 1.0, 0.5, 0.9], &[2.0, 1.9, 0.0, 0.0]]);
        for decoding in [
            Decoding::Sample {
                temperature: 1.0,
                top_p: 0.0,
                top_k: 0,
            },
            Decoding::Sample {
                temperature: 1.0,
                top_p: 1.0,
                top_k: 1,
            },
        ] {
            let mut s = Sampler::new(decoding, 7).unwrap();
            for _ in 0..20 {
                assert_eq!(s.sample(l.clone()), vec![1, 0]);
            }
        }
    }

    fn frequencies(decoding: Decoding, probs: &[f32], n: usize) -> Vec<f32> {
        let mut s = Sampler::new(decoding, 42).unwrap();
        let row = log_probs(probs);
        // Many rows per call: each gets its own uniform.
        let rows: Vec<&[f32]> = (0..n).map(|_| row.as_slice()).collect();
        let ids = s.sample(logits(&rows));
        let mut counts = vec![0f32; probs.len()];
        for id in ids {
            counts[id as usize] += 1.0;
        }
        counts.iter().map(|c| c / n as f32).collect()
    }

    #[test]
    fn top_p_matches_the_original_rule() {
        // Sorted 0.5, 0.3, 0.2: cumsum - p = 0, 0.5, 0.8 -> with top_p 0.6 the 0.2 entry goes,
        // leaving 0.625 / 0.375. Unsorted input checks the index mapping.
        let f = frequencies(
            Decoding::Sample {
                temperature: 1.0,
                top_p: 0.6,
                top_k: 0,
            },
            &[0.2, 0.5, 0.3],
            4000,
        );
        assert_eq!(f[0], 0.0, "{f:?}");
        assert!((f[1] - 0.625).abs() < 0.03, "{f:?}");
        assert!((f[2] - 0.375).abs() < 0.03, "{f:?}");
    }

    #[test]
    fn top_k_and_temperature() {
        let f = frequencies(
            Decoding::Sample {
                temperature: 1.0,
                top_p: 1.0,
                top_k: 2,
            },
            &[0.1, 0.4, 0.2, 0.3],
            4000,
        );
        assert_eq!(f[0] + f[2], 0.0, "{f:?}");
        assert!((f[1] - 4.0 / 7.0).abs() < 0.03, "{f:?}");
        // Temperature 2 flattens 0.8/0.2 to sqrt ratio 2:1.
        let f = frequencies(
            Decoding::Sample {
                temperature: 2.0,
                top_p: 1.0,
                top_k: 0,
            },
            &[0.8, 0.2],
            4000,
        );
        assert!((f[0] - 2.0 / 3.0).abs() < 0.03, "{f:?}");
    }

    #[test]
    fn rows_sample_as_their_own_sampler_alone() {
        let hot = Decoding::Sample {
            temperature: 0.8,
            top_p: 0.9,
            top_k: 0,
        };
        let cut = Decoding::Sample {
            temperature: 1.5,
            top_p: 1.0,
            top_k: 3,
        };
        let rows: [&[f32]; 3] = [
            &[0.0, 0.3, 0.2, 0.9, 0.4],
            &[1.0, 0.1, 0.7, 0.2, 0.0],
            &[0.25, 0.2, 2.0, 0.1, 0.3],
        ];
        let decodings = [hot, Decoding::Greedy, cut];
        let seeds = [11u64, 12, 13];
        // Alone: each row with its own sampler, one row per call.
        let alone: Vec<Vec<u32>> = (0..3)
            .map(|k| {
                let mut s = Sampler::new(decodings[k], seeds[k]).unwrap();
                (0..40).map(|_| s.sample(logits(&[rows[k]]))[0]).collect()
            })
            .collect();
        // Together; row 0 skips its first two steps (still in its prompt) without drawing.
        let mut samplers: Vec<Sampler> = (0..3)
            .map(|k| Sampler::new(decodings[k], seeds[k]).unwrap())
            .collect();
        let mut together = vec![Vec::new(); 3];
        for step in 0..42 {
            let draw = [step >= 2, step < 40, step < 40];
            let ids = sample_rows(logits(&rows), &mut samplers, &draw);
            for k in 0..3 {
                if draw[k] {
                    together[k].push(ids[k]);
                }
            }
        }
        assert_eq!(alone, together);
        // The rows really sample (not all one id), and greedy is the argmax.
        assert!(alone[0].iter().any(|&t| t != alone[0][0]), "{alone:?}");
        assert!(alone[1].iter().all(|&t| t == 0));
        assert!(
            alone[2].iter().all(|&t| [0, 2, 4].contains(&t)),
            "{alone:?}"
        );
    }

    #[test]
    fn same_seed_same_tokens() {
        let d = Decoding::Sample {
            temperature: 1.0,
            top_p: 0.9,
            top_k: 0,
        };
        let l = logits(&[&[0.0, 0.1, 0.2, 0.3, 0.4]]);
        let run = |seed| {
            let mut s = Sampler::new(d, seed).unwrap();
            (0..50).map(|_| s.sample(l.clone())[0]).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
