//! A parity case folder (`tests/data/parity/tiny-a` is one): the original's weights and the
//! tensors its code produced from them. This crate reads a case, builds the model it describes,
//! and compares: the training forward, its gradients, the HF-layout LLaMA. Used by the tests and
//! by `lavin-tools parity`.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use serde_json::Value;

use lavin_model::config::{
    AdapterConfig, ClipConfig, ClipRouterMode, LavinConfig, LlamaAdapterType, VisualAdapterType,
};
use lavin_model::error::WeightsError;
use lavin_model::weights::names::{is_trainable, original_name, PathTracker};
use lavin_model::weights::source::{SafetensorsSource, TensorSource};
use lavin_model::weights::{self, llama::read_meta_params, LlamaWeights, LoadSpec};
use lavin_model::{Lavin, LavinBatch};

/// One row of a parity report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    /// Max abs error, or the number of mismatches for exact checks.
    pub error: f64,
    pub bound: f64,
    /// How `bound` applies: "abs", "rel" (to the reference's max abs) or "exact".
    pub kind: &'static str,
}

impl Check {
    pub fn pass(&self) -> bool {
        self.pass_scaled(1.0)
    }

    /// Passes with every non-exact bound multiplied by `scale` (exact checks stay exact).
    pub fn pass_scaled(&self, scale: f64) -> bool {
        match self.kind {
            "exact" => self.error == 0.0,
            _ => self.error <= self.bound * scale,
        }
    }

    /// Compares `got` with `want` by max abs error, relative to `want`'s max abs (`rel`) or not.
    pub fn close(
        name: impl Into<String>,
        got: &[f32],
        want: &[f32],
        bound: f64,
        rel: bool,
    ) -> Self {
        let name = name.into();
        if got.len() != want.len() {
            return Self {
                name,
                error: f64::INFINITY,
                bound,
                kind: if rel { "rel" } else { "abs" },
            };
        }
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        let err = if got.iter().chain(want).any(|v| v.is_nan()) {
            f64::INFINITY
        } else {
            err
        };
        let scale = if rel {
            want.iter()
                .map(|v| v.abs() as f64)
                .fold(0.0, f64::max)
                .max(f64::MIN_POSITIVE)
        } else {
            1.0
        };
        Self {
            name,
            error: err / scale,
            bound,
            kind: if rel { "rel" } else { "abs" },
        }
    }

    pub fn exact(name: impl Into<String>, mismatches: usize) -> Self {
        Self {
            name: name.into(),
            error: mismatches as f64,
            bound: 0.0,
            kind: "exact",
        }
    }
}

/// A parity case folder, configured from its own `meta.json` and `llama/params.json`.
pub struct Case {
    pub dir: PathBuf,
    pub meta: Value,
    pub config: LavinConfig,
    pub inputs: SafetensorsSource,
    pub expected: SafetensorsSource,
}

fn meta_err(dir: &Path, message: impl Into<String>) -> WeightsError {
    WeightsError::Config {
        path: dir.join("meta.json"),
        message: message.into(),
    }
}

