//! LaVIN-lite (`--bits`) in lavin-train on the bundled tiny base (NdArray, CPU):
//! - loading with 8-bit block linears quantizes block by block, gives the same weights as
//!   quantizing the loaded dense model, and logits close to the dense base;
//! - one training step changes the adapters only;
//! - `train` and `bench` run with `--bits 8bit`, record it, and refuse `--bits 4bit` on ndarray
//!   before any work.
//!
//! Logit bound (derivation in `lavin-model/tests/quant_model.rs`): with
//! `ε_l = ‖ΔW_l‖_F / ‖W_l‖_F` (8-bit rounding error of layer `l`, itself at most
//! `max|w| / (2 · 127 · rms(w))`), first-order perturbations of the `7 · n_layers` quantized
//! linears add up, so `‖Δlogits‖ / ‖logits‖ <= Σ_l ε_l`.

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use clap::Parser;
use lavin_backends::{BackendKind, Precision};
use lavin_model::bundled;
use lavin_model::llama::FrozenLinear;
use lavin_model::quant::BaseBits;
use lavin_model::quant::Bits;
use lavin_model::weights::load_lavin;
use lavin_model::{Lavin, LavinConfig};
use lavin_parity::host;
use lavin_parity::host_params;
use lavin_train::bench::random_batch;
use lavin_train::cli::{BenchArgs, TrainArgs};
use lavin_train::config::TrainConfig;
use lavin_train::optim::{step_module, AdamW, AdamWConfig};
use lavin_train::params::lavin_trainable_name;
use lavin_train::run::{run, RunOptions};

type P = NdArray<f32>;
type AD = Autodiff<P>;

const FOUR_BIT_ERROR: &str =
    "4-bit needs a CubeCL backend (wgpu or cuda); use --bits 8bit on ndarray";

fn load<B: Backend>(config: &LavinConfig, bits: Option<Bits>) -> Lavin<B> {
    let spec = lavin_model::weights::LoadSpec {
        format: lavin_model::llama::BaseFormat {
            bits,
            ..Default::default()
        },
        ..bundled::spec(&bundled::base_dir())
    };
    load_lavin::<B>(config, &spec, &Default::default()).expect("bundled tiny base loads")
}

fn same_adapters<B: Backend>(model: Lavin<B>, from: &Lavin<B>) -> Lavin<B> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapters.safetensors");
    lavin_model::weights::save_adapters(from, &path).unwrap();
    lavin_model::weights::load_adapters(model, &path, &Default::default()).unwrap()
}

fn linears<B: Backend>(m: &Lavin<B>) -> Vec<&FrozenLinear<B>> {
    m.llama.base_linears().collect()
}

fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let n: f32 = b.iter().map(|y| y * y).sum();
    (d / n.max(1e-30)).sqrt()
}

#[test]
fn tiny_base_loads_quantized_with_logits_close_to_dense() {
    let config = bundled::config();
    let device = Default::default();
    let dense = load::<P>(&config, None);
    // Adapters (adapter_proj, modality embedding) are freshly random at each load: give the
    // quantized model the dense one's, so only the base differs.
    let quant = same_adapters(load::<P>(&config, Some(Bits::Eight)), &dense);
    assert_eq!(quant.llama.base_bits(), Some(Bits::Eight));
    assert!(linears(&quant)
        .iter()
        .all(|l| l.bits() == Some(Bits::Eight)));

    // The per-block loader quantizes exactly the weights the dense loader reads.
    let requant = load::<P>(&config, None).quantize_base(Bits::Eight).unwrap();
    for (a, b) in linears(&quant).iter().zip(linears(&requant)) {
        assert_eq!(host(a.weight()), host(b.weight()));
    }

    let mut bound = 0.0;
    for (d, q) in linears(&dense).iter().zip(linears(&quant)) {
        let w = host(d.weight());
        let eps = rel_l2(&host(q.weight()), &w);
        let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let rms = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!(
            eps > 0.0 && eps <= max / (2.0 * 127.0 * rms),
            "weight error {eps}"
        );
        bound += eps;
    }
    let batch = random_batch::<P>(&config, 2, 24, &device);
    let ld = host(dense.forward_train(batch.clone()).logits);
    let lq = host(quant.forward_train(batch).logits);
    let e = rel_l2(&lq, &ld);
    eprintln!("tiny base 8-bit: logits rel err {e:.2e} (bound Σε {bound:.2e})");
    assert!(e > 0.0 && e <= bound, "logits rel err {e} vs bound {bound}");
}

