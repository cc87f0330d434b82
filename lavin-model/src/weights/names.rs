//! Burn module paths <-> the original LaVIN parameter names.
//!
//! Our modules use Rust names (`llama.layers.0.adapter_attn.conv_a.weight`); the authors' code
//! names the same tensor `layers.0.adapter_attn.conv_A.weight`. Everything that crosses a file
//! boundary (checkpoints, gradients, optimizer state) uses the original names.

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

/// The original LaVIN name of a Burn parameter path (`None` for non-LaVIN paths).
///
/// Frozen weights get their Meta / OpenAI-CLIP names under LaVIN's model prefix
/// (`layers.N.attention.wq.weight`, `backbone.visual.conv1.weight`, ...).
pub fn original_name(burn_path: &str) -> Option<String> {
    let parts: Vec<&str> = burn_path.split('.').collect();
    let renamed: Vec<String> = parts
        .iter()
        // Enum variants of `VisualAdapter` and `FrozenLinear` are not part of the original names.
        .filter(|p| !matches!(**p, "Normal" | "Router" | "Dense" | "Quant"))
        .map(|p| match *p {
            "conv_a" => "conv_A".to_string(),
            "conv_b" => "conv_B".to_string(),
            "conv_d" => "conv_D".to_string(),
            "gamma" => "weight".to_string(),
            "beta" => "bias".to_string(),
            other => other.to_string(),
        })
        .collect();
    let joined = renamed.join(".");
    if let Some(rest) = joined.strip_prefix("llama.") {
        Some(rest.to_string())
    } else if let Some(rest) = joined.strip_prefix("clip.resblocks.") {
        Some(format!("backbone.visual.transformer.resblocks.{rest}"))
    } else if let Some(rest) = joined.strip_prefix("clip.") {
        Some(format!(
            "backbone.visual.{}",
            rest.replace("conv1", "conv1.weight")
        ))
    } else if joined.starts_with("adapter_") {
        Some(joined)
    } else {
        None
    }
}

/// LaVIN trains exactly the parameters whose original name contains `adapter`.
pub fn is_trainable(original: &str) -> bool {
    original.contains("adapter")
}

/// Tracks the dotted module path during a visit or map.
#[derive(Debug, Default, Clone)]
pub struct PathTracker {
    stack: Vec<String>,
}

impl PathTracker {
    pub fn enter(&mut self, name: &str) {
        self.stack.push(name.to_string());
    }

    pub fn exit(&mut self) {
        self.stack.pop();
    }

    /// The current path (the parameter's own field name is the last component).
    pub fn path(&self) -> String {
        self.stack.join(".")
    }
}

/// Sets `require_grad` on adapter parameters only.
#[derive(Default)]
pub struct TrainableMapper {
    path: PathTracker,
}

impl<B: Backend> ModuleMapper<B> for TrainableMapper {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let trainable = original_name(&self.path.path()).is_some_and(|n| is_trainable(&n));
        param.set_require_grad(trainable)
    }
}

/// Collects `(burn path, original name)` of every float parameter, in module order.
#[derive(Default)]
pub struct NameCollector {
    path: PathTracker,
    pub names: Vec<(String, Option<String>)>,
}

impl<B: Backend> ModuleVisitor<B> for NameCollector {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<B, D>>) {
        let p = self.path.path();
        let o = original_name(&p);
        self.names.push((p, o));
    }
}
