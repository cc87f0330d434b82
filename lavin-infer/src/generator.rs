//! The seam between the user-facing tools (eval, chat, server) and the model.
//!
//! Everything in this crate talks to a [`Generator`]: the real LaVIN model implements it (wired by
//! the model crate's generation code), and [`ScriptedGenerator`] is a fake that streams canned
//! replies so the loops, the server and their tests run without weights.

use std::sync::Arc;
use std::time::Duration;

/// One preprocessed image: `3 x 224 x 224` floats, channel-major, normalised as LaVIN expects.
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// Where the image came from (file path or "upload"), for messages.
    pub name: String,
    /// `[3, 224, 224]` pixels, channel-major.
    pub pixels: Arc<Vec<f32>>,
}

/// Side of the square image the model takes.
pub use lavin_data::image::IMAGE_SIZE;

/// One prompt to complete. `image: None` is a text-only item (indicator 0, zero image).
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// Prompt text as the original feeds it (no BOS; the generator adds `Image: ` prefixes).
    pub prompt: String,
    /// The image, if any.
    pub image: Option<ImageInput>,
}

impl GenRequest {
    /// A text-only request.
    pub fn text(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            image: None,
        }
    }
}

/// Decoding settings for one `generate` call. The router temperature is a model setting, not
/// part of these.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// New tokens at most.
    pub max_gen_len: usize,
    /// Sampling temperature; 0 = greedy.
    pub temperature: f32,
    /// Nucleus threshold (the original's default 0.75 at temperature 0.1).
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Seed of the sampler for this call.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// The original `eval.py` / demo settings: 0.1 / 0.75, 64 new tokens, seed 1.
    fn default() -> Self {
        Self {
            max_gen_len: 64,
            temperature: 0.1,
            top_p: 0.75,
            top_k: 0,
            seed: 1,
        }
    }
}

impl SamplingParams {
    /// The decoding rule these settings select.
    pub fn decoding(&self) -> crate::sampling::Decoding {
        crate::sampling::Decoding::from_params(self.temperature, self.top_p, self.top_k)
    }
}

/// Why generation stopped for one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-sequence token.
    Stop,
    /// `max_gen_len` (or the context) reached.
    Length,
}

/// The result for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOutput {
    /// The original's decode: prompt plus generated text, cut at EOS (the answer regex and the
    /// MME parser read this).
    pub text: String,
    /// The generated part alone.
    pub completion: String,
    /// Generated ids (EOS excluded).
    pub token_ids: Vec<u32>,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Why it stopped.
    pub finish: FinishReason,
}

/// What can go wrong in `generate`. `PromptTooLong` and `InvalidRequest` are the caller's
/// fault (the server answers 400); `Model` is ours (500).
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The prompt does not fit the model's context.
    #[error("prompt of request {item} is too long: {tokens} tokens, the model's context allows at most {max}")]
    PromptTooLong {
        /// Index of the request in the batch.
        item: usize,
        /// Its length in tokens.
        tokens: usize,
        /// The most the model accepts.
        max: usize,
    },
    /// Settings or inputs the model cannot take.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The caller cancelled the item before it started.
    #[error("the request was cancelled")]
    Cancelled,
    /// Anything else (weights, backend).
    #[error(transparent)]
    Model(#[from] anyhow::Error),
}

/// Callback receiving `(item index, text delta)` as tokens are produced.
pub type OnToken<'a> = dyn FnMut(usize, &str) + 'a;

/// One request of a [`Generator::generate_batch`] call with its own decoding settings.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// The prompt (and image).
    pub request: GenRequest,
    /// Its settings: length, temperature, top-p, top-k and the seed of its own random stream.
    pub params: SamplingParams,
}

/// The caller's side of [`Generator::generate_batch`]: receives each item's text as it is
/// produced and its result as soon as that item ends, and may stop items early.
pub trait BatchObserver {
    /// A text delta of `item`. Returning `false` ends that item now (e.g. a stop string seen).
    fn token(&mut self, item: usize, delta: &str) -> bool;
    /// Asked before every step for each live item: `true` ends it now (its client left).
    fn cancelled(&mut self, item: usize) -> bool;
    /// Called exactly once per item: its output (cut where it ended; an item ended by the
    /// observer reports [`FinishReason::Stop`]) or why it could not run.
    fn finished(&mut self, item: usize, result: Result<GenOutput, GenError>);
}

