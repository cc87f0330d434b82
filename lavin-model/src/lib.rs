//! LaVIN on Burn: a frozen LLaMA and a frozen CLIP ViT joined by tiny trainable adapters.
//!
//! ```text
//! files ──weights──▶ Lavin<B> ──forward_train──▶ loss (lavin-train)
//!                        └────forward_step + KvCache──▶ tokens (lavin-infer)
//! ```
//! - [`config`]: shapes and presets; [`LavinConfig::init`] builds a model with fresh weights.
//! - [`llama`], [`clip`], [`adapter`]: the towers and the Mixture-of-Modality adapters.
//! - [`lavin`]: sequence assembly (modality token, "Image: " prefix, image features), mask, loss.
//! - [`weights`]: Meta/HF LLaMA, OpenAI/HF CLIP, LaVIN adapter checkpoints.

pub mod adapter;
pub mod bundled;
pub mod cache;
pub mod clip;
pub mod config;
pub mod decode;
pub mod error;
pub mod kernels;
pub mod lavin;
pub mod llama;
pub mod loss;
pub mod precision;
pub mod quant;
pub mod recompute;
pub mod sdpa;
pub mod weights;

pub use config::{
    AdapterConfig, ClipConfig, ClipRouterMode, LavinConfig, LlamaAdapterType, LlamaConfig,
    VisualAdapterType,
};
pub use decode::{DecodeState, Positions};
pub use error::WeightsError;
pub use lavin::{Lavin, LavinBatch, LavinOutput, LavinTrace};
pub use precision::Precision;
