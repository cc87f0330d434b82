//! Data parallel between processes over loopback, as on several machines: two `lavin-train`
//! processes (`--nnodes 2`, batch b each; node 0 hosts rank 0) train the adapters one
//! process trains with batch b and `--accum-iter 2`, and log the same losses. A rank whose
//! peers never come ends with a clear error instead of waiting forever; SIGTERM writes a
//! checkpoint that `--resume` continues from; after `kill -9` the newest complete checkpoint
//! continues to the uninterrupted run's adapters, bit for bit.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lavin_train::checkpoint::{path, Checkpoint};
use lavin_train::report::read_metrics;

const STEPS: u64 = 12;

fn lavin_train() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lavin-train"));
    // The default run's data and base, cut to a few seconds of work.
    c.args([
        "--backend",
        "flex",
        "--train-limit",
        "96",
        "--val-limit",
        "4",
    ])
    .args(["--seed", "3"])
    .env_remove("WORLD_SIZE")
    .env_remove("RANK")
    .env_remove("MASTER_ADDR")
    .env_remove("MASTER_PORT")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// A port free now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait for `child` at most `limit`; kill it past that.
fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} still running after {limit:?}; killed. stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn adapters_at(dir: &Path, step: u64) -> BTreeMap<String, Vec<f32>> {
    let ck =
        Checkpoint::load::<burn::backend::NdArray>(&path(dir, step), &Default::default()).unwrap();
    ck.model.into_iter().map(|(k, t)| (k, t.data)).collect()
}

#[test]
fn two_processes_over_loopback_equal_one_with_accumulation() {
    let tmp = tempfile::tempdir().unwrap();
    let (two, one) = (tmp.path().join("two"), tmp.path().join("one"));
    let port = free_port().to_string();
    let steps = STEPS.to_string();
    let rank = |r: &str| {
        lavin_train()
            .args(["--max-steps", &steps])
            .args(["--batch-size", "4", "--nnodes", "2", "--node-rank", r])
            .args(["--master-addr", "127.0.0.1", "--master-port", &port])
            .args(["--collective-timeout", "300"])
            .arg("--output-dir")
            .arg(&two)
            .spawn()
            .unwrap()
    };
    // Rank 1 first: the order of arrival does not matter.
    let r1 = rank("1");
    let r0 = rank("0");
    let single = lavin_train()
        .args(["--max-steps", &steps])
        .args(["--batch-size", "4", "--accum-iter", "2", "--output-dir"])
        .arg(&one)
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(900);
    let out0 = finish(r0, limit, "rank 0");
    let out1 = finish(r1, limit, "rank 1");
    finish(single, limit, "the one-process run");

    let log0 = String::from_utf8_lossy(&out0.stderr);
    assert!(log0.contains("node 0 of 2"), "{log0}");
    assert!(String::from_utf8_lossy(&out1.stderr).contains("rank 1 done"));

    // Same adapters (to rounding: the mean is taken in another order) ...
    let (a, b) = (adapters_at(&two, STEPS), adapters_at(&one, STEPS));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let init_moved = a.values().flatten().any(|x| *x != 0.0);
    assert!(init_moved);
    let mut worst = 0.0f64;
    for (k, x) in &a {
        for (p, q) in x.iter().zip(&b[k]) {
            let (p, q) = (*p as f64, *q as f64);
            worst = worst.max((p - q).abs() / p.abs().max(q.abs()).max(1e-3));
        }
    }
    assert!(worst <= 1e-5, "adapters differ by {worst:e} (relative)");
    // ... and the same losses, logged once (by rank 0).
    let (ma, mb) = (
        read_metrics(&two.join("metrics.jsonl")).unwrap(),
        read_metrics(&one.join("metrics.jsonl")).unwrap(),
    );
    assert_eq!(ma.len(), STEPS as usize);
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x.step, y.step);
        assert!(
            (x.loss - y.loss).abs() <= 1e-5 * y.loss.abs(),
            "step {}: {} vs {}",
            x.step,
            x.loss,
            y.loss
        );
    }
    assert!(two.join("adapters.safetensors").is_file());
}

