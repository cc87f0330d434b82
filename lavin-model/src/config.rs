//! Configuration of the two frozen towers, the adapters, and the presets users ask for.
//!
//! Every module has one config struct with an `init(&device)`; [`LavinConfig`] ties them
//! together. Configs are plain serde data so a training run can save the one it resolved.

use serde::{Deserialize, Serialize};

/// LLaMA decoder shape (Meta `params.json` plus the LLaMA-2 extensions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Grouped-query attention (LLaMA-2 70B style); `None` = `n_heads`.
    #[serde(default)]
    pub n_kv_heads: Option<usize>,
    pub vocab_size: usize,
    pub multiple_of: usize,
    #[serde(default)]
    pub ffn_dim_multiplier: Option<f64>,
    pub norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    /// Meta's sizing rule: `multiple_of * ceil(int(2 * 4 * dim / 3) * mult / multiple_of)`.
    pub fn ffn_hidden(&self) -> usize {
        let mut hidden = 2 * 4 * self.dim / 3;
        if let Some(m) = self.ffn_dim_multiplier {
            hidden = (m * hidden as f64) as usize;
        }
        self.multiple_of * hidden.div_ceil(self.multiple_of)
    }
}

/// OpenAI CLIP vision tower shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub input_resolution: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
}

impl ClipConfig {
    pub fn grid(&self) -> usize {
        self.input_resolution / self.patch_size
    }

    /// Patch tokens plus the class token.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// LaVIN takes the class token after every 4th block.
    pub fn n_feats(&self) -> usize {
        self.layers / 4
    }
}

/// Where adapters sit in the LLaMA blocks (`--adapter-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum LlamaAdapterType {
    /// A router adapter in front of attention.
    Attn,
    /// In front of attention and of the feed-forward network.
    Block,
}

/// Which adapters the CLIP blocks get (`--visual-adapter-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum VisualAdapterType {
    /// Plain RepAdapter before attention: replaces its input (no residual, no scale).
    Normal,
    /// Router adapter before attention.
    Router,
    /// Router adapters before attention and before the MLP.
    #[cfg_attr(feature = "clap", value(name = "router_block", alias = "router-block"))]
    RouterBlock,
}

/// How CLIP routers pick their weights inside a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum ClipRouterMode {
    /// The original: CLIP runs on a (tokens, batch, width) tensor and its routers read `x[:, 0]`,
    /// i.e. batch item 0, so every item is routed by item 0's tokens.
    #[default]
    Reference,
    /// Each item routes on its own tokens (what it gets in a batch of one).
    #[cfg_attr(feature = "clap", value(name = "per_item", alias = "per-item"))]
    PerItem,
}

/// The Mixture-of-Modality adapters and the image projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub llama: LlamaAdapterType,
    pub visual: VisualAdapterType,
    /// Hidden size of each adapter (`--adapter-dim`).
    pub dim: usize,
    /// Groups of the up-projections (2 in the original).
    #[serde(default = "default_groups")]
    pub groups: usize,
    pub scale: f64,
    /// Router softmax temperature (`--temperature` in the original scripts).
    pub temperature: f64,
    /// Hidden size of `adapter_proj` (`--hidden-proj`).
    pub hidden_proj: usize,
    /// Dropout on the adapter bottleneck; only active on autodiff backends (training).
    pub dropout: f64,
    #[serde(default)]
    pub clip_router: ClipRouterMode,
}

fn default_groups() -> usize {
    2
}

impl AdapterConfig {
    /// The paper's ScienceQA setting: `attn` + `router`, dim 8, scale 1, temperature 10.
    pub fn paper() -> Self {
        Self {
            llama: LlamaAdapterType::Attn,
            visual: VisualAdapterType::Router,
            dim: 8,
            groups: 2,
            scale: 1.0,
            temperature: 10.0,
            hidden_proj: 128,
            dropout: 0.1,
            clip_router: ClipRouterMode::Reference,
        }
    }
}

/// Everything needed to build a [`crate::Lavin`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LavinConfig {
    pub llama: LlamaConfig,
    pub clip: ClipConfig,
    pub adapter: AdapterConfig,
    /// Training window S: the assembled sequence is cut to this many rows.
    pub max_seq_len: usize,
    /// `encode("Image: ")` without BOS/EOS, inserted before the image features.
    pub prefix_img: Vec<u32>,
    /// `encode("Image: N/A")` without BOS/EOS, used by text-only items.
    pub prefix_nonimg: Vec<u32>,
}

impl LavinConfig {
    pub fn n_feats(&self) -> usize {
        self.clip.n_feats()
    }

    /// ViT-L/14 at 224 px, the paper's vision tower.
    pub fn vit_l14() -> ClipConfig {
        ClipConfig {
            input_resolution: 224,
            patch_size: 14,
            width: 1024,
            layers: 24,
            heads: 16,
        }
    }

