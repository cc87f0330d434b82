//! The resolved training configuration ([`TrainConfig`]), its two default sets (the paper's
//! `finetuning_sqa_7b.sh` and the tiny CPU preset) and validation.
//!
//! Precedence: defaults < `--config run.toml` < command-line flags (see [`crate::cli`]).

use std::path::{Path, PathBuf};

use lavin_backends::{BackendKind, Precision};
use lavin_model::quant::BaseBits;
use lavin_model::{LlamaAdapterType, VisualAdapterType};
use serde::{Deserialize, Serialize};

/// The 23 prompt formats the original `train.py` accepts.
pub const PROMPT_FORMATS: [&str; 23] = [
    "CQM-A", "CQM-LA", "CQM-EA", "CQM-LEA", "CQM-ELA", "CQM-AL", "CQM-AE", "CQM-ALE", "QCM-A",
    "QCM-LA", "QCM-EA", "QCM-LEA", "QCM-ELA", "QCM-AL", "QCM-AE", "QCM-ALE", "QCML-A", "QCME-A",
    "QCMLE-A", "QCLM-A", "QCEM-A", "QCLEM-A", "QCML-AE",
];

/// A configuration error found before training starts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A path that must exist does not.
    #[error("{field}: path `{path}` does not exist")]
    MissingPath {
        /// Config key / flag.
        field: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A value outside its allowed set or range.
    #[error("{field}: {message}")]
    Invalid {
        /// Config key / flag.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The `--config` file cannot be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Cause (TOML errors include line and column).
        message: String,
    },
}

