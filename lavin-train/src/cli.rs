//! Command line (clap), mirroring the original `train.py` flags (kebab-case), plus
//! `--config run.toml`, backend selection and checkpoint cadence.
//!
//! Every flag also accepts its snake_case spelling, the original's (`--batch_size`,
//! `--llama_model_path`, ...), so the original scripts' argument lists run unchanged; the
//! original's flags that mean nothing here ([`OriginalOnlyFlags`]: `--num_workers`,
//! `--dist_url`, `--data_path`, ...) are accepted and reported once as ignored
//! ([`IgnoredFlags`]).
//!
//! Resolution ([`TrainArgs::resolve`]): start from [`TrainConfig::paper_default`] when a real
//! model is given (`--llama-model-path`, on the command line or in the file), else from
//! [`TrainConfig::tiny_default`]; apply the TOML file (keys = the snake_case flag names, e.g.
//! `batch_size = 4`); apply the flags given on the command line; validate.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use lavin_backends::{BackendArgs, BackendKind, Precision};
use lavin_model::quant::BaseBits;
use lavin_model::{LlamaAdapterType, VisualAdapterType};

use crate::config::{ConfigError, TrainConfig};
use crate::distributed::Launch;

/// `lavin-train`: train LaVIN's adapters (default command) or run a benchmark.
#[derive(Debug, Parser)]
#[command(
    name = "lavin-train",
    version,
    about = "Train LaVIN's Mixture-of-Modality adapters (frozen LLaMA + CLIP)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Sub-command; none = train.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Training flags.
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Time training steps on random weights at a preset's shapes.
    Bench(BenchArgs),
}

/// `lavin-train bench` flags.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// `tiny`, `small`, `7b-shape` or `7b-slice` (the 7B shapes with `--layers` LLaMA blocks
    /// and `--vit-layers` ViT-L/14 blocks: device memory per block, see docs/performance.md).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// LLaMA blocks (default: the preset's; `7b-slice`: 1). 0 leaves the embeddings, ViT,
    /// projection and output head: the part that does not grow with the blocks.
    #[arg(long)]
    pub layers: Option<usize>,
    /// ViT blocks, a multiple of 4: one image feature per 4 blocks (default: the preset's;
    /// `7b-slice`: 24, the whole ViT-L/14).
    #[arg(long)]
    pub vit_layers: Option<usize>,
    /// Vocabulary size (default: the preset's). A device that binds at most 128 MiB per
    /// buffer (lavapipe) cannot hold 7B's 32000 x 4096 embedding table: measure at two cut
    /// vocabularies and extrapolate (docs/performance.md).
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Batch size (default: the preset's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Sequence length (default: the preset's).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Warm-up steps (not timed).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Backend, precision and width of the frozen base.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Keep only each ViT and LLaMA block's input and recompute the block in backward (as
    /// `torch.utils.checkpoint`; what training's `--gradient-checkpointing` does).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Burn's op-level recomputation (`Autodiff<_, BalancedCheckpointing>`: element-wise ops
    /// are recomputed, matmul inputs kept), alone or with `--gradient-checkpointing`.
    #[arg(long)]
    pub checkpoint_ops: bool,
    /// Run rotary, softmax, norms and gates as Burn's composed ops, not the fused kernels
    /// (flex) or lean autodiff ops (other backends): the A/B baseline for speed and memory.
    #[arg(long)]
    pub composed_ops: bool,
}

