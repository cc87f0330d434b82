//! `lavin-train bench`: warm-up + timed training steps (forward + backward + AdamW on the
//! adapters) on random weights at a preset's shapes; half the batch items carry an image.
//! Prints median step time, samples/s, tokens/s, peak RSS (`VmHWM`) and one JSON line.
//!
//! `--bits 8bit|4bit` quantizes the frozen LLaMA block linears (LaVIN-lite) after building the
//! model; `--gradient-checkpointing` recomputes each ViT and LLaMA block in backward
//! ([`lavin_model::recompute`]), `--checkpoint-ops` runs on `Autodiff<_, BalancedCheckpointing>`.

use std::time::Instant;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};

use lavin_model::backends::{BackendChoice, BackendKind, BackendPrefs};
use lavin_model::llama::{BaseFormat, BaseLinear};
use lavin_model::quant::{check_backend, parse_bits};
use lavin_model::{LavinBatch, LavinConfig};

use crate::cli::BenchArgs;
use crate::optim::{clip_and_step, AdamW, AdamWConfig};
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
    /// Median time of the forward pass alone (loss computed, graph recorded); not measured
    /// with block recomputation, whose backward passes follow inside one call.
    pub median_forward_seconds: Option<f64>,
    pub mean_step_seconds: f64,
    pub samples_per_second: f64,
    pub tokens_per_second: f64,
    pub peak_rss_mib: Option<f64>,
    pub trainable_params: usize,
    /// `16bit`, `8bit` or `4bit`.
    pub bits: String,
    /// Dtype of the dense frozen LLaMA weights (`f32`, `fp16`, `bf16`).
    pub precision: String,
    /// `--gradient-checkpointing`: ViT and LLaMA blocks recomputed in backward.
    pub gradient_checkpointing: bool,
    /// `--checkpoint-ops`: Burn's `BalancedCheckpointing`.
    pub checkpoint_ops: bool,
    /// `--composed-ops`: Burn's composed ops instead of the fused / lean ones.
    pub composed_ops: bool,
    /// Bytes of the LLaMA block linears' weights at f32 (MiB).
    pub block_linears_f32_mib: f64,
    /// Bytes of the same weights as stored (packed values + f32 block scales, or half floats).
    pub block_linears_stored_mib: f64,
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

/// Run the benchmark on backend `B` (with or without gradient checkpointing).
pub fn bench_on<B: Backend>(
    args: &BenchArgs,
    choice: &BackendChoice,
    device: &B::Device,
) -> anyhow::Result<BenchReport> {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    lavin_model::fused::set_enabled(!args.composed_ops);
    if args.checkpoint_ops {
        bench_ad::<Autodiff<B, BalancedCheckpointing>>(args, choice, device)
    } else {
        bench_ad::<Autodiff<B>>(args, choice, device)
    }
}

