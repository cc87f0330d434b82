//! `optim.json` + `optim.safetensors`: the AdamW update alone (fed the stored gradients), the
//! learning-rate schedule, and three end-to-end training steps with our own forward/backward,
//! all through lavin-train's optimizer and schedule.

use std::collections::BTreeMap;

use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use lavin_model::weights::adapters::{adapter_tensors, open_adapters};
use lavin_model::weights::source::SafetensorsSource;
use lavin_model::weights::{is_trainable, original_name, HostTensor, TensorSource};
use lavin_parity::{adapter_grads, host, Case, Check};
use lavin_train::lr_sched::{resolve_lr, LrSchedule};
use lavin_train::optim::{decays, step_module, AdamW, AdamWConfig};

use super::data::{absent, JsonFile, J};
use super::Outcome;

/// AdamW update alone: ≤ 1e-6 absolute (the case's tolerance table, docs/parity.md).
const UPDATE_BOUND: f64 = 1e-6;
/// End to end: losses ≤ 1e-4 relative, parameters ≤ 1e-5 absolute outside elements whose
/// gradient stays below `LOW_GRAD` of the tensor's max gradient.
const LOSS_BOUND: f64 = 1e-4;
const PARAM_BOUND: f64 = 1e-5;
const LOW_GRAD: f32 = 1e-3;
/// Gradients: ≤ 1e-3 of each tensor's max abs (same as `expected.safetensors` → `grad.*`).
const GRAD_BOUND: f64 = 1e-3;
/// lr schedule: 1e-12 relative.
const LR_BOUND: f64 = 1e-12;