/// Training flags. Every field is optional: unset = file value or default. Also the schema of
/// the `--config` TOML file (same names in snake_case; `config` itself excluded).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainArgs {
    /// TOML file with any of these settings (snake_case keys); flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Built-in model preset when no --llama-model-path is given (tiny, small).
    #[arg(long)]
    pub preset: Option<String>,
    /// LLaMA weights directory (enables the paper's defaults).
    #[arg(long, alias = "llama_model_path", value_name = "DIR")]
    pub llama_model_path: Option<PathBuf>,
    /// LLaMA size (7B, 13B).
    #[arg(long, alias = "llm_model")]
    pub llm_model: Option<String>,
    /// Add the Vicuna delta weights onto the Meta LLaMA as the original does (without undoing
    /// HF's q/k permutation: what the authors' Vicuna adapters were trained on).
    #[arg(long, alias = "use_vicuna", num_args = 0..=1, default_missing_value = "true")]
    pub use_vicuna: Option<bool>,
    /// Vicuna delta folder (HF safetensors); default `<llama-model-path>/vicuna_<llm-model>`.
    #[arg(long, alias = "vicuna_delta", value_name = "DIR")]
    pub vicuna_delta: Option<PathBuf>,
    /// CLIP ViT-L/14 weights (plain state dict .pth or HF safetensors).
    #[arg(long, aliases = ["clip_model_path", "clip-path", "clip_path"], value_name = "FILE")]
    pub clip_model_path: Option<PathBuf>,
    /// ScienceQA root (problems.json, pid_splits.json, images/).
    #[arg(long, alias = "data_root", value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// captions.json.
    #[arg(long, alias = "caption_file", value_name = "FILE")]
    pub caption_file: Option<PathBuf>,
    /// Use image captions in the context.
    #[arg(long, alias = "use_caption", num_args = 0..=1, default_missing_value = "true")]
    pub use_caption: Option<bool>,
    /// Prompt format (CQM-A, QCM-ALE, ...).
    #[arg(long, alias = "prompt_format")]
    pub prompt_format: Option<String>,
    /// Train on the instruction data.
    #[arg(long, alias = "do_pretrain", num_args = 0..=1, default_missing_value = "true")]
    pub do_pretrain: Option<bool>,
    /// Sequence length.
    #[arg(long, alias = "max_seq_len")]
    pub max_seq_len: Option<usize>,
    /// Micro-batch size per device.
    #[arg(long, alias = "batch_size")]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long, alias = "accum_iter")]
    pub accum_iter: Option<usize>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after N optimizer steps; the lr schedule stays the one of the full run.
    #[arg(long, alias = "max_steps")]
    pub max_steps: Option<u64>,
    /// Warmup epochs (fractional allowed).
    #[arg(long, alias = "warmup_epochs")]
    pub warmup_epochs: Option<f64>,
    /// Base lr (lr = blr * eff_batch / 256).
    #[arg(long)]
    pub blr: Option<f64>,
    /// Absolute lr (overrides --blr).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Cosine floor.
    #[arg(long, alias = "min_lr")]
    pub min_lr: Option<f64>,
    /// Weight decay (not on biases / 1-D params).
    #[arg(long, alias = "weight_decay")]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip.
    #[arg(long, alias = "clip_grad")]
    pub clip_grad: Option<f64>,
    /// Where the LLaMA adapters sit.
    #[arg(long, alias = "adapter_type", value_enum)]
    pub adapter_type: Option<LlamaAdapterType>,
    /// Adapter hidden size.
    #[arg(long, alias = "adapter_dim")]
    pub adapter_dim: Option<usize>,
    /// Adapter scale.
    #[arg(long, alias = "adapter_scale")]
    pub adapter_scale: Option<f64>,
    /// ROUTER softmax temperature (the original's meaning; not sampling).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Which adapters the CLIP blocks get.
    #[arg(long, alias = "visual_adapter_type", value_enum)]
    pub visual_adapter_type: Option<VisualAdapterType>,
    /// Visual projection hidden size.
    #[arg(long, alias = "hidden_proj")]
    pub hidden_proj: Option<usize>,
    /// Number of image feature tokens.
    #[arg(long, alias = "n_prompt")]
    pub n_prompt: Option<usize>,
    /// Stochastic depth rate.
    #[arg(long, alias = "drop_path")]
    pub drop_path: Option<f64>,
    /// Frozen LLaMA block linears: dense (16bit), or quantized while loading (LaVIN-lite):
    /// 8bit, or 4bit on wgpu/cuda.
    #[arg(long, value_enum)]
    pub bits: Option<BaseBits>,
    /// Recompute each ViT and LLaMA block in backward, keeping only the blocks' inputs (less
    /// memory, one more forward of the blocks).
    #[arg(long, alias = "gradient_checkpointing", num_args = 0..=1, default_missing_value = "true")]
    pub gradient_checkpointing: Option<bool>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Resume from a checkpoint: a file of one (`<output-dir>/checkpoint/model-N.mpk`), a run's
    /// output directory (its newest checkpoint), or an original checkpoint-N.pth.
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Output directory.
    #[arg(long, alias = "output_dir", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Backend (default: the first of backends.toml's `train` list compiled into this binary).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Use this backends.toml instead of the embedded one.
    #[arg(long, alias = "backends_file", value_name = "FILE")]
    pub backends_file: Option<PathBuf>,
    /// Plain progress lines instead of burn-train's dashboard (shown when stdout and stderr are
    /// terminals).
    // Parsed: `Some(false)` with the flag, `Some(true)` without; a `TrainArgs` built in code
    // leaves it `None` (plain lines).
    #[arg(long = "no-tui", alias = "no_tui", action = clap::ArgAction::SetFalse)]
    #[serde(skip)]
    pub tui: Option<bool>,
    /// Devices of this node, e.g. 0 or 0,1: one data-parallel rank each.
    #[arg(long)]
    pub devices: Option<String>,
    /// Nodes (processes, usually one per machine) training together, as torchrun's `--nnodes`
    /// (default: $WORLD_SIZE, else 1); each runs this command with its own --node-rank.
    #[arg(long)]
    pub nnodes: Option<usize>,
    /// Frozen LLaMA weights: f32, fp16 (the original's) or bf16; adapters, norms and optimizer
    /// state stay f32. Default: backends.toml's train entry (cuda:fp16; ndarray is f32 only).
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Checkpoint every N optimizer steps (0 = epoch ends only).
    #[arg(long, alias = "checkpoint_every")]
    pub checkpoint_every: Option<usize>,
    /// Keep the newest N checkpoints (0 = all); with --validate-every-epoch also the best.
    #[arg(long, alias = "keep_last")]
    pub keep_last: Option<usize>,
    /// Validate after every epoch (the original validates once, at the end).
    #[arg(long, alias = "validate_every_epoch", num_args = 0..=1, default_missing_value = "true")]
    pub validate_every_epoch: Option<bool>,
    /// Stop when the validation accuracy has not improved for N epochs (needs
    /// --validate-every-epoch).
    #[arg(long, alias = "early_stopping", value_name = "N")]
    pub early_stopping: Option<usize>,
    /// Where this process joins a multi-node run (not part of the config file).
    #[command(flatten)]
    #[serde(skip)]
    pub launch: LaunchArgs,
    /// Use only the first N training problems (quick looks and tests; hidden).
    #[arg(long, alias = "train_limit", hide = true, value_name = "N")]
    #[serde(skip)]
    pub train_limit: Option<usize>,
    /// Validate on only the first N val problems (quick looks and tests; hidden).
    #[arg(long, alias = "val_limit", hide = true, value_name = "N")]
    #[serde(skip)]
    pub val_limit: Option<usize>,
    /// The original's flags that mean nothing here (hidden; accepted and reported as ignored).
    #[command(flatten)]
    #[serde(skip)]
    pub original_only: OriginalOnlyFlags,
}

