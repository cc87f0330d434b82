//! The error type of dataset loading: every variant names the file, and the qid/field
//! where one is involved.

use std::path::PathBuf;

use crate::image::ImageError;
use crate::prompt::PromptError;
use crate::tokenizer::TokenizerError;

/// Dataset loading and example-building errors.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid JSON or not of the expected shape.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// One record (qid) of a file has a missing or ill-typed field.
    #[error("{path}: entry {qid:?}: {msg}")]
    Field {
        path: PathBuf,
        qid: String,
        msg: String,
    },
    /// A split name that pid_splits.json does not contain.
    #[error("{path}: no split {split:?} (available: {available})")]
    UnknownSplit {
        path: PathBuf,
        split: String,
        available: String,
    },
    /// A problem says it has an image but the file is absent.
    #[error("{path}: image of {qid:?} not found")]
    MissingImage { path: PathBuf, qid: String },
    /// The problem cannot be formatted as a prompt.
    #[error("{path}: entry {qid:?}: {source}")]
    Prompt {
        path: PathBuf,
        qid: String,
        #[source]
        source: PromptError,
    },
    /// An image could not be decoded or preprocessed (the error names the file).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Tokenisation failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Reads and parses a JSON file, naming the file on failure.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Result<T, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| DataError::Json {
        path: path.to_owned(),
        source,
    })
}
