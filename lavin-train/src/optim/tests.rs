use super::*;
use crate::io::{read_pth_entry, read_safetensors, HostTensor};
use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::TensorData;
use std::path::PathBuf;

type B = NdArray<f32>;
type AB = Autodiff<B>;

fn case() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/parity/tiny-a"
    ))
}

fn to_tensor(t: &HostTensor) -> Tensor<B, 1> {
    Tensor::from_data(
        TensorData::new(t.data.clone(), [t.data.len()]),
        &Default::default(),
    )
}

fn max_abs_diff(a: &Tensor<B, 1>, b: &HostTensor) -> f64 {
    let a = a.to_data().to_vec::<f32>().unwrap();
    a.iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

#[test]
fn adamw_matches_torch_on_fixture() {
    let dir = case();
    let mut params: BTreeMap<String, (Vec<usize>, Tensor<B, 1>)> =
        read_pth_entry(&dir.join("adapter/checkpoint.pth"), "model")
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, (t.shape.clone(), to_tensor(&t))))
            .collect();
    assert!(!params.is_empty());
    let (fx, _) = read_safetensors(&dir.join("optim.safetensors")).unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("optim.json")).unwrap()).unwrap();
    let lr = j["lr"].as_f64().unwrap();
    let cfg = AdamWConfig {
        beta1: j["betas"][0].as_f64().unwrap(),
        beta2: j["betas"][1].as_f64().unwrap(),
        eps: j["eps"].as_f64().unwrap(),
        weight_decay: j["weight_decay"].as_f64().unwrap(),
    };
    // timm groups agree with the fixture's listing.
    for g in j["param_groups"].as_array().unwrap() {
        let decay = g["weight_decay"].as_f64().unwrap() > 0.0;
        for n in g["params"].as_array().unwrap() {
            let n = n.as_str().unwrap();
            assert_eq!(decays(n, params[n].0.len()), decay, "group of {n}");
        }
    }
    let mut opt = AdamW::<B>::new(cfg);
    let mut worst: f64 = 0.0;
    for step in 1..=3 {
        for (name, (shape, p)) in params.iter_mut() {
            let g = &fx[&format!("grad_step{step}.{name}")];
            assert_eq!(&g.shape, shape);
            *p = opt
                .step_flat(name, shape, p.clone(), to_tensor(g), lr)
                .unwrap();
            if step == 1 || step == 3 {
                let want = &fx[&format!("step{step}.{name}")];
                let d = max_abs_diff(p, want);
                assert!(d <= 1e-6, "step {step} {name}: max abs error {d}");
                worst = worst.max(d);
            }
        }
    }
    eprintln!(
        "AdamW parity: max abs error {worst:e} over {} params",
        params.len()
    );
    assert!(opt.states().values().all(|s| s.step == 3));
}

#[test]
fn clip_coefficient_like_torch() {
    assert_eq!(clip_coefficient(0.5, 1.0), 1.0);
    let c = clip_coefficient(4.0, 1.0);
    assert!((c - 1.0 / (4.0 + 1e-6)).abs() < 1e-15);
    let d: Tensor<B, 1> = Tensor::from_floats([3.0, 0.0], &Default::default());
    let e: Tensor<B, 1> = Tensor::from_floats([0.0, 4.0], &Default::default());
    assert!((global_norm(&[d, e]) - 5.0).abs() < 1e-9);
}

#[test]
fn state_shape_mismatch_is_named() {
    let mut opt = AdamW::<B>::new(AdamWConfig::default());
    let p: Tensor<B, 1> = Tensor::zeros([4], &Default::default());
    opt.step_flat("x.weight", &[2, 2], p.clone(), p.clone(), 0.1)
        .unwrap();
    let err = opt
        .step_flat("x.weight", &[4], p.clone(), p, 0.1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x.weight") && err.contains("[2, 2]") && err.contains("[4]"),
        "{err}"
    );
}

#[derive(Module, Debug)]
struct Toy<B: Backend> {
    adapter: Linear<B>,
    frozen: Linear<B>,
}

impl Toy<AB> {
    /// A trainable 3 -> 2 layer in front of a frozen 2 -> 2 one.
    fn new(dev: &burn::tensor::Device<AB>) -> Self {
        Self {
            adapter: LinearConfig::new(3, 2).init(dev),
            frozen: LinearConfig::new(2, 2).init::<AB>(dev).no_grad(),
        }
    }

