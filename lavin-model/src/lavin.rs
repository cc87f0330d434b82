//! `Lavin<B>`: the LaVIN idea in one place. Image features become LLaMA tokens after
//! "Image: ", a learned modality token leads every sequence, the routers read it, and no other
//! token may attend to it.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};

use crate::adapter::AdapterProj;
use crate::clip::{ClipRoutes, VisionTower};
use crate::config::LavinConfig;
use crate::llama::{BaseFormat, BlockInput, BlockRoutes, Llama, MlpRouterInput};
use crate::loss::masked_cross_entropy;

#[derive(Module, Debug)]
pub struct Lavin<B: Backend> {
    pub llama: Llama<B>,
    pub clip: VisionTower<B>,
    pub adapter_proj: AdapterProj<B>,
    /// Row 0 for text-only inputs, row 1 for inputs with an image: `[2, C]`.
    pub adapter_modality_embedding: Embedding<B>,
    #[module(skip)]
    pub config: LavinConfig,
}

/// A training forward up to the LLaMA blocks ([`Lavin::prepare`]): with
/// [`Lavin::block_input`], the LLaMA blocks and [`Lavin::loss_from_hidden`], the pieces of
/// [`Lavin::loss`] for training loops of their own (see [`crate::recompute`]).
#[derive(Debug, Clone)]
pub struct Prepared<B: Backend> {
    /// `[B, S, C]`: the assembled sequence, the first block's input.
    pub h0: Tensor<B, 3>,
    /// `[B, S-1]`: row `i` of the final hidden states predicts `targets[:, i]`.
    pub targets: Tensor<B, 2, Int>,
    /// `[S, S]`: [`modality_mask`].
    pub mask: Tensor<B, 2, Bool>,
    /// `[B, F, W]`: the vision tower's features.
    pub clip_feats: Tensor<B, 3>,
    /// Router weights of the vision tower's blocks (empty from [`Lavin::prepare_from_feats`]).
    pub clip_routes: Vec<ClipRoutes<B>>,
    /// `[B, F, C]`: `adapter_proj(clip_feats)`.
    pub image_embeds: Tensor<B, 3>,
}

/// A training batch, exactly as the original's dataset yields it.
#[derive(Debug, Clone)]
pub struct LavinBatch<B: Backend> {
    /// `[B, S]`: `[BOS] + encode(prompt + answer) + [EOS]`, padded with 0 or cut to S.
    pub tokens: Tensor<B, 2, Int>,
    /// `[B, S]`: the tokens with prompt positions set to 0 (ignored by the loss).
    pub labels: Tensor<B, 2, Int>,
    /// `[B, 3, H, W]`: preprocessed images, zeros for text-only items.
    pub images: Tensor<B, 4>,
    /// `[B]`: 1 = has an image, 0 = text only.
    pub indicators: Tensor<B, 1, Int>,
}

#[derive(Debug, Clone)]
pub struct LavinOutput<B: Backend> {
    /// `[B, S-1, V]`: logits at positions 0..S-2 (the last is dropped).
    pub logits: Tensor<B, 3>,
    /// `[1]`: mean cross entropy over targets != 0.
    pub loss: Tensor<B, 1>,
    /// `[B, S-1]`: position p predicts `targets[:, p]`.
    pub targets: Tensor<B, 2, Int>,
}

/// Intermediate values of a training forward, for parity checks and debugging.
#[derive(Debug, Clone)]
pub struct LavinTrace<B: Backend> {
    pub clip_feats: Tensor<B, 3>,
    pub clip_routes: Vec<ClipRoutes<B>>,
    pub image_embeds: Tensor<B, 3>,
    pub h0: Tensor<B, 3>,
    pub routes: Vec<BlockRoutes<B>>,
}

impl LavinConfig {
    /// A model with fresh weights: frozen towers random, adapters initialised as the original.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Lavin<B> {
        Lavin {
            llama: Llama::new(self, device),
            clip: VisionTower::new(self, device),
            adapter_proj: AdapterProj::new(
                self.clip.width,
                self.adapter.hidden_proj,
                self.llama.dim,
                device,
            ),
            adapter_modality_embedding: EmbeddingConfig::new(2, self.llama.dim).init(device),
            config: self.clone(),
        }
        .freeze_base()
    }
}

impl<B: Backend> Lavin<B> {
    pub fn config(&self) -> &LavinConfig {
        &self.config
    }

    /// `images [B, 3, H, W] -> (clip_feats [B, F, W], image_embeds [B, F, C], routes)`.
    pub fn encode_images(
        &self,
        images: Tensor<B, 4>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Vec<ClipRoutes<B>>) {
        let (feats, routes) = self.clip.forward(images);
        let embeds = self.adapter_proj.forward(feats.clone());
        (feats, embeds, routes)
    }

