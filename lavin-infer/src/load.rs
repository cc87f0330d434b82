//! Building a [`LavinGenerator`] from command-line flags on the backend `backends.toml` picks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use lavin_data::Tokenizer;
use lavin_model::backends::{BackendChoice, BackendKind, BackendPrefs, Precision};
use lavin_model::llama::BaseFormat;
use lavin_model::quant::{check_backend, parse_bits};
use lavin_model::weights::{load_lavin, LlamaWeights, LoadSpec};
use lavin_model::{AdapterConfig, LavinConfig, LlamaAdapterType, Positions, VisualAdapterType};

use crate::generate::LavinGenerator;
use crate::generator::Generator;
use crate::wiring::{self, ModelArgs};

/// The bundled tiny base (pretrained on the mini dataset's train split), used when no
/// `--llama-model-path` is given.
pub fn bundled_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/tiny-base")
}

/// Where the LLaMA weights are (see [`LlamaWeights::locate`]; the bundled base by default).
fn llama_location(args: &ModelArgs) -> anyhow::Result<LlamaWeights> {
    let root = match &args.llama_model_path {
        Some(p) => p.clone(),
        None => bundled_base().join("llama"),
    };
    let vicuna = args.use_vicuna.then_some(args.vicuna_delta.as_deref());
    Ok(LlamaWeights::locate(&root, &args.llm_model, vicuna)?)
}

fn tokenizer_path(args: &ModelArgs) -> PathBuf {
    if let Some(p) = &args.tokenizer_path {
        return p.clone();
    }
    match &args.llama_model_path {
        Some(p) => p.join("tokenizer.model"),
        None => bundled_base().join("tokenizer.model"),
    }
}

/// Resolves the model configuration: checkpoint shapes + adapter flags + tokenizer prefixes.
pub fn resolve_config(
    args: &ModelArgs,
    router_temperature: f32,
    tokenizer: &Tokenizer,
) -> anyhow::Result<(LavinConfig, LlamaWeights)> {
    let weights = llama_location(args)?;
    let llama = weights.read_config(tokenizer.n_words())?;
    let mut config = match &args.preset {
        Some(name) => LavinConfig::preset(name).with_context(|| {
            format!("--preset: unknown preset `{name}` (tiny, small, 7b-shape)")
        })?,
        // The bundled base: its own shapes (CLIP heads are not recoverable from weights there).
        None if args.llama_model_path.is_none() => lavin_train::pretrain::tiny_default(),
        None => LavinConfig::llama_7b(),
    };
    if args.llama_model_path.is_some() {
        // The vision tower's shape comes from its weights (as OpenAI's loader does it).
        let clip = lavin_model::weights::clip::open_clip(&clip_path(args)?)?;
        config.clip = lavin_model::weights::clip::infer_config(clip.as_ref())?;
    }
    let base_hidden_proj = config.adapter.hidden_proj;
    config.llama = llama;
    config.max_seq_len = args.max_seq_len;
    config.adapter = AdapterConfig {
        llama: match args.adapter_type.as_str() {
            "attn" => LlamaAdapterType::Attn,
            "block" => LlamaAdapterType::Block,
            other => bail!("--adapter-type: `{other}` is not one of attn, block"),
        },
        visual: match args.visual_adapter_type.as_str() {
            "normal" => VisualAdapterType::Normal,
            "router" => VisualAdapterType::Router,
            "router_block" => VisualAdapterType::RouterBlock,
            other => {
                bail!("--visual-adapter-type: `{other}` is not one of normal, router, router_block")
            }
        },
        dim: args.adapter_dim,
        scale: args.adapter_scale as f64,
        temperature: router_temperature as f64,
        hidden_proj: args.hidden_proj.unwrap_or(base_hidden_proj),
        dropout: 0.0,
        ..AdapterConfig::paper()
    };
    if let Some(n) = args.n_prompt.filter(|&n| n != config.n_feats()) {
        bail!(
            "--n-prompt {n}: the vision tower ({} blocks) gives {} features (one per 4 blocks)",
            config.clip.layers,
            config.n_feats()
        );
    }
    config.prefix_img = tokenizer.encode("Image: ", false, false)?;
    config.prefix_nonimg = tokenizer.encode("Image: N/A", false, false)?;
    Ok((config, weights))
}

fn clip_path(args: &ModelArgs) -> anyhow::Result<PathBuf> {
    match (&args.clip_path, &args.llama_model_path) {
        (Some(p), _) => Ok(p.clone()),
        (None, None) => Ok(bundled_base().join("clip-vision.safetensors")),
        (None, Some(_)) => bail!("--clip-path is required with --llama-model-path (OpenAI ViT-L/14 state dict or HF CLIPVisionModel safetensors; see the README)"),
    }
}

