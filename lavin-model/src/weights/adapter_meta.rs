//! The settings that shaped a set of adapters, stored with them so that loading them needs no
//! repeated training flags.
//!
//! Our `adapters.safetensors` carries them in the header's `__metadata__` (a string -> string
//! map): [`FORMAT_VERSION_KEY`] (`"1"`) and [`ADAPTER_CONFIG_KEY`] (JSON of [`AdapterMeta`],
//! with the original's flag names). The original's `checkpoint-N.pth` carries its training
//! flags as the `args` entry (an `argparse.Namespace`), read into the same fields.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::torch_pickle::{PickleScalar, TorchPickleReader};
use crate::error::WeightsError;
use crate::precision::Precision;
use crate::quant::BaseBits;
use crate::{LavinConfig, LlamaAdapterType, VisualAdapterType};

/// Metadata key of the format version of [`ADAPTER_CONFIG_KEY`].
pub const FORMAT_VERSION_KEY: &str = "lavin.format_version";
/// Metadata key of the adapter settings (JSON of [`AdapterMeta`]).
pub const ADAPTER_CONFIG_KEY: &str = "lavin.adapter_config";
/// The version this build writes and reads.
pub const FORMAT_VERSION: &str = "1";

/// Largest safetensors header read for its metadata (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// What shaped a set of adapters; `None` where the file does not say. Field names are the
/// original's flags (`train.py`, `eval.py`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdapterMeta {
    /// Where the LLaMA adapters sit (`--adapter_type`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter_type: Option<LlamaAdapterType>,
    /// Which adapters the CLIP blocks get (`--visual_adapter_type`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visual_adapter_type: Option<VisualAdapterType>,
    /// Adapter hidden size (`--adapter_dim`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter_dim: Option<usize>,
    /// Groups of the adapters' up-projections (2 in the original, which has no flag for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter_groups: Option<usize>,
    /// `--adapter_scale`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter_scale: Option<f64>,
    /// The ROUTER softmax temperature trained with (`--temperature`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Hidden size of the image projection (`--hidden_proj`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_proj: Option<usize>,
    /// Number of image feature tokens (`--n_prompt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_prompt: Option<usize>,
    /// Training window (`--max_seq_len`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seq_len: Option<usize>,
    /// LLaMA model folder name (`--llm_model`: `7B`, `13B`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_model: Option<String>,
    /// Built-in preset of the base when it came from no checkpoint folder (`tiny`, `small`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Precision of the frozen base trained on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Width of the frozen base trained on (`--bits`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits: Option<BaseBits>,
}

impl AdapterMeta {
    /// The adapter settings of a model built with `config`.
    pub fn from_config(config: &LavinConfig) -> Self {
        let a = &config.adapter;
        Self {
            adapter_type: Some(a.llama),
            visual_adapter_type: Some(a.visual),
            adapter_dim: Some(a.dim),
            adapter_groups: Some(a.groups),
            adapter_scale: Some(a.scale),
            temperature: Some(a.temperature),
            hidden_proj: Some(a.hidden_proj),
            n_prompt: Some(config.n_feats()),
            max_seq_len: Some(config.max_seq_len),
            ..Self::default()
        }
    }

    /// Adds the base the adapters were trained on.
    pub fn with_base(
        mut self,
        llm_model: &str,
        preset: Option<&str>,
        precision: Precision,
        bits: BaseBits,
    ) -> Self {
        self.llm_model = Some(llm_model.to_string());
        self.preset = preset.map(str::to_string);
        self.precision = Some(precision);
        self.bits = Some(bits);
        self
    }

