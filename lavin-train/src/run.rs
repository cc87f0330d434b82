//! The `train` command end to end: resolve flags + config, pick the backend, load the frozen
//! base (bundled tiny base, a real LLaMA + CLIP, or random weights), tokenise the data, resume,
//! train the adapters, validate, and write `config.toml`, checkpoints, `metrics.jsonl`,
//! `loss.png`, `adapters.safetensors` and `summary.json`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::backend::Backend;

use lavin_backends::{BackendArgs, BackendKind, Precision};
use lavin_data::{InstructData, LoadOptions, MissingImage, ScienceQa, Tokenizer};
use lavin_model::llama::BaseFormat;
use lavin_model::weights::{load_lavin, LlamaWeights, LoadSpec};
use lavin_model::{AdapterConfig, Lavin, LavinConfig};

use crate::cli::TrainArgs;
use crate::config::TrainConfig;
use crate::data::{prompt_format, SqaSource};
use crate::distributed::{run_ranks, Launch, Peer};
use crate::report::{plot_loss_curve, read_metrics, Summary};
use crate::trainer::{optimizer_for, resume_from, train, Halt, TrainState};
use crate::validate::{ValSet, METHOD};

/// Output directory of the no-argument run.
pub const DEFAULT_OUTPUT_DIR: &str = "runs/default";

/// Knobs for tests and quick looks (not command-line flags).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Use only the first N training problems (0 = all).
    pub train_limit: usize,
    /// Use only the first N validation problems (0 = all).
    pub val_limit: usize,
}

/// What the run's model is made of.
pub struct ModelPlan {
    /// The model configuration.
    pub config: LavinConfig,
    /// Frozen weights to load (`None` = random base).
    pub spec: Option<LoadSpec>,
    /// Tokenizer file.
    pub tokenizer: PathBuf,
    /// One line describing the base.
    pub description: String,
}

/// Resolve flags + TOML into the run's config; the no-argument run writes to `runs/default`.
pub fn resolve_config(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut cfg = args.resolve()?;
    let file_sets_output = args
        .config
        .as_ref()
        .and_then(|p| TrainArgs::from_toml_file(p).ok())
        .is_some_and(|f| f.output_dir.is_some());
    let file_sets_nnodes = args
        .config
        .as_ref()
        .and_then(|p| TrainArgs::from_toml_file(p).ok())
        .is_some_and(|f| f.nnodes.is_some());
    if args.nnodes.is_none() && !file_sets_nnodes {
        // torchrun's variable when no flag or file says otherwise.
        if let Ok(v) = std::env::var("WORLD_SIZE") {
            cfg.nnodes = v.trim().parse().ok().filter(|&n| n > 0).with_context(|| {
                format!("environment variable WORLD_SIZE={v:?} is not a node count")
            })?;
        }
    }
    if args.output_dir.is_none()
        && !file_sets_output
        && cfg.llama_model_path.is_none()
        && cfg.output_dir == TrainConfig::tiny_default().output_dir
    {
        cfg.output_dir = PathBuf::from(DEFAULT_OUTPUT_DIR);
    }
    Ok(cfg)
}

fn adapter_config(cfg: &TrainConfig, dropout: f64) -> anyhow::Result<AdapterConfig> {
    Ok(AdapterConfig {
        llama: cfg.adapter_type,
        visual: cfg.visual_adapter_type,
        dim: cfg.adapter_dim,
        scale: cfg.adapter_scale,
        temperature: cfg.temperature,
        hidden_proj: cfg.hidden_proj,
        dropout,
        ..AdapterConfig::paper()
    })
}

/// How the frozen LLaMA is stored: `--precision` (f32 when unset) and `--bits`.
pub fn base_format(cfg: &TrainConfig) -> BaseFormat {
    BaseFormat {
        precision: cfg.precision.unwrap_or_default(),
        bits: cfg.bits.quantized(),
    }
}

