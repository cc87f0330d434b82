//! `lavin-train bench`: warm-up + timed training steps (forward + backward + AdamW on the
//! adapters) on random weights at a preset's shapes; half the batch items carry an image.
//! Prints median step time, samples/s, tokens/s, peak RSS (`VmHWM`) and one JSON line.

use std::time::Instant;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};

use lavin_model::backends::{BackendKind, BackendPrefs, Precision};
use lavin_model::{LavinBatch, LavinConfig};

use crate::cli::BenchArgs;
use crate::optim::{step_module, AdamW, AdamWConfig};
use crate::params::lavin_trainable_name;

/// The measured numbers (the JSON line).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub preset: String,
    pub backend: String,
    pub batch_size: usize,
    pub seq_len: usize,
    pub steps: usize,
    pub warmup: usize,
    pub median_step_seconds: f64,
    pub mean_step_seconds: f64,
    pub samples_per_second: f64,
    pub tokens_per_second: f64,
    pub peak_rss_mib: Option<f64>,
    pub trainable_params: usize,
}

/// `(config, default batch)` of a bench preset.
pub fn preset(name: &str) -> anyhow::Result<(LavinConfig, usize)> {
    Ok(match name {
        "tiny" => (crate::pretrain::tiny_default(), 8),
        "small" => (LavinConfig::small(), 4),
        "7b-shape" | "7b" => (LavinConfig::llama_7b(), 4),
        o => bail!("--preset: unknown `{o}` (tiny, small, 7b-shape)"),
    })
}

/// Peak resident set size in MiB (`VmHWM` of /proc/self/status; Linux only).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Random batch: tokens in `[3, vocab)`, labels = tokens with the first half zeroed,
/// even-indexed items with a random image.
pub fn random_batch<B: Backend>(
    cfg: &LavinConfig,
    batch: usize,
    seq: usize,
    device: &B::Device,
) -> LavinBatch<B> {
    let vocab = cfg.llama.vocab_size as i64;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let toks: Vec<i64> = (0..batch * seq)
        .map(|_| 3 + (next() % (vocab as u64 - 3)) as i64)
        .collect();
    let labels: Vec<i64> = toks
        .iter()
        .enumerate()
        .map(|(i, &t)| if i % seq < seq / 2 { 0 } else { t })
        .collect();
    let hw = cfg.clip.input_resolution;
    let ind: Vec<i64> = (0..batch).map(|i| (i % 2 == 0) as i64).collect();
    let mask: Vec<f32> = ind
        .iter()
        .flat_map(|&m| std::iter::repeat_n(m as f32, 3 * hw * hw))
        .collect();
    let images = Tensor::<B, 4>::random([batch, 3, hw, hw], Distribution::Normal(0.0, 1.0), device)
        * Tensor::<B, 4>::from_data(TensorData::new(mask, [batch, 3, hw, hw]), device);
    LavinBatch {
        tokens: Tensor::<B, 2, Int>::from_data(TensorData::new(toks, [batch, seq]), device),
        labels: Tensor::<B, 2, Int>::from_data(TensorData::new(labels, [batch, seq]), device),
        images,
        indicators: Tensor::<B, 1, Int>::from_data(TensorData::new(ind, [batch]), device),
    }
}

/// Run the benchmark on backend `B`.
pub fn bench_on<B: Backend>(
    args: &BenchArgs,
    backend: &str,
    device: &B::Device,
) -> anyhow::Result<BenchReport> {
    type AB<B> = Autodiff<B>;
    let (mut cfg, default_batch) = preset(&args.preset)?;
    let batch = args.batch_size.unwrap_or(default_batch).max(1);
    let seq = args.seq_len.unwrap_or(cfg.max_seq_len).max(2);
    cfg.max_seq_len = seq;
    B::seed(device, 0);
    let mut model = cfg.init::<AB<B>>(device);
    let trainable_params: usize = crate::optim::trainable_params(&model, &lavin_trainable_name)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let mut optim = AdamW::<B>::new(AdamWConfig {
        weight_decay: 0.02,
        ..AdamWConfig::default()
    });
    eprintln!(
        "bench: preset {} ({backend}), batch {batch}, seq {seq}, {} trainable params, {} warm-up + {} timed steps",
        args.preset, trainable_params, args.warmup, args.steps
    );
    let mut times = Vec::new();
    for i in 0..args.warmup + args.steps {
        let b = random_batch::<AB<B>>(&cfg, batch, seq, device);
        let t = Instant::now();
        let out = model.forward_train(b);
        let mut grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = step_module(
            &mut optim,
            model,
            &mut grads,
            1e-4,
            1.0,
            &lavin_trainable_name,
        )?
        .0;
        // Synchronise: read one adapter value back.
        let _ = model
            .adapter_modality_embedding
            .weight
            .val()
            .inner()
            .slice([0..1, 0..1])
            .into_data();
        let dt = t.elapsed().as_secs_f64();
        if i >= args.warmup {
            times.push(dt);
            eprintln!("bench: step {} {:.3}s", i + 1 - args.warmup, dt);
        }
    }
    if times.is_empty() {
        bail!("--steps must be at least 1");
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    Ok(BenchReport {
        preset: args.preset.clone(),
        backend: backend.into(),
        batch_size: batch,
        seq_len: seq,
        steps: times.len(),
        warmup: args.warmup,
        median_step_seconds: median,
        mean_step_seconds: mean,
        samples_per_second: batch as f64 / median,
        tokens_per_second: (batch * seq) as f64 / median,
        peak_rss_mib: peak_rss_mib(),
        trainable_params,
    })
}

/// `lavin-train bench`: pick the backend, run, print.
pub fn run(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let forced = args
        .backend
        .as_deref()
        .map(str::parse::<BackendKind>)
        .transpose()?;
    let precision = args
        .precision
        .as_deref()
        .map(str::parse::<Precision>)
        .transpose()?;
    let choice = BackendPrefs::embedded()?
        .select("train", forced, precision)
        .context("backend")?;
    let name = choice.to_string();
    let r: BenchReport = match choice.backend {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => {
            bench_on::<burn::backend::NdArray<f32>>(args, &name, &Default::default())?
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => bench_on::<burn::backend::Wgpu>(args, &name, &Default::default())?,
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => bench_on::<burn::backend::Cuda>(args, &name, &Default::default())?,
        #[allow(unreachable_patterns)]
        other => bail!("backend {other} is not compiled into this binary"),
    };
    println!(
        "median step {:.4}s | {:.2} samples/s | {:.0} tokens/s | peak RSS {}",
        r.median_step_seconds,
        r.samples_per_second,
        r.tokens_per_second,
        r.peak_rss_mib
            .map(|m| format!("{m:.0} MiB"))
            .unwrap_or_else(|| "n/a".into())
    );
    println!("{}", serde_json::to_string(&r)?);
    Ok(r)
}
