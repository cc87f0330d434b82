//! `lavin-train bench`: warm-up + timed training steps (forward + backward + AdamW on the
//! adapters) on random weights at a preset's shapes; half the batch items carry an image.
//! Prints median step time, samples/s, tokens/s, peak RSS (`VmHWM`) and one JSON line.
//!
//! `--bits 8bit|4bit` quantizes the frozen LLaMA block linears (LaVIN-lite) after building the
//! model; `--gradient-checkpointing` recomputes each ViT and LLaMA block in backward
//! ([`lavin_model::recompute`]), `--checkpoint-ops` runs on `Autodiff<_, BalancedCheckpointing>`.
//!
//! On the CubeCL backends (wgpu, cuda) the report also has the device memory of CubeCL's pool
//! ([`DeviceMemory`]): the weights, and the step's peak in use and reserved. Preset `7b-slice`
//! (the 7B shapes with `--layers` LLaMA blocks and `--vit-layers` ViT blocks) measures what each
//! LLaMA block adds, to project the whole 7B step from a slice that fits a small device.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Distribution, Int, Tensor, TensorData};

use lavin_backends::{median, peak_rss_mib, BackendChoice, BackendJob};
use lavin_model::llama::{BaseFormat, FrozenLinear};
use lavin_model::{Lavin, LavinBatch, LavinConfig, Precision};

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
    /// LLaMA blocks built (the preset's or `--layers`).
    pub llama_layers: usize,
    /// ViT blocks built (the preset's or `--vit-layers`).
    pub vit_layers: usize,
    /// Device memory from CubeCL's memory pool (wgpu, cuda); `null` on the CPU backends, whose
    /// memory is `peak_rss_mib`.
    pub device_memory: Option<DeviceMemory>,
}

/// Device memory read from CubeCL's memory pool (`ComputeClient::memory_usage`): `in_use` is
/// the bytes of live buffers, `reserved` the pool's pages (what the device has given out).
/// Taken over every step, warm-up included.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceMemory {
    /// The runtime read (`cubecl-wgpu`, `cubecl-cuda`).
    pub source: String,
    /// How the peaks are taken (see [`PEAK_METHOD`]).
    pub method: String,
    /// Interval of the sampling thread (ms).
    pub sample_interval_ms: u64,
    /// Readings taken (phase ends and the sampling thread).
    pub samples: usize,
    /// In use once the model is built and converted (the weights, frozen and trainable).
    pub weights_in_use_mib: f64,
    /// Reserved at that point, after an explicit pool cleanup.
    pub weights_reserved_mib: f64,
    /// In use after the forward pass (graph held), last step; `null` with recomputation.
    pub after_forward_in_use_mib: Option<f64>,
    /// In use after backward (gradients held, graph freed), last step.
    pub after_backward_in_use_mib: f64,
    /// In use after AdamW (optimizer state held), last step.
    pub after_step_in_use_mib: f64,
    /// Highest `in_use` read: a lower bound of the true peak (sampled).
    pub peak_in_use_mib: f64,
    /// Highest `reserved` read. The default pools (`SubSlices`) release pages only on an
    /// explicit cleanup, done once before the first step, so this is the pool's high-water mark
    /// over the steps: an upper bound of the peak in use (it adds the pool's padding and
    /// fragmentation), and what the device must hold.
    pub peak_reserved_mib: f64,
}

/// The method, as written into [`DeviceMemory::method`].
pub const PEAK_METHOD: &str = "in_use: max of readings after model build, forward, backward and \
AdamW, and of a thread reading the bench thread's stream every sample_interval_ms; reserved: \
pool pages, released only by the explicit cleanup after building the model, so the last \
reading is the high-water mark";

/// Interval of the memory sampling thread.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    in_use: u64,
    reserved: u64,
}

type Reader = Arc<dyn Fn() -> Option<Usage> + Send + Sync>;

