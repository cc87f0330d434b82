//! LLaMA weights: Meta `params.json` + `consolidated.NN.pth` shards, Hugging Face safetensors,
//! and the original's Vicuna rule (HF delta added onto Meta-layout weights as is).
//!
//! Every source here answers with Meta key names (`layers.0.attention.wq.weight`), so one
//! loader serves all formats.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::source::{HostTensor, PthSource, ShardedSafetensors, TensorSource};
use crate::config::LlamaConfig;
use crate::error::WeightsError;

/// Meta `params.json` (LLaMA-1; LLaMA-2 adds `n_kv_heads`, `ffn_dim_multiplier`).
#[derive(Debug, Deserialize)]
struct MetaParams {
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    #[serde(default)]
    n_kv_heads: Option<usize>,
    #[serde(default)]
    vocab_size: Option<i64>,
    multiple_of: usize,
    #[serde(default)]
    ffn_dim_multiplier: Option<f64>,
    norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| WeightsError::format(path, "JSON", e))
}

/// Reads `dir/params.json`. `vocab_size` is -1 in Meta's files (the tokenizer decides): pass
/// the tokenizer's size as `vocab_fallback`.
pub fn read_meta_params(dir: &Path, vocab_fallback: usize) -> Result<LlamaConfig, WeightsError> {
    let p: MetaParams = read_json(&dir.join("params.json"))?;
    let vocab_size = match p.vocab_size {
        Some(v) if v > 0 => v as usize,
        _ => vocab_fallback,
    };
    Ok(LlamaConfig {
        dim: p.dim,
        n_layers: p.n_layers,
        n_heads: p.n_heads,
        n_kv_heads: p.n_kv_heads,
        vocab_size,
        multiple_of: p.multiple_of,
        ffn_dim_multiplier: p.ffn_dim_multiplier,
        norm_eps: p.norm_eps,
        rope_theta: p.rope_theta.unwrap_or(10_000.0),
    })
}

/// Hugging Face `config.json` of a LLaMA model.
#[derive(Debug, Deserialize)]
struct HfConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    vocab_size: usize,
    intermediate_size: usize,
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
}

/// Reads `dir/config.json`. HF gives the FFN size directly; we express it through
/// `multiple_of` = the size itself, which the Meta rule maps back to exactly that size.
pub fn read_hf_config(dir: &Path) -> Result<LlamaConfig, WeightsError> {
    let path = dir.join("config.json");
    let c: HfConfig = read_json(&path)?;
    let mut cfg = LlamaConfig {
        dim: c.hidden_size,
        n_layers: c.num_hidden_layers,
        n_heads: c.num_attention_heads,
        n_kv_heads: c
            .num_key_value_heads
            .filter(|&k| k != c.num_attention_heads),
        vocab_size: c.vocab_size,
        multiple_of: c.intermediate_size,
        ffn_dim_multiplier: None,
        norm_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta.unwrap_or(10_000.0),
    };
    if cfg.ffn_hidden() != c.intermediate_size {
        // intermediate_size < 2*4*dim/3: a multiplier below 1 reproduces it exactly.
        cfg.ffn_dim_multiplier = Some(c.intermediate_size as f64 / (2 * 4 * cfg.dim / 3) as f64);
        cfg.multiple_of = 1;
        if cfg.ffn_hidden() != c.intermediate_size {
            return Err(WeightsError::Config {
                path,
                message: format!(
                    "intermediate_size {} cannot be expressed",
                    c.intermediate_size
                ),
            });
        }
    }
    Ok(cfg)
}

/// The dimension along which Meta's model-parallel shards split a tensor (`None`: replicated).
fn shard_dim(key: &str) -> Option<usize> {
    const DIM0: [&str; 6] = [
        "wq.weight",
        "wk.weight",
        "wv.weight",
        "w1.weight",
        "w3.weight",
        "output.weight",
    ];
    if key == "tok_embeddings.weight" || key.ends_with("wo.weight") || key.ends_with("w2.weight") {
        Some(1)
    } else if DIM0.iter().any(|s| key.ends_with(s)) {
        Some(0)
    } else {
        None
    }
}

