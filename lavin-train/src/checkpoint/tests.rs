use super::*;
use crate::io::HostTensor;

fn tiny(step: u64) -> Checkpoint {
    let mut model = BTreeMap::new();
    model.insert(
        "layers.0.adapter_attn.conv_A.weight".to_string(),
        HostTensor {
            shape: vec![2, 3, 1],
            data: (0..6).map(|v| v as f32).collect(),
        },
    );
    model.insert(
        "layers.0.adapter_attn.conv_A.bias".to_string(),
        HostTensor {
            shape: vec![2],
            data: vec![0.5, -0.5],
        },
    );
    let exp_avg = model.clone();
    let exp_avg_sq = model.clone();
    Checkpoint {
        meta: CheckpointMeta {
            format: FORMAT.to_string(),
            epoch: 1,
            iteration: 3,
            global_step: step,
            micro_step: 2 * step,
            skipped: 1,
            data_seed: 42,
            adam_steps: model.keys().map(|k| (k.clone(), step)).collect(),
            config: serde_json::json!({"batch_size": 2}),
            source: None,
        },
        model,
        exp_avg,
        exp_avg_sq,
    }
}

#[test]
fn roundtrip_and_keep_last() {
    let d = tempfile::tempdir().unwrap();
    for s in 1..=4 {
        tiny(s).save(d.path(), 2).unwrap();
    }
    let l = list(d.path());
    assert_eq!(l.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 4]);
    let p = latest(d.path()).unwrap();
    assert_eq!(Checkpoint::load(&p).unwrap(), tiny(4));
    // No temp files left behind.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
}

#[test]
fn corrupted_file_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let p = tiny(1).save(d.path(), 0).unwrap();
    let mut b = std::fs::read(&p).unwrap();
    b.truncate(b.len() / 2);
    std::fs::write(&p, &b).unwrap();
    let e = Checkpoint::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("checkpoint-step00000001") && e.contains("safetensors"),
        "{e}"
    );
    std::fs::write(&p, b"garbage").unwrap();
    assert!(Checkpoint::load(&p).is_err());
    let e = Checkpoint::load(&d.path().join("nope.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
}

#[test]
fn foreign_safetensors_is_not_a_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.safetensors");
    let mut t = BTreeMap::new();
    t.insert(
        "a".to_string(),
        HostTensor {
            shape: vec![1],
            data: vec![1.0],
        },
    );
    std::fs::write(&p, crate::io::to_safetensors(&t, BTreeMap::new()).unwrap()).unwrap();
    let e = Checkpoint::load(&p).unwrap_err().to_string();
    assert!(e.contains("not a lavin-train checkpoint"), "{e}");
}

#[test]
fn shape_mismatch_names_param_and_shapes() {
    let c = tiny(1);
    let want = vec![
        (
            "layers.0.adapter_attn.conv_A.weight".to_string(),
            vec![4, 3, 1],
        ),
        ("layers.0.adapter_attn.conv_A.bias".to_string(), vec![2]),
    ];
    let e = c
        .check_against(Path::new("ck"), &want)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv_A.weight") && e.contains("[2, 3, 1]") && e.contains("[4, 3, 1]"),
        "{e}"
    );
    let want = vec![("layers.0.adapter_attn.conv_A.bias".to_string(), vec![2])];
    let e = c
        .check_against(Path::new("ck"), &want)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not in model"), "{e}");
}

#[test]
fn missing_moment_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let mut c = tiny(1);
    c.exp_avg_sq.remove("layers.0.adapter_attn.conv_A.bias");
    let p = c.save(d.path(), 0).unwrap();
    let e = Checkpoint::load(&p).unwrap_err().to_string();
    assert!(e.contains("conv_A.bias") && e.contains("exp_avg_sq"), "{e}");
}

#[test]
fn reads_fixture_adapter_checkpoint() {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/parity/tiny-a/adapter/checkpoint.pth"
    ));
    let c = load_original(p).unwrap();
    assert_eq!(c.meta.epoch, 1);
    assert_eq!(
        c.model["adapter_modality_embedding.weight"].shape,
        vec![2, 64]
    );
    assert!(!c.has_moments());
}

/// An original `checkpoint-N.pth` with optimizer, scaler and an argparse.Namespace `args`
/// (built by tests/data/make_original_checkpoint.py), `module.`-prefixed names: its adapters and
/// epoch load (the optimizer entry's integer keys do not stop the reader).
#[test]
fn reads_original_full_checkpoint() {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/original-checkpoint-1.pth"
    ));
    let c = Checkpoint::load(p).unwrap();
    assert_eq!(c.meta.epoch, 2, "epoch 1 saved => resume at epoch 2");
    assert!(c.model.contains_key("adapter_modality_embedding.weight"));
    assert!(c.model.keys().all(|k| !k.starts_with("module.")));
    let fixture = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/parity/tiny-a/adapter/checkpoint.pth"
    ));
    assert_eq!(c.model, load_original(fixture).unwrap().model);
}

/// A file that is not a PyTorch checkpoint fails with an error naming it.
#[test]
fn not_a_checkpoint_fails_clearly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("checkpoint-1.pth");
    std::fs::write(&p, b"not a zip").unwrap();
    let e = Checkpoint::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("checkpoint-1.pth") && e.contains("PyTorch"),
        "{e}"
    );
}
