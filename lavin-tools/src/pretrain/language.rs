//! Stage 2: the tiny LLaMA, all base parameters trained as a language model on the train
//! prompts + answers, in the very sequence layout LaVIN assembles (modality token, BOS,
//! "Image: " + feature rows or "Image: N/A", prompt, answer, EOS).
//!
//! Image rows come from the frozen stage-1 tower through a throw-away `adapter_proj`
//! (trained here, never exported); LLaMA and CLIP adapters stay at their identity init and
//! are not trained. Loss = LM loss over every real token + the answer loss (so the one
//! token that matters, the answer letter, is not drowned by ~60 prompt tokens) + a weighted
//! loss on the letter alone. QCM-A / CQM-A alternate. Text problems get a fresh option order
//! every epoch; picture problems keep mini-sqa's fixed option order, so the letter of a
//! picture answer is what the image rows must decide (a 4-layer LLaMA does not learn to bind
//! shuffled options to letters: drills of "Which option is X?" stayed at uniform letter loss
//! for 1300 steps, which is why the earlier "binding twins" were dropped).

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use lavin_data::build_prompt;
use lavin_model::clip::VisionTower;
use lavin_model::lavin::modality_mask;
use lavin_model::llama::{BlockInput, MlpRouterInput};
use lavin_model::loss::masked_cross_entropy;
use lavin_model::{Lavin, LavinBatch, LavinConfig};

use super::data::{permute_choices, PretrainData};
use super::util::{
    batch_len, format, make_batch, scheduled_step, set_trainable, tokenize, HostExample, Rng,
};
use super::PretrainError;
use lavin_train::optim::{AdamW, AdamWConfig};

/// How stage 2 went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LanguageReport {
    pub epochs: usize,
    pub steps: usize,
    pub initial_loss: f64,
    pub final_loss: f64,
    /// Mean answer-token loss of the last epoch.
    pub final_answer_loss: f64,
    pub seconds: f64,
}

const BATCH: usize = 16;
const LR: f64 = 3e-3;
const LM_WEIGHT: f64 = 0.25;
const LETTER_WEIGHT: f64 = 5.0;
/// Formats the base sees (the default run uses one of them).
pub const FORMATS: [&str; 2] = ["QCM-A", "CQM-A"];

/// `(LM loss, answer loss)` of a batch whose image rows are `feats [B, F, W]` (precomputed by
/// the frozen tower) projected by the model's `adapter_proj`.
pub fn lm_losses<B: Backend>(
    model: &Lavin<B>,
    batch: LavinBatch<B>,
    letters: Tensor<B, 2, Int>,
    feats: Tensor<B, 3>,
) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
    let s = batch.tokens.dims()[1];
    let device = batch.tokens.device();
    let embeds = model.adapter_proj.forward(feats);
    let h0 = model.assemble(batch.tokens.clone(), embeds, batch.indicators.clone(), s);
    let all = model
        .assemble_labels(batch.tokens, batch.indicators.clone(), s)
        .narrow(1, 1, s - 1);
    let ans = model
        .assemble_labels(batch.labels, batch.indicators.clone(), s)
        .narrow(1, 1, s - 1);
    let letter = model
        .assemble_labels(letters, batch.indicators, s)
        .narrow(1, 1, s - 1);
    let input = BlockInput {
        rope: &model.llama.rope,
        pos: 0,
        mask: Some(modality_mask(s, s, &device)),
        mlp_router_input: MlpRouterInput::AfterAttention,
    };
    let (h, _) = model.llama.blocks(h0, &input, None, None);
    let logits = model.llama.head(h.narrow(1, 0, s - 1));
    (
        masked_cross_entropy(logits.clone(), all),
        masked_cross_entropy(logits.clone(), ans),
        masked_cross_entropy(logits, letter),
    )
}

/// Class-token features of every train image, by the frozen tower: `[n_img][F * W]`.
fn image_features<B: AutodiffBackend>(
    tower: &VisionTower<B>,
    data: &PretrainData,
    hw: usize,
    device: &B::Device,
) -> Vec<Vec<f32>>
where
    B::InnerBackend: Backend<Device = B::Device>,
{
    let tower = tower.valid();
    let mut out = Vec::with_capacity(data.images.len());
    for chunk in data.images.chunks(32) {
        let pix: Vec<f32> = chunk
            .iter()
            .flat_map(|i| i.pixels.iter().copied())
            .collect();
        let images = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(pix, [chunk.len(), 3, hw, hw]),
            device,
        );
        let (f, _) = tower.forward(images);
        let [n, nf, w] = f.dims();
        let v = f
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        for i in 0..n {
            out.push(v[i * nf * w..(i + 1) * nf * w].to_vec());
        }
    }
    out
}

