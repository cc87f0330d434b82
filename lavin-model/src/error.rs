//! Errors of weight loading: each names the file and, where there is one, the key.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable {format} file ({reason})")]
    Format {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{path}: missing key `{key}`")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: key `{key}` has shape {found:?}, the model expects {expected:?}")]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: key `{key}` has unsupported dtype {dtype}")]
    Dtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: quantizing `{key}`: {source}")]
    Quant {
        path: PathBuf,
        key: String,
        source: crate::quant::QuantError,
    },
}

impl WeightsError {
    pub fn format(path: impl Into<PathBuf>, format: &'static str, reason: impl ToString) -> Self {
        Self::Format {
            path: path.into(),
            format,
            reason: reason.to_string(),
        }
    }
}
