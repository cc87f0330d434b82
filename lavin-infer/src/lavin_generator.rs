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
    BatchItem, BatchObserver, FinishReason, GenError, GenOutput, GenRequest, Generator, OnToken,
    SamplingParams,
};
use crate::sampling::{sample_rows, Sampler};

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

    fn images(&self, requests: &[&GenRequest]) -> Tensor<B, 4> {
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

/// How a run picks the next tokens.
enum Picker<'a> {
    /// One sampler for the whole batch, drawing for every row at every step (the evaluation
    /// commands' fixed seeding).
    Shared(Box<Sampler>),
    /// One sampler per row, drawing only when its row samples.
    Rows(&'a mut [Sampler]),
}

impl Picker<'_> {
    fn pick<B: Backend>(&mut self, logits: Tensor<B, 2>, draw: &[bool]) -> Vec<u32> {
        match self {
            Picker::Shared(s) => s.sample(logits),
            Picker::Rows(rows) => sample_rows(logits, rows, draw),
        }
    }
}

/// [`Generator::generate`]'s view of a run: deltas to its callback, outputs kept in order.
struct Collect<'a, 'b> {
    on_token: &'a mut OnToken<'b>,
    outputs: Vec<Option<GenOutput>>,
}

impl BatchObserver for Collect<'_, '_> {
    fn token(&mut self, item: usize, delta: &str) -> bool {
        (self.on_token)(item, delta);
        true
    }
    fn cancelled(&mut self, _: usize) -> bool {
        false
    }
    fn finished(&mut self, item: usize, result: Result<GenOutput, GenError>) {
        self.outputs[item] = result.ok();
    }
}

/// Renumbers the items of a sub-batch (the ones that could run) to the caller's indices.
struct Renumber<'a> {
    inner: &'a mut dyn BatchObserver,
    index: Vec<usize>,
}

impl BatchObserver for Renumber<'_> {
    fn token(&mut self, item: usize, delta: &str) -> bool {
        self.inner.token(self.index[item], delta)
    }
    fn cancelled(&mut self, item: usize) -> bool {
        self.inner.cancelled(self.index[item])
    }
    fn finished(&mut self, item: usize, result: Result<GenOutput, GenError>) {
        self.inner.finished(self.index[item], result)
    }
}

impl<B: Backend> LavinGenerator<B> {
    /// Prompt ids of `request`, or why it cannot run (`item` names it in the error).
    fn checked_prompt(&self, item: usize, request: &GenRequest) -> Result<Vec<u32>, GenError> {
        let cfg = self.model.config();
        let p = prompt_ids(&self.tokenizer, request, cfg.n_feats())?;
        if p.len() >= cfg.max_seq_len {
            return Err(GenError::PromptTooLong {
                item,
                tokens: p.len(),
                max: cfg.max_seq_len - 1,
            });
        }
        Ok(p)
    }

