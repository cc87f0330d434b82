//! LaVIN adapter checkpoints: the original training's `{'model': {...}, ...}` `.pth` (keys with
//! or without `module.`), and our safetensors under the same key names, with the settings that
//! shaped them in the header's metadata ([`super::adapter_meta`]).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

use super::adapter_meta::AdapterMeta;
use super::apply::apply_source;
use super::names::{is_trainable, original_name, PathTracker};
use super::source::{PthSource, SafetensorsSource, TensorSource};
use crate::error::WeightsError;
use crate::Lavin;

/// Opens an adapter checkpoint by extension.
pub fn open_adapters(path: &Path) -> Result<Box<dyn TensorSource>, WeightsError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Ok(Box::new(SafetensorsSource::open(path)?)),
        _ => Ok(Box::new(
            PthSource::open(path, Some("model"))?.strip_prefix("module."),
        )),
    }
}

/// Loads every adapter parameter from `path`; a missing adapter key or a wrong shape is an
/// error naming the file and key.
pub fn load_adapters<B: Backend>(
    model: Lavin<B>,
    path: &Path,
    device: &B::Device,
) -> Result<Lavin<B>, WeightsError> {
    let source = open_adapters(path)?;
    let key_of = |name: &str| is_trainable(name).then(|| name.to_string());
    let (model, _) = apply_source(model, source.as_ref(), &key_of, device)?;
    Ok(model.freeze_base())
}

/// Every adapter parameter as `(original name, shape, f32 values)`, in module order.
pub fn adapter_tensors<B: Backend, M: Module<B>>(model: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut v = AdapterCollector {
        path: PathTracker::default(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

struct AdapterCollector {
    path: PathTracker,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<B: Backend> ModuleVisitor<B> for AdapterCollector {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(name) = original_name(&self.path.path()).filter(|n| is_trainable(n)) {
            let t = param.val();
            let shape = t.dims().to_vec();
            let data = t
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("float tensor converts to f32");
            self.out.push((name, shape, data));
        }
    }
}

/// Saves the adapters as safetensors under the original names (f32), atomically, with the
/// model's adapter settings as metadata.
pub fn save_adapters<B: Backend>(model: &Lavin<B>, path: &Path) -> Result<(), WeightsError> {
    save_adapters_with_meta(model, path, &AdapterMeta::from_config(model.config()))
}

/// [`save_adapters`] with the given settings as metadata (a trainer adds the base it used).
pub fn save_adapters_with_meta<B: Backend>(
    model: &Lavin<B>,
    path: &Path,
    meta: &AdapterMeta,
) -> Result<(), WeightsError> {
    let tensors = adapter_tensors(model);
    write_safetensors(path, &tensors, &meta.to_metadata())
}

/// Writes named f32 tensors to `path` through a temporary file and a rename, so a crash never
/// leaves a half-written checkpoint behind.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), WeightsError> {
    let named = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice()));
    let data = safetensors_bytes(named, metadata)
        .map_err(|e| WeightsError::format(path, "safetensors", e))?;
    atomic_write(path, &data)
}

/// Serializes named f32 tensors and string metadata (the header's `__metadata__`) into
/// safetensors bytes.
pub fn safetensors_bytes<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let tensors: Vec<_> = tensors.into_iter().collect();
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), b)
            .map_err(|e| format!("{name}: {e}"))?;
        views.push((name.to_string(), view));
    }
    if metadata.is_empty() {
        return safetensors::serialize(views, Some(Default::default())).map_err(|e| e.to_string());
    }
    // The crate writes `__metadata__` from a HashMap, in a different order on every call; so the
    // same model always gives the same bytes, the metadata goes into the header sorted.
    let bytes = safetensors::serialize(views, None).map_err(|e| e.to_string())?;
    with_sorted_metadata(&bytes, metadata)
}

/// `bytes` (a safetensors file without metadata) with `metadata` added to its header.
fn with_sorted_metadata(
    bytes: &[u8],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("safetensors: no header")?;
    let header = bytes.get(8..8 + n).ok_or("safetensors: header truncated")?;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| e.to_string())?;
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).map_err(|e| e.to_string())?,
    );
    let mut text = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    // The data that follows must start 8-byte aligned; spaces pad it as the format does.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Writes `data` to `path` so that a crash leaves either the old file or the new one: a
/// temporary file in the same directory, fsync, rename, fsync of the directory.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<(), WeightsError> {
    use std::io::Write;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WeightsError::Io { path, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let file_name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
