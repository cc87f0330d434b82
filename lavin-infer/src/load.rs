//! Building a [`LavinGenerator`] from command-line flags on the backend `backends.toml` picks.
//!
//! The adapters' settings come from the adapter file where it stores them
//! ([`lavin_model::weights::AdapterMeta`]): a flag left out takes the file's value, a flag that
//! says otherwise is an error; files without them keep the flags' defaults.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use lavin_backends::{dispatch, BackendArgs, BackendChoice, BackendJob, Precision};
use lavin_data::Tokenizer;
use lavin_model::llama::BaseFormat;
use lavin_model::weights::{load_lavin, read_adapter_meta, AdapterMeta, LlamaWeights, LoadSpec};
use lavin_model::{AdapterConfig, LavinConfig, LlamaAdapterType, VisualAdapterType};

use crate::generator::Generator;
use crate::lavin_generator::LavinGenerator;
use crate::model_args::ModelArgs;

/// `--llm-model` without a flag or a value in the adapter file.
pub const DEFAULT_LLM_MODEL: &str = "7B";
/// `--max-seq-len` without a flag or a value in the adapter file.
pub const DEFAULT_MAX_SEQ_LEN: usize = 512;

/// Where the router temperature comes from when `--temperature` is not given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RouterTemperature {
    /// The original script's flag (10 for `eval.py`): used when the adapter file stores no
    /// temperature; a file's value is used otherwise, and an explicit `--temperature` must
    /// agree with it.
    Script(f32),
    /// The original sets this value whatever the adapters were trained with (the demo for
    /// chat and serve, `eval_mme.py`'s script for MME): kept unless `--temperature` says
    /// otherwise, and said once on stderr when it differs from the adapters' own.
    Demo(f32),
}

/// The model settings resolved from the flags and the adapter file.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub llm_model: String,
    pub max_seq_len: usize,
    pub adapter_type: LlamaAdapterType,
    pub visual_adapter_type: VisualAdapterType,
    pub adapter_dim: usize,
    /// Up-projection groups; `None`: the paper's.
    pub adapter_groups: Option<usize>,
    pub adapter_scale: f32,
    pub router_temperature: f32,
    /// `None`: the base's default.
    pub hidden_proj: Option<usize>,
    /// `None`: the vision tower's.
    pub n_prompt: Option<usize>,
    /// What the user should know (a demo temperature over the trained one), one line each.
    pub notes: Vec<String>,
}

/// One setting: the flag, else the file's value, else `default`; a flag that contradicts the
/// file is an error naming both values and the file.
fn pick<T: PartialEq>(
    flag: Option<T>,
    file: Option<T>,
    default: T,
    (name, key, path): (&str, &str, Option<&Path>),
    show: impl Fn(&T) -> String,
) -> anyhow::Result<T> {
    match (flag, file) {
        (Some(f), Some(v)) if f != v => bail!(
            "--{name} {} contradicts {} ({key} = {}); leave the flag out to use the adapters' \
             own value",
            show(&f),
            path.map(|p| p.display().to_string()).unwrap_or_default(),
            show(&v)
        ),
        (Some(f), _) => Ok(f),
        (None, Some(v)) => Ok(v),
        (None, None) => Ok(default),
    }
}

fn value_name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

