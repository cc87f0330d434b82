//! Fixtures shared by the quantization tests (`quant.rs`, `quant_model.rs` on NdArray,
//! `wgpu_quant.rs` on wgpu): deterministic data, the per-layer checks of a
//! [`FrozenQuantLinear`], and the tiny LaVIN model compared with and without a quantized base.
//! The error bounds are derived in the headers of `quant.rs` (one layer) and `quant_model.rs`
//! (the model); the functions here take the bit width, so the same bounds cover 8 and 4 bits
//! through `qmax` (127 or 7).
#![allow(dead_code)] // each test crate uses a subset

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Int, Tensor, TensorData};
use lavin_model::llama::FrozenLinear;
use lavin_model::quant::{Bits, FrozenQuantLinear};
use lavin_model::weights::adapters::{adapter_tensors, load_adapters, write_safetensors};
use lavin_model::{Lavin, LavinBatch, LavinConfig};
use lavin_parity::{adapter_grads, host};

// ---------------------------------------------------------------------------------------------
// One layer.
// ---------------------------------------------------------------------------------------------

/// Deterministic, roughly gaussian host data (sum of uniforms from an LCG), with a few outliers
/// so blocks get different scales.
pub fn host_data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uni = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32) / (1u64 << 31) as f32 - 0.5
    };
    (0..n)
        .map(|k| {
            let g = (0..4).map(|_| uni()).sum::<f32>();
            if k % 97 == 0 {
                g * 8.0
            } else {
                g
            }
        })
        .collect()
}

/// A tensor on the backend's default device.
pub fn tensor<B: Backend, const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// Per-element quantization half-step `s_b / 2` for blocks of `block` along the output dim.
pub fn half_steps(w: &[f32], d_in: usize, d_out: usize, block: usize, qmax: f32) -> Vec<f32> {
    let mut h = vec![0.0; w.len()];
    for i in 0..d_in {
        for b in 0..d_out / block {
            let r = i * d_out + b * block..i * d_out + (b + 1) * block;
            let m = w[r.clone()].iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for k in r {
                h[k] = m / qmax / 2.0;
            }
        }
    }
    h
}

/// Asserts `|a - b| <= rel · max|b|` elementwise; returns the measured `max|a - b| / max|b|`.
pub fn assert_close(a: &[f32], b: &[f32], rel: f32, what: &str) -> f32 {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    let mut worst = 0.0f32;
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rel * scale,
            "{what}[{k}]: {x} vs {y} (rel tol {rel} of max {scale})"
        );
        worst = worst.max((x - y).abs() / scale);
    }
    worst
}

/// What [`check_forward`] measured.
#[derive(Debug, Clone, Copy)]
pub struct ForwardErrors {
    /// `max_k |deq(W)_k - W_k| / (s_b / 2)`: must be <= 1.
    pub weight_over_half_step: f32,
    /// `max |y - x·W| / bound` (bound of the `quant.rs` header): must be <= 1.
    pub output_over_bound: f32,
}

/// Quantizes a `[48, 64]` weight to `bits` (blocks of 32 along the output dim) on `B` and checks
/// every stored weight within half a quantization step and the output within the bound of the
/// `quant.rs` header.
pub fn check_forward<B: Backend>(bits: Bits) -> ForwardErrors {
    let (n, d_in, d_out) = (3, 48, 64);
    let w = host_data(d_in * d_out, 1);
    let x = host_data(n * d_in, 2);
    let layer =
        FrozenQuantLinear::<B>::quantize(tensor(w.clone(), [d_in, d_out]), bits).expect("quantize");
    let half = half_steps(&w, d_in, d_out, 32, bits.qmax());

    // The stored weight itself: every value within half a step of the original.
    let wd = to_vec(layer.dequantized());
    let mut weight_worst = 0.0f32;
    for k in 0..w.len() {
        assert!(
            (wd[k] - w[k]).abs() <= half[k] * (1.0 + 1e-5) + 1e-7,
            "{bits} weight {k}: {} vs {} (half step {})",
            wd[k],
            w[k],
            half[k]
        );
        weight_worst = weight_worst.max((wd[k] - w[k]).abs() / half[k]);
    }

    let y = to_vec(layer.forward(tensor::<B, 2>(x.clone(), [n, d_in])));
    let mut worst = 0.0f32;
    for r in 0..n {
        for j in 0..d_out {
            let exact: f32 = (0..d_in).map(|i| x[r * d_in + i] * w[i * d_out + j]).sum();
            let bound: f32 = (0..d_in)
                .map(|i| x[r * d_in + i].abs() * half[i * d_out + j])
                .sum();
            let mag: f32 = (0..d_in)
                .map(|i| (x[r * d_in + i] * w[i * d_out + j]).abs())
                .sum();
            let err = (y[r * d_out + j] - exact).abs();
            assert!(
                err <= bound + 1e-5 * mag,
                "{bits} y[{r},{j}]: err {err} > bound {bound}"
            );
            worst = worst.max(err / bound.max(1e-12));
        }
    }
    ForwardErrors {
        weight_over_half_step: weight_worst,
        output_over_bound: worst,
    }
}

