//! Batched KV-cache generation with the LaVIN model, as the original `LaVIN_Generator` does it.
//!
//! Prompts become `[BOS] "Image: " <n_feats placeholders> prompt` (or `[BOS] "Image: N/A"
//! prompt`); the buffer holds `min(max_seq_len, max_gen_len + longest prompt)` ids. The first step
//! runs every row up to the shortest prompt; then one row per step, where a row still inside its
//! prompt keeps the prompt token. Only the sampled ids come back to the host each step.

use std::sync::Arc;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use lavin_data::tokenizer::{IMAGE_PREFIX, NO_IMAGE_PREFIX};
use lavin_data::Tokenizer;
use lavin_model::{Lavin, Positions};

use crate::generator::{
    FinishReason, GenError, GenOutput, GenRequest, Generator, OnToken, SamplingParams,
};
use crate::sampling::Sampler;

/// The real model behind the [`Generator`] seam.
pub struct LavinGenerator<B: Backend> {
    pub model: Lavin<B>,
    pub tokenizer: Arc<Tokenizer>,
    pub device: B::Device,
    pub positions: Positions,
    /// Called with each step's logits `[B, V]` (for parity checks); `None` in normal use.
    pub step_logits: Option<Vec<Tensor<B, 2>>>,
}

/// Token ids of each prompt as the generator builds them.
pub fn prompt_ids(
    tokenizer: &Tokenizer,
    request: &GenRequest,
    n_feats: usize,
) -> Result<Vec<u32>, GenError> {
    let enc = |t: &str, bos| {
        tokenizer
            .encode(t, bos, false)
            .map_err(|e| GenError::InvalidRequest(e.to_string()))
    };
    let mut ids = if request.image.is_some() {
        let mut ids = enc(IMAGE_PREFIX, true)?;
        ids.extend(std::iter::repeat_n(0, n_feats));
        ids
    } else {
        enc(NO_IMAGE_PREFIX, true)?
    };
    ids.extend(enc(&request.prompt, false)?);
    Ok(ids)
}

impl<B: Backend> LavinGenerator<B> {
    pub fn new(
        model: Lavin<B>,
        tokenizer: Arc<Tokenizer>,
        device: B::Device,
        positions: Positions,
    ) -> Self {
        Self {
            model,
            tokenizer,
            device,
            positions,
            step_logits: None,
        }
    }

    fn images(&self, requests: &[GenRequest]) -> Tensor<B, 4> {
        let side = self.model.config().clip.input_resolution;
        let mut data = Vec::with_capacity(requests.len() * 3 * side * side);
        for r in requests {
            match &r.image {
                Some(img) => data.extend_from_slice(&img.pixels),
                None => data.extend(std::iter::repeat_n(0.0f32, 3 * side * side)),
            }
        }
        Tensor::from_data(
            TensorData::new(data, [requests.len(), 3, side, side]),
            &self.device,
        )
    }
}

/// Incremental decoding of one item's generated ids into text deltas.
struct Stream {
    ids: Vec<u32>,
    emitted: String,
}

impl Stream {
    fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Option<String> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids);
        // Hold back an incomplete UTF-8 sequence (it decodes as U+FFFD until completed).
        if text.ends_with('\u{FFFD}') || !text.starts_with(&self.emitted) {
            return None;
        }
        let delta = text[self.emitted.len()..].to_string();
        self.emitted = text;
        (!delta.is_empty()).then_some(delta)
    }
}

