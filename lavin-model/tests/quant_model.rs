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
//!
//! The checks live in `common::quantized_vs_dense` (with `qmax` of the bit width), shared with
//! `wgpu_quant.rs`, which runs them at 8 and 4 bits on wgpu.

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use lavin_model::quant::{register_autodiff, Bits};

mod common;
use common::{config, dense_model, quantized_vs_dense, run};

type P = NdArray<f32>;
type AD = Autodiff<P>;

#[test]
fn eight_bit_base_is_within_quantization_error_of_f32() {
    register_autodiff::<P, NoCheckpointing>();
    let device = Default::default();
    let c = config();
    <P as Backend>::seed(&device, 7);
    let dense = dense_model::<AD>(&c, &device);
    let reference = run(&dense, &c, &device);
    let e = quantized_vs_dense(&dense, &reference, Bits::Eight, &c, &device);
    eprintln!("{e:?}");
}

#[test]
fn bits_parse() {
    use lavin_model::quant::parse_bits;
    assert_eq!(parse_bits("16bit").unwrap(), None);
    assert_eq!(parse_bits("8bit").unwrap(), Some(Bits::Eight));
    assert_eq!(parse_bits("4bit").unwrap(), Some(Bits::Four));
    assert!(parse_bits("3bit").is_err());
}
