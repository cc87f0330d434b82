//! Frozen weights in half precision, with f32 adapters and explicit casts at the frozen matmuls:
//! fp16 (the original's) and bf16 on flex (CPU, always), fp16 on wgpu (`--features wgpu`; CI
//! uses Mesa's lavapipe). On wgpu, a lean autodiff backend, attention also runs on half q, k, v
//! and rounds its probabilities to half (`kernels::half_attention`); the bound below covers the
//! frozen linears only and leaves that rounding a wide margin (measured 5.6e-4 against 7.9e-2).
//!
//! The bound: the format's unit roundoff is `u` (fp16 `2^-11`, bf16 `2^-8`). A frozen linear `y = x W` with `K` inputs
//! rounds `x` and `W` (`2u`) and accumulates `K` products (at most `√K · u` for independent
//! rounding when the driver accumulates in fp16), so its relative output error is
//! `ε_l <= (2 + √K_l) u`. As in the 8-bit test (`quant_model.rs`), first-order errors of the
//! `7 · n_layers` block linears and the output head add along the residual stream:
//! `‖Δlogits‖ / ‖logits‖ <= Σ_l ε_l`, and adapter gradients see them twice. A wrong cast, a
//! transposed weight or a dropped bias gives errors of order 1; the tests also require a
//! non-zero error, so a conversion that silently did nothing fails.
use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Device};
use lavin_model::llama::BaseFormat;
use lavin_model::weights::{load_lavin, LoadSpec};
use lavin_model::Lavin;
use lavin_model::Precision;
use lavin_parity::{adapter_grads, host, Case};

const CASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity/tiny-a");

fn half(precision: Precision) -> BaseFormat {
    BaseFormat {
        precision,
        bits: None,
    }
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n.max(1e-30)).sqrt()
}

/// `Σ_l (2 + √K_l) u` over the block linears and the output head (the header's bound).
fn logits_bound<B: Backend>(m: &Lavin<B>, u: f64) -> f64 {
    let l = &m.config().llama;
    let eps = |k: usize| (2.0 + (k as f64).sqrt()) * u;
    let per_block = 4.0 * eps(l.dim) + 2.0 * eps(l.dim) + eps(l.ffn_hidden());
    l.n_layers as f64 * per_block + eps(l.dim)
}

fn load<AD: AutodiffBackend>(case: &Case, format: BaseFormat, device: &Device<AD>) -> Lavin<AD> {
    let dir = Path::new(CASE);
    let spec = LoadSpec {
        llama: case.meta_llama(),
        clip: dir.join("clip/visual.pth"),
        adapters: Some(dir.join("adapter/checkpoint.pth")),
        format,
    };
    load_lavin::<AD>(&case.config, &spec, device).expect("load tiny-a")
}

/// Half-precision frozen weights on `AD`: stored as `dtype`, logits and adapter gradients within
/// the header's bound for roundoff `u`.
fn half_matches_f32<AD: AutodiffBackend>(precision: Precision, dtype: DType, u: f64) {
    let case = Case::open(CASE.as_ref()).expect("case");
    let device = Device::<AD>::default();

    let dense = load::<AD>(&case, BaseFormat::default(), &device);
    let half = load::<AD>(&case, half(precision), &device);

    // Storage: frozen LLaMA weights in half, norms / adapters / CLIP in f32.
    let b0 = &half.llama.layers[0];
    assert_eq!(b0.attention.wq.weight_dtype(), Some(dtype));
    assert_eq!(b0.feed_forward.w2.weight_dtype(), Some(dtype));
    assert_eq!(half.llama.tok_embeddings.weight.val().dtype(), dtype);
    assert_eq!(half.llama.output.weight.val().dtype(), dtype);
    assert_eq!(b0.attention_norm.gamma.val().dtype(), DType::F32);
    assert_eq!(half.adapter_proj.conv_a.weight.val().dtype(), DType::F32);
    assert_eq!(
        dense.llama.layers[0].attention.wq.weight_dtype(),
        Some(DType::F32)
    );

    // Logits (and the loss) within the rounding bound; activations come back as f32.
    let out_dense = dense.forward_train(case.batch(&device).expect("batch"));
    let out_half = half.forward_train(case.batch(&device).expect("batch"));
    assert_eq!(out_half.logits.dtype(), DType::F32);
    let (ld, lh) = (host(out_dense.logits), host(out_half.logits));
    let bound = logits_bound(&half, u);
    let err = rel_l2(&lh, &ld);
    println!("{precision} logits rel-L2 {err:.3e} (bound {bound:.3e})");
    assert!(
        err > 0.0,
        "{precision} logits are bit-identical to f32: nothing was converted"
    );
    assert!(
        err <= bound,
        "{precision} logits rel-L2 {err:.3e} > bound {bound:.3e}"
    );

    // Adapter gradients: f32, within twice the bound.
    let gd = out_dense.loss.backward();
    let gh = out_half.loss.backward();
    let (gd, gh) = (adapter_grads(&dense, &gd), adapter_grads(&half, &gh));
    assert_eq!(gd.len(), gh.len());
    assert!(!gh.is_empty());
    let flat = |g: &[(String, Vec<usize>, Vec<f32>)]| -> Vec<f32> {
        g.iter().flat_map(|(_, _, v)| v.iter().copied()).collect()
    };
    let gerr = rel_l2(&flat(&gh), &flat(&gd));
    println!(
        "{precision} adapter grads rel-L2 {gerr:.3e} (bound {:.3e})",
        2.0 * bound
    );
    assert!(gerr > 0.0 && gerr <= 2.0 * bound);
}

const FP16_U: f64 = 1.0 / 2048.0; // 2^-11
const BF16_U: f64 = 1.0 / 256.0; // 2^-8

#[test]
fn flex_fp16_frozen_weights_match_f32_within_rounding() {
    half_matches_f32::<Autodiff<Flex>>(Precision::F16, DType::F16, FP16_U);
}

#[test]
fn flex_bf16_frozen_weights_match_f32_within_rounding() {
    half_matches_f32::<Autodiff<Flex>>(Precision::Bf16, DType::BF16, BF16_U);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_fp16_frozen_weights_match_f32_within_rounding() {
    half_matches_f32::<Autodiff<burn::backend::Wgpu>>(Precision::F16, DType::F16, FP16_U);
}

#[test]
fn converting_after_load_equals_converting_while_loading() {
    type AD = Autodiff<Flex>;
    let case = Case::open(CASE.as_ref()).expect("case");
    let device = Device::<AD>::default();
    let streamed = load::<AD>(&case, half(Precision::F16), &device);
    let after = load::<AD>(&case, BaseFormat::default(), &device)
        .convert_base(half(Precision::F16))
        .expect("convert");
    let a = host(streamed.forward_train(case.batch(&device).unwrap()).logits);
    let b = host(after.forward_train(case.batch(&device).unwrap()).logits);
    assert_eq!(a, b);
}
