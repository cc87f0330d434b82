//! The fused ops against Burn's composed versions: outputs and every gradient, plain, under
//! `Autodiff` and under `Autodiff<_, BalancedCheckpointing>`; flex's kernels, and the lean
//! autodiff versions that every other backend runs (here on ndarray).
#![allow(dead_code)]

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::Autodiff;
#[cfg(feature = "flex")]
use burn::backend::Flex;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use lavin_model::kernels::{self, reference};

/// Deterministic normal-ish values from `seed` (not the backend RNG, which is process-global
/// and shared with the tests running beside this one).
fn random<B: Backend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<B, D> {
    let n = shape.iter().product::<usize>();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..n)
        .map(|_| {
            // Sum of four uniforms: mean 0, variance 1/3 each side, close enough to a normal.
            (0..4)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .sum::<f32>()
                * 1.7
        })
        .collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn close<B: Backend, const D: usize>(what: &str, got: Tensor<B, D>, want: Tensor<B, D>) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let got = got.into_data().to_vec::<f32>().unwrap();
    let want = want.into_data().to_vec::<f32>().unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 2e-5 + 1e-4 * w.abs(),
            "{what}: element {i} is {g}, composed gives {w}"
        );
    }
}

/// `f` on tracked copies of `inputs`: its output, and the gradients of every input for the
/// output weighted by a fixed random tensor.
fn output_and_grads<B: AutodiffBackend, const N: usize, const D: usize>(
    inputs: &[Tensor<B, D>; N],
    f: &dyn Fn([Tensor<B, D>; N]) -> Tensor<B, D>,
) -> (Tensor<B::InnerBackend, D>, [Tensor<B::InnerBackend, D>; N]) {
    let xs = inputs.clone().map(|x| x.detach().require_grad());
    let y = f(xs.clone());
    let w = random::<B, D>(y.dims(), 99).cast(y.dtype());
    let grads = (y.clone() * w).sum().backward();
    let gs = xs.map(|x| x.grad(&grads).expect("every input has a gradient"));
    (y.inner(), gs)
}

/// Runs `fused` and `composed` on the same tracked inputs, weights the output by a fixed random
/// tensor, and compares outputs and the gradients of every input.
fn check<B: AutodiffBackend, const N: usize, const D: usize>(
    name: &str,
    inputs: [Tensor<B, D>; N],
    fused_op: impl Fn([Tensor<B, D>; N]) -> Tensor<B, D>,
    composed: impl Fn([Tensor<B, D>; N]) -> Tensor<B, D>,
) {
    let (y1, g1) = output_and_grads(&inputs, &fused_op);
    let (y2, g2) = output_and_grads(&inputs, &composed);
    close(&format!("{name} output"), y1, y2);
    for (i, (a, b)) in g1.into_iter().zip(g2).enumerate() {
        close(&format!("{name} grad {i}"), a, b);
    }
}

/// A widening op (half inputs or a half output, f32 inside) against the composed op between
/// the same casts: output dtype `out`, gradients in their inputs' dtypes, values equal to a
/// half rounding.
fn check_widening<B: AutodiffBackend, const N: usize, const D: usize>(
    name: &str,
    inputs: [Tensor<B, D>; N],
    out: burn::tensor::DType,
    widening: impl Fn([Tensor<B, D>; N]) -> Tensor<B, D>,
    composed: impl Fn([Tensor<B, D>; N]) -> Tensor<B, D>,
) {
    use burn::tensor::DType;
    let (y1, g1) = output_and_grads(&inputs, &widening);
    let (y2, g2) = output_and_grads(&inputs, &composed);
    assert_eq!(y1.dtype(), out, "{name} output dtype");
    let close_half =
        |what: String, a: Tensor<B::InnerBackend, D>, b: Tensor<B::InnerBackend, D>| {
            let a = a.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
            let b = b.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
            for (j, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (x - y).abs() <= 2e-3 * (1.0 + y.abs()),
                    "{what} element {j}: {x} vs {y}"
                );
            }
        };
    close_half(format!("{name} output"), y1, y2);
    for (i, ((a, b), x)) in g1.into_iter().zip(g2).zip(&inputs).enumerate() {
        assert_eq!(a.dtype(), x.dtype(), "{name} grad {i} dtype");
        close_half(format!("{name} grad {i}"), a, b);
    }
}

