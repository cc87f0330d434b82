//! Frozen weights in fp16 on wgpu (run with `--features wgpu`; CI uses Mesa's lavapipe): the
//! original's precision, with f32 adapters and explicit casts at the frozen matmuls.
//!
//! The bound: fp16's unit roundoff is `u = 2^-11`. A frozen linear `y = x W` with `K` inputs
//! rounds `x` and `W` (`2u`) and accumulates `K` products (at most `√K · u` for independent
//! rounding when the driver accumulates in fp16), so its relative output error is
//! `ε_l <= (2 + √K_l) u`. As in the 8-bit test (`quant_model.rs`), first-order errors of the
//! `7 · n_layers` block linears and the output head add along the residual stream:
//! `‖Δlogits‖ / ‖logits‖ <= Σ_l ε_l`, and adapter gradients see them twice. A wrong cast, a
//! transposed weight or a dropped bias gives errors of order 1; the tests also require a
//! non-zero error, so a conversion that silently did nothing fails.
#![cfg(feature = "wgpu")]

use std::path::Path;

use burn::backend::wgpu::{Wgpu, WgpuDevice};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::DType;
use lavin_model::backends::Precision;
use lavin_model::llama::BaseFormat;
use lavin_model::parity::{adapter_grads, host, Case};
use lavin_model::weights::{load_lavin, LoadSpec};
use lavin_model::Lavin;

type AD = Autodiff<Wgpu>;

const CASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity/tiny-a");

const FP16: BaseFormat = BaseFormat {
    precision: Precision::F16,
    bits: None,
};

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n.max(1e-30)).sqrt()
}

/// `Σ_l (2 + √K_l) u` over the block linears and the output head (the header's bound).
fn logits_bound<B: Backend>(m: &Lavin<B>) -> f64 {
    let u = 2f64.powi(-11);
    let l = &m.config().llama;
    let eps = |k: usize| (2.0 + (k as f64).sqrt()) * u;
    let per_block = 4.0 * eps(l.dim) + 2.0 * eps(l.dim) + eps(l.ffn_hidden());
    l.n_layers as f64 * per_block + eps(l.dim)
}

fn load(case: &Case, format: BaseFormat, device: &WgpuDevice) -> Lavin<AD> {
    let dir = Path::new(CASE);
    let spec = LoadSpec {
        llama: case.meta_llama(),
        clip: dir.join("clip/visual.pth"),
        adapters: Some(dir.join("adapter/checkpoint.pth")),
        format,
    };
    load_lavin::<AD>(&case.config, &spec, device).expect("load tiny-a")
}

#[test]
fn fp16_frozen_weights_match_f32_within_rounding() {
    let case = Case::open(CASE.as_ref()).expect("case");
    let device = WgpuDevice::default();

    let dense = load(&case, BaseFormat::default(), &device);
    let half = load(&case, FP16, &device);

    // Storage: frozen LLaMA weights in fp16, norms / adapters / CLIP in f32.
    let b0 = &half.llama.layers[0];
    assert_eq!(b0.attention.wq.weight_dtype(), Some(DType::F16));
    assert_eq!(b0.feed_forward.w2.weight_dtype(), Some(DType::F16));
    assert_eq!(half.llama.tok_embeddings.weight.val().dtype(), DType::F16);
    assert_eq!(half.llama.output.weight.val().dtype(), DType::F16);
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
    let bound = logits_bound(&half);
    let err = rel_l2(&lh, &ld);
    println!("fp16 logits rel-L2 {err:.3e} (bound {bound:.3e})");
    assert!(
        err > 0.0,
        "fp16 logits are bit-identical to f32: nothing was converted"
    );
    assert!(
        err <= bound,
        "fp16 logits rel-L2 {err:.3e} > bound {bound:.3e}"
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
        "fp16 adapter grads rel-L2 {gerr:.3e} (bound {:.3e})",
        2.0 * bound
    );
    assert!(gerr > 0.0 && gerr <= 2.0 * bound);
}

#[test]
fn converting_after_load_equals_converting_while_loading() {
    let case = Case::open(CASE.as_ref()).expect("case");
    let device = WgpuDevice::default();
    let streamed = load(&case, FP16, &device);
    let after = load(&case, BaseFormat::default(), &device)
        .convert_base(FP16)
        .expect("convert");
    let a = host(streamed.forward_train(case.batch(&device).unwrap()).logits);
    let b = host(after.forward_train(case.batch(&device).unwrap()).logits);
    assert_eq!(a, b);
}
