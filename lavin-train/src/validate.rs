//! Validation accuracy without generation: every option X of a problem is scored by the model's
//! log-likelihood of the answer text "The answer is X." given the test prompt (sum of the
//! answer tokens' log-probabilities, the tokens LaVIN's loss trains on), and the best-scoring
//! option is the prediction. All options of several problems go through one forward
//! (no autodiff). Chance = mean over problems of 1 / number of options.

use burn::tensor::backend::Backend;
use burn::tensor::{activation::log_softmax, Int, Tensor};

use lavin_data::{ScienceQa, SqaItem, Tokenizer};
use lavin_model::{Lavin, LavinBatch, LavinConfig};

use crate::data::{Row, SqaSource};

/// How validation ranks the answers (written to `summary.json`).
pub const METHOD: &str =
    "rank options by the log-likelihood of \"The answer is X.\" given the prompt (no generation)";

/// The letters of ScienceQA options.
pub const LETTERS: [&str; 5] = ["A", "B", "C", "D", "E"];

/// Validation set: one row per (problem, option).
pub struct ValSet {
    /// Rows (options) and images.
    pub source: SqaSource,
    /// Per problem: `(first row, number of options, correct option)`.
    pub problems: Vec<(usize, usize, usize)>,
}

/// Result of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValResult {
    /// Fraction correct.
    pub accuracy: f64,
    /// Expected accuracy of uniform guessing.
    pub chance: f64,
    /// Problems scored.
    pub n: usize,
}

impl ValSet {
    /// Build from ScienceQA items of a split (`limit` 0 = all).
    pub fn build(
        tok: &Tokenizer,
        cfg: &LavinConfig,
        sqa: &ScienceQa,
        items: &[SqaItem],
        max_seq_len: usize,
    ) -> Result<Self, String> {
        let mut triples = Vec::new();
        let mut problems = Vec::new();
        for it in items {
            let p = &sqa.problems[&it.qid];
            let n = p.choices.len().min(LETTERS.len());
            if n == 0 {
                continue;
            }
            problems.push((triples.len(), n, p.answer.min(n - 1)));
            for l in &LETTERS[..n] {
                triples.push((
                    it.question.clone(),
                    format!("The answer is {l}."),
                    it.image.clone(),
                ));
            }
        }
        let source = SqaSource::build(tok, cfg, &triples, max_seq_len)?;
        Ok(Self { source, problems })
    }

    /// Chance accuracy.
    pub fn chance(&self) -> f64 {
        self.problems
            .iter()
            .map(|&(_, n, _)| 1.0 / n as f64)
            .sum::<f64>()
            / self.problems.len().max(1) as f64
    }
}

/// Sum of the answer tokens' log-probabilities of each row.
pub fn score_rows<B: Backend>(
    model: &Lavin<B>,
    src: &SqaSource,
    rows: &[&Row],
    device: &B::Device,
) -> Result<Vec<f32>, String> {
    let (batch, _) = src.make_batch::<B>(rows, device)?;
    Ok(answer_scores(model, batch))
}

/// Sum of the answer tokens' log-probabilities of each row of `batch` (the tokens the loss
/// trains on).
pub fn answer_scores<B: Backend>(model: &Lavin<B>, batch: LavinBatch<B>) -> Vec<f32> {
    let out = model.forward_train(batch);
    let [b, l, _] = out.logits.dims();
    let logp = log_softmax(out.logits, 2);
    let targets: Tensor<B, 3, Int> = out.targets.clone().reshape([b, l, 1]);
    let picked = logp.gather(2, targets).reshape([b, l]);
    let mask = out.targets.not_equal_elem(0).float();
    let sums = (picked * mask).sum_dim(1).reshape([b]);
    sums.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data converts to f32")
}

/// Accuracy of `model` on `set`, `rows_per_forward` option rows per forward.
pub fn evaluate<B: Backend>(
    model: &Lavin<B>,
    set: &ValSet,
    rows_per_forward: usize,
    device: &B::Device,
) -> Result<ValResult, String> {
    let all: Vec<&Row> = set.source.rows.iter().collect();
    let mut scores = Vec::with_capacity(all.len());
    for chunk in all.chunks(rows_per_forward.max(1)) {
        scores.extend(score_rows(model, &set.source, chunk, device)?);
    }
    let mut hit = 0usize;
    for &(first, n, answer) in &set.problems {
        let s = &scores[first..first + n];
        let best = (0..n).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap_or(0);
        hit += (best == answer) as usize;
    }
    Ok(ValResult {
        accuracy: hit as f64 / set.problems.len().max(1) as f64,
        chance: set.chance(),
        n: set.problems.len(),
    })
}
