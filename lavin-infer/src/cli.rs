//! The `lavin-infer` command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::chat::{run_chat, CHAT_ROUTER_TEMPERATURE};
use crate::eval_mme::{discover, run_mme, MME_BATCH_IMAGES, MME_MAX_GEN_LEN};
use crate::eval_sqa::{
    load_items, preds_json, run_eval, score_files, write_atomic, EvalSettings, SqaSource,
};
use crate::generator::{Generator, SamplingParams, ScriptedGenerator};
use crate::images::load_image_file;
use crate::load::{load_generator_with, RouterTemperature};
use crate::model_args::ModelArgs;
use crate::serve::{run_blocking, ServeConfig};

/// LaVIN inference: evaluation, scoring, chat and serving.
///
/// Every flag of the original `eval.py`, `eval_mme.py` and `demo.py` also accepts its original
/// spelling (`--ckpt_dir`, `--adapter_path`, `--max_batch_size`, `--server_name`, ...); the ones
/// that mean nothing here are accepted and reported once as ignored ([`ignored_flags`]).
#[derive(Debug, Parser)]
#[command(name = "lavin-infer", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check this implementation against a parity case folder (runs `lavin-tools parity`).
    #[command(disable_help_flag = true)]
    Parity(ParityArgs),
    /// ScienceQA evaluation as the original eval.py (writes preds.json, prints the table).
    EvalSqa(EvalSqaArgs),
    /// Score an existing predictions file (qid -> index), ours or the original's.
    Score(ScoreArgs),
    /// MME benchmark (acc / acc+ per subtask, perception and cognition totals).
    EvalMme(EvalMmeArgs),
    /// Multi-turn chat about an image in the terminal.
    Chat(ChatArgs),
    /// Web page + OpenAI-compatible API.
    Serve(ServeArgs),
    /// Speed and memory benchmark.
    Bench(BenchArgs),
}

/// `parity`: its arguments go to `lavin-tools parity` as they are.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// `DIR [--backend B] [--bounds f32|tf32]`, as `lavin-tools parity` takes them.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// `bench` on the chosen backend.
struct BenchRun<'a>(&'a BenchArgs, lavin_backends::BackendChoice);

impl lavin_backends::BackendJob for BenchRun<'_> {
    type Output = ();
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let (a, choice) = (self.0, self.1);
        let format = lavin_model::llama::BaseFormat {
            precision: choice.precision,
            bits: a.backend.bits.quantized(),
        };
        let results = crate::bench::run::<B>(
            &a.preset,
            &a.batch_size,
            a.prompt_len,
            a.max_gen_len,
            &choice.to_string(),
            format,
            &device,
        )?;
        for r in &results {
            eprintln!(
                "batch {:>2}: image encode {:>8.1} ms, prefill {:>9.1} tok/s, decode {:>8.1} tok/s",
                r.batch_size, r.image_encode_ms, r.prefill_tokens_per_s, r.decode_tokens_per_s
            );
        }
        println!("{}", serde_json::to_string(&results)?);
        Ok(())
    }
}

/// Decoding flags shared by the generating commands.
#[derive(Debug, Clone, Args)]
pub struct DecodeArgs {
    /// Sampling temperature (0 = greedy).
    #[arg(long, alias = "generation_temperature", default_value_t = 0.1)]
    pub generation_temperature: f32,
    /// Nucleus (top-p) threshold.
    #[arg(long, alias = "top_p", default_value_t = 0.75)]
    pub top_p: f32,
    /// Top-k cut (0 = off).
    #[arg(long, alias = "top_k", default_value_t = 0)]
    pub top_k: usize,
    /// Greedy decoding (overrides the sampling temperature).
    #[arg(long)]
    pub greedy: bool,
    /// Seed of the sampler (the original seeds torch with 1).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl DecodeArgs {
    /// Sampling settings with `max_gen_len` new tokens.
    pub fn params(&self, max_gen_len: usize) -> SamplingParams {
        SamplingParams {
            max_gen_len,
            temperature: if self.greedy {
                0.0
            } else {
                self.generation_temperature
            },
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
        }
    }
}