/// The model of the run: a real LLaMA (`--llama-model-path`, Meta or HF layout, `<path>/<llm_model>`
/// if that folder exists) + CLIP (`--clip-model-path`), or the bundled tiny base, or random
/// weights at a preset's shapes.
pub fn plan_model(cfg: &TrainConfig) -> anyhow::Result<ModelPlan> {
    if let Some(root) = &cfg.llama_model_path {
        let weights = LlamaWeights::locate(
            root,
            &cfg.llm_model,
            cfg.use_vicuna.then_some(cfg.vicuna_delta.as_deref()),
        )
        .context("llama_model_path")?;
        let dir = weights.dir().to_path_buf();
        let tokenizer = [root.join("tokenizer.model"), dir.join("tokenizer.model")]
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "llama_model_path: no tokenizer.model in {} or {}",
                    root.display(),
                    dir.display()
                )
            })?;
        let tok = Tokenizer::from_file(&tokenizer)
            .with_context(|| format!("loading the tokenizer {}", tokenizer.display()))?;
        let llama = weights.read_config(tok.n_words())?;
        let clip = cfg.clip_model_path.clone().context(
            "clip_model_path: required with --llama-model-path (OpenAI ViT-L/14 state dict .pth or HF CLIPVisionModel safetensors)",
        )?;
        let mut config = LavinConfig::llama(&cfg.llm_model).unwrap_or_else(LavinConfig::llama_7b);
        config.llama = llama;
        config.adapter = adapter_config(cfg, AdapterConfig::paper().dropout)?;
        config.max_seq_len = cfg.max_seq_len;
        (config.prefix_img, config.prefix_nonimg) = tok.image_prefixes()?;
        return Ok(ModelPlan {
            description: format!("LLaMA {} + CLIP {}", dir.display(), clip.display()),
            config,
            spec: Some(LoadSpec {
                llama: weights,
                clip,
                adapters: None,
                format: base_format(cfg),
            }),
            tokenizer,
        });
    }
    let base = lavin_model::bundled::base_dir();
    let tiny_tok =
        lavin_model::bundled::workspace_root().join("tests/data/parity/tiny-a/tokenizer.model");
    match cfg.preset.as_str() {
        "tiny" => {
            let have_base = base
                .join(lavin_model::bundled::LLAMA_DIR)
                .join("config.json")
                .is_file()
                && base.join(lavin_model::bundled::CLIP_FILE).is_file()
                && base.join(lavin_model::bundled::TOKENIZER_FILE).is_file();
            let mut config = lavin_model::bundled::config();
            let dropout = config.adapter.dropout;
            config.adapter = adapter_config(cfg, dropout)?;
            config.max_seq_len = cfg.max_seq_len;
            if have_base {
                Ok(ModelPlan {
                    description: format!("bundled pretrained tiny base {}", base.display()),
                    spec: Some(LoadSpec {
                        format: base_format(cfg),
                        ..lavin_model::bundled::spec(&base)
                    }),
                    tokenizer: base.join(lavin_model::bundled::TOKENIZER_FILE),
                    config,
                })
            } else {
                let mut config = LavinConfig::tiny();
                config.adapter = adapter_config(cfg, 0.0)?;
                config.max_seq_len = cfg.max_seq_len;
                let tok = Tokenizer::from_file(&tiny_tok)
                    .with_context(|| format!("loading the tokenizer {}", tiny_tok.display()))?;
                (config.prefix_img, config.prefix_nonimg) = tok.image_prefixes()?;
                Ok(ModelPlan {
                    description: format!(
                        "RANDOM tiny base (no pretrained base in {}): adapters have little to adapt, \
                         expect weak accuracy",
                        base.display()
                    ),
                    spec: None,
                    tokenizer: tiny_tok,
                    config,
                })
            }
        }
        "small" => {
            let mut config = LavinConfig::small();
            config.adapter = adapter_config(cfg, AdapterConfig::paper().dropout)?;
            config.max_seq_len = cfg.max_seq_len;
            let tok = Tokenizer::from_file(&tiny_tok)
                .with_context(|| format!("loading the tokenizer {}", tiny_tok.display()))?;
            (config.prefix_img, config.prefix_nonimg) = tok.image_prefixes()?;
            Ok(ModelPlan {
                description: "RANDOM base at `small` shapes (no pretrained weights exist for it)"
                    .into(),
                spec: None,
                tokenizer: tiny_tok,
                config,
            })
        }
        other => {
            bail!("preset: `{other}` needs --llama-model-path (built-in presets: tiny, small)")
        }
    }
}

