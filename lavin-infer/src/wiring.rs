//! Where the command line meets the model: the flags that describe a model, and the one function
//! that turns them into a [`Generator`].
//!

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::generator::Generator;

/// Rotary positions during cached generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Positions {
    /// As the original's KV cache does it (later steps one position lower, modality token not
    /// cached): reproduces its outputs exactly.
    #[default]
    Faithful,
    /// Positions as in training.
    Consistent,
}

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
    /// LLaMA adapter type: attn or block.
    #[arg(long, default_value = "attn")]
    pub adapter_type: String,
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
    /// CLIP adapter type: router, router_block or normal.
    #[arg(long, default_value = "router")]
    pub visual_adapter_type: String,
    /// Rotary positions during generation.
    #[arg(long, value_enum, default_value_t = Positions::Faithful)]
    pub positions: Positions,
    /// Backend (see backends.toml): ndarray, wgpu, cuda.
    #[arg(long)]
    pub backend: Option<String>,
    /// Frozen LLaMA block linears: 16bit (dense, default), 8bit, or 4bit (wgpu/cuda only);
    /// quantized while loading (LaVIN-lite).
    #[arg(long, default_value = "16bit")]
    pub bits: String,
    /// Frozen LLaMA weights: f32, fp16 (the original's) or bf16; norms, adapters and activations
    /// between the frozen matmuls stay f32. Default: the backend's entry in backends.toml
    /// (ndarray: f32 only; wgpu: no bf16).
    #[arg(long)]
    pub precision: Option<String>,
}

/// The model could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// The model is not connected to this command yet.
    #[error("{command}: loading the LaVIN model is not wired yet (lavin-model generation API pending); use --fake to try the tool with a scripted generator")]
    NotWired {
        /// The subcommand.
        command: &'static str,
    },
}

/// Loads the model described by `args` with the given router temperature.
pub fn load_generator(
    command: &'static str,
    args: &ModelArgs,
    router_temperature: f32,
) -> anyhow::Result<Box<dyn Generator>> {
    crate::load::load(args, router_temperature)
        .map_err(|e| e.context(format!("{command}: loading the model")))
}