impl Case {
    pub fn open(dir: &Path) -> Result<Self, WeightsError> {
        let meta_path = dir.join("meta.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|source| WeightsError::Io {
            path: meta_path.clone(),
            source,
        })?;
        let meta: Value =
            serde_json::from_str(&text).map_err(|e| WeightsError::format(&meta_path, "JSON", e))?;
        let c = meta
            .get("config")
            .ok_or_else(|| meta_err(dir, "no `config` object"))?;
        let get = |k: &str| {
            c.get(k)
                .ok_or_else(|| meta_err(dir, format!("config has no `{k}`")))
        };
        let num = |k: &str| {
            get(k).and_then(|v| {
                v.as_f64()
                    .ok_or_else(|| meta_err(dir, format!("config.{k} is not a number")))
            })
        };
        let text_of = |k: &str| {
            get(k).and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| meta_err(dir, format!("config.{k} is not a string")))
            })
        };

        let vocab = num("tokenizer_vocab")? as usize;
        let mut llama = read_meta_params(&dir.join("llama"), vocab)?;
        if let Some(theta) = meta.pointer("/dims/rope_theta").and_then(Value::as_f64) {
            llama.rope_theta = theta;
        }
        let clip: ClipConfig = serde_json::from_value(get("clip")?.clone())
            .map_err(|e| meta_err(dir, format!("config.clip: {e}")))?;
        let adapter = AdapterConfig {
            llama: match text_of("adapter_type")?.as_str() {
                "attn" => LlamaAdapterType::Attn,
                "block" => LlamaAdapterType::Block,
                other => return Err(meta_err(dir, format!("unknown adapter_type `{other}`"))),
            },
            visual: match text_of("visual_adapter_type")?.as_str() {
                "normal" => VisualAdapterType::Normal,
                "router" => VisualAdapterType::Router,
                "router_block" => VisualAdapterType::RouterBlock,
                other => {
                    return Err(meta_err(
                        dir,
                        format!("unknown visual_adapter_type `{other}`"),
                    ))
                }
            },
            dim: num("adapter_dim")? as usize,
            groups: 2,
            scale: num("adapter_scale")?,
            temperature: num("temperature")?,
            hidden_proj: num("hidden_proj")? as usize,
            dropout: 0.0, // fixtures are computed in eval mode
            clip_router: ClipRouterMode::Reference,
        };
        let inputs = SafetensorsSource::open(&dir.join("inputs.safetensors"))?;
        let ids = |k: &str| -> Result<Vec<u32>, WeightsError> {
            Ok(inputs
                .require_i64(k)?
                .1
                .into_iter()
                .map(|v| v as u32)
                .collect())
        };
        let config = LavinConfig {
            llama,
            clip,
            adapter,
            max_seq_len: num("max_seq_len")? as usize,
            prefix_img: ids("prefix_img")?,
            prefix_nonimg: ids("prefix_nonimg")?,
        };
        let expected = SafetensorsSource::open(&dir.join("expected.safetensors"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
            config,
            inputs,
            expected,
        })
    }

    /// The model from the case's Meta (or `hf-llama/`) LLaMA, CLIP and adapter checkpoint.
    pub fn load_model<B: Backend>(
        &self,
        llama: LlamaWeights,
        device: &B::Device,
    ) -> Result<Lavin<B>, WeightsError> {
        let spec = LoadSpec {
            llama,
            clip: self.dir.join("clip/visual.pth"),
            adapters: Some(self.dir.join("adapter/checkpoint.pth")),
            format: Default::default(),
        };
        weights::load_lavin(&self.config, &spec, device)
    }

    pub fn meta_llama(&self) -> LlamaWeights {
        LlamaWeights::Meta(self.dir.join("llama"))
    }

    /// The training batch of `inputs.safetensors`.
    pub fn batch<B: Backend>(&self, device: &B::Device) -> Result<LavinBatch<B>, WeightsError> {
        let int = |k: &str| -> Result<TensorData, WeightsError> {
            let (shape, v) = self.inputs.require_i64(k)?;
            Ok(TensorData::new(v, shape))
        };
        let images = self.inputs.require("images")?;
        Ok(LavinBatch {
            tokens: Tensor::<B, 2, Int>::from_data(int("tokens")?, device),
            labels: Tensor::<B, 2, Int>::from_data(int("labels")?, device),
            images: Tensor::from_data(images.into_data(), device),
            indicators: Tensor::<B, 1, Int>::from_data(int("indicators")?, device),
        })
    }

    /// Training forward and backward against `expected.safetensors`.
    pub fn check_training<B: AutodiffBackend>(
        &self,
        model: &Lavin<B>,
        device: &B::Device,
    ) -> Result<Vec<Check>, WeightsError> {
        let exp = |k: &str| self.expected.require(k).map(|t| t.data);
        let mut rows = Vec::new();
        let (out, trace) = model.forward_traced(self.batch(device)?);

        rows.push(Check::close(
            "clip_feats",
            &host(trace.clip_feats),
            &exp("clip_feats")?,
            1e-4,
            true,
        ));
        for (j, r) in trace.clip_routes.iter().enumerate() {
            for (prefix, w) in [("clip_router", &r.attn), ("clip_router_mlp", &r.mlp)] {
                if let (Some(w), Some(want)) = (w, self.expected.get(&format!("{prefix}.{j}"))?) {
                    // Reference routing yields [1, T, 2]; the fixture stores [T, 2].
                    rows.push(Check::close(
                        format!("{prefix}.{j}"),
                        &host(w.clone()),
                        &want.data,
                        1e-5,
                        false,
                    ));
                }
            }
        }
        rows.push(Check::close(
            "image_embeds",
            &host(trace.image_embeds),
            &exp("image_embeds")?,
            1e-4,
            true,
        ));
        rows.push(Check::close("h0", &host(trace.h0), &exp("h0")?, 1e-4, true));
        for (i, r) in trace.routes.iter().enumerate() {
            rows.push(Check::close(
                format!("router.{i}"),
                &host(r.attn.clone()),
                &exp(&format!("router.{i}"))?,
                1e-5,
                false,
            ));
            if let Some(m) = &r.mlp {
                rows.push(Check::close(
                    format!("router_mlp.{i}"),
                    &host(m.clone()),
                    &exp(&format!("router_mlp.{i}"))?,
                    1e-5,
                    false,
                ));
            }
        }
        rows.push(Check::close(
            "logits",
            &host(out.logits.clone()),
            &exp("logits")?,
            1e-4,
            true,
        ));
        let (_, want_labels) = self.expected.require_i64("loss_labels")?;
        let got_labels: Vec<i64> = out
            .targets
            .clone()
            .into_data()
            .convert::<i64>()
            .into_vec()
            .expect("int tensor");
        let mismatches = got_labels
            .iter()
            .zip(&want_labels)
            .filter(|(a, b)| a != b)
            .count()
            + got_labels.len().abs_diff(want_labels.len());
        rows.push(Check::exact("loss_labels", mismatches));
        rows.push(Check::close(
            "loss",
            &host(out.loss.clone()),
            &exp("loss")?,
            1e-4,
            true,
        ));

        let grads = out.loss.backward();
        for (name, _, g) in adapter_grads(model, &grads) {
            let want = self.expected.require(&format!("grad.{name}"))?;
            rows.push(Check::close(
                format!("grad.{name}"),
                &g,
                &want.data,
                1e-3,
                true,
            ));
        }
        Ok(rows)
    }

    /// Logits of the `hf-llama/` copy against the same expected logits.
    pub fn check_hf_llama<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<Vec<Check>, WeightsError> {
        let model =
            self.load_model::<B>(LlamaWeights::HuggingFace(self.dir.join("hf-llama")), device)?;
        let (out, _) = model.forward_traced(self.batch(device)?);
        Ok(vec![Check::close(
            "hf-llama logits",
            &host(out.logits),
            &self.expected.require("logits")?.data,
            1e-4,
            true,
        )])
    }
}

