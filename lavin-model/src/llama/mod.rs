//! The frozen LLaMA decoder (Meta layout) that LaVIN adapts.

pub mod attention;
pub mod block;
pub mod feed_forward;
pub mod frozen_linear;
pub mod rope;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{backend::Backend, Int, Tensor};

pub use block::{Block, BlockInput, BlockRoutes, MlpRouterInput};
pub use frozen_linear::{BaseFormat, FrozenLinear};
pub use rope::Rope;

use crate::cache::{CacheUse, KvCache};
use crate::config::LavinConfig;
use crate::quant::{Bits, QuantError};
use frozen_linear::{cast_linear, cast_param, compute_dtype, mixed_linear};

#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    pub tok_embeddings: Embedding<B>,
    pub layers: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    pub output: Linear<B>,
    pub rope: Rope<B>,
}

impl<B: Backend> Llama<B> {
    pub fn new(config: &LavinConfig, device: &B::Device) -> Self {
        let l = &config.llama;
        // Generation may run past the training window (the original sizes its rotary table
        // at 2 * max_seq_len), so leave room.
        let rope = Rope::new(
            l.head_dim(),
            2 * config.max_seq_len.max(1),
            l.rope_theta,
            device,
        );
        Self {
            tok_embeddings: EmbeddingConfig::new(l.vocab_size, l.dim).init(device),
            layers: (0..l.n_layers)
                .map(|_| Block::new(config, device))
                .collect(),
            norm: RmsNormConfig::new(l.dim)
                .with_epsilon(l.norm_eps)
                .init(device),
            output: LinearConfig::new(l.dim, l.vocab_size)
                .with_bias(false)
                .init(device),
            rope,
        }
    }

    /// Stores the frozen weights as `format` says: the embeddings and output head in
    /// `format.precision`, then every block, one at a time (each block's f32 weights are dropped
    /// before the next is converted). Norms stay f32.
    pub fn convert_base(mut self, format: BaseFormat) -> Result<Self, QuantError> {
        self = self.convert_outer(format);
        self.layers = std::mem::take(&mut self.layers)
            .into_iter()
            .map(|b| b.convert_base(format))
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// The embeddings and output head in `format.precision` (not the blocks).
    pub fn convert_outer(mut self, format: BaseFormat) -> Self {
        let dtype = format.precision.dtype::<B>();
        self.tok_embeddings.weight = cast_param(self.tok_embeddings.weight, dtype);
        self.output = cast_linear(self.output, format.precision);
        self
    }

    /// `tokens [B, L] -> [B, L, C]` in the backend's float type (whatever the table's dtype).
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.tok_embeddings
            .forward(tokens)
            .cast(compute_dtype::<B>())
    }

    /// The frozen linears of every block, in order: wq, wk, wv, wo, w1, w2, w3 per layer.
    pub fn base_linears(&self) -> impl Iterator<Item = &FrozenLinear<B>> {
        self.layers.iter().flat_map(|b| {
            let (a, f) = (&b.attention, &b.feed_forward);
            [&a.wq, &a.wk, &a.wv, &a.wo, &f.w1, &f.w2, &f.w3]
        })
    }

    /// The bit width of the block linears (`None` = dense; checks the first layer's wq).
    pub fn base_bits(&self) -> Option<Bits> {
        self.layers.first().and_then(|b| b.attention.wq.bits())
    }

    /// Runs every block on `h [B, L, C]`; returns the final hidden states (before `norm`) and
    /// each block's router weights.
    pub fn blocks(
        &self,
        mut h: Tensor<B, 3>,
        input: &BlockInput<'_, B>,
        routes: Option<&[BlockRoutes<B>]>,
        mut cache: Option<(&mut KvCache<B>, CacheUse)>,
    ) -> (Tensor<B, 3>, Vec<BlockRoutes<B>>) {
        let mut used = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|(c, from)| (c.layer(i), *from));
            let (out, r) = layer.forward(h, input, routes.map(|r| &r[i]), layer_cache);
            h = out;
            used.push(r);
        }
        (h, used)
    }

    /// `[B, L, C] -> [B, L, V]`
    pub fn head(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        mixed_linear(&self.output, block::rms(&self.norm, h))
    }
}
