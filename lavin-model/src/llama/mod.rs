//! The frozen LLaMA decoder (Meta layout) that LaVIN adapts.

pub mod attention;
pub mod base_linear;
pub mod block;
pub mod feed_forward;

use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig, RotaryEncoding,
    RotaryEncodingConfig,
};
use burn::tensor::{backend::Backend, Tensor};

pub use base_linear::BaseLinear;
pub use block::{Block, BlockInput, BlockRoutes, MlpRouterInput};

use crate::cache::{CacheUse, KvCache};
use crate::config::LavinConfig;
use crate::quant::{Bits, QuantError};

#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    pub tok_embeddings: Embedding<B>,
    pub layers: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    pub output: Linear<B>,
    pub rope: RotaryEncoding<B>,
}

impl<B: Backend> Llama<B> {
    pub fn new(config: &LavinConfig, device: &B::Device) -> Self {
        let l = &config.llama;
        // Generation may run past the training window (the original sizes its rotary table
        // at 2 * max_seq_len), so leave room.
        let rope = RotaryEncodingConfig::new(2 * config.max_seq_len.max(1), l.head_dim())
            .with_theta(l.rope_theta as f32)
            .init(device);
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

    /// Quantizes the linears of every block, one block at a time (each block's f32 weights are
    /// dropped before the next is converted). Embeddings, norms and the output head stay f32.
    pub fn quantize_blocks(mut self, bits: Bits) -> Result<Self, QuantError> {
        self.layers = std::mem::take(&mut self.layers)
            .into_iter()
            .map(|b| b.quantize_base(bits))
            .collect::<Result<_, _>>()?;
        Ok(self)
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
        self.output.forward(self.norm.forward(h))
    }
}
