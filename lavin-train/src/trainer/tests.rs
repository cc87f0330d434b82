use super::*;
use crate::io::read_safetensors;
use crate::optim::step_module;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Int, Tensor};
use lavin_model::parity::Case;

type AB = Autodiff<NdArray<f32>>;

fn case() -> Case {
    Case::open(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/parity/tiny-a"
    )))
    .unwrap()
}

/// Three AdamW steps with our forward/backward and optimizer from the fixture's adapters:
/// losses within 1e-4 relative, parameters within 1e-5 absolute outside low-gradient elements.
#[test]
fn end_to_end_three_steps_match_fixture() {
    let dev = Default::default();
    let c = case();
    let mut model = c.load_model::<AB>(c.meta_llama(), &dev).unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("optim.json")).unwrap()).unwrap();
    let (fx, _) = read_safetensors(&c.dir.join("optim.safetensors")).unwrap();
    let mut opt = AdamW::<NdArray<f32>>::new(AdamWConfig {
        weight_decay: 0.02,
        ..AdamWConfig::default()
    });
    let mut worst_loss: f64 = 0.0;
    let mut worst_param: f64 = 0.0;
    for step in 1..=3 {
        let out = model.forward_train(c.batch::<AB>(&dev).unwrap());
        let loss: f64 = out.loss.clone().into_scalar().elem();
        let want = j["losses"][step - 1].as_f64().unwrap();
        worst_loss = worst_loss.max(((loss - want) / want).abs());
        let mut gp = GradientsParams::from_grads(out.loss.backward(), &model);
        let (m, rep) =
            step_module(&mut opt, model, &mut gp, 1e-3, 1.0, &lavin_trainable_name).unwrap();
        model = m;
        assert!(rep.without_grad.is_empty(), "{:?}", rep.without_grad);
        if step == 1 || step == 3 {
            let got = collect_params(&model, &lavin_trainable_name);
            for (name, t) in &got {
                let want = &fx[&format!("step{step}.{name}")];
                let g = &fx[&format!("grad_step1.{name}")];
                let gmax = g.values.iter().fold(0f32, |a, v| a.max(v.abs()));
                for ((a, b), gv) in t.values.iter().zip(&want.values).zip(&g.values) {
                    if gv.abs() >= 1e-3 * gmax {
                        worst_param = worst_param.max((a - b).abs() as f64);
                    }
                }
            }
        }
    }
    eprintln!("end-to-end: loss rel err {worst_loss:e}, param abs err {worst_param:e}");
    assert!(worst_loss <= 1e-4, "loss rel error {worst_loss}");
    assert!(worst_param <= 1e-5, "param abs error {worst_param}");
}

/// The fixture's two items, repeated: example i = fixture item i % 2.
struct Repeat {
    tokens: Tensor<AB, 2, Int>,
    labels: Tensor<AB, 2, Int>,
    images: Tensor<AB, 4>,
    indicators: Tensor<AB, 1, Int>,
    n: usize,
}

impl BatchSource<AB> for Repeat {
    fn len(&self) -> usize {
        self.n
    }
    fn batch(
        &self,
        indices: &[usize],
        device: &burn::tensor::Device<AB>,
    ) -> Result<(LavinBatch<AB>, BatchStats), String> {
        let rows: Vec<i64> = indices.iter().map(|i| (*i % 2) as i64).collect();
        let idx = Tensor::<AB, 1, Int>::from_data(
            burn::tensor::TensorData::new(rows, [indices.len()]),
            device,
        );
        let b = LavinBatch {
            tokens: self.tokens.clone().select(0, idx.clone()),
            labels: self.labels.clone().select(0, idx.clone()),
            images: self.images.clone().select(0, idx.clone()),
            indicators: self.indicators.clone().select(0, idx),
        };
        Ok((
            b,
            BatchStats {
                samples: indices.len(),
                tokens: indices.len() * 48,
            },
        ))
    }
}

