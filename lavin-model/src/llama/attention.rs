//! LLaMA multi-head attention with Meta's interleaved rotary embedding and an optional KV cache.

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{backend::Backend, Bool, Tensor};

use super::frozen_linear::{BaseFormat, FrozenLinear};
use super::Rope;
use crate::cache::{CacheUse, LayerCache};
use crate::kernels;
use crate::quant::QuantError;
use crate::sdpa::sdpa;

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub wq: FrozenLinear<B>,
    pub wk: FrozenLinear<B>,
    pub wv: FrozenLinear<B>,
    pub wo: FrozenLinear<B>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl<B: Backend> Attention<B> {
    pub fn new(dim: usize, n_heads: usize, n_kv_heads: usize, device: &B::Device) -> Self {
        let head_dim = dim / n_heads;
        let lin = |i, o| FrozenLinear::Dense(LinearConfig::new(i, o).with_bias(false).init(device));
        Self {
            wq: lin(dim, n_heads * head_dim),
            wk: lin(dim, n_kv_heads * head_dim),
            wv: lin(dim, n_kv_heads * head_dim),
            wo: lin(n_heads * head_dim, dim),
            n_heads,
            n_kv_heads,
            head_dim,
        }
    }

    /// Stores wq, wk, wv, wo as `format` says (see [`FrozenLinear::convert`]).
    pub fn convert(self, format: BaseFormat) -> Result<Self, QuantError> {
        Ok(Self {
            wq: self.wq.convert(format)?,
            wk: self.wk.convert(format)?,
            wv: self.wv.convert(format)?,
            wo: self.wo.convert(format)?,
            ..self
        })
    }

    /// `x [B, L, C]` at rotary positions `pos..pos+L` -> `[B, L, C]`.
    ///
    /// `mask [L, Lk]` (true = hidden) applies to the keys this call attends to; see
    /// [`CacheUse`] for what a cache changes.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        pos: usize,
        mask: Option<Tensor<B, 2, Bool>>,
        cache: Option<(&mut LayerCache<B>, CacheUse)>,
    ) -> Tensor<B, 3> {
        let [b, l, _] = x.dims();
        let dtype = x.dtype();
        // q, k, v (and so the KV cache and the probabilities) in the frozen weights' dtype
        // where that is half and training keeps it half ([`kernels::half_attention`]), else in
        // the activations' dtype.
        let act = match self.wq.weight_dtype() {
            Some(w) if w != dtype && kernels::half_attention::<B>() => w,
            _ => dtype,
        };
        let project = |w: &FrozenLinear<B>| w.forward_in_weight_dtype(x.clone()).cast(act);
        let heads =
            |t: Tensor<B, 3>, h: usize| kernels::swap_middle(t.reshape([b, l, h, self.head_dim]));
        let q = heads(rope.apply(project(&self.wq), pos), self.n_heads); // [B, H, L, hd]
        let k = heads(rope.apply(project(&self.wk), pos), self.n_kv_heads);
        let v = heads(project(&self.wv), self.n_kv_heads);

        let (k, v) = match cache {
            Some((cache, CacheUse::Prefill { skip })) => {
                cache.append(
                    k.clone().narrow(2, skip, l - skip),
                    v.clone().narrow(2, skip, l - skip),
                );
                (k, v)
            }
            Some((cache, CacheUse::Decode)) => {
                cache.append(k, v);
                cache.keys_values()
            }
            None => (k, v),
        };
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
        let out = sdpa(q, k, v, mask); // [B, H, L, hd]
        let merged = kernels::swap_middle(out).reshape([b, l, self.n_heads * self.head_dim]);
        self.wo.forward_in_weight_dtype(merged).cast(dtype)
    }

    /// Grouped-query attention: each kv head serves `n_heads / n_kv_heads` query heads.
    fn repeat_kv(&self, t: Tensor<B, 4>) -> Tensor<B, 4> {
        let rep = self.n_heads / self.n_kv_heads;
        if rep == 1 {
            return t;
        }
        let [b, h, l, d] = t.dims();
        t.unsqueeze_dim::<5>(2)
            .expand([b, h, rep, l, d])
            .reshape([b, h * rep, l, d])
    }
}
