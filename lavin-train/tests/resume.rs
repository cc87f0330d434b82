//! `--resume` from a mid-epoch checkpoint reproduces the uninterrupted run exactly, with adapter
//! dropout off and on (the trainer reseeds the backend RNG per micro-batch from the data seed,
//! epoch and iteration, which a checkpoint restores), also with gradient checkpointing (whose
//! blocks re-seed from that seed).
//!
//! Its own test binary, one test: the backend RNG is process-global, so a test running in
//! parallel would draw from it between the reseed and the dropout masks.

mod common;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use common::{fixture, Repeat, AB};
use lavin_train::config::TrainConfig;
use lavin_train::params::{collect_params, lavin_trainable_name};
use lavin_train::trainer::{optimizer_for, resume_from, train, TrainState};

fn resume_is_exact(dropout: f64, gradient_checkpointing: bool) {
    let dev = Default::default();
    let c = fixture(dropout);
    let data = std::sync::Arc::new(Repeat::new(&c, 4));
    let d = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        batch_size: 1,
        accum_iter: 2,
        epochs: 2,
        warmup_epochs: 0.5,
        lr: Some(1e-3),
        checkpoint_every: 1,
        keep_last: 0,
        output_dir: d.path().join("a"),
        gradient_checkpointing,
        ..TrainConfig::tiny_default()
    };
    // Run A: uninterrupted (4 micro-batches per epoch, 2 steps per epoch).
    let mut opt = optimizer_for::<NdArray<f32>>(&cfg);
    let model = c.load_model::<AB>(c.meta_llama(), &dev).unwrap();
    let (model_a, out_a) = train(
        &cfg,
        model,
        &mut opt,
        data.clone(),
        TrainState::default(),
        7,
        &dev,
        None,
        None,
    )
    .unwrap();
    assert_eq!(out_a.state.global_step, 4);
    assert!(out_a.losses.iter().all(|(_, l)| l.is_finite()));
    let cks = lavin_train::checkpoint::list(&cfg.output_dir);
    assert_eq!(
        cks.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // Adapters, moments and position only: nothing of the frozen base.
    let model_file = std::fs::metadata(&cks[0].1).unwrap().len();
    let n_adapters: usize = collect_params(&model_a, &lavin_trainable_name)
        .values()
        .map(|t| t.data.len())
        .sum();
    assert!(
        model_file < 4 * n_adapters as u64 + 64 * 1024,
        "{model_file} bytes for {n_adapters} adapter values"
    );
    let metrics = lavin_train::report::read_metrics(&cfg.output_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 4);
    assert_eq!(metrics[0].lr, 0.0, "warmup starts at lr 0");

    // Run B: resume from the checkpoint after step 1 (epoch 0, micro-batch 2), after the
    // process has drawn other random numbers.
    let _ = Tensor::<AB, 1>::random([1000], burn::tensor::Distribution::Default, &dev);
    let cfg_b = TrainConfig {
        output_dir: d.path().join("b"),
        ..cfg.clone()
    };
    let mut opt_b = optimizer_for::<NdArray<f32>>(&cfg_b);
    let fresh = c.load_model::<AB>(c.meta_llama(), &dev).unwrap();
    let (model, st, seed) = resume_from(&cks[0].1, &cfg_b, fresh, &mut opt_b, &dev).unwrap();
    assert_eq!((st.epoch, st.iteration, st.global_step, seed), (0, 2, 1, 7));
    let (model_b, out_b) =
        train(&cfg_b, model, &mut opt_b, data, st, seed, &dev, None, None).unwrap();
    assert_eq!(out_b.state, out_a.state);
    assert_eq!(
        out_b.losses,
        out_a.losses[1..].to_vec(),
        "dropout {dropout}"
    );
    let pa = collect_params(&model_a, &lavin_trainable_name);
    let pb = collect_params(&model_b, &lavin_trainable_name);
    assert_eq!(
        pa, pb,
        "dropout {dropout}: resumed run must reproduce the uninterrupted one"
    );
}

#[test]
fn resume_mid_epoch_is_exact_with_and_without_dropout() {
    resume_is_exact(0.0, false);
    resume_is_exact(0.1, false);
    resume_is_exact(0.1, true);
}
