//! The original repository's evaluation command lines (`scripts/*.sh`, the arguments after
//! `eval.py` / `eval_mme.py`, verbatim in `tests/data/original-scripts/`) and its demo's flags
//! parse with their original spellings into the settings they mean, and the flags that mean
//! nothing here are reported as ignored.

use std::path::{Path, PathBuf};

use clap::Parser;
use lavin_infer::cli::{ignored_flags, Cli, Command, EvalSqaArgs};
use lavin_model::quant::BaseBits;
use lavin_model::{LlamaAdapterType, VisualAdapterType};

fn script_path(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/original-scripts")
        .join(script)
}

/// The words after `program` (`eval.py`, `eval_mme.py`), as bash splits them: backslash-newline
/// continuations removed, then split at whitespace (the scripts have no quotes).
fn original_args(script: &str, program: &str) -> Vec<String> {
    let text = std::fs::read_to_string(script_path(script)).unwrap();
    let joined = text.replace("\\\n", "");
    let words: Vec<&str> = joined.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == program)
        .unwrap_or_else(|| panic!("{script}: no {program}"));
    words[at + 1..].iter().map(|w| w.to_string()).collect()
}

fn parse(subcommand: &str, args: Vec<String>) -> Cli {
    let argv = ["lavin-infer".to_string(), subcommand.to_string()]
        .into_iter()
        .chain(args);
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{subcommand}: {e}"))
}

struct Expect {
    script: &'static str,
    llm_model: &'static str,
    run: &'static str,
    temperature: f32,
    bits: BaseBits,
    vicuna: bool,
    cpu_load: bool,
}

const SCRIPTS: [Expect; 6] = [
    Expect {
        script: "finetuning_sqa_7b.sh",
        llm_model: "7B",
        run: "LaVIN-7B",
        temperature: 10.0,
        bits: BaseBits::Dense,
        vicuna: false,
        cpu_load: false,
    },
    Expect {
        script: "finetuning_sqa_7b_lite.sh",
        llm_model: "7B",
        run: "LaVIN-7B-lite",
        temperature: 10.0,
        bits: BaseBits::Four,
        vicuna: false,
        cpu_load: true,
    },
    Expect {
        script: "finetuning_sqa_13b.sh",
        llm_model: "13B",
        run: "LaVIN-13B",
        temperature: 5.0,
        bits: BaseBits::Dense,
        vicuna: false,
        cpu_load: false,
    },
    Expect {
        script: "finetuning_sqa_13b_lite.sh",
        llm_model: "13B",
        run: "LaVIN-13B-lite",
        temperature: 5.0,
        bits: BaseBits::Four,
        vicuna: false,
        cpu_load: false,
    },
    Expect {
        script: "finetuning_sqa_vicuna_7b.sh",
        llm_model: "7B",
        run: "LaVIN-Vicuna-7B",
        temperature: 10.0,
        bits: BaseBits::Dense,
        vicuna: true,
        cpu_load: false,
    },
    Expect {
        script: "finetuning_sqa_vicuna_13b.sh",
        llm_model: "13B",
        run: "LaVIN-Vicuna-13B",
        temperature: 5.0,
        bits: BaseBits::Dense,
        vicuna: true,
        cpu_load: false,
    },
];

