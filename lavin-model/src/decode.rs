//! Model steps for KV-cache generation, reproducing the original generator by default.
//!
//! The original embeds the whole token buffer once (image features spliced over placeholder
//! ids), runs `[modality token] + buffer[..m]` at positions `0..=m` (m = shortest prompt),
//! caches every row but the modality token, then feeds one row per step. Its later steps give
//! the fed row rotary position `cur_pos - 1`, one lower than training; [`Positions::Consistent`]
//! uses the training positions instead.

use burn::tensor::{backend::Backend, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::cache::{CacheUse, KvCache};
use crate::lavin::modality_mask;
use crate::llama::{BlockInput, BlockRoutes, MlpRouterInput};
use crate::Lavin;

/// Rotary positions of the rows fed after the first step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// As the original generator: the row at buffer index p gets position p (training: p + 1).
    #[default]
    Faithful,
    /// As in training: buffer index p gets position p + 1 (the modality token holds 0).
    Consistent,
}

/// Per-generation state: the cache and the router weights fixed at the first step.
pub struct DecodeState<B: Backend> {
    pub cache: KvCache<B>,
    pub routes: Vec<BlockRoutes<B>>,
    pub positions: Positions,
}

impl<B: Backend> Lavin<B> {
    /// Embeds the token buffer `[B, T]` and, for image items, overwrites the `n_feats`
    /// placeholder rows after `[BOS] + prefix_img` with `image_embeds [B, F, C]`: `[B, T, C]`.
    pub fn embed_buffer(
        &self,
        tokens: Tensor<B, 2, Int>,
        image_embeds: Tensor<B, 3>,
        indicators: Tensor<B, 1, Int>,
    ) -> Tensor<B, 3> {
        let [b, t] = tokens.dims();
        let e = self.llama.embed(tokens);
        let [_, f, c] = image_embeds.dims();
        let start = 1 + self.config().prefix_img.len();
        if start >= t {
            return e;
        }
        let f = f.min(t - start);
        let mut parts = vec![e.clone().narrow(1, 0, start), image_embeds.narrow(1, 0, f)];
        if start + f < t {
            parts.push(e.clone().narrow(1, start + f, t - start - f));
        }
        let spliced = Tensor::cat(parts, 1);
        let has_image = indicators
            .equal_elem(1)
            .reshape([b, 1, 1])
            .expand([b, t, c]);
        e.mask_where(has_image, spliced)
    }

    /// `indicators [B] -> [B, 1, C]`: the modality token of each item.
    pub fn modality_token(&self, indicators: Tensor<B, 1, Int>) -> Tensor<B, 3> {
        let b = indicators.dims()[0];
        self.adapter_modality_embedding
            .forward(indicators.reshape([b, 1]))
    }

    /// First step: `prompt [B, m, C]` (buffer rows `0..m`) behind the modality token, with the
    /// training mask at positions `0..=m`. Computes and keeps the router weights, caches rows
    /// `1..=m`, returns the logits of the last row `[B, V]`.
    pub fn prefill(
        &self,
        modality: Tensor<B, 3>,
        prompt: Tensor<B, 3>,
        positions: Positions,
    ) -> (Tensor<B, 2>, DecodeState<B>) {
        let h = Tensor::cat(vec![modality, prompt], 1);
        let rows = h.dims()[1];
        let input = BlockInput {
            rope: &self.llama.rope,
            pos: 0,
            mask: Some(modality_mask(rows, rows, &h.device())),
            // The original's cached blocks read the MLP router input before attention.
            mlp_router_input: MlpRouterInput::BlockInput,
        };
        let mut cache = KvCache::new(self.llama.layers.len());
        let (h, routes) = self.llama.blocks(
            h,
            &input,
            None,
            Some((&mut cache, CacheUse::Prefill { skip: 1 })),
        );
        (
            self.last_logits(h),
            DecodeState {
                cache,
                routes,
                positions,
            },
        )
    }

    /// Later step: the embedding `[B, 1, C]` of buffer row `index`, attending to the cache.
    /// Returns `[B, V]`.
    pub fn decode(
        &self,
        state: &mut DecodeState<B>,
        row: Tensor<B, 3>,
        index: usize,
    ) -> Tensor<B, 2> {
        let pos = match state.positions {
            Positions::Faithful => index,
            Positions::Consistent => index + 1,
        };
        let input = BlockInput {
            rope: &self.llama.rope,
            pos,
            mask: None,
            mlp_router_input: MlpRouterInput::BlockInput,
        };
        let (h, _) = self.llama.blocks(
            row,
            &input,
            Some(&state.routes),
            Some((&mut state.cache, CacheUse::Decode)),
        );
        self.last_logits(h)
    }

    /// `[B, L, C] -> [B, V]` for the last row.
    fn last_logits(&self, h: Tensor<B, 3>) -> Tensor<B, 2> {
        let l = h.dims()[1];
        self.llama.head(h.narrow(1, l - 1, 1)).squeeze_dim(1)
    }
}
