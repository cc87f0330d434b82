//! Adapters that describe themselves: the settings stored with `adapters.safetensors` (and the
//! original `checkpoint-N.pth`'s `args`) shape the model `lavin-infer` loads without repeated
//! training flags; a flag that says otherwise is refused; older files keep the flags' defaults.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use burn::backend::NdArray;
use clap::Parser;
use lavin_data::Tokenizer;
use lavin_infer::load::{resolve_config, RouterTemperature, Settings};
use lavin_infer::model_args::ModelArgs;
use lavin_model::quant::BaseBits;
use lavin_model::weights::adapter_meta::{
    read_safetensors_metadata, ADAPTER_CONFIG_KEY, FORMAT_VERSION_KEY,
};
use lavin_model::weights::adapters::{adapter_tensors, write_safetensors};
use lavin_model::weights::{read_adapter_meta, save_adapters, AdapterMeta};
use lavin_model::{LavinConfig, LlamaAdapterType, VisualAdapterType};

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    model: ModelArgs,
}

fn args(flags: &[&str]) -> ModelArgs {
    let argv = std::iter::once("t").chain(flags.iter().copied());
    Flags::try_parse_from(argv).unwrap().model
}

fn tokenizer() -> Tokenizer {
    let base = lavin_model::bundled::base_dir();
    Tokenizer::from_file(base.join(lavin_model::bundled::TOKENIZER_FILE)).unwrap()
}

/// The bundled base as `lavin-infer` reads it (shapes from its weights), with adapters nothing
/// defaults to.
fn trained_config() -> LavinConfig {
    let mut c = resolve(&[], RouterTemperature::Script(10.0)).unwrap();
    c.adapter.llama = LlamaAdapterType::Block;
    c.adapter.visual = VisualAdapterType::Normal;
    c.adapter.dim = 4;
    c.adapter.scale = 0.5;
    c.adapter.temperature = 3.0;
    c.adapter.hidden_proj = 16;
    c.max_seq_len = 80;
    c
}

/// Saves the adapters of a freshly built `config` model as lavin-model saves them.
fn save(config: &LavinConfig, dir: &Path) -> PathBuf {
    let model = config.init::<NdArray>(&Default::default());
    let path = dir.join("adapters.safetensors");
    save_adapters(&model, &path).unwrap();
    path
}

fn resolve(flags: &[&str], router: RouterTemperature) -> anyhow::Result<LavinConfig> {
    Ok(resolve_config(&args(flags), router, &tokenizer())?.config)
}

#[test]
fn no_flags_resolve_to_the_trained_config() {
    let dir = tempfile::tempdir().unwrap();
    let trained = trained_config();
    let path = save(&trained, dir.path());
    let adapter = path.to_str().unwrap();
    let r = resolve_config(
        &args(&["--adapter", adapter]),
        RouterTemperature::Script(10.0),
        &tokenizer(),
    )
    .unwrap();
    assert_eq!(r.config, trained);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    // Flags that agree with the file are fine, in either spelling.
    let agreeing = [
        "--adapter",
        adapter,
        "--adapter_type",
        "block",
        "--visual-adapter-type",
        "normal",
        "--adapter-dim",
        "4",
        "--adapter_scale",
        "0.5",
        "--temperature",
        "3",
        "--hidden-proj",
        "16",
        "--n_prompt",
        "2",
    ];
    assert_eq!(
        resolve(&agreeing, RouterTemperature::Script(10.0)).unwrap(),
        trained
    );
    // The context window may be widened at inference.
    let wide = resolve(
        &["--adapter", adapter, "--max-seq-len", "200"],
        RouterTemperature::Script(10.0),
    )
    .unwrap();
    assert_eq!(wide.max_seq_len, 200);
    assert_eq!(wide.adapter, trained.adapter);
}

#[test]
fn a_contradicting_flag_names_both_values_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(&trained_config(), dir.path());
    let adapter = path.to_str().unwrap();
    let cases = [
        (
            vec!["--adapter-type", "attn"],
            "--adapter-type attn contradicts",
            "(adapter_type = block)",
        ),
        (
            vec!["--visual_adapter_type", "router"],
            "--visual-adapter-type router contradicts",
            "(visual_adapter_type = normal)",
        ),
        (
            vec!["--adapter-dim", "8"],
            "--adapter-dim 8 contradicts",
            "(adapter_dim = 4)",
        ),
        (
            vec!["--adapter-scale", "1"],
            "--adapter-scale 1.0 contradicts",
            "(adapter_scale = 0.5)",
        ),
        (
            vec!["--temperature", "10"],
            "--temperature 10.0 contradicts",
            "(temperature = 3.0)",
        ),
        (
            vec!["--hidden-proj", "32"],
            "--hidden-proj 32 contradicts",
            "(hidden_proj = 16)",
        ),
    ];
    for (flags, says, file_value) in cases {
        let mut all = vec!["--adapter", adapter];
        all.extend(flags);
        let e = format!(
            "{:#}",
            resolve(&all, RouterTemperature::Script(10.0)).unwrap_err()
        );
        assert!(
            e.contains(says) && e.contains(file_value) && e.contains(adapter),
            "{e}"
        );
    }
}