/// How this process joins a data-parallel run of `--nnodes` processes, with torchrun's names
/// (and its environment variables as fallbacks). Launch settings, not training settings: they
/// are neither read from nor written to the config file.
#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct LaunchArgs {
    /// This node's rank among --nnodes; 0 hosts the rendezvous (default: $RANK, else 0).
    #[arg(long, alias = "node_rank")]
    pub node_rank: Option<usize>,
    /// Host of node 0 (default: $MASTER_ADDR, else 127.0.0.1).
    #[arg(long, alias = "master_addr", value_name = "HOST")]
    pub master_addr: Option<String>,
    /// Port rank 0 listens on for the other ranks (default: $MASTER_PORT, else 29500).
    #[arg(long, alias = "master_port", value_name = "PORT")]
    pub master_port: Option<u16>,
    /// Seconds a rank waits for the others (rendezvous, each gradient exchange) before it stops
    /// with an error [default: 600].
    #[arg(long, alias = "collective_timeout", value_name = "SECS")]
    pub collective_timeout: Option<u64>,
}

impl LaunchArgs {
    /// The launch of a run with `nnodes` nodes: flags, else torchrun's environment variables
    /// (`RANK`, `MASTER_ADDR`, `MASTER_PORT`), else defaults.
    pub fn resolve(&self, nnodes: usize) -> Result<Launch, ConfigError> {
        fn env<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, ConfigError> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| ConfigError::Invalid {
                        field: name,
                        message: format!("environment variable {name}={v:?} is not valid"),
                    }),
                Err(_) => Ok(None),
            }
        }
        let d = Launch::default();
        let launch = Launch {
            nnodes,
            node_rank: match self.node_rank {
                Some(r) => r,
                None => env("RANK")?.unwrap_or(d.node_rank),
            },
            master_addr: match &self.master_addr {
                Some(a) => a.clone(),
                None => env("MASTER_ADDR")?.unwrap_or(d.master_addr),
            },
            master_port: match self.master_port {
                Some(p) => p,
                None => env("MASTER_PORT")?.unwrap_or(d.master_port),
            },
            timeout: self
                .collective_timeout
                .map_or(d.timeout, std::time::Duration::from_secs),
        };
        launch.validated().map_err(|e| ConfigError::Invalid {
            field: "nnodes",
            message: e.to_string(),
        })
    }
}

