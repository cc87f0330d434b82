//! Memory and accuracy of [`FrozenQuantLinear`], on NdArray (CPU).
//!
//! `cargo bench -p lavin-model --bench quant_memory`
//!
//! Part 1 — memory: a counting global allocator measures bytes held by the model (resident) and
//! the peak during one forward+backward through a chain of N frozen linears `[d, d]` with a
//! tracked input, for three variants:
//! - `f32`: frozen f32 weights (what the base costs without quantization);
//! - `q8 from_inner`: the naive route — dequantize on the inner backend, lift, Burn matmul; the
//!   matmul node keeps each dequantized f32 weight until backward;
//! - `q8 custom op`: [`FrozenQuantLinear::forward`] — only the packed weight is referenced.
//!
//! Part 2 — accuracy: relative error of `x · W` for a 4096×4096 gaussian `W`, Burn's symmetric
//! block-wise Q8/Q4 (Q8 measured through Burn, Q4 simulated on the host with Burn's formula
//! because NdArray cannot pack Q4) vs NF4 (bitsandbytes' 16 normal-quantile levels, absmax per
//! block) computed on the host.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Tensor, TensorData};
use lavin_model::quant::{register_autodiff, Bits, FrozenQuantLinear};

/// Counts live heap bytes and their peak (why: Burn's NdArray allocates every tensor buffer on
/// the heap, so this is the memory a training step holds, independent of the OS allocator).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

type P = NdArray<f32>;
type AD = Autodiff<P>;

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    // Box–Muller over an LCG: deterministic, no extra dependency.
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut uni = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (((s >> 11) as f64) + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uni(), uni());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

fn t2<B: burn::tensor::backend::Backend>(v: Vec<f32>, shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    F32,
    NaiveFromInner,
    CustomOp,
}

/// Returns (resident bytes after building the model, peak bytes during forward+backward).
fn measure(variant: Variant, n_layers: usize, d: usize, rows: usize) -> (usize, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    let (f32_ws, q_ws): (Vec<Tensor<AD, 2>>, Vec<FrozenQuantLinear<AD>>) = match variant {
        Variant::F32 => (
            (0..n_layers)
                .map(|k| t2::<AD>(gaussian(d * d, k as u64), [d, d]).mul_scalar(0.05))
                .collect(),
            vec![],
        ),
        _ => (
            vec![],
            (0..n_layers)
                .map(|k| {
                    // Built tensor by tensor: the f32 weight is dropped after quantization.
                    let w = t2::<AD>(gaussian(d * d, k as u64), [d, d]).mul_scalar(0.05);
                    FrozenQuantLinear::quantize(w, Bits::Eight).expect("quantize")
                })
                .collect(),
        ),
    };
    let resident = LIVE.load(Ordering::Relaxed) - base;
    let x = t2::<AD>(gaussian(rows * d, 99), [rows, d]).require_grad();
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let mut h = x.clone();
    for k in 0..n_layers {
        h = match variant {
            Variant::F32 => h.matmul(f32_ws[k].clone()),
            Variant::NaiveFromInner => h.matmul(q_ws[k].dequantized()),
            Variant::CustomOp => q_ws[k].forward(h),
        };
    }
    let grads = h.powf_scalar(2.0).mean().backward();
    let g = x.grad(&grads).expect("input grad");
    assert_eq!(g.dims(), [rows, d]);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    drop((grads, g, x, f32_ws, q_ws));
    (resident, peak)
}

// ------------------------------------------------------------------------------------------------

/// NF4 levels (bitsandbytes `create_normal_map`), ascending.
const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

fn nf4_dequant(w: &[f32], block: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for (b, chunk) in w.chunks(block).enumerate() {
        let absmax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        for (k, &v) in chunk.iter().enumerate() {
            let n = v / absmax;
            let q = NF4
                .iter()
                .copied()
                .min_by(|a, c| (a - n).abs().total_cmp(&(c - n).abs()))
                .unwrap_or(0.0);
            out[b * block + k] = q * absmax;
        }
    }
    out
}

/// Burn's symmetric scheme on the host: `s = max|w| / qmax`, `q = clamp(round(w / s))`.
fn sym_dequant(w: &[f32], block: usize, qmax: f32) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for (b, chunk) in w.chunks(block).enumerate() {
        let s = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12) / qmax;
        for (k, &v) in chunk.iter().enumerate() {
            out[b * block + k] = (v / s).round().clamp(-qmax, qmax) * s;
        }
    }
    out
}

/// `x [rows, d] · W [d, d]` on the host (row-major), f64 accumulation.
fn host_matmul(x: &[f32], w: &[f32], rows: usize, d: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; rows * d];
    for r in 0..rows {
        for i in 0..d {
            let xi = x[r * d + i] as f64;
            let wrow = &w[i * d..(i + 1) * d];
            let yrow = &mut y[r * d..(r + 1) * d];
            for j in 0..d {
                yrow[j] += xi * wrow[j] as f64;
            }
        }
    }
    y
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn main() {
    register_autodiff::<P, NoCheckpointing>();
    let (d, rows) = (512, 16);
    println!("## memory: forward+backward over N frozen [{d}, {d}] linears, input [{rows}, {d}], NdArray");
    println!(
        "f32 weight = {:.2} MiB each; packed q8 (i8 + f32 scale per 32) = {:.2} MiB each",
        mib(d * d * 4),
        mib(d * d + d * d / 32 * 4)
    );
    println!("| variant | N | resident MiB | peak fwd+bwd MiB | peak - resident MiB |");
    println!("|---|---|---|---|---|");
    for n in [4usize, 8, 16] {
        for v in [Variant::F32, Variant::NaiveFromInner, Variant::CustomOp] {
            let (res, peak) = measure(v, n, d, rows);
            println!(
                "| {v:?} | {n} | {:.2} | {:.2} | {:.2} |",
                mib(res),
                mib(peak),
                mib(peak.saturating_sub(res))
            );
        }
    }

    let d = 4096;
    let rows = 8;
    println!("\n## accuracy: 4096x4096 gaussian W, x [{rows}, 4096] gaussian; ‖xŴ - xW‖/‖xW‖ and ‖Ŵ - W‖/‖W‖");
    let w = gaussian(d * d, 7);
    let x = gaussian(rows * d, 8);
    let y = host_matmul(&x, &w, rows, d);
    let wn: f64 = w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    let report = |name: &str, wq: &[f32]| {
        let yq = host_matmul(&x, wq, rows, d);
        let dw: f64 = w
            .iter()
            .zip(wq)
            .map(|(a, b)| ((*a - *b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        println!("| {name} | {:.3e} | {:.3e} |", rel(&yq, &y), dw / wn);
    };
    println!("| scheme | matmul rel err | weight rel err |");
    println!("|---|---|---|");
    let layer = FrozenQuantLinear::<P>::quantize(t2::<P>(w.clone(), [d, d]), Bits::Eight)
        .expect("quantize");
    let wq8: Vec<f32> = layer
        .dequantized()
        .into_data()
        .to_vec::<f32>()
        .expect("f32");
    drop(layer);
    report("Burn Q8S block 32 (measured)", &wq8);
    report("Q8S block 32 (host sim)", &sym_dequant(&w, 32, 127.0));
    report("Q4S block 32 (host sim of Burn)", &sym_dequant(&w, 32, 7.0));
    report("Q4S block 64 (host sim of Burn)", &sym_dequant(&w, 64, 7.0));
    report("NF4 block 32 (host)", &nf4_dequant(&w, 32));
    report(
        "NF4 block 64 (host, bitsandbytes default)",
        &nf4_dequant(&w, 64),
    );
}
