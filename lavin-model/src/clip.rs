//! The frozen CLIP vision tower (OpenAI layout) with LaVIN's visual adapters.
//!
//! Features are the class token of the residual stream after every 4th block (no `ln_post`,
//! no `proj`): 6 of them for ViT-L/14.

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

use crate::adapter::{RepAdapter, RepAdapterRouter};
use crate::config::{ClipRouterMode, LavinConfig, VisualAdapterType};
use crate::kernels;
use crate::llama::frozen_linear::mixed_linear;
use crate::sdpa::sdpa;

/// CLIP's LayerNorm epsilon (not in any config file).
const LN_EPS: f64 = 1e-5;

/// The adapter in front of a CLIP block's attention.
#[derive(Module, Debug)]
pub enum VisualAdapter<B: Backend> {
    Normal(RepAdapter<B>),
    Router(RepAdapterRouter<B>),
}

/// Multi-head self-attention with packed `in_proj` (rows q; k; v), as `nn.MultiheadAttention`.
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    pub in_proj: Linear<B>,
    pub out_proj: Linear<B>,
    heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    /// `[N, T, W] -> [N, T, W]`, no mask.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, t, w] = x.dims();
        let hd = w / self.heads;
        let qkv = mixed_linear(&self.in_proj, x); // [N, T, 3W]
        let split = |i: usize| {
            kernels::swap_middle(
                qkv.clone()
                    .narrow(2, i * w, w)
                    .reshape([n, t, self.heads, hd]),
            )
        };
        let (q, k, v) = (split(0), split(1), split(2)); // [N, H, T, hd]
        let out = sdpa(q, k, v, None); // [N, H, T, hd]
        mixed_linear(&self.out_proj, kernels::swap_middle(out).reshape([n, t, w]))
    }
}

/// `c_proj(QuickGELU(c_fc(x)))`, QuickGELU(u) = u * sigmoid(1.702 u).
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    pub c_fc: Linear<B>,
    pub c_proj: Linear<B>,
}

impl<B: Backend> ClipMlp<B> {
    /// `[N, T, W] -> [N, T, W]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let u = mixed_linear(&self.c_fc, x);
        mixed_linear(&self.c_proj, kernels::quick_gelu(u))
    }
}

#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    pub attn: ClipAttention<B>,
    pub ln_1: LayerNorm<B>,
    pub mlp: ClipMlp<B>,
    pub ln_2: LayerNorm<B>,
    pub adapter_attn: VisualAdapter<B>,
    pub adapter_mlp: Option<RepAdapterRouter<B>>,
}

/// Router weights a CLIP block used: `[N or 1, T, 2]`.
#[derive(Debug, Clone)]
pub struct ClipRoutes<B: Backend> {
    pub attn: Option<Tensor<B, 3>>,
    pub mlp: Option<Tensor<B, 3>>,
}

impl<B: Backend> ResBlock<B> {
    fn new(config: &LavinConfig, device: &B::Device) -> Self {
        let (w, a) = (config.clip.width, &config.adapter);
        let router = || {
            RepAdapterRouter::new(
                w,
                a.dim,
                a.groups,
                a.scale,
                a.temperature,
                a.dropout,
                device,
            )
        };
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        Self {
            attn: ClipAttention {
                in_proj: lin(w, 3 * w),
                out_proj: lin(w, w),
                heads: config.clip.heads,
            },
            ln_1: LayerNormConfig::new(w).with_epsilon(LN_EPS).init(device),
            mlp: ClipMlp {
                c_fc: lin(w, 4 * w),
                c_proj: lin(4 * w, w),
            },
            ln_2: LayerNormConfig::new(w).with_epsilon(LN_EPS).init(device),
            adapter_attn: match a.visual {
                VisualAdapterType::Normal => {
                    VisualAdapter::Normal(RepAdapter::new(w, a.dim, a.groups, a.dropout, device))
                }
                _ => VisualAdapter::Router(router()),
            },
            adapter_mlp: (a.visual == VisualAdapterType::RouterBlock).then(router),
        }
    }

