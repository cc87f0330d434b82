//! Frozen quantized linear layers for LaVIN-lite: a frozen base whose linears are stored
//! with 8-bit (or, on CubeCL backends, 4-bit) block-wise scales and still train adapters.
//!
//! ```text
//!   f32 weight [in, out] ──FrozenQuantLinear::quantize──▶ packed weight + per-block scales
//!   forward:  y = x · deq(Wq)            (deq(Wq) is transient, dropped after the matmul)
//!   backward: dL/dx = dL/dy · deq(Wq)ᵀ   (re-dequantized in backward; no weight gradient)
//! ```
//!
//! Why a custom autodiff op: Burn 0.21 implements every quantized op of `Autodiff<_>` as `todo!()`,
//! and the obvious work-around (dequantize on the inner backend, lift with `from_inner`, matmul)
//! makes Burn's matmul node keep the *dequantized f32 weight* alive until backward, so a model of
//! N quantized linears would hold N f32 copies during training — exactly the memory LaVIN-lite
//! wants to save. The op here ([`burn::backend::autodiff::ops::Backward`]) keeps only a handle to
//! the packed weight in its state.
//!
//! Why a registry: the model is generic over `B: Backend`, and Rust cannot specialise a generic
//! function for `B = Autodiff<I, C>` without a new trait bound that would have to be threaded
//! through every model type. Instead, the custom op is registered per concrete autodiff type
//! (keyed by `TypeId`) and looked up when a layer is built. The backends compiled into this crate
//! (features `ndarray`, `wgpu`, `cuda`, with and without `BalancedCheckpointing`) are registered
//! automatically; any other autodiff backend must call [`register_autodiff`] once before
//! [`FrozenQuantLinear::quantize`]. Non-autodiff backends need no registration.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{OnceLock, RwLock};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::module::{
    AutodiffModule, Content, Devices, EmptyRecord, Module, ModuleDisplay, ModuleDisplayDefault,
    ModuleMapper, ModuleVisitor,
};
use burn::tensor::backend::{AutodiffBackend, Backend, DTypeUsage};
use burn::tensor::ops::{FloatTensor, QuantizedTensor};
use burn::tensor::quantization::{QuantLevel, QuantScheme, QuantStore, QuantValue};
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorMetadata, TensorPrimitive};

/// Default number of consecutive weight values (along the output dimension) sharing one scale.
///
/// 32 is the granularity of GGML Q8_0/Q4_0; bitsandbytes NF4 uses 64. Smaller blocks cost
/// 4 bytes of f32 scale per block (12.5% overhead at 32 for 8-bit) but track outliers better.
pub const DEFAULT_BLOCK: u8 = 32;

/// The frozen base's width as the original's `--bits` spells it: dense, or quantized while
/// loading (LaVIN-lite). The original's `eval.py` also spells them `16bits`, `8bits`, `4bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum BaseBits {
    /// Dense weights at the base's precision (the original's `16bit`).
    #[default]
    #[serde(rename = "16bit", alias = "16bits")]
    #[cfg_attr(feature = "clap", value(name = "16bit", aliases = ["16", "16bits"]))]
    Dense,
    /// 8-bit blocks ([`Bits::Eight`]).
    #[serde(rename = "8bit", alias = "8bits")]
    #[cfg_attr(feature = "clap", value(name = "8bit", aliases = ["8", "8bits"]))]
    Eight,
    /// 4-bit blocks ([`Bits::Four`]; CubeCL backends only).
    #[serde(rename = "4bit", alias = "4bits")]
    #[cfg_attr(feature = "clap", value(name = "4bit", aliases = ["4", "4bits"]))]
    Four,
}

impl BaseBits {
    /// The quantized width, `None` for a dense base.
    pub fn quantized(self) -> Option<Bits> {
        match self {
            BaseBits::Dense => None,
            BaseBits::Eight => Some(Bits::Eight),
            BaseBits::Four => Some(Bits::Four),
        }
    }

    /// The original's spelling (`16bit`, `8bit`, `4bit`).
    pub fn name(self) -> &'static str {
        match self {
            BaseBits::Dense => "16bit",
            BaseBits::Eight => "8bit",
            BaseBits::Four => "4bit",
        }
    }
}

