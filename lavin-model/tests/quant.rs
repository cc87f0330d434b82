//! Frozen quantized linear (issue 6) on NdArray: forward error bound, input gradient through the
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
use burn::tensor::{Tensor, TensorData};
use lavin_model::quant::{register_autodiff, Bits, FrozenQuantLinear, QuantError};

type P = NdArray<f32>;
type AD = Autodiff<P>;

fn setup() {
    // Tests build without the crate's `ndarray` feature, so register the autodiff type here.
    register_autodiff::<P, NoCheckpointing>();
}

/// Deterministic, roughly gaussian host data (sum of uniforms from an LCG), with a few outliers
/// so blocks get different scales.
fn host_data(n: usize, seed: u64) -> Vec<f32> {
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

fn tensor<B: Backend, const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// Per-element quantization half-step `s_b / 2` for blocks of `block` along the output dim.
fn half_steps(w: &[f32], d_in: usize, d_out: usize, block: usize, qmax: f32) -> Vec<f32> {
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

fn check_forward<B: Backend>() {
    let (n, d_in, d_out) = (3, 48, 64);
    let w = host_data(d_in * d_out, 1);
    let x = host_data(n * d_in, 2);
    let layer = FrozenQuantLinear::<B>::quantize(tensor(w.clone(), [d_in, d_out]), Bits::Eight)
        .expect("quantize");
    let half = half_steps(&w, d_in, d_out, 32, 127.0);

    // The stored weight itself: every value within half a step of the original.
    let wd = to_vec(layer.dequantized());
    for k in 0..w.len() {
        assert!(
            (wd[k] - w[k]).abs() <= half[k] * (1.0 + 1e-5) + 1e-7,
            "weight {k}: {} vs {} (half step {})",
            wd[k],
            w[k],
            half[k]
        );
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
                "y[{r},{j}]: err {err} > bound {bound}"
            );
            worst = worst.max(err / bound.max(1e-12));
        }
    }
    eprintln!("forward: worst error / bound = {worst:.3}");
}

#[test]
fn forward_within_quantization_bound_plain_backend() {
    setup();
    check_forward::<P>();
}

#[test]
fn forward_within_quantization_bound_autodiff() {
    setup();
    check_forward::<AD>();
}

fn assert_close(a: &[f32], b: &[f32], rel: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rel * scale,
            "{what}[{k}]: {x} vs {y} (rel tol {rel} of max {scale})"
        );
    }
}

#[test]
fn input_gradient_matches_dequantized_matmul() {
    setup();
    let (b, s, d_in, d_out) = (2, 3, 32, 64);
    let w = host_data(d_in * d_out, 3);
    let x = host_data(b * s * d_in, 4);
    let c = host_data(b * s * d_out, 5);
    let layer =
        FrozenQuantLinear::<AD>::quantize(tensor(w, [d_in, d_out]), Bits::Eight).expect("quantize");

    // Through the custom op (3-D input exercises the flatten/reshape path).
    let x1 = tensor::<AD, 3>(x.clone(), [b, s, d_in]).require_grad();
    let y1 = layer.forward(x1.clone());
    let loss1 = (y1.clone() * tensor::<AD, 3>(c.clone(), [b, s, d_out])).sum();
    let g1 = x1.grad(&loss1.backward()).expect("x grad (custom op)");

    // Reference: Burn's own matmul with the dequantized weight as an untracked constant.
    let x2 = tensor::<AD, 3>(x, [b, s, d_in]).require_grad();
    let w2 = layer.dequantized().unsqueeze::<3>();
    let y2 = x2.clone().matmul(w2);
    let loss2 = (y2.clone() * tensor::<AD, 3>(c, [b, s, d_out])).sum();
    let g2 = x2.grad(&loss2.backward()).expect("x grad (reference)");

    assert_close(&to_vec(y1), &to_vec(y2), 1e-5, "forward");
    assert_close(&to_vec(g1), &to_vec(g2), 1e-5, "input grad");
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