#[test]
fn original_eval_command_lines_parse() {
    for e in &SCRIPTS {
        let s = e.script;
        let cli = parse("eval-sqa", original_args(s, "eval.py"));
        let ignored = ignored_flags(&cli.command);
        let Command::EvalSqa(a) = cli.command else {
            panic!("{s}")
        };
        let a: EvalSqaArgs = a;
        // eval.py's own flags.
        assert_eq!(a.data_root, Path::new("../data"), "{s}");
        assert_eq!(
            a.caption_file.as_deref(),
            Some(Path::new("../data/captions.json")),
            "{s}"
        );
        assert_eq!(a.split, "test", "{s}");
        assert_eq!(a.prompt_format, "QCM-ALE", "{s}");
        assert_eq!(a.max_batch_size, 64, "{s}");
        assert!(!a.use_caption, "{s}");
        // Decoding: eval.py's defaults (the scripts do not set them).
        let p = a.decode.params(a.max_gen_len);
        assert_eq!((p.temperature, p.top_p, p.seed), (0.1, 0.75, 1), "{s}");
        // The model.
        let m = &a.model;
        assert_eq!(
            m.llama_model_path.as_deref(),
            Some(Path::new("../data/weights/")),
            "{s}: --ckpt_dir"
        );
        assert_eq!(m.llm_model.as_deref(), Some(e.llm_model), "{s}");
        assert_eq!(
            m.tokenizer_path.as_deref(),
            Some(Path::new("../data/weights/tokenizer.model")),
            "{s}"
        );
        let adapter = format!("./{}/checkpoint-19.pth", e.run);
        assert_eq!(
            m.adapter.as_deref(),
            Some(Path::new(&adapter)),
            "{s}: --adapter_path"
        );
        assert_eq!(m.adapter_type, Some(LlamaAdapterType::Attn), "{s}");
        assert_eq!(
            (m.adapter_dim, m.adapter_scale),
            (Some(8), Some(1.0)),
            "{s}"
        );
        assert_eq!(m.max_seq_len, Some(512), "{s}");
        assert_eq!(m.n_prompt, Some(6), "{s}");
        assert_eq!(m.temperature, Some(e.temperature), "{s}");
        assert_eq!(
            m.visual_adapter_type,
            Some(VisualAdapterType::Router),
            "{s}"
        );
        assert_eq!(m.backend.bits, e.bits, "{s}");
        assert_eq!(m.use_vicuna, e.vicuna, "{s}: --use_vicuna=True");
        // Reported as ignored.
        let expected: Vec<&str> = if e.cpu_load {
            vec!["--cpu_load"]
        } else {
            vec![]
        };
        assert_eq!(ignored.names(), expected, "{s}");
    }
}

#[test]
fn original_mme_command_line_parses() {
    let cli = parse(
        "eval-mme",
        original_args("eval_mme_benchmark.sh", "eval_mme.py"),
    );
    let ignored = ignored_flags(&cli.command);
    let Command::EvalMme(a) = cli.command else {
        panic!()
    };
    // eval_mme.py's `root_dir_` default.
    assert_eq!(a.root, Path::new("../data/mme"));
    let m = &a.model;
    assert_eq!(
        m.llama_model_path.as_deref(),
        Some(Path::new("../data/weights/"))
    );
    assert_eq!(m.llm_model.as_deref(), Some("7B"));
    assert_eq!(
        m.adapter.as_deref(),
        Some(Path::new("./15-eph-pretrain.pth"))
    );
    assert_eq!(
        (m.adapter_dim, m.adapter_scale, m.n_prompt),
        (Some(8), Some(1.0), Some(6))
    );
    assert_eq!(m.temperature, Some(5.0));
    assert_eq!(m.visual_adapter_type, Some(VisualAdapterType::Router));
    assert_eq!(
        ignored.names(),
        [
            "--data_root",
            "--caption_file",
            "--split",
            "--prompt_format",
            "--max_batch_size"
        ]
    );
    let line = ignored.line().unwrap();
    assert!(
        line.contains("--max_batch_size (eval_mme.py batches 8 images"),
        "{line}"
    );
    // `--root_dir_` is its spelling of our --root.
    let cli = parse(
        "eval-mme",
        vec!["--root_dir_".into(), "/data/MME_Benchmark_release".into()],
    );
    let Command::EvalMme(a) = cli.command else {
        panic!()
    };
    assert_eq!(a.root, Path::new("/data/MME_Benchmark_release"));
}