impl std::fmt::Display for BaseBits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BaseBits {
    type Err = QuantError;
    fn from_str(s: &str) -> Result<Self, QuantError> {
        Ok(match parse_bits(s)? {
            None => BaseBits::Dense,
            Some(Bits::Eight) => BaseBits::Eight,
            Some(Bits::Four) => BaseBits::Four,
        })
    }
}

/// Bit width of a frozen quantized weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bits {
    /// Symmetric 8-bit (`Q8S`, values in [-127, 127]), one f32 scale per block. All backends
    /// that support quantization, including NdArray. Stored as one i8 per value where the device
    /// can store i8, else four values packed into a u32 (Burn's `Wgpu`: WGSL has no 8-bit
    /// integers); see [`Bits::scheme_for`].
    Eight,
    /// Symmetric 4-bit (`Q4S`, values in [-7, 7]) packed into u32, one f32 scale per block.
    /// CubeCL backends (wgpu, cuda) only.
    Four,
}

impl Bits {
    /// The Burn quantization scheme used for this bit width with `block` values per scale.
    pub fn scheme(self, block: u8) -> QuantScheme {
        let base = QuantScheme::default().with_level(QuantLevel::block([block]));
        match self {
            // NdArray only quantizes with the native (one i8 per value) store.
            Bits::Eight => base
                .with_value(QuantValue::Q8S)
                .with_store(QuantStore::Native),
            // CubeCL packs 8 four-bit values per u32; NdArray cannot store this scheme.
            Bits::Four => base
                .with_value(QuantValue::Q4S)
                .with_store(QuantStore::PackedU32(0)),
        }
    }

    /// The scheme used on backend `B`: [`scheme`](Self::scheme), except that 8-bit falls back
    /// from the native i8 store to `PackedU32` where `B` cannot store i8 on `device`.
    ///
    /// Why: NdArray quantizes with the native store only, while Burn's `Wgpu` (WGSL shaders, no
    /// i8 type) rejects it ("Q8S is not supported for native quantization") and packs instead.
    /// The stored size is the same (8 bits per value), so nothing else depends on the choice.
    pub fn scheme_for<B: Backend>(self, block: u8, device: &Device<B>) -> QuantScheme {
        let scheme = self.scheme(block);
        match self {
            Bits::Eight
                if !B::dtype_usage(device, DType::QFloat(scheme)).contains(DTypeUsage::Storage) =>
            {
                scheme.with_store(QuantStore::PackedU32(0))
            }
            _ => scheme,
        }
    }

    /// Largest quantized magnitude (`127` or `7`): a block's scale is `max|w| / qmax`.
    pub fn qmax(self) -> f32 {
        match self {
            Bits::Eight => 127.0,
            Bits::Four => 7.0,
        }
    }

    /// Bits per stored value.
    pub fn bits(self) -> usize {
        match self {
            Bits::Eight => 8,
            Bits::Four => 4,
        }
    }
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bits::Eight => f.write_str("8bit"),
            Bits::Four => f.write_str("4bit"),
        }
    }
}

impl FromStr for Bits {
    type Err = QuantError;

    /// Parses the `--bits` spellings `8bit`/`8`/`int8` and `4bit`/`4`/`int4`. `16bit` is not a
    /// quantized layer (the caller keeps a plain `Linear`) and is rejected here.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "8bit" | "8" | "int8" | "q8" => Ok(Bits::Eight),
            "4bit" | "4" | "int4" | "q4" => Ok(Bits::Four),
            other => Err(QuantError::UnknownBits(other.to_string())),
        }
    }
}

/// Parses `--bits`: `16bit` (or `16`) = dense, `None`; `8bit`, `4bit` = quantized.
pub fn parse_bits(s: &str) -> Result<Option<Bits>, QuantError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "16bit" | "16" => Ok(None),
        other => other.parse().map(Some),
    }
}

/// Checks that backend `B` can quantize to `bits` by quantizing one small block (cheap; for
/// generic code that does not know the backend's name, to fail before loading anything).
pub fn probe<B: Backend>(bits: Bits, device: &Device<B>) -> Result<(), QuantError> {
    let w = Tensor::<B, 2>::zeros([1, DEFAULT_BLOCK as usize], device);
    FrozenQuantLinear::quantize(w, bits).map(|_| ())
}