    /// The safetensors `__metadata__` entries.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let json = serde_json::to_string(self).expect("plain fields serialize");
        BTreeMap::from([
            (FORMAT_VERSION_KEY.to_string(), FORMAT_VERSION.to_string()),
            (ADAPTER_CONFIG_KEY.to_string(), json),
        ])
    }

    /// Reads the settings from safetensors metadata; `Ok(None)` when they are not there (files
    /// written before metadata existed). A newer version or bad JSON is an error naming `path`
    /// and the key.
    pub fn from_metadata(
        path: &Path,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Option<Self>, WeightsError> {
        let err = |message: String| WeightsError::Config {
            path: path.to_path_buf(),
            message,
        };
        if let Some(v) = metadata.get(FORMAT_VERSION_KEY) {
            if v != FORMAT_VERSION {
                return Err(err(format!(
                    "metadata `{FORMAT_VERSION_KEY}` is `{v}`; this build reads version \
                     {FORMAT_VERSION} (written by a newer lavin?)"
                )));
            }
        }
        let Some(json) = metadata.get(ADAPTER_CONFIG_KEY) else {
            return Ok(None);
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| err(format!("metadata `{ADAPTER_CONFIG_KEY}`: {e}")))
    }

    /// Reads the settings from the original training's `args` flags (the entries this crate
    /// models; unknown flags are ignored). A flag with a value of the wrong kind is an error
    /// naming `path` and the flag.
    pub fn from_original_args(
        path: &Path,
        args: &BTreeMap<String, PickleScalar>,
    ) -> Result<Self, WeightsError> {
        let a = OriginalArgs { path, args };
        Ok(Self {
            adapter_type: a.named("adapter_type", "attn or block")?,
            visual_adapter_type: a
                .named("visual_adapter_type", "normal, router or router_block")?,
            adapter_dim: a.usize("adapter_dim")?,
            adapter_groups: None,
            adapter_scale: a.number("adapter_scale")?,
            temperature: a.number("temperature")?,
            hidden_proj: a.usize("hidden_proj")?,
            n_prompt: a.usize("n_prompt")?,
            max_seq_len: a.usize("max_seq_len")?,
            llm_model: a.str("llm_model")?.map(str::to_string),
            preset: None,
            precision: None,
            bits: a.named("bits", "16bit, 8bit or 4bit")?,
        })
    }
}

/// The original's `args` flags, read by kind; `None` (absent or Python `None`) is `Ok(None)`.
struct OriginalArgs<'a> {
    path: &'a Path,
    args: &'a BTreeMap<String, PickleScalar>,
}

impl OriginalArgs<'_> {
    fn get(&self, key: &str) -> Option<&PickleScalar> {
        self.args.get(key).filter(|v| **v != PickleScalar::None)
    }

    fn bad(&self, key: &str, v: &PickleScalar, want: &str) -> WeightsError {
        WeightsError::Config {
            path: self.path.to_path_buf(),
            message: format!("`args.{key}` is {v:?}, expected {want}"),
        }
    }

    fn usize(&self, key: &str) -> Result<Option<usize>, WeightsError> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ PickleScalar::Int(i)) => usize::try_from(*i)
                .map(Some)
                .map_err(|_| self.bad(key, v, "a non-negative integer")),
            Some(v) => Err(self.bad(key, v, "an integer")),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>, WeightsError> {
        match self.get(key) {
            None => Ok(None),
            Some(PickleScalar::Float(f)) => Ok(Some(*f)),
            Some(PickleScalar::Int(i)) => Ok(Some(*i as f64)),
            Some(v) => Err(self.bad(key, v, "a number")),
        }
    }

    fn str(&self, key: &str) -> Result<Option<&str>, WeightsError> {
        match self.get(key) {
            None => Ok(None),
            Some(PickleScalar::Str(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.bad(key, v, "a string")),
        }
    }

    /// An enum in the original's spelling (its serde name).
    fn named<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        want: &str,
    ) -> Result<Option<T>, WeightsError> {
        let Some(s) = self.str(key)? else {
            return Ok(None);
        };
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map(Some)
            .map_err(|_| self.bad(key, &PickleScalar::Str(s.to_string()), want))
    }
}

/// The `__metadata__` of a safetensors file, reading only its header.
pub fn read_safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>, WeightsError> {
    let io = |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |reason: String| WeightsError::format(path, "safetensors", reason);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|e| bad(format!("no header length: {e}")))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return Err(bad(format!("header of {n} bytes, over {MAX_HEADER}")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("header truncated: {e}")))?;
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: Option<BTreeMap<String, String>>,
    }
    let h: Header = serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    Ok(h.metadata.unwrap_or_default())
}

/// The settings stored with an adapter checkpoint: our safetensors' metadata, or the original
/// `checkpoint-N.pth`'s `args`. `Ok(None)` when the file carries none (older files, bare state
/// dicts); a file that cannot be opened is an error naming it.
pub fn read_adapter_meta(path: &Path) -> Result<Option<AdapterMeta>, WeightsError> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        return AdapterMeta::from_metadata(path, &read_safetensors_metadata(path)?);
    }
    let reader = match TorchPickleReader::open(path, Some("model")) {
        Ok(r) => r,
        Err(e @ WeightsError::Io { .. }) => return Err(e),
        // What this reader cannot parse carries no flags it could give; loading the tensors
        // (through burn-store's reader first) reports a truly broken file.
        Err(_) => return Ok(None),
    };
    reader
        .top_level_object("args")
        .map(|args| AdapterMeta::from_original_args(path, args))
        .transpose()
}