/// Everything a training run needs, fully resolved (saved as `config.toml` in the output dir).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    // ---- model ----
    /// Model preset used when no `llama_model_path` is given (`tiny`, `small`).
    pub preset: String,
    /// Directory with the LLaMA weights (`<path>/<llm_model>/params.json` etc. and `tokenizer.model`).
    pub llama_model_path: Option<PathBuf>,
    /// LLaMA size sub-directory (`7B`, `13B`).
    pub llm_model: String,
    /// Add the Vicuna delta to LLaMA as the original does.
    pub use_vicuna: bool,
    /// The Vicuna delta folder (default, as the original: `<llama_model_path>/vicuna_<llm_model>`).
    pub vicuna_delta: Option<PathBuf>,
    /// CLIP ViT-L/14 weights (plain state dict or HF safetensors); the original downloads it.
    pub clip_model_path: Option<PathBuf>,
    // ---- data ----
    /// ScienceQA root (`problems.json`, `pid_splits.json`, images); `None` = bundled mini dataset.
    pub data_root: Option<PathBuf>,
    /// `captions.json` (used with `use_caption`).
    pub caption_file: Option<PathBuf>,
    /// Put image captions into the context.
    pub use_caption: bool,
    /// Prompt format (one of [`PROMPT_FORMATS`]).
    pub prompt_format: String,
    /// Train on the instruction data instead of ScienceQA.
    pub do_pretrain: bool,
    /// Sequence length S (prompt + answer tokens, padded / cut).
    pub max_seq_len: usize,
    // ---- optimisation ----
    /// Micro-batch size per device.
    pub batch_size: usize,
    /// Gradient-accumulation micro-batches per optimizer step.
    pub accum_iter: usize,
    /// Epochs.
    pub epochs: usize,
    /// Stop after this many optimizer steps (as Hugging Face's `max_steps`, except that the lr
    /// schedule stays the one of the full `epochs`); `None` = run every epoch.
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Linear-warmup epochs (fractional allowed).
    pub warmup_epochs: f64,
    /// Base lr: `lr = blr * batch_size * accum_iter * ranks / 256` unless `lr` is set.
    pub blr: f64,
    /// Absolute lr (overrides `blr`).
    pub lr: Option<f64>,
    /// Floor of the cosine schedule.
    pub min_lr: f64,
    /// Decoupled weight decay (not applied to biases and 1-D params).
    pub weight_decay: f64,
    /// Global gradient-norm clip (`None` = no clipping, as the paper's script).
    pub clip_grad: Option<f64>,
    // ---- adapters ----
    /// LLaMA adapter position (`attn` or `block`).
    pub adapter_type: LlamaAdapterType,
    /// Adapter hidden size r.
    pub adapter_dim: usize,
    /// Adapter output scale s.
    pub adapter_scale: f64,
    /// **Router** softmax temperature (not a sampling temperature).
    pub temperature: f64,
    /// CLIP adapter kind (`normal`, `router`, `router_block`).
    pub visual_adapter_type: VisualAdapterType,
    /// Hidden size of the visual projection `adapter_proj`.
    pub hidden_proj: usize,
    /// Number of image feature tokens (6 for ViT-L/14).
    pub n_prompt: usize,
    /// Stochastic depth on LLaMA residual branches.
    pub drop_path: f64,
    // ---- runtime ----
    /// Frozen weight precision of the original (`16bit`; `4bit`/`8bit` quantised).
    pub bits: BaseBits,
    /// Recompute each ViT and LLaMA block in backward (`lavin_model::recompute`).
    pub gradient_checkpointing: bool,
    /// Seed of initialisation, dropout and data order.
    pub seed: u64,
    /// Checkpoint to resume from (`checkpoint/model-N.mpk` of a run, a run's output directory,
    /// or an original `checkpoint-N.pth`).
    pub resume: Option<PathBuf>,
    /// Where checkpoints, metrics, plots and `summary.json` go.
    pub output_dir: PathBuf,
    /// Force a backend (`ndarray`, `flex`, `wgpu`, `cuda`); `None` = `backends.toml` preference.
    pub backend: Option<BackendKind>,
    /// Override file for `backends.toml`.
    pub backends_file: Option<PathBuf>,
    /// burn-train's dashboard instead of plain progress lines when stdout and stderr are
    /// terminals (rank 0). The `lavin-train` command turns it on unless `--no-tui`; code that
    /// trains (tests, other programs) gets plain lines unless it sets this. A display choice of
    /// one process: not saved, not read from a config file.
    #[serde(skip)]
    pub tui: bool,
    /// Devices of each node (`0` or `0,1`): one data-parallel rank per device.
    pub devices: String,
    /// Nodes (processes, usually machines) training together; ranks = nodes x devices.
    #[serde(default = "one")]
    pub nnodes: usize,
    /// Precision of frozen weights (`f32`, `fp16`, `bf16`); `None` = `backends.toml`.
    pub precision: Option<Precision>,
    /// Save a checkpoint every N optimizer steps (0 = only at epoch ends).
    pub checkpoint_every: usize,
    /// Keep the newest N checkpoints (0 = keep all); with `validate_every_epoch` the one of
    /// the best validation accuracy stays too.
    pub keep_last: usize,
    /// Validate after every epoch (the original validates once, at the end).
    #[serde(default)]
    pub validate_every_epoch: bool,
    /// Stop when the validation accuracy has not improved for this many epochs (needs
    /// `validate_every_epoch`).
    #[serde(default)]
    pub early_stopping: Option<usize>,
}

fn one() -> usize {
    1
}

