//! Moving named parameters and optimizer moments between a Burn module / [`AdamW`] and host
//! tensors ([`HostTensor`], original names) for checkpoints.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::checkpoint::CheckpointError;
use crate::io::HostTensor;
use crate::optim::{AdamW, MomentState, ParamNaming};

/// LaVIN's trainable-parameter naming: the lead's `original_name`, restricted to names that
/// contain `adapter` (the original trains exactly those).
pub fn lavin_trainable_name(burn_path: &str) -> Option<String> {
    lavin_model::weights::original_name(burn_path).filter(|n| n.contains("adapter"))
}

fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default();
    HostTensor {
        shape,
        data: values,
    }
}

/// Calls `f(original name, shape, values flattened)` for each parameter of `module` that
/// `naming` names, in visiting order.
pub fn visit_named<B, M, N, F>(module: &M, naming: &N, f: F)
where
    B: Backend,
    M: Module<B>,
    N: ParamNaming,
    F: FnMut(String, Vec<usize>, Tensor<B, 1>),
{
    struct V<'a, N, F> {
        stack: Vec<String>,
        naming: &'a N,
        f: F,
    }
    impl<B: Backend, N: ParamNaming, F: FnMut(String, Vec<usize>, Tensor<B, 1>)> ModuleVisitor<B>
        for V<'_, N, F>
    {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.stack.push(name.into());
        }
        fn exit_module(&mut self, _n: &str, _c: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if let Some(n) = self.naming.original_name(&self.stack.join(".")) {
                let v = p.val();
                let shape = v.dims().to_vec();
                let len = shape.iter().product::<usize>();
                (self.f)(n, shape, v.reshape([len]));
            }
        }
    }
    module.visit(&mut V {
        stack: vec![],
        naming,
        f,
    });
}

/// Copy the named (trainable) parameters of `module` to the host.
pub fn collect_params<B: Backend, M: Module<B>, N: ParamNaming>(
    module: &M,
    naming: &N,
) -> BTreeMap<String, HostTensor> {
    let mut out = BTreeMap::new();
    visit_named(module, naming, |name, shape, values: Tensor<B, 1>| {
        let mut h = to_host(values);
        h.shape = shape;
        out.insert(name, h);
    });
    out
}

/// Replace the named parameters of `module` with `values` (shapes checked; the parameter keeps
/// its id and its require-grad flag). Names of `values` not in the module are an error, as are
/// trainable module parameters missing from `values`.
pub fn assign_params<B: Backend, M: Module<B>, N: ParamNaming>(
    module: M,
    values: &BTreeMap<String, HostTensor>,
    naming: &N,
    origin: &std::path::Path,
) -> Result<M, CheckpointError> {
    struct Mp<'a, N> {
        stack: Vec<String>,
        naming: &'a N,
        values: &'a BTreeMap<String, HostTensor>,
        seen: Vec<String>,
        missing: Vec<String>,
        error: Option<CheckpointError>,
        origin: &'a std::path::Path,
    }
    impl<B: Backend, N: ParamNaming> ModuleMapper<B> for Mp<'_, N> {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.stack.push(name.into());
        }
        fn exit_module(&mut self, _n: &str, _c: &str) {
            self.stack.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let Some(name) = self.naming.original_name(&self.stack.join(".")) else {
                return p;
            };
            let Some(h) = self.values.get(&name) else {
                self.missing.push(name);
                return p;
            };
            let (id, t, mapper) = p.consume();
            let dims = t.dims().to_vec();
            if dims != h.shape {
                self.error.get_or_insert(CheckpointError::Shape {
                    path: self.origin.to_path_buf(),
                    name,
                    checkpoint: h.shape.clone(),
                    model: dims,
                });
                return Param::from_mapped_value(id, t, mapper);
            }
            let req = t.is_require_grad();
            let mut new =
                Tensor::<B, D>::from_data(TensorData::new(h.data.clone(), dims), &t.device());
            if req {
                new = new.require_grad();
            }
            self.seen.push(name);
            Param::from_mapped_value(id, new, mapper)
        }
    }
    let mut m = Mp {
        stack: vec![],
        naming,
        values,
        seen: vec![],
        missing: vec![],
        error: None,
        origin,
    };
    let module = module.map(&mut m);
    if let Some(e) = m.error {
        return Err(e);
    }
    let unexpected: Vec<String> = values
        .keys()
        .filter(|k| !m.seen.contains(k))
        .cloned()
        .collect();
    if !m.missing.is_empty() || !unexpected.is_empty() {
        return Err(CheckpointError::Names {
            path: origin.to_path_buf(),
            missing: m.missing,
            unexpected,
        });
    }
    Ok(module)
}

/// Export AdamW moments (flat tensors reshaped to the parameter shapes) and step counts.
pub fn moments_to_host<B: Backend>(
    optim: &AdamW<B>,
) -> (
    BTreeMap<String, HostTensor>,
    BTreeMap<String, HostTensor>,
    BTreeMap<String, u64>,
) {
    let (mut m, mut v, mut s) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for (name, st) in optim.states() {
        let mut a = to_host(st.exp_avg.clone());
        a.shape = st.shape.clone();
        let mut b = to_host(st.exp_avg_sq.clone());
        b.shape = st.shape.clone();
        m.insert(name.clone(), a);
        v.insert(name.clone(), b);
        s.insert(name.clone(), st.step);
    }
    (m, v, s)
}

/// Install moments from a checkpoint into `optim` (replacing its state).
pub fn moments_from_host<B: Backend>(
    optim: &mut AdamW<B>,
    exp_avg: &BTreeMap<String, HostTensor>,
    exp_avg_sq: &BTreeMap<String, HostTensor>,
    steps: &BTreeMap<String, u64>,
    device: &B::Device,
) {
    optim.reset();
    for (name, a) in exp_avg {
        let Some(b) = exp_avg_sq.get(name) else {
            continue;
        };
        let n = a.data.len();
        let t = |h: &HostTensor| {
            Tensor::<B, 1>::from_data(TensorData::new(h.data.clone(), [n]), device)
        };
        optim.set_state(
            name.clone(),
            MomentState {
                step: steps.get(name).copied().unwrap_or(0),
                exp_avg: t(a),
                exp_avg_sq: t(b),
                shape: a.shape.clone(),
            },
        );
    }
}
