//! LaVIN data: SentencePiece tokenizer, PIL-exact image preprocessing, ScienceQA and
//! instruction datasets, prompt formats, scoring, and batching helpers. Burn-free.
//!
//! Everything here reproduces the original (luogen1996/LaVIN) exactly where the parity
//! fixtures define it: tokenizer ids and decoded strings, `resized.*` images (bit-exact),
//! prompts for all 23 formats, training tokens/labels, scores and answer extraction.
//! Deliberate differences, each keeping the original as an option:
//! - instruction data pads to the given `max_seq_len` ([`InstructPadding::MaxSeqLen`]);
//!   the original always pads to 512 ([`InstructPadding::Original512`]);
//! - image roots are a data root, not the original's fixed relative paths;
//! - a missing image can be skipped and counted ([`MissingImage::Skip`]);
//! - the answer fallback is seeded ([`scores::PyRandom`] reproduces Python's
//!   `random.seed(s)` stream; the original is unseeded);
//! - an empty score category gives `"nan"` where the original raises.

pub mod batch;
mod error;
pub mod image;
pub mod instruct;
mod problem;
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