impl TrainConfig {
    /// The paper's ScienceQA recipe (`scripts/finetuning_sqa_7b.sh`): batch 4 per GPU, accum 4
    /// (on 2 GPUs: effective batch 32), 20 epochs, warmup 2, blr 9e-3, wd 0.02, S 512, attn
    /// adapters dim 8 scale 1, router temperature 10, CLIP `router` adapters, n_prompt 6,
    /// QCM-ALE, hidden_proj 128 (train.py default).
    pub fn paper_default() -> Self {
        Self {
            preset: "llama-7b".into(),
            llama_model_path: None,
            llm_model: "7B".into(),
            use_vicuna: false,
            vicuna_delta: None,
            clip_model_path: None,
            data_root: None,
            caption_file: None,
            use_caption: false,
            prompt_format: "QCM-ALE".into(),
            do_pretrain: false,
            max_seq_len: 512,
            batch_size: 4,
            accum_iter: 4,
            epochs: 20,
            max_steps: None,
            warmup_epochs: 2.0,
            blr: 9e-3,
            lr: None,
            min_lr: 0.0,
            weight_decay: 0.02,
            clip_grad: None,
            adapter_type: LlamaAdapterType::Attn,
            adapter_dim: 8,
            adapter_scale: 1.0,
            temperature: 10.0,
            visual_adapter_type: VisualAdapterType::Router,
            hidden_proj: 128,
            n_prompt: 6,
            drop_path: 0.0,
            bits: BaseBits::Dense,
            gradient_checkpointing: false,
            seed: 0,
            resume: None,
            output_dir: PathBuf::from("./LaVIN-7B"),
            backend: None,
            backends_file: None,
            tui: false,
            devices: "0".into(),
            nnodes: 1,
            precision: None,
            checkpoint_every: 500,
            keep_last: 3,
            validate_every_epoch: false,
            early_stopping: None,
        }
    }

    /// Defaults of the no-argument CPU run (tiny preset, bundled mini dataset): the settings
    /// `lavin-tools probe` measured on the bundled base (QCM-A, 6 epochs at peak lr 1e-2,
    /// batch 8, hidden_proj 32 as the base's throw-away projection), sized for <= 300 s on 2
    /// cores. Numbers: `assets/tiny-base/README.md`.
    pub fn tiny_default() -> Self {
        Self {
            preset: "tiny".into(),
            llm_model: "tiny".into(),
            prompt_format: "QCM-A".into(),
            max_seq_len: 96,
            batch_size: 8,
            accum_iter: 1,
            epochs: 6,
            warmup_epochs: 0.5,
            lr: Some(1e-2),
            weight_decay: 0.02,
            hidden_proj: 32,
            n_prompt: 2,
            seed: 0,
            output_dir: PathBuf::from("./lavin-tiny-run"),
            checkpoint_every: 0,
            keep_last: 2,
            ..Self::paper_default()
        }
    }

    /// Data-parallel ranks: `nnodes` x the devices in `devices`.
    pub fn world_size(&self) -> usize {
        self.nnodes.max(1)
            * lavin_backends::parse_devices(&self.devices)
                .map(|d| d.len())
                .unwrap_or(1)
    }

    /// Effective batch: `batch_size * accum_iter * ranks`.
    pub fn eff_batch_size(&self) -> usize {
        self.batch_size * self.accum_iter * self.world_size()
    }

    /// Absolute peak lr (`lr`, or `blr * eff_batch / 256`).
    pub fn resolved_lr(&self) -> f64 {
        crate::lr_sched::resolve_lr(self.lr, self.blr, self.eff_batch_size())
    }

    /// The lr schedule of this run.
    pub fn schedule(&self) -> crate::lr_sched::LrSchedule {
        crate::lr_sched::LrSchedule {
            lr: self.resolved_lr(),
            min_lr: self.min_lr,
            epochs: self.epochs as f64,
            warmup_epochs: self.warmup_epochs,
        }
    }