    /// LLaMA-1 shapes (`params.json` of 7B/13B) with ViT-L/14 and the paper's adapters.
    /// The prefix ids are placeholders of the right length for benchmarks on random weights;
    /// real runs set them from the tokenizer (`encode("Image: ")`, `encode("Image: N/A")`).
    pub fn llama(size: &str) -> Option<Self> {
        let (dim, n_layers, n_heads) = match size {
            "7B" | "7b" => (4096, 32, 32),
            "13B" | "13b" => (5120, 40, 40),
            "33B" | "33b" | "30B" | "30b" => (6656, 60, 52),
            "65B" | "65b" => (8192, 80, 64),
            _ => return None,
        };
        Some(Self {
            llama: LlamaConfig {
                dim,
                n_layers,
                n_heads,
                n_kv_heads: None,
                vocab_size: 32000,
                multiple_of: 256,
                ffn_dim_multiplier: None,
                norm_eps: 1e-6,
                rope_theta: 10_000.0,
            },
            clip: Self::vit_l14(),
            adapter: AdapterConfig::paper(),
            max_seq_len: 512,
            prefix_img: vec![7084, 29901, 29871],
            prefix_nonimg: vec![7084, 29901, 405, 29914, 29909],
        })
    }

    pub fn llama_7b() -> Self {
        Self::llama("7B").expect("7B is a known preset")
    }

    /// A slice of LaVIN-7B for memory measurements: the 7B shapes (dim 4096, 32 heads, FFN
    /// 11008, vocab 32000, seq 512) with `llama_layers` LLaMA blocks, and ViT-L/14 at 224 with
    /// `vit_layers` blocks (24 = the whole tower; features come from every 4th block, so a cut
    /// tower gives `vit_layers / 4` image features). What grows with each added LLaMA block,
    /// times 32, is the full model's.
    pub fn llama_7b_slice(llama_layers: usize, vit_layers: usize) -> Self {
        let mut c = Self::llama_7b();
        c.llama.n_layers = llama_layers;
        c.clip.layers = vit_layers;
        c
    }

    /// The benchmark preset (fixed shapes, so runs compare across time and implementations).
    pub fn small() -> Self {
        Self {
            llama: LlamaConfig {
                dim: 512,
                n_layers: 8,
                n_heads: 8,
                n_kv_heads: None,
                vocab_size: 32000,
                multiple_of: 256,
                ffn_dim_multiplier: None,
                norm_eps: 1e-6,
                rope_theta: 10_000.0,
            },
            clip: ClipConfig {
                input_resolution: 224,
                patch_size: 14,
                width: 256,
                layers: 8,
                heads: 4,
            },
            adapter: AdapterConfig {
                hidden_proj: 128,
                ..AdapterConfig::paper()
            },
            max_seq_len: 256,
            prefix_img: vec![7084, 29901, 29871],
            prefix_nonimg: vec![7084, 29901, 405, 29914, 29909],
        }
    }

    /// A tiny model for tests and the CPU default run; shapes of the parity case `tiny-a`
    /// (vocabulary 512, the bundled tokenizer). Prefix ids are that tokenizer's.
    pub fn tiny() -> Self {
        Self {
            llama: LlamaConfig {
                dim: 64,
                n_layers: 2,
                n_heads: 4,
                n_kv_heads: None,
                vocab_size: 512,
                multiple_of: 32,
                ffn_dim_multiplier: None,
                norm_eps: 1e-6,
                rope_theta: 10_000.0,
            },
            clip: ClipConfig {
                input_resolution: 224,
                patch_size: 32,
                width: 128,
                layers: 8,
                heads: 2,
            },
            adapter: AdapterConfig {
                hidden_proj: 16,
                ..AdapterConfig::paper()
            },
            max_seq_len: 48,
            prefix_img: vec![],
            prefix_nonimg: vec![],
        }
    }

    /// Look a preset up by the name used on command lines.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "small" => Some(Self::small()),
            "7b-shape" | "7b" | "7B" => Some(Self::llama_7b()),
            "13b-shape" | "13b" | "13B" => Self::llama("13B"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffn_hidden_follows_meta_rule() {
        // tiny-a: dim 64, multiple_of 32 -> 192; LLaMA-7B: 11008; 13B: 13824.
        assert_eq!(LavinConfig::tiny().llama.ffn_hidden(), 192);
        assert_eq!(LavinConfig::llama_7b().llama.ffn_hidden(), 11008);
        assert_eq!(LavinConfig::llama("13B").unwrap().llama.ffn_hidden(), 13824);
        // LLaMA-2 70B: dim 8192, multiplier 1.3, multiple_of 4096 -> 28672.
        let mut c = LavinConfig::llama("65B").unwrap().llama;
        c.ffn_dim_multiplier = Some(1.3);
        c.multiple_of = 4096;
        assert_eq!(c.ffn_hidden(), 28672);
    }

    #[test]
    fn vit_l14_gives_six_features() {
        assert_eq!(LavinConfig::llama_7b().n_feats(), 6);
        assert_eq!(LavinConfig::vit_l14().tokens(), 257);
    }

    #[test]
    fn seven_b_slice_keeps_the_7b_shapes() {
        let s = LavinConfig::llama_7b_slice(2, 8);
        let full = LavinConfig::llama_7b();
        assert_eq!((s.llama.n_layers, s.clip.layers, s.n_feats()), (2, 8, 2));
        assert_eq!(s.llama.ffn_hidden(), 11008);
        let cut = |mut c: LavinConfig| {
            c.llama.n_layers = 0;
            c.clip.layers = 0;
            c
        };
        assert_eq!(cut(s), cut(full));
    }
}