fn bench_ad<AB: AutodiffBackend>(
    args: &BenchArgs,
    choice: &BackendChoice,
    device: &AB::Device,
) -> anyhow::Result<BenchReport> {
    let (backend, precision) = (choice.to_string(), choice.precision);
    let bits = parse_bits(&args.bits).with_context(|| format!("--bits {}", args.bits))?;
    if let Some(bits) = bits {
        // Fails before building anything if the backend cannot store this width.
        lavin_model::quant::probe::<AB>(bits, device).with_context(|| format!("--bits {bits}"))?;
    }
    let (mut cfg, default_batch) = preset(&args.preset)?;
    let batch = args.batch_size.unwrap_or(default_batch).max(1);
    let seq = args.seq_len.unwrap_or(cfg.max_seq_len).max(2);
    cfg.max_seq_len = seq;
    AB::seed(device, 0);
    // Block by block: the f32 weights of one block are dropped before the next is converted.
    let model = cfg
        .init::<AB>(device)
        .convert_base(BaseFormat { precision, bits })?;
    let f32_bytes = block_linear_elems(&cfg) * 4;
    let stored_bytes: usize = model
        .llama
        .base_linears()
        .map(|l| match l {
            BaseLinear::Quant(q) => q.packed_bytes(),
            BaseLinear::Dense(d) => {
                let w = d.weight.val();
                w.shape().num_elements() * w.dtype().size()
            }
        })
        .sum();
    let mut model = model;
    let trainable_params: usize = crate::optim::trainable_params(&model, &lavin_trainable_name)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let mut optim = AdamW::<AB::InnerBackend>::new(AdamWConfig {
        weight_decay: 0.02,
        ..AdamWConfig::default()
    });
    eprintln!(
        "bench: preset {} ({backend}), batch {batch}, seq {seq}, {} trainable params, {} warm-up + {} timed steps, \
         block linears {} {} ({:.1} MiB stored, {:.1} MiB at f32){}{}{}",
        args.preset,
        trainable_params,
        args.warmup,
        args.steps,
        args.bits,
        precision,
        stored_bytes as f64 / MIB,
        f32_bytes as f64 / MIB,
        if args.gradient_checkpointing { ", blocks recomputed" } else { "" },
        if args.checkpoint_ops { ", BalancedCheckpointing" } else { "" },
        if args.composed_ops { ", composed ops" } else { "" }
    );
    let (mut times, mut forward_times) = (Vec::new(), Vec::new());
    for i in 0..args.warmup + args.steps {
        let b = random_batch::<AB>(&cfg, batch, seq, device);
        let t = Instant::now();
        let (forward, mut grads) = if args.gradient_checkpointing {
            let out = model.loss_and_grads_recomputed(b, 1.0, i as u64);
            (None, out.grads.context("non-finite loss")?)
        } else {
            let loss = model.loss(b);
            // Reading the loss waits for the forward pass (asynchronous backends).
            let _ = loss.clone().inner().into_data();
            let forward = t.elapsed().as_secs_f64();
            (
                Some(forward),
                GradientsParams::from_grads(loss.backward(), &model),
            )
        };
        // As the trainer: the gradient norm (read back every step), then AdamW.
        model = clip_and_step(
            &mut optim,
            model,
            &mut grads,
            1e-4,
            None,
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
            forward_times.extend(forward);
            let forward = forward.map_or(String::new(), |f| format!(" (forward {f:.3}s)"));
            eprintln!("bench: step {} {dt:.3}s{forward}", i + 1 - args.warmup);
        }
    }
    if times.is_empty() {
        bail!("--steps must be at least 1");
    }
    let median = median(&times);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    Ok(BenchReport {
        preset: args.preset.clone(),
        backend,
        batch_size: batch,
        seq_len: seq,
        steps: times.len(),
        warmup: args.warmup,
        median_step_seconds: median,
        median_forward_seconds: (!forward_times.is_empty()).then(|| self::median(&forward_times)),
        mean_step_seconds: mean,
        samples_per_second: batch as f64 / median,
        tokens_per_second: (batch * seq) as f64 / median,
        peak_rss_mib: peak_rss_mib(),
        trainable_params,
        bits: args.bits.clone(),
        precision: precision.to_string(),
        gradient_checkpointing: args.gradient_checkpointing,
        checkpoint_ops: args.checkpoint_ops,
        composed_ops: args.composed_ops,
        block_linears_f32_mib: f32_bytes as f64 / MIB,
        block_linears_stored_mib: stored_bytes as f64 / MIB,
    })
}

const MIB: f64 = 1024.0 * 1024.0;

/// Median (the mean of the middle two for an even count); also used by `lavin-infer bench`.
pub fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Weights of the LLaMA block linears (wq, wk, wv, wo, w1, w2, w3 of every layer).
fn block_linear_elems(cfg: &LavinConfig) -> usize {
    let l = &cfg.llama;
    let kv = l.kv_heads() * l.head_dim();
    l.n_layers * (2 * l.dim * l.dim + 2 * l.dim * kv + 3 * l.dim * l.ffn_hidden())
}

/// `lavin-train bench`: pick the backend, run, print.
pub fn run(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let choice = BackendPrefs::embedded()?
        .select_named("train", args.backend.as_deref(), args.precision.as_deref())
        .context("backend")?;
    // `--bits 4bit` on ndarray: refused before any work.
    check_backend(
        parse_bits(&args.bits).with_context(|| format!("--bits {}", args.bits))?,
        choice.backend,
    )?;
    let r: BenchReport = match choice.backend {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => {
            bench_on::<burn::backend::NdArray<f32>>(args, &choice, &Default::default())?
        }
        #[cfg(feature = "flex")]
        BackendKind::Flex => bench_on::<burn::backend::Flex>(args, &choice, &Default::default())?,
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => bench_on::<burn::backend::Wgpu>(args, &choice, &Default::default())?,
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => bench_on::<burn::backend::Cuda>(args, &choice, &Default::default())?,
        #[allow(unreachable_patterns)]
        other => bail!("backend {other} is not compiled into this binary"),
    };
    println!(
        "median step {:.4}s{} | {:.2} samples/s | {:.0} tokens/s | peak RSS {}",
        r.median_step_seconds,
        r.median_forward_seconds
            .map_or(String::new(), |f| format!(" (forward {f:.4}s)")),
        r.samples_per_second,
        r.tokens_per_second,
        r.peak_rss_mib
            .map(|m| format!("{m:.0} MiB"))
            .unwrap_or_else(|| "n/a".into())
    );
    println!("{}", serde_json::to_string(&r)?);
    Ok(r)
}
