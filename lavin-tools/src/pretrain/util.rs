//! Small shared pieces: choosing trainable parameters by path, reading parameters out of a
//! module, building LaVIN batches from host data.

use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use lavin_train::optim::{step_module, AdamW, ParamNaming};

use lavin_data::{tokenize_example, PromptFormat, Tokenizer};
use lavin_model::LavinBatch;

use super::PretrainError;

/// Sets `require_grad` on every float parameter whose Burn path satisfies `pred`, clears it
/// elsewhere (so frozen parameters get no gradient and no optimizer state).
pub fn set_trainable<B: Backend, M: Module<B>>(module: M, pred: &dyn Fn(&str) -> bool) -> M {
    struct Mapper<'a> {
        stack: Vec<String>,
        pred: &'a dyn Fn(&str) -> bool,
    }
    impl<B: Backend> ModuleMapper<B> for Mapper<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let t = (self.pred)(&self.stack.join("."));
            p.set_require_grad(t)
        }
    }
    module.map(&mut Mapper {
        stack: Vec::new(),
        pred,
    })
}

/// A tokenised LaVIN example on the host.
#[derive(Debug, Clone)]
pub struct HostExample {
    /// `[BOS] + encode(prompt + answer) + [EOS]`, padded with 0 to `max_seq_len`.
    pub tokens: Vec<u32>,
    /// Prompt positions zeroed (the loss LaVIN trains on).
    pub labels: Vec<u32>,
    pub n_real: usize,
    /// Index into an image table, `None` = text only.
    pub image: Option<usize>,
}

/// Tokenises `(prompt, answer)` as LaVIN's ScienceQA dataset does.
pub fn tokenize(
    tok: &Tokenizer,
    prompt: &str,
    answer: &str,
    max_seq_len: usize,
    image: Option<usize>,
) -> Result<HostExample, PretrainError> {
    let t = tokenize_example(tok, prompt, answer, max_seq_len)?;
    Ok(HostExample {
        tokens: t.tokens,
        labels: t.labels,
        n_real: t.n_real,
        image,
    })
}

/// The shortest length keeping every real token of the batch once LaVIN splices in the image
/// prefix and features (dynamic padding: the padding positions only cost time).
pub fn batch_len(
    items: &[&HostExample],
    max_seq_len: usize,
    img_extra: usize,
    txt_extra: usize,
) -> usize {
    let v: Vec<(usize, usize)> = items
        .iter()
        .map(|e| {
            (
                e.n_real,
                if e.image.is_some() {
                    img_extra
                } else {
                    txt_extra
                },
            )
        })
        .collect();
    lavin_data::batch::batch_pad_len_exact(max_seq_len, &v).max(2)
}

/// Builds a [`LavinBatch`] cut to `len`; `images[i]` are `[3, H, W]` CHW pixels. With
/// `full_lm` the labels are the tokens themselves (language modelling on the whole text).
pub fn make_batch<B: Backend>(
    items: &[&HostExample],
    images: &[&[f32]],
    image_hw: usize,
    len: usize,
    full_lm: bool,
    device: &B::Device,
) -> LavinBatch<B> {
    let b = items.len();
    let ints = |f: &dyn Fn(&HostExample) -> &[u32]| {
        let v: Vec<i64> = items
            .iter()
            .flat_map(|e| f(e)[..len].iter().map(|&t| t as i64))
            .collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(v, [b, len]), device)
    };
    let tokens = ints(&|e| &e.tokens);
    let labels = if full_lm {
        tokens.clone()
    } else {
        ints(&|e| &e.labels)
    };
    let plane = 3 * image_hw * image_hw;
    let mut pix = vec![0f32; b * plane];
    for (i, e) in items.iter().enumerate() {
        // An empty `images` table means the caller splices features itself (zeros here).
        if let Some(px) = e.image.and_then(|k| images.get(k)) {
            pix[i * plane..(i + 1) * plane].copy_from_slice(px);
        }
    }
    let images =
        Tensor::<B, 4>::from_data(TensorData::new(pix, [b, 3, image_hw, image_hw]), device);
    let ind: Vec<i64> = items.iter().map(|e| e.image.is_some() as i64).collect();
    let indicators = Tensor::<B, 1, Int>::from_data(TensorData::new(ind, [b]), device);
    LavinBatch {
        tokens,
        labels,
        images,
        indicators,
    }
}

/// The prompt format used when none is named: QCM-A (short enough that `max_seq_len` 96
/// keeps every mini-sqa example whole).
pub fn format(name: &str) -> Result<PromptFormat, PretrainError> {
    name.parse()
        .map_err(|e: lavin_data::UnknownPromptFormat| PretrainError::Invalid(e.to_string()))
}

/// Half-cosine after linear warmup, by fractional epoch (as LaVIN's schedule).
pub fn lr_at(peak: f64, epoch: f64, warmup: f64, epochs: f64) -> f64 {
    lavin_train::lr_sched::LrSchedule {
        lr: peak,
        min_lr: peak * 0.02,
        epochs,
        warmup_epochs: warmup,
    }
    .lr_at(epoch)
}

/// One scheduled AdamW step from `loss`: backward, the lr of fractional epoch `progress` under
/// [`lr_at`]`(peak, progress, warmup, epochs)`, and a step of the parameters `naming` names.
#[allow(clippy::too_many_arguments)]
pub fn scheduled_step<B, M, N>(
    optim: &mut AdamW<B::InnerBackend>,
    model: M,
    loss: Tensor<B, 1>,
    peak: f64,
    progress: f64,
    warmup: f64,
    epochs: f64,
    naming: &N,
) -> Result<M, PretrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    N: ParamNaming,
{
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    let lr = lr_at(peak, progress, warmup, epochs);
    Ok(step_module(optim, model, &mut grads, lr, 1.0, naming)?.0)
}

/// SplitMix64: a tiny seeded shuffle source with no dependency on `rand`'s version.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        self.shuffle(&mut v);
        v
    }
}
