//! The fused ops on burn-flex, plain and under `Autodiff` (either checkpointing strategy).
//!
//! The model stays generic over `B: Backend`; [`run`] recognises the flex types by `TypeId`
//! and moves the tensor primitives across with `Any` (a no-op at run time). A trait bound on
//! every model type would say the same thing at the price of naming it in 170 places.

use core::any::{Any, TypeId};
use core::fmt::Debug;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, TensorData, TensorMetadata};

/// One fused op on `N` f32 inputs. Inputs reach it contiguous.
pub(crate) trait FusedOp<const N: usize>: Clone + Send + Sync + Debug + 'static {
    /// Which inputs, and whether the output, the backward pass reads.
    const SAVES: ([bool; N], bool);
    fn forward(&self, inputs: [&FlexTensor; N]) -> FlexTensor;
    /// Gradients of the inputs whose `need` is set (the others may be `None`).
    fn backward(
        &self,
        inputs: [Option<&FlexTensor>; N],
        output: Option<&FlexTensor>,
        grad: &FlexTensor,
        need: [bool; N],
    ) -> [Option<FlexTensor>; N];
}

/// `Some(output)` when `B` is flex (plain or autodiff) and every input is f32; otherwise the
/// inputs come back for the caller's composed version.
pub(crate) fn run<B: Backend, O: FusedOp<N>, const N: usize>(
    op: &O,
    inputs: [FloatTensor<B>; N],
) -> Result<FloatTensor<B>, [FloatTensor<B>; N]> {
    if inputs.iter().any(|t| t.dtype() != DType::F32) {
        return Err(inputs);
    }
    let id = TypeId::of::<B>();
    if id == TypeId::of::<Flex>() {
        return plain::<B, N>(inputs, |xs| op.forward(xs));
    }
    if id == TypeId::of::<Autodiff<Flex, NoCheckpointing>>() {
        return Ok(cast(tracked::<NoCheckpointing, O, N>(op, inputs.map(cast))));
    }
    if id == TypeId::of::<Autodiff<Flex, BalancedCheckpointing>>() {
        return Ok(cast(tracked::<BalancedCheckpointing, O, N>(
            op,
            inputs.map(cast),
        )));
    }
    Err(inputs)
}

/// `Some(f(inputs))` when `B` is plain flex (no autodiff) and every input is f32: for
/// inference-only kernels.
pub(crate) fn plain<B: Backend, const N: usize>(
    inputs: [FloatTensor<B>; N],
    f: impl FnOnce([&FlexTensor; N]) -> FlexTensor,
) -> Result<FloatTensor<B>, [FloatTensor<B>; N]> {
    if TypeId::of::<B>() != TypeId::of::<Flex>() || inputs.iter().any(|t| t.dtype() != DType::F32) {
        return Err(inputs);
    }
    let xs = inputs.map(|t| contiguous(cast::<_, FlexTensor>(t)));
    Ok(cast(f(xs.each_ref())))
}

/// Moves a value to the type the `TypeId` check proved it has.
fn cast<T: 'static, U: 'static>(value: T) -> U {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
        .expect("fused: type checked by TypeId")
}

pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

pub(crate) fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("fused: contiguous f32 input")
}

pub(crate) fn shape(t: &FlexTensor) -> Shape {
    t.layout().shape().clone()
}

pub(crate) fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

#[derive(Debug)]
struct Node<O>(O);

type State<const N: usize> = ([Option<FlexTensor>; N], Option<FlexTensor>);

impl<O: FusedOp<N>, const N: usize> Backward<Flex, N> for Node<O> {
    type State = State<N>;

    fn backward(self, ops: Ops<State<N>, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (inputs, output) = &ops.state;
        let need = ops.parents.each_ref().map(Option::is_some);
        let out = self.0.backward(
            inputs.each_ref().map(Option::as_ref),
            output.as_ref(),
            &grad,
            need,
        );
        for (parent, g) in ops.parents.into_iter().zip(out) {
            if let (Some(parent), Some(g)) = (parent, g) {
                grads.register::<Flex>(parent.id, g);
            }
        }
    }
}

fn tracked<C: CheckpointStrategy, O: FusedOp<N>, const N: usize>(
    op: &O,
    inputs: [FloatTensor<Autodiff<Flex, C>>; N],
) -> FloatTensor<Autodiff<Flex, C>> {
    let nodes = inputs.each_ref().map(|t| t.node.clone());
    let prims = inputs.map(|t| contiguous(t.primitive));
    let output = op.forward(prims.each_ref());
    match Node(op.clone())
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (keep_inputs, keep_output) = O::SAVES;
            let mut keep = keep_inputs.into_iter();
            let saved = prims.map(|p| keep.next().unwrap_or(false).then_some(p));
            let state = (saved, keep_output.then(|| output.clone()));
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}
