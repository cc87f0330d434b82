//! `lavin-train bench --preset 7b-slice`: the preset has the 7B shapes with `--layers` LLaMA
//! and `--vit-layers` ViT blocks, and the report carries the block counts and the device-memory
//! field (`null` on the CPU backends). Nothing at 7B runs here: the slice takes minutes on a CPU
//! (its numbers are in docs/performance.md).

use lavin_backends::{BackendArgs, BackendKind};
use lavin_model::LavinConfig;
use lavin_train::bench::{bench_config, run};
use lavin_train::cli::BenchArgs;

fn args(preset: &str, layers: Option<usize>, vit_layers: Option<usize>) -> BenchArgs {
    BenchArgs {
        preset: preset.into(),
        layers,
        vit_layers,
        vocab_size: None,
        batch_size: Some(2),
        seq_len: Some(16),
        steps: 1,
        warmup: 0,
        backend: BackendArgs {
            backend: Some(BackendKind::Ndarray),
            ..BackendArgs::default()
        },
        gradient_checkpointing: false,
        checkpoint_ops: false,
        composed_ops: false,
    }
}

#[test]
fn seven_b_slice_has_the_7b_shapes_and_the_asked_blocks() {
    let full = LavinConfig::llama_7b();
    let (c, batch) = bench_config(&args("7b-slice", None, None)).unwrap();
    assert_eq!((c.llama.n_layers, c.clip.layers, batch), (1, 24, 4));
    let (c, _) = bench_config(&args("7b-slice", Some(2), Some(8))).unwrap();
    assert_eq!((c.llama.n_layers, c.clip.layers, c.n_feats()), (2, 8, 2));
    let l = &c.llama;
    assert_eq!(
        (l.dim, l.n_heads, l.ffn_hidden(), l.vocab_size),
        (4096, 32, 11008, 32000)
    );
    assert_eq!(
        (c.clip.width, c.clip.heads, c.clip.tokens()),
        (1024, 16, 257)
    );
    assert_eq!((&c.adapter, c.max_seq_len), (&full.adapter, 512));
    for bad in [Some(0), Some(6)] {
        let e = format!(
            "{:#}",
            bench_config(&args("7b-slice", None, bad)).unwrap_err()
        );
        assert!(e.contains("--vit-layers"), "{e}");
    }
    // No LLaMA block at all: the constant part of the step.
    assert_eq!(
        bench_config(&args("7b-slice", Some(0), None))
            .unwrap()
            .0
            .llama
            .n_layers,
        0
    );
    let (c, _) = bench_config(&BenchArgs {
        vocab_size: Some(8000),
        ..args("7b-slice", None, None)
    })
    .unwrap();
    assert_eq!(c.llama.vocab_size, 8000);
}

#[test]
fn bench_json_has_block_counts_and_no_device_memory_on_the_cpu() {
    // The tiny preset cut to 1 LLaMA and 4 ViT blocks, one step on ndarray.
    let r = run(&args("tiny", Some(1), Some(4))).unwrap();
    assert_eq!((r.llama_layers, r.vit_layers), (1, 4));
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert!(json["device_memory"].is_null(), "{json}");
    assert_eq!(json["llama_layers"], 1);
}
