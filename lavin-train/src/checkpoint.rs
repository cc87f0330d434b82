//! Adapter-only checkpoints: adapters + AdamW moments + progress counters + resolved config.
//!
//! Format: one safetensors file `checkpoint-step<NNNNNNNN>.safetensors` holding f32 tensors
//! `model.<name>`, `exp_avg.<name>`, `exp_avg_sq.<name>` (original PyTorch names, e.g.
//! `model.layers.0.adapter_attn.conv_A.weight`) and, in the header's `__metadata__` under the key
//! `lavin`, a JSON [`CheckpointMeta`]. Written atomically (temp file in the same directory, fsync,
//! rename); [`prune`] keeps the newest N. The `model.*` tensors alone are an adapter export any
//! safetensors reader understands.
//!
//! An original LaVIN checkpoint (`checkpoint-N.pth`: `{'model', 'optimizer', 'epoch', 'scaler',
//! 'args'}`) is accepted as a resume source by [`load_original`]: adapters + epoch, no moments
//! (theirs are bitsandbytes state).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io::{self, HostTensor, IoError};

/// Header metadata key holding the JSON [`CheckpointMeta`].
pub const META_KEY: &str = "lavin";
/// Format tag stored in [`CheckpointMeta::format`].
pub const FORMAT: &str = "lavin-train-checkpoint/1";

