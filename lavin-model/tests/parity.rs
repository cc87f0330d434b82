//! The training forward, gradients and HF loading against the bundled parity case `tiny-a`.

use burn::backend::{Autodiff, NdArray};
use lavin_parity::{Case, Check};

type B = Autodiff<NdArray>;

fn case() -> Case {
    Case::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity/tiny-a").as_ref())
        .expect("open tiny-a")
}

/// The case's model from its Meta-layout LLaMA, on the default device.
fn model(case: &Case) -> lavin_model::Lavin<B> {
    case.load_model::<B>(case.meta_llama(), &Default::default())
        .expect("load tiny-a")
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
    let model = model(&case);
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

/// `Lavin::loss` (the trainer's path: head and cross-entropy on the target rows only) gives the
/// loss and adapter gradients of the full-logits forward that the fixture pins.
#[test]
fn target_rows_loss_equals_full_forward() {
    use lavin_parity::adapter_grads;
    let case = case();
    let device = Default::default();
    let model = model(&case);
    let full = model.forward_train(case.batch(&device).unwrap());
    let rows = model.loss(case.batch(&device).unwrap());
    let (lf, lr): (f32, f32) = (full.loss.clone().into_scalar(), rows.clone().into_scalar());
    assert!(((lf - lr) / lf).abs() < 1e-6, "loss {lf} vs {lr}");
    let gf = adapter_grads(&model, &full.loss.backward());
    let gr = adapter_grads(&model, &rows.backward());
    assert_eq!(gf.len(), gr.len());
    assert!(gf.len() > 50, "{} adapter gradients", gf.len());
    for ((name, _, a), (_, _, b)) in gf.iter().zip(&gr) {
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            err <= 1e-5 * scale,
            "{name}: max error {err:e} (scale {scale:e})"
        );
    }
}
