//! Block recomputation (`lavin_model::recompute`) gives the gradients of the plain autodiff
//! pass (dropout off), and of a plain pass seeded per block as it seeds (dropout on).
//!
//! Its own test binary, one test: the backend RNG is process-global, so a test running in
//! parallel (a model's random initialisation) would draw from it between a seed and a mask.

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use lavin_model::clip::is_feature_block;
use lavin_model::recompute::{block_seed, vision_seed};
use lavin_model::{Lavin, LavinBatch, LavinConfig};

type B = Autodiff<NdArray<f32>>;

fn config(dropout: f64) -> LavinConfig {
    let mut c = common::config();
    c.adapter.dropout = dropout;
    c
}

fn model(dropout: f64) -> Lavin<B> {
    common::dense_model::<B>(&config(dropout), &Default::default())
}

fn batch(c: &LavinConfig) -> LavinBatch<B> {
    common::batch::<B>(c, &Default::default())
}

/// Every trainable parameter's gradient, flattened, in visiting order.
fn flat(model: &Lavin<B>, grads: &GradientsParams) -> Vec<(usize, Vec<f32>)> {
    struct Collect<'a>(&'a GradientsParams, Vec<(usize, Vec<f32>)>, usize);
    impl ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if p.is_require_grad() {
                let g = self
                    .0
                    .get::<NdArray<f32>, D>(p.id)
                    .expect("every adapter has a gradient");
                self.1.push((self.2, g.into_data().to_vec().unwrap()));
            }
            self.2 += 1;
        }
    }
    let mut c = Collect(grads, Vec::new(), 0);
    model.visit(&mut c);
    c.1
}

fn assert_close(got: &[(usize, Vec<f32>)], want: &[(usize, Vec<f32>)]) {
    assert_eq!(got.len(), want.len());
    assert!(want.len() > 20, "only {} trainable tensors", want.len());
    for ((i, g), (_, w)) in got.iter().zip(want) {
        let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let err = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-5 * scale,
            "parameter #{i}: max error {err:e} (scale {scale:e})"
        );
    }
}

/// The plain pass: one graph, the RNG seeded with `seed`, or, when `per_block`, re-seeded
/// before each ViT and LLaMA block as the recomputing pass does.
fn plain(
    model: &Lavin<B>,
    seed: u64,
    per_block: bool,
    divisor: f64,
) -> (f64, Vec<(usize, Vec<f32>)>) {
    let device = Default::default();
    let b = batch(model.config());
    let p = if per_block {
        let tower = &model.clip;
        let mut x = tower.stem(b.images);
        let mut feats = Vec::new();
        for (i, block) in tower.resblocks.iter().enumerate() {
            B::seed(&device, vision_seed(seed, i));
            x = block.forward(x, tower.router_mode()).0;
            if is_feature_block(i) {
                feats.push(x.clone().narrow(1, 0, 1));
            }
        }
        model.prepare_from_feats(b.tokens, b.labels, b.indicators, Tensor::cat(feats, 1))
    } else {
        B::seed(&device, seed);
        model.prepare(b)
    };
    let input = model.block_input(p.mask);
    let mut h = p.h0;
    for (i, block) in model.llama.layers.iter().enumerate() {
        if per_block {
            B::seed(&device, block_seed(seed, i));
        }
        h = block.forward(h, &input, None, None).0;
    }
    let loss = model.loss_from_hidden(h, p.targets);
    let value: f64 = loss.clone().into_scalar().elem();
    let grads = GradientsParams::from_grads(loss.div_scalar(divisor).backward(), model);
    (value, flat(model, &grads))
}

fn recomputed(model: &Lavin<B>, seed: u64, divisor: f64) -> (f64, Vec<(usize, Vec<f32>)>) {
    let out = model.loss_and_grads_recomputed(batch(model.config()), divisor, seed);
    (out.loss, flat(model, &out.grads.expect("finite loss")))
}

#[test]
fn recomputed_gradients_equal_one_graph_with_and_without_dropout() {
    same_gradients_as_one_graph_without_dropout();
    recomputation_draws_the_forward_dropout_masks();
    block_seeds_differ();
}

fn same_gradients_as_one_graph_without_dropout() {
    let m = model(0.0);
    let (loss, want) = plain(&m, 7, false, 1.0);
    // Also through `Lavin::loss`, the trainer's plain path.
    let direct: f64 = m.loss(batch(m.config())).into_scalar().elem();
    assert!(
        (loss - direct).abs() <= 1e-6 * direct.abs(),
        "{loss} vs {direct}"
    );
    let (got_loss, got) = recomputed(&m, 7, 1.0);
    assert!(
        (got_loss - loss).abs() <= 1e-6 * loss.abs(),
        "{got_loss} vs {loss}"
    );
    assert_close(&got, &want);
    // The divisor scales every gradient.
    let (_, halved) = recomputed(&m, 7, 2.0);
    let want_halved: Vec<_> = want
        .iter()
        .map(|(i, g)| (*i, g.iter().map(|v| v / 2.0).collect()))
        .collect();
    assert_close(&halved, &want_halved);
}

fn recomputation_draws_the_forward_dropout_masks() {
    let m = model(0.5);
    let (loss, want) = plain(&m, 11, true, 1.0);
    let (got_loss, got) = recomputed(&m, 11, 1.0);
    assert!(
        (got_loss - loss).abs() <= 1e-6 * loss.abs(),
        "{got_loss} vs {loss}"
    );
    assert_close(&got, &want);
    // Dropout is on: another seed gives other gradients.
    let (_, other) = recomputed(&m, 12, 1.0);
    assert!(other.iter().zip(&got).any(|((_, a), (_, b))| a != b));
}

fn block_seeds_differ() {
    let seeds: Vec<u64> = (0..64).map(|i| block_seed(3, i)).collect();
    let mut sorted = seeds.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seeds.len());
    assert_ne!(block_seed(3, 0), block_seed(4, 0));
    assert_ne!(block_seed(3, 0), vision_seed(3, 0));
}