    /// The decoding loop shared by both entry points. Row `k` generates at most `max_gen[k]`
    /// tokens (and never past the context); `observer.finished` is called once per row, as
    /// soon as that row ends.
    fn run(
        &mut self,
        requests: &[&GenRequest],
        prompts: &[Vec<u32>],
        max_gen: &[usize],
        picker: &mut Picker<'_>,
        observer: &mut dyn BatchObserver,
    ) {
        let cfg = self.model.config().clone();
        let (b, eos) = (requests.len(), self.tokenizer.eos_id());
        let min_len = prompts.iter().map(Vec::len).min().unwrap_or(0);
        let longest = (0..b).map(|k| prompts[k].len() + max_gen[k]).max();
        let total = cfg.max_seq_len.min(longest.unwrap_or(0));

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
        // A batch without images skips the vision tower: `embed_buffer` takes image rows only
        // where the indicator is 1, so zeros in their place change nothing.
        let image_embeds = if requests.iter().any(|r| r.image.is_some()) {
            self.model.encode_images(self.images(requests)).1
        } else {
            Tensor::zeros([b, cfg.n_feats(), cfg.llama.dim], &self.device)
        };
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
        let mut reported = vec![false; b];
        let tokenizer = self.tokenizer.clone();
        // Row k's output: its ids up to `end` (exclusive), cut at EOS.
        let output = |tokens: &[u32], k: usize, end: usize, stopped: bool| {
            let p = prompts[k].len();
            let row = &tokens[k * total..(k + 1) * total];
            let mut end = end.min(total);
            let eos_at = row[..end].iter().position(|&t| t == eos);
            if let Some(e) = eos_at {
                end = e;
            }
            let generated: Vec<u32> = row[p.min(end)..end].to_vec();
            GenOutput {
                text: tokenizer.decode(&row[..end]),
                completion: tokenizer.decode(&generated),
                token_ids: generated,
                prompt_tokens: p,
                finish: if stopped || eos_at.is_some_and(|e| e >= p) {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                },
            }
        };
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
            for k in 0..b {
                if !done[k] && observer.cancelled(k) {
                    done[k] = true;
                    reported[k] = true;
                    let end = cur.max(prompts[k].len());
                    observer.finished(k, Ok(output(&tokens, k, end, true)));
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            let draw: Vec<bool> = (0..b)
                .map(|k| !done[k] && cur >= prompts[k].len())
                .collect();
            let sampled = picker.pick(logits, &draw);
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
                    let last = id == eos || cur + 1 >= prompts[k].len() + max_gen[k];
                    let mut stopped = false;
                    if id != eos {
                        if let Some(delta) = streams[k].push(&self.tokenizer, id) {
                            stopped = !observer.token(k, &delta);
                        }
                    }
                    if last || stopped {
                        done[k] = true;
                        reported[k] = true;
                        observer.finished(k, Ok(output(&tokens, k, cur + 1, stopped)));
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
        // Rows the context cut short.
        for k in 0..b {
            if !reported[k] {
                let end = prompts[k].len() + max_gen[k];
                observer.finished(k, Ok(output(&tokens, k, end, false)));
            }
        }
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
        let sampler = Sampler::new(params.decoding(), params.seed)
            .map_err(|e| GenError::InvalidRequest(e.to_string()))?;
        let prompts = requests
            .iter()
            .enumerate()
            .map(|(k, r)| self.checked_prompt(k, r))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&GenRequest> = requests.iter().collect();
        let mut collect = Collect {
            on_token,
            outputs: vec![None; requests.len()],
        };
        let max_gen = vec![params.max_gen_len; requests.len()];
        self.run(
            &refs,
            &prompts,
            &max_gen,
            &mut Picker::Shared(Box::new(sampler)),
            &mut collect,
        );
        collect
            .outputs
            .into_iter()
            .map(|o| o.ok_or_else(|| GenError::Model(anyhow::anyhow!("a row reported no output"))))
            .collect()
    }

    fn generate_batch(
        &mut self,
        items: &[BatchItem],
        observer: &mut dyn BatchObserver,
    ) -> Result<(), GenError> {
        let mut requests = Vec::new();
        let mut prompts = Vec::new();
        let mut max_gen = Vec::new();
        let mut samplers = Vec::new();
        let mut index = Vec::new();
        for (k, it) in items.iter().enumerate() {
            let ready = Sampler::new(it.params.decoding(), it.params.seed)
                .map_err(|e| GenError::InvalidRequest(e.to_string()))
                .and_then(|s| Ok((s, self.checked_prompt(k, &it.request)?)));
            match ready {
                Ok((sampler, prompt)) => {
                    requests.push(&it.request);
                    prompts.push(prompt);
                    max_gen.push(it.params.max_gen_len.max(1));
                    samplers.push(sampler);
                    index.push(k);
                }
                Err(e) => observer.finished(k, Err(e)),
            }
        }
        if requests.is_empty() {
            return Ok(());
        }
        let mut renumbered = Renumber {
            inner: observer,
            index,
        };
        self.run(
            &requests,
            &prompts,
            &max_gen,
            &mut Picker::Rows(&mut samplers),
            &mut renumbered,
        );
        Ok(())
    }

    fn describe(&self) -> String {
        let c = self.model.config();
        format!(
            "LaVIN (LLaMA dim {} x {} layers, CLIP width {} x {} layers)",
            c.llama.dim, c.llama.n_layers, c.clip.width, c.clip.layers
        )
    }
}