/// Errors of building a frozen quantized linear.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// `--bits` value that is not a quantized width.
    #[error("unknown bit width `{0}` (expected 8bit or 4bit; 16bit means no quantization)")]
    UnknownBits(String),
    /// `--bits 4bit` on a backend without packed 4-bit storage.
    #[error("4-bit needs a CubeCL backend (wgpu or cuda); use --bits 8bit on ndarray")]
    FourBitNeedsCubecl,
    /// Block size of zero.
    #[error("block size must be at least 1")]
    ZeroBlock,
    /// The output dimension is not a multiple of the block size.
    #[error("weight shape [{d_in}, {d_out}]: output dim {d_out} is not a multiple of block size {block}")]
    BlockMismatch {
        /// Input features.
        d_in: usize,
        /// Output features.
        d_out: usize,
        /// Requested block size.
        block: u8,
    },
    /// Autodiff backend for which no custom op was registered.
    #[error("autodiff backend `{backend}` has no frozen-quant op registered; call lavin_model::quant::register_autodiff::<Inner, Checkpointing>() first")]
    UnregisteredAutodiff {
        /// Type name of the backend.
        backend: &'static str,
    },
    /// The backend refused (panicked on) the scheme, e.g. 4-bit on NdArray.
    #[error("backend `{backend}` cannot quantize to {bits}: {reason}")]
    Unsupported {
        /// Type name of the backend.
        backend: &'static str,
        /// Requested width.
        bits: Bits,
        /// The backend's panic message.
        reason: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Registry of per-autodiff-backend operations.
// ---------------------------------------------------------------------------------------------

/// Operations on a quantized weight that need the inner backend of `B = Autodiff<I, C>`.
///
/// Function pointers (not closures) so the table is `Copy + Send + Sync` and can be stored in every
/// layer without a lock on the hot path.
struct AdOps<B: Backend> {
    quantize: fn(FloatTensor<B>, &QuantScheme) -> QuantizedTensor<B>,
    dequantize: fn(QuantizedTensor<B>, FloatDType) -> FloatTensor<B>,
    linear: fn(FloatTensor<B>, QuantizedTensor<B>) -> FloatTensor<B>,
    to_device: fn(QuantizedTensor<B>, &Device<B>) -> QuantizedTensor<B>,
}

impl<B: Backend> Clone for AdOps<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for AdOps<B> {}
impl<B: Backend> fmt::Debug for AdOps<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdOps")
    }
}

type Registry = RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let reg: Registry = RwLock::new(HashMap::new());
        register_compiled_in(&reg);
        reg
    })
}

/// Registers the autodiff backends compiled into this crate (cargo features of `lavin-model`).
#[allow(unused_variables)]
fn register_compiled_in(reg: &Registry) {
    #[allow(unused_macros)]
    macro_rules! both {
        ($inner:ty) => {
            insert::<$inner, burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>(reg);
            insert::<$inner, burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing>(
                reg,
            );
        };
    }
    #[cfg(feature = "ndarray")]
    {
        both!(burn::backend::NdArray<f32>);
    }
    #[cfg(feature = "flex")]
    {
        both!(burn::backend::Flex);
    }
    #[cfg(feature = "wgpu")]
    {
        both!(burn::backend::Wgpu);
        both!(burn::backend::Wgpu<burn::tensor::f16>);
    }
    #[cfg(feature = "cuda")]
    {
        both!(burn::backend::Cuda);
        both!(burn::backend::Cuda<burn::tensor::f16>);
        both!(burn::backend::Cuda<burn::tensor::bf16>);
    }
}

fn insert<I: Backend, C: CheckpointStrategy>(reg: &Registry) {
    let ops: AdOps<Autodiff<I, C>> = AdOps {
        quantize: ad_quantize::<I, C>,
        dequantize: ad_dequantize::<I, C>,
        linear: ad_linear::<I, C>,
        to_device: ad_to_device::<I, C>,
    };
    // A poisoned lock only means another registration panicked; the map itself is still valid.
    let mut map = reg.write().unwrap_or_else(|e| e.into_inner());
    map.insert(TypeId::of::<Autodiff<I, C>>(), Box::new(ops));
}

