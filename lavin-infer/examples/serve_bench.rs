//! Throughput of `serve` under concurrent streaming clients, beside the model's own decode
//! rate at batch 1 and 8 (`lavin-infer bench`'s workload), in one process on the flex CPU
//! backend with random weights at a preset's shapes.
//!
//! For each client count, every client sends `--requests` streaming chat requests one after
//! another (an image and a prompt of about `--prompt-len` tokens, `--max-tokens` new tokens,
//! greedy). Reported: aggregate completion tokens per second over the whole run (prefill and
//! image encoding included), and p50 / p95 time to first token (the first content chunk).
//!
//! `cargo run --release -p lavin-infer --example serve_bench -- --preset small`

use std::time::{Duration, Instant};

use base64::Engine;
use burn::backend::Flex;
use clap::Parser;
use futures_util::StreamExt;
use lavin_infer::lavin_generator::LavinGenerator;
use lavin_infer::serve::{serve, ServeConfig};
use lavin_model::llama::BaseFormat;
use lavin_model::{LavinConfig, Positions};
use serde_json::{json, Value};

type B = Flex;

#[derive(Parser)]
struct Args {
    /// Model shapes (random weights): tiny, small, 7b-shape.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Client counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 8])]
    clients: Vec<usize>,
    /// Requests per client (after one untimed warm-up request).
    #[arg(long, default_value_t = 3)]
    requests: usize,
    /// Approximate prompt length in tokens (image features included).
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    /// New tokens per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Skip the model-only decode benchmark.
    #[arg(long)]
    no_model_bench: bool,
    /// Text-only requests (no image to encode): a workload where decoding dominates.
    #[arg(long)]
    text_only: bool,
}

/// One request's measurements.
struct Sample {
    ttft: Duration,
    tokens: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn png_data_url() -> String {
    let mut img = image::RgbImage::new(64, 64);
    for (x, y, p) in img.enumerate_pixels_mut() {
        *p = image::Rgb([(x * 4) as u8, (y * 4) as u8, 90]);
    }
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encoding a PNG in memory");
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    )
}

