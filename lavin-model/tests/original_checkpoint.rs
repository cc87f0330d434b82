//! The original LaVIN training checkpoint (`{'model', 'optimizer', 'epoch', 'scaler', 'args'}`,
//! integer optimizer-state keys, an `argparse.Namespace`) loads through `PthSource`.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use lavin_model::weights::adapters::adapter_tensors;
use lavin_model::weights::source::PthSource;
use lavin_model::weights::torch_pickle::TorchPickleReader;
use lavin_model::weights::{load_adapters, TensorSource};
use lavin_parity::Case;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn original() -> PathBuf {
    root().join("lavin-train/tests/data/original-checkpoint-1.pth")
}

fn fixture() -> PathBuf {
    root().join("tests/data/parity/tiny-a/adapter/checkpoint.pth")
}

fn tiny_a() -> PathBuf {
    root().join("tests/data/parity/tiny-a")
}

fn assert_same(a: &dyn TensorSource, b: &dyn TensorSource) {
    let mut ka = a.keys();
    let mut kb = b.keys();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb, "key sets differ");
    assert!(!ka.is_empty());
    for k in &ka {
        let ta = a.require(k).unwrap();
        let tb = b.require(k).unwrap();
        assert_eq!(ta.shape, tb.shape, "{k}: shape");
        assert_eq!(ta.data, tb.data, "{k}: values");
    }
}

#[test]
fn original_checkpoint_model_matches_fixture() {
    // burn-store alone cannot read it: this goes through the tolerant fallback
    assert!(burn_store::pytorch::PytorchReader::with_top_level_key(&original(), "model").is_err());
    let orig = PthSource::open(&original(), Some("model"))
        .unwrap()
        .strip_prefix("module.");
    let fix = PthSource::open(&fixture(), Some("model"))
        .unwrap()
        .strip_prefix("module.");
    assert!(orig.keys().iter().all(|k| !k.starts_with("module.")));
    assert_same(&orig, &fix);
    // prefixed names still resolve
    let k = fix.keys()[0].clone();
    assert_eq!(
        orig.get(&format!("module.{k}")).unwrap(),
        fix.get(&k).unwrap()
    );
}

#[test]
fn tolerant_reader_agrees_with_burn_store_on_plain_checkpoint() {
    let r = TorchPickleReader::open(&fixture(), Some("model")).unwrap();
    let fix = PthSource::open(&fixture(), Some("model")).unwrap();
    let mut keys = fix.keys();
    keys.sort();
    assert_eq!(r.keys(), keys);
    for k in &keys {
        assert_eq!(r.get(k).unwrap(), fix.get(k).unwrap(), "{k}");
    }
    // the whole pickle flattens too, optimizer state with integer keys included
    let all = TorchPickleReader::open(&original(), None).unwrap();
    assert!(all.contains("optimizer.state.0.state1"), "{:?}", all.keys());
    assert!(all.keys().iter().any(|k| k.starts_with("model.module.")));
    let err = TorchPickleReader::open(&original(), Some("epoch")).unwrap_err();
    assert!(err.to_string().contains("epoch"), "{err}");
    let err = TorchPickleReader::open(&original(), Some("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn damaged_files_give_errors_naming_the_file() {
    let bytes = std::fs::read(original()).unwrap();
    let dir = std::env::temp_dir().join(format!("lavin-orig-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated-half.pth", bytes[..bytes.len() / 2].to_vec()),
        ("truncated-tail.pth", bytes[..bytes.len() - 10].to_vec()),
        ("empty.pth", Vec::new()),
        ("random.pth", {
            let mut s = 0x2545_f491_4f6c_dd1du64;
            (0..4096)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 32) as u8
                })
                .collect()
        }),
    ];
    for (name, data) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &data).unwrap();
        let err = PthSource::open(&path, Some("model"))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
    // Damage inside the zip entries (pickle or storage bytes): error or same data, no panic.
    let path = dir.join("flipped.pth");
    for step in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
        let mut b = bytes.clone();
        b[step] ^= 0x5a;
        std::fs::write(&path, &b).unwrap();
        if let Ok(src) = PthSource::open(&path, Some("model")) {
            for k in src.keys() {
                let _ = src.get(&k);
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn load_adapters_reads_original_checkpoint() {
    let case = Case::open(&tiny_a()).unwrap();
    let device = Default::default();
    let a = load_adapters(case.config.init::<NdArray>(&device), &original(), &device).unwrap();
    let b = load_adapters(case.config.init::<NdArray>(&device), &fixture(), &device).unwrap();
    let (ta, tb) = (adapter_tensors(&a), adapter_tensors(&b));
    assert!(!ta.is_empty());
    assert_eq!(ta, tb);
}
