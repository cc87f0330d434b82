//! `lavin-tools`: the development commands (parity check, base pretraining, probe).

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use lavin_backends::{BackendJob, BackendKind, BackendPrefs};
use lavin_tools::parity::{self, Bounds};
use lavin_tools::pretrain::{self, PretrainArgs, ProbeOptions};

/// LaVIN development tools.
#[derive(Debug, Parser)]
#[command(name = "lavin-tools", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check this implementation against a parity case folder: one row per tensor or file,
    /// non-zero exit on any failure.
    Parity(ParityArgs),
    /// Pretrain the tiny frozen base (CLIP + LLaMA) on the mini dataset's train split and
    /// write assets/tiny-base (ndarray; several minutes on 2 cores).
    PretrainBase(PretrainArgs),
    /// The adapter-only probe of the default run on a base folder (sizes its settings).
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
struct ParityArgs {
    /// One case folder (like tests/data/parity/tiny-a).
    dir: PathBuf,
    /// Backend (default: backends.toml's `tests` job).
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// f32 or tf32 (f32 bounds x50 for TF32 matmuls). Default: tf32 on cuda, f32 elsewhere.
    #[arg(long, value_enum)]
    bounds: Option<Bounds>,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// Base folder (default: assets/tiny-base).
    #[arg(long, value_name = "DIR")]
    base_dir: Option<PathBuf>,
    /// Epochs.
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    /// Prompt format.
    #[arg(long, default_value = "QCM-A")]
    prompt_format: String,
}

struct ParityRun<'a>(&'a Path, Bounds);

impl BackendJob for ParityRun<'_> {
    type Output = bool;
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> anyhow::Result<bool> {
        let sections = parity::run::<B>(self.0, &device, self.1)?;
        Ok(parity::print_report(&sections, self.1))
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Parity(a) => {
            let kind = BackendPrefs::embedded()?
                .select("tests", a.backend, None)?
                .backend;
            let bounds = a.bounds.unwrap_or_else(|| Bounds::for_backend(kind));
            if !lavin_backends::dispatch(kind, ParityRun(&a.dir, bounds))? {
                anyhow::bail!("parity: some checks FAILED (see the table above)");
            }
        }
        Command::PretrainBase(a) => {
            pretrain::run(&a)?;
        }
        Command::Probe(a) => {
            type B = burn::backend::Autodiff<burn::backend::NdArray>;
            let opts = ProbeOptions {
                base_dir: a.base_dir.unwrap_or_else(lavin_model::bundled::base_dir),
                epochs: a.epochs,
                batch_size: a.batch_size,
                lr: a.lr,
                prompt_format: a.prompt_format,
                ..ProbeOptions::default()
            };
            let config = lavin_model::bundled::config();
            let report = pretrain::probe_default::<B>(&config, &opts, &Default::default())?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = lavin_backends::on_worker_thread(|| run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