/// `eval-sqa`.
#[derive(Debug, Args)]
pub struct EvalSqaArgs {
    /// ScienceQA root: problems.json, pid_splits.json, images/<split>/<qid>/image.png.
    #[arg(long, alias = "data_root")]
    pub data_root: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Captions file (default <data-root>/captions.json).
    #[arg(long, alias = "caption_file")]
    pub caption_file: Option<PathBuf>,
    /// Put captions into the context.
    #[arg(
        long,
        alias = "use_caption",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new()
    )]
    pub use_caption: bool,
    /// Prompt format.
    #[arg(long, alias = "prompt_format", default_value = "QCM-ALE")]
    pub prompt_format: String,
    /// Problems per batch (the order and size of batches change results, as in the original).
    #[arg(long, alias = "max_batch_size", default_value_t = 64)]
    pub max_batch_size: usize,
    /// New tokens per answer.
    #[arg(long, alias = "max_gen_len", default_value_t = 64)]
    pub max_gen_len: usize,
    /// Skip problems whose image file is missing (warning) instead of failing.
    #[arg(long, alias = "skip_missing_images")]
    pub skip_missing_images: bool,
    /// Where to write the predictions.
    #[arg(long, default_value = "preds.json")]
    pub out: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub decode: DecodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
}

/// `score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Predictions file: {"qid": index, ...}.
    #[arg(long)]
    pub preds: PathBuf,
    /// ScienceQA root holding problems.json.
    #[arg(long, alias = "data_root", required_unless_present = "problems")]
    pub data_root: Option<PathBuf>,
    /// problems.json itself (instead of --data-root).
    #[arg(long)]
    pub problems: Option<PathBuf>,
}

/// `eval-mme`.
#[derive(Debug, Args)]
pub struct EvalMmeArgs {
    /// MME root: one folder per subtask (eval_mme.py's `root_dir_`, with its default).
    #[arg(long, aliases = ["root_dir_", "root_dir", "root-dir"], default_value = "../data/mme")]
    pub root: PathBuf,
    /// Images per batch (two prompts each).
    #[arg(long, alias = "batch_images", default_value_t = MME_BATCH_IMAGES)]
    pub batch_images: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub decode: DecodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
    /// eval_mme.py's flags that it does not use (hidden; reported as ignored).
    #[command(flatten)]
    pub original_only: OriginalOnlyMmeFlags,
}

/// Flags `eval_mme.py` accepts (a copy of eval.py's) but never reads, or overrides: accepted
/// so that its command line runs unchanged, hidden from `--help`, reported as ignored.
#[derive(Debug, Clone, Default, PartialEq, Args)]
pub struct OriginalOnlyMmeFlags {
    /// `--data_root`.
    #[arg(
        long = "data_root",
        alias = "data-root",
        value_name = "DIR",
        hide = true
    )]
    pub data_root: Option<String>,
    /// `--caption_file`.
    #[arg(
        long = "caption_file",
        alias = "caption-file",
        value_name = "FILE",
        hide = true
    )]
    pub caption_file: Option<String>,
    /// `--split`.
    #[arg(long = "split", value_name = "SPLIT", hide = true)]
    pub split: Option<String>,
    /// `--prompt_format`.
    #[arg(
        long = "prompt_format",
        alias = "prompt-format",
        value_name = "FORMAT",
        hide = true
    )]
    pub prompt_format: Option<String>,
    /// `--use_caption`.
    #[arg(
        long = "use_caption",
        alias = "use-caption",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        hide = true
    )]
    pub use_caption: Option<bool>,
    /// `--max_batch_size`: eval_mme.py sizes its cache with it, then batches 8 images.
    #[arg(
        long = "max_batch_size",
        alias = "max-batch-size",
        value_name = "N",
        hide = true
    )]
    pub max_batch_size: Option<String>,
}

/// What `chat` and `serve` share: the model (or a scripted fake) and the reply defaults.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// New tokens per reply (the default a request can override in `serve`).
    #[arg(long, alias = "max_gen_len", default_value_t = 256)]
    pub max_gen_len: usize,
    /// Use a scripted fake model (no weights needed).
    #[arg(long)]
    pub fake: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub decode: DecodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub model: ModelArgs,
}

