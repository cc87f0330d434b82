//! The flags that describe which model to load, shared by every model command
//! ([`crate::load`] turns them into a generator).

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};
use lavin_backends::BackendArgs;
use lavin_model::{LlamaAdapterType, Positions, VisualAdapterType};

/// The flags that describe which model to load (names as the original `eval.py`, in
/// kebab-case; each also accepts the original's spelling: `--ckpt_dir`, `--adapter_path`,
/// `--llm_model`, `--max_seq_len`, ...).
///
/// The settings that shaped the adapters are optional: a flag left out takes the value stored
/// with `--adapter` (see docs/weights.md), else the default in its help.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// LLaMA checkpoint folder (Meta layout: `params.json` + `consolidated.*.pth`; or HF layout);
    /// the original's `--ckpt_dir`.
    #[arg(long, aliases = ["llama_model_path", "ckpt_dir", "ckpt-dir"])]
    pub llama_model_path: Option<PathBuf>,
    /// Model subfolder inside `--llama-model-path` (the original's `--llm_model`) [default: 7B].
    #[arg(long, alias = "llm_model")]
    pub llm_model: Option<String>,
    /// Add the Vicuna delta onto the Meta LLaMA as the original does (for the authors' Vicuna
    /// adapters).
    #[arg(
        long,
        alias = "use_vicuna",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub use_vicuna: bool,
    /// Vicuna delta folder (HF safetensors); default `<llama-model-path>/vicuna_<llm-model>`.
    #[arg(long, alias = "vicuna_delta", value_name = "DIR")]
    pub vicuna_delta: Option<std::path::PathBuf>,
    /// Tokenizer (`tokenizer.model` or `tokenizer.json`); default `<llama-model-path>/tokenizer.model`.
    #[arg(long, alias = "tokenizer_path")]
    pub tokenizer_path: Option<PathBuf>,
    /// CLIP vision weights (OpenAI state dict or HF safetensors).
    #[arg(
        long = "clip-model-path",
        aliases = ["clip_model_path", "clip-path", "clip_path"],
        value_name = "FILE"
    )]
    pub clip_path: Option<PathBuf>,
    /// Trained adapter checkpoint (the original's `checkpoint-N.pth`, or ours); the original's
    /// `--adapter_path`.
    #[arg(long, aliases = ["adapter_path", "adapter-path"])]
    pub adapter: Option<PathBuf>,
    /// Model preset instead of checkpoint shapes: tiny, small, llama_7b.
    #[arg(long)]
    pub preset: Option<String>,
    /// Context length [default: 512].
    #[arg(long, alias = "max_seq_len")]
    pub max_seq_len: Option<usize>,
    /// Number of image features; must equal the vision tower's blocks / 4 (6 for ViT-L/14),
    /// which is also the default.
    #[arg(long, alias = "n_prompt")]
    pub n_prompt: Option<usize>,
    /// ROUTER temperature of the adapters (not the sampling temperature). Default: the
    /// adapters' own, else 10 for ScienceQA and 5 for MME as the original scripts; chat and
    /// serve use 5 as the original demo.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Where the LLaMA adapters sit [default: attn].
    #[arg(long, alias = "adapter_type", value_enum)]
    pub adapter_type: Option<LlamaAdapterType>,
    /// Adapter hidden size [default: 8].
    #[arg(long, alias = "adapter_dim")]
    pub adapter_dim: Option<usize>,
    /// Adapter scale [default: 1].
    #[arg(long, alias = "adapter_scale")]
    pub adapter_scale: Option<f32>,
    /// Hidden size of the image projection (default: 128 as the paper; the bundled tiny base's
    /// own value without --llama-model-path).
    #[arg(long, alias = "hidden_proj")]
    pub hidden_proj: Option<usize>,
    /// Which adapters the CLIP blocks get [default: router].
    #[arg(long, alias = "visual_adapter_type", value_enum)]
    pub visual_adapter_type: Option<VisualAdapterType>,
    /// Rotary positions during cached generation: `faithful` as the original's KV cache (later
    /// steps one position lower, modality token not cached; reproduces its outputs exactly),
    /// `consistent` as in training.
    #[arg(long, value_enum, default_value_t = Positions::Faithful)]
    pub positions: Positions,
    /// Backend, precision and width of the frozen base.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The original's model flags that mean nothing here (hidden; reported as ignored).
    #[command(flatten)]
    pub original_only: OriginalOnlyModelFlags,
}

/// Flags of the original `eval.py`, `eval_mme.py` and `demo.py` that mean nothing here:
/// accepted so that their command lines run unchanged, hidden from `--help`, and named once
/// at start as ignored ([`crate::cli::ignored_flags`]).
#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct OriginalOnlyModelFlags {
    /// `--cpu_load`: the original builds the model on the CPU to spare GPU memory.
    #[arg(
        long = "cpu_load",
        alias = "cpu-load",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        hide = true
    )]
    pub cpu_load: Option<bool>,
    /// `--options`: the answer letters (A to E here, the original's default).
    #[arg(long = "options", value_name = "LIST", num_args = 1.., hide = true)]
    pub options: Option<Vec<String>>,
}