/// One streaming request; returns time to the first content chunk and the tokens generated
/// (from the usage chunk).
async fn one_request(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Sample> {
    let t0 = Instant::now();
    let resp = http.post(url).json(body).send().await?;
    if resp.status() != 200 {
        anyhow::bail!("HTTP {}: {}", resp.status(), resp.text().await?);
    }
    let mut stream = resp.bytes_stream();
    let (mut buf, mut ttft, mut tokens) = (String::new(), None, None);
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(cut) = buf.find("\n\n") {
            let block: String = buf.drain(..cut + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data)?;
            anyhow::ensure!(v.get("error").is_none(), "server error: {v}");
            let has_text = v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty());
            if has_text && ttft.is_none() {
                ttft = Some(t0.elapsed());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = Some(n as usize);
            }
        }
    }
    Ok(Sample {
        // A reply of only whitespace has no content chunk: count its end as the first token.
        ttft: ttft.unwrap_or_else(|| t0.elapsed()),
        tokens: tokens.ok_or_else(|| anyhow::anyhow!("no usage chunk"))?,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = Default::default();
    let mut config = LavinConfig::preset(&args.preset)
        .ok_or_else(|| anyhow::anyhow!("--preset: unknown preset `{}`", args.preset))?;
    config.max_seq_len = config
        .max_seq_len
        .max(args.prompt_len + args.max_tokens + 8);
    config.adapter.dropout = 0.0;
    let date = std::process::Command::new("date")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("serve_bench {date}: preset {}, flex f32", args.preset);

    if !args.no_model_bench {
        let results = lavin_backends::on_worker_thread(|| {
            lavin_infer::bench::run::<B>(
                &args.preset,
                &[1, 8],
                args.prompt_len,
                args.max_tokens,
                "flex",
                BaseFormat::default(),
                &device,
            )
        })?;
        for r in &results {
            println!(
                "model bench: batch {:>2}: decode {:>7.1} tok/s, prefill {:>8.1} tok/s, image encode {:>6.1} ms",
                r.batch_size, r.decode_tokens_per_s, r.prefill_tokens_per_s, r.image_encode_ms
            );
        }
    }

    let model = config.init::<B>(&device);
    let tokenizer = lavin_data::Tokenizer::from_file(
        lavin_model::bundled::base_dir().join(lavin_model::bundled::TOKENIZER_FILE),
    )?;
    let generator = LavinGenerator::new(
        model,
        std::sync::Arc::new(tokenizer),
        device,
        Positions::Faithful,
    );
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let cfg = ServeConfig {
        max_batch: max_clients.max(1),
        max_new_tokens: args.max_tokens,
        queue_capacity: 4 * max_clients.max(8),
        ..ServeConfig::default()
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
        tokio::spawn(serve(
            listener,
            Box::new(generator),
            cfg,
            std::future::pending(),
        ));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?;
        // The prompt: an image and enough repeats of a phrase to reach about `prompt_len`
        // tokens, sized from the prompt lengths the server reports for one and two repeats.
        let image = png_data_url();
        let body_for = |repeats: usize, max_tokens: usize, stream: bool| {
            let text = json!({"type": "text", "text": "tell me about the picture ".repeat(repeats)});
            let content = if args.text_only {
                json!([text])
            } else {
                json!([{"type": "image_url", "image_url": {"url": image}}, text])
            };
            let mut body = json!({
                "messages": [{"role": "user", "content": content}],
                "max_tokens": max_tokens, "temperature": 0,
            });
            if stream {
                body["stream"] = json!(true);
                body["stream_options"] = json!({"include_usage": true});
            }
            body
        };
        let prompt_tokens = |repeats: usize| {
            let (http, url, body) = (http.clone(), url.clone(), body_for(repeats, 1, false));
            async move {
                let resp = http.post(&url).json(&body).send().await?;
                let status = resp.status();
                let v: Value = resp.json().await?;
                anyhow::ensure!(status == 200, "HTTP {status}: {v}");
                anyhow::Ok(v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize)
            }
        };
        let (one, two) = (prompt_tokens(1).await?, prompt_tokens(2).await?);
        let per = (two - one).max(1);
        let repeats = (args.prompt_len.saturating_sub(one) / per + 1).max(1);
        let body = body_for(repeats, args.max_tokens, true);
        println!(
            "prompt: {} tokens{}; {} new tokens per request, greedy",
            prompt_tokens(repeats).await?,
            if args.text_only { ", text only" } else { " with the image" },
            args.max_tokens
        );

        for &n in &args.clients {
            // Warm-up: every client once, untimed.
            let warm: Vec<_> = (0..n)
                .map(|_| {
                    let (http, url, body) = (http.clone(), url.clone(), body.clone());
                    tokio::spawn(async move { one_request(&http, &url, &body).await })
                })
                .collect();
            for w in warm {
                w.await??;
            }
            let t0 = Instant::now();
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let (http, url, body) = (http.clone(), url.clone(), body.clone());
                    let requests = args.requests;
                    tokio::spawn(async move {
                        let mut samples = Vec::new();
                        for _ in 0..requests {
                            samples.push(one_request(&http, &url, &body).await?);
                        }
                        anyhow::Ok(samples)
                    })
                })
                .collect();
            let mut samples = Vec::new();
            for t in tasks {
                samples.extend(t.await??);
            }
            let wall = t0.elapsed().as_secs_f64();
            let tokens: usize = samples.iter().map(|s| s.tokens).sum();
            let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect();
            ttft.sort_by(f64::total_cmp);
            println!(
                "serve: {n} clients: {:>7.1} tok/s aggregate ({tokens} tokens in {wall:.1} s, {} requests), TTFT p50 {:>6.0} ms, p95 {:>6.0} ms",
                tokens as f64 / wall,
                samples.len(),
                percentile(&ttft, 0.5),
                percentile(&ttft, 0.95),
            );
        }
        anyhow::Ok(())
    })
}
