//! `--gradient-checkpointing` (ViT and LLaMA blocks recomputed in backward) trains
//! bit-identically on the embedded tiny default, whose adapters have no dropout. (With dropout,
//! each block draws its masks from the step's seed; `lavin-model/tests/recompute.rs` checks that
//! the recomputation draws the forward's masks.)
//!
//! Its own test binary: the backend's RNG is process-global, so a test running in parallel would
//! change the adapters' dropout masks between the two runs compared here.

use lavin_train::cli::TrainArgs;
use lavin_train::config::TrainConfig;
use lavin_train::run::{run, RunOptions};

#[test]
fn gradient_checkpointing_trains_identically() {
    // Recomputing the blocks in backward must not change a single number of the run.
    let tmp = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        train_limit: 8,
        val_limit: 2,
    };
    let losses = |name: &str, checkpointing: bool| {
        let out = tmp.path().join(name);
        let mut args = TrainArgs {
            output_dir: Some(out.clone()),
            epochs: Some(1),
            batch_size: Some(4),
            checkpoint_every: Some(0),
            keep_last: Some(0),
            bits: Some(lavin_model::quant::BaseBits::Eight),
            ..TrainArgs::default()
        };
        args.gradient_checkpointing = Some(checkpointing);
        args.warmup_epochs = Some(0.0); // so the first step already moves the adapters
        let s = run(&args, &opts).unwrap();
        let saved = TrainConfig::load(&out.join("config.toml")).unwrap();
        assert_eq!(saved.gradient_checkpointing, checkpointing);
        let m = lavin_train::report::read_metrics(&out.join("metrics.jsonl")).unwrap();
        let adapters = std::fs::read(out.join("adapters.safetensors")).unwrap();
        (
            s.steps,
            m.iter().map(|m| m.loss).collect::<Vec<_>>(),
            adapters,
        )
    };
    let plain = losses("plain", false);
    let ckpt = losses("ckpt", true);
    assert_eq!(plain.0, 2);
    assert_ne!(plain.1[0], plain.1[1], "the first step changed nothing");
    assert_eq!(plain.1, ckpt.1);
    assert!(plain.2 == ckpt.2, "trained adapters differ");
}
