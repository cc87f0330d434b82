//! A minimal adapter-only run of the CPU default (the LaVIN recipe: frozen base, adapters
//! trained with this crate's torch-exact AdamW and warmup + half-cosine schedule), used to
//! measure the default run's acceptance numbers and to pick the default settings. The real
//! default run is the trainer's loop; this mirrors it closely enough to size it.
//!
//! Validation ranks the options by the model's logit of the answer letter X in
//! "The answer is X." (one forward per problem: the text before X is the same for every
//! option, so this equals ranking by the likelihood of "The answer is X" up to X).

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ElementConversion;

use lavin_data::{preprocess_image, LoadOptions, MissingImage, ScienceQa, Tokenizer};
use lavin_model::bundled;
use lavin_model::{Lavin, LavinConfig};

use super::util::{
    batch_len, format, lr_at, make_batch, scheduled_step, tokenize, HostExample, Rng,
};
use super::{load_tiny_base, PretrainError};
use lavin_train::optim::{AdamW, AdamWConfig};

/// Settings of a probe run (the candidate defaults).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeOptions {
    pub data_root: PathBuf,
    pub base_dir: PathBuf,
    pub prompt_format: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// Train problems used (0 = all).
    pub limit: usize,
    /// Validation problems used (0 = all).
    pub val_limit: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            data_root: bundled::data_root(),
            base_dir: bundled::base_dir(),
            prompt_format: "QCM-A".into(),
            epochs: 4,
            batch_size: 8,
            lr: 1e-2,
            warmup_epochs: 0.5,
            weight_decay: 0.02,
            seed: 0,
            limit: 0,
            val_limit: 0,
        }
    }
}

/// Measured numbers (fractions for accuracies).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeReport {
    pub options: ProbeOptions,
    pub initial_loss: f64,
    /// Mean loss of the last 10 optimizer steps.
    pub final_loss: f64,
    pub loss_ratio: f64,
    /// Validation accuracy before any adapter training (frozen base, adapters at init).
    pub val_accuracy_at_init: f64,
    pub val_accuracy: f64,
    pub val_accuracy_image: f64,
    pub val_accuracy_text: f64,
    pub chance_accuracy: f64,
    pub steps: usize,
    pub trainable_params: usize,
    /// Training + final validation (loading and the at-init validation excluded).
    pub wall_seconds: f64,
    pub train_seconds: f64,
    pub samples_per_second: f64,
}

impl ProbeReport {
    /// The default run's acceptance: loss ratio <= 0.7, accuracy >= chance + 0.20, <= 300 s.
    pub fn passes(&self) -> bool {
        self.final_loss <= 0.7 * self.initial_loss
            && self.val_accuracy >= self.chance_accuracy + 0.20
            && self.wall_seconds <= 300.0
    }
}

struct ValItem {
    ex: HostExample,
    /// Token index (in `ex.tokens`) of the answer letter, and the letter ids of the choices.
    letter_at: usize,
    letters: Vec<u32>,
    answer: usize,
}

struct Split {
    examples: Vec<HostExample>,
    images: Vec<Vec<f32>>,
}

fn load_split(
    sqa: &ScienceQa,
    tok: &Tokenizer,
    cfg: &LavinConfig,
    split: &str,
    fmt: &str,
    limit: usize,
) -> Result<(Split, Vec<(usize, usize)>, Vec<(String, String)>), PretrainError> {
    let (items, _) = sqa.items(split, format(fmt)?, false, MissingImage::Error)?;
    let take = if limit == 0 {
        items.len()
    } else {
        limit.min(items.len())
    };
    let mut examples = Vec::new();
    let mut images = Vec::new();
    let mut meta = Vec::new();
    let mut texts = Vec::new();
    for it in &items[..take] {
        let image = match &it.image {
            Some(p) => {
                images.push(preprocess_image(p)?);
                Some(images.len() - 1)
            }
            None => None,
        };
        examples.push(tokenize(
            tok,
            &it.question,
            &it.answer,
            cfg.max_seq_len,
            image,
        )?);
        let p = &sqa.problems[&it.qid];
        meta.push((p.choices.len(), p.answer));
        texts.push((it.qid.clone(), it.question.clone()));
    }
    Ok((Split { examples, images }, meta, texts))
}

