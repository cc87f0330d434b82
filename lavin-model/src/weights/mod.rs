//! Loading the original weight formats into [`crate::Lavin`] and saving adapters.
//!
//! Each format is a [`TensorSource`] that answers with the original key names; one generic
//! mapper ([`apply::apply_source`]) walks the model and pulls each parameter by name, so no
//! loader is duplicated per model size and no checkpoint is held in memory twice.

pub mod adapter_meta;
pub mod adapters;
pub mod apply;
pub mod clip;
pub mod host;
pub mod llama;
pub mod names;
pub mod source;
pub mod torch_pickle;

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

pub use adapter_meta::{read_adapter_meta, AdapterMeta};
pub use adapters::{load_adapters, save_adapters, save_adapters_with_meta};
pub use host::HostTensor;
pub use names::{is_trainable, original_name};
pub use source::TensorSource;

use crate::error::WeightsError;
use crate::llama::BaseFormat;
use crate::{Lavin, LavinConfig};

/// Where the LLaMA weights come from.
#[derive(Debug, Clone)]
pub enum LlamaWeights {
    /// Meta folder: `params.json` + `consolidated.NN.pth`.
    Meta(PathBuf),
    /// Hugging Face folder: `config.json` + `model.safetensors` (or an index).
    HuggingFace(PathBuf),
    /// The original `--use_vicuna`: Meta folder plus an HF-named Vicuna delta folder.
    MetaPlusVicunaDelta { meta: PathBuf, delta: PathBuf },
}

impl LlamaWeights {
    /// Finds the LLaMA weights under `root` as the original lays them out: `<root>/<llm_model>`
    /// if that folder exists, else `root`; Meta layout if it holds `params.json`, Hugging Face if
    /// `config.json`. `vicuna = Some(delta)` applies the original's `--use_vicuna` rule to Meta
    /// weights, with the delta in `delta` or, as the original, `<root>/vicuna_<llm_model>`.
    pub fn locate(
        root: &Path,
        llm_model: &str,
        vicuna: Option<Option<&Path>>,
    ) -> Result<Self, WeightsError> {
        let nested = root.join(llm_model);
        let dir = if nested.is_dir() {
            nested
        } else {
            root.to_path_buf()
        };
        let weights = if dir.join("params.json").is_file() {
            LlamaWeights::Meta(dir)
        } else if dir.join("config.json").is_file() {
            LlamaWeights::HuggingFace(dir)
        } else {
            return Err(WeightsError::Config {
                path: dir,
                message:
                    "no params.json (Meta LLaMA) or config.json (Hugging Face LLaMA) in this folder"
                        .into(),
            });
        };
        let Some(delta) = vicuna else {
            return Ok(weights);
        };
        let delta = delta
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.join(format!("vicuna_{llm_model}")));
        match weights {
            LlamaWeights::Meta(meta) if delta.is_dir() => {
                Ok(LlamaWeights::MetaPlusVicunaDelta { meta, delta })
            }
            LlamaWeights::Meta(_) => Err(WeightsError::Config {
                path: delta,
                message: "use_vicuna: the Vicuna delta folder (HF safetensors) does not exist"
                    .into(),
            }),
            other => Err(WeightsError::Config {
                path: other.dir().to_path_buf(),
                message:
                    "use_vicuna adds the Vicuna delta onto Meta-layout weights (params.json); \
                          for a merged Hugging Face Vicuna, point --llama-model-path at it instead"
                        .into(),
            }),
        }
    }

    /// The folder of the base weights (with `params.json` or `config.json`).
    pub fn dir(&self) -> &Path {
        match self {
            LlamaWeights::Meta(d) | LlamaWeights::HuggingFace(d) => d,
            LlamaWeights::MetaPlusVicunaDelta { meta, .. } => meta,
        }
    }

    /// Reads the LLaMA shapes (`params.json` needs the tokenizer's size for `vocab_size: -1`).
    pub fn read_config(&self, n_words: usize) -> Result<crate::LlamaConfig, WeightsError> {
        match self {
            LlamaWeights::HuggingFace(d) => llama::read_hf_config(d),
            _ => llama::read_meta_params(self.dir(), n_words),
        }
    }
}

