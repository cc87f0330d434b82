//! The wgpu backend computes what the ndarray reference computes (run with `--features wgpu`;
//! CI uses Mesa's software Vulkan driver, lavapipe). Kept tiny: lavapipe is slow.
#![cfg(feature = "wgpu")]

use std::sync::Arc;

use burn::backend::wgpu::{Wgpu, WgpuDevice};
use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use lavin_data::Tokenizer;
use lavin_infer::generator::{GenRequest, Generator, SamplingParams};
use lavin_infer::lavin_generator::LavinGenerator;
use lavin_model::Positions;
use lavin_parity::{host, Case, Check};

const CASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity/tiny-a");

fn logits<B: Backend>(case: &Case, device: &B::Device) -> Vec<f32> {
    let model = case
        .load_model::<B>(case.meta_llama(), device)
        .expect("load tiny-a");
    host(
        model
            .forward_train(case.batch(device).expect("batch"))
            .logits,
    )
}

fn greedy<B: Backend>(case: &Case, device: &B::Device) -> Vec<Vec<u32>> {
    let model = case
        .load_model::<B>(case.meta_llama(), device)
        .expect("load tiny-a");
    let tokenizer =
        Arc::new(Tokenizer::from_file(format!("{CASE}/tokenizer.model")).expect("tokenizer"));
    let mut g = LavinGenerator::new(model, tokenizer, device.clone(), Positions::Faithful);
    let params = SamplingParams {
        max_gen_len: 4,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
    };
    let requests = [GenRequest::text("Question: Which is soft?\nResponse:")];
    g.generate(&requests, &params, &mut |_, _| {})
        .expect("generate")
        .into_iter()
        .map(|o| o.token_ids)
        .collect()
}

#[test]
fn wgpu_matches_ndarray() {
    let case = Case::open(CASE.as_ref()).expect("case");
    let wgpu = WgpuDevice::default();
    let reference = logits::<NdArray>(&case, &Default::default());
    let on_gpu = logits::<Wgpu>(&case, &wgpu);
    let check = Check::close("wgpu logits vs ndarray", &on_gpu, &reference, 1e-4, true);
    println!("{} {:.3e}", check.name, check.error);
    assert!(
        check.pass(),
        "wgpu logits differ from ndarray by {:.3e} (relative)",
        check.error
    );
    assert_eq!(
        greedy::<Wgpu>(&case, &wgpu),
        greedy::<NdArray>(&case, &Default::default())
    );
}