fn val_items(
    tok: &Tokenizer,
    cfg: &LavinConfig,
    split: &Split,
    meta: &[(usize, usize)],
    texts: &[(String, String)],
) -> Result<Vec<ValItem>, PretrainError> {
    let letters = ["A", "B", "C", "D", "E"];
    let mut out = Vec::new();
    for ((ex, &(n, answer)), (qid, prompt)) in split.examples.iter().zip(meta).zip(texts) {
        let enc: Vec<Vec<u32>> = letters[..n]
            .iter()
            .map(|l| tok.encode(&format!("{prompt}The answer is {l}."), true, true))
            .collect::<Result<_, _>>()?;
        let d = (0..enc[0].len())
            .find(|&i| enc.iter().any(|e| e.get(i) != enc[0].get(i)))
            .ok_or_else(|| {
                PretrainError::Invalid(format!("val {qid:?}: answer letters tokenise alike"))
            })?;
        let ids: Vec<u32> = enc.iter().map(|e| e.get(d).copied().unwrap_or(0)).collect();
        let mut ex = tokenize(tok, prompt, "The answer is A.", cfg.max_seq_len, ex.image)?;
        if d >= ex.n_real {
            return Err(PretrainError::Invalid(format!(
                "val {qid:?}: answer letter beyond max_seq_len {}",
                cfg.max_seq_len
            )));
        }
        ex.labels = ex.tokens.clone();
        out.push(ValItem {
            ex,
            letter_at: d,
            letters: ids,
            answer,
        });
    }
    Ok(out)
}

/// `(accuracy, image accuracy, text accuracy)` by ranking the answer letters.
fn evaluate<B: Backend>(
    model: &Lavin<B>,
    cfg: &LavinConfig,
    items: &[ValItem],
    images: &[Vec<f32>],
    device: &B::Device,
) -> (f64, f64, f64) {
    let img_extra = cfg.prefix_img.len() + cfg.n_feats();
    let txt_extra = cfg.prefix_nonimg.len();
    let hw = cfg.clip.input_resolution;
    let imgs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let (mut hit, mut hit_img, mut n_img) = (0usize, 0usize, 0usize);
    for chunk in items.chunks(16) {
        let ex: Vec<&HostExample> = chunk.iter().map(|v| &v.ex).collect();
        let len = batch_len(&ex, cfg.max_seq_len, img_extra, txt_extra);
        let batch = make_batch::<B>(&ex, &imgs, hw, len, true, device);
        let out = model.forward_train(batch);
        let [b, l, v] = out.logits.dims();
        let logits = out
            .logits
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        for (j, it) in chunk.iter().enumerate() {
            let extra = if it.ex.image.is_some() {
                img_extra
            } else {
                txt_extra
            };
            let p = (extra + it.letter_at).min(l - 1);
            let row = &logits[(j * l + p) * v..(j * l + p + 1) * v];
            let best = it
                .letters
                .iter()
                .enumerate()
                .max_by(|a, b| row[*a.1 as usize].total_cmp(&row[*b.1 as usize]))
                .map_or(0, |(k, _)| k);
            let ok = (best == it.answer) as usize;
            hit += ok;
            if it.ex.image.is_some() {
                hit_img += ok;
                n_img += 1;
            }
        }
        debug_assert_eq!(b, chunk.len());
    }
    let n = items.len().max(1);
    let n_txt = (items.len() - n_img).max(1);
    (
        hit as f64 / n as f64,
        hit_img as f64 / n_img.max(1) as f64,
        (hit - hit_img) as f64 / n_txt as f64,
    )
}