/// Makes [`FrozenQuantLinear`] usable on `Autodiff<I, C>` (idempotent).
///
/// Needed only for autodiff backends that are not compiled in through this crate's features,
/// e.g. in tests (`register_autodiff::<NdArray<f32>, NoCheckpointing>()`).
pub fn register_autodiff<I: Backend, C: CheckpointStrategy>() {
    insert::<I, C>(registry());
}

fn lookup<B: Backend>() -> Option<AdOps<B>> {
    let map = registry().read().unwrap_or_else(|e| e.into_inner());
    map.get(&TypeId::of::<B>())
        .and_then(|ops| ops.downcast_ref::<AdOps<B>>())
        .copied()
}

// ---------------------------------------------------------------------------------------------
// The custom autodiff op (on `Autodiff<I, C>`, knowing the inner backend `I`).
// ---------------------------------------------------------------------------------------------

/// Backward state: a handle to the packed weight (shares storage with the layer, so the graph
/// holds no weight-sized buffer of its own).
#[derive(Clone, Debug)]
struct PackedWeight<I: Backend>(QuantizedTensor<I>);

/// `y = x · deq(W)` with `x: [n, in]`, `W: [in, out]`; backward gives `dx = dy · deq(W)ᵀ` only.
#[derive(Debug)]
struct FrozenQuantMatmul;

impl<I: Backend> Backward<I, 1> for FrozenQuantMatmul {
    type State = PackedWeight<I>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let PackedWeight(weight) = ops.state;
        unary::<I, _>(ops.parents, ops.node, grads, |grad| {
            // Dequantize again rather than keep the f32 copy from forward: one transient
            // weight-sized buffer per layer at a time instead of N held through the whole step.
            let dtype = FloatDType::from(grad.dtype());
            let w = I::dequantize(weight, dtype);
            I::float_matmul(grad, I::float_transpose(w))
        });
    }
}