/// Run the `train` command: resolve, pick the backend (`backends.toml` job `train`, or
/// `--backend`), train, validate, report.
pub fn run(args: &TrainArgs, opts: &RunOptions) -> anyhow::Result<Summary> {
    if let Some(line) = args.ignored_flags().line() {
        eprintln!("lavin-train: {line}");
    }
    let mut cfg = resolve_config(args)?;
    // Before any work: e.g. 4-bit on ndarray is refused here, not after loading the data.
    let choice = BackendArgs {
        backend: cfg.backend,
        precision: cfg.precision,
        bits: cfg.bits,
        backends_file: cfg.backends_file.clone(),
    }
    .choose("train")?;
    // The precision actually used (a backends.toml default included) is the run's config.
    cfg.precision = Some(choice.precision);
    eprintln!("lavin-train: backend {choice}");
    let launch = args.launch.resolve(cfg.nnodes)?;
    crate::interrupt::install();
    let ids = lavin_backends::parse_devices(&cfg.devices)
        .map_err(|e| anyhow::anyhow!("--devices: {e}"))?;
    let cpu = |backend: BackendKind| -> anyhow::Result<()> {
        if ids != [0] {
            bail!(
                "--devices {}: backend {backend} has one device (0); several devices per node \
                 run on cuda (or wgpu with several GPUs); CPU nodes train together with --nnodes",
                cfg.devices
            );
        }
        Ok(())
    };
    match choice.backend {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => {
            cpu(choice.backend)?;
            run_on::<burn::backend::NdArray<f32>>(&cfg, opts, &launch, &[Default::default()])
        }
        #[cfg(feature = "flex")]
        BackendKind::Flex => {
            cpu(choice.backend)?;
            run_on::<burn::backend::Flex>(&cfg, opts, &launch, &[Default::default()])
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            use burn::backend::wgpu::WgpuDevice;
            // One device: the best adapter wgpu finds; a list: discrete GPUs by index.
            let devices: Vec<WgpuDevice> = if ids == [0] {
                vec![WgpuDevice::default()]
            } else {
                ids.iter().map(|&i| WgpuDevice::DiscreteGpu(i)).collect()
            };
            run_on::<burn::backend::Wgpu>(&cfg, opts, &launch, &devices)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let devices: Vec<_> = ids
                .iter()
                .map(|&index| burn::backend::cuda::CudaDevice { index })
                .collect();
            run_on::<burn::backend::Cuda>(&cfg, opts, &launch, &devices)
        }
        #[allow(unreachable_patterns)]
        other => bail!(
            "backend {other} is not compiled into this binary (build with --features {})",
            other.cargo_feature()
        ),
    }
}