    /// Training forward: logits, loss and the targets it used.
    pub fn forward_train(&self, batch: LavinBatch<B>) -> LavinOutput<B> {
        self.forward_traced(batch).0
    }

    /// The training loss alone, equal to [`Self::forward_train`]'s: the output head and the
    /// cross-entropy run only on the rows that have a target. With vocab 32000 the head is a
    /// large share of a step and a ScienceQA answer is a small share of the rows. Reads the
    /// targets on the host to pick the rows (one `[B, S]` integer transfer).
    pub fn loss(&self, batch: LavinBatch<B>) -> Tensor<B, 1> {
        let (h, targets, _) = self.trunk(batch);
        self.loss_from_hidden(h, targets)
    }

    /// [`Self::loss`] from the final hidden states `h [B, S, C]` (before the last norm).
    pub fn loss_from_hidden(&self, h: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let [b, l] = targets.dims();
        let c = h.dims()[2];
        let data = targets.to_data();
        let rows: Vec<i64> = data
            .iter::<i64>()
            .enumerate()
            .filter(|(_, t)| *t != 0)
            .map(|(i, _)| i as i64)
            .collect();
        let h = h.narrow(1, 0, l); // the last row predicts nothing
        if rows.is_empty() {
            // No target at all: the masked mean's 0/0, as the full path gives.
            return masked_cross_entropy(self.llama.head(h), targets);
        }
        let n = rows.len();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &h.device());
        let picked = h.reshape([b * l, c]).select(0, idx.clone());
        let targets = targets.reshape([b * l]).select(0, idx);
        masked_cross_entropy(
            self.llama.head(picked.unsqueeze_dim(0)),
            targets.unsqueeze_dim(0),
        )
    }

    /// [`Self::forward_train`] plus the intermediate tensors.
    pub fn forward_traced(&self, batch: LavinBatch<B>) -> (LavinOutput<B>, LavinTrace<B>) {
        let (h, targets, trace) = self.trunk(batch);
        let l = targets.dims()[1];
        let logits = self.llama.head(h.narrow(1, 0, l)); // the last row predicts nothing
        let loss = masked_cross_entropy(logits.clone(), targets.clone());
        (
            LavinOutput {
                logits,
                loss,
                targets,
            },
            trace,
        )
    }

    /// Vision tower, assembly and LLaMA blocks: `(h [B, S, C], targets [B, S-1], trace)`, where
    /// row `i` of `h` predicts target `i`.
    fn trunk(&self, batch: LavinBatch<B>) -> (Tensor<B, 3>, Tensor<B, 2, Int>, LavinTrace<B>) {
        let p = self.prepare(batch);
        let (h, routes) = self
            .llama
            .blocks(p.h0.clone(), &self.block_input(p.mask), None, None);
        let trace = LavinTrace {
            clip_feats: p.clip_feats,
            clip_routes: p.clip_routes,
            image_embeds: p.image_embeds,
            h0: p.h0,
            routes,
        };
        (h, p.targets, trace)
    }

    /// Everything before the LLaMA blocks: the vision tower, the assembled sequence `h0`, the
    /// shifted targets and the attention mask.
    pub fn prepare(&self, batch: LavinBatch<B>) -> Prepared<B> {
        let (clip_feats, clip_routes) = self.clip.forward(batch.images);
        let mut p =
            self.prepare_from_feats(batch.tokens, batch.labels, batch.indicators, clip_feats);
        p.clip_routes = clip_routes;
        p
    }

    /// [`Self::prepare`] after the vision tower: `clip_feats [B, F, W]` are its features.
    pub fn prepare_from_feats(
        &self,
        tokens: Tensor<B, 2, Int>,
        labels: Tensor<B, 2, Int>,
        indicators: Tensor<B, 1, Int>,
        clip_feats: Tensor<B, 3>,
    ) -> Prepared<B> {
        let [_, s] = tokens.dims();
        let image_embeds = self.adapter_proj.forward(clip_feats.clone());
        let h0 = self.assemble(tokens, image_embeds.clone(), indicators.clone(), s);
        let targets = self
            .assemble_labels(labels, indicators, s)
            .narrow(1, 1, s - 1);
        let mask = modality_mask(s, s, &h0.device());
        Prepared {
            h0,
            targets,
            mask,
            clip_feats,
            clip_routes: Vec::new(),
            image_embeds,
        }
    }

    /// What every LLaMA block of a training forward reads besides its input.
    pub fn block_input(&self, mask: Tensor<B, 2, Bool>) -> BlockInput<'_, B> {
        BlockInput {
            rope: &self.llama.rope,
            pos: 0,
            mask: Some(mask),
            mlp_router_input: MlpRouterInput::AfterAttention,
        }
    }

    /// Embeds `tokens [B, S]` and splices in the image: `[BOS, "Image: ", feats, rest]` for image
    /// items and `[BOS, "Image: N/A", rest]` for text items, each cut to `len` rows, then the
    /// modality token is prepended and the result cut to `len` again: `[B, len, C]`.
    pub fn assemble(
        &self,
        tokens: Tensor<B, 2, Int>,
        image_embeds: Tensor<B, 3>,
        indicators: Tensor<B, 1, Int>,
        len: usize,
    ) -> Tensor<B, 3> {
        let [b, s] = tokens.dims();
        let device = tokens.device();
        let e = self.llama.embed(tokens);
        let prefix = |ids: &[u32]| {
            let ids = Tensor::<B, 2, Int>::from_data(
                TensorData::new(
                    ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    [1, ids.len()],
                ),
                &device,
            );
            let emb = self.llama.embed(ids);
            let [_, p, c] = emb.dims();
            emb.expand([b, p, c])
        };
        let cfg = self.config();
        let (bos, rest) = (e.clone().narrow(1, 0, 1), e.narrow(1, 1, s - 1));
        let with_image = Tensor::cat(
            vec![
                bos.clone(),
                prefix(&cfg.prefix_img),
                image_embeds,
                rest.clone(),
            ],
            1,
        )
        .narrow(1, 0, len);
        let text_only =
            Tensor::cat(vec![bos, prefix(&cfg.prefix_nonimg), rest], 1).narrow(1, 0, len);
        let c = self.llama.tok_embeddings.weight.dims()[1];
        let has_image = indicators
            .clone()
            .equal_elem(1)
            .reshape([b, 1, 1])
            .expand([b, len, c]);
        let h = text_only.mask_where(has_image, with_image);

        let modality = self
            .adapter_modality_embedding
            .forward(indicators.reshape([b, 1])); // [B, 1, C]
        Tensor::cat(vec![modality, h], 1).narrow(1, 0, len)
    }

    /// Labels moved the way [`Self::assemble`] moves tokens, with 0 (ignored) for the prefix,
    /// the image features and the modality token: `[B, S] -> [B, len]`.
    pub fn assemble_labels(
        &self,
        labels: Tensor<B, 2, Int>,
        indicators: Tensor<B, 1, Int>,
        len: usize,
    ) -> Tensor<B, 2, Int> {
        let [b, s] = labels.dims();
        let device = labels.device();
        let cfg = self.config();
        let zeros = |n: usize| Tensor::<B, 2, Int>::zeros([b, n], &device);
        let (first, rest) = (labels.clone().narrow(1, 0, 1), labels.narrow(1, 1, s - 1));
        let with_image = Tensor::cat(
            vec![
                first.clone(),
                zeros(cfg.prefix_img.len() + cfg.n_feats()),
                rest.clone(),
            ],
            1,
        )
        .narrow(1, 0, len);
        let text_only =
            Tensor::cat(vec![first, zeros(cfg.prefix_nonimg.len()), rest], 1).narrow(1, 0, len);
        let has_image = indicators.equal_elem(1).reshape([b, 1]).expand([b, len]);
        let l = text_only.mask_where(has_image, with_image);
        Tensor::cat(vec![zeros(1), l], 1).narrow(1, 0, len)
    }

    /// LaVIN-lite: quantizes the frozen LLaMA block linears to `bits` (one block at a time).
    /// For models built in memory (random-weight benches, tests); loaders quantize while
    /// loading instead ([`crate::weights::LoadSpec::format`]).
    pub fn quantize_base(self, bits: crate::quant::Bits) -> Result<Self, crate::quant::QuantError> {
        self.convert_base(BaseFormat {
            bits: Some(bits),
            ..Default::default()
        })
    }

    /// Stores the frozen LLaMA weights as `format` says (half precision and/or quantized block
    /// linears); CLIP, norms and adapters stay in the backend's float type.
    pub fn convert_base(mut self, format: BaseFormat) -> Result<Self, crate::quant::QuantError> {
        self.llama = self.llama.convert_base(format)?;
        Ok(self)
    }

    /// Sets `require_grad` exactly for parameters whose original name contains `adapter`;
    /// every frozen parameter is `no_grad`, so no gradient or optimizer state exists for it.
    pub fn freeze_base(self) -> Self {
        self.map(&mut crate::weights::names::TrainableMapper::default())
    }
}

/// Causal mask over `rows` queries and `cols` keys (queries are the last `rows` positions),
/// with column 0 (the modality token) hidden from every row but row 0. True = hidden.
pub fn modality_mask<B: Backend>(
    rows: usize,
    cols: usize,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    let offset = cols - rows;
    let data: Vec<bool> = (0..rows)
        .flat_map(|r| {
            let i = r + offset;
            (0..cols).map(move |j| j > i || (j == 0 && i >= 1))
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [rows, cols]), device)
}