/// Meta checkpoint: `consolidated.00.pth`, `consolidated.01.pth`, ... merged on the fly.
pub struct MetaShards {
    dir: PathBuf,
    shards: Vec<PthSource>,
}

impl MetaShards {
    pub fn open(dir: &Path) -> Result<Self, WeightsError> {
        let entries = std::fs::read_dir(dir).map_err(|source| WeightsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("consolidated.") && n.ends_with(".pth"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(WeightsError::MissingKey {
                path: dir.to_path_buf(),
                key: "consolidated.00.pth (no Meta checkpoint shard in this folder)".into(),
            });
        }
        let shards = files
            .iter()
            .map(|f| PthSource::open(f, None))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
        })
    }
}

impl TensorSource for MetaShards {
    fn path(&self) -> &Path {
        if self.shards.len() == 1 {
            self.shards[0].path()
        } else {
            &self.dir
        }
    }

    fn keys(&self) -> Vec<String> {
        self.shards[0].keys()
    }

    fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        match (self.shards.len(), shard_dim(key)) {
            (1, _) | (_, None) => self.shards[0].get(key),
            (_, Some(dim)) => {
                let mut parts = Vec::with_capacity(self.shards.len());
                for s in &self.shards {
                    match s.get(key)? {
                        Some(t) => parts.push(t),
                        None => {
                            return Err(WeightsError::MissingKey {
                                path: s.path().to_path_buf(),
                                key: key.to_string(),
                            })
                        }
                    }
                }
                Ok(Some(HostTensor::cat(&parts, dim)))
            }
        }
    }
}

/// Maps a Meta key to its Hugging Face name.
pub fn hf_key(meta: &str) -> Option<String> {
    let direct = match meta {
        "tok_embeddings.weight" => Some("model.embed_tokens.weight"),
        "norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(k) = direct {
        return Some(k.to_string());
    }
    let rest = meta.strip_prefix("layers.")?;
    let (n, name) = rest.split_once('.')?;
    let hf = match name {
        "attention.wq.weight" => "self_attn.q_proj.weight",
        "attention.wk.weight" => "self_attn.k_proj.weight",
        "attention.wv.weight" => "self_attn.v_proj.weight",
        "attention.wo.weight" => "self_attn.o_proj.weight",
        "feed_forward.w1.weight" => "mlp.gate_proj.weight",
        "feed_forward.w2.weight" => "mlp.down_proj.weight",
        "feed_forward.w3.weight" => "mlp.up_proj.weight",
        "attention_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{n}.{hf}"))
}

/// HF rows of q/k are permuted for the rotate-half rotary convention:
/// `W_hf = W_meta.view(h, hd/2, 2, dim).transpose(1, 2)`. Row `meta` of each pair of
/// (Meta row, HF row) this yields moves to row `hf` going to HF, and back coming from it.
fn qk_row_pairs(rows: usize, heads: usize) -> impl Iterator<Item = (usize, usize)> {
    let half = rows / heads / 2;
    (0..heads).flat_map(move |h| {
        (0..half).flat_map(move |j| {
            (0..2).map(move |s| (h * 2 * half + j * 2 + s, h * 2 * half + s * half + j))
        })
    })
}

/// Meta's q/k rows of a `[rows, cols]` weight in Hugging Face's order (what an HF export writes).
pub fn permute_qk_to_hf(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for (meta, hf) in qk_row_pairs(rows, heads) {
        out[hf * cols..(hf + 1) * cols].copy_from_slice(&data[meta * cols..(meta + 1) * cols]);
    }
    out
}

/// Undoes [`permute_qk_to_hf`]: an HF q/k weight back in Meta's row order.
fn unpermute(t: &HostTensor, heads: usize) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut data = vec![0.0; rows * cols];
    for (meta, hf) in qk_row_pairs(rows, heads) {
        data[meta * cols..(meta + 1) * cols].copy_from_slice(&t.data[hf * cols..(hf + 1) * cols]);
    }
    HostTensor {
        shape: t.shape.clone(),
        data,
    }
}