impl<B: Backend> Generator for LavinGenerator<B> {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
        on_token: &mut OnToken<'_>,
    ) -> Result<Vec<GenOutput>, GenError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let mut sampler = Sampler::new(params.decoding(), params.seed)
            .map_err(|e| GenError::InvalidRequest(e.to_string()))?;
        let cfg = self.model.config().clone();
        let (b, eos) = (requests.len(), self.tokenizer.eos_id());
        let prompts = requests
            .iter()
            .map(|r| prompt_ids(&self.tokenizer, r, cfg.n_feats()))
            .collect::<Result<Vec<_>, _>>()?;
        for (item, p) in prompts.iter().enumerate() {
            if p.len() >= cfg.max_seq_len {
                return Err(GenError::PromptTooLong {
                    item,
                    tokens: p.len(),
                    max: cfg.max_seq_len - 1,
                });
            }
        }
        let min_len = prompts.iter().map(Vec::len).min().unwrap_or(0);
        let max_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let total = cfg.max_seq_len.min(params.max_gen_len + max_len);

        let mut tokens = vec![0u32; b * total];
        for (k, p) in prompts.iter().enumerate() {
            tokens[k * total..k * total + p.len()].copy_from_slice(p);
        }
        let ind: Vec<i64> = requests.iter().map(|r| r.image.is_some() as i64).collect();
        let indicators = Tensor::<B, 1, Int>::from_data(TensorData::new(ind, [b]), &self.device);
        let buffer = Tensor::<B, 2, Int>::from_data(
            TensorData::new(
                tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                [b, total],
            ),
            &self.device,
        );
        let (_, image_embeds, _) = self.model.encode_images(self.images(requests));
        let embeds = self
            .model
            .embed_buffer(buffer, image_embeds, indicators.clone());

        let mut streams: Vec<Stream> = (0..b)
            .map(|_| Stream {
                ids: Vec::new(),
                emitted: String::new(),
            })
            .collect();
        let mut done = vec![false; b];
        let modality = self.model.modality_token(indicators);
        let (mut logits, mut state) = self.model.prefill(
            modality,
            embeds.clone().narrow(1, 0, min_len),
            self.positions,
        );
        for cur in min_len..total {
            if let Some(store) = self.step_logits.as_mut() {
                store.push(logits.clone());
            }
            let sampled = sampler.sample(logits);
            let mut row_ids = Vec::with_capacity(b);
            let mut forced = Vec::with_capacity(b);
            for k in 0..b {
                let in_prompt = cur < prompts[k].len();
                let id = if in_prompt {
                    tokens[k * total + cur]
                } else {
                    sampled[k]
                };
                tokens[k * total + cur] = id;
                row_ids.push(id as i64);
                forced.push(in_prompt);
                if !in_prompt && !done[k] {
                    if id == eos || cur + 1 >= prompts[k].len() + params.max_gen_len {
                        done[k] = true;
                    }
                    if id != eos {
                        if let Some(delta) = streams[k].push(&self.tokenizer, id) {
                            on_token(k, &delta);
                        }
                    }
                }
            }
            if cur + 1 >= total || done.iter().all(|&d| d) {
                break;
            }
            // The next row: the prompt's own embedding (maybe an image feature) or the new token's.
            let new = self.model.llama.embed(Tensor::from_data(
                TensorData::new(row_ids, [b, 1]),
                &self.device,
            ));
            let keep = Tensor::<B, 1, Int>::from_data(
                TensorData::new(forced.iter().map(|&f| f as i64).collect::<Vec<_>>(), [b]),
                &self.device,
            );
            let c = cfg.llama.dim;
            let keep = keep.equal_elem(1).reshape([b, 1, 1]).expand([b, 1, c]);
            let row = new.mask_where(keep, embeds.clone().narrow(1, cur, 1));
            logits = self.model.decode(&mut state, row, cur);
        }

        Ok((0..b)
            .map(|k| {
                let p = prompts[k].len();
                let row = &tokens[k * total..(k + 1) * total];
                let mut end = (p + params.max_gen_len).min(total);
                let eos_at = row[..end].iter().position(|&t| t == eos);
                if let Some(e) = eos_at {
                    end = e;
                }
                let generated: Vec<u32> = row[p.min(end)..end].to_vec();
                GenOutput {
                    text: self.tokenizer.decode(&row[..end]),
                    completion: self.tokenizer.decode(&generated),
                    token_ids: generated,
                    prompt_tokens: p,
                    finish: if eos_at.is_some_and(|e| e >= p) {
                        FinishReason::Stop
                    } else {
                        FinishReason::Length
                    },
                }
            })
            .collect())
    }

    fn describe(&self) -> String {
        let c = self.model.config();
        format!(
            "LaVIN (LLaMA dim {} x {} layers, CLIP width {} x {} layers)",
            c.llama.dim, c.llama.n_layers, c.clip.width, c.clip.layers
        )
    }
}