/// Trains the LLaMA of `config` with `tower` frozen; returns the whole LaVIN (CLIP = `tower`,
/// LLaMA trained, adapters at init) and a report.
pub fn train_language<B: AutodiffBackend>(
    config: &LavinConfig,
    data: &PretrainData,
    tower: VisionTower<B>,
    init: Option<lavin_model::llama::Llama<B>>,
    epochs: usize,
    seed: u64,
    device: &B::Device,
) -> Result<(Lavin<B>, LanguageReport), PretrainError>
where
    B::InnerBackend: Backend<Device = B::Device>,
{
    let t0 = Instant::now();
    let hw = config.clip.input_resolution;
    let feats = image_features(&tower, data, hw, device);
    let (nf, w) = (config.n_feats(), config.clip.width);
    let mut model = config.init::<B>(device);
    model.clip = tower;
    if let Some(llama) = init {
        model.llama = llama;
    }
    let trainable = |p: &str| {
        (p.starts_with("llama.") && !p.contains("adapter")) || p.starts_with("adapter_proj")
    };
    let mut model = set_trainable(model, &trainable);
    let naming = |p: &str| trainable(p).then(|| p.to_string());
    let mut optim = AdamW::<B::InnerBackend>::new(AdamWConfig {
        weight_decay: 0.05,
        ..AdamWConfig::default()
    });
    let formats = [format(FORMATS[0])?, format(FORMATS[1])?];
    let img_extra = config.prefix_img.len() + nf;
    let txt_extra = config.prefix_nonimg.len();
    let n = data.problems.len();
    let batch = BATCH.min(n);
    let mut rng = Rng(seed ^ 0x11A4A);
    let (mut first, mut last, mut last_ans) = (f64::NAN, f64::NAN, f64::NAN);
    let mut steps = 0;
    for epoch in 0..epochs {
        // Fresh option order and format for every problem, every epoch.
        let mut examples: Vec<HostExample> = Vec::with_capacity(n);
        let mut letter_labels: Vec<Vec<u32>> = Vec::with_capacity(n);
        for (i, (qid, p)) in data.problems.iter().enumerate() {
            // Picture problems list their options in a fixed order (see mini-sqa's README);
            // text problems get a fresh option order every epoch.
            let q = if p.has_image() {
                p.clone()
            } else {
                permute_choices(p, &rng.permutation(p.choices.len()))
            };
            let f = formats[rng.below(2)];
            // Half the picture problems also carry their caption in the context: the easy
            // way to learn "pick the option the context names", which the image rows then
            // only have to trigger (the default run never uses captions).
            let image = data.image_of[i];
            let caption = image.is_some() && rng.below(2) == 1;
            let (prompt, answer) = build_prompt(&q, f, caption).map_err(|e| {
                PretrainError::Invalid(format!(
                    "{}: entry {qid:?}: {e}",
                    data.root.join("problems.json").display()
                ))
            })?;
            let ex = tokenize(&data.tokenizer, &prompt, &answer, config.max_seq_len, image)?;
            // The one position that decides the answer: where "The answer is X." differs
            // from the same text with another letter.
            let other = if q.answer == 0 { "B" } else { "A" };
            let alt =
                data.tokenizer
                    .encode(&format!("{prompt}The answer is {other}."), true, true)?;
            let mut only = vec![0u32; ex.tokens.len()];
            if let Some(d) = (0..ex.n_real).find(|&d| alt.get(d) != Some(&ex.tokens[d])) {
                only[d] = ex.tokens[d];
            }
            letter_labels.push(only);
            examples.push(ex);
        }
        let n_ex = examples.len();
        let spe = (n_ex / batch).max(1);
        let order = rng.permutation(n_ex);
        let (mut ep_loss, mut ep_ans, mut ep_letter) = (0.0, 0.0, 0.0);
        for it in 0..spe {
            let items: Vec<&HostExample> = order[it * batch..(it + 1) * batch]
                .iter()
                .map(|&i| &examples[i])
                .collect();
            let len = batch_len(&items, config.max_seq_len, img_extra, txt_extra);
            let no_pixels: Vec<&[f32]> = Vec::new();
            // The tower is frozen: give the batch no pixels (zeros) and splice cached features.
            let lb = make_batch::<B>(&items, &no_pixels, 1, len, false, device);
            let mut fv = vec![0f32; items.len() * nf * w];
            for (j, e) in items.iter().enumerate() {
                if let Some(k) = e.image {
                    fv[j * nf * w..(j + 1) * nf * w].copy_from_slice(&feats[k]);
                }
            }
            let f = Tensor::<B, 3>::from_data(TensorData::new(fv, [items.len(), nf, w]), device);
            let lt: Vec<i64> = order[it * batch..(it + 1) * batch]
                .iter()
                .flat_map(|&i| letter_labels[i][..len].iter().map(|&t| t as i64))
                .collect();
            let lt =
                Tensor::<B, 2, Int>::from_data(TensorData::new(lt, [items.len(), len]), device);
            let (lm, ans, letter) = lm_losses(&model, lb, lt, f);
            // Why these weights: the answer letter is 1 of ~60 tokens; without its own term the
            // LM loss (easy prompt text) dominates and the letter stays at chance.
            let loss = lm.clone() * LM_WEIGHT + ans.clone() + letter.clone() * LETTER_WEIGHT;
            ep_letter += letter.into_scalar().elem::<f64>();
            let (lm_v, ans_v): (f64, f64) = (lm.into_scalar().elem(), ans.into_scalar().elem());
            if first.is_nan() {
                first = lm_v;
            }
            ep_loss += lm_v;
            ep_ans += ans_v;
            let progress = epoch as f64 + it as f64 / spe as f64;
            let epochs_f = epochs as f64;
            model = scheduled_step(
                &mut optim, model, loss, LR, progress, 1.0, epochs_f, &naming,
            )?;
            steps += 1;
        }
        last = ep_loss / spe as f64;
        last_ans = ep_ans / spe as f64;
        eprintln!(
            "llama epoch {}/{epochs}: lm loss {last:.4}, answer loss {last_ans:.4}, letter loss {:.4} ({:.0}s)",
            epoch + 1,
            ep_letter / spe as f64,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok((
        model,
        LanguageReport {
            epochs,
            steps,
            initial_loss: first,
            final_loss: last,
            final_answer_loss: last_ans,
            seconds: t0.elapsed().as_secs_f64(),
        },
    ))
}