/// Reads CubeCL's memory pool at phase ends and from a sampling thread, keeping the maxima.
struct MemoryMeter {
    source: &'static str,
    read: Reader,
    peak_in_use: Arc<AtomicU64>,
    peak_reserved: Arc<AtomicU64>,
    samples: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl MemoryMeter {
    /// A meter for backend `B` if it runs on CubeCL (wgpu, cuda), else `None`. Must be made on
    /// the thread that runs the bench: CubeCL keeps one pool per stream, a stream per thread.
    fn new<B: Backend>(device: &B::Device) -> Option<Self> {
        let (source, read) = cubecl_reader::<B>(device)?;
        Some(Self {
            source,
            read,
            peak_in_use: Arc::default(),
            peak_reserved: Arc::default(),
            samples: Arc::default(),
            stop: Arc::default(),
            sampler: None,
        })
    }

    /// Reads the pool now, folding the reading into the maxima.
    fn sample(&self) -> Usage {
        sample_into(
            &self.read,
            &self.peak_in_use,
            &self.peak_reserved,
            &self.samples,
        )
    }

    /// Forgets the maxima (after building the model: its transient f32 weights are not the step's).
    fn reset(&self) {
        self.peak_in_use.store(0, Ordering::Relaxed);
        self.peak_reserved.store(0, Ordering::Relaxed);
        self.samples.store(0, Ordering::Relaxed);
    }

    /// Starts the sampling thread.
    fn start(&mut self) {
        let (read, in_use, reserved, samples, stop) = (
            self.read.clone(),
            self.peak_in_use.clone(),
            self.peak_reserved.clone(),
            self.samples.clone(),
            self.stop.clone(),
        );
        self.sampler = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sample_into(&read, &in_use, &reserved, &samples);
                std::thread::sleep(SAMPLE_INTERVAL);
            }
        }));
    }

    fn finish(&mut self) -> (u64, u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sampler.take() {
            let _ = t.join();
        }
        self.sample();
        (
            self.peak_in_use.load(Ordering::Relaxed),
            self.peak_reserved.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

impl Drop for MemoryMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sampler.take() {
            let _ = t.join();
        }
    }
}

fn sample_into(read: &Reader, in_use: &AtomicU64, reserved: &AtomicU64, n: &AtomicUsize) -> Usage {
    let u = read().unwrap_or_default();
    in_use.fetch_max(u.in_use, Ordering::Relaxed);
    reserved.fetch_max(u.reserved, Ordering::Relaxed);
    n.fetch_add(1, Ordering::Relaxed);
    u
}

/// A reader of CubeCL's pool for `B`'s device when `B` is a CubeCL backend of this build.
#[allow(unused_variables)]
fn cubecl_reader<B: Backend>(device: &B::Device) -> Option<(&'static str, Reader)> {
    #[cfg(feature = "wgpu")]
    if let Some(d) = same_backend::<B, burn::backend::Wgpu>(device) {
        return Some((
            "cubecl-wgpu",
            runtime_reader::<burn::cubecl::wgpu::WgpuRuntime>(d),
        ));
    }
    #[cfg(feature = "cuda")]
    if let Some(d) = same_backend::<B, burn::backend::Cuda>(device) {
        return Some((
            "cubecl-cuda",
            runtime_reader::<burn::cubecl::cuda::CudaRuntime>(d),
        ));
    }
    None
}

/// `device` as `T`'s when `B` is `T`.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn same_backend<B: Backend, T: Backend>(device: &B::Device) -> Option<&T::Device> {
    if std::any::TypeId::of::<B>() != std::any::TypeId::of::<T>() {
        return None;
    }
    (device as &dyn std::any::Any).downcast_ref::<T::Device>()
}

/// Reads `R`'s pool for the calling thread's stream, from any thread.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn runtime_reader<R: burn::cubecl::Runtime>(device: &R::Device) -> Reader {
    let mut client = R::client(device);
    // SAFETY: the client only reads the pool's counters (`memory_usage`) on this stream; the
    // bench thread's allocations are made on it, so a sampling thread must name it.
    unsafe { client.set_stream(burn::cubecl::stream_id::StreamId::current()) };
    Arc::new(move || {
        client.memory_usage().ok().map(|m| Usage {
            in_use: m.bytes_in_use,
            reserved: m.bytes_reserved,
        })
    })
}

/// `(config, default batch)` of a bench preset.
pub fn preset(name: &str) -> anyhow::Result<(LavinConfig, usize)> {
    Ok(match name {
        "tiny" => (lavin_model::bundled::config(), 8),
        "small" => (LavinConfig::small(), 4),
        "7b-shape" | "7b" => (LavinConfig::llama_7b(), 4),
        "7b-slice" => (LavinConfig::llama_7b_slice(1, 24), 4),
        o => bail!("--preset: unknown `{o}` (tiny, small, 7b-shape, 7b-slice)"),
    })
}

/// The bench's config: the preset with `--layers` / `--vit-layers` applied, and its default batch.
pub fn bench_config(args: &BenchArgs) -> anyhow::Result<(LavinConfig, usize)> {
    let (mut cfg, batch) = preset(&args.preset)?;
    if let Some(n) = args.layers {
        // 0 is allowed: embeddings, ViT, projection and head alone (the constant part).
        cfg.llama.n_layers = n;
    }
    if let Some(n) = args.vit_layers {
        if n == 0 || n % 4 != 0 {
            bail!(
                "--vit-layers must be a positive multiple of 4 (a feature per 4 blocks), not {n}"
            );
        }
        cfg.clip.layers = n;
    }
    if let Some(v) = args.vocab_size {
        if v < 4 {
            bail!("--vocab-size must be at least 4 (tokens are drawn from [3, vocab)), not {v}");
        }
        cfg.llama.vocab_size = v;
    }
    Ok((cfg, batch))
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
    lavin_model::kernels::set_enabled(!args.composed_ops);
    let meter = MemoryMeter::new::<B>(device);
    if args.checkpoint_ops {
        bench_ad::<Autodiff<B, BalancedCheckpointing>>(args, choice, device, meter)
    } else {
        bench_ad::<Autodiff<B>>(args, choice, device, meter)
    }
}