/// Flags of the original `train.py` that mean nothing here: accepted so that its scripts'
/// argument lists run unchanged, hidden from `--help`, and named once at start as ignored
/// ([`OriginalOnlyFlags::report`]). Not part of the `--config` file.
#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct OriginalOnlyFlags {
    /// `--data_path`: never read by the original (its instruction data is
    /// `<data_root>/all_data.json`, as `--do-pretrain` reads it here).
    #[arg(
        long = "data_path",
        alias = "data-path",
        value_name = "PATH",
        hide = true
    )]
    pub data_path: Option<String>,
    /// `--log_dir`: the original's TensorBoard folder.
    #[arg(long = "log_dir", alias = "log-dir", value_name = "DIR", hide = true)]
    pub log_dir: Option<String>,
    /// `--num_workers`: PyTorch DataLoader workers.
    #[arg(
        long = "num_workers",
        alias = "num-workers",
        value_name = "N",
        hide = true
    )]
    pub num_workers: Option<String>,
    /// `--pin_mem`: PyTorch DataLoader pinned memory.
    #[arg(long = "pin_mem", alias = "pin-mem", hide = true)]
    pub pin_mem: bool,
    /// `--no_pin_mem`.
    #[arg(long = "no_pin_mem", alias = "no-pin-mem", hide = true)]
    pub no_pin_mem: bool,
    /// `--dist_url`: torch.distributed rendezvous.
    #[arg(long = "dist_url", alias = "dist-url", value_name = "URL", hide = true)]
    pub dist_url: Option<String>,
    /// `--dist_on_itp`: torch.distributed on an OpenMPI cluster.
    #[arg(long = "dist_on_itp", alias = "dist-on-itp", hide = true)]
    pub dist_on_itp: bool,
    /// `--local_rank`: set by `torch.distributed.launch`.
    #[arg(
        long = "local_rank",
        alias = "local-rank",
        value_name = "N",
        hide = true,
        allow_hyphen_values = true
    )]
    pub local_rank: Option<String>,
    /// `--world_size`: torch.distributed processes.
    #[arg(
        long = "world_size",
        alias = "world-size",
        value_name = "N",
        hide = true
    )]
    pub world_size: Option<String>,
    /// `--device`: a torch device string.
    #[arg(long = "device", value_name = "DEVICE", hide = true)]
    pub device: Option<String>,
    /// `--cpu_load`: the original builds the model on the CPU to spare GPU memory.
    #[arg(long = "cpu_load", alias = "cpu-load", hide = true)]
    pub cpu_load: bool,
    /// `--start_epoch`: the first epoch of the loop.
    #[arg(
        long = "start_epoch",
        alias = "start-epoch",
        value_name = "N",
        hide = true
    )]
    pub start_epoch: Option<String>,
    /// `--options`: answer letters, which the original's training does not read.
    #[arg(long = "options", value_name = "LIST", num_args = 1.., hide = true)]
    pub options: Option<Vec<String>>,
}

impl OriginalOnlyFlags {
    /// The flags given, each with why it is ignored.
    pub fn report(&self) -> IgnoredFlags {
        let mut r = IgnoredFlags::default();
        let data_loader = "PyTorch DataLoader setting";
        let dist = "torch.distributed setting; use --nnodes, --node-rank, --master-addr, \
                    --master-port (torchrun's) and --devices";
        r.note(
            self.data_path.is_some(),
            "--data_path",
            "never read by the original; --do-pretrain reads <data-root>/all_data.json as it does",
        );
        r.note(
            self.log_dir.is_some(),
            "--log_dir",
            "TensorBoard folder; the metrics go to <output-dir>/metrics.jsonl",
        );
        r.note(self.num_workers.is_some(), "--num_workers", data_loader);
        r.note(self.pin_mem, "--pin_mem", data_loader);
        r.note(self.no_pin_mem, "--no_pin_mem", data_loader);
        r.note(self.dist_url.is_some(), "--dist_url", dist);
        r.note(self.dist_on_itp, "--dist_on_itp", dist);
        r.note(self.local_rank.is_some(), "--local_rank", dist);
        r.note(self.world_size.is_some(), "--world_size", dist);
        r.note(
            self.device.is_some(),
            "--device",
            "use --backend and --devices",
        );
        r.note(
            self.cpu_load,
            "--cpu_load",
            "the frozen base is always loaded one block at a time, converted as it is read",
        );
        r.note(
            self.start_epoch.is_some(),
            "--start_epoch",
            "use --resume, which continues at the checkpoint's epoch and step",
        );
        r.note(
            self.options.is_some(),
            "--options",
            "the original's training does not read it",
        );
        r
    }
}

