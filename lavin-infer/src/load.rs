//! Building a [`LavinGenerator`] from command-line flags on the backend `backends.toml` picks.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use lavin_backends::{dispatch, BackendArgs, BackendChoice, BackendJob, Precision};
use lavin_data::Tokenizer;
use lavin_model::llama::BaseFormat;
use lavin_model::weights::{load_lavin, LlamaWeights, LoadSpec};
use lavin_model::{AdapterConfig, LavinConfig};

use crate::generator::Generator;
use crate::lavin_generator::LavinGenerator;
use crate::model_args::ModelArgs;

/// Where the LLaMA weights are (see [`LlamaWeights::locate`]; the bundled base by default).
fn llama_location(args: &ModelArgs) -> anyhow::Result<LlamaWeights> {
    let root = match &args.llama_model_path {
        Some(p) => p.clone(),
        None => lavin_model::bundled::base_dir().join(lavin_model::bundled::LLAMA_DIR),
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
        None => lavin_model::bundled::base_dir().join(lavin_model::bundled::TOKENIZER_FILE),
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
        None if args.llama_model_path.is_none() => lavin_model::bundled::config(),
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
        llama: args.adapter_type,
        visual: args.visual_adapter_type,
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
    (config.prefix_img, config.prefix_nonimg) = tokenizer.image_prefixes()?;
    Ok((config, weights))
}

fn clip_path(args: &ModelArgs) -> anyhow::Result<PathBuf> {
    match (&args.clip_path, &args.llama_model_path) {
        (Some(p), _) => Ok(p.clone()),
        (None, None) => Ok(lavin_model::bundled::base_dir().join(lavin_model::bundled::CLIP_FILE)),
        (None, Some(_)) => bail!("--clip-model-path is required with --llama-model-path (OpenAI ViT-L/14 state dict or HF CLIPVisionModel safetensors; see docs/weights.md)"),
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
            bits: args.backend.bits.quantized(),
        },
    };
    let model = load_lavin::<B>(&config, &spec, &device)?;
    Ok(Box::new(LavinGenerator::new(
        model,
        tokenizer,
        device,
        args.positions,
    )))
}

/// Backend and frozen-weight precision for inference (`backends.toml` job `infer`, `--backend`,
/// `--precision`); a precision or base width the backend cannot run is refused here.
pub fn choose(backend: &BackendArgs) -> anyhow::Result<BackendChoice> {
    backend
        .choose("infer")
        .context("--backend / --precision / --bits")
}

struct LoadJob<'a>(&'a ModelArgs, f32, Precision);

impl BackendJob for LoadJob<'_> {
    type Output = Box<dyn Generator>;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Box<dyn Generator>> {
        build::<B>(self.0, self.1, self.2, device)
    }
}

/// Loads the model `args` describe, with the given router temperature, on the backend
/// `backends.toml` (job `infer`) or `--backend` picks; errors say which command was loading.
pub fn load_generator(
    command: &'static str,
    args: &ModelArgs,
    router_temperature: f32,
) -> anyhow::Result<Box<dyn Generator>> {
    // Everything the backend cannot run (4bit or fp16 on ndarray) fails before anything is read.
    let load = || {
        let choice = choose(&args.backend)?;
        dispatch(
            choice.backend,
            LoadJob(args, router_temperature, choice.precision),
        )
    };
    load().map_err(|e| e.context(format!("{command}: loading the model")))
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

    fn parse(extra: &[&str]) -> Result<ModelArgs, clap::Error> {
        let mut v = vec!["t"];
        v.extend_from_slice(extra);
        Flags::try_parse_from(v).map(|f| f.model)
    }

    fn args(extra: &[&str]) -> ModelArgs {
        parse(extra).unwrap()
    }

    fn load(args: &ModelArgs, router_temperature: f32) -> anyhow::Result<Box<dyn Generator>> {
        load_generator("test", args, router_temperature)
    }

    #[test]
    fn bits_default_to_16bit() {
        assert_eq!(args(&[]).backend.bits, lavin_model::quant::BaseBits::Dense);
    }

    #[test]
    fn flags_list_their_values() {
        let e = parse(&["--bits", "3bit"]).err().unwrap().to_string();
        assert!(e.contains("3bit") && e.contains("16bit, 8bit, 4bit"), "{e}");
        let e = parse(&["--precision", "fp8"]).err().unwrap().to_string();
        assert!(e.contains("fp8") && e.contains("f32, fp16, bf16"), "{e}");
        let e = parse(&["--visual-adapter-type", "plain"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("normal, router, router_block"), "{e}");
        let a = args(&[
            "--visual-adapter-type",
            "router_block",
            "--adapter-type",
            "block",
        ]);
        assert_eq!(
            a.visual_adapter_type,
            lavin_model::VisualAdapterType::RouterBlock
        );
        assert_eq!(a.adapter_type, lavin_model::LlamaAdapterType::Block);
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
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn eight_bit_loads_the_bundled_base() {
        let a = args(&["--bits", "8bit", "--backend", "ndarray"]);
        assert!(load(&a, 10.0).is_ok());
    }
}