/// `bounds` also scales `LOW_GRAD`: an element whose gradient is under the gradient tolerance
/// can take either sign, and AdamW's normalised step then moves it either way.
pub fn check<B: Backend>(
    case: &Case,
    device: &B::Device,
    bounds: super::Bounds,
) -> anyhow::Result<Outcome> {
    let low_grad = LOW_GRAD * bounds.scale() as f32;
    if let Some(skip) = absent(case, &["optim.json", "optim.safetensors"]) {
        return Ok(skip);
    }
    let file = JsonFile::open(case.dir.join("optim.json"))?;
    let j = file.root();
    let st = SafetensorsSource::open(&case.dir.join("optim.safetensors"))?;
    if j.opt("amsgrad").map(|a| a.parse::<bool>()).transpose()? == Some(true) {
        return Ok(Outcome::Skip(
            "optim.json: amsgrad = true is not supported".into(),
        ));
    }
    let lr: f64 = j.req("lr")?;
    let betas: [f64; 2] = j.req("betas")?;
    let config = AdamWConfig {
        beta1: betas[0],
        beta2: betas[1],
        eps: j.req("eps")?,
        weight_decay: j.req("weight_decay")?,
    };
    let steps: usize = j.req("steps")?;

    // Parameters (from the adapter checkpoint) and their groups.
    let ckpt = open_adapters(&case.dir.join("adapter/checkpoint.pth"))?;
    let mut names = Vec::new();
    let mut group_bad = 0;
    for g in j.items("param_groups")?.iter() {
        let wd: f64 = g.req("weight_decay")?;
        let params: Vec<String> = g.req("params")?;
        for n in params {
            let shape = ckpt.require(&n)?.shape;
            let want = if decays(&n, shape.len()) {
                config.weight_decay
            } else {
                0.0
            };
            group_bad += (wd != want) as usize;
            names.push(n);
        }
    }
    let mut rows = vec![Check::exact(
        format!(
            "optim.json param_groups: timm weight-decay rule ({} params)",
            names.len()
        ),
        group_bad,
    )];
    let init: Vec<HostTensor> = names
        .iter()
        .map(|n| ckpt.require(n))
        .collect::<Result<_, _>>()?;
    let fixture_grads: Vec<Vec<HostTensor>> = (1..=steps)
        .map(|k| {
            names
                .iter()
                .map(|n| st.require(&format!("grad_step{k}.{n}")))
                .collect::<Result<Vec<HostTensor>, _>>()
        })
        .collect::<Result<_, _>>()?;
    let stored = |k: usize| {
        names
            .iter()
            .all(|n| st.keys().contains(&format!("step{k}.{n}")))
    };
    let stored_steps: Vec<usize> = (1..=steps).filter(|&k| stored(k)).collect();
    anyhow::ensure!(
        !stored_steps.is_empty(),
        "{}: no `step<k>.<name>` parameters for any step 1..={steps}",
        case.dir.join("optim.safetensors").display()
    );

    // 1. The update alone, fed the stored gradients.
    let mut opt = AdamW::<B>::new(config);
    let mut params: Vec<Tensor<B, 1>> = init.iter().map(|t| flat::<B>(&t.data, device)).collect();
    for k in 1..=steps {
        for (i, name) in names.iter().enumerate() {
            let g = &fixture_grads[k - 1][i];
            anyhow::ensure!(
                g.shape == init[i].shape,
                "optim.safetensors: grad_step{k}.{name} has shape {:?}, parameter {:?}",
                g.shape,
                init[i].shape
            );
            params[i] = opt.step_flat(
                name,
                &init[i].shape,
                params[i].clone(),
                flat::<B>(&g.data, device),
                lr,
            )?;
        }
        if stored_steps.contains(&k) {
            let got: Vec<Vec<f32>> = params.iter().map(|p| host(p.clone())).collect();
            rows.push(compare_params(
                &format!("optim adamw alone (stored grads) step{k}"),
                &names,
                &got,
                &st,
                k,
                None,
                UPDATE_BOUND,
            )?);
        }
    }

    // 2. The learning-rate schedule.
    rows.extend(schedule(&j.get("lr_schedule")?)?);

    // 3. End to end: our forward/backward, lavin-train's module step.
    let want_losses: Vec<f64> = j.req("losses")?;
    anyhow::ensure!(
        want_losses.len() == steps,
        "{}: field `losses` has {} values, `steps` is {steps}",
        file.path.display(),
        want_losses.len()
    );
    let naming = |p: &str| original_name(p).filter(|n| is_trainable(n));
    let mut model = case.load_model::<Autodiff<B>>(case.meta_llama(), device)?;
    let mut opt = AdamW::<B>::new(config);
    let mut loss_err: f64 = 0.0;
    let mut without_grad = 0;
    // Elements whose fixture gradient reached low_grad of the tensor's max in some step so far.
    let mut significant: Vec<Vec<bool>> = init.iter().map(|t| vec![false; t.data.len()]).collect();
    for k in 1..=steps {
        let out = model.forward_train(case.batch(device)?);
        let loss = host(out.loss.clone())[0] as f64;
        loss_err = loss_err.max(rel(loss, want_losses[k - 1]));
        let grads = out.loss.backward();
        let ours: BTreeMap<String, Vec<f32>> = adapter_grads(&model, &grads)
            .into_iter()
            .map(|(n, _, g)| (n, g))
            .collect();
        rows.push(compare_grads(k, &names, &ours, &fixture_grads[k - 1]));
        for (sig, g) in significant.iter_mut().zip(&fixture_grads[k - 1]) {
            let gmax = g.data.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (s, v) in sig.iter_mut().zip(&g.data) {
                *s |= v.abs() >= low_grad * gmax;
            }
        }
        let mut gp = GradientsParams::from_grads(grads, &model);
        let (m, report) = step_module(&mut opt, model, &mut gp, lr, 1.0, &naming)?;
        model = m;
        without_grad += report.without_grad.len();
        if stored_steps.contains(&k) {
            let now: BTreeMap<String, Vec<f32>> = adapter_tensors(&model)
                .into_iter()
                .map(|(n, _, v)| (n, v))
                .collect();
            let got: Vec<Vec<f32>> = names
                .iter()
                .map(|n| now.get(n).cloned().unwrap_or_default())
                .collect();
            rows.push(compare_params(
                &format!("optim e2e step{k} params"),
                &names,
                &got,
                &st,
                k,
                Some(significant.as_slice()),
                PARAM_BOUND,
            )?);
        }
    }
    let mut n_losses = steps;
    if let Some(after) = j.opt("loss_after_last_step") {
        let want: f64 = after.parse()?;
        let out = model.forward_train(case.batch(device)?);
        loss_err = loss_err.max(rel(host(out.loss)[0] as f64, want));
        n_losses += 1;
    }
    rows.push(Check {
        name: format!("optim e2e losses ({n_losses} forwards)"),
        error: loss_err,
        bound: LOSS_BOUND,
        kind: "rel",
    });
    rows.push(Check::exact(
        "optim e2e: trainable parameters without gradient",
        without_grad,
    ));
    Ok(Outcome::Rows(rows))
}

/// A parameter name shortened for a report row.
fn short(name: &str) -> String {
    name.replace("backbone.visual.transformer.resblocks.", "clip.")
        .replace(".adapter_attn.", ".attn.")
        .replace(".adapter_mlp.", ".mlp.")
}

