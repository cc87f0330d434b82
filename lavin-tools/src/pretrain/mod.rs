//! `lavin-train pretrain-base`: the tiny pretrained *frozen* towers the CPU default run adapts.
//!
//! A frozen random LLaMA/CLIP gives LaVIN's adapters nothing to adapt, so the repo ships tiny
//! pretrained base weights (`assets/tiny-base/`), made by this module from the bundled mini
//! dataset's **train split only**:
//!
//! 1. [`vision`]: a tiny CLIP ViT (OpenAI layout) trained with throw-away supervised heads so
//!    that its class-token features after every 4th block encode colour, shape, count and
//!    position (attributes parsed from `captions.json` of train problems).
//! 2. [`language`]: a tiny LLaMA trained (all base parameters) as a language model on the
//!    train prompts + answers in the training layout LaVIN assembles
//!    (`[modality, BOS, "Image: ", feats | "Image: N/A", prompt, answer, EOS]`). Image slots
//!    are filled by the frozen tower of step 1 through a throw-away projection, so the LLaMA
//!    learns to read *something* in the slot; the projection is discarded, and the default
//!    run's adapters (fresh `adapter_proj`, routers) must learn the alignment again.
//! 3. [`export`]: LLaMA as Hugging Face (`config.json` + `model.safetensors`, q/k rows
//!    permuted), CLIP as OpenAI-named safetensors, plus the tokenizer; both load through
//!    `lavin_model::weights::load_lavin`.
//!
//! [`probe`] is a minimal adapter-only run (the LaVIN recipe with this crate's AdamW and
//! schedule) used to measure the default run's acceptance numbers and pick its settings.

pub mod data;
pub mod export;
pub mod language;
pub mod probe;
pub mod util;
pub mod vision;

use std::path::{Path, PathBuf};

use lavin_model::bundled;
use lavin_model::LavinConfig;

pub use data::PretrainData;
pub use export::{export_base, load_tiny_base};
pub use probe::{probe_default, ProbeOptions, ProbeReport};

/// Errors of pretraining / probing; each names the file, qid or key involved.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    #[error(transparent)]
    Data(#[from] lavin_data::DataError),
    #[error(transparent)]
    Tokenizer(#[from] lavin_data::TokenizerError),
    #[error(transparent)]
    Image(#[from] lavin_data::ImageError),
    #[error(transparent)]
    Weights(#[from] lavin_model::WeightsError),
    #[error(transparent)]
    Optim(#[from] lavin_train::optim::OptimError),
    #[error("{path}: caption of {qid:?} not understood ({caption:?}): {why}")]
    Caption {
        path: PathBuf,
        qid: String,
        caption: String,
        why: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl PretrainError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Settings of `pretrain-base`.
#[derive(Debug, Clone, clap::Args)]
pub struct PretrainArgs {
    /// Mini ScienceQA root (train split used only).
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// SentencePiece tokenizer (default: tests/data/parity/tiny-a/tokenizer.model).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Output folder (default: assets/tiny-base).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Epochs of the CLIP stage.
    #[arg(long, default_value_t = 25)]
    pub clip_epochs: usize,
    /// Epochs of the LLaMA stage.
    #[arg(long, default_value_t = 40)]
    pub llama_epochs: usize,
    /// Use at most this many train problems (tests; 0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Seed of initialisation and data order.
    #[arg(long, default_value_t = 20230524)]
    pub seed: u64,
    /// Start from an earlier base folder (its LLaMA, and its CLIP when --clip-epochs is 0)
    /// instead of random weights: continues a pretraining.
    #[arg(long, value_name = "DIR")]
    pub init_from: Option<PathBuf>,
    /// After exporting, run the adapter-only probe of the default run and print its numbers.
    #[arg(long)]
    pub probe: bool,
}

impl PretrainArgs {
    pub fn data_root(&self) -> PathBuf {
        self.data_root.clone().unwrap_or_else(bundled::data_root)
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.tokenizer.clone().unwrap_or_else(|| {
            bundled::workspace_root()
                .join("tests/data/parity/tiny-a")
                .join(bundled::TOKENIZER_FILE)
        })
    }
    pub fn output_dir(&self) -> PathBuf {
        self.output_dir.clone().unwrap_or_else(bundled::base_dir)
    }
}

/// What `pretrain-base` did (printed, and saved as `pretrain.json` next to the weights).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PretrainSummary {
    pub train_problems: usize,
    pub train_images: usize,
    pub clip: vision::VisionReport,
    pub llama: language::LanguageReport,
    pub files: Vec<String>,
    pub bytes: u64,
}

/// Runs both stages on the ndarray backend and writes the assets.
#[cfg(feature = "ndarray")]
pub fn run(args: &PretrainArgs) -> Result<PretrainSummary, PretrainError> {
    type B = burn::backend::Autodiff<burn::backend::NdArray>;
    let device = Default::default();
    let cfg = bundled::config();
    let (_, summary) = pretrain_base::<B>(args, &cfg, &device)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    );
    if args.probe {
        let opts = ProbeOptions {
            data_root: args.data_root(),
            base_dir: args.output_dir(),
            ..ProbeOptions::default()
        };
        let report = probe_default::<B>(&cfg, &opts, &device)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    Ok(summary)
}

/// Both stages on any autodiff backend; writes into `args.output_dir()`.
pub fn pretrain_base<B: burn::tensor::backend::AutodiffBackend>(
    args: &PretrainArgs,
    config: &LavinConfig,
    device: &B::Device,
) -> Result<(lavin_model::Lavin<B>, PretrainSummary), PretrainError>
where
    B::InnerBackend: burn::tensor::backend::Backend<Device = B::Device>,
{
    B::seed(device, args.seed);
    let data = PretrainData::load(&args.data_root(), &args.tokenizer(), args.limit)?;
    eprintln!(
        "pretrain-base: {} train problems ({} with images)",
        data.problems.len(),
        data.images.len()
    );
    let init = match &args.init_from {
        Some(dir) => Some(load_tiny_base::<B>(config, dir, device)?),
        None => None,
    };
    let (tower, clip_report, llama) = match init {
        Some(base) if args.clip_epochs == 0 => {
            (base.clip, vision::VisionReport::reused(), Some(base.llama))
        }
        other => {
            let (t, r) =
                vision::train_vision::<B>(config, &data, args.clip_epochs, args.seed, device)?;
            (t, r, other.map(|b| b.llama))
        }
    };
    let (model, llama_report) = language::train_language::<B>(
        config,
        &data,
        tower,
        llama,
        args.llama_epochs,
        args.seed,
        device,
    )?;
    let out = args.output_dir();
    let files = export_base(&model, config, &args.tokenizer(), &out)?;
    let bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(out.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let summary = PretrainSummary {
        train_problems: data.problems.len(),
        train_images: data.images.len(),
        clip: clip_report,
        llama: llama_report,
        files,
        bytes,
    };
    let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
    let path = out.join("pretrain.json");
    lavin_model::weights::adapters::atomic_write(&path, json.as_bytes())?;
    Ok((model, summary))
}
