//! Checkpoints: adapters, AdamW moments and the run's position, written by burn-train's
//! checkpointer.
//!
//! After optimizer step N the learner's three records go to
//! `<output-dir>/checkpoint/{model,optim,scheduler}-N.mpk` (burn-train's `FileCheckpointer`,
//! MessagePack with named fields). They hold what LaVIN trains and nothing of the frozen base:
//! - `model` ([`AdapterRecord`], the record of [`crate::engine::model::Trainee`]): the adapter
//!   tensors under their original names (`layers.0.adapter_attn.conv_A.weight`, ...);
//! - `optim` ([`MomentsRecord`]): AdamW's moments and per-parameter step counts, same names;
//! - `scheduler` (a JSON [`CheckpointMeta`]): where the run is (epoch, micro-batch, optimizer
//!   steps, data seed) and its resolved configuration; the schedule's position follows from it.
//!
//! Each file is written under a hidden name and renamed once complete ([`CheckpointRecorder`]),
//! so a killed run leaves no half-written file; a checkpoint counts once its three files exist
//! ([`list`]). Which checkpoints stay is decided by burn-train `CheckpointingStrategy`s
//! ([`crate::engine::policies`]).
//!
//! An original LaVIN checkpoint (`checkpoint-N.pth`: `{'model', 'optimizer', 'epoch', 'scaler',
//! 'args'}`) is accepted as a resume source by [`load_original`]: adapters + epoch, no moments
//! (theirs are bitsandbytes state).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{
    FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Record, Recorder, RecorderError,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use burn::train::checkpoint::{Checkpointer, FileCheckpointer};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::io::{self, HostTensor, IoError};
use crate::optim::{AdamW, ParamNaming};
use crate::params::visit_named;

