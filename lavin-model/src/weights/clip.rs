//! CLIP vision weights: OpenAI state dicts (`visual.*`) and Hugging Face `CLIPVisionModel`
//! safetensors (`vision_model.*`), both seen through OpenAI key names.

use std::path::Path;

use super::source::{open_file, HostTensor, TensorSource};
use crate::error::WeightsError;

/// The OpenAI key of an original LaVIN CLIP name
/// (`backbone.visual.transformer.resblocks.0.attn.in_proj.weight` ->
/// `visual.transformer.resblocks.0.attn.in_proj_weight`).
pub fn openai_key(original: &str) -> Option<String> {
    let k = original.strip_prefix("backbone.")?;
    Some(
        k.replace("attn.in_proj.weight", "attn.in_proj_weight")
            .replace("attn.in_proj.bias", "attn.in_proj_bias"),
    )
}

/// Opens a CLIP checkpoint in either layout: a `.safetensors` with `vision_model.*` keys is read
/// as Hugging Face, anything else as an OpenAI state dict (`visual.*`, or without the prefix).
pub fn open_clip(path: &Path) -> Result<Box<dyn TensorSource>, WeightsError> {
    let file = open_file(path, None)?;
    if file.keys().iter().any(|k| k.starts_with("vision_model.")) {
        Ok(Box::new(HfClip { file }))
    } else {
        Ok(Box::new(OpenAiClip { file }))
    }
}

struct OpenAiClip {
    file: Box<dyn TensorSource>,
}

impl TensorSource for OpenAiClip {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn keys(&self) -> Vec<String> {
        self.file.keys()
    }

    fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        match self.file.get(key)? {
            Some(t) => Ok(Some(t)),
            // A state dict saved from `model.visual` has no `visual.` prefix.
            None => key
                .strip_prefix("visual.")
                .map_or(Ok(None), |k| self.file.get(k)),
        }
    }
}

struct HfClip {
    file: Box<dyn TensorSource>,
}

impl HfClip {
    fn hf(&self, key: &str) -> Result<HostTensor, WeightsError> {
        self.file.require(&format!("vision_model.{key}"))
    }
}

impl TensorSource for HfClip {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn keys(&self) -> Vec<String> {
        self.file.keys()
    }

    fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        let Some(k) = key.strip_prefix("visual.") else {
            return Ok(None);
        };
        let t = match k {
            "conv1.weight" => self.hf("embeddings.patch_embedding.weight")?,
            "class_embedding" => self.hf("embeddings.class_embedding")?,
            "positional_embedding" => self.hf("embeddings.position_embedding.weight")?,
            "ln_pre.weight" => self.hf("pre_layrnorm.weight")?,
            "ln_pre.bias" => self.hf("pre_layrnorm.bias")?,
            _ => {
                let Some(rest) = k.strip_prefix("transformer.resblocks.") else {
                    return Ok(None);
                };
                let Some((n, name)) = rest.split_once('.') else {
                    return Ok(None);
                };
                let layer = |s: &str| self.hf(&format!("encoder.layers.{n}.{s}"));
                match name {
                    // OpenAI packs q; k; v rows into one in-projection.
                    "attn.in_proj_weight" | "attn.in_proj_bias" => {
                        let what = if name.ends_with("weight") {
                            "weight"
                        } else {
                            "bias"
                        };
                        let parts =
                            ["q", "k", "v"].map(|p| layer(&format!("self_attn.{p}_proj.{what}")));
                        let [q, k, v] = parts;
                        HostTensor::cat(&[q?, k?, v?], 0)
                    }
                    _ => {
                        let hf = match name {
                            "attn.out_proj.weight" => "self_attn.out_proj.weight",
                            "attn.out_proj.bias" => "self_attn.out_proj.bias",
                            "ln_1.weight" => "layer_norm1.weight",
                            "ln_1.bias" => "layer_norm1.bias",
                            "ln_2.weight" => "layer_norm2.weight",
                            "ln_2.bias" => "layer_norm2.bias",
                            "mlp.c_fc.weight" => "mlp.fc1.weight",
                            "mlp.c_fc.bias" => "mlp.fc1.bias",
                            "mlp.c_proj.weight" => "mlp.fc2.weight",
                            "mlp.c_proj.bias" => "mlp.fc2.bias",
                            _ => return Ok(None),
                        };
                        layer(hf)?
                    }
                }
            }
        };
        Ok(Some(t))
    }
}

/// Reads the tower's shape from the weights, as OpenAI's `build_model` does: width from the
/// class embedding, patch size from `conv1`, layers by counting blocks, resolution from the
/// position table, heads = width / 64.
pub fn infer_config(source: &dyn TensorSource) -> Result<crate::config::ClipConfig, WeightsError> {
    let conv = source.require("visual.conv1.weight")?;
    let pos = source.require("visual.positional_embedding")?;
    let width = conv.shape[0];
    let patch_size = conv.shape[2];
    let grid = ((pos.shape[0] - 1) as f64).sqrt().round() as usize;
    let mut layers = 0;
    while source
        .get(&format!(
            "visual.transformer.resblocks.{layers}.ln_1.weight"
        ))?
        .is_some()
    {
        layers += 1;
    }
    if layers == 0 || grid * grid + 1 != pos.shape[0] {
        return Err(WeightsError::Config {
            path: source.path().to_path_buf(),
            message: format!(
                "not a CLIP vision tower: {layers} blocks, {} positions",
                pos.shape[0]
            ),
        });
    }
    Ok(crate::config::ClipConfig {
        input_resolution: grid * patch_size,
        patch_size,
        width,
        layers,
        heads: (width / 64).max(1),
    })
}
