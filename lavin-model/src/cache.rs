//! KV cache for generation.
//!
//! The original generator's first step runs `[modality token] + prompt[..m]` with the training
//! mask and caches the keys/values of the prompt rows only: the modality token is never cached
//! (no other token attends to it anyway). Later steps feed one row each and attend to the whole
//! cache. Which rotary positions the rows get is the caller's choice ([`crate::generate`]).

use burn::tensor::{backend::Backend, Tensor};

/// How one forward call uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// First call: rows attend among themselves (under the mask); rows `skip..` are stored.
    Prefill { skip: usize },
    /// Later calls: rows are appended, then attend to everything cached.
    Decode,
}

/// Keys and values of one layer, `[B, H_kv, T, head_dim]` each.
#[derive(Debug, Clone, Default)]
pub struct LayerCache<B: Backend> {
    kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> LayerCache<B> {
    /// Appends `k, v [B, H_kv, L, hd]` along the sequence axis.
    pub fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) {
        self.kv = Some(match self.kv.take() {
            None => (k, v),
            Some((ck, cv)) => (Tensor::cat(vec![ck, k], 2), Tensor::cat(vec![cv, v], 2)),
        });
    }

    /// Everything cached so far. Panics if empty (a decode step before any prefill).
    pub fn keys_values(&self) -> (Tensor<B, 4>, Tensor<B, 4>) {
        self.kv
            .clone()
            .expect("decode step before prefill: the KV cache is empty")
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One [`LayerCache`] per LLaMA block.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: (0..n_layers).map(|_| LayerCache { kv: None }).collect(),
        }
    }

    pub fn layer(&mut self, i: usize) -> &mut LayerCache<B> {
        &mut self.layers[i]
    }

    /// Cached positions (the same in every layer).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