/// Folder of the checkpoints inside the output directory (burn-train's choice).
pub const DIR: &str = "checkpoint";
/// Format tag stored in [`CheckpointMeta::format`].
pub const FORMAT: &str = "lavin-train-checkpoint/2";
/// The three records of a checkpoint, as burn-train's checkpointer names their files.
pub const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// Errors loading or saving checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File-level failure (missing, unreadable, not a PyTorch file).
    #[error(transparent)]
    Io(#[from] IoError),
    /// Not a lavin-train checkpoint, or one that does not parse.
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

/// Progress and configuration stored with a checkpoint (its `scheduler` record, as JSON).
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
    /// Per-parameter AdamW step counts (torch's `state[p]['step']`; stored in the `optim`
    /// record, gathered here when a checkpoint is read).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
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

/// One named tensor of a record, stored flat with its shape.
#[derive(Record, Debug, Clone)]
pub struct NamedTensor<B: Backend> {
    /// Original parameter name.
    pub name: String,
    /// Shape of the parameter.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Tensor<B, 1>,
}

/// The model record of a LaVIN run: its adapters only.
#[derive(Record, Debug, Clone)]
pub struct AdapterRecord<B: Backend> {
    /// Adapter tensors, sorted by name.
    pub adapters: Vec<NamedTensor<B>>,
}

/// AdamW's state of one parameter.
#[derive(Record, Debug, Clone)]
pub struct MomentRecord<B: Backend> {
    /// Original parameter name.
    pub name: String,
    /// Updates applied (torch's per-parameter `step`).
    pub step: u64,
    /// First moment (flat, with the parameter's shape).
    pub exp_avg: NamedTensor<B>,
    /// Second moment.
    pub exp_avg_sq: NamedTensor<B>,
}

/// The optimizer record of a LaVIN run: moments by original name.
#[derive(Record, Debug, Clone)]
pub struct MomentsRecord<B: Backend> {
    /// One entry per parameter that has been updated, sorted by name.
    pub moments: Vec<MomentRecord<B>>,
}

fn named<B: Backend>(name: &str, shape: Vec<usize>, values: Tensor<B, 1>) -> NamedTensor<B> {
    NamedTensor {
        name: name.to_string(),
        shape,
        values,
    }
}

impl<B: Backend> NamedTensor<B> {
    fn into_host(self) -> HostTensor {
        HostTensor {
            shape: self.shape,
            data: self
                .values
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default(),
        }
    }

    fn from_host(name: &str, h: &HostTensor, device: &B::Device) -> Self {
        let n = h.data.len();
        named(
            name,
            h.shape.clone(),
            Tensor::from_data(TensorData::new(h.data.clone(), [n]), device),
        )
    }
}

impl<B: Backend> AdapterRecord<B> {
    /// The named parameters of `module` (those `naming` names), flattened, still on the device.
    pub fn of<M: Module<B>, N: ParamNaming>(module: &M, naming: &N) -> Self {
        let mut adapters = Vec::new();
        visit_named(module, naming, |name, shape, values| {
            adapters.push(named(&name, shape, values))
        });
        adapters.sort_by(|a, b| a.name.cmp(&b.name));
        Self { adapters }
    }

    /// The adapters on the host, by name.
    pub fn into_host(self) -> BTreeMap<String, HostTensor> {
        self.adapters
            .into_iter()
            .map(|t| (t.name.clone(), t.into_host()))
            .collect()
    }

    /// A record of host tensors.
    pub fn from_host(map: &BTreeMap<String, HostTensor>, device: &B::Device) -> Self {
        Self {
            adapters: map
                .iter()
                .map(|(k, h)| NamedTensor::from_host(k, h, device))
                .collect(),
        }
    }
}

impl<B: Backend> MomentsRecord<B> {
    /// The moments of `adam` (kept on the inner backend) as a record of the autodiff backend.
    pub fn of<AB: AutodiffBackend<InnerBackend = B>>(adam: &AdamW<B>) -> MomentsRecord<AB> {
        MomentsRecord {
            moments: adam
                .states()
                .iter()
                .map(|(name, st)| MomentRecord {
                    name: name.clone(),
                    step: st.step,
                    exp_avg: named(
                        name,
                        st.shape.clone(),
                        Tensor::from_inner(st.exp_avg.clone()),
                    ),
                    exp_avg_sq: named(
                        name,
                        st.shape.clone(),
                        Tensor::from_inner(st.exp_avg_sq.clone()),
                    ),
                })
                .collect(),
        }
    }

    /// `(exp_avg, exp_avg_sq, steps)` on the host, by name.
    #[allow(clippy::type_complexity)]
    pub fn into_host(
        self,
    ) -> (
        BTreeMap<String, HostTensor>,
        BTreeMap<String, HostTensor>,
        BTreeMap<String, u64>,
    ) {
        let (mut m, mut v, mut s) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for r in self.moments {
            s.insert(r.name.clone(), r.step);
            m.insert(r.name.clone(), r.exp_avg.into_host());
            v.insert(r.name, r.exp_avg_sq.into_host());
        }
        (m, v, s)
    }

    /// A record of host moments.
    pub fn from_host(
        exp_avg: &BTreeMap<String, HostTensor>,
        exp_avg_sq: &BTreeMap<String, HostTensor>,
        steps: &BTreeMap<String, u64>,
        device: &B::Device,
    ) -> Self {
        Self {
            moments: exp_avg
                .iter()
                .filter_map(|(k, a)| {
                    let b = exp_avg_sq.get(k)?;
                    Some(MomentRecord {
                        name: k.clone(),
                        step: steps.get(k).copied().unwrap_or(0),
                        exp_avg: NamedTensor::from_host(k, a, device),
                        exp_avg_sq: NamedTensor::from_host(k, b, device),
                    })
                })
                .collect(),
        }
    }
}

/// burn's named MessagePack recorder (f32), writing each file under a hidden name first and
/// renaming it once complete and synced.
#[derive(Debug, Default, Clone)]
pub struct CheckpointRecorder(NamedMpkFileRecorder<FullPrecisionSettings>);

impl<B: Backend> Recorder<B> for CheckpointRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, file: PathBuf) -> Result<(), RecorderError> {
        let ext = <Self as FileRecorder<B>>::file_extension();
        let target = file.with_extension(ext);
        let stem = target.file_stem().unwrap_or_default().to_string_lossy();
        // The inner recorder sets the extension itself: `.model-8.partial` -> `.model-8.mpk`.
        let hidden = target.with_file_name(format!(".{stem}.partial"));
        let named = |e| RecorderError::Unknown(format!("{}: {e:?}", target.display()));
        Recorder::<B>::save_item(&self.0, item, hidden.clone()).map_err(named)?;
        let written = hidden.with_extension(ext);
        let err = |e: std::io::Error| RecorderError::Unknown(format!("{}: {e}", target.display()));
        std::fs::File::open(&written)
            .and_then(|f| f.sync_all())
            .map_err(err)?;
        std::fs::rename(&written, &target).map_err(err)
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        Recorder::<B>::load_item(&self.0, file)
    }
}