fn flat<B: Backend>(v: &[f32], device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

/// `|got − want| / |want|`, or `|got|` when `want` is 0.
fn rel(got: f64, want: f64) -> f64 {
    if want == 0.0 {
        got.abs()
    } else {
        ((got - want) / want).abs()
    }
}

/// Max abs error of every parameter against `step<k>.<name>`, over the elements `mask`
/// keeps (all without one); the row names the worst tensor.
fn compare_params(
    label: &str,
    names: &[String],
    got: &[Vec<f32>],
    st: &SafetensorsSource,
    k: usize,
    mask: Option<&[Vec<bool>]>,
    bound: f64,
) -> anyhow::Result<Check> {
    let (mut worst, mut worst_name, mut skipped) = (0f64, "", 0usize);
    for (i, name) in names.iter().enumerate() {
        let want = st.require(&format!("step{k}.{name}"))?;
        let err = if got[i].len() != want.data.len() {
            f64::INFINITY
        } else {
            let mut e = 0f64;
            for (j, (a, b)) in got[i].iter().zip(&want.data).enumerate() {
                if mask.is_some_and(|m| !m[i][j]) {
                    skipped += 1;
                    continue;
                }
                let d = (a - b).abs() as f64;
                e = if d.is_nan() { f64::INFINITY } else { e.max(d) };
            }
            e
        };
        if err >= worst {
            (worst, worst_name) = (err, name.as_str());
        }
    }
    let masked = if mask.is_some() {
        format!("{skipped} low-grad excl.; ")
    } else {
        String::new()
    };
    Ok(Check {
        name: format!("{label} ({masked}worst {})", short(worst_name)),
        error: worst,
        bound,
        kind: "abs",
    })
}

/// Our gradients of step `k` against `grad_step<k>`: max over tensors of the max abs error
/// relative to that tensor's max abs.
fn compare_grads(
    k: usize,
    names: &[String],
    ours: &BTreeMap<String, Vec<f32>>,
    want: &[HostTensor],
) -> Check {
    let (mut worst, mut worst_name) = (0f64, "");
    for (name, w) in names.iter().zip(want) {
        let c = match ours.get(name) {
            Some(g) => Check::close(name.as_str(), g, &w.data, GRAD_BOUND, true),
            None => Check::close(name.as_str(), &[], &w.data, GRAD_BOUND, true),
        };
        if c.error >= worst {
            (worst, worst_name) = (c.error, name.as_str());
        }
    }
    Check {
        name: format!("optim e2e grad_step{k} (worst {})", short(worst_name)),
        error: worst,
        bound: GRAD_BOUND,
        kind: "rel",
    }
}

/// `lr_schedule`: the base lr from blr and the effective batch, and every listed value
/// (plain and per-group with `lr_scale`).
fn schedule(s: &J) -> anyhow::Result<Vec<Check>> {
    let blr: f64 = s.req("blr")?;
    let eff: usize = s.req("eff_batch_size")?;
    let want_lr: f64 = s.req("lr")?;
    let lr = resolve_lr(None, blr, eff);
    let sched = LrSchedule {
        lr,
        min_lr: s.req("min_lr")?,
        epochs: s.req("epochs")?,
        warmup_epochs: s.req("warmup_epochs")?,
    };
    let values = s.items("values")?;
    let (mut err, mut group_err, mut n_group) = (0f64, 0f64, 0usize);
    for v in values.iter() {
        let epoch: f64 = v.req("epoch")?;
        let want: f64 = v.req("lr")?;
        let got = sched.lr_at(epoch);
        err = err.max(rel(got, want));
        if let Some(g) = v.opt("group_lr") {
            let group: Vec<f64> = g.parse()?;
            // The fixture format lists a plain group and one with lr_scale 0.5 unless it
            // states the scales.
            let scales: Vec<f64> = match s.opt("group_lr_scales") {
                Some(sc) => sc.parse()?,
                None if group.len() == 2 => vec![1.0, 0.5],
                None => anyhow::bail!(
                    "optim.json: missing field `lr_schedule.group_lr_scales` for {} groups",
                    group.len()
                ),
            };
            for (w, scale) in group.iter().zip(&scales) {
                group_err = group_err.max(rel(got * scale, *w));
                n_group += 1;
            }
        }
    }
    let row = |name: String, error: f64| Check {
        name,
        error,
        bound: LR_BOUND,
        kind: "rel",
    };
    let mut rows = vec![
        row(
            format!("optim.json lr_schedule lr = blr*{eff}/256"),
            rel(lr, want_lr),
        ),
        row(
            format!("optim.json lr_schedule values ({} epochs)", values.len()),
            err,
        ),
    ];
    if n_group > 0 {
        rows.push(row(
            format!("optim.json lr_schedule group_lr ({n_group} values, lr_scale)"),
            group_err,
        ));
    }
    Ok(rows)
}
