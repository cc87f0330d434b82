//! LaVIN-lite on the tiny model (NdArray, CPU): the block linears quantized to 8 bits give
//! logits and adapter gradients within the quantization error of the f32 path, and the
//! quantized weights leave the parameter set.
//!
//! The bound:
//! - Per weight, symmetric 8-bit with block scale `s_b = max_b |w| / 127` rounds to within
//!   `s_b / 2`, so for layer `l`, `ε_l = ‖ΔW_l‖_F / ‖W_l‖_F <= δ_l = max|w| / (2 · 127 · rms(w))`
//!   (checked per layer; `ε_l` ≈ 1/254 ≈ 0.004 for uniform init, ≈ 0.005 for the tiny base).
//! - To first order, a linear whose input is RMS-normalised perturbs its branch by a relative
//!   `ε_l`, and the perturbations of the `7 · n_layers` quantized linears add up along the
//!   residual stream (the norms keep the gain of each stage near 1). So
//!   `‖Δlogits‖ / ‖logits‖ <= Σ_l ε_l`.
//! - Adapter gradients see the perturbation twice (the forward activations, then the same
//!   weights transposed in backward): `2 · Σ_l ε_l`.
//!
//! These are first-order sums (independent rounding errors actually add closer to in
//! quadrature, so the measured errors sit well below), not worst-case operator-norm bounds, but
//! they can fail: a transposed or mis-scaled weight gives a relative error of order 1, and 4-bit
//! rounding (`qmax = 7`, ε ≈ 18× larger) would exceed them. The tests also require a non-zero
//! error, so a quantization that silently did nothing fails too.

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use lavin_model::llama::BaseLinear;
use lavin_model::parity::{adapter_grads, host};
use lavin_model::quant::{register_autodiff, Bits};
use lavin_model::weights::adapters::{adapter_tensors, load_adapters, write_safetensors};
use lavin_model::{Lavin, LavinBatch, LavinConfig};

type P = NdArray<f32>;
type AD = Autodiff<P>;

fn config() -> LavinConfig {
    let mut c = LavinConfig::tiny();
    c.clip.input_resolution = 64;
    c.max_seq_len = 20;
    c.adapter.dropout = 0.0;
    c.prefix_img = vec![5, 6];
    c.prefix_nonimg = vec![5, 6, 7];
    c
}