/// Forward and input gradient of the custom op against Burn's own matmul with the dequantized
/// weight as an untracked constant, to float precision (`rel` of the largest value). Returns the
/// measured `(forward, gradient)` relative errors.
pub fn check_input_grad<B: AutodiffBackend>(bits: Bits, rel: f32) -> (f32, f32) {
    let (b, s, d_in, d_out) = (2, 3, 32, 64);
    let w = host_data(d_in * d_out, 3);
    let x = host_data(b * s * d_in, 4);
    let c = host_data(b * s * d_out, 5);
    let layer = FrozenQuantLinear::<B>::quantize(tensor(w, [d_in, d_out]), bits).expect("quantize");

    // Through the custom op (3-D input exercises the flatten/reshape path).
    let x1 = tensor::<B, 3>(x.clone(), [b, s, d_in]).require_grad();
    let y1 = layer.forward(x1.clone());
    let loss1 = (y1.clone() * tensor::<B, 3>(c.clone(), [b, s, d_out])).sum();
    let g1 = x1.grad(&loss1.backward()).expect("x grad (custom op)");

    // Reference: Burn's own matmul with the dequantized weight as an untracked constant.
    let x2 = tensor::<B, 3>(x, [b, s, d_in]).require_grad();
    let w2 = layer.dequantized().unsqueeze::<3>();
    let y2 = x2.clone().matmul(w2);
    let loss2 = (y2.clone() * tensor::<B, 3>(c, [b, s, d_out])).sum();
    let g2 = x2.grad(&loss2.backward()).expect("x grad (reference)");

    (
        assert_close(&to_vec(y1), &to_vec(y2), rel, &format!("{bits} forward")),
        assert_close(&to_vec(g1), &to_vec(g2), rel, &format!("{bits} input grad")),
    )
}

// ---------------------------------------------------------------------------------------------
// The tiny LaVIN model.
// ---------------------------------------------------------------------------------------------

pub fn config() -> LavinConfig {
    let mut c = LavinConfig::tiny();
    c.clip.input_resolution = 64;
    c.max_seq_len = 20;
    c.adapter.dropout = 0.0;
    c.prefix_img = vec![5, 6];
    c.prefix_nonimg = vec![5, 6, 7];
    c
}

pub fn batch<B: Backend>(c: &LavinConfig, device: &Device<B>) -> LavinBatch<B> {
    let s = c.max_seq_len;
    let tokens: Vec<i64> = (0..2 * s)
        .map(|i| {
            if i % s < 16 {
                1 + (i as i64 * 37) % 500
            } else {
                0
            }
        })
        .collect();
    let labels: Vec<i64> = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| if i % s < 6 { 0 } else { t })
        .collect();
    let r = c.clip.input_resolution;
    LavinBatch {
        tokens: Tensor::<B, 2, Int>::from_data(TensorData::new(tokens, [2, s]), device),
        labels: Tensor::<B, 2, Int>::from_data(TensorData::new(labels, [2, s]), device),
        // Deterministic, so the autodiff and inner-backend runs see the same images.
        images: Tensor::from_data(
            TensorData::new(
                (0..2 * 3 * r * r)
                    .map(|i| ((i * 13) % 17) as f32 / 8.0 - 1.0)
                    .collect::<Vec<f32>>(),
                [2, 3, r, r],
            ),
            device,
        ),
        indicators: Tensor::<B, 1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), device),
    }
}

/// Materialises every lazily initialised parameter, so clones share the same weights.
struct Touch;
impl<B: Backend> ModuleVisitor<B> for Touch {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let _ = p.val();
    }
}

