//! Data parallel inside one process: two ranks (threads, each with its own replica and
//! optimizer, gradients averaged through the exchange over loopback) of batch 1 compute what one
//! rank of batch 1 with two accumulation micro-batches computes: same examples, mean gradient,
//! same lr per step, so the adapters agree to rounding. Both "devices" are the CPU, which
//! exercises the replicas, the rank threads and the exchange; `multi_process.rs` runs the same
//! between processes.
//!
//! Its own test binary: the backend RNG is process-global.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::backend::NdArray;
use common::{fixture, Repeat, AB};
use lavin_train::config::TrainConfig;
use lavin_train::distributed::{run_ranks, Launch};
use lavin_train::io::HostTensor;
use lavin_train::params::{collect_params, lavin_trainable_name};
use lavin_train::trainer::{optimizer_for, resume_from, train, TrainError, TrainState};

type Params = BTreeMap<String, HostTensor>;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Largest |a - b| / max(|a|, |b|, 1e-3) over all values (1e-3 keeps values near zero from
/// dominating).
fn max_rel_diff(a: &Params, b: &Params) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .flat_map(|(k, t)| {
            assert_eq!(t.shape, b[k].shape, "{k}");
            t.data.iter().zip(&b[k].data).map(|(&x, &y)| {
                let (x, y) = (x as f64, y as f64);
                (x - y).abs() / x.abs().max(y.abs()).max(1e-3)
            })
        })
        .fold(0.0, f64::max)
}

#[test]
fn two_ranks_equal_two_accumulation_steps() {
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
    let run = |cfg: &TrainConfig, dropout: f64| {
        let c = fixture(dropout);
        let data = Arc::new(Repeat::new(&c, 4));
        let devices = vec![dev; cfg.world_size()];
        let launch = Launch {
            master_port: free_port(),
            ..Launch::default()
        };
        run_ranks::<NdArray<f32>, _, TrainError, _>(&launch, &devices, |_, peer, d| {
            let mut opt = optimizer_for::<NdArray<f32>>(cfg);
            let model = c.load_model::<AB>(c.meta_llama(), d).unwrap();
            let (m, out) = train(
                cfg,
                model,
                &mut opt,
                data.clone(),
                TrainState::default(),
                7,
                d,
                peer,
                None,
            )?;
            Ok((collect_params(&m, &lavin_trainable_name), out))
        })
        .unwrap()
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
    let (pa, oa) = run(&two, 0.0);
    let (pb, ob) = run(&accum, 0.0);
    assert_eq!(oa.state.global_step, 4);
    assert_eq!(oa.state.global_step, ob.state.global_step);
    assert_eq!(oa.samples, ob.samples, "samples summed over the ranks");
    for ((sa, la), (sb, lb)) in oa.losses.iter().zip(&ob.losses) {
        assert_eq!(sa, sb);
        assert!(
            (la - lb).abs() <= 1e-6 * lb.abs(),
            "step {sa}: loss {la} vs {lb}"
        );
    }
    let init = collect_params(
        &fixture(0.0)
            .load_model::<AB>(fixture(0.0).meta_llama(), &dev)
            .unwrap(),
        &lavin_trainable_name,
    );
    assert!(
        max_rel_diff(&pa, &init) > 1e-3,
        "training moved the adapters"
    );
    let diff = max_rel_diff(&pa, &pb);
    assert!(
        diff <= 1e-6,
        "2 ranks x batch 1 vs 1 rank x batch 1 x accum 2: {diff:e}"
    );

    // With dropout each rank draws its masks from its micro-batch's seed: the same masks as the
    // accumulation run, and reproducible.
    let (pc, oc) = run(&two, 0.1);
    let (pd, _) = run(&accum, 0.1);
    assert!(max_rel_diff(&pc, &pd) <= 1e-6);
    assert!(max_rel_diff(&pc, &pa) > 1e-6, "dropout changed the run");
    let (pe, oe) = run(&two, 0.1);
    assert_eq!(oc.losses, oe.losses);
    assert_eq!(pc, pe);

    // Gradient checkpointing (blocks recomputed in backward) in the ranks' threads: without
    // dropout the plain run's adapters.
    let ckpt = TrainConfig {
        gradient_checkpointing: true,
        output_dir: d.path().join("ckpt"),
        ..two.clone()
    };
    let (pf, _) = run(&ckpt, 0.0);
    assert!(max_rel_diff(&pf, &pa) <= 1e-6);

    // Only rank 0 writes: one metrics line per step, checkpoints from rank 0.
    let metrics = lavin_train::report::read_metrics(&two.output_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 4);

    // A checkpoint of the 2-rank run cannot resume a 1-rank run (its epoch position would name
    // other examples).
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
    // The ranks `train` runs as must match the config.
    let c = fixture(0.0);
    let mut opt = optimizer_for::<NdArray<f32>>(&two);
    let model = c.load_model::<AB>(c.meta_llama(), &dev).unwrap();
    let data = Arc::new(Repeat::new(&c, 4));
    let e = train(
        &two,
        model,
        &mut opt,
        data,
        TrainState::default(),
        7,
        &dev,
        None,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::World {
                given: 1,
                expected: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("`0,1`"), "{e}");
}
