//! `generation.json` + `generation.safetensors`: greedy KV-cache generation.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use lavin_data::Tokenizer;
use lavin_model::weights::TensorSource;
use lavin_model::Positions;
use lavin_parity::{host, Case, Check};
use serde_json::Value;

use super::Outcome;
use lavin_infer::generator::{GenRequest, Generator, ImageInput, SamplingParams};
use lavin_infer::lavin_generator::{prompt_ids, LavinGenerator};

pub fn check<B: Backend>(case: &Case, device: &B::Device) -> anyhow::Result<Outcome> {
    let (json_path, st_path, tok_path) = (
        case.dir.join("generation.json"),
        case.dir.join("generation.safetensors"),
        case.dir.join("tokenizer.model"),
    );
    for p in [&json_path, &st_path, &tok_path] {
        if !p.exists() {
            return Ok(Outcome::Skip(format!("{} absent", p.display())));
        }
    }
    let g: Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    let field = |k: &str| {
        g.get(k)
            .ok_or_else(|| anyhow::anyhow!("{}: no `{k}`", json_path.display()))
    };
    let tensors = lavin_model::weights::source::SafetensorsSource::open(&st_path)?;
    let tokenizer = Arc::new(Tokenizer::from_file(&tok_path)?);

    let images = tensors.require("images")?;
    let per_image = images.data.len() / images.shape[0];
    let prompts: Vec<String> = serde_json::from_value(field("prompts")?.clone())?;
    let indicators: Vec<i64> = serde_json::from_value(field("indicators")?.clone())?;
    let requests: Vec<GenRequest> = prompts
        .iter()
        .enumerate()
        .map(|(k, p)| GenRequest {
            prompt: p.clone(),
            image: (indicators[k] == 1).then(|| ImageInput {
                name: format!("images[{k}]"),
                pixels: Arc::new(images.data[k * per_image..(k + 1) * per_image].to_vec()),
            }),
        })
        .collect();

    let mut rows = Vec::new();
    let want_prompts: Vec<Vec<u32>> = serde_json::from_value(field("prompt_tokens")?.clone())?;
    let n_feats = g
        .get("n_feats")
        .and_then(Value::as_u64)
        .unwrap_or(case.config.n_feats() as u64) as usize;
    let got_prompts = requests
        .iter()
        .map(|r| prompt_ids(&tokenizer, r, n_feats))
        .collect::<Result<Vec<_>, _>>()?;
    rows.push(Check::exact(
        "generation prompt_tokens",
        mismatches(&got_prompts, &want_prompts),
    ));

    // The case's model, without autodiff, dropout off.
    let model = case.load_model::<B>(case.meta_llama(), device)?;
    let mut generator = LavinGenerator::new(model, tokenizer, device.clone(), Positions::Faithful);
    generator.step_logits = Some(Vec::new());
    let params = SamplingParams {
        max_gen_len: field("max_gen_len")?.as_u64().unwrap_or(8) as usize,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
    };
    let outputs = generator.generate(&requests, &params, &mut |_, _| {})?;

    let want_ids: Vec<Vec<u32>> = serde_json::from_value(field("generated_ids")?.clone())?;
    let got_ids: Vec<Vec<u32>> = outputs.iter().map(|o| o.token_ids.clone()).collect();
    rows.push(Check::exact(
        "generation generated_ids",
        mismatches(&got_ids, &want_ids),
    ));
    let want_text: Vec<String> = serde_json::from_value(field("decoded")?.clone())?;
    let text_mismatch = outputs
        .iter()
        .zip(&want_text)
        .filter(|(o, w)| &o.text != *w)
        .count()
        + outputs.len().abs_diff(want_text.len());
    rows.push(Check::exact("generation decoded", text_mismatch));

    let want_steps = tensors.require("step_logits")?;
    let got: Vec<Vec<f32>> = generator
        .step_logits
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(host)
        .collect();
    let per_step = want_steps.data.len() / want_steps.shape[0];
    let n = got.len().min(want_steps.shape[0]);
    let got_flat: Vec<f32> = got.into_iter().take(n).flatten().collect();
    rows.push(Check::close(
        format!("generation step_logits ({n} steps)"),
        &got_flat,
        &want_steps.data[..n * per_step],
        1e-4,
        true,
    ));
    Ok(Outcome::Rows(rows))
}

fn mismatches(got: &[Vec<u32>], want: &[Vec<u32>]) -> usize {
    got.iter()
        .zip(want)
        .map(|(a, b)| a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len()))
        .sum::<usize>()
        + got.len().abs_diff(want.len())
}
