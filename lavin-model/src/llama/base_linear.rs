//! The frozen LLaMA block linears (wq, wk, wv, wo, w1, w2, w3): dense f32, or quantized for
//! LaVIN-lite (issue 6).
//!
//! Why an enum module: the model type stays `Lavin<B>` whatever the precision, so the trainer,
//! the generator and the loaders need no second model type; a dense layer forwards exactly as
//! Burn's `Linear` did before (parity fixtures unchanged). The variant name (`Dense` / `Quant`)
//! appears in Burn module paths and is dropped from original names
//! ([`crate::weights::original_name`]).
//!
//! A `Quant` layer is invisible to module visitors and mappers (see
//! [`FrozenQuantLinear`]'s `Module` impl): loaders therefore fill the `Dense` layer first and
//! convert it with [`BaseLinear::quantize`] right after (see `crate::weights::load_llama`).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor};

use crate::quant::{Bits, FrozenQuantLinear, QuantError, DEFAULT_BLOCK};

/// A frozen, bias-free linear of a LLaMA block.
#[derive(Module, Debug)]
pub enum BaseLinear<B: Backend> {
    /// Full-precision weight (Burn `Linear`, `[in, out]`).
    Dense(Linear<B>),
    /// Block-wise quantized weight with a custom autodiff op (input gradient only).
    Quant(FrozenQuantLinear<B>),
}

impl<B: Backend> BaseLinear<B> {
    /// `[..., in] -> [..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            BaseLinear::Dense(l) => l.forward(x),
            BaseLinear::Quant(q) => q.forward(x),
        }
    }

    /// Replaces a dense weight by its `bits` quantization (a quantized layer is returned as
    /// is). The f32 weight is dropped on return.
    ///
    /// Block size: [`DEFAULT_BLOCK`] values per scale, or the largest divisor of the output
    /// dimension below it (LLaMA's 4096/11008/5120/13824 all take 32; odd test shapes still
    /// quantize instead of failing).
    pub fn quantize(self, bits: Bits) -> Result<Self, QuantError> {
        match self {
            BaseLinear::Dense(l) => {
                assert!(
                    l.bias.is_none(),
                    "LLaMA block linears have no bias; BaseLinear::quantize would drop it"
                );
                let weight = l.weight.val();
                let block = block_for(weight.dims()[1]);
                drop(l);
                Ok(BaseLinear::Quant(FrozenQuantLinear::quantize_with_block(
                    weight, bits, block,
                )?))
            }
            q @ BaseLinear::Quant(_) => Ok(q),
        }
    }

    /// The bit width of a quantized layer (`None` = dense).
    pub fn bits(&self) -> Option<Bits> {
        match self {
            BaseLinear::Dense(_) => None,
            BaseLinear::Quant(q) => Some(q.bits()),
        }
    }

    /// The weight `[in, out]` as an untracked float tensor (dequantized if quantized).
    pub fn weight(&self) -> Tensor<B, 2> {
        match self {
            BaseLinear::Dense(l) => l.weight.val(),
            BaseLinear::Quant(q) => q.dequantized(),
        }
    }
}

/// Largest block size `<= DEFAULT_BLOCK` dividing `d_out`.
fn block_for(d_out: usize) -> u8 {
    (1..=DEFAULT_BLOCK)
        .rev()
        .find(|b| d_out % *b as usize == 0)
        .unwrap_or(1)
}

impl<B: Backend> From<Linear<B>> for BaseLinear<B> {
    fn from(l: Linear<B>) -> Self {
        BaseLinear::Dense(l)
    }
}

#[cfg(test)]
mod tests {
    use super::block_for;

    #[test]
    fn block_sizes() {
        assert_eq!(block_for(4096), 32);
        assert_eq!(block_for(11008), 32);
        assert_eq!(block_for(192), 32);
        assert_eq!(block_for(48), 24);
        assert_eq!(block_for(7), 7);
        assert_eq!(block_for(37), 1);
    }
}
