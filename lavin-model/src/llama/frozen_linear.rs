//! The frozen LLaMA block linears (wq, wk, wv, wo, w1, w2, w3): dense (f32, or fp16/bf16 as the
//! original's frozen weights), or quantized for LaVIN-lite.
//!
//! Why an enum module: the model type stays `Lavin<B>` whatever the precision, so the trainer,
//! the generator and the loaders need no second model type; a dense layer forwards exactly as
//! Burn's `Linear` did before (parity fixtures unchanged). The variant name (`Dense` / `Quant`)
//! appears in Burn module paths and is dropped from original names
//! ([`crate::weights::original_name`]).
//!
//! Half precision is mixed precision with explicit casts at the boundary (what autocast does to
//! a matmul): the weight stays in its dtype, the input is cast to it, the product is cast back
//! to the caller's dtype, so norms, softmax, rotary, adapters and their gradients stay f32.
//!
//! A `Quant` layer is invisible to module visitors and mappers (see
//! [`FrozenQuantLinear`]'s `Module` impl): loaders therefore fill the `Dense` layer first and
//! convert it with [`FrozenLinear::quantize`] right after (see `crate::weights::load_llama`).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{backend::Backend, DType, Tensor};

use crate::kernels;
use crate::precision::Precision;
use crate::quant::{Bits, FrozenQuantLinear, QuantError, DEFAULT_BLOCK};

/// How the frozen LLaMA weights are stored (`--precision`, `--bits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BaseFormat {
    /// Dtype of the dense frozen LLaMA weights: embeddings, output head, and the block linears
    /// unless they are quantized.
    pub precision: Precision,
    /// LaVIN-lite: the block linears quantized to this width.
    pub bits: Option<Bits>,
}

impl BaseFormat {
    /// Dense f32: the parity reference, nothing to convert.
    pub fn is_f32_dense(&self) -> bool {
        self.precision == Precision::F32 && self.bits.is_none()
    }
}

/// A frozen, bias-free linear of a LLaMA block.
#[derive(Module, Debug)]
pub enum FrozenLinear<B: Backend> {
    /// Full-precision weight (Burn `Linear`, `[in, out]`).
    Dense(Linear<B>),
    /// Block-wise quantized weight with a custom autodiff op (input gradient only).
    Quant(FrozenQuantLinear<B>),
}

impl<B: Backend> FrozenLinear<B> {
    /// `[..., in] -> [..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            FrozenLinear::Dense(l) => mixed_linear(l, x),
            FrozenLinear::Quant(q) => q.forward(x),
        }
    }

    /// `[..., in] -> [..., out]` left in the weight's dtype (a half-precision product is not
    /// widened), for a consumer that widens it itself; quantized layers give f32.
    pub fn forward_in_weight_dtype<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            FrozenLinear::Dense(l) => weight_dtype_linear(l, x),
            FrozenLinear::Quant(q) => q.forward(x),
        }
    }

    /// Stores the layer as `format` says: quantized to `format.bits`, else dense in
    /// `format.precision`.
    pub fn convert(self, format: BaseFormat) -> Result<Self, QuantError> {
        match (format.bits, self) {
            (Some(bits), layer) => layer.quantize(bits),
            (None, FrozenLinear::Dense(l)) => {
                Ok(FrozenLinear::Dense(cast_linear(l, format.precision)))
            }
            (None, q @ FrozenLinear::Quant(_)) => Ok(q),
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
            FrozenLinear::Dense(l) => {
                assert!(
                    l.bias.is_none(),
                    "LLaMA block linears have no bias; FrozenLinear::quantize would drop it"
                );
                let weight = l.weight.val();
                let block = block_for(weight.dims()[1]);
                drop(l);
                Ok(FrozenLinear::Quant(FrozenQuantLinear::quantize_with_block(
                    weight, bits, block,
                )?))
            }
            q @ FrozenLinear::Quant(_) => Ok(q),
        }
    }

    /// The bit width of a quantized layer (`None` = dense).
    pub fn bits(&self) -> Option<Bits> {
        match self {
            FrozenLinear::Dense(_) => None,
            FrozenLinear::Quant(q) => Some(q.bits()),
        }
    }

    /// The stored dtype of a dense weight (`None` if quantized).
    pub fn weight_dtype(&self) -> Option<DType> {
        match self {
            FrozenLinear::Dense(l) => Some(l.weight.val().dtype()),
            FrozenLinear::Quant(_) => None,
        }
    }

    /// The weight `[in, out]` as an untracked float tensor in the backend's float type
    /// (dequantized if quantized, widened if half).
    pub fn weight(&self) -> Tensor<B, 2> {
        match self {
            FrozenLinear::Dense(l) => l.weight.val().cast(compute_dtype::<B>()),
            FrozenLinear::Quant(q) => q.dequantized(),
        }
    }
}

/// The backend's own float dtype: what activations, adapters and norms use.
pub fn compute_dtype<B: Backend>() -> DType {
    Precision::F32.dtype::<B>()
}

/// `linear(x, W)` for a frozen weight of any float dtype: `x` is cast to the weight's dtype and
/// the product back to `x`'s (a no-op pair when they agree, as in the f32 parity path).
///
/// Computed as one 2-D matmul over all rows rather than with Burn's `linear`: autodiff's matmul
/// backward multiplies by a transposed *view* of `W`, while `linear`'s backward reshapes the
/// transposed weight, which the CPU backends answer with a full copy of `W` on every backward.
pub fn mixed_linear<B: Backend, const D: usize>(l: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    // Casts to the dtype a tensor already has are no-ops (Burn returns it unchanged).
    let dtype = x.dtype();
    weight_dtype_linear(l, x).cast(dtype)
}

/// [`mixed_linear`] without the final cast: the product in the weight's dtype.
fn weight_dtype_linear<B: Backend, const D: usize>(l: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let weight = l.weight.val();
    let wt = weight.dtype();
    let [d_in, d_out] = weight.dims();
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = kernels::matmul(x.cast(wt).reshape([rows, d_in]), weight);
    let y = match &l.bias {
        Some(b) => y + b.val().cast(wt).unsqueeze_dim(0),
        None => y,
    };
    dims[D - 1] = d_out;
    y.reshape(dims)
}

/// The frozen linear with its weights (and bias) stored in `precision`; untracked.
pub fn cast_linear<B: Backend>(l: Linear<B>, precision: Precision) -> Linear<B> {
    let dtype = precision.dtype::<B>();
    Linear {
        weight: cast_param(l.weight, dtype),
        bias: l.bias.map(|b| cast_param(b, dtype)),
    }
}

/// A frozen parameter stored in `dtype` (no-op if it already is).
pub fn cast_param<B: Backend, const D: usize>(
    p: Param<Tensor<B, D>>,
    dtype: DType,
) -> Param<Tensor<B, D>> {
    p.map(|t| {
        if t.dtype() == dtype {
            t
        } else {
            t.detach().cast(dtype)
        }
    })
}

/// Largest block size `<= DEFAULT_BLOCK` dividing `d_out`.
fn block_for(d_out: usize) -> u8 {
    (1..=DEFAULT_BLOCK)
        .rev()
        .find(|b| d_out % *b as usize == 0)
        .unwrap_or(1)
}

impl<B: Backend> From<Linear<B>> for FrozenLinear<B> {
    fn from(l: Linear<B>) -> Self {
        FrozenLinear::Dense(l)
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