#[test]
fn training_step_on_quantized_base_changes_adapters_only() {
    let config = bundled::config();
    let device = Default::default();
    let model = load::<AD>(&config, Some(Bits::Eight));
    let before = host_params(&model.valid());
    let base_before: Vec<Vec<f32>> = linears(&model).iter().map(|l| host(l.weight())).collect();

    let out = model.forward_train(random_batch::<AD>(&config, 2, 24, &device));
    let mut grads = GradientsParams::from_grads(out.loss.backward(), &model);
    let mut optim = AdamW::<P>::new(AdamWConfig::default());
    let (model, _) = step_module(
        &mut optim,
        model,
        &mut grads,
        1e-2,
        1.0,
        &lavin_trainable_name,
    )
    .unwrap();

    let after = host_params(&model.valid());
    assert_eq!(before.len(), after.len());
    let mut changed = 0;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.path, a.path);
        let trainable = lavin_trainable_name(&b.path).is_some();
        if !trainable {
            assert_eq!(b.data, a.data, "frozen {} changed", b.path);
        } else if b.data != a.data {
            changed += 1;
        }
    }
    assert!(changed > 0, "no adapter changed");
    // The quantized weights are not parameters at all; they are untouched too.
    for (b, l) in base_before.iter().zip(linears(&model)) {
        assert_eq!(b, &host(l.weight()));
    }
}

/// One step of the tiny preset's bench on ndarray at `bits` (parsed as the command line would be,
/// so the bench's other flags keep their defaults).
fn tiny_bench(bits: &str) -> BenchArgs {
    let argv = [
        "lavin-train",
        "bench",
        "--preset",
        "tiny",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--backend",
        "ndarray",
        "--bits",
        bits,
    ];
    match lavin_train::cli::Cli::try_parse_from(argv).unwrap().command {
        Some(lavin_train::cli::Command::Bench(b)) => b,
        _ => unreachable!("parsed bench"),
    }
}

fn train_args(out: &std::path::Path, bits: &str) -> TrainArgs {
    TrainArgs {
        output_dir: Some(out.to_path_buf()),
        epochs: Some(1),
        warmup_epochs: Some(0.5),
        batch_size: Some(4),
        checkpoint_every: Some(0),
        keep_last: Some(0),
        bits: Some(bits.parse().unwrap()),
        ..TrainArgs::default()
    }
}

#[test]
fn train_runs_with_8bit_and_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let opts = RunOptions {
        train_limit: 8,
        val_limit: 2,
    };
    let s = run(&train_args(&out, "8bit"), &opts).unwrap();
    assert_eq!(s.steps, 2);
    assert!(s.final_loss.is_finite());
    let saved = TrainConfig::load(&out.join("config.toml")).unwrap();
    assert_eq!(saved.bits, BaseBits::Eight);
    // The precision actually used is recorded (ndarray: f32).
    assert_eq!(saved.precision, Some(Precision::F32));
}

#[test]
fn half_precision_on_ndarray_fails_before_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = train_args(&out, "16bit");
    args.backend = Some(BackendKind::Ndarray);
    args.precision = Some(Precision::F16);
    let e = format!("{:#}", run(&args, &RunOptions::default()).unwrap_err());
    assert!(e.contains("ndarray is f32 only"), "{e}");
    assert!(!out.exists(), "output written before the check");
}

#[test]
fn four_bit_on_ndarray_fails_before_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = train_args(&out, "4bit");
    args.backend = Some(BackendKind::Ndarray);
    let e = format!("{:#}", run(&args, &RunOptions::default()).unwrap_err());
    assert!(e.contains(FOUR_BIT_ERROR), "{e}");
    assert!(!out.exists(), "output written before the check");

    let bench = tiny_bench("4bit");
    let e = format!("{:#}", lavin_train::bench::run(&bench).unwrap_err());
    assert!(e.contains(FOUR_BIT_ERROR), "{e}");
}

#[test]
fn bench_reports_packed_base_with_8bit() {
    // With the blocks recomputed, as LaVIN-lite is meant to train.
    let args = BenchArgs {
        gradient_checkpointing: true,
        ..tiny_bench("8bit")
    };
    let r = lavin_train::bench::run(&args).unwrap();
    assert_eq!(r.bits, "8bit");
    assert!(r.gradient_checkpointing && r.median_forward_seconds.is_none());
    // 8-bit values + one f32 scale per 32: 1.125 of 4 bytes per weight.
    let ratio = r.block_linears_stored_mib / r.block_linears_f32_mib;
    assert!((ratio - 1.125 / 4.0).abs() < 1e-6, "ratio {ratio}");
}
