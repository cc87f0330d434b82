//! Tensor sources: one tensor at a time from a file, as f32 on the host.
//!
//! Loading pulls each parameter by name when the model needs it, so a 7B checkpoint never
//! sits in memory twice: `.pth` archives are read lazily per tensor, safetensors are mmapped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use burn_store::pytorch::PytorchReader;
use safetensors::Dtype;

pub use super::host::HostTensor;
use super::host::{decode_f32, decode_i64, ElemType};
use super::torch_pickle::TorchPickleReader;
use crate::error::WeightsError;

/// Named tensors, fetched one at a time.
pub trait TensorSource {
    /// The file(s) behind this source, for error messages.
    fn path(&self) -> &Path;
    fn keys(&self) -> Vec<String>;
    /// `Ok(None)` when the key is absent.
    fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError>;

    fn require(&self, key: &str) -> Result<HostTensor, WeightsError> {
        self.get(key)?.ok_or_else(|| WeightsError::MissingKey {
            path: self.path().to_path_buf(),
            key: key.to_string(),
        })
    }
}

fn check_exists(path: &Path) -> Result<(), WeightsError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A PyTorch `.pth` zip archive, optionally under a top-level key (`{'model': {...}}`).
pub struct PthSource {
    path: PathBuf,
    reader: PthReader,
    /// Prefix stripped from every key (`module.` from multi-GPU training).
    strip: Option<String>,
}

impl PthSource {
    pub fn open(path: &Path, top_level_key: Option<&str>) -> Result<Self, WeightsError> {
        check_exists(path)?;
        let reader = match top_level_key {
            Some(k) => PytorchReader::with_top_level_key(path, k),
            None => PytorchReader::new(path),
        };
        let reader = match reader {
            Ok(r) => PthReader::Burn(r),
            // Training checkpoints (`{'model', 'optimizer': {'state': {0: ..}}, 'args':
            // Namespace(..)}`) defeat burn-store's reader; the tolerant one skips what it
            // does not need.
            Err(e) => match TorchPickleReader::open(path, top_level_key) {
                Ok(r) => PthReader::Pickle(r),
                Err(WeightsError::Format { reason, .. }) => {
                    return Err(WeightsError::format(
                        path,
                        "PyTorch checkpoint",
                        format!("{e}; tolerant reader: {reason}"),
                    ))
                }
                Err(other) => return Err(other),
            },
        };
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            strip: None,
        })
    }

    /// Strips `prefix` from keys that carry it (keys without it stay usable).
    pub fn strip_prefix(mut self, prefix: &str) -> Self {
        self.strip = Some(prefix.to_string());
        self
    }

    fn file_key(&self, key: &str) -> Option<String> {
        if self.reader.contains(key) {
            return Some(key.to_string());
        }
        let p = self.strip.as_ref()?;
        let k = format!("{p}{key}");
        self.reader.contains(&k).then_some(k)
    }
}

/// burn-store's reader, or the tolerant fallback for full training checkpoints.
enum PthReader {
    Burn(PytorchReader),
    Pickle(TorchPickleReader),
}

impl PthReader {
    fn contains(&self, key: &str) -> bool {
        match self {
            Self::Burn(r) => r.get(key).is_some(),
            Self::Pickle(r) => r.contains(key),
        }
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Self::Burn(r) => r.keys(),
            Self::Pickle(r) => r.keys(),
        }
    }
}

impl TensorSource for PthSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn keys(&self) -> Vec<String> {
        let strip = self.strip.as_deref().unwrap_or("\u{0}");
        self.reader
            .keys()
            .into_iter()
            .map(|k| k.strip_prefix(strip).map(str::to_string).unwrap_or(k))
            .collect()
    }

    fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        let Some(k) = self.file_key(key) else {
            return Ok(None);
        };
        let reader = match &self.reader {
            PthReader::Burn(r) => r,
            PthReader::Pickle(r) => return r.get(&k),
        };
        let snapshot = reader.get(&k).expect("key checked above");
        let data = snapshot.to_data().map_err(|e| {
            WeightsError::format(
                &self.path,
                "PyTorch checkpoint",
                format!("tensor `{k}`: {e:?}"),
            )
        })?;
        host_from_data(data, &self.path, &k).map(Some)
    }
}

