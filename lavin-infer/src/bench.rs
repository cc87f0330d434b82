//! `lavin-infer bench`: image encoding, prefill and decode speed of the KV-cache generator on
//! random weights at a preset's shapes (the workload of the original's eval: a 128-token prompt
//! with an image, 64 new tokens, greedy), one JSON line per batch size at the end. Each batch
//! size runs the whole workload once untimed first, then three times timed (medians).

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use lavin_backends::{median, peak_rss_mib};
use lavin_model::llama::BaseFormat;
use lavin_model::{Lavin, LavinConfig, Positions};
use serde::Serialize;

/// One measured configuration.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub preset: String,
    pub backend: String,
    /// Frozen LLaMA weights as stored: precision, and `4bit`/`8bit` for LaVIN-lite.
    pub base_format: String,
    pub batch_size: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub image_encode_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Peak resident memory of the process so far (Linux `VmHWM`), MiB.
    pub peak_rss_mib: Option<f64>,
}

/// Forces pending work to finish (async backends) by reading one value back.
fn sync<B: Backend, const D: usize>(t: &Tensor<B, D>) {
    let _ = t.clone().sum().into_data();
}

/// Runs the workload for each batch size on `B`.
pub fn run<B: Backend>(
    preset: &str,
    batch_sizes: &[usize],
    prompt_len: usize,
    new_tokens: usize,
    backend: &str,
    format: BaseFormat,
    device: &B::Device,
) -> anyhow::Result<Vec<BenchResult>> {
    let mut config = LavinConfig::preset(preset).ok_or_else(|| {
        anyhow::anyhow!("--preset: unknown preset `{preset}` (tiny, small, 7b-shape)")
    })?;
    config.max_seq_len = config.max_seq_len.max(prompt_len + new_tokens + 1);
    config.adapter.dropout = 0.0;
    // Converted block by block, as a real load with `--precision` / `--bits` does.
    let model = config.init::<B>(device).convert_base(format)?;
    let (v, r) = (config.llama.vocab_size, config.clip.input_resolution);
    let mut results = Vec::new();
    for &b in batch_sizes {
        let images = Tensor::<B, 4>::random([b, 3, r, r], Distribution::Normal(0.0, 1.0), device);
        let indicators =
            Tensor::<B, 1, Int>::from_data(TensorData::new(vec![1i64; b], [b]), device);
        let ids: Vec<i64> = (0..b * prompt_len)
            .map(|i| 3 + (i as i64 * 7919) % (v as i64 - 3))
            .collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, prompt_len]), device);
        let workload = Workload {
            images,
            indicators,
            tokens,
            new_tokens,
        };
        // Warm-up: the whole workload once, untimed. GPU backends compile (and autotune) a
        // kernel per new shape, and decode meets a new key length at every step.
        measure(&model, &workload);
        // Then `TIMED_RUNS` timed runs, each phase reported by its median: on a busy or
        // frequency-scaling machine one 64-token decode varies by +-20% from run to run.
        let runs: Vec<Timings> = (0..TIMED_RUNS)
            .map(|_| measure(&model, &workload))
            .collect();
        let t = Timings {
            encode: median(&runs.iter().map(|t| t.encode).collect::<Vec<_>>()),
            prefill: median(&runs.iter().map(|t| t.prefill).collect::<Vec<_>>()),
            decode: median(&runs.iter().map(|t| t.decode).collect::<Vec<_>>()),
        };
        results.push(BenchResult {
            preset: preset.to_string(),
            backend: backend.to_string(),
            base_format: format!(
                "{}{}",
                format.precision,
                format.bits.map(|b| format!(" {b}")).unwrap_or_default()
            ),
            batch_size: b,
            prompt_len,
            new_tokens,
            image_encode_ms: t.encode * 1e3,
            prefill_tokens_per_s: (b * prompt_len) as f64 / t.prefill,
            decode_tokens_per_s: (b * new_tokens) as f64 / t.decode,
            peak_rss_mib: peak_rss_mib(),
        });
    }
    Ok(results)
}

/// One batch size's inputs.
struct Workload<B: Backend> {
    images: Tensor<B, 4>,
    indicators: Tensor<B, 1, Int>,
    tokens: Tensor<B, 2, Int>,
    new_tokens: usize,
}

/// Seconds: image encoding (median of a few runs), prefill, all decode steps.
struct Timings {
    encode: f64,
    prefill: f64,
    decode: f64,
}

/// Timed repetitions of the whole workload per batch size.
const TIMED_RUNS: usize = 3;

fn measure<B: Backend>(model: &Lavin<B>, w: &Workload<B>) -> Timings {
    const ENCODE_RUNS: usize = 5;
    let [b, prompt_len] = w.tokens.dims();
    // Image encoding is short: the median of a few runs.
    let mut encode_times = Vec::with_capacity(ENCODE_RUNS);
    let mut image_embeds = None;
    for _ in 0..ENCODE_RUNS {
        let t0 = Instant::now();
        let (_, embeds, _) = model.encode_images(w.images.clone());
        sync(&embeds);
        encode_times.push(t0.elapsed().as_secs_f64());
        image_embeds = Some(embeds);
    }
    let image_embeds = image_embeds.expect("ENCODE_RUNS > 0");

    let t1 = Instant::now();
    let embeds = model.embed_buffer(w.tokens.clone(), image_embeds, w.indicators.clone());
    let (mut logits, mut state) = model.prefill(
        model.modality_token(w.indicators.clone()),
        embeds,
        Positions::Faithful,
    );
    let mut next = logits.clone().argmax(1).reshape([b, 1]);
    sync(&logits);
    let prefill = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    for step in 0..w.new_tokens {
        let row = model.llama.embed(next);
        logits = model.decode(&mut state, row, prompt_len + step);
        next = logits.clone().argmax(1).reshape([b, 1]);
        // Only the sampled ids come back, as in real generation.
        let _ = next.clone().into_data();
    }
    Timings {
        encode: median(&encode_times),
        prefill,
        decode: t2.elapsed().as_secs_f64(),
    }
}