pub use lavin_backends::IgnoredFlags;

impl TrainArgs {
    /// The original's flags given here that mean nothing to this trainer (see
    /// [`OriginalOnlyFlags`]); `run` prints [`IgnoredFlags::line`] once at start.
    pub fn ignored_flags(&self) -> IgnoredFlags {
        self.original_only.report()
    }

    /// Read a `--config` TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        crate::config::read_toml(path)
    }

    /// Overlay the values set in `self` onto `c`.
    pub fn apply(&self, c: &mut TrainConfig) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone(); } )* };
        }
        macro_rules! set_opt {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = Some(v.clone()); } )* };
        }
        set!(
            preset,
            llm_model,
            use_vicuna,
            use_caption,
            prompt_format,
            do_pretrain,
            max_seq_len,
            batch_size,
            accum_iter,
            epochs,
            warmup_epochs,
            blr,
            min_lr,
            weight_decay,
            adapter_type,
            adapter_dim,
            adapter_scale,
            temperature,
            visual_adapter_type,
            hidden_proj,
            n_prompt,
            drop_path,
            bits,
            gradient_checkpointing,
            tui,
            seed,
            output_dir,
            devices,
            nnodes,
            checkpoint_every,
            keep_last,
            validate_every_epoch
        );
        set_opt!(
            llama_model_path,
            clip_model_path,
            vicuna_delta,
            data_root,
            caption_file,
            lr,
            max_steps,
            clip_grad,
            resume,
            backend,
            backends_file,
            precision,
            early_stopping
        );
    }

    /// Defaults < `--config` file < these flags; then validate.
    pub fn resolve(&self) -> Result<TrainConfig, ConfigError> {
        let file = match &self.config {
            Some(p) => Some(Self::from_toml_file(p)?),
            None => None,
        };
        let real_model = self.llama_model_path.is_some()
            || file.as_ref().is_some_and(|f| f.llama_model_path.is_some());
        let mut c = if real_model {
            TrainConfig::paper_default()
        } else {
            TrainConfig::tiny_default()
        };
        if let Some(f) = &file {
            f.apply(&mut c);
        }
        self.apply(&mut c);
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut v = vec!["lavin-train"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap()
    }

    #[test]
    fn no_args_is_tiny() {
        let c = parse(&[]).train.resolve().unwrap();
        // The command shows the dashboard on a terminal; code that builds a config does not.
        let tiny = TrainConfig::tiny_default();
        assert_eq!(c, TrainConfig { tui: true, ..tiny });
        assert!(!parse(&["--no-tui"]).train.resolve().unwrap().tui);
        assert!(!TrainArgs::default().resolve().unwrap().tui);
    }

    #[test]
    fn model_path_selects_paper_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().to_str().unwrap();
        let c = parse(&["--llama-model-path", p, "--output-dir", "/tmp/x"])
            .train
            .resolve()
            .unwrap();
        assert_eq!(
            (c.batch_size, c.accum_iter, c.epochs, c.max_seq_len),
            (4, 4, 20, 512)
        );
        assert_eq!(
            (c.blr, c.weight_decay, c.warmup_epochs, c.temperature),
            (9e-3, 0.02, 2.0, 10.0)
        );
        assert_eq!(c.prompt_format, "QCM-ALE");
        assert_eq!(c.visual_adapter_type, VisualAdapterType::Router);
        // eff batch 32 on two GPUs, as the script: lr = 9e-3 * 32 / 256.
        let c2 = TrainConfig {
            devices: "0,1".into(),
            ..c
        };
        assert!((c2.resolved_lr() - 1.125e-3).abs() < 1e-15);
    }

    #[test]
    fn file_under_flags() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("run.toml");
        std::fs::write(
            &f,
            "batch_size = 3\nepochs = 9\nprompt_format = \"QCM-A\"\nuse_caption = false\n",
        )
        .unwrap();
        let c = parse(&[
            "--config",
            f.to_str().unwrap(),
            "--epochs",
            "2",
            "--use-caption=false",
        ])
        .train
        .resolve()
        .unwrap();
        assert_eq!(
            (c.batch_size, c.epochs, c.prompt_format.as_str()),
            (3, 2, "QCM-A")
        );
    }

    #[test]
    fn flags_parse() {
        let a = parse(&[
            "--use-caption",
            "--temperature",
            "5",
            "--clip-grad",
            "1.0",
            "--devices",
            "0,1",
        ])
        .train;
        assert_eq!(a.use_caption, Some(true));
        assert_eq!(a.temperature, Some(5.0));
        assert_eq!(a.clip_grad, Some(1.0));
        assert!(matches!(
            parse(&["bench", "--preset", "small"]).command,
            Some(Command::Bench(_))
        ));
    }

    #[test]
    fn bad_values_are_reported_before_training() {
        let e = parse(&["--prompt-format", "XYZ"])
            .train
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("prompt_format") && e.contains("XYZ"), "{e}");
        let e = parse(&["--llama-model-path", "/nonexistent/llama"])
            .train
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("llama_model_path") && e.contains("/nonexistent/llama"),
            "{e}"
        );
        let e = parse(&["--batch-size", "0"])
            .train
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_size"), "{e}");
        let e = parse(&["--adapter-dim", "7"])
            .train
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("even"), "{e}");
        let e = Cli::try_parse_from(["lavin-train", "--precision", "fp8"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("precision") && e.contains("fp8"), "{e}");
        let e = parse(&["--devices", "0,x"])
            .train
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("devices"), "{e}");
        let e = parse(&["--resume", "/nonexistent/ck.safetensors"])
            .train
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("resume"), "{e}");
    }

    #[test]
    fn every_flag_takes_its_snake_case_spelling() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let mut n = 0;
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if long.contains('-') {
                let snake = long.replace('-', "_");
                let aliases = a.get_all_aliases().unwrap_or_default();
                assert!(aliases.contains(&snake.as_str()), "--{long}: no --{snake}");
                n += 1;
            }
        }
        assert!(n >= 30, "{n}");
        let snake = parse(&[
            "--batch_size",
            "3",
            "--accum_iter=2",
            "--use_caption",
            "--clip_grad",
            "1",
        ])
        .train;
        let kebab = parse(&[
            "--batch-size",
            "3",
            "--accum-iter=2",
            "--use-caption",
            "--clip-grad",
            "1",
        ])
        .train;
        assert_eq!(format!("{snake:?}"), format!("{kebab:?}"));
    }

    #[test]
    fn clip_flag_has_inference_spelling_too() {
        for flag in [
            "--clip-model-path",
            "--clip_model_path",
            "--clip-path",
            "--clip_path",
        ] {
            let a = parse(&[flag, "/x/ViT-L-14.pt"]).train;
            assert_eq!(
                a.clip_model_path.as_deref(),
                Some(Path::new("/x/ViT-L-14.pt"))
            );
        }
    }

    #[test]
    fn ignored_flags_are_hidden_and_reported() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(
            !help.contains("num_workers") && !help.contains("batch_size"),
            "{help}"
        );
        let a = parse(&["--num_workers", "4", "--pin_mem", "--log_dir", "x"]).train;
        assert_eq!(
            a.ignored_flags().names(),
            ["--log_dir", "--num_workers", "--pin_mem"]
        );
        let line = a.ignored_flags().line().unwrap();
        assert!(line.contains("--num_workers (PyTorch DataLoader"), "{line}");
        assert_eq!(parse(&[]).train.ignored_flags().line(), None);
    }

    #[test]
    fn config_file_errors_name_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("run.toml");
        std::fs::write(&f, "batch_sise = 3\n").unwrap();
        let e = parse(&["--config", f.to_str().unwrap()])
            .train
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("run.toml") && e.contains("batch_sise"), "{e}");
        let e = parse(&["--config", "/nonexistent/run.toml"])
            .train
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/run.toml"), "{e}");
    }

    #[test]
    fn resolved_config_saved_and_reloaded() {
        let d = tempfile::tempdir().unwrap();
        let c = TrainConfig::tiny_default();
        let p = c.save(d.path()).unwrap();
        assert_eq!(TrainConfig::load(&p).unwrap(), c);
        let c = TrainConfig {
            lr: None,
            clip_grad: Some(2.0),
            ..TrainConfig::paper_default()
        };
        let p = c.save(d.path()).unwrap();
        assert_eq!(TrainConfig::load(&p).unwrap(), c);
    }
}
