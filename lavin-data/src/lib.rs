//! LaVIN data: SentencePiece tokenizer, PIL-exact image preprocessing, ScienceQA and
//! instruction datasets, prompt formats, scoring, and batching helpers. Burn-free.

pub mod batch;
mod error;
pub mod image;
pub mod instruct;
pub mod prompt;
mod proto;
pub mod scienceqa;
pub mod scores;
pub mod tokenizer;

/// Scoring under the name the other crates use (`lavin_data::score::get_scores`).
pub use scores as score;

pub use error::DataError;
pub use image::{preprocess_bytes, preprocess_image, zero_image, ImageError, ImageOptions};
pub use instruct::{InstructData, InstructItem, InstructPadding};
pub use prompt::{
    build_prompt, create_one_example, PromptError, PromptFormat, UnknownPromptFormat,
};
pub use scienceqa::{
    tokenize_example, tokenize_padded, LoadOptions, MissingImage, Problem, ScienceQa, SqaItem,
    TokenizedExample,
};
pub use tokenizer::{PieceKind, Tokenizer, TokenizerError};
