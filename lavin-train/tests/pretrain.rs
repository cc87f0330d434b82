//! `pretrain-base`: the preset's prefix ids, a few-step pretraining on a small train subset,
//! the exported files loading back through `lavin_model::weights::load_lavin` unchanged, and
//! (ignored, for developers) the full pretraining and the default-run probe.

use burn::backend::{Autodiff, NdArray};
use lavin_data::Tokenizer;
use lavin_train::pretrain::{self, export, PretrainArgs, ProbeOptions};

type B = Autodiff<NdArray>;

fn tokenizer_path() -> std::path::PathBuf {
    pretrain::workspace_root().join("tests/data/parity/tiny-a/tokenizer.model")
}

#[test]
fn preset_prefix_ids_are_the_tokenizers() {
    let tok = Tokenizer::from_file(tokenizer_path()).unwrap();
    let c = pretrain::tiny_default();
    assert_eq!(tok.encode("Image: ", false, false).unwrap(), c.prefix_img);
    assert_eq!(
        tok.encode("Image: N/A", false, false).unwrap(),
        c.prefix_nonimg
    );
    assert_eq!(c.llama.vocab_size, tok.n_words());
    assert_eq!(c.n_feats(), 2);
}

#[test]
fn few_steps_export_and_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let args = PretrainArgs {
        data_root: None,
        tokenizer: Some(tokenizer_path()),
        output_dir: Some(dir.path().to_path_buf()),
        clip_epochs: 1,
        llama_epochs: 1,
        limit: 40,
        seed: 1,
        init_from: None,
        probe: false,
    };
    let cfg = pretrain::tiny_default();
    let device = Default::default();
    let (model, summary) = pretrain::pretrain_base::<B>(&args, &cfg, &device).unwrap();
    assert!(summary.train_images > 0 && summary.train_problems == 40);
    assert!(summary.llama.final_loss.is_finite() && summary.clip.final_loss.is_finite());
    for f in &summary.files {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    // Loaded through the real loaders (HF LLaMA with q/k un-permutation, OpenAI CLIP), every
    // base tensor equals the trained one.
    let loaded = pretrain::load_tiny_base::<NdArray>(&cfg, dir.path(), &device).unwrap();
    let (a_llama, a_clip) = export::base_tensors(&model);
    let (b_llama, b_clip) = export::base_tensors(&loaded);
    assert_eq!(a_llama.len(), b_llama.len());
    assert_eq!(a_clip.len(), b_clip.len());
    for (a, b) in a_llama
        .iter()
        .chain(&a_clip)
        .zip(b_llama.iter().chain(&b_clip))
    {
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1, "{}", a.0);
        assert_eq!(a.2, b.2, "{}", a.0);
    }
    // The HF names are the standard ones.
    assert!(a_llama
        .iter()
        .any(|t| t.0 == "model.layers.0.self_attn.q_proj.weight"));
    assert!(a_clip
        .iter()
        .any(|t| t.0 == "visual.transformer.resblocks.7.attn.in_proj_weight"));
}

#[test]
fn hf_permutation_is_the_documented_one() {
    // W_hf = W_meta.view(h, hd/2, 2, dim).transpose(1, 2).reshape: rows (h, j, s) -> (h, s, j).
    let (heads, hd, dim) = (2, 4, 1);
    let meta: Vec<f32> = (0..heads * hd * dim).map(|v| v as f32).collect();
    let hf = export::permute_rows(&meta, heads * hd, dim, heads);
    assert_eq!(hf, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
}

/// The real thing: `cargo test -p lavin-train --release --test pretrain -- --ignored --nocapture full`
/// (several minutes on 2 cores); writes assets/tiny-base and prints the probe numbers.
#[test]
#[ignore]
fn full_pretrain_and_probe() {
    let args = PretrainArgs {
        data_root: None,
        tokenizer: None,
        output_dir: None,
        clip_epochs: env_or("PRETRAIN_CLIP_EPOCHS", 25),
        llama_epochs: env_or("PRETRAIN_LLAMA_EPOCHS", 40),
        limit: 0,
        seed: 20230524,
        init_from: std::env::var("PRETRAIN_INIT_FROM").ok().map(Into::into),
        probe: true,
    };
    pretrain::run(&args).unwrap();
}

/// Only the default-run probe on the committed assets:
/// `cargo test -p lavin-train --release --test pretrain -- --ignored --nocapture probe_only`.
#[test]
#[ignore]
fn probe_only() {
    let cfg = pretrain::tiny_default();
    let opts = ProbeOptions {
        epochs: env_or("PROBE_EPOCHS", 4),
        batch_size: env_or("PROBE_BS", 8),
        lr: std::env::var("PROBE_LR")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1e-2),
        prompt_format: std::env::var("PROBE_FORMAT").unwrap_or_else(|_| "QCM-A".into()),
        ..ProbeOptions::default()
    };
    let r = pretrain::probe_default::<B>(&cfg, &opts, &Default::default()).unwrap();
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
}

fn env_or(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}
