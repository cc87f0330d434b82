//! LaVIN-lite's 4-bit path on a CubeCL backend: wgpu, run in CI on Mesa's software
//! Vulkan driver (lavapipe). NdArray cannot store packed 4-bit weights, so this is the only test
//! that runs `Bits::Four`; 8-bit is checked here too (stored packed on wgpu, see the end).
//!
//! Bounds (derived in the headers of `quant.rs` and `quant_model.rs`; `qmax` = 127 or 7):
//! - weight: every dequantized value within half a step `s_b / 2 = max_b |w| / (2 qmax)`;
//! - layer output: `|Δy_j| <= Σ_i |x_i| s_b(i,j) / 2` plus f32 rounding (`1e-5 · Σ_i |x_i W_ij|`);
//! - custom op vs Burn's matmul on the dequantized weight (forward and input gradient): the
//!   same numbers up to f32 rounding (`1e-5` of the largest value);
//! - tiny LaVIN with a quantized base vs the same model in f32: logits within `Σ_l ε_l`,
//!   adapter gradients within `2 Σ_l ε_l`, where `ε_l = ‖ΔW_l‖_F / ‖W_l‖_F` (first-order sum
//!   over the `7 · n_layers` quantized linears).
//!
//! At 4 bits `Σ_l ε_l` is large (0.96 for the 14 linears of the tiny model: ε_l ≈ 0.07 each),
//! so that bound alone would not catch a 4-bit path that is merely wrong-ish. The model test
//! therefore also checks that the error *scales with the weight error*: to first order the
//! logits (and gradient) error is a linear function of the weight errors, and the 8- and 4-bit
//! roundings are unrelated, so `e(4) / e(8)` should be near
//! `ρ = sqrt(Σ ε_l(4)²) / sqrt(Σ ε_l(8)²)` (≈ 18 ≈ 127/7). Accepted: `[ρ/2, 2ρ]`. A 4-bit path
//! that did nothing, or scrambled the packing (relative error of order 1, i.e. ~25ρ · e(8)
//! here), falls outside.
//!
//! Measured on lavapipe (Mesa 22.3.6, LLVM 15, f32): weight errors reach 0.999 of the half
//! step (4 and 8 bits); layer outputs 0.40 (4-bit) / 0.37 (8-bit) of their bound; the custom op
//! equals Burn's matmul on the dequantized weight exactly (forward and input gradient); tiny
//! LaVIN logits 4.1e-2 (bound 0.96) at 4 bits, 2.3e-3 (bound 5.3e-2) at 8 bits; adapter
//! gradients 1.25e-1 (bound 1.9) and 7.5e-3 (bound 0.105); error ratios 18.1 (logits) and 16.6
//! (gradients) for ρ = 18.2.
//!
//! 8-bit on wgpu is stored packed (4 values per u32): Burn's `Wgpu` compiles WGSL, which has no
//! i8, so the native i8 store that NdArray needs panics there ("Q8S is not supported for
//! native quantization"); `Bits::scheme_for` picks the store per backend.
#![cfg(feature = "wgpu")]

use burn::backend::wgpu::{Wgpu, WgpuDevice};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::quantization::QuantStore;
use lavin_model::quant::{Bits, FrozenQuantLinear};

mod common;
use common::{
    check_forward, check_input_grad, config, dense_model, host_data, quantized_vs_dense, run,
    tensor,
};

type W = Wgpu;
type AD = Autodiff<W>;

/// Layer checks for one width: weight and output bounds (plain and autodiff), the custom op's
/// forward and input gradient against Burn's matmul, and the packed size actually stored.
fn layer_checks(bits: Bits) {
    let plain = check_forward::<W>(bits);
    let ad = check_forward::<AD>(bits);
    let (fwd, grad) = check_input_grad::<AD>(bits, 1e-5);
    eprintln!(
        "{bits} layer on wgpu: weight err / half step {:.3} (<= 1), output err / bound {:.3} \
         plain, {:.3} autodiff (<= 1); custom op vs dequantized matmul: forward {fwd:.1e}, \
         input grad {grad:.1e} (<= 1e-5 of max)",
        plain.weight_over_half_step, plain.output_over_bound, ad.output_over_bound
    );

    // What the device holds: `bits` per value plus one f32 scale per block of 32.
    let (d_in, d_out) = (48, 64);
    let layer =
        FrozenQuantLinear::<W>::quantize(tensor(host_data(d_in * d_out, 1), [d_in, d_out]), bits)
            .expect("quantize");
    let stored = layer.packed().into_data().bytes.len();
    assert_eq!(stored, layer.packed_bytes(), "{bits}: stored bytes");
    assert_eq!(
        stored,
        d_in * d_out * bits.bits() / 8 + d_in * d_out / 32 * 4
    );
}

#[test]
fn four_bit_layer_on_wgpu() {
    layer_checks(Bits::Four);
}

#[test]
fn eight_bit_layer_on_wgpu() {
    // No i8 in WGSL: 8-bit is packed into u32 on wgpu (NdArray keeps the native store).
    let scheme = Bits::Eight.scheme_for::<W>(32, &WgpuDevice::default());
    assert_eq!(scheme.store, QuantStore::PackedU32(0));
    layer_checks(Bits::Eight);
}

#[test]
fn tiny_lavin_quantized_base_on_wgpu() {
    let device = WgpuDevice::default();
    let c = config();
    <W as Backend>::seed(&device, 7);
    let dense = dense_model::<AD>(&c, &device);
    let reference = run(&dense, &c, &device);
    let e8 = quantized_vs_dense(&dense, &reference, Bits::Eight, &c, &device);
    let e4 = quantized_vs_dense(&dense, &reference, Bits::Four, &c, &device);

    // The error scales like the weight error (header): e(4)/e(8) within [ρ/2, 2ρ].
    let rho = e4.rss_eps / e8.rss_eps;
    let (r_logits, r_grads) = (e4.logits / e8.logits, e4.grads / e8.grads);
    eprintln!("4-bit / 8-bit error: logits {r_logits:.1}, grads {r_grads:.1}, weights ρ {rho:.1}");
    for (what, r) in [("logits", r_logits), ("grads", r_grads)] {
        assert!(
            r >= rho / 2.0 && r <= 2.0 * rho,
            "{what}: 4-bit/8-bit error ratio {r} outside [ρ/2, 2ρ], ρ = {rho}"
        );
    }
}
