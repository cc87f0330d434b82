//! The default `train` pipeline on a small subset of the bundled mini dataset (a few steps, debug
//! build): outputs exist and parse, adapters load back, an interrupted run resumes to the same
//! next-step loss, and bad input fails before training.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use lavin_train::cli::TrainArgs;
use lavin_train::config::TrainConfig;
use lavin_train::report::read_metrics;
use lavin_train::run::{plan_model, resolve_config, run, RunOptions};

fn args(out: &Path) -> TrainArgs {
    TrainArgs {
        output_dir: Some(out.to_path_buf()),
        epochs: Some(2),
        warmup_epochs: Some(0.5),
        batch_size: Some(4),
        checkpoint_every: Some(2),
        keep_last: Some(0),
        ..TrainArgs::default()
    }
}

const OPTS: RunOptions = RunOptions {
    train_limit: 16,
    val_limit: 6,
};

fn checkpoint(dir: &Path, step: u64) -> PathBuf {
    lavin_train::checkpoint::path(dir, step)
}

#[test]
fn default_pipeline_outputs_and_exact_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let s = run(&args(&a), &OPTS).unwrap();

    // summary.json
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    for k in [
        "initial_loss",
        "final_loss",
        "val_accuracy",
        "chance_accuracy",
        "trainable_params",
        "steps",
        "wall_seconds",
        "samples_per_second",
    ] {
        assert!(v.get(k).is_some_and(|x| !x.is_null()), "summary.json: {k}");
    }
    assert_eq!(s.steps, 8, "2 epochs x 16/4 steps");
    assert!(s.initial_loss.is_finite() && s.final_loss.is_finite());
    let (acc, chance) = (s.val_accuracy.unwrap(), s.chance_accuracy.unwrap());
    assert!((0.0..=1.0).contains(&acc) && chance > 0.0 && chance <= 0.5);
    assert!(s.trainable_params > 0);

    // metrics, plot, config
    let m = read_metrics(&a.join("metrics.jsonl")).unwrap();
    assert_eq!(m.len(), 8);
    assert_eq!(
        m.iter().map(|x| x.step).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(&std::fs::read(a.join("loss.png")).unwrap()[1..4], b"PNG");
    let cfg = TrainConfig::load(&a.join("config.toml")).unwrap();
    assert_eq!(cfg.batch_size, 4);

    // adapters load back (original names) into a fresh model of the run's shapes
    let plan = plan_model(&cfg).unwrap();
    let dev = Default::default();
    let fresh = plan.config.init::<NdArray>(&dev);
    let loaded =
        lavin_model::weights::load_adapters(fresh, &a.join("adapters.safetensors"), &dev).unwrap();
    let got = lavin_model::weights::adapters::adapter_tensors(&loaded);
    assert!(got.iter().any(|t| t.0.contains("adapter")));

    // resume from the checkpoint after step 2 (mid-epoch) into another folder: step 3 has the
    // same loss and lr as the uninterrupted run.
    let ck = checkpoint(&a, 2);
    assert!(ck.is_file(), "{}", ck.display());
    let b = tmp.path().join("b");
    let mut ra = args(&b);
    ra.resume = Some(ck);
    run(&ra, &OPTS).unwrap();
    let mb = read_metrics(&b.join("metrics.jsonl")).unwrap();
    assert_eq!(mb[0].step, 3);
    let (la, lb) = (m[2].loss, mb[0].loss);
    assert!((la - lb).abs() <= 1e-5 * la.abs().max(1e-3), "{la} vs {lb}");
    assert!((m[2].lr - mb[0].lr).abs() < 1e-12);
    assert_eq!(mb.len(), 6);
}

#[test]
fn bad_input_fails_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // corrupted checkpoint
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    let mut a = args(&out);
    a.resume = Some(bad.clone());
    let e = format!("{:#}", run(&a, &OPTS).unwrap_err());
    assert!(e.contains("bad.safetensors"), "{e}");
    assert!(!out.join("metrics.jsonl").exists());
    // unknown prompt format, missing data root
    let mut a = args(&out);
    a.prompt_format = Some("QXM-Z".into());
    let e = format!("{:#}", run(&a, &OPTS).unwrap_err());
    assert!(e.contains("QXM-Z"), "{e}");
    let mut a = args(&out);
    a.data_root = Some(tmp.path().join("nope"));
    let e = format!("{:#}", run(&a, &OPTS).unwrap_err());
    assert!(e.contains("nope"), "{e}");
    // several devices on a CPU backend
    let mut a = args(&out);
    a.devices = Some("0,1".into());
    a.backend = Some(lavin_backends::BackendKind::Ndarray);
    let e = format!("{:#}", run(&a, &OPTS).unwrap_err());
    assert!(
        e.contains("--devices 0,1") && e.contains("one device"),
        "{e}"
    );
    // --llama-model-path without --clip-model-path
    let mut a = args(&out);
    a.llama_model_path = Some(tmp.path().to_path_buf());
    let e = format!("{:#}", run(&a, &OPTS).unwrap_err());
    assert!(
        e.contains("llama_model_path") || e.contains("clip_model_path"),
        "{e}"
    );
    assert!(!out.join("metrics.jsonl").exists());
    // a checkpoint folder that cannot be made
    let blocked = tmp.path().join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("checkpoint"), b"").unwrap();
    let e = format!("{:#}", run(&args(&blocked), &OPTS).unwrap_err());
    assert!(e.contains("blocked/checkpoint"), "{e}");
    assert!(!blocked.join("metrics.jsonl").exists());
    // no-argument run resolves to runs/default
    let c = resolve_config(&TrainArgs::default()).unwrap();
    assert_eq!(c.output_dir, PathBuf::from("runs/default"));
}

/// `--validate-every-epoch` with `--early-stopping 1` on a run that cannot improve (lr ~0):
/// burn-train's early stopping ends it after epoch 2, and the checkpointing strategy keeps the
/// best epoch's checkpoint (epoch 1, step 4) beside the newest although `--keep-last 1`.
#[test]
fn validation_every_epoch_keeps_the_best_and_stops_early() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("flat");
    let mut a = args(&out);
    a.epochs = Some(5);
    a.lr = Some(1e-12);
    a.keep_last = Some(1);
    a.validate_every_epoch = Some(true);
    a.early_stopping = Some(1);
    let s = run(&a, &OPTS).unwrap();
    assert_eq!(s.steps, 8, "stopped after epoch 2 of 5 (4 steps each)");
    assert!(s.val_accuracy.is_some());
    let kept: Vec<u64> = lavin_train::checkpoint::list(&out)
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(kept, vec![4, 8]);
    // Validated twice, each epoch into burn-train's metric logs.
    for e in [1, 2] {
        let log = out.join(format!("valid/epoch-{e}/Accuracy.log"));
        assert!(log.is_file(), "{}", log.display());
    }
    assert!(!out.join("valid/epoch-3").exists());

    // Early stopping without per-epoch validation is refused up front.
    let mut a = args(&tmp.path().join("refused"));
    a.early_stopping = Some(2);
    let e = format!("{:#}", run(&a, &OPTS).unwrap_err());
    assert!(
        e.contains("early_stopping") && e.contains("--validate-every-epoch"),
        "{e}"
    );
}
