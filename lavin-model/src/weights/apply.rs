//! Writes tensors from a [`TensorSource`] into a module's parameters, matched by name.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{backend::Backend, Tensor};

use super::names::{original_name, PathTracker};
use super::source::TensorSource;
use crate::error::WeightsError;

/// For every float parameter whose original name `key_of` maps to a file key, loads that tensor
/// (transposing Burn `Linear` weights, which are stored `[in, out]`), checks its shape and
/// replaces the parameter, keeping its id. Returns how many were loaded. The caller re-applies
/// the trainable/frozen split afterwards ([`crate::Lavin::freeze_base`]).
pub fn apply_source<B: Backend, M: Module<B>>(
    module: M,
    source: &dyn TensorSource,
    key_of: &dyn Fn(&str) -> Option<String>,
    device: &B::Device,
) -> Result<(M, usize), WeightsError> {
    apply_source_at(module, "", source, key_of, device)
}

/// [`apply_source`] on a sub-module found at Burn path `prefix` of the whole model (e.g.
/// `llama.layers.3`), so names resolve as if the whole model were walked. Lets a loader fill and
/// convert one block at a time (LaVIN-lite quantizes each block right after loading it).
pub fn apply_source_at<B: Backend, M: Module<B>>(
    module: M,
    prefix: &str,
    source: &dyn TensorSource,
    key_of: &dyn Fn(&str) -> Option<String>,
    device: &B::Device,
) -> Result<(M, usize), WeightsError> {
    let mut path = PathTracker::default();
    for part in prefix.split('.').filter(|p| !p.is_empty()) {
        path.enter(part);
    }
    let mut mapper = LoadMapper {
        source,
        key_of,
        device,
        path,
        containers: Vec::new(),
        error: None,
        loaded: 0,
    };
    let module = module.map(&mut mapper);
    match mapper.error {
        Some(e) => Err(e),
        None => Ok((module, mapper.loaded)),
    }
}

struct LoadMapper<'a, B: Backend> {
    source: &'a dyn TensorSource,
    key_of: &'a dyn Fn(&str) -> Option<String>,
    device: &'a B::Device,
    path: PathTracker,
    containers: Vec<String>,
    /// First failure; later parameters are left untouched (a mapper cannot return early).
    error: Option<WeightsError>,
    loaded: usize,
}

impl<B: Backend> LoadMapper<'_, B> {
    fn load<const D: usize>(
        &mut self,
        expected: [usize; D],
    ) -> Result<Option<Tensor<B, D>>, WeightsError> {
        let Some(original) = original_name(&self.path.path()) else {
            return Ok(None);
        };
        let Some(key) = (self.key_of)(&original) else {
            return Ok(None);
        };
        let mut t = self.source.require(&key)?;
        // Burn's Linear keeps [in, out]; every file format stores [out, in].
        let is_linear_weight = self.containers.last().is_some_and(|c| c == "Struct:Linear")
            && original.ends_with(".weight")
            && D == 2;
        if is_linear_weight && t.shape.len() == 2 {
            t = t.transpose();
        }
        if t.shape != expected {
            let mut found = t.shape.clone();
            let mut want = expected.to_vec();
            if is_linear_weight {
                found.reverse();
                want.reverse();
            }
            return Err(WeightsError::Shape {
                path: self.source.path().to_path_buf(),
                key,
                expected: want,
                found,
            });
        }
        self.loaded += 1;
        Ok(Some(Tensor::from_data(t.into_data(), self.device)))
    }
}

impl<B: Backend> ModuleMapper<B> for LoadMapper<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name);
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
        self.containers.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let dims: [usize; D] = param.lazy_shape().dims();
        match self.load::<D>(dims) {
            Ok(Some(tensor)) => Param::initialized(param.id, tensor),
            Ok(None) => param,
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}