    /// Check every value and path; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn inv(field: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                field,
                message: message.into(),
            }
        }
        fn one_of(field: &'static str, v: &str, set: &[&str]) -> Result<(), ConfigError> {
            if set.contains(&v) {
                Ok(())
            } else {
                Err(inv(
                    field,
                    format!("unknown value `{v}` (expected one of: {})", set.join(", ")),
                ))
            }
        }
        fn exists(field: &'static str, p: &Option<PathBuf>) -> Result<(), ConfigError> {
            match p {
                Some(p) if !p.exists() => Err(ConfigError::MissingPath {
                    field,
                    path: p.clone(),
                }),
                _ => Ok(()),
            }
        }
        fn positive(field: &'static str, v: f64) -> Result<(), ConfigError> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(inv(field, format!("must be a positive number, got {v}")))
            }
        }
        fn non_negative(field: &'static str, v: f64) -> Result<(), ConfigError> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(inv(field, format!("must be >= 0, got {v}")))
            }
        }
        exists("llama_model_path", &self.llama_model_path)?;
        exists("clip_model_path", &self.clip_model_path)?;
        exists("vicuna_delta", &self.vicuna_delta)?;
        exists("data_root", &self.data_root)?;
        exists("resume", &self.resume)?;
        exists("backends_file", &self.backends_file)?;
        if self.use_caption {
            exists("caption_file", &self.caption_file)?;
        }
        if self.llama_model_path.is_none() && !["tiny", "small"].contains(&self.preset.as_str()) {
            return Err(inv(
                "preset",
                format!(
                    "`{}` needs --llama-model-path (built-in presets: tiny, small)",
                    self.preset
                ),
            ));
        }
        if self.llm_model.trim().is_empty() {
            return Err(inv("llm_model", "must not be empty"));
        }
        match self.early_stopping {
            Some(0) => return Err(inv("early_stopping", "must be at least 1 epoch")),
            Some(_) if !self.validate_every_epoch => {
                return Err(inv(
                    "early_stopping",
                    "needs validate_every_epoch (--validate-every-epoch): it compares the \
                     validation accuracy of successive epochs",
                ))
            }
            _ => {}
        }
        one_of("prompt_format", &self.prompt_format, &PROMPT_FORMATS)?;
        for (f, v) in [
            ("max_seq_len", self.max_seq_len),
            ("batch_size", self.batch_size),
            ("accum_iter", self.accum_iter),
            ("epochs", self.epochs),
            ("adapter_dim", self.adapter_dim),
            ("hidden_proj", self.hidden_proj),
            ("n_prompt", self.n_prompt),
        ] {
            if v == 0 {
                return Err(inv(f, "must be at least 1"));
            }
        }
        if self.adapter_dim % 2 != 0 {
            return Err(inv(
                "adapter_dim",
                format!("must be even (2 expert groups), got {}", self.adapter_dim),
            ));
        }
        non_negative("warmup_epochs", self.warmup_epochs)?;
        if self.warmup_epochs > self.epochs as f64 {
            return Err(inv(
                "warmup_epochs",
                format!("{} exceeds epochs {}", self.warmup_epochs, self.epochs),
            ));
        }
        if self.max_steps == Some(0) {
            return Err(inv("max_steps", "must be at least 1"));
        }
        positive("blr", self.blr)?;
        if let Some(lr) = self.lr {
            positive("lr", lr)?;
        }
        non_negative("min_lr", self.min_lr)?;
        if self.min_lr > self.resolved_lr() {
            return Err(inv(
                "min_lr",
                format!("{} exceeds the peak lr {}", self.min_lr, self.resolved_lr()),
            ));
        }
        non_negative("weight_decay", self.weight_decay)?;
        if let Some(c) = self.clip_grad {
            positive("clip_grad", c)?;
        }
        positive("temperature", self.temperature)?;
        non_negative("adapter_scale", self.adapter_scale)?;
        if !(0.0..1.0).contains(&self.drop_path) {
            return Err(inv(
                "drop_path",
                format!("must be in [0, 1), got {}", self.drop_path),
            ));
        }
        lavin_backends::parse_devices(&self.devices).map_err(|e| inv("devices", e.to_string()))?;
        if self.nnodes == 0 {
            return Err(inv("nnodes", "must be at least 1"));
        }
        if self.output_dir.as_os_str().is_empty() {
            return Err(inv("output_dir", "must not be empty"));
        }
        if self.output_dir.is_file() {
            return Err(inv(
                "output_dir",
                format!("`{}` is a file", self.output_dir.display()),
            ));
        }
        Ok(())
    }

    /// Save as TOML (atomically) to `dir/config.toml`; returns the path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, ConfigError> {
        let path = dir.join("config.toml");
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        crate::io::atomic_write(&path, text.as_bytes()).map_err(|e| ConfigError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(path)
    }

    /// Read a saved `config.toml` (all keys required).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        read_toml(path)
    }
}

/// Reads and parses a TOML file; both failures name the file.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    toml::from_str(&text).map_err(|e| file_error(e.to_string()))
}