#[test]
fn the_demo_keeps_its_router_temperature_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let trained = trained_config();
    let path = save(&trained, dir.path());
    let adapter = path.to_str().unwrap();
    let r = resolve_config(
        &args(&["--adapter", adapter]),
        RouterTemperature::Demo(5.0),
        &tokenizer(),
    )
    .unwrap();
    assert_eq!(r.config.adapter.temperature, 5.0);
    assert_eq!(
        r.notes,
        ["router temperature 5.0 from the demo, adapters trained with 3.0"]
    );
    // Everything else still comes from the file.
    let mut expected = trained.clone();
    expected.adapter.temperature = 5.0;
    assert_eq!(r.config, expected);
    // An explicit value wins in the demo's commands too, and is said when it differs.
    let r = resolve_config(
        &args(&["--adapter", adapter, "--temperature", "3"]),
        RouterTemperature::Demo(5.0),
        &tokenizer(),
    )
    .unwrap();
    assert_eq!((r.config.adapter.temperature, r.notes.len()), (3.0, 0));
    let r = resolve_config(
        &args(&["--adapter", adapter, "--temperature", "7"]),
        RouterTemperature::Demo(5.0),
        &tokenizer(),
    )
    .unwrap();
    assert_eq!(
        r.notes,
        ["router temperature 7.0 from --temperature, adapters trained with 3.0"]
    );
}

#[test]
fn files_without_settings_keep_the_flag_defaults() {
    let dir = tempfile::tempdir().unwrap();
    // As written before the metadata existed: the tensors alone.
    let old = lavin_model::bundled::config();
    let model = old.init::<NdArray>(&Default::default());
    let path = dir.path().join("old.safetensors");
    write_safetensors(&path, &adapter_tensors(&model), &BTreeMap::new()).unwrap();
    assert_eq!(read_adapter_meta(&path).unwrap(), None);
    let adapter = path.to_str().unwrap();
    let c = resolve(&["--adapter", adapter], RouterTemperature::Script(10.0)).unwrap();
    let a = &c.adapter;
    assert_eq!(
        (a.llama, a.visual, a.dim, a.scale, a.temperature),
        (
            LlamaAdapterType::Attn,
            VisualAdapterType::Router,
            8,
            1.0,
            10.0
        )
    );
    assert_eq!(
        (a.hidden_proj, c.max_seq_len),
        (old.adapter.hidden_proj, 512)
    );
    let r = resolve_config(
        &args(&["--adapter", adapter]),
        RouterTemperature::Demo(5.0),
        &tokenizer(),
    )
    .unwrap();
    assert_eq!((r.config.adapter.temperature, r.notes.len()), (5.0, 0));
    // Any flag is taken as it is.
    let c = resolve(
        &[
            "--adapter",
            adapter,
            "--adapter-type",
            "block",
            "--adapter-dim",
            "4",
        ],
        RouterTemperature::Script(10.0),
    )
    .unwrap();
    assert_eq!(
        (c.adapter.llama, c.adapter.dim),
        (LlamaAdapterType::Block, 4)
    );
}

#[test]
fn saved_settings_round_trip_and_the_bytes_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let trained = trained_config();
    let path = save(&trained, dir.path());
    let meta = read_adapter_meta(&path).unwrap().expect("settings stored");
    assert_eq!(meta, AdapterMeta::from_config(&trained));
    assert_eq!(
        (meta.adapter_dim, meta.n_prompt, meta.max_seq_len),
        (Some(4), Some(2), Some(80))
    );
    let raw = read_safetensors_metadata(&path).unwrap();
    assert_eq!(raw[FORMAT_VERSION_KEY], "1");
    assert!(raw[ADAPTER_CONFIG_KEY].contains("\"adapter_type\":\"block\""));
    // The same model saves to the same bytes (the metadata is written in a fixed order).
    let model = trained.init::<NdArray>(&Default::default());
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    let meta = AdapterMeta::from_config(&trained).with_base(
        "tiny",
        Some("tiny"),
        lavin_model::Precision::F32,
        BaseBits::Eight,
    );
    for p in [&a, &b] {
        lavin_model::weights::save_adapters_with_meta(&model, p, &meta).unwrap();
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(read_adapter_meta(&a).unwrap(), Some(meta));
    // The tensors still load under their original names.
    let fresh = trained.init::<NdArray>(&Default::default());
    lavin_model::weights::load_adapters(fresh, &a, &Default::default()).unwrap();
}

