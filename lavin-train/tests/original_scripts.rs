//! The original repository's training command lines (`scripts/*.sh`, the arguments after
//! `train.py`, verbatim in `tests/data/original-scripts/`) parse with their original spellings,
//! resolve to the config they mean, and have their meaningless flags reported as ignored.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use lavin_model::quant::BaseBits;
use lavin_model::{LlamaAdapterType, VisualAdapterType};
use lavin_train::cli::{Cli, TrainArgs};

fn script_path(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/original-scripts")
        .join(script)
}

/// The words after `train.py`, as bash splits them: backslash-newline continuations removed,
/// then split at whitespace (the scripts have no quotes).
fn original_args(script: &str) -> Vec<String> {
    let text = std::fs::read_to_string(script_path(script)).unwrap();
    let joined = text.replace("\\\n", "");
    let words: Vec<&str> = joined.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "train.py")
        .unwrap_or_else(|| panic!("{script}: no train.py"));
    words[at + 1..].iter().map(|w| w.to_string()).collect()
}

fn parse(script: &str) -> TrainArgs {
    let args = original_args(script);
    let cli = Cli::try_parse_from(std::iter::once("lavin-train".to_string()).chain(args))
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(cli.command.is_none(), "{script}");
    cli.train
}

/// What a script sets (everything else is the same in all of them).
struct Expect {
    script: &'static str,
    llm_model: &'static str,
    batch_size: usize,
    accum_iter: usize,
    epochs: usize,
    warmup_epochs: f64,
    temperature: f64,
    lite: bool,
    vicuna: bool,
    do_pretrain: bool,
    output_dir: &'static str,
}

const SCRIPTS: [Expect; 8] = [
    Expect {
        script: "finetuning_sqa_7b.sh",
        llm_model: "7B",
        batch_size: 4,
        accum_iter: 4,
        epochs: 20,
        warmup_epochs: 2.0,
        temperature: 10.0,
        lite: false,
        vicuna: false,
        do_pretrain: false,
        output_dir: "./LaVIN-7B/",
    },
    Expect {
        script: "finetuning_sqa_7b_lite.sh",
        llm_model: "7B",
        batch_size: 1,
        accum_iter: 32,
        epochs: 20,
        warmup_epochs: 2.0,
        temperature: 10.0,
        lite: true,
        vicuna: false,
        do_pretrain: false,
        output_dir: "./LaVIN-7B-lite/",
    },
    Expect {
        script: "finetuning_sqa_13b.sh",
        llm_model: "13B",
        batch_size: 4,
        accum_iter: 1,
        epochs: 20,
        warmup_epochs: 2.0,
        temperature: 5.0,
        lite: false,
        vicuna: false,
        do_pretrain: false,
        output_dir: "./LaVIN-13B/",
    },
    Expect {
        script: "finetuning_sqa_13b_lite.sh",
        llm_model: "13B",
        batch_size: 1,
        accum_iter: 32,
        epochs: 20,
        warmup_epochs: 2.0,
        temperature: 5.0,
        lite: true,
        vicuna: false,
        do_pretrain: false,
        output_dir: "./LaVIN-13B-lite/",
    },
    Expect {
        script: "finetuning_sqa_vicuna_7b.sh",
        llm_model: "7B",
        batch_size: 4,
        accum_iter: 4,
        epochs: 20,
        warmup_epochs: 2.0,
        temperature: 10.0,
        lite: false,
        vicuna: true,
        do_pretrain: false,
        output_dir: "./LaVIN-Vicuna-7B/",
    },
    Expect {
        script: "finetuning_sqa_vicuna_13b.sh",
        llm_model: "13B",
        batch_size: 4,
        accum_iter: 1,
        epochs: 20,
        warmup_epochs: 2.0,
        temperature: 5.0,
        lite: false,
        vicuna: true,
        do_pretrain: false,
        output_dir: "./LaVIN-Vicuna-13B/",
    },
    Expect {
        script: "vl_instruction_tuning_13b.sh",
        llm_model: "13B",
        batch_size: 4,
        accum_iter: 1,
        epochs: 15,
        warmup_epochs: 0.2,
        temperature: 5.0,
        lite: false,
        vicuna: false,
        do_pretrain: true,
        output_dir: "./LaVIN-13B-VLIT/",
    },
    Expect {
        script: "vl_instruction_tuning_vicuna_13b.sh",
        llm_model: "13B",
        batch_size: 4,
        accum_iter: 1,
        epochs: 15,
        warmup_epochs: 0.2,
        temperature: 5.0,
        lite: false,
        vicuna: true,
        do_pretrain: true,
        output_dir: "./LaVIN-Vicuna-13B-VLIT/",
    },
];

