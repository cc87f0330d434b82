//! The training set of a run: ScienceQA (or instruction) items tokenised as LaVIN's datasets do,
//! with preprocessed images, served to the trainer as [`BatchSource`] batches.
//!
//! Images are decoded off the training thread: at load time every image of the split is
//! decoded by a pool of scoped worker threads and cached as CHW f32 (the mini dataset: 599
//! pictures, ~360 MB), unless there are more than [`CACHE_LIMIT`] images; then each batch's
//! images are decoded in parallel by worker threads when the batch is built.
//! Batches are padded dynamically to the longest item (positions past it are padding, which the
//! causal mask and the masked loss make irrelevant to the result).

use std::path::PathBuf;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};

use lavin_data::{preprocess_image, tokenize_example, PromptFormat, SqaItem, Tokenizer};
use lavin_model::{LavinBatch, LavinConfig};

/// What a batch contributes to throughput counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchStats {
    /// Examples in the batch.
    pub samples: usize,
    /// Non-padding tokens in the batch.
    pub tokens: usize,
}

/// A training set the loop can index: the trainer picks indices, the source builds tensors.
pub trait BatchSource<B: AutodiffBackend> {
    /// Number of examples.
    fn len(&self) -> usize;
    /// Whether empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Build the batch of these example indices.
    fn batch(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> Result<(LavinBatch<B>, BatchStats), String>;
}

/// Above this many images of a split, images are decoded per batch instead of cached.
pub const CACHE_LIMIT: usize = 4096;

/// One tokenised example on the host.
#[derive(Debug, Clone)]
pub struct Row {
    /// `[BOS] + encode(prompt + answer) + [EOS]`, padded with 0 to `max_seq_len`.
    pub tokens: Vec<u32>,
    /// Prompt and padding positions zeroed.
    pub labels: Vec<u32>,
    /// Real positions.
    pub n_real: usize,
    /// Index into the image table.
    pub image: Option<usize>,
}

/// Image table: decoded once (cached) or decoded on demand from paths.
pub enum Images {
    /// Every image decoded (`[3, H, W]` f32 each).
    Cached(Vec<Vec<f32>>),
    /// Paths, decoded per batch.
    Lazy(Vec<PathBuf>),
}

impl Images {
    /// Decode `paths` in parallel (scoped threads) if there are at most `CACHE_LIMIT`, else keep
    /// the paths.
    pub fn load(paths: Vec<PathBuf>) -> Result<Self, String> {
        if paths.len() > CACHE_LIMIT {
            return Ok(Self::Lazy(paths));
        }
        Ok(Self::Cached(decode_parallel(&paths)?))
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            Self::Cached(v) => v.len(),
            Self::Lazy(v) => v.len(),
        }
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels of the given images (decoded in parallel when lazy).
    pub fn get_many(&self, idx: &[usize]) -> Result<Vec<std::borrow::Cow<'_, [f32]>>, String> {
        match self {
            Self::Cached(v) => Ok(idx
                .iter()
                .map(|&i| std::borrow::Cow::Borrowed(v[i].as_slice()))
                .collect()),
            Self::Lazy(p) => {
                let paths: Vec<PathBuf> = idx.iter().map(|&i| p[i].clone()).collect();
                Ok(decode_parallel(&paths)?
                    .into_iter()
                    .map(std::borrow::Cow::Owned)
                    .collect())
            }
        }
    }
}

