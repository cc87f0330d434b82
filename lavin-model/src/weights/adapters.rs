//! LaVIN adapter checkpoints: the original training's `{'model': {...}, ...}` `.pth` (keys with
//! or without `module.`), and our safetensors under the same key names.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

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

/// Saves the adapters as safetensors under the original names (f32), atomically.
pub fn save_adapters<B: Backend>(model: &Lavin<B>, path: &Path) -> Result<(), WeightsError> {
    let tensors = adapter_tensors(model);
    write_safetensors(path, &tensors, &BTreeMap::new())
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
    let meta: std::collections::HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
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