fn bench_ad<AB: AutodiffBackend>(
    args: &BenchArgs,
    choice: &BackendChoice,
    device: &AB::Device,
    mut meter: Option<MemoryMeter>,
) -> anyhow::Result<BenchReport> {
    let (backend, precision) = (choice.to_string(), choice.precision);
    let bits = args.backend.bits.quantized();
    if let Some(bits) = bits {
        // Fails before building anything if the backend cannot store this width.
        lavin_model::quant::probe::<AB>(bits, device).with_context(|| format!("--bits {bits}"))?;
    }
    let (mut cfg, default_batch) = bench_config(args)?;
    let batch = args.batch_size.unwrap_or(default_batch).max(1);
    let seq = args.seq_len.unwrap_or(cfg.max_seq_len).max(2);
    cfg.max_seq_len = seq;
    AB::seed(device, 0);
    let model = cfg.init::<AB>(device);
    // A half base is drawn in half precision directly (the f32 weights are never made);
    // otherwise block by block: the f32 weights of one block are dropped before the next is
    // converted.
    let model = if precision == Precision::F32 {
        model
    } else {
        draw_half_base(model, precision.dtype::<AB>(), device)
    };
    let model = model.convert_base(BaseFormat { precision, bits })?;
    // Burn draws a parameter on its first use: draw them all now, so the weights' reading below
    // holds the whole model (the ViT, norms and adapters included), not only the converted base.
    model.visit(&mut Materialize);
    let f32_bytes = block_linear_elems(&cfg) * 4;
    let stored_bytes: usize = model
        .llama
        .base_linears()
        .map(|l| match l {
            FrozenLinear::Quant(q) => q.packed_bytes(),
            FrozenLinear::Dense(d) => {
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
    // The weights: drop the pool's pages freed by the conversion (the f32 weights of each block,
    // converted one at a time), then read what the model holds.
    let weights = meter.as_mut().map(|m| {
        AB::memory_cleanup(device);
        let _ = AB::sync(device);
        let w = m.sample();
        m.reset();
        m.start();
        w
    });
    if let Some(w) = weights {
        eprintln!(
            "bench: device memory after building the model: {:.0} MiB in use, {:.0} MiB reserved",
            w.in_use as f64 / MIB,
            w.reserved as f64 / MIB
        );
    }
    let (mut after_forward, mut after_backward, mut after_step) = (None, 0u64, 0u64);
    eprintln!(
        "bench: preset {} ({backend}, {} LLaMA / {} ViT blocks), batch {batch}, seq {seq}, {} trainable params, {} warm-up + {} timed steps, \
         block linears {} {} ({:.1} MiB stored, {:.1} MiB at f32){}{}{}",
        args.preset,
        cfg.llama.n_layers,
        cfg.clip.layers,
        trainable_params,
        args.warmup,
        args.steps,
        args.backend.bits,
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
            after_forward = meter.as_ref().map(|m| m.sample().in_use);
            (
                Some(forward),
                GradientsParams::from_grads(loss.backward(), &model),
            )
        };
        if let Some(m) = &meter {
            after_backward = m.sample().in_use;
        }
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
        if let Some(m) = &meter {
            after_step = m.sample().in_use;
        }
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
    let median_step = median(&times);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let device_memory = meter.as_mut().zip(weights).map(|(m, w)| {
        let (peak_in_use, peak_reserved, samples) = m.finish();
        let mib = |b: u64| b as f64 / MIB;
        DeviceMemory {
            source: m.source.to_string(),
            method: PEAK_METHOD.to_string(),
            sample_interval_ms: SAMPLE_INTERVAL.as_millis() as u64,
            samples,
            weights_in_use_mib: mib(w.in_use),
            weights_reserved_mib: mib(w.reserved),
            after_forward_in_use_mib: after_forward.map(mib),
            after_backward_in_use_mib: mib(after_backward),
            after_step_in_use_mib: mib(after_step),
            peak_in_use_mib: mib(peak_in_use),
            peak_reserved_mib: mib(peak_reserved),
        }
    });
    if let Some(d) = &device_memory {
        eprintln!(
            "bench: device memory ({}): weights {:.0} MiB; step peak {:.0} MiB in use (sampled), {:.0} MiB reserved",
            d.source, d.weights_in_use_mib, d.peak_in_use_mib, d.peak_reserved_mib
        );
    }
    Ok(BenchReport {
        preset: args.preset.clone(),
        backend,
        batch_size: batch,
        seq_len: seq,
        steps: times.len(),
        warmup: args.warmup,
        median_step_seconds: median_step,
        median_forward_seconds: (!forward_times.is_empty()).then(|| median(&forward_times)),
        mean_step_seconds: mean,
        samples_per_second: batch as f64 / median_step,
        tokens_per_second: (batch * seq) as f64 / median_step,
        peak_rss_mib: peak_rss_mib(),
        trainable_params,
        bits: args.backend.bits.to_string(),
        precision: precision.to_string(),
        gradient_checkpointing: args.gradient_checkpointing,
        checkpoint_ops: args.checkpoint_ops,
        composed_ops: args.composed_ops,
        block_linears_f32_mib: f32_bytes as f64 / MIB,
        block_linears_stored_mib: stored_bytes as f64 / MIB,
        llama_layers: cfg.llama.n_layers,
        vit_layers: cfg.clip.layers,
        device_memory,
    })
}

const MIB: f64 = 1024.0 * 1024.0;

/// Initialises every lazy parameter (reads it once).
struct Materialize;

impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        let _ = param.val();
    }
}

/// Elements of the f32 pieces [`draw_half_base`] draws (64 MiB).
const DRAW_PIECE: usize = 1 << 24;

/// The frozen LLaMA weights (embeddings, output head, block linears) drawn at random straight
/// in `dtype`, in f32 pieces of at most [`DRAW_PIECE`] elements, before their lazy f32
/// initialisation runs. What the model holds is what `convert_base` would give, but no f32
/// weight exists: Vulkan devices may bind at most 128 MiB per buffer (lavapipe does), less than
/// one 4096 x 11008 f32 weight, and the pool's peak is not inflated by transient copies.
fn draw_half_base<B: Backend>(mut model: Lavin<B>, dtype: DType, device: &B::Device) -> Lavin<B> {
    let redraw = |p: &mut Param<Tensor<B, 2>>| {
        let [rows, cols] = p.lazy_shape().dims();
        let per = (DRAW_PIECE / cols.max(1)).max(1);
        let pieces: Vec<Tensor<B, 2>> = (0..rows)
            .step_by(per)
            .map(|r| {
                Tensor::<B, 2>::random(
                    [per.min(rows - r), cols],
                    Distribution::Normal(0.0, 0.02),
                    device,
                )
                .cast(dtype)
            })
            .collect();
        *p = Param::initialized(p.id, Tensor::cat(pieces, 0));
    };
    let llama = &mut model.llama;
    redraw(&mut llama.tok_embeddings.weight);
    redraw(&mut llama.output.weight);
    for b in &mut llama.layers {
        let (a, f) = (&mut b.attention, &mut b.feed_forward);
        for l in [
            &mut a.wq, &mut a.wk, &mut a.wv, &mut a.wo, &mut f.w1, &mut f.w2, &mut f.w3,
        ] {
            if let FrozenLinear::Dense(l) = l {
                redraw(&mut l.weight);
            }
        }
    }
    model
}

/// Weights of the LLaMA block linears (wq, wk, wv, wo, w1, w2, w3 of every layer).
fn block_linear_elems(cfg: &LavinConfig) -> usize {
    let l = &cfg.llama;
    let kv = l.kv_heads() * l.head_dim();
    l.n_layers * (2 * l.dim * l.dim + 2 * l.dim * kv + 3 * l.dim * l.ffn_hidden())
}

struct BenchJob<'a>(&'a BenchArgs, &'a BackendChoice);

impl BackendJob for BenchJob<'_> {
    type Output = BenchReport;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<BenchReport> {
        bench_on::<B>(self.0, self.1, &device)
    }
}

/// `lavin-train bench`: pick the backend, run, print.
pub fn run(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    // `--bits 4bit` on ndarray: refused before any work.
    let choice = args.backend.choose("train").context("backend")?;
    let r = lavin_backends::dispatch(choice.backend, BenchJob(args, &choice))?;
    let device = r.device_memory.as_ref().map_or(String::new(), |d| {
        format!(
            " | device peak {:.0} MiB in use, {:.0} MiB reserved (weights {:.0} MiB)",
            d.peak_in_use_mib, d.peak_reserved_mib, d.weights_in_use_mib
        )
    });
    println!(
        "median step {:.4}s{} | {:.2} samples/s | {:.0} tokens/s | peak RSS {}{device}",
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