fn repeat(c: &Case, n: usize) -> Repeat {
    let b = c.batch::<AB>(&Default::default()).unwrap();
    Repeat {
        tokens: b.tokens,
        labels: b.labels,
        images: b.images,
        indicators: b.indicators,
        n,
    }
}

#[test]
fn epoch_order_is_seeded_permutation() {
    let a = epoch_order(10, 3, 1);
    assert_eq!(a, epoch_order(10, 3, 1));
    assert_ne!(a, epoch_order(10, 3, 2));
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..10).collect::<Vec<_>>());
    assert_eq!(steps_per_epoch(10, 3, 1), 3);
    assert_eq!(steps_per_epoch(10, 3, 2), 1);
}

/// Resume from a mid-epoch checkpoint reproduces the uninterrupted run exactly.
#[test]
fn resume_mid_epoch_is_exact() {
    let dev = Default::default();
    let c = case();
    let data = repeat(&c, 4);
    let d = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        batch_size: 1,
        accum_iter: 2,
        epochs: 2,
        warmup_epochs: 0.5,
        lr: Some(1e-3),
        checkpoint_every: 1,
        keep_last: 0,
        output_dir: d.path().join("a"),
        ..TrainConfig::tiny_default()
    };
    // Run A: uninterrupted (4 micro-batches per epoch, 2 steps per epoch).
    let mut opt = optimizer_for::<NdArray<f32>>(&cfg);
    let model = c.load_model::<AB>(c.meta_llama(), &dev).unwrap();
    let (model_a, out_a) =
        train(&cfg, model, &mut opt, &data, TrainState::default(), 7, &dev).unwrap();
    assert_eq!(out_a.state.global_step, 4);
    assert_eq!(out_a.losses.len(), 4);
    assert!(out_a.losses.iter().all(|(_, l)| l.is_finite()));
    let cks = crate::checkpoint::list(&cfg.output_dir);
    assert_eq!(
        cks.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let metrics = crate::report::read_metrics(&cfg.output_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 4);
    assert_eq!(metrics[0].lr, 0.0, "warmup starts at lr 0");

    // Run B: resume from the checkpoint after step 1 (epoch 0, micro-batch 2).
    let cfg_b = TrainConfig {
        output_dir: d.path().join("b"),
        ..cfg.clone()
    };
    let mut opt_b = optimizer_for::<NdArray<f32>>(&cfg_b);
    let fresh = c.load_model::<AB>(c.meta_llama(), &dev).unwrap();
    let (model, st, seed) = resume_from(&cks[0].1, fresh, &mut opt_b, &dev).unwrap();
    assert_eq!((st.epoch, st.iteration, st.global_step, seed), (0, 2, 1, 7));
    let (model_b, out_b) = train(&cfg_b, model, &mut opt_b, &data, st, seed, &dev).unwrap();
    assert_eq!(out_b.state, out_a.state);
    assert_eq!(out_b.losses, out_a.losses[1..].to_vec());
    let pa = collect_params(&model_a, &lavin_trainable_name);
    let pb = collect_params(&model_b, &lavin_trainable_name);
    assert_eq!(pa, pb, "resumed run must reproduce the uninterrupted one");
}

#[test]
fn resume_from_original_checkpoint_gives_adapters_and_epoch() {
    let dev = Default::default();
    let c = case();
    let cfg = TrainConfig::tiny_default();
    let mut opt = optimizer_for::<NdArray<f32>>(&cfg);
    let model = c.config.init::<AB>(&dev);
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/parity/tiny-a/adapter/checkpoint.pth"
    ));
    let (model, st, _) = resume_from(p, model, &mut opt, &dev).unwrap();
    assert_eq!(st.epoch, 1);
    assert!(opt.states().is_empty());
    let want = crate::io::read_pth_entry(p, "model").unwrap();
    assert_eq!(collect_params(&model, &lavin_trainable_name), want);
}