    /// `[N, T, W] -> [N, T, W]` and the router weights used.
    pub fn forward(&self, x: Tensor<B, 3>, mode: ClipRouterMode) -> (Tensor<B, 3>, ClipRoutes<B>) {
        let y = self.ln_1.forward(x.clone());
        let (y, attn_w) = match &self.adapter_attn {
            VisualAdapter::Normal(adapter) => (adapter.forward(y), None),
            VisualAdapter::Router(adapter) => {
                let w = clip_route(adapter, y.clone(), mode);
                (adapter.forward(y, w.clone()), Some(w))
            }
        };
        let x = x + self.attn.forward(y);
        let z = self.ln_2.forward(x.clone());
        let (z, mlp_w) = match &self.adapter_mlp {
            Some(adapter) => {
                let w = clip_route(adapter, z.clone(), mode);
                (adapter.forward(z, w.clone()), Some(w))
            }
            None => (z, None),
        };
        (
            x + self.mlp.forward(z),
            ClipRoutes {
                attn: attn_w,
                mlp: mlp_w,
            },
        )
    }
}

/// Router weights for a CLIP adapter input `[N, T, W]`: the original reads batch item 0's
/// tokens and applies them to every item (`[1, T, 2]`); per-item mode routes each item on its
/// own tokens (`[N, T, 2]`).
fn clip_route<B: Backend>(
    adapter: &RepAdapterRouter<B>,
    y: Tensor<B, 3>,
    mode: ClipRouterMode,
) -> Tensor<B, 3> {
    match mode {
        ClipRouterMode::Reference => adapter.route(y.narrow(0, 0, 1)),
        ClipRouterMode::PerItem => adapter.route(y),
    }
}

#[derive(Module, Debug)]
pub struct VisionTower<B: Backend> {
    /// Patch embedding `[W, 3, p, p]` (no bias), applied as a matmul over flattened patches.
    pub conv1: Param<Tensor<B, 4>>,
    pub class_embedding: Param<Tensor<B, 1>>,
    pub positional_embedding: Param<Tensor<B, 2>>,
    pub ln_pre: LayerNorm<B>,
    pub resblocks: Vec<ResBlock<B>>,
    patch: usize,
    router_mode: ClipRouterMode,
}

impl<B: Backend> VisionTower<B> {
    pub fn new(config: &LavinConfig, device: &B::Device) -> Self {
        let c = &config.clip;
        let normal = |std| Initializer::Normal { mean: 0.0, std };
        Self {
            conv1: normal(0.02).init([c.width, 3, c.patch_size, c.patch_size], device),
            class_embedding: normal(0.02).init([c.width], device),
            positional_embedding: normal(0.01).init([c.tokens(), c.width], device),
            ln_pre: LayerNormConfig::new(c.width)
                .with_epsilon(LN_EPS)
                .init(device),
            resblocks: (0..c.layers)
                .map(|_| ResBlock::new(config, device))
                .collect(),
            patch: c.patch_size,
            router_mode: config.adapter.clip_router,
        }
    }

    /// `images [N, 3, H, W] -> [N, layers / 4, W]` plus every block's router weights.
    pub fn forward(&self, images: Tensor<B, 4>) -> (Tensor<B, 3>, Vec<ClipRoutes<B>>) {
        let mut x = self.stem(images);
        let mut feats = Vec::with_capacity(self.resblocks.len() / 4);
        let mut routes = Vec::with_capacity(self.resblocks.len());
        for (i, block) in self.resblocks.iter().enumerate() {
            let (out, r) = block.forward(x, self.router_mode);
            x = out;
            routes.push(r);
            if is_feature_block(i) {
                feats.push(x.clone().narrow(1, 0, 1)); // class token [N, 1, W]
            }
        }
        (Tensor::cat(feats, 1), routes)
    }

    /// Patch embedding, class token, positions and `ln_pre`: `[N, 3, H, W] -> [N, T, W]`, the
    /// first block's input.
    pub fn stem(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, ch, h, w] = images.dims();
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let width = self.class_embedding.dims()[0];
        // Patchify: [N, 3, gh, p, gw, p] -> [N, gh, gw, 3, p, p] -> [N, gh*gw, 3*p*p].
        let patches = images
            .reshape([n, ch, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n, gh * gw, ch * p * p]);
        let kernel = self.conv1.val().reshape([width, ch * p * p]).transpose();
        let x = patches.matmul(kernel.unsqueeze()); // [N, G, W]
        let cls = self
            .class_embedding
            .val()
            .reshape([1, 1, width])
            .expand([n, 1, width]);
        let x = Tensor::cat(vec![cls, x], 1) + self.positional_embedding.val().unsqueeze();
        self.ln_pre.forward(x)
    }

    /// How the adapters' routers read their input.
    pub fn router_mode(&self) -> ClipRouterMode {
        self.router_mode
    }
}

/// Whether block `i`'s output gives a feature (its class token): every 4th block.
pub fn is_feature_block(i: usize) -> bool {
    (i + 1) % 4 == 0
}