#[test]
fn a_rank_without_peers_stops_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let t0 = Instant::now();
    let out = lavin_train()
        .args(["--nnodes", "2", "--node-rank", "1", "--master-port", &port])
        .args(["--collective-timeout", "3", "--output-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("rendezvous of 2 ranks")
            && err.contains(&port)
            && err.contains("--collective-timeout"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(120));

    // A node rank outside the group is refused before anything is loaded.
    let out = lavin_train()
        .args(["--nnodes", "2", "--node-rank", "2", "--output-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--node-rank 2 must be below --nnodes 2"),
        "{err}"
    );
}

#[test]
fn sigterm_checkpoints_and_resume_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut child = lavin_train()
        .args(["--batch-size", "4", "--max-steps", "40", "--output-dir"])
        .arg(&dir)
        .spawn()
        .unwrap();
    // Wait for the first logged step, then ask the run to stop as Ctrl-C would.
    let t0 = Instant::now();
    while read_metrics(&dir.join("metrics.jsonl")).map_or(true, |m| m.is_empty()) {
        assert!(t0.elapsed() < Duration::from_secs(600), "no step logged");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = finish(child, Duration::from_secs(600), "the interrupted run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted after step"), "{err}");
    let cks = lavin_train::checkpoint::list(&dir);
    let (step, last) = cks.last().cloned().expect("a checkpoint");
    assert!((1..40).contains(&step), "stopped at step {step}");
    assert!(
        !dir.join("adapters.safetensors").exists(),
        "no export after an interrupt"
    );

    let out = lavin_train()
        .args(["--batch-size", "4", "--max-steps", "40", "--resume"])
        .arg(&last)
        .arg("--output-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = m.iter().map(|x| x.step).collect();
    assert_eq!(steps, (1..=40).collect::<Vec<_>>(), "every step once");
}

/// The adapters a finished run exported.
fn exported(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let (t, _) = lavin_train::io::read_safetensors(&dir.join("adapters.safetensors")).unwrap();
    t.into_iter().map(|(k, v)| (k, v.data)).collect()
}

#[test]
fn kill_9_mid_epoch_then_resume_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, killed) = (tmp.path().join("full"), tmp.path().join("killed"));
    // 24 micro-batches per epoch: 30 steps cross into the second epoch.
    let run = |out: &Path| {
        let mut c = lavin_train();
        c.args(["--batch-size", "4", "--max-steps", "30"])
            .args([
                "--checkpoint-every",
                "3",
                "--keep-last",
                "2",
                "--output-dir",
            ])
            .arg(out);
        c
    };
    finish(
        run(&full).spawn().unwrap(),
        Duration::from_secs(600),
        "the full run",
    );
    let mut child = run(&killed).spawn().unwrap();
    let t0 = Instant::now();
    while read_metrics(&killed.join("metrics.jsonl")).map_or(0, |m| m.len()) < 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no 10 steps logged"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: nothing is flushed or written on the way out
    child.wait().unwrap();
    let before = lavin_train::checkpoint::list(&killed);
    assert!(!before.is_empty() && before.len() <= 2, "{before:?}");

    // `--resume <output dir>` takes its newest complete checkpoint.
    let out = run(&killed).arg("--resume").arg(&killed).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let resumed_at = before.last().unwrap().0;
    assert!(err.contains(&format!("step {resumed_at}")), "{err}");
    let steps: Vec<u64> = read_metrics(&killed.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|x| x.step)
        .collect();
    assert_eq!(steps, (1..=30).collect::<Vec<_>>(), "every step once");
    assert!(
        exported(&full) == exported(&killed),
        "adapters differ after kill -9 + resume"
    );
    // The newest two checkpoints stay (30 is the last step); nothing half-written is left.
    let folder = killed.join("checkpoint");
    let names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    let after: Vec<u64> = lavin_train::checkpoint::list(&killed)
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(after, vec![27, 30]);
}

/// Early stopping across processes: rank 0 validates and decides, the other rank learns it in
/// the exchange, and both stop after the same epoch (the run cannot improve: lr ~0).
#[test]
fn early_stopping_stops_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let port = free_port().to_string();
    let rank = |r: &str| {
        lavin_train()
            .args(["--epochs", "5", "--lr", "1e-12", "--batch-size", "4"])
            .args(["--validate-every-epoch", "--early-stopping", "1"])
            .args(["--nnodes", "2", "--node-rank", r])
            .args(["--master-addr", "127.0.0.1", "--master-port", &port])
            .args(["--collective-timeout", "300", "--output-dir"])
            .arg(&dir)
            .spawn()
            .unwrap()
    };
    let (r0, r1) = (rank("0"), rank("1"));
    let limit = Duration::from_secs(600);
    let out0 = finish(r0, limit, "rank 0");
    finish(r1, limit, "rank 1");
    let log0 = String::from_utf8_lossy(&out0.stderr);
    assert!(log0.contains("early stopping after epoch 2"), "{log0}");
    // 96 examples / (batch 4 x 2 ranks) = 12 steps per epoch, two epochs.
    let m = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    assert_eq!(m.len(), 24);
    assert!(dir.join("adapters.safetensors").is_file());
}