/// A float tensor's values on the host.
pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("float tensor converts to f32")
}

/// `(original name, shape, gradient)` of every adapter parameter that received one.
pub fn adapter_grads<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &B::Gradients,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Collect<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        path: PathTracker,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let Some(name) = original_name(&self.path.path()).filter(|n| is_trainable(n)) else {
                return;
            };
            if let Some(g) = param.val().grad(self.grads) {
                self.out.push((name, g.dims().to_vec(), host(g)));
            }
        }
    }
    let mut c = Collect::<B> {
        grads,
        path: PathTracker::default(),
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

/// One float parameter on the host: Burn path, whether it is a Burn `Linear` weight (stored
/// `[in, out]`, files want `[out, in]`), shape and values.
pub struct HostParam {
    pub path: String,
    pub linear_weight: bool,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Every float parameter of `module`, in module order.
pub fn host_params<B: Backend, M: Module<B>>(module: &M) -> Vec<HostParam> {
    struct Visitor {
        stack: Vec<String>,
        containers: Vec<String>,
        out: Vec<HostParam>,
    }
    impl<B: Backend> ModuleVisitor<B> for Visitor {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.stack.push(name.to_string());
            self.containers.push(container.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
            self.containers.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let t = p.val();
            let shape = t.dims().to_vec();
            let data = t
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default();
            let path = self.stack.join(".");
            let linear_weight = D == 2
                && path.ends_with(".weight")
                && self.containers.last().is_some_and(|c| c == "Struct:Linear");
            self.out.push(HostParam {
                path,
                linear_weight,
                shape,
                data,
            });
        }
    }
    let mut v = Visitor {
        stack: Vec::new(),
        containers: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}