/// The widening ops of a half base on `B` (a lean backend with f16): the FFN gate, rotary,
/// the attention scores and probabilities.
fn widening_ops<B: AutodiffBackend>() {
    use burn::tensor::{Bool, DType};
    let f16 = |t: Tensor<B, 2>| t.cast(DType::F16);
    let wide = |t: Tensor<B, 2>| t.cast(DType::F32);

    let gate = [30, 31].map(|seed| f16(random::<B, 2>([6, 40], seed)));
    check_widening(
        "silu_gate_widening",
        gate,
        DType::F32,
        |[a, b]| kernels::silu_gate_widening(a, b, DType::F32),
        |[a, b]| reference::silu_gate(wide(a), wide(b)),
    );

    let (cos, sin) = (random::<B, 2>([5, 8], 33), random::<B, 2>([5, 8], 34));
    let x = random::<B, 3>([2, 5, 16], 35).cast(DType::F16);
    check_widening(
        "rope (half)",
        [x],
        DType::F16,
        |[x]| kernels::rope(x, cos.clone(), sin.clone()),
        |[x]| reference::rope(x.cast(DType::F32), cos.clone(), sin.clone()).cast(DType::F16),
    );

    let (q, k) = (
        random::<B, 4>([2, 3, 5, 8], 36).cast(DType::F16),
        random::<B, 4>([2, 3, 8, 7], 37).cast(DType::F16),
    );
    // Same rank for both inputs: k is passed transposed already.
    check_widening(
        "matmul_wide",
        [q, k],
        DType::F32,
        |[q, k]| kernels::matmul_wide(q, k),
        |[q, k]| q.cast(DType::F32).matmul(k.cast(DType::F32)),
    );

    let scores = random::<B, 4>([2, 3, 5, 7], 38);
    let mask = Tensor::<B, 2, Bool>::from_data(
        TensorData::new(
            (0..35).map(|i| i % 7 > i / 7 + 2).collect::<Vec<_>>(),
            [5, 7],
        ),
        &Default::default(),
    );
    let bias =
        Tensor::<B, 2>::zeros([5, 7], &Default::default()).mask_fill(mask, f32::NEG_INFINITY);
    for bias in [None, Some(bias)] {
        check_widening(
            "softmax_scaled_as",
            [scores.clone()],
            DType::F16,
            |[x]| kernels::softmax_scaled_as(x, 0.3, bias.clone(), DType::F16),
            |[x]| reference::softmax_scaled(x, 0.3, bias.clone()).cast(DType::F16),
        );
    }
}