/// demo.py's flags (it has no script; its README line is `demo.py --server_name 127.0.0.1`):
/// `serve` and `chat` take them.
#[test]
fn demo_flags_parse_on_serve_and_chat() {
    let demo = [
        "--ckpt_dir",
        "../data/weights/",
        "--llm_model",
        "13B",
        "--max_seq_len",
        "512",
        "--adapter_type",
        "attn",
        "--adapter_path",
        "./15-eph-pretrain.pth",
        "--temperature",
        "5.",
        "--use_vicuna",
        "--options",
        "a=1",
        "b=2",
    ];
    let mut serve: Vec<String> = vec!["--server_name".into(), "0.0.0.0".into()];
    serve.extend(demo.iter().map(|s| s.to_string()));
    let cli = parse("serve", serve);
    let ignored = ignored_flags(&cli.command);
    let Command::Serve(a) = cli.command else {
        panic!()
    };
    assert_eq!(a.host, "0.0.0.0");
    let m = &a.session.model;
    assert_eq!(
        m.llama_model_path.as_deref(),
        Some(Path::new("../data/weights/"))
    );
    assert_eq!(m.llm_model.as_deref(), Some("13B"));
    assert_eq!(
        m.adapter.as_deref(),
        Some(Path::new("./15-eph-pretrain.pth"))
    );
    assert_eq!(m.temperature, Some(5.0));
    assert!(m.use_vicuna);
    assert_eq!(
        m.original_only.options.as_deref(),
        Some(&["a=1".to_string(), "b=2".to_string()][..])
    );
    assert_eq!(ignored.names(), ["--options"]);

    let cli = parse("chat", demo.iter().map(|s| s.to_string()).collect());
    let ignored = ignored_flags(&cli.command);
    let Command::Chat(a) = cli.command else {
        panic!()
    };
    assert_eq!(a.session.model.llm_model.as_deref(), Some("13B"));
    assert_eq!(ignored.names(), ["--options"]);
}

/// eval.py's other flags (fire: `--name value` or `--name=value`), each in its original
/// spelling.
#[test]
fn every_eval_py_flag_parses() {
    let args = [
        "--ckpt_dir=../w",
        "--tokenizer_path=../w/tokenizer.model",
        "--adapter_path=a.pth",
        "--data_root=../data",
        "--caption_file=../data/captions.json",
        "--max_seq_len=256",
        "--max_batch_size=8",
        "--llm_model=13B",
        "--generation_temperature=0.0",
        "--top_p=0.9",
        "--split=val",
        "--prompt_format=CQM-A",
        "--use_caption=True",
        "--options=ABCDE",
        "--adapter_type=block",
        "--adapter_dim=4",
        "--adapter_scale=0.5",
        "--n_prompt=6",
        "--hidden_proj=64",
        "--visual_adapter_type=normal",
        "--temperature=1.0",
        "--use_vicuna=False",
        "--bits=8bit",
        "--cpu_load=True",
    ];
    let cli = parse("eval-sqa", args.iter().map(|s| s.to_string()).collect());
    let ignored = ignored_flags(&cli.command);
    let Command::EvalSqa(a) = cli.command else {
        panic!()
    };
    assert_eq!(a.model.llama_model_path.as_deref(), Some(Path::new("../w")));
    assert_eq!(a.model.max_seq_len, Some(256));
    assert_eq!(a.max_batch_size, 8);
    assert_eq!(a.model.llm_model.as_deref(), Some("13B"));
    assert_eq!(
        (a.decode.generation_temperature, a.decode.top_p),
        (0.0, 0.9)
    );
    assert_eq!(
        (a.split.as_str(), a.prompt_format.as_str()),
        ("val", "CQM-A")
    );
    assert!(a.use_caption && !a.model.use_vicuna);
    assert_eq!(a.model.adapter_type, Some(LlamaAdapterType::Block));
    assert_eq!(
        (a.model.adapter_dim, a.model.adapter_scale),
        (Some(4), Some(0.5))
    );
    assert_eq!(a.model.hidden_proj, Some(64));
    assert_eq!(a.model.visual_adapter_type, Some(VisualAdapterType::Normal));
    assert_eq!(a.model.temperature, Some(1.0));
    assert_eq!(a.model.backend.bits, BaseBits::Eight);
    assert_eq!(ignored.names(), ["--cpu_load", "--options"]);
}