/// A Hugging Face LLaMA folder seen through Meta key names.
pub struct HfLlama {
    files: ShardedSafetensors,
    n_heads: usize,
    n_kv_heads: usize,
}

impl HfLlama {
    pub fn open(dir: &Path, config: &LlamaConfig) -> Result<Self, WeightsError> {
        Ok(Self {
            files: ShardedSafetensors::open_dir(dir)?,
            n_heads: config.n_heads,
            n_kv_heads: config.kv_heads(),
        })
    }
}

impl TensorSource for HfLlama {
    fn path(&self) -> &Path {
        self.files.path()
    }

    fn keys(&self) -> Vec<String> {
        self.files.keys()
    }

    fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        let Some(hf) = hf_key(key) else {
            return Ok(None);
        };
        let Some(t) = self.files.get(&hf)? else {
            return Ok(None);
        };
        Ok(Some(if key.ends_with("wq.weight") {
            unpermute(&t, self.n_heads)
        } else if key.ends_with("wk.weight") {
            unpermute(&t, self.n_kv_heads)
        } else {
            t
        }))
    }
}

/// The original `--use_vicuna`: Meta-layout base plus the HF-named Vicuna delta, added
/// **without** undoing the q/k permutation (the authors' Vicuna adapters were trained on this).
pub struct VicunaDelta<S: TensorSource> {
    base: S,
    delta: ShardedSafetensors,
}

impl<S: TensorSource> VicunaDelta<S> {
    pub fn open(base: S, delta_dir: &Path) -> Result<Self, WeightsError> {
        Ok(Self {
            base,
            delta: ShardedSafetensors::open_dir(delta_dir)?,
        })
    }
}

impl<S: TensorSource> TensorSource for VicunaDelta<S> {
    fn path(&self) -> &Path {
        self.base.path()
    }

    fn keys(&self) -> Vec<String> {
        self.base.keys()
    }

    fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        let Some(mut base) = self.base.get(key)? else {
            return Ok(None);
        };
        if let Some(d) = hf_key(key)
            .map(|k| self.delta.get(&k))
            .transpose()?
            .flatten()
        {
            if d.shape != base.shape {
                return Err(WeightsError::Shape {
                    path: self.delta.path().to_path_buf(),
                    key: key.to_string(),
                    expected: base.shape,
                    found: d.shape,
                });
            }
            base.data.iter_mut().zip(&d.data).for_each(|(b, d)| *b += d);
        }
        Ok(Some(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_hf_permutation() {
        // 2 heads, head_dim 4, dim 3: build W_meta rows 0..8, permute like HF, undo.
        let (heads, hd, dim) = (2, 4, 3);
        let meta = HostTensor {
            shape: vec![heads * hd, dim],
            data: (0..heads * hd * dim).map(|v| v as f32).collect(),
        };
        let mut hf = meta.clone();
        for h in 0..heads {
            for j in 0..hd / 2 {
                for s in 0..2 {
                    let src = h * hd + j * 2 + s;
                    let dst = h * hd + s * (hd / 2) + j;
                    hf.data[dst * dim..(dst + 1) * dim]
                        .copy_from_slice(&meta.data[src * dim..(src + 1) * dim]);
                }
            }
        }
        assert_eq!(unpermute(&hf, heads), meta);
    }

    #[test]
    fn shard_dims_follow_meta_layout() {
        assert_eq!(shard_dim("tok_embeddings.weight"), Some(1));
        assert_eq!(shard_dim("layers.3.attention.wq.weight"), Some(0));
        assert_eq!(shard_dim("layers.3.attention.wo.weight"), Some(1));
        assert_eq!(shard_dim("layers.3.feed_forward.w2.weight"), Some(1));
        assert_eq!(shard_dim("output.weight"), Some(0));
        assert_eq!(shard_dim("layers.3.ffn_norm.weight"), None);
    }
}
