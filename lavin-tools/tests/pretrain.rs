//! `pretrain-base`: the preset's prefix ids, a few-step pretraining on a small train subset,
//! the exported files loading back through `lavin_model::weights::load_lavin` unchanged, and
//! the probe on a few problems.

use burn::backend::{Autodiff, NdArray};
use lavin_data::Tokenizer;
use lavin_model::bundled;
use lavin_tools::pretrain::{self, export, PretrainArgs};

type B = Autodiff<NdArray>;

fn tokenizer_path() -> std::path::PathBuf {
    bundled::workspace_root().join("tests/data/parity/tiny-a/tokenizer.model")
}

#[test]
fn preset_prefix_ids_are_the_tokenizers() {
    let tok = Tokenizer::from_file(tokenizer_path()).unwrap();
    let c = bundled::config();
    let (img, nonimg) = tok.image_prefixes().unwrap();
    assert_eq!((&img, &nonimg), (&c.prefix_img, &c.prefix_nonimg));
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
    let cfg = bundled::config();
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
    let hf = lavin_model::weights::llama::permute_qk_to_hf(&meta, heads * hd, dim, heads);
    assert_eq!(hf, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
}
