//! The flags that describe which model to load, shared by every model command
//! ([`crate::load`] turns them into a generator).

use std::path::PathBuf;

use clap::Args;
use lavin_backends::BackendArgs;
use lavin_model::{LlamaAdapterType, Positions, VisualAdapterType};

/// The flags that describe which model to load (names as the original `eval.py`).
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// LLaMA checkpoint folder (Meta layout: `params.json` + `consolidated.*.pth`; or HF layout).
    #[arg(long)]
    pub llama_model_path: Option<PathBuf>,
    /// Model subfolder inside `--llama-model-path` (the original's `--llm_model`).
    #[arg(long, default_value = "7B")]
    pub llm_model: String,
    /// Add the Vicuna delta onto the Meta LLaMA as the original does (for the authors' Vicuna
    /// adapters).
    #[arg(long)]
    pub use_vicuna: bool,
    /// Vicuna delta folder (HF safetensors); default `<llama-model-path>/vicuna_<llm-model>`.
    #[arg(long, value_name = "DIR")]
    pub vicuna_delta: Option<std::path::PathBuf>,
    /// Tokenizer (`tokenizer.model` or `tokenizer.json`); default `<llama-model-path>/tokenizer.model`.
    #[arg(long)]
    pub tokenizer_path: Option<PathBuf>,
    /// CLIP vision weights (OpenAI state dict or HF safetensors).
    #[arg(long)]
    pub clip_path: Option<PathBuf>,
    /// Trained adapter checkpoint (the original's `checkpoint-N.pth`, or ours).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Model preset instead of checkpoint shapes: tiny, small, llama_7b.
    #[arg(long)]
    pub preset: Option<String>,
    /// Context length.
    #[arg(long, default_value_t = 512)]
    pub max_seq_len: usize,
    /// Number of image features; must equal the vision tower's blocks / 4 (6 for ViT-L/14),
    /// which is also the default.
    #[arg(long)]
    pub n_prompt: Option<usize>,
    /// ROUTER temperature of the adapters (not the sampling temperature). Default: 10 for
    /// ScienceQA, 5 for chat, serve and MME, as the original scripts.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Where the LLaMA adapters sit.
    #[arg(long, value_enum, default_value_t = LlamaAdapterType::Attn)]
    pub adapter_type: LlamaAdapterType,
    /// Adapter hidden size.
    #[arg(long, default_value_t = 8)]
    pub adapter_dim: usize,
    /// Adapter scale.
    #[arg(long, default_value_t = 1.0)]
    pub adapter_scale: f32,
    /// Hidden size of the image projection (default: 128 as the paper; the bundled tiny base's
    /// own value without --llama-model-path).
    #[arg(long)]
    pub hidden_proj: Option<usize>,
    /// Which adapters the CLIP blocks get.
    #[arg(long, value_enum, default_value_t = VisualAdapterType::Router)]
    pub visual_adapter_type: VisualAdapterType,
    /// Rotary positions during cached generation: `faithful` as the original's KV cache (later
    /// steps one position lower, modality token not cached; reproduces its outputs exactly),
    /// `consistent` as in training.
    #[arg(long, value_enum, default_value_t = Positions::Faithful)]
    pub positions: Positions,
    /// Backend, precision and width of the frozen base.
    #[command(flatten)]
    pub backend: BackendArgs,
}