fn ad_linear<I: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<I, C>>,
    weight: QuantizedTensor<Autodiff<I, C>>,
) -> FloatTensor<Autodiff<I, C>> {
    // `Autodiff`'s quantized primitive *is* the inner one, so no conversion is needed.
    let dtype = FloatDType::from(x.primitive.dtype());
    let w = I::dequantize(weight.clone(), dtype);
    let out = I::float_matmul(x.primitive.clone(), w);
    match FrozenQuantMatmul
        .prepare::<C>([x.node.clone()])
        // Recomputing a matmul is expensive: never let a checkpoint strategy re-run it.
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(PackedWeight(weight), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

fn ad_quantize<I: Backend, C: CheckpointStrategy>(
    w: FloatTensor<Autodiff<I, C>>,
    scheme: &QuantScheme,
) -> QuantizedTensor<Autodiff<I, C>> {
    // Quantize on the inner backend: the weight is frozen, so nothing is tracked.
    I::quantize_dynamic(w.primitive, scheme)
}

fn ad_dequantize<I: Backend, C: CheckpointStrategy>(
    w: QuantizedTensor<Autodiff<I, C>>,
    dtype: FloatDType,
) -> FloatTensor<Autodiff<I, C>> {
    <Autodiff<I, C> as AutodiffBackend>::from_inner(I::dequantize(w, dtype))
}

fn ad_to_device<I: Backend, C: CheckpointStrategy>(
    w: QuantizedTensor<Autodiff<I, C>>,
    device: &Device<Autodiff<I, C>>,
) -> QuantizedTensor<Autodiff<I, C>> {
    I::q_to_device(w, device)
}

// ---------------------------------------------------------------------------------------------
// The layer.
// ---------------------------------------------------------------------------------------------

/// A frozen, bias-free linear layer (`y = x · W`, `W: [in, out]` like Burn's `Linear`) whose weight
/// is stored quantized with block-wise scales.
///
/// - Trainable: no. The weight is invisible to module visitors/mappers (so optimizers, `no_grad`,
///   parameter counts and records skip it) and never receives a gradient.
/// - Autodiff: gradients flow to the input through a custom op that keeps only the packed weight.
/// - Records: [`Module::into_record`] is empty; the lead's loader rebuilds the layer from the
///   checkpoint with [`FrozenQuantLinear::quantize`].
#[derive(Clone, Debug)]
pub struct FrozenQuantLinear<B: Backend> {
    /// Quantized weight `[in, out]` (a `QFloat` primitive).
    weight: Tensor<B, 2>,
    bits: Bits,
    block: u8,
    d_in: usize,
    d_out: usize,
    /// Float dtype of the original weight (the quantized primitive only reports `QFloat`).
    dtype: FloatDType,
    /// `Some` on autodiff backends: the registered custom op. `None`: plain backend ops suffice.
    ad: Option<AdOps<B>>,
}

impl<B: Backend> FrozenQuantLinear<B> {
    /// Quantizes an f32 weight `[in, out]` with [`DEFAULT_BLOCK`] values per scale.
    ///
    /// The f32 weight is consumed and dropped on return, so a loader calling this tensor by
    /// tensor never holds more than one full-precision weight at once.
    pub fn quantize(weight: Tensor<B, 2>, bits: Bits) -> Result<Self, QuantError> {
        Self::quantize_with_block(weight, bits, DEFAULT_BLOCK)
    }

    /// Like [`quantize`](Self::quantize) with an explicit block size (values per scale along the
    /// output dimension, which must divide `out`).
    pub fn quantize_with_block(
        weight: Tensor<B, 2>,
        bits: Bits,
        block: u8,
    ) -> Result<Self, QuantError> {
        if block == 0 {
            return Err(QuantError::ZeroBlock);
        }
        let [d_in, d_out] = weight.dims();
        if d_out % block as usize != 0 {
            return Err(QuantError::BlockMismatch { d_in, d_out, block });
        }
        let ad = Self::ops_for_backend(&weight.device())?;
        let dtype = FloatDType::from(weight.dtype());
        let scheme = bits.scheme_for::<B>(block, &weight.device());
        let prim = weight.into_primitive().tensor();
        // Backends signal unsupported schemes by panicking (`unimplemented!`); turn that into a
        // typed error so `--bits 4bit` on ndarray is a message, not a crash.
        let quantized = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match ad {
            Some(ops) => (ops.quantize)(prim, &scheme),
            None => B::quantize_dynamic(prim, &scheme),
        }))
        .map_err(|payload| QuantError::Unsupported {
            backend: std::any::type_name::<B>(),
            bits,
            reason: panic_message(&payload),
        })?;
        Ok(Self {
            weight: Tensor::from_primitive(TensorPrimitive::QFloat(quantized)),
            bits,
            block,
            d_in,
            d_out,
            dtype,
            ad,
        })
    }

    /// The custom-op table for `B` if it is an autodiff backend, `None` for plain backends.
    fn ops_for_backend(device: &Device<B>) -> Result<Option<AdOps<B>>, QuantError> {
        match lookup::<B>() {
            Some(ops) => Ok(Some(ops)),
            None if B::ad_enabled(device) => Err(QuantError::UnregisteredAutodiff {
                backend: std::any::type_name::<B>(),
            }),
            None => Ok(None),
        }
    }

    /// `x · deq(W)` over the last dimension of `x` (`[..., in] -> [..., out]`).
    ///
    /// Panics (like Burn's own shape errors) if the last dimension of `x` is not `in`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        assert_eq!(
            dims[D - 1],
            self.d_in,
            "FrozenQuantLinear: input last dim {} != in features {}",
            dims[D - 1],
            self.d_in
        );
        let rows: usize = dims[..D - 1].iter().product();
        // Flatten leading dims so the custom op is a plain 2-D matmul (reshape is tracked by Burn).
        let x2: Tensor<B, 2> = x.reshape([rows, self.d_in]);
        let y2 = match self.ad {
            Some(ops) => {
                let w = self.weight.clone().into_primitive();
                let TensorPrimitive::QFloat(w) = w else {
                    unreachable!("FrozenQuantLinear weight is always quantized")
                };
                Tensor::from_primitive(TensorPrimitive::Float((ops.linear)(
                    x2.into_primitive().tensor(),
                    w,
                )))
            }
            // No autodiff: dequantize, multiply, drop the transient f32 weight.
            None => x2.matmul(self.weight.clone().dequantize()),
        };
        let mut out_dims = dims;
        out_dims[D - 1] = self.d_out;
        y2.reshape(out_dims)
    }

    /// The dequantized weight `[in, out]` as an *untracked* float tensor (for tests, parity checks
    /// and saving; training should use [`forward`](Self::forward)).
    pub fn dequantized(&self) -> Tensor<B, 2> {
        match self.ad {
            Some(ops) => {
                let TensorPrimitive::QFloat(w) = self.weight.clone().into_primitive() else {
                    unreachable!("FrozenQuantLinear weight is always quantized")
                };
                Tensor::from_primitive(TensorPrimitive::Float((ops.dequantize)(w, self.dtype)))
            }
            None => self.weight.clone().dequantize(),
        }
    }

    /// The packed weight as a quantized tensor (`QFloat`), e.g. to save a quantized base with
    /// `into_data()`.
    pub fn packed(&self) -> Tensor<B, 2> {
        self.weight.clone()
    }

    /// Bit width.
    pub fn bits(&self) -> Bits {
        self.bits
    }

    /// Values per scale.
    pub fn block(&self) -> u8 {
        self.block
    }

    /// `[in, out]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.d_in, self.d_out]
    }

    /// Bytes of the packed representation: values plus one f32 scale per block. (What the device
    /// holds; backends may pad, e.g. NdArray stores 8-bit natively as one i8 per value.)
    pub fn packed_bytes(&self) -> usize {
        let n = self.d_in * self.d_out;
        n * self.bits.bits() / 8 + (n / self.block as usize) * 4
    }
}

fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "backend panicked".to_string()
    }
}

impl<B: Backend> Module<B> for FrozenQuantLinear<B> {
    // Why empty: the frozen base is rebuilt from the original checkpoint at load time; keeping it
    // out of records also keeps adapter-only checkpoints small.
    type Record = EmptyRecord;

    fn collect_devices(&self, mut devices: Devices<B>) -> Devices<B> {
        let device = self.weight.device();
        if !devices.contains(&device) {
            devices.push(device);
        }
        devices
    }

    fn fork(self, device: &Device<B>) -> Self {
        self.to_device(device)
    }

    fn to_device(mut self, device: &Device<B>) -> Self {
        if self.weight.device() == *device {
            return self;
        }
        self.weight = match self.ad {
            // `Autodiff::q_to_device` is `unimplemented!()`: move on the inner backend.
            Some(ops) => {
                let TensorPrimitive::QFloat(w) = self.weight.into_primitive() else {
                    unreachable!("FrozenQuantLinear weight is always quantized")
                };
                Tensor::from_primitive(TensorPrimitive::QFloat((ops.to_device)(w, device)))
            }
            None => self.weight.to_device(device),
        };
        self
    }

    // Why no visit/map: visitors and mappers (optimizers, `no_grad`, `num_params`, float casts)
    // would treat the packed weight as a float parameter and hit Autodiff's quantized `todo!()`s.
    fn visit<V: ModuleVisitor<B>>(&self, _visitor: &mut V) {}

    fn map<M: ModuleMapper<B>>(self, _mapper: &mut M) -> Self {
        self
    }

    fn load_record(self, _record: Self::Record) -> Self {
        self
    }

    fn into_record(self) -> Self::Record {
        EmptyRecord::new()
    }
}

impl<B: Backend> ModuleDisplayDefault for FrozenQuantLinear<B> {
    fn content(&self, content: Content) -> Option<Content> {
        content
            .add_single(&format!(
                "FrozenQuantLinear {{d_in: {}, d_out: {}, bits: {}, block: {}}}",
                self.d_in, self.d_out, self.bits, self.block
            ))
            .optional()
    }
}

impl<B: Backend> ModuleDisplay for FrozenQuantLinear<B> {}

impl<B: AutodiffBackend> AutodiffModule<B> for FrozenQuantLinear<B> {
    type InnerModule = FrozenQuantLinear<B::InnerBackend>;

    fn valid(&self) -> Self::InnerModule {
        FrozenQuantLinear {
            // `q_inner` is implemented by Autodiff (a no-op unwrap).
            weight: self.weight.clone().inner(),
            bits: self.bits,
            block: self.block,
            d_in: self.d_in,
            d_out: self.d_out,
            dtype: self.dtype,
            // The inner backend is normally not autodiff (then `None`).
            ad: lookup::<B::InnerBackend>(),
        }
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        FrozenQuantLinear {
            weight: Tensor::from_inner(module.weight),
            bits: module.bits,
            block: module.block,
            d_in: module.d_in,
            d_out: module.d_out,
            dtype: module.dtype,
            ad: lookup::<B>(),
        }
    }
}