/// The run's training set and, for ScienceQA, its val split: ScienceQA items in the prompt
/// format, or with `do_pretrain` the instruction data (`<data_root>/all_data.json`, split
/// `all`, as the original; no validation).
fn training_data(
    cfg: &TrainConfig,
    opts: &RunOptions,
    tok: &Tokenizer,
    config: &LavinConfig,
) -> anyhow::Result<(SqaSource, Option<ValSet>)> {
    let data_root = cfg
        .data_root
        .clone()
        .unwrap_or_else(lavin_model::bundled::data_root);
    let limit = |n: usize| if n > 0 { n } else { usize::MAX };
    let t_load = Instant::now();
    if cfg.do_pretrain {
        let data = InstructData::load(&data_root, "all", MissingImage::Error)
            .with_context(|| format!("do_pretrain: instruction data in {}", data_root.display()))?;
        let triples: Vec<_> = data
            .items
            .iter()
            .take(limit(opts.train_limit))
            .map(|it| (it.instruction.clone(), it.answer.clone(), it.image.clone()))
            .collect();
        let train_set = SqaSource::build(tok, config, &triples, cfg.max_seq_len)
            .map_err(|e| anyhow::anyhow!("instruction data {}: {e}", data_root.display()))?;
        eprintln!(
            "lavin-train: {} instruction examples ({} with an image); images decoded in {:.1}s",
            train_set.rows.len(),
            train_set.n_with_image(),
            t_load.elapsed().as_secs_f64()
        );
        return Ok((train_set, None));
    }
    let fmt = prompt_format(&cfg.prompt_format).map_err(anyhow::Error::msg)?;
    let sqa = ScienceQa::load(
        &data_root,
        &LoadOptions {
            captions: cfg.caption_file.clone(),
        },
    )
    .with_context(|| format!("data_root {}", data_root.display()))?;
    let (mut train_items, _) = sqa.items("train", fmt, cfg.use_caption, MissingImage::Error)?;
    let (mut val_items, _) = sqa.items("val", fmt, cfg.use_caption, MissingImage::Error)?;
    train_items.truncate(limit(opts.train_limit));
    val_items.truncate(limit(opts.val_limit));
    let train_set = SqaSource::from_sqa(tok, config, &train_items, cfg.max_seq_len)
        .map_err(|e| anyhow::anyhow!("train split of {}: {e}", data_root.display()))?;
    let val_set = ValSet::build(tok, config, &sqa, &val_items, cfg.max_seq_len)
        .map_err(|e| anyhow::anyhow!("val split of {}: {e}", data_root.display()))?;
    eprintln!(
        "lavin-train: {} train examples ({} with an image), {} val problems ({} option rows); \
         images decoded in {:.1}s",
        train_set.rows.len(),
        train_set.n_with_image(),
        val_set.problems.len(),
        val_set.source.rows.len(),
        t_load.elapsed().as_secs_f64()
    );
    Ok((train_set, Some(val_set)))
}

fn is_original_checkpoint(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "pth" || e == "pt")
}