#[test]
fn original_training_scripts_parse_and_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("weights");
    std::fs::create_dir_all(&weights).unwrap();
    for e in &SCRIPTS {
        let s = e.script;
        let a = parse(s);
        // As parsed: the original's spellings landed on our fields.
        assert_eq!(
            a.llama_model_path.as_deref(),
            Some(Path::new("../data/weights/")),
            "{s}"
        );
        assert_eq!(a.llm_model.as_deref(), Some(e.llm_model), "{s}");
        assert_eq!(
            a.output_dir.as_deref(),
            Some(Path::new(e.output_dir)),
            "{s}"
        );
        assert_eq!(a.batch_size, Some(e.batch_size), "{s}");
        assert_eq!(a.accum_iter, Some(e.accum_iter), "{s}");
        assert_eq!(a.gradient_checkpointing, e.lite.then_some(true), "{s}");
        assert_eq!(a.bits, e.lite.then_some(BaseBits::Four), "{s}");
        assert_eq!(a.use_vicuna, e.vicuna.then_some(true), "{s}");
        assert_eq!(a.do_pretrain, e.do_pretrain.then_some(true), "{s}");
        // The flags that mean nothing here are reported, each once.
        let mut ignored = vec!["--data_path"];
        if e.lite {
            ignored.push("--cpu_load");
        }
        assert_eq!(a.ignored_flags().names(), ignored, "{s}");
        let line = a.ignored_flags().line().unwrap();
        assert!(
            line.contains("--data_path") && line.contains("all_data.json"),
            "{line}"
        );

        // Resolved, with the paths moved to places that exist.
        let a = TrainArgs {
            llama_model_path: Some(weights.clone()),
            output_dir: Some(tmp.path().join(e.output_dir)),
            ..a
        };
        let c = a.resolve().unwrap_or_else(|err| panic!("{s}: {err}"));
        assert_eq!(c.llm_model, e.llm_model, "{s}");
        assert_eq!(c.max_seq_len, 512, "{s}");
        assert_eq!(
            (c.batch_size, c.accum_iter),
            (e.batch_size, e.accum_iter),
            "{s}"
        );
        assert_eq!(c.epochs, e.epochs, "{s}");
        assert_eq!(c.warmup_epochs, e.warmup_epochs, "{s}");
        assert_eq!((c.blr, c.lr, c.weight_decay), (9e-3, None, 0.02), "{s}");
        assert_eq!(c.adapter_type, LlamaAdapterType::Attn, "{s}");
        assert_eq!((c.adapter_dim, c.adapter_scale), (8, 1.0), "{s}");
        assert_eq!(c.n_prompt, 6, "{s}");
        assert_eq!(c.prompt_format, "QCM-ALE", "{s}");
        assert_eq!(c.temperature, e.temperature, "{s}");
        assert_eq!(c.visual_adapter_type, VisualAdapterType::Router, "{s}");
        assert_eq!(c.hidden_proj, 128, "{s}");
        assert_eq!(c.gradient_checkpointing, e.lite, "{s}");
        let bits = if e.lite {
            BaseBits::Four
        } else {
            BaseBits::Dense
        };
        assert_eq!(c.bits, bits, "{s}");
        assert_eq!(c.use_vicuna, e.vicuna, "{s}");
        assert_eq!(c.do_pretrain, e.do_pretrain, "{s}");
        assert_eq!(c.output_dir, tmp.path().join(e.output_dir), "{s}");
        assert_eq!(
            c.llama_model_path.as_deref(),
            Some(weights.as_path()),
            "{s}"
        );
        // Data from the defaults, as the original's (`--data_root` unset): our bundled one.
        assert_eq!(c.data_root, None, "{s}");
    }
}

#[test]
fn every_ignored_flag_of_train_py_is_accepted_and_reported() {
    let args = [
        "lavin-train",
        "--data_path",
        "../data/alpaca_data.json",
        "--log_dir",
        "./output_dir",
        "--num_workers",
        "10",
        "--pin_mem",
        "--no_pin_mem",
        "--dist_url",
        "env://",
        "--dist_on_itp",
        "--local_rank=0",
        "--world_size",
        "2",
        "--device",
        "cuda",
        "--cpu_load",
        "--start_epoch",
        "0",
        "--options",
        "ABCDE",
        "--batch_size",
        "2",
    ];
    let a = Cli::try_parse_from(args).unwrap().train;
    assert_eq!(a.batch_size, Some(2));
    assert_eq!(
        a.ignored_flags().names(),
        [
            "--data_path",
            "--log_dir",
            "--num_workers",
            "--pin_mem",
            "--no_pin_mem",
            "--dist_url",
            "--dist_on_itp",
            "--local_rank",
            "--world_size",
            "--device",
            "--cpu_load",
            "--start_epoch",
            "--options",
        ]
    );
    // They change nothing: the resolved config is the one without them.
    let plain = Cli::try_parse_from(["lavin-train", "--batch-size", "2"])
        .unwrap()
        .train;
    assert!(plain.ignored_flags().is_empty() && plain.ignored_flags().line().is_none());
    assert_eq!(a.resolve().unwrap(), plain.resolve().unwrap());
}

/// The binary names the ignored flags on one line of stderr, once, before anything else fails.
#[test]
fn the_binary_reports_ignored_flags_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_lavin-train"))
        .args([
            "--num_workers",
            "10",
            "--pin_mem",
            "--dist_url",
            "env://",
            // An invalid value, so the run stops right after resolving.
            "--batch_size",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("ignoring")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for f in ["--num_workers", "--pin_mem", "--dist_url"] {
        assert_eq!(lines[0].matches(f).count(), 1, "{f}: {}", lines[0]);
    }
    assert!(err.contains("batch_size"), "{err}");
}