/// Decode and preprocess images on `available_parallelism` worker threads.
pub fn decode_parallel(paths: &[PathBuf]) -> Result<Vec<Vec<f32>>, String> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(paths.len())
        .max(1);
    let chunk = paths.len().div_ceil(workers);
    let results: Vec<Result<Vec<Vec<f32>>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|p| preprocess_image(p).map_err(|e| e.to_string()))
                        .collect::<Result<Vec<_>, String>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("image worker panicked".into()))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(paths.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// A tokenised split with its images.
pub struct SqaSource {
    /// Rows.
    pub rows: Vec<Row>,
    /// Images referenced by `rows`.
    pub images: Images,
    /// Image side (CLIP input resolution).
    pub image_hw: usize,
    /// `len(prefix_img) + n_feats`: rows an image item adds before the text.
    pub img_extra: usize,
    /// `len(prefix_nonimg)`.
    pub txt_extra: usize,
    /// Sequence length S.
    pub max_seq_len: usize,
}

impl SqaSource {
    /// Tokenise `(prompt, answer, image)` triples; decode images.
    pub fn build(
        tok: &Tokenizer,
        cfg: &LavinConfig,
        items: &[(String, String, Option<PathBuf>)],
        max_seq_len: usize,
    ) -> Result<Self, String> {
        let mut rows = Vec::with_capacity(items.len());
        let mut paths = Vec::new();
        for (prompt, answer, image) in items {
            let t =
                tokenize_example(tok, prompt, answer, max_seq_len).map_err(|e| e.to_string())?;
            let image = image.as_ref().map(|p| {
                paths.push(p.clone());
                paths.len() - 1
            });
            rows.push(Row {
                tokens: t.tokens,
                labels: t.labels,
                n_real: t.n_real,
                image,
            });
        }
        Ok(Self {
            rows,
            images: Images::load(paths)?,
            image_hw: cfg.clip.input_resolution,
            img_extra: cfg.prefix_img.len() + cfg.n_feats(),
            txt_extra: cfg.prefix_nonimg.len(),
            max_seq_len,
        })
    }

    /// From ScienceQA items.
    pub fn from_sqa(
        tok: &Tokenizer,
        cfg: &LavinConfig,
        items: &[SqaItem],
        max_seq_len: usize,
    ) -> Result<Self, String> {
        let triples: Vec<_> = items
            .iter()
            .map(|it| (it.question.clone(), it.answer.clone(), it.image.clone()))
            .collect();
        Self::build(tok, cfg, &triples, max_seq_len)
    }

    /// Build the tensors of `rows` (dynamically padded).
    pub fn make_batch<B: Backend>(
        &self,
        rows: &[&Row],
        device: &B::Device,
    ) -> Result<(LavinBatch<B>, BatchStats), String> {
        let b = rows.len();
        let lens: Vec<(usize, usize)> = rows
            .iter()
            .map(|r| {
                (
                    r.n_real,
                    if r.image.is_some() {
                        self.img_extra
                    } else {
                        self.txt_extra
                    },
                )
            })
            .collect();
        let len = lavin_data::batch::batch_pad_len_exact(self.max_seq_len, &lens)
            .max(2)
            .min(self.max_seq_len);
        let ints = |f: &dyn Fn(&Row) -> &[u32]| {
            let v: Vec<i64> = rows
                .iter()
                .flat_map(|r| f(r)[..len].iter().map(|&t| t as i64))
                .collect();
            Tensor::<B, 2, Int>::from_data(TensorData::new(v, [b, len]), device)
        };
        let tokens = ints(&|r| &r.tokens);
        let labels = ints(&|r| &r.labels);
        let hw = self.image_hw;
        let plane = 3 * hw * hw;
        let img_idx: Vec<usize> = rows.iter().filter_map(|r| r.image).collect();
        let pixels = self.images.get_many(&img_idx)?;
        let mut pix = vec![0f32; b * plane];
        let mut k = 0;
        for (i, r) in rows.iter().enumerate() {
            if r.image.is_some() {
                pix[i * plane..(i + 1) * plane].copy_from_slice(&pixels[k]);
                k += 1;
            }
        }
        let images = Tensor::<B, 4>::from_data(TensorData::new(pix, [b, 3, hw, hw]), device);
        let ind: Vec<i64> = rows.iter().map(|r| r.image.is_some() as i64).collect();
        let indicators = Tensor::<B, 1, Int>::from_data(TensorData::new(ind, [b]), device);
        let tokens_n = rows.iter().map(|r| r.n_real).sum();
        Ok((
            LavinBatch {
                tokens,
                labels,
                images,
                indicators,
            },
            BatchStats {
                samples: b,
                tokens: tokens_n,
            },
        ))
    }

    /// Number of items with an image.
    pub fn n_with_image(&self) -> usize {
        self.rows.iter().filter(|r| r.image.is_some()).count()
    }
}

impl<B: AutodiffBackend> BatchSource<B> for SqaSource {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn batch(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> Result<(LavinBatch<B>, BatchStats), String> {
        let rows: Vec<&Row> = indices.iter().map(|&i| &self.rows[i]).collect();
        self.make_batch::<B>(&rows, device)
    }
}

/// Parse a prompt format name (error names the value).
pub fn prompt_format(name: &str) -> Result<PromptFormat, String> {
    name.parse()
        .map_err(|e: lavin_data::UnknownPromptFormat| format!("prompt_format: {e}"))
}