/// The tiny model with non-zero adapters (zero-initialised up-projections would hide them).
pub fn dense_model<B: Backend>(c: &LavinConfig, device: &Device<B>) -> Lavin<B> {
    let model = c.init::<B>(device);
    let dir = std::env::temp_dir().join(format!(
        "lavin-quant-model-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("adapters.safetensors");
    let tensors: Vec<_> = adapter_tensors(&model)
        .into_iter()
        .enumerate()
        .map(|(k, (n, shape, data))| {
            let v = (0..data.len())
                .map(|i| (((i * 31 + k * 17) % 23) as f32 - 11.0) * 0.02)
                .collect();
            (n, shape, v)
        })
        .collect();
    write_safetensors(&path, &tensors, &Default::default()).unwrap();
    let model = load_adapters(model, &path, device).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    model.visit(&mut Touch);
    model
}

pub fn linears<B: Backend>(m: &Lavin<B>) -> Vec<&FrozenLinear<B>> {
    m.llama.base_linears().collect()
}

pub fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let n: f32 = b.iter().map(|y| y * y).sum();
    (d / n.max(1e-30)).sqrt()
}

/// `δ_l = max|w| / (2 · qmax · rms(w))` of a dense weight (the a-priori bound of the
/// `quant_model.rs` header).
pub fn weight_delta(w: &[f32], bits: Bits) -> f32 {
    let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let rms = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    max / (2.0 * bits.qmax() * rms)
}

/// Logits and flattened adapter gradients of one training forward/backward on [`batch`].
pub struct Outputs {
    pub logits: Vec<f32>,
    pub grad_names: Vec<String>,
    pub grads: Vec<f32>,
}

pub fn run<B: AutodiffBackend>(model: &Lavin<B>, c: &LavinConfig, device: &Device<B>) -> Outputs {
    let out = model.forward_train(batch::<B>(c, device));
    let logits = host(out.logits.clone());
    let g = adapter_grads(model, &out.loss.backward());
    assert!(!g.is_empty(), "no adapter gradients");
    Outputs {
        logits,
        grad_names: g.iter().map(|(n, _, _)| n.clone()).collect(),
        grads: g.into_iter().flat_map(|(_, _, v)| v).collect(),
    }
}

/// What [`quantized_vs_dense`] measured.
#[derive(Debug, Clone, Copy)]
pub struct ModelErrors {
    /// `Σ_l ε_l`, `ε_l = ‖ΔW_l‖_F / ‖W_l‖_F` over the quantized block linears.
    pub sum_eps: f32,
    /// `sqrt(Σ_l ε_l²)`.
    pub rss_eps: f32,
    /// `‖Δlogits‖ / ‖logits‖`.
    pub logits: f32,
    /// `‖Δgrads‖ / ‖grads‖` over all adapter gradients.
    pub grads: f32,
}

/// Quantizes `dense`'s base to `bits` and compares with the dense run `reference`: every block
/// linear quantized and out of the parameter set; per layer `0 < ε_l <= δ_l`; logits within
/// `Σ ε_l` and adapter gradients within `2 Σ ε_l` (header of `quant_model.rs`); `valid()` keeps
/// the quantized layers and gives the same logits on the inner backend.
pub fn quantized_vs_dense<B: AutodiffBackend>(
    dense: &Lavin<B>,
    reference: &Outputs,
    bits: Bits,
    c: &LavinConfig,
    device: &Device<B>,
) -> ModelErrors {
    let quant = dense.clone().quantize_base(bits).unwrap();
    assert_eq!(quant.llama.base_bits(), Some(bits));
    assert_eq!(dense.llama.base_bits(), None);

    // Every block linear is quantized and its weights left the parameter set; nothing else did.
    let l = &c.llama;
    let per_block = 4 * l.dim * l.dim + 3 * l.dim * l.ffn_hidden();
    assert!(linears(&quant).iter().all(|b| b.bits() == Some(bits)));
    assert_eq!(
        dense.num_params() - quant.num_params(),
        l.n_layers * per_block
    );

    // Per layer: ε_l = ‖ΔW‖_F / ‖W‖_F within its own δ_l, and non-zero; the bound is Σ ε_l.
    let (mut sum_eps, mut sum_sq) = (0.0f32, 0.0f32);
    for (d, q) in linears(dense).iter().zip(linears(&quant)) {
        let wd = host(d.weight());
        let (eps, delta) = (rel_l2(&host(q.weight()), &wd), weight_delta(&wd, bits));
        assert!(
            eps > 0.0 && eps <= delta,
            "{bits} weight error {eps} vs δ {delta}"
        );
        sum_eps += eps;
        sum_sq += eps * eps;
    }

    let q = run(&quant, c, device);
    assert_eq!(q.grad_names, reference.grad_names);
    let e_logits = rel_l2(&q.logits, &reference.logits);
    let e_grads = rel_l2(&q.grads, &reference.grads);
    eprintln!(
        "{bits} tiny LaVIN: logits rel err {e_logits:.2e} (bound Σε {sum_eps:.2e}), \
         adapter grads rel err {e_grads:.2e} (bound 2Σε {:.2e}); sqrt(Σε²) {:.2e}",
        2.0 * sum_eps,
        sum_sq.sqrt()
    );
    assert!(e_logits > 0.0, "{bits}: quantization changed nothing");
    assert!(e_logits <= sum_eps, "{bits} logits: {e_logits} > {sum_eps}");
    assert!(
        e_grads <= 2.0 * sum_eps,
        "{bits} grads: {e_grads} > {}",
        2.0 * sum_eps
    );

    // `valid()` (inference on the inner backend) keeps the quantized layers and their output.
    let inner = quant.valid();
    assert_eq!(inner.llama.base_bits(), Some(bits));
    let li = host(
        inner
            .forward_train(batch::<B::InnerBackend>(c, device))
            .logits,
    );
    let e_inner = rel_l2(&li, &q.logits);
    assert!(e_inner < 1e-5, "{bits} valid() logits differ: {e_inner}");

    ModelErrors {
        sum_eps,
        rss_eps: sum_sq.sqrt(),
        logits: e_logits,
        grads: e_grads,
    }
}
