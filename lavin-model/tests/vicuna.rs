//! The original's `--use_vicuna`: the HF-named Vicuna delta is added onto the Meta-layout LLaMA
//! as is (no q/k un-permutation), from `<root>/vicuna_<llm_model>` unless given.

use std::collections::BTreeMap;
use std::path::Path;

use lavin_model::error::WeightsError;
use lavin_model::weights::adapters::write_safetensors;
use lavin_model::weights::{open_llama, LlamaWeights};
use lavin_parity::Case;

const CASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity/tiny-a");

/// `root/7B` = the case's Meta LLaMA; `root/vicuna_7B/model.safetensors` = `delta`.
fn layout(root: &Path, delta: &[(&str, Vec<usize>, f32)]) {
    std::os::unix::fs::symlink(Path::new(CASE).join("llama"), root.join("7B")).unwrap();
    let dir = root.join("vicuna_7B");
    std::fs::create_dir_all(&dir).unwrap();
    let tensors: Vec<_> = delta
        .iter()
        .map(|(k, shape, v)| {
            let n = shape.iter().product();
            (k.to_string(), shape.clone(), vec![*v; n])
        })
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &tensors, &BTreeMap::new()).unwrap();
}

#[test]
fn delta_is_added_onto_meta_weights_without_unpermuting() {
    let case = Case::open(CASE.as_ref()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    layout(
        tmp.path(),
        &[
            ("model.layers.0.self_attn.q_proj.weight", vec![64, 64], 0.5),
            ("model.norm.weight", vec![64], -1.0),
        ],
    );
    let plain = LlamaWeights::locate(tmp.path(), "7B", None).unwrap();
    assert!(matches!(plain, LlamaWeights::Meta(_)));
    let vicuna = LlamaWeights::locate(tmp.path(), "7B", Some(None)).unwrap();
    assert!(matches!(vicuna, LlamaWeights::MetaPlusVicunaDelta { .. }));

    let base = open_llama(&plain, &case.config).unwrap();
    let sum = open_llama(&vicuna, &case.config).unwrap();
    let get = |s: &dyn lavin_model::weights::TensorSource, k: &str| s.get(k).unwrap().unwrap();
    for (key, delta) in [
        ("layers.0.attention.wq.weight", 0.5),
        ("norm.weight", -1.0),
        ("layers.1.attention.wq.weight", 0.0), // not in the delta: unchanged
    ] {
        let (b, v) = (get(base.as_ref(), key), get(sum.as_ref(), key));
        assert_eq!(b.shape, v.shape);
        // Element by element at the same position: the HF permutation is not undone.
        for (x, y) in b.data.iter().zip(&v.data) {
            assert_eq!(*y, *x + delta, "{key}");
        }
    }
}

#[test]
fn vicuna_errors_name_the_folder_or_key() {
    let case = Case::open(CASE.as_ref()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    layout(
        tmp.path(),
        &[("model.layers.0.self_attn.q_proj.weight", vec![64, 32], 0.5)],
    );
    // A delta folder that does not exist.
    let missing = tmp.path().join("nowhere");
    let e = LlamaWeights::locate(tmp.path(), "7B", Some(Some(&missing))).unwrap_err();
    assert!(
        matches!(&e, WeightsError::Config { path, .. } if path == &missing),
        "{e}"
    );
    // A delta whose shape disagrees with the base.
    let w = LlamaWeights::locate(tmp.path(), "7B", Some(None)).unwrap();
    let e = open_llama(&w, &case.config)
        .unwrap()
        .get("layers.0.attention.wq.weight")
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("vicuna_7B") && msg.contains("layers.0.attention.wq.weight"),
        "{msg}"
    );
    // The rule applies to Meta weights only.
    let e = LlamaWeights::locate(&Path::new(CASE).join("hf-llama"), "7B", Some(None)).unwrap_err();
    assert!(e.to_string().contains("Meta-layout"), "{e}");
}
