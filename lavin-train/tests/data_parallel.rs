//! Data-parallel training (`--devices`): one micro-batch split over two devices computes what
//! two accumulation micro-batches on one device compute (same examples, mean gradient, same lr
//! per step), so the adapters after training are bit-identical. The two "devices" are the CPU
//! twice, which exercises the replicas, worker threads, gradient transfer and adapter sync; real
//! multi-GPU runs need CUDA.
//!
//! Its own test binary: the backend RNG is process-global (see `resume.rs`).

mod common;

use burn::backend::NdArray;
use common::{fixture, Repeat, AB};
use lavin_train::config::TrainConfig;
use lavin_train::params::{collect_params, lavin_trainable_name};
use lavin_train::trainer::{optimizer_for, resume_from, train, TrainError, TrainState};

#[test]
fn two_devices_equal_two_accumulation_steps() {
    let dev = Default::default();
    let d = tempfile::tempdir().unwrap();
    let base = TrainConfig {
        batch_size: 1,
        epochs: 2,
        warmup_epochs: 0.5,
        lr: Some(1e-3),
        clip_grad: Some(0.05),
        checkpoint_every: 0,
        keep_last: 0,
        ..TrainConfig::tiny_default()
    };
    let run = |cfg: &TrainConfig, dropout: f64, devices: &[_]| {
        let c = fixture(dropout);
        let data = Repeat::new(&c, 4);
        let mut opt = optimizer_for::<NdArray<f32>>(cfg);
        let model = c.load_model::<AB>(c.meta_llama(), &dev).unwrap();
        let (m, out) = train(
            cfg,
            model,
            &mut opt,
            &data,
            TrainState::default(),
            7,
            devices,
        )
        .unwrap();
        (collect_params(&m, &lavin_trainable_name), out)
    };
    let two = TrainConfig {
        devices: "0,1".into(),
        accum_iter: 1,
        output_dir: d.path().join("two"),
        ..base.clone()
    };
    let accum = TrainConfig {
        devices: "0".into(),
        accum_iter: 2,
        output_dir: d.path().join("accum"),
        ..base.clone()
    };
    let (pa, oa) = run(&two, 0.0, &[dev, dev]);
    let (pb, ob) = run(&accum, 0.0, &[dev]);
    assert_eq!(oa.state.global_step, 4);
    assert_eq!(oa.state.global_step, ob.state.global_step);
    assert_eq!(oa.samples, ob.samples);
    assert_eq!(oa.losses, ob.losses);
    let init = collect_params(
        &fixture(0.0)
            .load_model::<AB>(fixture(0.0).meta_llama(), &dev)
            .unwrap(),
        &lavin_trainable_name,
    );
    assert_ne!(pa, init, "training moved the adapters");
    assert_eq!(
        pa, pb,
        "2 devices x batch 1 == 1 device x batch 1 x accum 2"
    );

    // With dropout the shards draw their masks from their own seeds: reproducible.
    let (pc, oc) = run(&two, 0.1, &[dev, dev]);
    let (pd, od) = run(&two, 0.1, &[dev, dev]);
    assert_eq!(oc.losses, od.losses);
    assert_eq!(pc, pd);
    assert_ne!(pc, pa, "dropout changed the run");

    // Gradient checkpointing (blocks recomputed in backward) in the shards' threads: without
    // dropout the plain run's adapters; with dropout (each block re-seeded, under a lock shared
    // by the threads) reproducible.
    let ckpt = TrainConfig {
        gradient_checkpointing: true,
        output_dir: d.path().join("ckpt"),
        ..two.clone()
    };
    let (pe, oe) = run(&ckpt, 0.0, &[dev, dev]);
    assert_eq!(oe.losses, oa.losses);
    assert_eq!(pe, pa);
    let (pf, of) = run(&ckpt, 0.1, &[dev, dev]);
    let (pg, og) = run(&ckpt, 0.1, &[dev, dev]);
    assert_eq!(of.losses, og.losses);
    assert_eq!(pf, pg);
    assert_ne!(pf, pe, "dropout changed the run");

    // A checkpoint of the 2-device run cannot resume a 1-device run (its epoch position would
    // name other examples).
    let ck = &lavin_train::checkpoint::list(&two.output_dir)[0].1;
    let c = fixture(0.0);
    let mut opt = optimizer_for::<NdArray<f32>>(&accum);
    let model = c.load_model::<AB>(c.meta_llama(), &dev).unwrap();
    let one = TrainConfig {
        devices: "0".into(),
        ..two.clone()
    };
    match resume_from(ck, &one, model, &mut opt, &dev) {
        Err(e @ TrainError::BatchMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("= 2") && msg.contains("has 1"), "{msg}");
        }
        other => panic!("expected a batch mismatch, got {:?}", other.map(|r| r.1)),
    }
    // Devices passed must match the config.
    let c = fixture(0.0);
    let mut opt = optimizer_for::<NdArray<f32>>(&two);
    let model = c.load_model::<AB>(c.meta_llama(), &dev).unwrap();
    let data = Repeat::new(&c, 4);
    let e = train(
        &two,
        model,
        &mut opt,
        &data,
        TrainState::default(),
        7,
        &[dev],
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::Devices {
                given: 1,
                expected: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("`0,1`"), "{e}");
}
