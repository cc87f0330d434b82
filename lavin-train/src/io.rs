//! Small file helpers: atomic writes, raw f32 tensor maps from safetensors and PyTorch files.
//!
//! The tensor type and the byte decoder are lavin-model's ([`lavin_model::weights::host`]),
//! shared with the model's weight loaders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lavin_model::weights::host::{decode_f32, ElemType};
use lavin_model::weights::torch_pickle::TorchPickleReader;
/// A host-side f32 tensor: shape and row-major values (`data`).
pub use lavin_model::weights::HostTensor;

/// Errors of the file helpers.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// OS-level I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a readable safetensors file.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors {
        /// File concerned.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
    /// Not a readable PyTorch file.
    #[error("{path}: cannot read PyTorch checkpoint: {reason}")]
    Pytorch {
        /// File concerned.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
    /// A tensor with a dtype we do not convert.
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype}")]
    Dtype {
        /// File concerned.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// Its dtype.
        dtype: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |source| IoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically (see [`lavin_model::weights::adapters::atomic_write`]).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    lavin_model::weights::adapters::atomic_write(path, bytes).map_err(|e| match e {
        lavin_model::WeightsError::Io { path, source } => IoError::Io { path, source },
        other => IoError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// Read every tensor of a safetensors file as f32 (f32, f16, bf16, f64 accepted), plus the
/// header's `__metadata__` map.
pub fn read_safetensors(
    path: &Path,
) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, String>), IoError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    parse_safetensors(path, &bytes)
}

/// [`read_safetensors`] on bytes already in memory (`path` is only used in messages).
pub fn parse_safetensors(
    path: &Path,
    bytes: &[u8],
) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, String>), IoError> {
    use safetensors::{Dtype, SafeTensors};
    let st_err = |e: safetensors::SafeTensorError| IoError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(st_err)?;
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let st = SafeTensors::deserialize(bytes).map_err(st_err)?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        // The dtypes this reader has always accepted; others are refused by name.
        let elem = match view.dtype() {
            Dtype::F32 => ElemType::F32,
            Dtype::F64 => ElemType::F64,
            Dtype::F16 => ElemType::F16,
            Dtype::BF16 => ElemType::BF16,
            Dtype::I64 => ElemType::I64,
            other => {
                return Err(IoError::Dtype {
                    path: path.to_path_buf(),
                    name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        let data = decode_f32(elem, view.data()).map_err(|e| IoError::Safetensors {
            path: path.to_path_buf(),
            reason: format!("tensor `{name}`: {e}"),
        })?;
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((out, metadata))
}

/// Serialize f32 tensors (sorted by name) and string metadata into safetensors bytes.
pub fn to_safetensors(
    tensors: &BTreeMap<String, HostTensor>,
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let named = tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t.shape.as_slice(), t.data.as_slice()));
    lavin_model::weights::adapters::safetensors_bytes(named, &metadata)
}

/// Read the tensors under top-level key `key` (e.g. `"model"`) of a PyTorch `.pth` as f32,
/// stripping a leading `module.` (multi-GPU checkpoints) from every name. The reader is the
/// model crate's: it reads a whole original training checkpoint (optimizer state with integer
/// keys, an `argparse.Namespace`), materialising only the tensors asked for.
pub fn read_pth_entry(path: &Path, key: &str) -> Result<BTreeMap<String, HostTensor>, IoError> {
    pth_tensors(path, &open_pth(path, Some(key))?)
}

/// Every tensor `reader` indexed, as [`read_pth_entry`] names them.
pub fn pth_tensors(
    path: &Path,
    reader: &TorchPickleReader,
) -> Result<BTreeMap<String, HostTensor>, IoError> {
    let mut out = BTreeMap::new();
    for name in reader.keys() {
        let tensor = reader
            .get(&name)
            .map_err(|e| pth_error(path, e))?
            .expect("listed by the reader");
        let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
        out.insert(name, tensor);
    }
    Ok(out)
}

/// Opens a PyTorch `.pth`, indexing the tensors under top-level key `key`.
pub fn open_pth(path: &Path, key: Option<&str>) -> Result<TorchPickleReader, IoError> {
    if !path.exists() {
        return Err(IoError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    TorchPickleReader::open(path, key).map_err(|e| pth_error(path, e))
}

fn pth_error(path: &Path, e: lavin_model::WeightsError) -> IoError {
    IoError::Pytorch {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn safetensors_roundtrip_with_metadata() {
        let mut t = BTreeMap::new();
        t.insert(
            "a.b".to_string(),
            HostTensor {
                shape: vec![2, 1],
                data: vec![1.5, -2.0],
            },
        );
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), "v".to_string());
        let bytes = to_safetensors(&t, m.clone()).unwrap();
        let (t2, m2) = parse_safetensors(Path::new("mem"), &bytes).unwrap();
        assert_eq!(t, t2);
        assert_eq!(m, m2);
    }
}
