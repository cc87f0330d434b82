//! One LLaMA block with LaVIN's router adapters in front of attention (and the FFN for 'block').

use burn::module::Module;
use burn::nn::{RmsNorm, RmsNormConfig};
use burn::tensor::{backend::Backend, Bool, Tensor};

use super::attention::Attention;
use super::feed_forward::FeedForward;
use super::frozen_linear::BaseFormat;
use crate::adapter::RepAdapterRouter;
use crate::cache::{CacheUse, LayerCache};
use crate::config::{LavinConfig, LlamaAdapterType};
use crate::kernels;
use crate::quant::QuantError;

/// Router weights one block used: `[B, 2]` each (the MLP pair only for 'block' adapters).
#[derive(Debug, Clone)]
pub struct BlockRoutes<B: Backend> {
    pub attn: Tensor<B, 2>,
    pub mlp: Option<Tensor<B, 2>>,
}

/// Which rows the MLP router reads. Training reads `ffn_norm(h)[:, 0]` (after attention);
/// the original's cached generator reads `ffn_norm(x)[:, 0]` with x the block input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpRouterInput {
    AfterAttention,
    BlockInput,
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub attention: Attention<B>,
    pub feed_forward: FeedForward<B>,
    pub attention_norm: RmsNorm<B>,
    pub ffn_norm: RmsNorm<B>,
    pub adapter_attn: RepAdapterRouter<B>,
    pub adapter_mlp: Option<RepAdapterRouter<B>>,
}

/// Per-call inputs shared by every block.
pub struct BlockInput<'a, B: Backend> {
    pub rope: &'a super::Rope<B>,
    pub pos: usize,
    pub mask: Option<Tensor<B, 2, Bool>>,
    pub mlp_router_input: MlpRouterInput,
}

impl<B: Backend> Block<B> {
    pub fn new(config: &LavinConfig, device: &B::Device) -> Self {
        let l = &config.llama;
        let a = &config.adapter;
        let router = || {
            RepAdapterRouter::new(
                l.dim,
                a.dim,
                a.groups,
                a.scale,
                a.temperature,
                a.dropout,
                device,
            )
        };
        Self {
            attention: Attention::new(l.dim, l.n_heads, l.kv_heads(), device),
            feed_forward: FeedForward::new(l.dim, l.ffn_hidden(), device),
            attention_norm: RmsNormConfig::new(l.dim)
                .with_epsilon(l.norm_eps)
                .init(device),
            ffn_norm: RmsNormConfig::new(l.dim)
                .with_epsilon(l.norm_eps)
                .init(device),
            adapter_attn: router(),
            adapter_mlp: (a.llama == LlamaAdapterType::Block).then(router),
        }
    }

    /// Stores the frozen linears (attention and feed-forward) as `format` says; adapters and
    /// norms stay f32 (LaVIN-lite quantizes only the LLaMA block linears).
    pub fn convert_base(self, format: BaseFormat) -> Result<Self, QuantError> {
        Ok(Self {
            attention: self.attention.convert(format)?,
            feed_forward: self.feed_forward.convert(format)?,
            ..self
        })
    }

    /// `x [B, L, C] -> [B, L, C]` and the router weights used. `routes` replays weights from an
    /// earlier step (the generator computes them once, at its first step).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        input: &BlockInput<'_, B>,
        routes: Option<&BlockRoutes<B>>,
        cache: Option<(&mut LayerCache<B>, CacheUse)>,
    ) -> (Tensor<B, 3>, BlockRoutes<B>) {
        let normed = rms(&self.attention_norm, x.clone());
        let attn_w = match routes {
            Some(r) => r.attn.clone(),
            None => self.adapter_attn.route(first_row(normed.clone())),
        };
        let adapted = self
            .adapter_attn
            .forward(normed, attn_w.clone().unsqueeze_dim(1));
        let h = x.clone()
            + self
                .attention
                .forward(adapted, input.rope, input.pos, input.mask.clone(), cache);

        let z = rms(&self.ffn_norm, h.clone());
        let (z, mlp_w) = match &self.adapter_mlp {
            Some(adapter) => {
                let w = match routes.and_then(|r| r.mlp.clone()) {
                    Some(w) => w,
                    None => match input.mlp_router_input {
                        MlpRouterInput::AfterAttention => adapter.route(first_row(z.clone())),
                        MlpRouterInput::BlockInput => {
                            adapter.route(first_row(rms(&self.ffn_norm, x)))
                        }
                    },
                };
                (adapter.forward(z, w.clone().unsqueeze_dim(1)), Some(w))
            }
            None => (z, None),
        };
        let out = h + self.feed_forward.forward(z);
        (
            out,
            BlockRoutes {
                attn: attn_w,
                mlp: mlp_w,
            },
        )
    }
}

/// `[B, L, C] -> [B, C]`: position 0 (the modality token in LaVIN's sequences).
fn first_row<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 2> {
    x.narrow(1, 0, 1).squeeze_dim(1)
}

/// `norm.forward(x)`, fused where the backend allows.
pub(super) fn rms<B: Backend>(norm: &RmsNorm<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    kernels::rms_norm(x, norm.gamma.val(), norm.epsilon)
}