impl SessionArgs {
    /// The fake, or the model at the chat router temperature (5, as the original demo) unless
    /// `--temperature` says otherwise.
    fn generator(&self, command: &'static str) -> anyhow::Result<Box<dyn Generator>> {
        if self.fake {
            return Ok(fake_generator());
        }
        let router = RouterTemperature::Demo(CHAT_ROUTER_TEMPERATURE);
        load_generator_with(command, &self.model, router)
    }
}

/// `chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Image to talk about.
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub session: SessionArgs,
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind (loopback by default; use 0.0.0.0 to expose it); demo.py's
    /// `--server_name`.
    #[arg(long, aliases = ["server_name", "server-name"], default_value = "127.0.0.1")]
    pub host: String,
    /// Port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Largest request body in MiB.
    #[arg(long, alias = "max_body_mb", default_value_t = 20)]
    pub max_body_mb: usize,
    /// Largest max_tokens a request may ask for.
    #[arg(long, alias = "max_new_tokens", default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Requests that may wait for the model before 503.
    #[arg(long, default_value_t = 32)]
    pub queue: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub serving: crate::serve::ServeFlags,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub session: SessionArgs,
}

/// `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// tiny, small or 7b-shape.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8])]
    pub batch_size: Vec<usize>,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// New tokens.
    #[arg(long, default_value_t = 64)]
    pub max_gen_len: usize,
    /// Backend, precision and width of the frozen base.
    #[command(flatten)]
    pub backend: lavin_backends::BackendArgs,
}

fn progress_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
        .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

fn fake_generator() -> Box<dyn Generator> {
    Box::new(ScriptedGenerator::echo().with_delay(Duration::from_millis(40)))
}

fn image_loader(path: &Path) -> anyhow::Result<crate::generator::ImageInput> {
    Ok(load_image_file(path)?)
}

pub use lavin_backends::IgnoredFlags;

/// The original's flags on `command` that mean nothing here (`--cpu_load`, `--options`, and
/// for `eval-mme` the ScienceQA flags eval_mme.py accepts without reading them).
pub fn ignored_flags(command: &Command) -> IgnoredFlags {
    let mut r = IgnoredFlags::default();
    let model = match command {
        Command::EvalSqa(a) => Some(&a.model),
        Command::EvalMme(a) => Some(&a.model),
        Command::Chat(a) => Some(&a.session.model),
        Command::Serve(a) => Some(&a.session.model),
        Command::Parity(_) | Command::Score(_) | Command::Bench(_) => None,
    };
    if let Some(m) = model {
        let o = &m.original_only;
        r.note(
            o.cpu_load.is_some(),
            "--cpu_load",
            "the frozen base is always loaded one block at a time, converted as it is read",
        );
        r.note(
            o.options.is_some(),
            "--options",
            "the answer letters are A to E, the original's default",
        );
    }
    if let Command::EvalMme(a) = command {
        let o = &a.original_only;
        let unread = "eval_mme.py does not read it either";
        r.note(o.data_root.is_some(), "--data_root", unread);
        r.note(o.caption_file.is_some(), "--caption_file", unread);
        r.note(o.split.is_some(), "--split", unread);
        r.note(o.prompt_format.is_some(), "--prompt_format", unread);
        r.note(o.use_caption.is_some(), "--use_caption", unread);
        r.note(
            o.max_batch_size.is_some(),
            "--max_batch_size",
            "eval_mme.py batches 8 images whatever it says; see --batch-images",
        );
    }
    r
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(line) = ignored_flags(&cli.command).line() {
        eprintln!("lavin-infer: {line}");
    }
    match cli.command {
        // The server's model thread moves each job onto a worker itself (`serve::worker`);
        // its main thread blocks in the HTTP runtime for good.
        command @ Command::Serve(_) => run_command(command),
        command => lavin_backends::on_worker_thread(|| run_command(command)),
    }
}

fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Parity(a) => crate::tools::parity(&a.args),
        Command::Score(a) => {
            let problems = match (&a.problems, &a.data_root) {
                (Some(p), _) => p.clone(),
                (None, Some(root)) => root.join("problems.json"),
                (None, None) => anyhow::bail!("score: give --data-root or --problems"),
            };
            let report = score_files(&a.preds, &problems)?;
            println!(
                "{} predictions scored against {}",
                report.predictions,
                problems.display()
            );
            println!("{report}");
            Ok(())
        }
        Command::EvalSqa(a) => {
            let src = SqaSource {
                data_root: a.data_root.clone(),
                split: a.split.clone(),
                prompt_format: a.prompt_format.clone(),
                use_caption: a.use_caption,
                caption_file: a.caption_file.clone(),
                skip_missing_images: a.skip_missing_images,
            };
            let items = load_items(&src)?;
            eprintln!("{} problems in split {:?}", items.len(), a.split);
            // eval.py's `--temperature` as the scripts pass it (the adapters' own if stored).
            let router = RouterTemperature::Script(10.0);
            let mut generator = load_generator_with("eval-sqa", &a.model, router)?;
            let settings = EvalSettings {
                batch_size: a.max_batch_size,
                params: a.decode.params(a.max_gen_len),
                fallback_seed: a.decode.seed,
            };
            let bar = progress_bar("ScienceQA");
            let result = run_eval(
                &items,
                generator.as_mut(),
                &settings,
                &mut image_loader,
                &bar,
            )?;
            write_atomic(&a.out, &preds_json(&result.preds))?;
            println!(
                "overall accuracy: {:.2} ({} of {}; {} answers fell back to a random option)",
                result.accuracy(),
                result.correct,
                result.preds.len(),
                result.fallbacks
            );
            println!("predictions written to {}", a.out.display());
            if a.split == "test" {
                let report = score_files(&a.out, &a.data_root.join("problems.json"))?;
                println!("{report}");
            } else {
                println!("(the paper's table is computed on the test split only)");
            }
            Ok(())
        }
        Command::EvalMme(a) => {
            let subtasks = discover(&a.root)?;
            // The original evaluates MME at router temperature 5 whatever the adapters were
            // trained with (its script passes `--temperature 5.`): kept, and said once when the
            // adapters store another.
            let router = RouterTemperature::Demo(CHAT_ROUTER_TEMPERATURE);
            let mut generator = load_generator_with("eval-mme", &a.model, router)?;
            let params = a.decode.params(MME_MAX_GEN_LEN);
            let bar = progress_bar("MME");
            let report = run_mme(
                &subtasks,
                generator.as_mut(),
                &params,
                a.batch_images,
                &mut image_loader,
                &bar,
            )?;
            println!("{report}");
            if let Some(path) = &a.json {
                let text = serde_json::to_string_pretty(&report)?;
                write_atomic(path, &text)?;
            }
            Ok(())
        }
        Command::Chat(a) => {
            let mut generator = a.session.generator("chat")?;
            let image = match &a.image {
                Some(p) => Some(load_image_file(p)?),
                None => None,
            };
            let params = a.session.decode.params(a.session.max_gen_len);
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut out = std::io::stdout();
            run_chat(
                generator.as_mut(),
                &params,
                image,
                &mut |p: &str| image_loader(Path::new(p)),
                &mut input,
                &mut out,
            )
        }
        Command::Serve(a) => {
            let generator = a.session.generator("serve")?;
            let cfg = ServeConfig {
                max_body_bytes: a.max_body_mb.saturating_mul(1024 * 1024),
                max_new_tokens: a.max_new_tokens,
                queue_capacity: a.queue,
                defaults: a.session.decode.params(a.session.max_gen_len),
                ..ServeConfig::default()
            };
            let cfg = a.serving.apply(cfg)?;
            run_blocking(&a.host, a.port, generator, cfg).context("serve")
        }
        Command::Bench(a) => {
            let choice = crate::load::choose(&a.backend)?;
            lavin_backends::dispatch(choice.backend, BenchRun(&a, choice))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn eval_sqa_defaults_follow_eval_py() {
        let cli = Cli::try_parse_from(["lavin-infer", "eval-sqa", "--data-root", "d"]).unwrap();
        let Command::EvalSqa(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.split, "test");
        assert_eq!(a.prompt_format, "QCM-ALE");
        assert_eq!(a.max_batch_size, 64);
        assert_eq!(a.max_gen_len, 64);
        assert_eq!(a.model.n_prompt, None);
        assert_eq!(a.model.temperature, None);
        let p = a.decode.params(a.max_gen_len);
        assert_eq!((p.temperature, p.top_p, p.seed), (0.1, 0.75, 1));
        let cli = Cli::try_parse_from([
            "lavin-infer",
            "eval-sqa",
            "--data-root",
            "d",
            "--greedy",
            "--temperature",
            "10",
            "--positions",
            "consistent",
        ])
        .unwrap();
        let Command::EvalSqa(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.decode.params(64).temperature, 0.0);
        assert_eq!(a.model.temperature, Some(10.0));
        assert_eq!(a.model.positions, lavin_model::Positions::Consistent);
    }

    #[test]
    fn every_flag_takes_its_snake_case_spelling() {
        let cmd = Cli::command();
        let mut n = 0;
        for sub in ["eval-sqa", "score", "eval-mme", "chat", "serve"] {
            let sub = cmd.find_subcommand(sub).unwrap();
            for a in sub.get_arguments() {
                let Some(long) = a.get_long() else { continue };
                if long.contains('-') {
                    let snake = long.replace('-', "_");
                    let aliases = a.get_all_aliases().unwrap_or_default();
                    assert!(
                        aliases.contains(&snake.as_str()),
                        "{}: --{long} has no --{snake}",
                        sub.get_name()
                    );
                    n += 1;
                }
            }
        }
        assert!(n > 40, "{n}");
    }

    #[test]
    fn clip_flag_is_clip_model_path_with_the_old_spellings() {
        for flag in [
            "--clip-model-path",
            "--clip_model_path",
            "--clip-path",
            "--clip_path",
        ] {
            let cli =
                Cli::try_parse_from(["lavin-infer", "chat", "--fake", flag, "/x/c.pt"]).unwrap();
            let Command::Chat(a) = cli.command else {
                panic!()
            };
            assert_eq!(
                a.session.model.clip_path.as_deref(),
                Some(Path::new("/x/c.pt"))
            );
        }
        let help = Cli::command()
            .find_subcommand_mut("chat")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("--clip-model-path") && !help.contains("clip-path "),
            "{help}"
        );
        assert!(
            !help.contains("cpu_load") && !help.contains("--llm_model "),
            "{help}"
        );
    }

    #[test]
    fn fire_style_booleans_and_ignored_flags() {
        let cli = Cli::try_parse_from([
            "lavin-infer",
            "eval-sqa",
            "--data_root",
            "d",
            "--use_vicuna=True",
            "--use_caption",
            "--cpu_load",
        ])
        .unwrap();
        let ignored = ignored_flags(&cli.command);
        let Command::EvalSqa(a) = cli.command else {
            panic!()
        };
        assert!(a.model.use_vicuna && a.use_caption);
        assert_eq!(ignored.names(), ["--cpu_load"]);
        assert!(ignored.line().unwrap().contains("--cpu_load ("));
        let cli = Cli::try_parse_from([
            "lavin-infer",
            "eval-sqa",
            "--data-root",
            "d",
            "--use-vicuna=False",
        ])
        .unwrap();
        assert!(ignored_flags(&cli.command).line().is_none());
        let Command::EvalSqa(a) = cli.command else {
            panic!()
        };
        assert!(!a.model.use_vicuna && !a.use_caption);
    }

    #[test]
    fn score_command_runs_on_the_fixture() {
        let dir = tempfile::tempdir().unwrap();
        let f: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../tests/data/parity/tiny-a/scores.json"),
            )
            .unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("problems.json"), f["problems"].to_string()).unwrap();
        let preds = dir.path().join("p.json");
        std::fs::write(&preds, f["predictions"].to_string()).unwrap();
        let cli = Cli::try_parse_from([
            "lavin-infer",
            "score",
            "--preds",
            preds.to_str().unwrap(),
            "--data-root",
            dir.path().to_str().unwrap(),
        ])
        .unwrap();
        run(cli).unwrap();
        let cli = Cli::try_parse_from(["lavin-infer", "score", "--preds", "x"]);
        assert!(cli.is_err(), "--data-root or --problems is required");
    }

    #[test]
    fn bench_runs_and_names_a_bad_preset() {
        let args = [
            "lavin-infer",
            "bench",
            "--batch-size",
            "1",
            "--prompt-len",
            "8",
            "--max-gen-len",
            "2",
        ];
        run(Cli::try_parse_from(args).unwrap()).unwrap();
        let cli = Cli::try_parse_from(["lavin-infer", "bench", "--preset", "huge"]).unwrap();
        assert!(run(cli).unwrap_err().to_string().contains("huge"));
    }
}