fn batch<B: Backend>(c: &LavinConfig, device: &burn::tensor::Device<B>) -> LavinBatch<B> {
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
fn dense_model(c: &LavinConfig, device: &burn::tensor::Device<AD>) -> Lavin<AD> {
    let model = c.init::<AD>(device);
    let dir = std::env::temp_dir().join(format!("lavin-quant-model-{}", std::process::id()));
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

fn linears<B: Backend>(m: &Lavin<B>) -> Vec<&BaseLinear<B>> {
    m.llama
        .layers
        .iter()
        .flat_map(|b| {
            let (a, f) = (&b.attention, &b.feed_forward);
            [&a.wq, &a.wk, &a.wv, &a.wo, &f.w1, &f.w2, &f.w3]
        })
        .collect()
}

fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let n: f32 = b.iter().map(|y| y * y).sum();
    (d / n.max(1e-30)).sqrt()
}

/// `δ_l = max|w| / (2 · 127 · rms(w))` of a dense weight (the a-priori bound of the header).
fn weight_delta(w: &[f32]) -> f32 {
    let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let rms = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    max / (2.0 * Bits::Eight.qmax() * rms)
}

#[test]
fn eight_bit_base_is_within_quantization_error_of_f32() {
    register_autodiff::<P, NoCheckpointing>();
    let device = Default::default();
    let c = config();
    <P as Backend>::seed(&device, 7);
    let dense = dense_model(&c, &device);
    let quant = dense.clone().quantize_base(Bits::Eight).unwrap();
    assert_eq!(quant.llama.base_bits(), Some(Bits::Eight));
    assert_eq!(dense.llama.base_bits(), None);

    // Every block linear is quantized and its weights left the parameter set; nothing else did.
    let l = &c.llama;
    let per_block = 4 * l.dim * l.dim + 3 * l.dim * l.ffn_hidden();
    assert!(linears(&quant)
        .iter()
        .all(|b| b.bits() == Some(Bits::Eight)));
    assert_eq!(
        dense.num_params() - quant.num_params(),
        l.n_layers * per_block
    );

    // Per layer: ε_l = ‖ΔW‖_F / ‖W‖_F within its own δ_l, and non-zero; the bound is Σ ε_l.
    let mut sum_eps = 0.0;
    for (d, q) in linears(&dense).iter().zip(linears(&quant)) {
        let wd = host(d.weight());
        let (eps, delta) = (rel_l2(&host(q.weight()), &wd), weight_delta(&wd));
        assert!(eps > 0.0 && eps <= delta, "weight error {eps} vs δ {delta}");
        sum_eps += eps;
    }

    let b = batch::<AD>(&c, &device);
    let out_d = dense.forward_train(b.clone());
    let out_q = quant.forward_train(b);
    let (ld, lq) = (host(out_d.logits.clone()), host(out_q.logits.clone()));
    let e_logits = rel_l2(&lq, &ld);
    let g_d = adapter_grads(&dense, &out_d.loss.backward());
    let g_q = adapter_grads(&quant, &out_q.loss.backward());
    assert_eq!(g_d.len(), g_q.len());
    assert!(!g_d.is_empty());
    let flat = |g: &[(String, Vec<usize>, Vec<f32>)]| -> Vec<f32> {
        g.iter().flat_map(|(_, _, v)| v.iter().copied()).collect()
    };
    for ((nd, _, _), (nq, _, _)) in g_d.iter().zip(&g_q) {
        assert_eq!(nd, nq);
    }
    let e_grads = rel_l2(&flat(&g_q), &flat(&g_d));
    eprintln!(
        "8-bit tiny LaVIN: logits rel err {e_logits:.2e} (bound Σε {sum_eps:.2e}), \
         adapter grads rel err {e_grads:.2e} (bound 2Σε {:.2e})",
        2.0 * sum_eps
    );
    assert!(e_logits > 0.0, "quantization changed nothing");
    assert!(e_logits <= sum_eps, "logits: {e_logits} > {sum_eps}");
    assert!(
        e_grads <= 2.0 * sum_eps,
        "grads: {e_grads} > {}",
        2.0 * sum_eps
    );

    // `valid()` (inference on the inner backend) keeps the quantized layers and their output.
    let inner = quant.valid();
    assert_eq!(inner.llama.base_bits(), Some(Bits::Eight));
    let li = host(inner.forward_train(batch::<P>(&c, &device)).logits);
    let e_inner = rel_l2(&li, &lq);
    assert!(e_inner < 1e-5, "valid() logits differ: {e_inner}");
}

#[test]
fn four_bit_rejected_on_ndarray_before_work() {
    use lavin_model::backends::BackendKind;
    use lavin_model::quant::{check_backend, parse_bits};
    assert_eq!(parse_bits("16bit").unwrap(), None);
    assert_eq!(parse_bits("8bit").unwrap(), Some(Bits::Eight));
    assert_eq!(parse_bits("4bit").unwrap(), Some(Bits::Four));
    assert!(parse_bits("3bit").is_err());
    let e = check_backend(Some(Bits::Four), BackendKind::Ndarray).unwrap_err();
    assert_eq!(
        e.to_string(),
        "4-bit needs a CubeCL backend (wgpu or cuda); use --bits 8bit on ndarray"
    );
    assert!(check_backend(Some(Bits::Eight), BackendKind::Ndarray).is_ok());
    assert!(check_backend(Some(Bits::Four), BackendKind::Cuda).is_ok());
    assert!(check_backend(None, BackendKind::Ndarray).is_ok());
}
