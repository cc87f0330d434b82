//! Precision of the frozen base: the dtype its weights are stored and multiplied in.

use std::fmt;
use std::str::FromStr;

/// A precision name that is none of `f32`, `fp16`, `bf16`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}` (expected one of: f32, fp16, bf16)")]
pub struct UnknownPrecision(pub String);

/// Floating-point precision of the frozen weights / activations (adapters and optimizer state
/// stay f32 whatever this says).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Precision {
    /// 32-bit float (the backend's own float type).
    #[default]
    #[serde(rename = "f32", alias = "fp32")]
    #[cfg_attr(feature = "clap", value(name = "f32", alias = "fp32"))]
    F32,
    /// IEEE half.
    #[serde(rename = "fp16", alias = "f16")]
    #[cfg_attr(feature = "clap", value(name = "fp16", alias = "f16"))]
    F16,
    /// bfloat16.
    #[serde(rename = "bf16")]
    #[cfg_attr(feature = "clap", value(name = "bf16"))]
    Bf16,
}

impl Precision {
    /// The tensor dtype of frozen weights stored at this precision on backend `B` (`F32` is the
    /// backend's own float type, so the f32 path casts nothing).
    pub fn dtype<B: burn::tensor::backend::Backend>(self) -> burn::tensor::DType {
        use burn::tensor::{DType, Element};
        match self {
            Precision::F32 => <B::FloatElem as Element>::dtype(),
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// Canonical name (`f32`, `fp16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = UnknownPrecision;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "half" | "float16" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(UnknownPrecision(s.to_string())),
        }
    }
}
