//! Frozen quantized linear on NdArray: forward error bound, input gradient through the
//! custom autodiff op, no weight gradient, typed errors.
//!
//! Error bound used by `forward_within_quantization_bound` (symmetric 8-bit, block-wise):
//! a block `b` of weights gets scale `s_b = max_{w in b} |w| / 127` and each weight is stored as
//! `q = round(w / s_b)`, so `|w - s_b q| <= s_b / 2` (no clipping: `|w / s_b| <= 127`). For
//! `y_j = Σ_i x_i W_ij` the dequantized output differs by
//! `|Δy_j| <= Σ_i |x_i| |ΔW_ij| <= Σ_i |x_i| s_{b(i,j)} / 2  (<= ‖x‖₁ max_b s_b / 2)`,
//! plus f32 rounding of the two matmuls, covered by `1e-5 · Σ_i |x_i W_ij|`.

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::quantization::QuantStore;
use burn::tensor::Tensor;
use lavin_model::quant::{register_autodiff, Bits, FrozenQuantLinear, QuantError};

mod common;
use common::{assert_close, check_forward, check_input_grad, host_data, tensor, to_vec};

type P = NdArray<f32>;
type AD = Autodiff<P>;

fn setup() {
    // Tests build without the crate's `ndarray` feature, so register the autodiff type here.
    register_autodiff::<P, NoCheckpointing>();
}

#[test]
fn forward_within_quantization_bound_plain_backend() {
    setup();
    // NdArray stores 8-bit natively (one i8 per value), its only quantized store.
    let scheme = Bits::Eight.scheme_for::<P>(32, &Default::default());
    assert_eq!(scheme.store, QuantStore::Native);
    let e = check_forward::<P>(Bits::Eight);
    eprintln!("forward: {e:?}");
}

#[test]
fn forward_within_quantization_bound_autodiff() {
    setup();
    let e = check_forward::<AD>(Bits::Eight);
    eprintln!("forward: {e:?}");
}

#[test]
fn input_gradient_matches_dequantized_matmul() {
    setup();
    check_input_grad::<AD>(Bits::Eight, 1e-5);
}

#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    base: FrozenQuantLinear<B>,
    adapter: Linear<B>,
}

#[test]
fn weight_gets_no_gradient_and_adapter_does() {
    setup();
    let device = Default::default();
    let (d_in, d_out) = (32, 32);
    let model = Tiny::<AD> {
        base: FrozenQuantLinear::quantize(
            tensor(host_data(d_in * d_out, 6), [d_in, d_out]),
            Bits::Eight,
        )
        .expect("quantize"),
        adapter: LinearConfig::new(d_out, 8).init(&device),
    };
    // Only the adapter is a parameter: 32*8 weights + 8 biases.
    assert_eq!(model.num_params(), d_out * 8 + 8);

    let x = tensor::<AD, 2>(host_data(4 * d_in, 7), [4, d_in]);
    let loss = model
        .adapter
        .forward(model.base.forward(x))
        .powf_scalar(2.0)
        .sum();
    let grads = loss.backward();
    let params = GradientsParams::from_grads(grads, &model);
    // Weight + bias of the adapter, nothing for the frozen base.
    assert_eq!(params.len(), 2);
    assert!(params.get::<P, 2>(model.adapter.weight.id).is_some());

    // `valid()` lowers the quantized base to the inner backend and gives the same forward.
    let inner = model.valid();
    let xi = tensor::<P, 2>(host_data(4 * d_in, 7), [4, d_in]);
    let xa = tensor::<AD, 2>(host_data(4 * d_in, 7), [4, d_in]);
    assert_close(
        &to_vec(inner.base.forward(xi)),
        &to_vec(model.base.forward(xa)),
        1e-6,
        "valid() forward",
    );
    // No-op mappers/records must not touch the packed weight.
    let model = model.no_grad();
    let _ = model.into_record();
}

#[test]
fn untracked_input_works() {
    setup();
    let layer =
        FrozenQuantLinear::<AD>::quantize(tensor(host_data(32 * 32, 8), [32, 32]), Bits::Eight)
            .expect("quantize");
    let y = layer.forward(tensor::<AD, 2>(host_data(2 * 32, 9), [2, 32]));
    assert_eq!(y.dims(), [2, 32]);
}

#[test]
fn typed_errors() {
    setup();
    assert_eq!("4bit".parse::<Bits>(), Ok(Bits::Four));
    assert_eq!("8BIT".parse::<Bits>(), Ok(Bits::Eight));
    assert!(matches!(
        "16bit".parse::<Bits>(),
        Err(QuantError::UnknownBits(_))
    ));

    let err = FrozenQuantLinear::<P>::quantize(tensor(host_data(8 * 48, 10), [8, 48]), Bits::Eight)
        .expect_err("48 is not a multiple of 32");
    assert!(matches!(err, QuantError::BlockMismatch { .. }), "{err}");

    // An autodiff backend nobody registered.
    type Unreg = Autodiff<NdArray<f64>>;
    let w = Tensor::<Unreg, 2>::zeros([8, 32], &Default::default());
    let err = FrozenQuantLinear::quantize(w, Bits::Eight).expect_err("unregistered");
    assert!(
        matches!(err, QuantError::UnregisteredAutodiff { .. }),
        "{err}"
    );
}

#[test]
fn four_bit_on_ndarray_is_a_typed_error_or_works() {
    setup();
    // NdArray has no packed 4-bit store; whatever it does must not crash the caller.
    match FrozenQuantLinear::<P>::quantize(tensor(host_data(8 * 32, 11), [8, 32]), Bits::Four) {
        Err(QuantError::Unsupported { reason, .. }) => {
            eprintln!("4-bit on ndarray: unsupported: {reason}")
        }
        Ok(layer) => {
            eprintln!("4-bit on ndarray: quantized");
            let y = layer.forward(tensor::<P, 2>(host_data(2 * 8, 12), [2, 8]));
            assert_eq!(y.dims(), [2, 32]);
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}