#[test]
fn unreadable_settings_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_config().init::<NdArray>(&Default::default());
    let tensors = adapter_tensors(&model);
    let write = |name: &str, version: &str, json: &str| {
        let path = dir.path().join(name);
        let meta = BTreeMap::from([
            (FORMAT_VERSION_KEY.to_string(), version.to_string()),
            (ADAPTER_CONFIG_KEY.to_string(), json.to_string()),
        ]);
        write_safetensors(&path, &tensors, &meta).unwrap();
        path
    };
    let newer = write("newer.safetensors", "2", "{}");
    let e = read_adapter_meta(&newer).unwrap_err().to_string();
    assert!(
        e.contains("newer.safetensors") && e.contains(FORMAT_VERSION_KEY) && e.contains("`2`"),
        "{e}"
    );
    let bad = write("bad.safetensors", "1", r#"{"adapter_type":"sideways"}"#);
    let e = read_adapter_meta(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains(ADAPTER_CONFIG_KEY) && e.contains("sideways"),
        "{e}"
    );
    // The command names the flag that pointed at it.
    let e = format!(
        "{:#}",
        resolve(
            &["--adapter", bad.to_str().unwrap()],
            RouterTemperature::Script(10.0)
        )
        .unwrap_err()
    );
    assert!(e.contains("--adapter") && e.contains("sideways"), "{e}");
}

#[test]
fn the_original_checkpoint_args_are_its_settings() {
    // `{'model', 'optimizer', 'epoch', 'scaler', 'args': argparse.Namespace(...)}` as the
    // original's `save_model` writes it (see lavin-train/tests/data/make_original_checkpoint.py).
    let pth = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lavin-train/tests/data/original-checkpoint-1.pth");
    let meta = read_adapter_meta(&pth).unwrap().expect("args read");
    assert_eq!(meta.adapter_type, Some(LlamaAdapterType::Attn));
    assert_eq!(meta.adapter_dim, Some(8));
    assert_eq!(meta.temperature, Some(10.0));
    // Flags the Namespace does not carry stay unset.
    assert_eq!((meta.visual_adapter_type, meta.n_prompt), (None, None));
    let flags = args(&["--adapter", pth.to_str().unwrap(), "--adapter-dim", "4"]);
    let stored = Some((pth.as_path(), &meta));
    let e = Settings::resolve(&flags, RouterTemperature::Script(10.0), stored)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--adapter-dim 4 contradicts")
            && e.contains("original-checkpoint-1.pth")
            && e.contains("(adapter_dim = 8)"),
        "{e}"
    );
    let flags = args(&["--adapter", pth.to_str().unwrap()]);
    let s = Settings::resolve(&flags, RouterTemperature::Demo(5.0), stored).unwrap();
    assert_eq!(
        s.notes,
        ["router temperature 5.0 from the demo, adapters trained with 10.0"]
    );
}

#[test]
fn bits_take_the_original_eval_spelling() {
    for (spelling, bits) in [
        ("16bits", BaseBits::Dense),
        ("8bits", BaseBits::Eight),
        ("4bits", BaseBits::Four),
        ("8bit", BaseBits::Eight),
    ] {
        assert_eq!(args(&["--bits", spelling]).backend.bits, bits, "{spelling}");
    }
}

/// The real binary: adapters with non-default settings, no training flag, a chat turn.
#[test]
fn the_binary_loads_self_describing_adapters_without_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(&trained_config(), dir.path());
    let run = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lavin-infer"))
            .args([
                "chat",
                "--backend",
                "ndarray",
                "--max-gen-len",
                "3",
                "--adapter",
            ])
            .arg(&path)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"What is in the picture?\n/quit\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // A generation error would be printed in the chat and the session go on.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().filter(|l| l.starts_with("> ")).count() == 2 && !stdout.contains("error"),
        "{stdout}"
    );
    let note = "router temperature 5.0 from the demo, adapters trained with 3.0";
    assert_eq!(stderr.matches(note).count(), 1, "{stderr}");
    // The settings were the file's: the same file with a contradicting flag is refused.
    let out = run(&["--adapter-dim", "8"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--adapter-dim 8 contradicts") && stderr.contains("(adapter_dim = 4)"),
        "{stderr}"
    );
}