/// Errors loading or saving checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File-level failure (missing, unreadable, not safetensors / not a PyTorch file).
    #[error(transparent)]
    Io(#[from] IoError),
    /// The safetensors file has no `lavin` metadata or it does not parse.
    #[error("{path}: not a lavin-train checkpoint: {reason}")]
    Meta {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A tensor of the checkpoint has a different shape than the model's parameter.
    #[error("{path}: parameter `{name}` has shape {checkpoint:?} in the checkpoint but {model:?} in the model (different configuration?)")]
    Shape {
        /// File.
        path: PathBuf,
        /// Original parameter name.
        name: String,
        /// Shape in the checkpoint.
        checkpoint: Vec<usize>,
        /// Shape in the model.
        model: Vec<usize>,
    },
    /// Parameter sets differ.
    #[error("{path}: checkpoint and model adapters differ: missing in checkpoint {missing:?}, not in model {unexpected:?}")]
    Names {
        /// File.
        path: PathBuf,
        /// Model parameters absent from the checkpoint.
        missing: Vec<String>,
        /// Checkpoint tensors the model does not have.
        unexpected: Vec<String>,
    },
    /// Moments exist for some parameters but not all, or have wrong shapes.
    #[error("{path}: optimizer state of `{name}`: {reason}")]
    Moments {
        /// File.
        path: PathBuf,
        /// Parameter.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Serialization failure.
    #[error("cannot serialize checkpoint {path}: {reason}")]
    Serialize {
        /// Target file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Progress and configuration stored with a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// Epoch of the next micro-batch to run (0-based).
    pub epoch: usize,
    /// Index of the next micro-batch within `epoch` (`data_iter_step`); 0 = epoch start.
    pub iteration: usize,
    /// Optimizer steps done so far.
    pub global_step: u64,
    /// Micro-batches seen so far (including skipped ones).
    pub micro_step: u64,
    /// Batches skipped for a non-finite loss so far.
    pub skipped: u64,
    /// Seed of the data order (epoch `e` shuffles with a generator derived from it and `e`).
    pub data_seed: u64,
    /// Per-parameter AdamW step counts (torch's `state[p]['step']`).
    pub adam_steps: BTreeMap<String, u64>,
    /// The resolved training configuration (JSON of the trainer's config).
    pub config: serde_json::Value,
    /// Where this checkpoint was converted from, if not written by lavin-train.
    #[serde(default)]
    pub source: Option<String>,
}

/// A checkpoint in memory (host tensors, original names).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Progress and config.
    pub meta: CheckpointMeta,
    /// Adapter parameters.
    pub model: BTreeMap<String, HostTensor>,
    /// First moments (empty = fresh optimizer).
    pub exp_avg: BTreeMap<String, HostTensor>,
    /// Second moments (empty = fresh optimizer).
    pub exp_avg_sq: BTreeMap<String, HostTensor>,
}

/// File name of the checkpoint after `global_step` optimizer steps.
pub fn file_name(global_step: u64) -> String {
    format!("checkpoint-step{global_step:08}.safetensors")
}

fn step_of(name: &str) -> Option<u64> {
    name.strip_prefix("checkpoint-step")?
        .strip_suffix(".safetensors")?
        .parse()
        .ok()
}

/// lavin-train checkpoints in `dir`, oldest first (by step).
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            step_of(&n).map(|s| (s, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The newest checkpoint in `dir`, if any.
pub fn latest(dir: &Path) -> Option<PathBuf> {
    list(dir).pop().map(|(_, p)| p)
}

/// Delete all but the newest `keep` checkpoints of `dir` (`keep == 0` keeps all). Returns the
/// deleted paths.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, IoError> {
    if keep == 0 {
        return Ok(Vec::new());
    }
    let all = list(dir);
    let n = all.len().saturating_sub(keep);
    let mut out = Vec::new();
    for (_, p) in all.into_iter().take(n) {
        std::fs::remove_file(&p).map_err(|source| IoError::Io {
            path: p.clone(),
            source,
        })?;
        out.push(p);
    }
    Ok(out)
}

impl Checkpoint {
    /// Serialize to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut t = BTreeMap::new();
        for (prefix, map) in [
            ("model", &self.model),
            ("exp_avg", &self.exp_avg),
            ("exp_avg_sq", &self.exp_avg_sq),
        ] {
            for (k, v) in map {
                t.insert(format!("{prefix}.{k}"), v.clone());
            }
        }
        let meta = serde_json::to_string(&self.meta).map_err(|e| e.to_string())?;
        let mut m = BTreeMap::new();
        m.insert(META_KEY.to_string(), meta);
        io::to_safetensors(&t, m)
    }

    /// Write atomically to `dir/checkpoint-step<N>.safetensors` and prune to `keep_last`
    /// (0 = keep all). Returns the path written.
    pub fn save(&self, dir: &Path, keep_last: usize) -> Result<PathBuf, CheckpointError> {
        let path = dir.join(file_name(self.meta.global_step));
        let bytes = self
            .to_bytes()
            .map_err(|reason| CheckpointError::Serialize {
                path: path.clone(),
                reason,
            })?;
        io::atomic_write(&path, &bytes)?;
        prune(dir, keep_last)?;
        Ok(path)
    }

    /// Read a lavin-train checkpoint (a `.pth` is delegated to [`load_original`]).
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        if path.extension().is_some_and(|e| e == "pth" || e == "pt") {
            return load_original(path);
        }
        let (tensors, metadata) = io::read_safetensors(path)?;
        let meta_err = |reason: String| CheckpointError::Meta {
            path: path.to_path_buf(),
            reason,
        };
        let json = metadata.get(META_KEY).ok_or_else(|| {
            meta_err(format!("no `{META_KEY}` entry in the safetensors metadata"))
        })?;
        let meta: CheckpointMeta =
            serde_json::from_str(json).map_err(|e| meta_err(format!("metadata JSON: {e}")))?;
        if meta.format != FORMAT {
            return Err(meta_err(format!(
                "format `{}`, expected `{FORMAT}`",
                meta.format
            )));
        }
        let mut ck = Checkpoint {
            meta,
            model: BTreeMap::new(),
            exp_avg: BTreeMap::new(),
            exp_avg_sq: BTreeMap::new(),
        };
        for (k, v) in tensors {
            let (prefix, name) = k.split_once('.').unwrap_or((k.as_str(), ""));
            let map = match prefix {
                "model" => &mut ck.model,
                "exp_avg" => &mut ck.exp_avg,
                "exp_avg_sq" => &mut ck.exp_avg_sq,
                _ => return Err(meta_err(format!("unexpected tensor `{k}`"))),
            };
            map.insert(name.to_string(), v);
        }
        ck.check_moments(path)?;
        Ok(ck)
    }

    /// Whether the checkpoint carries optimizer moments.
    pub fn has_moments(&self) -> bool {
        !self.exp_avg.is_empty()
    }

    fn check_moments(&self, path: &Path) -> Result<(), CheckpointError> {
        if !self.has_moments() && self.exp_avg_sq.is_empty() {
            return Ok(());
        }
        for (name, p) in &self.model {
            for (what, map) in [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)] {
                let err = |reason: String| CheckpointError::Moments {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    reason,
                };
                match map.get(name) {
                    None => return Err(err(format!("missing `{what}`"))),
                    Some(m) if m.shape != p.shape => {
                        return Err(err(format!(
                            "`{what}` has shape {:?}, parameter {:?}",
                            m.shape, p.shape
                        )))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Check the adapters against the model's trainable parameters (original names and shapes).
    pub fn check_against(
        &self,
        path: &Path,
        expected: &[(String, Vec<usize>)],
    ) -> Result<(), CheckpointError> {
        let mut missing = Vec::new();
        for (name, shape) in expected {
            match self.model.get(name) {
                None => missing.push(name.clone()),
                Some(t) if &t.shape != shape => {
                    return Err(CheckpointError::Shape {
                        path: path.to_path_buf(),
                        name: name.clone(),
                        checkpoint: t.shape.clone(),
                        model: shape.clone(),
                    })
                }
                _ => {}
            }
        }
        let unexpected: Vec<String> = self
            .model
            .keys()
            .filter(|k| !expected.iter().any(|(n, _)| n == *k))
            .cloned()
            .collect();
        if missing.is_empty() && unexpected.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Names {
                path: path.to_path_buf(),
                missing,
                unexpected,
            })
        }
    }
}

/// Read an original LaVIN checkpoint (`checkpoint-N.pth`) as a resume source: its `model`
/// entry (names with a `module.` prefix stripped) and its `epoch`; no moments. The next epoch is
/// `epoch + 1` (the original saves after finishing epoch `epoch`).
///
/// Only the `model` entry's tensors are materialised; see the module docs for the pickle
/// objects of the other entries.
pub fn load_original(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let reader = io::open_pth(path, Some("model"))?;
    let model = io::pth_tensors(path, &reader)?;
    let epoch = reader.top_level_int("epoch");
    let meta = CheckpointMeta {
        format: FORMAT.to_string(),
        epoch: epoch.map(|e| (e.max(-1) + 1) as usize).unwrap_or(0),
        iteration: 0,
        global_step: 0,
        micro_step: 0,
        skipped: 0,
        data_seed: 0,
        adam_steps: BTreeMap::new(),
        config: serde_json::Value::Null,
        source: Some(format!(
            "original LaVIN checkpoint {} (epoch {:?})",
            path.display(),
            epoch
        )),
    };
    Ok(Checkpoint {
        meta,
        model,
        exp_avg: BTreeMap::new(),
        exp_avg_sq: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests;