fn host_from_data(data: TensorData, path: &Path, key: &str) -> Result<HostTensor, WeightsError> {
    let shape = data.shape.to_vec();
    let data = match data.dtype {
        DType::F32 => data,
        DType::F16 | DType::BF16 | DType::F64 => data.convert_dtype(DType::F32),
        other => {
            return Err(WeightsError::Dtype {
                path: path.to_path_buf(),
                key: key.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    let data = data
        .into_vec::<f32>()
        .map_err(|e| WeightsError::format(path, "tensor", format!("`{key}`: {e:?}")))?;
    Ok(HostTensor { shape, data })
}

/// One safetensors file, memory-mapped.
pub struct SafetensorsSource {
    path: PathBuf,
    map: memmap2::Mmap,
    /// key -> (dtype, shape, byte range in `map`)
    index: HashMap<String, (Dtype, Vec<usize>, std::ops::Range<usize>)>,
}

impl SafetensorsSource {
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let file = std::fs::File::open(path).map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the file is opened read-only and not expected to change while loading.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let st = safetensors::SafeTensors::deserialize(&map)
            .map_err(|e| WeightsError::format(path, "safetensors", e))?;
        let base = map.as_ptr() as usize;
        let index = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let start = view.data().as_ptr() as usize - base;
                (
                    name,
                    (
                        view.dtype(),
                        view.shape().to_vec(),
                        start..start + view.data().len(),
                    ),
                )
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            map,
            index,
        })
    }
}

impl SafetensorsSource {
    /// An integer tensor (I64/I32/U32/U8) as i64 values with its shape.
    pub fn require_i64(&self, key: &str) -> Result<(Vec<usize>, Vec<i64>), WeightsError> {
        let (dtype, shape, range) =
            self.index
                .get(key)
                .ok_or_else(|| WeightsError::MissingKey {
                    path: self.path.clone(),
                    key: key.to_string(),
                })?;
        let elem = match dtype {
            Dtype::I64 => ElemType::I64,
            Dtype::I32 => ElemType::I32,
            Dtype::U32 => ElemType::U32,
            Dtype::U8 => ElemType::U8,
            other => {
                return Err(WeightsError::Dtype {
                    path: self.path.clone(),
                    key: key.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let v = decode_i64(elem, &self.map[range.clone()]).map_err(|e| {
            WeightsError::format(&self.path, "safetensors", format!("tensor `{key}`: {e}"))
        })?;
        Ok((shape.clone(), v))
    }
}

impl TensorSource for SafetensorsSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn keys(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        let Some((dtype, shape, range)) = self.index.get(key) else {
            return Ok(None);
        };
        let elem = ElemType::from_safetensors(*dtype).filter(|e| e.is_float());
        let Some(elem) = elem else {
            return Err(WeightsError::Dtype {
                path: self.path.clone(),
                key: key.to_string(),
                dtype: format!("{dtype:?}"),
            });
        };
        let data = decode_f32(elem, &self.map[range.clone()]).map_err(|e| {
            WeightsError::format(&self.path, "safetensors", format!("tensor `{key}`: {e}"))
        })?;
        Ok(Some(HostTensor {
            shape: shape.clone(),
            data,
        }))
    }
}

/// Several safetensors shards behind one `model.safetensors.index.json`, or a single file.
pub struct ShardedSafetensors {
    path: PathBuf,
    shards: Vec<SafetensorsSource>,
}

impl ShardedSafetensors {
    /// `dir/model.safetensors.index.json` if present, else `dir/model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Self, WeightsError> {
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|source| WeightsError::Io {
                path: index.clone(),
                source,
            })?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| WeightsError::format(&index, "JSON", e))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    WeightsError::format(&index, "safetensors index", "no `weight_map` object")
                })?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            let shards = files
                .iter()
                .map(|f| SafetensorsSource::open(&dir.join(f)))
                .collect::<Result<_, _>>()?;
            Ok(Self {
                path: index,
                shards,
            })
        } else {
            let file = dir.join("model.safetensors");
            Ok(Self {
                shards: vec![SafetensorsSource::open(&file)?],
                path: file,
            })
        }
    }
}

impl TensorSource for ShardedSafetensors {
    fn path(&self) -> &Path {
        &self.path
    }

    fn keys(&self) -> Vec<String> {
        self.shards.iter().flat_map(|s| s.keys()).collect()
    }

    fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        for s in &self.shards {
            if let Some(t) = s.get(key)? {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }
}

/// Opens `.safetensors` or `.pth`/`.pt` by extension.
pub fn open_file(
    path: &Path,
    pth_top_level_key: Option<&str>,
) -> Result<Box<dyn TensorSource>, WeightsError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Ok(Box::new(SafetensorsSource::open(path)?)),
        _ => Ok(Box::new(PthSource::open(path, pth_top_level_key)?)),
    }
}
