use super::*;
use crate::io::read_safetensors;
use crate::optim::step_module;
use crate::params::collect_params;
use burn::backend::{Autodiff, NdArray};
use burn::optim::GradientsParams;
use burn::tensor::ElementConversion;
use lavin_parity::Case;

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
        // The trainer's loss path (head on the target rows only) against the fixture.
        let loss_t = model.loss(c.batch::<AB>(&dev).unwrap());
        let loss: f64 = loss_t.clone().into_scalar().elem();
        let want = j["losses"][step - 1].as_f64().unwrap();
        worst_loss = worst_loss.max(((loss - want) / want).abs());
        let mut gp = GradientsParams::from_grads(loss_t.backward(), &model);
        let (m, rep) =
            step_module(&mut opt, model, &mut gp, 1e-3, 1.0, &lavin_trainable_name).unwrap();
        model = m;
        assert!(rep.without_grad.is_empty(), "{:?}", rep.without_grad);
        if step == 1 || step == 3 {
            let got = collect_params(&model, &lavin_trainable_name);
            for (name, t) in &got {
                let want = &fx[&format!("step{step}.{name}")];
                let g = &fx[&format!("grad_step1.{name}")];
                let gmax = g.data.iter().fold(0f32, |a, v| a.max(v.abs()));
                for ((a, b), gv) in t.data.iter().zip(&want.data).zip(&g.data) {
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
    let (model, st, _) = resume_from(p, &cfg, model, &mut opt, &dev).unwrap();
    assert_eq!(st.epoch, 1);
    assert!(opt.states().is_empty());
    let want = crate::io::read_pth_entry(p, "model").unwrap();
    assert_eq!(collect_params(&model, &lavin_trainable_name), want);
}

/// burn-train's own path: the model record of `Trainee` is the adapters (nothing else), the
/// optimizer record the moments, and both load back into fresh ones exactly.
#[test]
fn burn_records_hold_adapters_and_moments_and_load_back() {
    use crate::engine::model::Trainee;
    use crate::engine::optimizer::LavinOptimizer;
    use burn::module::Module;
    use burn::optim::Optimizer;

    let dev = Default::default();
    let c = case();
    let model = c.load_model::<AB>(c.meta_llama(), &dev).unwrap();
    let adapters = collect_params(&model, &lavin_trainable_name);
    // Moments from one real step.
    let mut adam = AdamW::<NdArray<f32>>::new(AdamWConfig::default());
    let loss = model.loss(c.batch::<AB>(&dev).unwrap());
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    let (model, _) = step_module(
        &mut adam,
        model,
        &mut grads,
        1e-3,
        1.0,
        &lavin_trainable_name,
    )
    .unwrap();
    let stepped = collect_params(&model, &lavin_trainable_name);
    assert_ne!(stepped, adapters);

    let record = Trainee { lavin: model }.into_record();
    let names: Vec<&str> = record.adapters.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        stepped.keys().map(String::as_str).collect::<Vec<_>>()
    );
    let fresh = Trainee {
        lavin: c.load_model::<AB>(c.meta_llama(), &dev).unwrap(),
    };
    let loaded = fresh.load_record(record);
    assert_eq!(
        collect_params(&loaded.lavin, &lavin_trainable_name),
        stepped
    );

    let (m, v, s) = crate::params::moments_to_host(&adam);
    let opt = LavinOptimizer::<AB>::new(adam);
    let rec = Optimizer::<Trainee<AB>, AB>::to_record(&opt);
    let other = LavinOptimizer::<AB>::new(AdamW::new(AdamWConfig::default()));
    let other = Optimizer::<Trainee<AB>, AB>::load_record(other, rec);
    let back = crate::params::moments_to_host(&other.state().adam);
    assert!(!m.is_empty());
    assert_eq!(back, (m, v, s));
}