/// Everything to build a LaVIN from files.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub llama: LlamaWeights,
    pub clip: PathBuf,
    pub adapters: Option<PathBuf>,
    /// How the frozen LLaMA weights are stored: converted block by block while loading
    /// (`--precision fp16|bf16`; LaVIN-lite `--bits 8bit|4bit`). Default: dense f32.
    pub format: BaseFormat,
}

/// Opens the LLaMA source of `weights` (Meta key names).
pub fn open_llama(
    weights: &LlamaWeights,
    config: &LavinConfig,
) -> Result<Box<dyn TensorSource>, WeightsError> {
    Ok(match weights {
        LlamaWeights::Meta(dir) => Box::new(llama::MetaShards::open(dir)?),
        LlamaWeights::HuggingFace(dir) => Box::new(llama::HfLlama::open(dir, &config.llama)?),
        LlamaWeights::MetaPlusVicunaDelta { meta, delta } => Box::new(llama::VicunaDelta::open(
            llama::MetaShards::open(meta)?,
            delta,
        )?),
    })
}

/// Builds a LaVIN with `config` and loads every frozen weight (and the adapters, if given).
/// Parameters are loaded tensor by tensor straight into the model.
pub fn load_lavin<B: Backend>(
    config: &LavinConfig,
    spec: &LoadSpec,
    device: &B::Device,
) -> Result<Lavin<B>, WeightsError> {
    let model = config.init::<B>(device);
    let model = if spec.format.is_f32_dense() {
        load_llama(model, &spec.llama, device)?
    } else {
        load_llama_converted(model, &spec.llama, spec.format, device)?
    };
    let model = load_clip(model, &spec.clip, device)?;
    let model = match &spec.adapters {
        Some(p) => load_adapters(model, p, device)?,
        None => model,
    };
    Ok(model.freeze_base())
}

/// Loads the frozen LLaMA weights; every one must be present.
pub fn load_llama<B: Backend>(
    model: Lavin<B>,
    weights: &LlamaWeights,
    device: &B::Device,
) -> Result<Lavin<B>, WeightsError> {
    let source = open_llama(weights, model.config())?;
    let key_of = |name: &str| {
        (!is_trainable(name) && !name.starts_with("backbone.")).then(|| name.to_string())
    };
    Ok(apply::apply_source(model, source.as_ref(), &key_of, device)?.0)
}

/// Loads the frozen LLaMA weights and stores them as `format` says (half precision, quantized
/// block linears), block by block: each block is filled from the file and converted before the
/// next one is read, so at most one block's f32 weights are alive at a time (the original's
/// `--cpu_load` + bitsandbytes, without ever holding the full-precision model). The still-dense
/// layers of `model` are lazily initialised, so they cost no memory until loaded.
pub fn load_llama_converted<B: Backend>(
    mut model: Lavin<B>,
    weights: &LlamaWeights,
    format: BaseFormat,
    device: &B::Device,
) -> Result<Lavin<B>, WeightsError> {
    let source = open_llama(weights, model.config())?;
    let key_of = |name: &str| {
        (!is_trainable(name) && !name.starts_with("backbone.")).then(|| name.to_string())
    };
    // Embeddings, final norm and output head: everything but the blocks.
    let layers = std::mem::take(&mut model.llama.layers);
    let (mut model, _) = apply::apply_source(model, source.as_ref(), &key_of, device)?;
    model.llama = model.llama.convert_outer(format);
    let mut converted = Vec::with_capacity(layers.len());
    for (i, block) in layers.into_iter().enumerate() {
        let (block, _) = apply::apply_source_at(
            block,
            &format!("llama.layers.{i}"),
            source.as_ref(),
            &key_of,
            device,
        )?;
        let block = block
            .convert_base(format)
            .map_err(|source_err| WeightsError::Quant {
                path: source.path().to_path_buf(),
                key: format!("layers.{i}"),
                source: source_err,
            })?;
        converted.push(block);
    }
    model.llama.layers = converted;
    Ok(model)
}

/// Loads the frozen CLIP vision weights (OpenAI or HF layout).
pub fn load_clip<B: Backend>(
    model: Lavin<B>,
    path: &Path,
    device: &B::Device,
) -> Result<Lavin<B>, WeightsError> {
    let source = clip::open_clip(path)?;
    let key_of = |name: &str| {
        if is_trainable(name) {
            None
        } else {
            clip::openai_key(name)
        }
    };
    Ok(apply::apply_source(model, source.as_ref(), &key_of, device)?.0)
}