/// Runs the adapter-only default on the exported base in `opts.base_dir`.
pub fn probe_default<B: AutodiffBackend>(
    cfg: &LavinConfig,
    opts: &ProbeOptions,
    device: &B::Device,
) -> Result<ProbeReport, PretrainError>
where
    B::InnerBackend: Backend<Device = B::Device>,
{
    let tok = Tokenizer::from_file(super::export::tokenizer_path(&opts.base_dir))?;
    let sqa = ScienceQa::load(&opts.data_root, &LoadOptions::default())?;
    let (train, _, _) = load_split(&sqa, &tok, cfg, "train", &opts.prompt_format, opts.limit)?;
    let (val, vmeta, vtexts) =
        load_split(&sqa, &tok, cfg, "val", &opts.prompt_format, opts.val_limit)?;
    let vitems = val_items(&tok, cfg, &val, &vmeta, &vtexts)?;
    let chance =
        vmeta.iter().map(|(n, _)| 1.0 / *n as f64).sum::<f64>() / vmeta.len().max(1) as f64;
    B::seed(device, opts.seed);
    let mut model: Lavin<B> = load_tiny_base(cfg, &opts.base_dir, device)?;
    let naming = |p: &str| lavin_model::weights::original_name(p).filter(|n| n.contains("adapter"));
    let trainable_params = lavin_train::optim::trainable_params(&model, &naming)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let inner_dev = device.clone();
    let (acc0, _, _) = evaluate(&model.valid(), cfg, &vitems, &val.images, &inner_dev);

    let t0 = Instant::now();
    let mut optim = AdamW::<B::InnerBackend>::new(AdamWConfig {
        weight_decay: opts.weight_decay,
        ..AdamWConfig::default()
    });
    let img_extra = cfg.prefix_img.len() + cfg.n_feats();
    let txt_extra = cfg.prefix_nonimg.len();
    let hw = cfg.clip.input_resolution;
    let imgs: Vec<&[f32]> = train.images.iter().map(Vec::as_slice).collect();
    let n = train.examples.len();
    let bs = opts.batch_size.min(n).max(1);
    let spe = n / bs;
    let mut rng = Rng(opts.seed ^ 0xDA7A);
    let mut losses = Vec::new();
    for epoch in 0..opts.epochs {
        let order = rng.permutation(n);
        for it in 0..spe {
            let ex: Vec<&HostExample> = order[it * bs..(it + 1) * bs]
                .iter()
                .map(|&i| &train.examples[i])
                .collect();
            let len = batch_len(&ex, cfg.max_seq_len, img_extra, txt_extra);
            let batch = make_batch::<B>(&ex, &imgs, hw, len, false, device);
            let loss = model.loss(batch);
            let v: f64 = loss.clone().into_scalar().elem();
            if !v.is_finite() {
                continue;
            }
            losses.push(v);
            let progress = epoch as f64 + it as f64 / spe as f64;
            let (warmup, epochs) = (opts.warmup_epochs, opts.epochs as f64);
            let lr = lr_at(opts.lr, progress, warmup, epochs);
            model = scheduled_step(
                &mut optim, model, loss, opts.lr, progress, warmup, epochs, &naming,
            )?;
            if losses.len() % 25 == 0 {
                let k = losses.len();
                let recent =
                    losses[k.saturating_sub(25)..].iter().sum::<f64>() / 25f64.min(k as f64);
                eprintln!(
                    "probe step {k} (epoch {}): loss {recent:.4}, lr {lr:.2e}, {:.1}s",
                    epoch + 1,
                    t0.elapsed().as_secs_f64()
                );
            }
        }
    }
    let train_seconds = t0.elapsed().as_secs_f64();
    let (acc, acc_img, acc_txt) = evaluate(&model.valid(), cfg, &vitems, &val.images, &inner_dev);
    let wall = t0.elapsed().as_secs_f64();
    let k = losses.len();
    let initial = losses.first().copied().unwrap_or(f64::NAN);
    let last = losses[k.saturating_sub(10)..].iter().sum::<f64>() / 10f64.min(k as f64).max(1.0);
    Ok(ProbeReport {
        options: opts.clone(),
        initial_loss: initial,
        final_loss: last,
        loss_ratio: last / initial,
        val_accuracy_at_init: acc0,
        val_accuracy: acc,
        val_accuracy_image: acc_img,
        val_accuracy_text: acc_txt,
        chance_accuracy: chance,
        steps: k,
        trainable_params,
        wall_seconds: wall,
        train_seconds,
        samples_per_second: (k * bs) as f64 / train_seconds.max(1e-9),
    })
}
