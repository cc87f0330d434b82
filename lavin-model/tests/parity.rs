//! The training forward, gradients and HF loading against the bundled parity case `tiny-a`.

use burn::backend::{Autodiff, NdArray};
use lavin_model::parity::{Case, Check};

type B = Autodiff<NdArray>;

fn case() -> Case {
    Case::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity/tiny-a").as_ref())
        .expect("open tiny-a")
}

fn assert_all_pass(rows: &[Check]) {
    for r in rows {
        println!(
            "{:<60} {:>12.3e} {:>9.1e} {:<5} {}",
            r.name,
            r.error,
            r.bound,
            r.kind,
            if r.pass() { "PASS" } else { "FAIL" }
        );
    }
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| !r.pass())
        .map(|r| r.name.as_str())
        .collect();
    assert!(failed.is_empty(), "parity failures: {failed:?}");
}

#[test]
fn training_forward_and_gradients_match_the_original() {
    let case = case();
    let device = Default::default();
    let model = case
        .load_model::<B>(case.meta_llama(), &device)
        .expect("load tiny-a");
    let rows = case.check_training(&model, &device).expect("check");
    // 8 CLIP routers + clip_feats, image_embeds, h0, 2 routers, logits, loss_labels, loss + 90 grads.
    assert!(rows.len() >= 100, "only {} rows", rows.len());
    assert_all_pass(&rows);
}

#[test]
fn hf_llama_gives_the_same_logits() {
    let case = case();
    assert_all_pass(
        &case
            .check_hf_llama::<NdArray>(&Default::default())
            .expect("hf"),
    );
}