/// The whole run on backend `B` (autodiff on top; with `gradient_checkpointing` the trainer
/// recomputes each ViT and LLaMA block in backward, see `lavin_model::recompute`). The model is
/// loaded on `devices[0]`; with several devices or nodes each device trains a replica as one
/// rank of the data-parallel group ([`crate::distributed`]), and rank 0 validates and reports.
pub fn run_on<B: Backend>(
    cfg: &TrainConfig,
    opts: &RunOptions,
    launch: &Launch,
    devices: &[B::Device],
) -> anyhow::Result<Summary> {
    if cfg.gradient_checkpointing {
        eprintln!(
            "lavin-train: gradient checkpointing (ViT and LLaMA blocks recomputed in backward)"
        );
    }
    let device = &devices[0];
    type AB<B> = Autodiff<B>; // gradient checkpointing is block recomputation, not a strategy
                              // ---- everything that can fail on bad input, before training ----
    let plan = plan_model(cfg)?;
    let format = base_format(cfg);
    if let Some(bits) = format.bits {
        lavin_model::quant::probe::<AB<B>>(bits, device)
            .with_context(|| format!("--bits {bits}"))?;
    }
    if cfg.n_prompt != plan.config.n_feats() {
        bail!(
            "n_prompt {}: the vision tower ({} blocks) gives {} feature tokens (one per 4 blocks)",
            cfg.n_prompt,
            plan.config.clip.layers,
            plan.config.n_feats()
        );
    }
    let tok = Tokenizer::from_file(&plan.tokenizer)
        .with_context(|| format!("loading the tokenizer {}", plan.tokenizer.display()))?;
    let (train_set, val_set) = training_data(cfg, opts, &tok, &plan.config)?;

    B::seed(device, cfg.seed);
    eprintln!("lavin-train: model: {}", plan.description);
    let model: Lavin<AB<B>> = match &plan.spec {
        // The loader converts each block right after reading it.
        Some(spec) => load_lavin::<AB<B>>(&plan.config, spec, device)?,
        None => plan.config.init::<AB<B>>(device).convert_base(format)?,
    };
    if let Some(bits) = format.bits {
        eprintln!("lavin-train: LLaMA block linears quantized to {bits} (LaVIN-lite)");
    }
    if format.precision != Precision::F32 {
        eprintln!(
            "lavin-train: frozen LLaMA weights in {} (adapters, norms and optimizer state f32)",
            format.precision
        );
    }
    std::fs::create_dir_all(&cfg.output_dir)
        .with_context(|| format!("output_dir {}", cfg.output_dir.display()))?;
    let world = cfg.world_size();
    if launch.node_rank == 0 {
        let cfg_path = cfg.save(&cfg.output_dir)?;
        eprintln!(
            "lavin-train: config saved to {}; lr {:.3e}, {} epochs, batch {} x accum {} x {} ranks",
            cfg_path.display(),
            cfg.resolved_lr(),
            cfg.epochs,
            cfg.batch_size,
            cfg.accum_iter,
            world,
        );
    }
    if world > 1 {
        eprintln!(
            "lavin-train: node {} of {}, {} device(s) here; rank 0 at {}:{}",
            launch.node_rank,
            launch.nnodes,
            devices.len(),
            launch.master_addr,
            launch.master_port
        );
    }

    // ---- training (one rank per device) + validation (rank 0), timed ----
    let t0 = Instant::now();
    // Parameters initialise lazily, each clone on its own: draw the adapters' initial values
    // now, from the seeded RNG, so every replica (and every node) starts from the same ones.
    let _ = crate::params::collect_params(&model, &crate::params::lavin_trainable_name);
    // Each device's replica, made here (the frozen base is read once); a rank takes its own.
    let replicas: Vec<Mutex<Option<Lavin<AB<B>>>>> = devices
        .iter()
        .enumerate()
        .map(|(k, d)| {
            Mutex::new(Some(if k == 0 {
                model.clone()
            } else {
                model.clone().fork(d)
            }))
        })
        .collect();
    drop(model);
    let train_set = Arc::new(train_set);
    let val_set = val_set.map(Arc::new);
    let rank_run = |k: usize, peer: Option<Peer>, device: &B::Device| -> anyhow::Result<_> {
        let model = replicas[k]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("one rank per replica");
        let mut optim = optimizer_for::<B>(cfg);
        let (model, state, data_seed) = match &cfg.resume {
            Some(p) => {
                let (m, st, seed) = resume_from::<AB<B>>(p, cfg, model, &mut optim, device)
                    .with_context(|| format!("resume {}", p.display()))?;
                let seed = if is_original_checkpoint(p) {
                    cfg.seed
                } else {
                    seed
                };
                if peer.as_ref().is_none_or(|p| p.rank == 0) {
                    eprintln!(
                        "lavin-train: resuming from {} at epoch {}, iteration {}, step {}",
                        p.display(),
                        st.epoch,
                        st.iteration,
                        st.global_step
                    );
                }
                (m, st, seed)
            }
            None => (model, TrainState::default(), cfg.seed),
        };
        Ok(train(
            cfg,
            model,
            &mut optim,
            train_set.clone(),
            state,
            data_seed,
            device,
            peer,
            val_set.clone(),
        )?)
    };
    let (inner, outcome) = run_ranks::<B, _, anyhow::Error, _>(launch, devices, rank_run)?;
    if outcome.rank != 0 || outcome.halt == Some(Halt::Interrupted) {
        let (initial_loss, final_loss) = loss_ends(
            &outcome
                .losses
                .iter()
                .map(|l| l.1)
                .filter(|l| l.is_finite())
                .collect::<Vec<_>>(),
        );
        eprintln!(
            "lavin-train: rank {} {} after step {}{}",
            outcome.rank,
            if outcome.halt == Some(Halt::Interrupted) {
                "interrupted"
            } else {
                "done"
            },
            outcome.state.global_step,
            if outcome.rank == 0 {
                "; validation skipped"
            } else {
                "; rank 0 validates and reports"
            }
        );
        return Ok(Summary {
            initial_loss,
            final_loss,
            val_accuracy: None,
            chance_accuracy: None,
            val_method: None,
            trainable_params: outcome.trainable_params,
            steps: outcome.state.global_step,
            skipped: outcome.state.skipped,
            wall_seconds: t0.elapsed().as_secs_f64(),
            samples_per_second: outcome.samples as f64 / outcome.train_seconds.max(1e-9),
        });
    }
    let val = outcome.val;
    let adapters = cfg.output_dir.join("adapters.safetensors");
    // The settings that shaped the adapters go into the file, so inference needs no flags.
    let meta = lavin_model::weights::AdapterMeta::from_config(inner.config()).with_base(
        &cfg.llm_model,
        cfg.llama_model_path
            .is_none()
            .then_some(cfg.preset.as_str()),
        format.precision,
        cfg.bits,
    );
    lavin_model::weights::save_adapters_with_meta(&inner, &adapters, &meta)?;
    let metrics = read_metrics(&cfg.output_dir.join("metrics.jsonl"))?;
    let points: Vec<(f64, f64)> = metrics.iter().map(|m| (m.step as f64, m.loss)).collect();
    let finite: Vec<f64> = metrics
        .iter()
        .map(|m| m.loss)
        .filter(|l| l.is_finite())
        .collect();
    let (initial_loss, final_loss) = loss_ends(&finite);
    let plot = cfg.output_dir.join("loss.png");
    let plot_ranges = plot_loss_curve(&plot, &points).ok();
    let wall = t0.elapsed().as_secs_f64();
    let summary = Summary {
        initial_loss,
        final_loss,
        val_accuracy: val.as_ref().map(|v| v.accuracy),
        chance_accuracy: val.as_ref().map(|v| v.chance),
        val_method: val.as_ref().map(|_| METHOD.into()),
        trainable_params: outcome.trainable_params,
        steps: outcome.state.global_step,
        skipped: outcome.state.skipped,
        wall_seconds: wall,
        samples_per_second: outcome.samples as f64 / outcome.train_seconds.max(1e-9),
    };
    let sum_path = summary.write(&cfg.output_dir)?;
    println!("== lavin-train summary ({}) ==", cfg.output_dir.display());
    println!("model              {}", plan.description);
    println!("trainable params   {}", summary.trainable_params);
    println!(
        "steps              {} ({} skipped)",
        summary.steps, summary.skipped
    );
    println!(
        "loss               {:.4} -> {:.4} (x{:.3})",
        initial_loss,
        final_loss,
        final_loss / initial_loss
    );
    match &val {
        Some(val) => println!(
            "val accuracy       {:.1}% vs chance {:.1}% ({} problems, likelihood of \"The answer is X.\")",
            100.0 * val.accuracy,
            100.0 * val.chance,
            val.n,
        ),
        None => println!("val accuracy       n/a (instruction data has no val split)"),
    }
    println!(
        "wall               {:.1}s (training + validation), {:.1} samples/s",
        wall, summary.samples_per_second
    );
    if let Some(((x0, x1), (y0, y1))) = plot_ranges {
        println!(
            "loss curve         {} (steps {x0:.0}..{x1:.0}, loss {y0:.3}..{y1:.3})",
            plot.display()
        );
    }
    println!("adapters           {}", adapters.display());
    if let Some(ck) = &outcome.last_checkpoint {
        println!("checkpoint         {}", ck.display());
    }
    println!("summary            {}", sum_path.display());
    Ok(summary)
}

/// Mean loss over the first and over the last window of steps, the window a tenth of the run
/// (1 to 50 steps). Single batches are noisy: in the default run one batch's loss ranges over
/// 0.06..0.18 around a mean of 0.13, so the first step alone says little about the start.
fn loss_ends(losses: &[f64]) -> (f64, f64) {
    if losses.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let w = (losses.len() / 10).clamp(1, 50);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    (mean(&losses[..w]), mean(&losses[losses.len() - w..]))
}

#[cfg(test)]
mod loss_ends_tests {
    use super::loss_ends;

    #[test]
    fn windows_are_a_tenth_of_the_run_within_1_to_50_steps() {
        assert!(loss_ends(&[]).0.is_nan());
        assert_eq!(loss_ends(&[4.0]), (4.0, 4.0));
        let run: Vec<f64> = (0..30).map(|i| i as f64).collect(); // window 3
        assert_eq!(loss_ends(&run), (1.0, 28.0));
        let long: Vec<f64> = (0..1000).map(|i| i as f64).collect(); // window 50, not 100
        assert_eq!(loss_ends(&long), (24.5, 974.5));
    }
}