/// A batched text generator (the LaVIN model, or a fake).
pub trait Generator: Send {
    /// Complete every request; stream text deltas of the generated part to `on_token` as they
    /// are produced; return one output per request, in order. One decoding setting and one
    /// random stream for the whole batch (the evaluation commands' fixed seeding).
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
        on_token: &mut OnToken<'_>,
    ) -> Result<Vec<GenOutput>, GenError>;

    /// Complete `items` together, each with its own settings and random stream (seeded by its
    /// `params.seed`, drawn only when that item samples, so its text does not depend on what it
    /// is batched with). Items end independently; a request the model cannot take (prompt too
    /// long) is reported through `finished` without failing the others. `Err` means the model
    /// failed for every item that has not finished yet.
    ///
    /// The default runs the items one after another through [`Generator::generate`] (no early
    /// stop inside an item); batching generators override it.
    fn generate_batch(
        &mut self,
        items: &[BatchItem],
        observer: &mut dyn BatchObserver,
    ) -> Result<(), GenError> {
        for (k, item) in items.iter().enumerate() {
            if observer.cancelled(k) {
                observer.finished(k, Err(GenError::Cancelled));
                continue;
            }
            let result = self.generate(
                std::slice::from_ref(&item.request),
                &item.params,
                &mut |_, d| {
                    observer.token(k, d);
                },
            );
            match result {
                Ok(mut out) if !out.is_empty() => observer.finished(k, Ok(out.swap_remove(0))),
                Ok(_) => observer.finished(
                    k,
                    Err(GenError::Model(anyhow::anyhow!(
                        "the generator returned no output"
                    ))),
                ),
                Err(e @ (GenError::PromptTooLong { .. } | GenError::InvalidRequest(_))) => {
                    observer.finished(k, Err(e))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A short description for logs and `/health` (model preset, backend).
    fn describe(&self) -> String {
        "generator".to_string()
    }
}

impl<G: Generator + ?Sized> Generator for Box<G> {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
        on_token: &mut OnToken<'_>,
    ) -> Result<Vec<GenOutput>, GenError> {
        (**self).generate(requests, params, on_token)
    }
    fn generate_batch(
        &mut self,
        items: &[BatchItem],
        observer: &mut dyn BatchObserver,
    ) -> Result<(), GenError> {
        (**self).generate_batch(items, observer)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// A reply function for [`ScriptedGenerator`].
pub type ReplyFn = Box<dyn Fn(&GenRequest) -> String + Send>;

/// A fake generator for tests and demos: replies come from a function of the request, split into
/// word "tokens" (each keeps its trailing space), streamed with an optional delay per token.
/// A prompt longer than `max_prompt_chars` characters fails with `PromptTooLong` (one character
/// = one token).
pub struct ScriptedGenerator {
    reply: ReplyFn,
    /// Pause after each token, to make streaming visible.
    pub token_delay: Duration,
    /// Prompt length limit, in characters.
    pub max_prompt_chars: usize,
    /// Number of `generate` calls so far.
    pub calls: usize,
    /// Size of every `generate_batch` call so far (shared, so a test can read it while a
    /// server owns the generator).
    pub batch_sizes: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl ScriptedGenerator {
    /// A fake that answers with `reply(request)`.
    pub fn new(reply: impl Fn(&GenRequest) -> String + Send + 'static) -> Self {
        Self {
            reply: Box::new(reply),
            token_delay: Duration::ZERO,
            max_prompt_chars: 4096,
            calls: 0,
            batch_sizes: Arc::default(),
        }
    }

    /// A fake that always answers `text`.
    pub fn constant(text: impl Into<String>) -> Self {
        let text = text.into();
        Self::new(move |_| text.clone())
    }

    /// A fake that describes what it was given (image or not, the last prompt line that is not
    /// an open role like `Responese:`), handy for checking that a request arrived intact.
    pub fn echo() -> Self {
        Self::new(|r| {
            let last = r
                .prompt
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty() && !l.trim_end().ends_with(':'));
            format!(
                "I see {} and you said: {}",
                match &r.image {
                    Some(_) => "an image",
                    None => "no image",
                },
                last.unwrap_or("").trim()
            )
        })
    }

    /// Sets the per-token delay.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.token_delay = delay;
        self
    }
}

/// Splits text into word tokens that concatenate back to it.
pub fn word_tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b' ' && (i + 1 == bytes.len() || bytes[i + 1] != b' ') {
            out.push(&text[start..=i]);
            start = i + 1;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

impl Generator for ScriptedGenerator {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
        on_token: &mut OnToken<'_>,
    ) -> Result<Vec<GenOutput>, GenError> {
        self.calls += 1;
        for (item, r) in requests.iter().enumerate() {
            let tokens = r.prompt.chars().count();
            if tokens > self.max_prompt_chars {
                return Err(GenError::PromptTooLong {
                    item,
                    tokens,
                    max: self.max_prompt_chars,
                });
            }
        }
        let replies: Vec<String> = requests.iter().map(|r| (self.reply)(r)).collect();
        let tokens: Vec<Vec<&str>> = replies.iter().map(|r| word_tokens(r)).collect();
        let steps = tokens.iter().map(Vec::len).max().unwrap_or(0);
        let steps = steps.min(params.max_gen_len);
        for step in 0..steps {
            for (item, toks) in tokens.iter().enumerate() {
                if let Some(t) = toks.get(step) {
                    on_token(item, t);
                }
            }
            if !self.token_delay.is_zero() {
                std::thread::sleep(self.token_delay);
            }
        }
        Ok(requests
            .iter()
            .zip(&tokens)
            .map(|(r, toks)| {
                let n = toks.len().min(params.max_gen_len);
                let completion: String = toks[..n].concat();
                GenOutput {
                    text: format!("{}{}", r.prompt, completion),
                    token_ids: (0..n as u32).collect(),
                    prompt_tokens: r.prompt.chars().count(),
                    finish: if n < toks.len() {
                        FinishReason::Length
                    } else {
                        FinishReason::Stop
                    },
                    completion,
                }
            })
            .collect())
    }

    /// Steps all items together, one word per step, each with its own length limit; items
    /// end independently (length, observer stop, cancellation).
    fn generate_batch(
        &mut self,
        items: &[BatchItem],
        observer: &mut dyn BatchObserver,
    ) -> Result<(), GenError> {
        self.batch_sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(items.len());
        struct Row {
            tokens: Vec<String>,
            taken: usize,
            stopped: bool,
            live: bool,
        }
        let mut rows = Vec::with_capacity(items.len());
        for (k, it) in items.iter().enumerate() {
            let tokens = it.request.prompt.chars().count();
            let live = tokens <= self.max_prompt_chars;
            if !live {
                observer.finished(
                    k,
                    Err(GenError::PromptTooLong {
                        item: k,
                        tokens,
                        max: self.max_prompt_chars,
                    }),
                );
            }
            let reply = (self.reply)(&it.request);
            rows.push(Row {
                tokens: word_tokens(&reply)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                taken: 0,
                stopped: false,
                live,
            });
        }
        let output = |it: &BatchItem, row: &Row| {
            let completion: String = row.tokens[..row.taken].concat();
            GenOutput {
                text: format!("{}{}", it.request.prompt, completion),
                token_ids: (0..row.taken as u32).collect(),
                prompt_tokens: it.request.prompt.chars().count(),
                finish: if row.stopped || row.taken == row.tokens.len() {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                },
                completion,
            }
        };
        while rows.iter().any(|r| r.live) {
            for (k, (it, row)) in items.iter().zip(rows.iter_mut()).enumerate() {
                if !row.live {
                    continue;
                }
                if observer.cancelled(k) {
                    row.stopped = true;
                } else if row.taken < row.tokens.len().min(it.params.max_gen_len) {
                    row.taken += 1;
                    row.stopped = !observer.token(k, &row.tokens[row.taken - 1]);
                }
                if row.stopped || row.taken >= row.tokens.len().min(it.params.max_gen_len) {
                    row.live = false;
                    observer.finished(k, Ok(output(it, row)));
                }
            }
            if rows.iter().any(|r| r.live) && !self.token_delay.is_zero() {
                std::thread::sleep(self.token_delay);
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "scripted fake generator".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_tokens_round_trip() {
        for s in ["", "a", "The answer is A.", "two  spaces ", " lead"] {
            assert_eq!(word_tokens(s).concat(), s);
        }
        assert_eq!(word_tokens("a b c"), vec!["a ", "b ", "c"]);
    }

    #[test]
    fn scripted_streams_and_limits() {
        let mut g = ScriptedGenerator::constant("one two three");
        let mut seen = Vec::new();
        let params = SamplingParams {
            max_gen_len: 2,
            ..Default::default()
        };
        let out = g
            .generate(
                &[GenRequest::text("Q: "), GenRequest::text("R: ")],
                &params,
                &mut |i, d| seen.push((i, d.to_string())),
            )
            .unwrap();
        assert_eq!(out[0].completion, "one two ");
        assert_eq!(out[1].text, "R: one two ");
        assert_eq!(out[0].finish, FinishReason::Length);
        assert_eq!(seen.len(), 4);
        g.max_prompt_chars = 2;
        assert!(matches!(
            g.generate(&[GenRequest::text("long")], &params, &mut |_, _| {}),
            Err(GenError::PromptTooLong { tokens: 4, .. })
        ));
    }
}