impl Settings {
    /// Resolves `args` against the settings stored with the adapters (`meta`, read from
    /// `path`); without them, the flags and their defaults as before.
    pub fn resolve(
        args: &ModelArgs,
        router: RouterTemperature,
        stored: Option<(&Path, &AdapterMeta)>,
    ) -> anyhow::Result<Self> {
        let path = stored.map(|(p, _)| p);
        let meta = stored.map(|(_, m)| m.clone()).unwrap_or_default();
        let at = |name, key| (name, key, path);
        let text = |v: &String| v.clone();
        let num = |v: &usize| v.to_string();
        let float = |v: &f32| format!("{v:?}");
        // Floats compare at the flags' precision (f32).
        let narrow = |v: Option<f64>| v.map(|v| v as f32);
        let mut notes = Vec::new();
        let router_temperature = match router {
            RouterTemperature::Script(default) => pick(
                args.temperature,
                narrow(meta.temperature),
                default,
                at("temperature", "temperature"),
                float,
            )?,
            RouterTemperature::Demo(demo) => {
                let t = args.temperature.unwrap_or(demo);
                if let Some(trained) = narrow(meta.temperature).filter(|&v| v != t) {
                    let from = if args.temperature.is_some() {
                        "--temperature"
                    } else {
                        "the demo"
                    };
                    notes.push(format!(
                        "router temperature {t:?} from {from}, adapters trained with {trained:?}"
                    ));
                }
                t
            }
        };
        Ok(Self {
            llm_model: pick(
                args.llm_model.clone(),
                meta.llm_model.clone(),
                DEFAULT_LLM_MODEL.to_string(),
                at("llm-model", "llm_model"),
                text,
            )?,
            // The context window shapes no weight: a flag may widen it past the training one.
            max_seq_len: args
                .max_seq_len
                .or(meta.max_seq_len)
                .unwrap_or(DEFAULT_MAX_SEQ_LEN),
            adapter_type: pick(
                args.adapter_type,
                meta.adapter_type,
                LlamaAdapterType::Attn,
                at("adapter-type", "adapter_type"),
                value_name,
            )?,
            visual_adapter_type: pick(
                args.visual_adapter_type,
                meta.visual_adapter_type,
                VisualAdapterType::Router,
                at("visual-adapter-type", "visual_adapter_type"),
                value_name,
            )?,
            adapter_dim: pick(
                args.adapter_dim,
                meta.adapter_dim,
                8,
                at("adapter-dim", "adapter_dim"),
                num,
            )?,
            adapter_groups: meta.adapter_groups,
            adapter_scale: pick(
                args.adapter_scale,
                narrow(meta.adapter_scale),
                1.0,
                at("adapter-scale", "adapter_scale"),
                float,
            )?,
            router_temperature,
            hidden_proj: pick(
                args.hidden_proj.map(Some),
                meta.hidden_proj.map(Some),
                None,
                at("hidden-proj", "hidden_proj"),
                |v| v.map(|n| n.to_string()).unwrap_or_default(),
            )?,
            n_prompt: pick(
                args.n_prompt.map(Some),
                meta.n_prompt.map(Some),
                None,
                at("n-prompt", "n_prompt"),
                |v| v.map(|n| n.to_string()).unwrap_or_default(),
            )?,
            notes,
        })
    }
}

/// The settings stored with `args.adapter`, if it has any.
fn stored_settings(args: &ModelArgs) -> anyhow::Result<Option<(PathBuf, AdapterMeta)>> {
    let Some(path) = &args.adapter else {
        return Ok(None);
    };
    let meta = read_adapter_meta(path)
        .with_context(|| format!("--adapter {}: reading its settings", path.display()))?;
    Ok(meta.map(|m| (path.clone(), m)))
}

/// Where the LLaMA weights are (see [`LlamaWeights::locate`]; the bundled base by default).
fn llama_location(args: &ModelArgs, llm_model: &str) -> anyhow::Result<LlamaWeights> {
    let root = match &args.llama_model_path {
        Some(p) => p.clone(),
        None => lavin_model::bundled::base_dir().join(lavin_model::bundled::LLAMA_DIR),
    };
    let vicuna = args.use_vicuna.then_some(args.vicuna_delta.as_deref());
    Ok(LlamaWeights::locate(&root, llm_model, vicuna)?)
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

/// A resolved model: its configuration, where its LLaMA is, and what to tell the user.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: LavinConfig,
    pub weights: LlamaWeights,
    /// One line each, printed once when the model is loaded.
    pub notes: Vec<String>,
}

