//! Writing the pretrained towers in formats `lavin_model::weights` reads:
//! LLaMA as a Hugging Face folder (`config.json` + `model.safetensors`, HF names, q/k rows
//! permuted for rotate-half RoPE), CLIP as an OpenAI-named safetensors (`visual.*`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use lavin_model::weights::adapters::{atomic_write, write_safetensors};
use lavin_model::weights::clip::openai_key;
use lavin_model::weights::llama::permute_qk_to_hf;
use lavin_model::weights::{load_lavin, original_name};
use lavin_model::{Lavin, LavinConfig};

use lavin_model::bundled::{self, CLIP_FILE, LLAMA_DIR, TOKENIZER_FILE};
use lavin_parity::host_params;

use super::PretrainError;

type Named = (String, Vec<usize>, Vec<f32>);

/// Hugging Face name of a Meta LLaMA key (`None`: not a base LLaMA weight).
pub use lavin_model::weights::llama::hf_key as hf_name;

fn transpose(data: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = data[i * c + j];
        }
    }
    out
}

/// `(llama tensors with HF names, clip tensors with OpenAI names)`, PyTorch layouts.
pub fn base_tensors<B: Backend>(model: &Lavin<B>) -> (Vec<Named>, Vec<Named>) {
    let cfg = model.config();
    let (mut llama, mut clip) = (Vec::new(), Vec::new());
    for p in host_params(model) {
        let Some(orig) = original_name(&p.path) else {
            continue;
        };
        if orig.contains("adapter") {
            continue;
        }
        let (shape, data) = if p.linear_weight {
            let (i, o) = (p.shape[0], p.shape[1]);
            (vec![o, i], transpose(&p.data, i, o))
        } else {
            (p.shape, p.data)
        };
        if let Some(k) = openai_key(&orig) {
            clip.push((k, shape, data));
        } else if let Some(hf) = hf_name(&orig) {
            let data = if orig.ends_with("wq.weight") {
                permute_qk_to_hf(&data, shape[0], shape[1], cfg.llama.n_heads)
            } else if orig.ends_with("wk.weight") {
                permute_qk_to_hf(&data, shape[0], shape[1], cfg.llama.kv_heads())
            } else {
                data
            };
            llama.push((hf, shape, data));
        }
    }
    (llama, clip)
}

/// The HF `config.json` of the tiny LLaMA.
pub fn hf_config(cfg: &LavinConfig) -> serde_json::Value {
    let l = &cfg.llama;
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": l.dim,
        "num_hidden_layers": l.n_layers,
        "num_attention_heads": l.n_heads,
        "num_key_value_heads": l.kv_heads(),
        "intermediate_size": l.ffn_hidden(),
        "vocab_size": l.vocab_size,
        "rms_norm_eps": l.norm_eps,
        "rope_theta": l.rope_theta,
        "max_position_embeddings": 2 * cfg.max_seq_len,
        "hidden_act": "silu",
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32"
    })
}

/// Writes `out/llama/{config.json,model.safetensors}`, `out/clip-vision.safetensors` and
/// copies the tokenizer; returns the written paths relative to `out`.
pub fn export_base<B: Backend>(
    model: &Lavin<B>,
    cfg: &LavinConfig,
    tokenizer: &Path,
    out: &Path,
) -> Result<Vec<String>, PretrainError> {
    let llama_dir = out.join(LLAMA_DIR);
    std::fs::create_dir_all(&llama_dir).map_err(PretrainError::io(&llama_dir))?;
    let (llama, clip) = base_tensors(model);
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(&llama_dir.join("model.safetensors"), &llama, &meta)?;
    let conf = serde_json::to_string_pretty(&hf_config(cfg)).unwrap_or_default();
    atomic_write(&llama_dir.join("config.json"), conf.as_bytes())?;
    write_safetensors(&out.join(CLIP_FILE), &clip, &meta)?;
    let bytes = std::fs::read(tokenizer).map_err(PretrainError::io(tokenizer))?;
    atomic_write(&out.join(TOKENIZER_FILE), &bytes)?;
    Ok(vec![
        format!("{LLAMA_DIR}/config.json"),
        format!("{LLAMA_DIR}/model.safetensors"),
        CLIP_FILE.to_string(),
        TOKENIZER_FILE.to_string(),
    ])
}

/// Loads the bundled base with `config` (adapters fresh, base frozen).
pub fn load_tiny_base<B: Backend>(
    config: &LavinConfig,
    dir: &Path,
    device: &B::Device,
) -> Result<Lavin<B>, PretrainError> {
    Ok(load_lavin(config, &bundled::spec(dir), device)?)
}

/// The tokenizer of a base folder.
pub fn tokenizer_path(dir: &Path) -> PathBuf {
    dir.join(TOKENIZER_FILE)
}
