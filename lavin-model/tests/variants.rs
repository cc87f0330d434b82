//! Adapter placements the bundled parity case does not cover: LLaMA 'block', CLIP 'normal' and
//! 'router_block', per-item CLIP routing, and the adapter save/load round trip.

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use lavin_model::weights::adapters::{adapter_tensors, load_adapters, save_adapters};
use lavin_model::weights::names::NameCollector;
use lavin_model::{ClipRouterMode, LavinBatch, LavinConfig, LlamaAdapterType, VisualAdapterType};
use lavin_parity::{adapter_grads, host};

type B = Autodiff<NdArray>;

fn config(llama: LlamaAdapterType, visual: VisualAdapterType) -> LavinConfig {
    let mut c = LavinConfig::tiny();
    c.llama.dim = 32;
    c.llama.n_heads = 2;
    c.llama.vocab_size = 64;
    c.clip.width = 32;
    c.clip.layers = 4;
    c.clip.heads = 1;
    c.clip.input_resolution = 64;
    c.max_seq_len = 16;
    c.adapter.llama = llama;
    c.adapter.visual = visual;
    c.adapter.dropout = 0.0;
    c.prefix_img = vec![5, 6];
    c.prefix_nonimg = vec![5, 6, 7];
    c
}

fn batch(c: &LavinConfig, device: &burn::tensor::Device<B>) -> LavinBatch<B> {
    let s = c.max_seq_len;
    let tokens: Vec<i64> = (0..2 * s)
        .map(|i| {
            if i % s < 12 {
                1 + (i as i64 * 7) % 60
            } else {
                0
            }
        })
        .collect();
    let labels: Vec<i64> = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| if i % s < 6 { 0 } else { t })
        .collect();
    let r = c.clip.input_resolution;
    LavinBatch {
        tokens: Tensor::<B, 2, Int>::from_data(TensorData::new(tokens, [2, s]), device),
        labels: Tensor::<B, 2, Int>::from_data(TensorData::new(labels, [2, s]), device),
        images: Tensor::random([2, 3, r, r], Distribution::Normal(0.0, 1.0), device),
        indicators: Tensor::<B, 1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), device),
    }
}

/// Zero-initialised up-projections would hide every adapter path: make them non-zero.
fn randomize_adapters(
    model: lavin_model::Lavin<B>,
    c: &LavinConfig,
    device: &burn::tensor::Device<B>,
) -> lavin_model::Lavin<B> {
    let dir = tempdir();
    let path = dir.join("a.safetensors");
    let tensors: Vec<_> = adapter_tensors(&model)
        .into_iter()
        .enumerate()
        .map(|(k, (n, shape, data))| {
            let v = data
                .iter()
                .enumerate()
                .map(|(i, _)| (((i * 31 + k * 17) % 23) as f32 - 11.0) * 0.02)
                .collect();
            (n, shape, v)
        })
        .collect();
    lavin_model::weights::adapters::write_safetensors(&path, &tensors, &Default::default())
        .unwrap();
    let _ = c;
    load_adapters(model, &path, device).unwrap()
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "lavin-variants-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_placement_trains_exactly_its_adapters() {
    let device = Default::default();
    for (llama, visual) in [
        (LlamaAdapterType::Block, VisualAdapterType::RouterBlock),
        (LlamaAdapterType::Attn, VisualAdapterType::Normal),
        (LlamaAdapterType::Block, VisualAdapterType::Router),
    ] {
        let c = config(llama, visual);
        let model = randomize_adapters(c.init::<B>(&device), &c, &device);
        let mut names = NameCollector::default();
        model.visit(&mut names);
        let trainable: Vec<String> = names
            .names
            .iter()
            .filter_map(|(_, o)| o.clone())
            .filter(|o| o.contains("adapter"))
            .collect();
        // Original names, as the authors' checkpoints spell them.
        let has = |n: &str| trainable.iter().any(|t| t == n);
        assert_eq!(
            has("layers.1.adapter_mlp.conv_D.bias"),
            llama == LlamaAdapterType::Block
        );
        assert_eq!(
            has("backbone.visual.transformer.resblocks.3.adapter_mlp.expert_weights.weight"),
            visual == VisualAdapterType::RouterBlock
        );
        assert_eq!(
            has("backbone.visual.transformer.resblocks.0.adapter_attn.conv_D.weight"),
            visual != VisualAdapterType::Normal
        );
        assert!(has(
            "backbone.visual.transformer.resblocks.0.adapter_attn.conv_B.weight"
        ));
        assert!(has("adapter_modality_embedding.weight") && has("adapter_proj.conv_B.bias"));

        let (out, trace) = model.forward_traced(batch(&c, &device));
        assert!(host(out.loss.clone())[0].is_finite());
        assert_eq!(
            trace.routes[0].mlp.is_some(),
            llama == LlamaAdapterType::Block
        );
        let grads = out.loss.backward();
        let got: Vec<String> = adapter_grads(&model, &grads)
            .into_iter()
            .map(|(n, _, g)| {
                assert!(g.iter().all(|v| v.is_finite()), "{n}");
                n
            })
            .collect();
        assert_eq!(
            got, trainable,
            "{llama:?}/{visual:?}: every adapter and nothing else gets a gradient"
        );
    }
}

#[test]
fn per_item_clip_routing_makes_items_independent() {
    let device = Default::default();
    for (mode, independent) in [
        (ClipRouterMode::PerItem, true),
        (ClipRouterMode::Reference, false),
    ] {
        let mut c = config(LlamaAdapterType::Attn, VisualAdapterType::Router);
        c.adapter.clip_router = mode;
        let model = randomize_adapters(c.init::<B>(&device), &c, &device);
        let r = c.clip.input_resolution;
        let images = Tensor::<B, 4>::random([2, 3, r, r], Distribution::Normal(0.0, 1.0), &device);
        let (together, _, _) = model.encode_images(images.clone());
        let (alone, _, _) = model.encode_images(images.narrow(0, 1, 1));
        let diff = host(together.narrow(0, 1, 1) - alone)
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        assert_eq!(
            diff < 1e-5,
            independent,
            "{mode:?}: item 1 in batch vs alone differs by {diff}"
        );
    }
}

#[test]
fn adapters_round_trip_through_safetensors() {
    let device = Default::default();
    let c = config(LlamaAdapterType::Block, VisualAdapterType::RouterBlock);
    let trained = randomize_adapters(c.init::<B>(&device), &c, &device);
    let path = tempdir().join("round.safetensors");
    save_adapters(&trained, &path).unwrap();
    let fresh = load_adapters(c.init::<B>(&device), &path, &device).unwrap();
    assert_eq!(adapter_tensors(&fresh), adapter_tensors(&trained));
    // A checkpoint for other shapes is refused with the key and both shapes named.
    let mut other = c.clone();
    other.adapter.dim = 4;
    let err = load_adapters(other.init::<B>(&device), &path, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("round.safetensors") && err.contains("conv_A.weight") && err.contains("[4,"),
        "{err}"
    );
}
