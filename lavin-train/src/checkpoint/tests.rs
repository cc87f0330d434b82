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

type NB = burn::backend::NdArray<f32>;

fn load(p: &Path) -> Result<Checkpoint, CheckpointError> {
    Checkpoint::load::<NB>(p, &Default::default())
}

fn save(c: &Checkpoint, dir: &Path) -> PathBuf {
    c.save::<NB>(dir, &Default::default()).unwrap()
}

#[test]
fn roundtrip_through_burn_train_files() {
    let d = tempfile::tempdir().unwrap();
    let dir = dir_of(d.path());
    for s in [2, 4, 10] {
        save(&tiny(s), &dir);
    }
    // The three records of each step, no temp files left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(names.contains(&"scheduler-10.mpk".to_string()), "{names:?}");
    let l = list(d.path());
    assert_eq!(l.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 4, 10]);
    assert_eq!(l, list(&dir), "an output dir or its checkpoint folder");
    // By any of the three files, or by the folder (newest).
    assert_eq!(load(&path(d.path(), 4)).unwrap(), tiny(4));
    assert_eq!(load(&dir.join("optim-2.mpk")).unwrap(), tiny(2));
    assert_eq!(load(d.path()).unwrap(), tiny(10));
    // A checkpoint missing a file is not listed and not resumed from.
    std::fs::remove_file(dir.join("scheduler-10.mpk")).unwrap();
    assert_eq!(latest(d.path()), Some(path(d.path(), 4)));
    let e = load(&path(d.path(), 10)).unwrap_err().to_string();
    assert!(
        e.contains("incomplete") && e.contains("scheduler-10.mpk"),
        "{e}"
    );
}

#[test]
fn half_written_files_are_cleaned() {
    let d = tempfile::tempdir().unwrap();
    save(&tiny(3), d.path());
    std::fs::write(d.path().join(".optim-6.mpk"), b"cut short").unwrap();
    std::fs::write(d.path().join(".notes"), b"not ours").unwrap();
    let removed = clean_partial(d.path()).unwrap();
    assert_eq!(removed, vec![d.path().join(".optim-6.mpk")]);
    assert!(d.path().join(".notes").exists());
    assert_eq!(list(d.path()).len(), 1);
}

#[test]
fn corrupted_file_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let p = save(&tiny(1), d.path());
    let opt = d.path().join("optim-1.mpk");
    let mut b = std::fs::read(&opt).unwrap();
    b.truncate(b.len() / 2);
    std::fs::write(&opt, &b).unwrap();
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("optim-1.mpk"), "{e}");
    std::fs::write(&p, b"garbage").unwrap();
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("model-1.mpk"), "{e}");
    let e = load(&d.path().join("nope.mpk")).unwrap_err().to_string();
    assert!(e.contains("nope.mpk"), "{e}");
    let e = load(&d.path().join("empty")).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn other_files_are_not_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.safetensors");
    std::fs::write(&p, b"whatever").unwrap();
    let e = load(&p).unwrap_err().to_string();
    assert!(
        e.contains("x.safetensors") && e.contains("model-N.mpk"),
        "{e}"
    );
    std::fs::create_dir(d.path().join("run")).unwrap();
    let e = load(&d.path().join("run")).unwrap_err().to_string();
    assert!(e.contains("no complete checkpoint"), "{e}");
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
    let p = save(&c, d.path());
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("conv_A.bias") && e.contains("exp_avg"), "{e}");
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
    let c = load(p).unwrap();
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
    let e = load(&p).unwrap_err().to_string();
    assert!(
        e.contains("checkpoint-1.pth") && e.contains("PyTorch"),
        "{e}"
    );
}
