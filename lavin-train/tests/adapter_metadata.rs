//! A training run's `adapters.safetensors` carries the settings that shaped it (read back by
//! `lavin-infer` instead of repeated flags), and still loads as before.

use lavin_model::quant::BaseBits;
use lavin_model::weights::read_adapter_meta;
use lavin_model::{LlamaAdapterType, Precision, VisualAdapterType};
use lavin_train::cli::TrainArgs;
use lavin_train::run::{run, RunOptions};

#[test]
fn trained_adapters_describe_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = TrainArgs {
        output_dir: Some(out.clone()),
        epochs: Some(1),
        batch_size: Some(2),
        checkpoint_every: Some(0),
        keep_last: Some(0),
        adapter_type: Some(LlamaAdapterType::Block),
        visual_adapter_type: Some(VisualAdapterType::Normal),
        adapter_dim: Some(4),
        adapter_scale: Some(0.5),
        temperature: Some(3.0),
        ..TrainArgs::default()
    };
    let opts = RunOptions {
        train_limit: 2,
        val_limit: 1,
    };
    run(&args, &opts).unwrap();
    let meta = read_adapter_meta(&out.join("adapters.safetensors"))
        .unwrap()
        .expect("settings stored");
    assert_eq!(meta.adapter_type, Some(LlamaAdapterType::Block));
    assert_eq!(meta.visual_adapter_type, Some(VisualAdapterType::Normal));
    assert_eq!(
        (meta.adapter_dim, meta.adapter_scale, meta.temperature),
        (Some(4), Some(0.5), Some(3.0))
    );
    // The tiny default run's own shapes: the bundled base's projection, 2 image tokens, 96 rows.
    let cfg = lavin_train::config::TrainConfig::load(&out.join("config.toml")).unwrap();
    assert_eq!(
        (meta.hidden_proj, meta.n_prompt, meta.max_seq_len),
        (
            Some(cfg.hidden_proj),
            Some(cfg.n_prompt),
            Some(cfg.max_seq_len)
        )
    );
    assert_eq!(meta.llm_model.as_deref(), Some(cfg.llm_model.as_str()));
    assert_eq!(meta.preset.as_deref(), Some("tiny"));
    assert_eq!(
        (meta.precision, meta.bits),
        (Some(Precision::F32), Some(BaseBits::Dense))
    );
}