fn all_ops<B: AutodiffBackend>() {
    let logits = random::<B, 2>([6, 11], 13);
    let ids = Tensor::<B, 1, Int>::from_ints([0, 3, 10, 7, 7, 1], &Default::default());
    check(
        "cross_entropy",
        [logits],
        |[x]| kernels::cross_entropy(x, ids.clone()).unsqueeze_dim(1),
        |[x]| reference::cross_entropy(x, ids.clone()).unsqueeze_dim(1),
    );
    let x = random::<B, 3>([2, 5, 24], 1);
    let table = |seed| random::<B, 2>([5, 8], seed);
    // Rope's tables get no gradient (constants), so only x is tracked there.
    let (cos, sin) = (table(2), table(3));
    check(
        "rope",
        [x.clone()],
        |[x]| kernels::rope(x, cos.clone(), sin.clone()),
        |[x]| reference::rope(x, cos.clone(), sin.clone()),
    );
    let mut scores = random::<B, 3>([2, 5, 7], 4);
    // A masked (-inf) entry as attention has, never a whole row.
    scores = scores.slice_assign(
        [0..1, 1..2, 3..4],
        Tensor::full([1, 1, 1], f32::NEG_INFINITY, &Default::default()),
    );
    check(
        "softmax",
        [scores],
        |[s]| kernels::softmax_scaled(s, 0.35, None),
        |[s]| reference::softmax_scaled(s, 0.35, None),
    );
    // An attention mask as bias [L, S] shared by the leading dims: -inf above the diagonal.
    let above: Vec<f32> = (0..5)
        .flat_map(|i| (0..7).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let bias = Tensor::<B, 2>::from_data(TensorData::new(above, [5, 7]), &Default::default());
    let scores = random::<B, 3>([2, 5, 7], 15);
    check(
        "softmax with bias",
        [scores],
        |[s]| kernels::softmax_scaled(s, 0.5, Some(bias.clone())),
        |[s]| reference::softmax_scaled(s, 0.5, Some(bias.clone())),
    );
    let gamma = random::<B, 1>([24], 5);
    check(
        "rms_norm x",
        [x.clone()],
        |[x]| kernels::rms_norm(x, gamma.clone(), 1e-5),
        |[x]| reference::rms_norm(x, gamma.clone(), 1e-5),
    );
    let x2 = x.clone();
    check(
        "rms_norm gamma",
        [gamma.clone()],
        |[g]| {
            kernels::rms_norm(x2.clone(), g, 1e-5)
                .sum_dim(0)
                .sum_dim(1)
                .reshape([24])
        },
        |[g]| {
            reference::rms_norm(x2.clone(), g, 1e-5)
                .sum_dim(0)
                .sum_dim(1)
                .reshape([24])
        },
    );
    let b = random::<B, 3>([2, 5, 24], 6);
    check(
        "silu_gate",
        [x.clone(), b],
        |[a, b]| kernels::silu_gate(a, b),
        |[a, b]| reference::silu_gate(a, b),
    );
    let heads = random::<B, 4>([2, 5, 3, 4], 12);
    check(
        "swap_middle",
        [heads],
        |[t]| kernels::swap_middle(t),
        |[t]| t.swap_dims(1, 2),
    );
    check(
        "quick_gelu",
        [x],
        |[u]| kernels::quick_gelu(u),
        |[u]| reference::swish(u, 1.702),
    );
}

#[cfg(feature = "flex")]
#[test]
fn fused_ops_match_composed_under_autodiff() {
    all_ops::<Autodiff<Flex>>();
}

#[cfg(feature = "flex")]
#[test]
fn fused_ops_match_composed_with_checkpointing() {
    all_ops::<Autodiff<Flex, BalancedCheckpointing>>();
}

#[cfg(feature = "ndarray")]
#[test]
fn lean_ops_match_composed_on_ndarray() {
    use burn::backend::NdArray;
    type Nd = Autodiff<NdArray<f32>>;
    type NdCkpt = Autodiff<NdArray<f32>, BalancedCheckpointing>;
    // Otherwise both sides would be the composed version.
    assert!(kernels::has_lean_ops::<Nd>() && kernels::has_lean_ops::<NdCkpt>());
    assert!(!kernels::has_lean_ops::<NdArray<f32>>());
    all_ops::<Nd>();
    all_ops::<NdCkpt>();
}

/// The same maths on a CubeCL backend, as CUDA runs it (CI: lavapipe).
#[cfg(feature = "wgpu")]
#[test]
fn lean_ops_match_composed_on_wgpu() {
    use burn::backend::Wgpu;
    type W = Autodiff<Wgpu>;
    assert!(kernels::has_lean_ops::<W>());
    all_ops::<W>();
    all_ops::<Autodiff<Wgpu, BalancedCheckpointing>>();

    // A half base: widened inside the op, kept half in the graph.
    widening_ops::<W>();
    widening_ops::<Autodiff<Wgpu, BalancedCheckpointing>>();
}

#[cfg(feature = "flex")]
#[test]
fn fused_ops_match_composed_without_autodiff() {
    // Large enough to split into several rayon tasks.
    let x = random::<Flex, 3>([3, 40, 512], 7);
    let (cos, sin) = (
        random::<Flex, 2>([40, 64], 8),
        random::<Flex, 2>([40, 64], 9),
    );
    close(
        "rope",
        kernels::rope(x.clone(), cos.clone(), sin.clone()),
        reference::rope(x.clone(), cos, sin),
    );
    close(
        "softmax",
        kernels::softmax_scaled(x.clone(), 0.125, None),
        reference::softmax_scaled(x.clone(), 0.125, None),
    );
    let gamma = random::<Flex, 1>([512], 10);
    close(
        "rms_norm",
        kernels::rms_norm(x.clone(), gamma.clone(), 1e-6),
        reference::rms_norm(x.clone(), gamma, 1e-6),
    );
    let b = random::<Flex, 3>([3, 40, 512], 11);
    close(
        "silu_gate",
        kernels::silu_gate(x.clone(), b.clone()),
        reference::silu_gate(x.clone(), b),
    );
    close(
        "quick_gelu",
        kernels::quick_gelu(x.clone()),
        reference::swish(x.clone(), 1.702),
    );
    let heads = x.clone().reshape([3, 40, 8, 64]);
    close(
        "swap_middle",
        kernels::swap_middle(heads.clone()),
        heads.swap_dims(1, 2),
    );
    // One row: the matrix-vector kernel; 2-16 rows: gemm on column blocks split across
    // threads, reassembled (n not a multiple of 16); 17: Burn's matmul.
    for m in [1, 2, 5, 16, 17] {
        let (x, w) = (
            random::<Flex, 2>([m, 37], 20),
            random::<Flex, 2>([37, 1001], 21),
        );
        close(
            &format!("matmul m={m}"),
            kernels::matmul(x.clone(), w.clone()),
            x.matmul(w),
        );
    }
    // One row and a weight large enough for the matrix-vector kernel to split its columns.
    let (x1, w1) = (
        random::<Flex, 2>([1, 257], 22),
        random::<Flex, 2>([257, 1001], 23),
    );
    close(
        "matmul m=1 large",
        kernels::matmul(x1.clone(), w1.clone()),
        x1.matmul(w1),
    );
    // A view (non-contiguous input) goes through the same kernels after a copy.
    let t = x.clone().swap_dims(1, 2);
    close(
        "softmax of a view",
        kernels::softmax_scaled(t.clone(), 1.0, None),
        reference::softmax_scaled(t, 1.0, None),
    );
}