fn build<B: Backend>(
    args: &ModelArgs,
    router_temperature: f32,
    precision: Precision,
    device: B::Device,
) -> anyhow::Result<Box<dyn Generator>> {
    let tok_path = tokenizer_path(args);
    let tokenizer = Arc::new(
        Tokenizer::from_file(&tok_path)
            .with_context(|| format!("loading the tokenizer {}", tok_path.display()))?,
    );
    let (config, llama) = resolve_config(args, router_temperature, &tokenizer)?;
    let spec = LoadSpec {
        llama,
        clip: clip_path(args)?,
        adapters: args.adapter.clone(),
        // Half precision / LaVIN-lite: the LLaMA is converted while loading, block by block.
        format: BaseFormat {
            precision,
            bits: parse_bits(&args.bits)?,
        },
    };
    let model = load_lavin::<B>(&config, &spec, &device)?;
    let positions = match args.positions {
        wiring::Positions::Faithful => Positions::Faithful,
        wiring::Positions::Consistent => Positions::Consistent,
    };
    Ok(Box::new(LavinGenerator::new(
        model, tokenizer, device, positions,
    )))
}

/// Work that runs generically on whichever backend was chosen.
pub trait BackendJob {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

/// Runs `job` on the backend chosen by `backends.toml` (job `infer`) or forced by `--backend`;
/// forcing one that is not compiled in is an error naming the cargo feature to build with.
pub fn with_backend<J: BackendJob>(forced: Option<&str>, job: J) -> anyhow::Result<J::Output> {
    dispatch(selected_backend(forced)?, job)
}

/// Runs `job` on backend `kind` (an error if it is not compiled in).
fn dispatch<J: BackendJob>(kind: BackendKind, job: J) -> anyhow::Result<J::Output> {
    match kind {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => job.run::<burn::backend::NdArray>(Default::default()),
        #[cfg(feature = "flex")]
        BackendKind::Flex => job.run::<burn::backend::Flex>(Default::default()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => job.run::<burn::backend::Wgpu>(Default::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => job.run::<burn::backend::Cuda>(Default::default()),
        #[allow(unreachable_patterns)]
        other => bail!("backend {other} is not compiled into this binary"),
    }
}

/// The backend `with_backend` runs on (`backends.toml` job `infer`, or `--backend`).
pub fn selected_backend(forced: Option<&str>) -> anyhow::Result<BackendKind> {
    Ok(choose(forced, None)?.backend)
}

/// Backend and frozen-weight precision (`backends.toml` job `infer`, `--backend`,
/// `--precision`); a precision the backend cannot run is refused here.
pub fn choose(forced: Option<&str>, precision: Option<&str>) -> anyhow::Result<BackendChoice> {
    BackendPrefs::embedded()?
        .select_named("infer", forced, precision)
        .context("--backend / --precision")
}

struct LoadJob<'a>(&'a ModelArgs, f32, Precision);

impl BackendJob for LoadJob<'_> {
    type Output = Box<dyn Generator>;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Box<dyn Generator>> {
        build::<B>(self.0, self.1, self.2, device)
    }
}

/// Loads the generator on the backend chosen by `backends.toml` (job `infer`) or `--backend`.
pub fn load(args: &ModelArgs, router_temperature: f32) -> anyhow::Result<Box<dyn Generator>> {
    // `--bits` the backend cannot run (4bit on ndarray) fails before anything is read.
    // So does a `--precision` it cannot (fp16 on ndarray).
    let bits = parse_bits(&args.bits).with_context(|| format!("--bits {}", args.bits))?;
    let choice = choose(args.backend.as_deref(), args.precision.as_deref())?;
    check_backend(bits, choice.backend)?;
    dispatch(
        choice.backend,
        LoadJob(args, router_temperature, choice.precision),
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        model: ModelArgs,
    }

    fn args(extra: &[&str]) -> ModelArgs {
        let mut v = vec!["t"];
        v.extend_from_slice(extra);
        Flags::try_parse_from(v).unwrap().model
    }

    #[test]
    fn bits_default_to_16bit() {
        assert_eq!(args(&[]).bits, "16bit");
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn four_bit_on_ndarray_is_refused_before_loading() {
        // A missing checkpoint folder: the error must be about --bits, not the path.
        let a = args(&[
            "--bits",
            "4bit",
            "--backend",
            "ndarray",
            "--llama-model-path",
            "/nonexistent",
        ]);
        let e = format!("{:#}", load(&a, 10.0).err().expect("refused"));
        assert!(
            e.contains("4-bit needs a CubeCL backend (wgpu or cuda); use --bits 8bit on ndarray"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            load(&args(&["--bits", "3bit"]), 10.0).err().unwrap()
        );
        assert!(e.contains("3bit"), "{e}");
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn half_precision_on_ndarray_is_refused_before_loading() {
        let a = args(&[
            "--precision",
            "fp16",
            "--backend",
            "ndarray",
            "--llama-model-path",
            "/nonexistent",
        ]);
        let e = format!("{:#}", load(&a, 10.0).err().expect("refused"));
        assert!(e.contains("ndarray") && e.contains("fp16"), "{e}");
        let e = format!(
            "{:#}",
            load(&args(&["--precision", "fp8"]), 10.0).err().unwrap()
        );
        assert!(e.contains("--precision") && e.contains("fp8"), "{e}");
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn eight_bit_loads_the_bundled_base() {
        let a = args(&["--bits", "8bit", "--backend", "ndarray"]);
        assert!(load(&a, 10.0).is_ok());
    }
}