    fn assert_adapter_weight(&self, want: &Tensor<B, 2>) {
        self.adapter
            .weight
            .val()
            .inner()
            .to_data()
            .assert_approx_eq::<f32>(&want.to_data(), Default::default());
    }
}

fn naming(path: &str) -> Option<String> {
    path.starts_with("adapter.").then(|| format!("orig.{path}"))
}

#[test]
fn module_step_updates_adapters_only() {
    let dev = Default::default();
    let toy = Toy::new(&dev);
    let names = trainable_params(&toy, &naming);
    assert_eq!(
        names,
        vec![
            ("orig.adapter.weight".to_string(), vec![3, 2]),
            ("orig.adapter.bias".to_string(), vec![2])
        ]
    );
    let x: Tensor<AB, 2> = Tensor::from_floats([[1.0, 2.0, 3.0]], &dev);
    let loss = toy.frozen.forward(toy.adapter.forward(x)).sum();
    let grads = loss.backward();
    let mut gp = GradientsParams::from_grads(grads, &toy);
    let norm = module_grad_norm(&toy, &gp, &naming);
    assert!(norm > 0.0);
    let w_before = toy.adapter.weight.val().inner();
    let g_w = gp.get::<B, 2>(toy.adapter.weight.id).unwrap();
    let f_before = toy.frozen.weight.val().inner().to_data();
    let mut opt = AdamW::<B>::new(AdamWConfig::default());
    let (toy, rep) = step_module(&mut opt, toy, &mut gp, 1e-2, 0.5, &naming).unwrap();
    assert_eq!(rep.updated.len(), 2);
    assert_eq!(toy.frozen.weight.val().inner().to_data(), f_before);
    assert!(toy.adapter.weight.val().is_require_grad());
    // Same as calling the per-tensor API with the scaled gradient.
    let mut opt2 = AdamW::<B>::new(AdamWConfig::default());
    let want = opt2
        .step_tensor("orig.adapter.weight", w_before, g_w.mul_scalar(0.5), 1e-2)
        .unwrap();
    toy.assert_adapter_weight(&want);
}

#[test]
fn clip_and_step_scales_by_the_global_norm() {
    let dev = Default::default();
    let toy = Toy::new(&dev);
    let x: Tensor<AB, 2> = Tensor::from_floats([[1.0, -2.0, 3.0]], &dev);
    let loss = toy.frozen.forward(toy.adapter.forward(x)).sum();
    let mut gp = GradientsParams::from_grads(loss.backward(), &toy);
    let g_w = gp.get::<B, 2>(toy.adapter.weight.id).unwrap();
    let g_b = gp
        .get::<B, 1>(toy.adapter.bias.as_ref().unwrap().id)
        .unwrap();
    // The norm is the one over the trainable gradients only (the frozen layer has none here).
    let want_norm = global_norm(&[g_w.clone().reshape([6]), g_b.clone()]);
    let w_before = toy.adapter.weight.val().inner();
    let max_norm = want_norm / 4.0;
    let mut opt = AdamW::<B>::new(AdamWConfig::default());
    let (toy, norm) = clip_and_step(&mut opt, toy, &mut gp, 1e-2, Some(max_norm), &naming).unwrap();
    assert!(
        (norm - want_norm).abs() <= 1e-6 * want_norm,
        "{norm} vs {want_norm}"
    );
    let coef = clip_coefficient(norm, max_norm);
    assert!(coef < 0.3);
    // Adam's first update barely depends on the gradient's scale; its moments do.
    let mut opt2 = AdamW::<B>::new(AdamWConfig::default());
    let want = opt2
        .step_tensor("orig.adapter.weight", w_before, g_w.mul_scalar(coef), 1e-2)
        .unwrap();
    let name = "orig.adapter.weight";
    for (got, want) in [
        (
            &opt.state(name).unwrap().exp_avg,
            &opt2.state(name).unwrap().exp_avg,
        ),
        (
            &opt.state(name).unwrap().exp_avg_sq,
            &opt2.state(name).unwrap().exp_avg_sq,
        ),
    ] {
        got.to_data()
            .assert_approx_eq::<f32>(&want.to_data(), Default::default());
    }
    toy.assert_adapter_weight(&want);
}
