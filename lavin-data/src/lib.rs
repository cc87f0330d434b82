//! LaVIN data: tokenizer, images, ScienceQA and instruction datasets, prompt formats.

mod proto;
pub mod tokenizer;

pub use tokenizer::{PieceKind, Tokenizer, TokenizerError};