/// Resolves the model configuration: checkpoint shapes + adapter settings (the adapter file's,
/// see [`Settings::resolve`]) + tokenizer prefixes.
pub fn resolve_config(
    args: &ModelArgs,
    router: RouterTemperature,
    tokenizer: &Tokenizer,
) -> anyhow::Result<Resolved> {
    let stored = stored_settings(args)?;
    let settings = Settings::resolve(args, router, stored.as_ref().map(|(p, m)| (p.as_path(), m)))?;
    let weights = llama_location(args, &settings.llm_model)?;
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
    config.max_seq_len = settings.max_seq_len;
    let paper = AdapterConfig::paper();
    config.adapter = AdapterConfig {
        llama: settings.adapter_type,
        visual: settings.visual_adapter_type,
        dim: settings.adapter_dim,
        groups: settings.adapter_groups.unwrap_or(paper.groups),
        scale: settings.adapter_scale as f64,
        temperature: settings.router_temperature as f64,
        hidden_proj: settings.hidden_proj.unwrap_or(base_hidden_proj),
        dropout: 0.0,
        ..paper
    };
    if let Some(n) = settings.n_prompt.filter(|&n| n != config.n_feats()) {
        let from = match (&stored, args.n_prompt) {
            (Some((p, _)), None) => format!("{} (n_prompt = {n})", p.display()),
            _ => format!("--n-prompt {n}"),
        };
        bail!(
            "{from}: the vision tower ({} blocks) gives {} features (one per 4 blocks)",
            config.clip.layers,
            config.n_feats()
        );
    }
    (config.prefix_img, config.prefix_nonimg) = tokenizer.image_prefixes()?;
    Ok(Resolved {
        config,
        weights,
        notes: settings.notes,
    })
}

fn clip_path(args: &ModelArgs) -> anyhow::Result<PathBuf> {
    match (&args.clip_path, &args.llama_model_path) {
        (Some(p), _) => Ok(p.clone()),
        (None, None) => Ok(lavin_model::bundled::base_dir().join(lavin_model::bundled::CLIP_FILE)),
        (None, Some(_)) => bail!("--clip-model-path is required with --llama-model-path (OpenAI ViT-L/14 state dict or HF CLIPVisionModel safetensors; see docs/weights.md)"),
    }
}

fn build<B: Backend>(
    command: &str,
    args: &ModelArgs,
    router: RouterTemperature,
    precision: Precision,
    device: B::Device,
) -> anyhow::Result<Box<dyn Generator>> {
    let tok_path = tokenizer_path(args);
    let tokenizer = Arc::new(
        Tokenizer::from_file(&tok_path)
            .with_context(|| format!("loading the tokenizer {}", tok_path.display()))?,
    );
    let Resolved {
        config,
        weights,
        notes,
    } = resolve_config(args, router, &tokenizer)?;
    for note in notes {
        eprintln!("{command}: {note}");
    }
    let spec = LoadSpec {
        llama: weights,
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

struct LoadJob<'a>(&'static str, &'a ModelArgs, RouterTemperature, Precision);

impl BackendJob for LoadJob<'_> {
    type Output = Box<dyn Generator>;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Box<dyn Generator>> {
        build::<B>(self.0, self.1, self.2, self.3, device)
    }
}

/// Loads the model `args` describe on the backend `backends.toml` (job `infer`) or `--backend`
/// picks, at the demo's router temperature `demo_router_temperature` unless `--temperature`
/// says otherwise ([`RouterTemperature::Demo`]); errors say which command was loading.
pub fn load_generator(
    command: &'static str,
    args: &ModelArgs,
    demo_router_temperature: f32,
) -> anyhow::Result<Box<dyn Generator>> {
    load_generator_with(
        command,
        args,
        RouterTemperature::Demo(demo_router_temperature),
    )
}

/// [`load_generator`] with the router temperature's source spelled out.
pub fn load_generator_with(
    command: &'static str,
    args: &ModelArgs,
    router: RouterTemperature,
) -> anyhow::Result<Box<dyn Generator>> {
    // Everything the backend cannot run (4bit or fp16 on ndarray) fails before anything is read.
    let load = || {
        let choice = choose(&args.backend)?;
        dispatch(
            choice.backend,
            LoadJob(command, args, router, choice.precision),
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
            Some(lavin_model::VisualAdapterType::RouterBlock)
        );
        assert_eq!(a.adapter_type, Some(lavin_model::LlamaAdapterType::Block));
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