impl<B: Backend> FileRecorder<B> for CheckpointRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}

/// The checkpoint folder of an output directory.
pub fn dir_of(output_dir: &Path) -> PathBuf {
    output_dir.join(DIR)
}

/// The files of the checkpoint after `step` optimizer steps in checkpoint folder `dir`:
/// model, optim, scheduler.
pub fn files(dir: &Path, step: u64) -> [PathBuf; 3] {
    PARTS.map(|p| dir.join(format!("{p}-{step}.mpk")))
}

/// The model file of the checkpoint after `step` steps of the run writing to `output_dir`
/// (what `--resume` takes).
pub fn path(output_dir: &Path, step: u64) -> PathBuf {
    let [model, ..] = files(&dir_of(output_dir), step);
    model
}

/// `(part, step)` of a checkpoint file name (`model-12.mpk` -> `("model", 12)`).
fn parse_name(name: &str) -> Option<(&str, u64)> {
    let (part, step) = name.strip_suffix(".mpk")?.rsplit_once('-')?;
    PARTS
        .contains(&part)
        .then_some(())
        .and_then(|_| Some((part, step.parse().ok()?)))
}

/// Delete what writes cut short left in checkpoint folder `dir`: hidden `.{part}-N.mpk` files
/// ([`CheckpointRecorder`] writes under these names and renames when complete). Returns them.
pub fn clean_partial(dir: &Path) -> Result<Vec<PathBuf>, IoError> {
    let mut removed = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.strip_prefix('.').and_then(parse_name).is_some() {
            std::fs::remove_file(e.path()).map_err(|source| IoError::Io {
                path: e.path(),
                source,
            })?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

/// Complete checkpoints (all three files present) under `path` (an output directory or its
/// checkpoint folder), oldest first: `(step, model file)`.
pub fn list(path: &Path) -> Vec<(u64, PathBuf)> {
    let dir = if path.join(DIR).is_dir() {
        path.join(DIR)
    } else {
        path.to_path_buf()
    };
    let mut steps: Vec<u64> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| parse_name(&e.file_name().to_string_lossy()).map(|(_, s)| s))
        .collect();
    steps.sort_unstable();
    steps.dedup();
    steps
        .into_iter()
        .filter(|&s| files(&dir, s).iter().all(|f| f.is_file()))
        .map(|s| (s, files(&dir, s)[0].clone()))
        .collect()
}

/// The newest complete checkpoint under `path`, if any.
pub fn latest(path: &Path) -> Option<PathBuf> {
    list(path).pop().map(|(_, p)| p)
}

/// The checkpoint a `--resume` path names: one of its three files, or a folder (an output
/// directory or its checkpoint folder: the newest complete checkpoint there).
pub fn locate(path: &Path) -> Result<(PathBuf, u64), CheckpointError> {
    let meta = |reason: String| CheckpointError::Meta {
        path: path.to_path_buf(),
        reason,
    };
    if path.is_dir() {
        let model = latest(path).ok_or_else(|| {
            meta(format!(
                "no complete checkpoint here or in its `{DIR}` folder (`model-N.mpk`, \
                 `optim-N.mpk` and `scheduler-N.mpk`)"
            ))
        })?;
        return locate(&model);
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let Some((_, step)) = parse_name(&name) else {
        if !path.exists() {
            return Err(IoError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }
            .into());
        }
        return Err(meta(
            "expected a checkpoint file (`model-N.mpk`, `optim-N.mpk` or `scheduler-N.mpk` \
             of a checkpoint folder), a checkpoint folder, or an original `checkpoint-N.pth`"
                .into(),
        ));
    };
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    for f in files(&dir, step) {
        if !f.is_file() {
            return Err(meta(format!(
                "checkpoint {step} is incomplete: {} is missing",
                f.display()
            )));
        }
    }
    Ok((dir, step))
}

/// Read one record of a checkpoint.
fn read_record<B: Backend, R: Record<B>>(
    file: &Path,
    device: &B::Device,
) -> Result<R, CheckpointError> {
    Recorder::<B>::load(&CheckpointRecorder::default(), file.to_path_buf(), device).map_err(|e| {
        CheckpointError::Meta {
            path: file.to_path_buf(),
            reason: format!("cannot read it as a lavin-train checkpoint record: {e}"),
        }
    })
}

impl Checkpoint {
    /// Read a checkpoint: a lavin-train one ([`locate`] resolves the path; tensors pass through
    /// `device` of backend `B`), or an original `.pth` ([`load_original`]).
    pub fn load<B: Backend>(path: &Path, device: &B::Device) -> Result<Self, CheckpointError> {
        if path.extension().is_some_and(|e| e == "pth" || e == "pt") {
            return load_original(path);
        }
        let (dir, step) = locate(path)?;
        let [model, optim, scheduler] = files(&dir, step);
        let json: String = read_record::<B, String>(&scheduler, device)?;
        let meta_err = |reason: String| CheckpointError::Meta {
            path: scheduler.clone(),
            reason,
        };
        let mut meta: CheckpointMeta =
            serde_json::from_str(&json).map_err(|e| meta_err(format!("metadata JSON: {e}")))?;
        if meta.format != FORMAT {
            return Err(meta_err(format!(
                "format `{}`, expected `{FORMAT}`",
                meta.format
            )));
        }
        let adapters = read_record::<B, AdapterRecord<B>>(&model, device)?.into_host();
        let (exp_avg, exp_avg_sq, steps) =
            read_record::<B, MomentsRecord<B>>(&optim, device)?.into_host();
        meta.adam_steps = steps;
        let ck = Checkpoint {
            meta,
            model: adapters,
            exp_avg,
            exp_avg_sq,
        };
        ck.check_moments(&optim)?;
        Ok(ck)
    }

    /// Write this checkpoint into checkpoint folder `dir` with burn-train's file checkpointer
    /// (as a run does; for conversions and tests). Returns the model file.
    pub fn save<B: Backend>(
        &self,
        dir: &Path,
        device: &B::Device,
    ) -> Result<PathBuf, CheckpointError> {
        let step = self.meta.global_step as usize;
        let [model, optim, scheduler] = files(dir, step as u64);
        let ck = |part| FileCheckpointer::new(CheckpointRecorder::default(), dir, part);
        let err = |path: &PathBuf, reason: String| CheckpointError::Serialize {
            path: path.clone(),
            reason,
        };
        let meta = serde_json::to_string(&CheckpointMeta {
            adam_steps: BTreeMap::new(),
            ..self.meta.clone()
        })
        .map_err(|e| err(&scheduler, e.to_string()))?;
        let adapters = AdapterRecord::from_host(&self.model, device);
        Checkpointer::<AdapterRecord<B>, B>::save(&ck("model"), step, adapters)
            .map_err(|e| err(&model, e.to_string()))?;
        let moments = MomentsRecord::<B>::from_host(
            &self.exp_avg,
            &self.exp_avg_sq,
            &self.meta.adam_steps,
            device,
        );
        Checkpointer::<MomentsRecord<B>, B>::save(&ck("optim"), step, moments)
            .map_err(|e| err(&optim, e.to_string()))?;
        Checkpointer::<String, B>::save(&ck("scheduler"), step, meta)
            .map_err(|e| err(&scheduler, e.to_string()))?;
        Ok(model)
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
