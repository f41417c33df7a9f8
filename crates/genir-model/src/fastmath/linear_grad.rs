//! [`super::linear`] on an autodiff `flex` device (training): the fused product (gemm straight into a
//! buffer it fills, any weight strides) recorded as one autodiff operation whose backward pass makes the two
//! products `dx = dy w^T` and `dw = x^T dy` the same way, and `db` as column sums of `dy`. burn's composition
//! records a reshape, a product and a broadcast add, and each of its three products zero-fills its output and
//! copies it again, and copies a transposed operand first.

use super::{gemm_into, gemm_parallelism, output_buffer, view2};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{DispatchKindConversion, TensorMetadata};
use burn::prelude::*;
use burn::tensor::{DType, DispatchTensor};
use burn_flex::{Flex, FlexTensor};
use std::borrow::Cow;

/// `x @ w (+ b)` of autodiff `flex` tensors, or `None` when it does not apply (another device, no autodiff,
/// fused passes disabled, or what [`super::flex_linear`] declines: a non-contiguous `x`, mismatched shapes).
pub(super) fn linear<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<2>,
    b: Option<&Tensor<1>>,
) -> Option<Tensor<D>> {
    let device = x.device();
    if !super::enabled()
        || !device.is_autodiff()
        || device != Device::flex()
        || x.dtype() != DType::F32
    {
        return None;
    }
    linear_with::<NoCheckpointing, D>(x, w, b)
        .or_else(|| linear_with::<BalancedCheckpointing, D>(x, w, b))
}

/// [`linear`] for tensors recorded with the checkpointing strategy `C` (`None` for another one).
fn linear_with<C: CheckpointStrategy, const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<2>,
    b: Option<&Tensor<1>>,
) -> Option<Tensor<D>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    let xa = x.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    let wa = w.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    let plain_x = Tensor::<D>::from_primitive::<Flex>(xa.primitive().clone());
    let plain_w = Tensor::<2>::from_primitive::<Flex>(wa.primitive().clone());
    let out = match b {
        None => {
            let y = super::flex_linear(&plain_x, &plain_w, None)?;
            let y: FlexTensor = y.try_into_primitive::<Flex>().ok()?;
            match FusedLinear
                .prepare::<C>([xa.node(), wa.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    prep.finish([xa.primitive().clone(), wa.primitive().clone()], y)
                }
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }
        Some(b) => {
            let ba: FloatTensor<Autodiff<Flex, C>> =
                b.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
            let plain_b = Tensor::<1>::from_primitive::<Flex>(ba.primitive().clone());
            let y = super::flex_linear(&plain_x, &plain_w, Some(&plain_b))?;
            let y: FlexTensor = y.try_into_primitive::<Flex>().ok()?;
            match FusedLinearBias
                .prepare::<C>([xa.node(), wa.node(), ba.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    prep.finish([xa.primitive().clone(), wa.primitive().clone()], y)
                }
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }
    };
    Some(Tensor::<D>::from_primitive::<Autodiff<Flex, C>>(out))
}

/// `x @ w` recorded; its state is the inputs `[x, w]` (shared buffers, not copies).
#[derive(Debug)]
struct FusedLinear;

/// `x @ w + b` recorded; same state (the bias's gradient needs only `dy`).
#[derive(Debug)]
struct FusedLinearBias;

impl Backward<Flex, 2> for FusedLinear {
    type State = [FlexTensor; 2];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [px, pw] = ops.parents;
        let [x, w] = ops.state;
        let g = gradients(&x, &w, &dy, px.is_some(), pw.is_some(), false);
        for (parent, grad) in [(px, g.x), (pw, g.w)] {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

impl Backward<Flex, 3> for FusedLinearBias {
    type State = [FlexTensor; 2];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [px, pw, pb] = ops.parents;
        let [x, w] = ops.state;
        let g = gradients(&x, &w, &dy, px.is_some(), pw.is_some(), pb.is_some());
        for (parent, grad) in [(px, g.x), (pw, g.w), (pb, g.b)] {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// The gradients asked for: `x`'s in `x`'s shape, `w`'s as `[k, n]`, `b`'s as `[n]`.
struct LinearGrads {
    x: Option<FlexTensor>,
    w: Option<FlexTensor>,
    b: Option<FlexTensor>,
}

/// The backward pass of `y = x @ w (+ b)` on inputs the forward pass accepted (`x` contiguous, `w`'s view
/// in its buffer), with `dy` in `y`'s shape.
fn gradients(
    x: &FlexTensor,
    w: &FlexTensor,
    dy: &FlexTensor,
    want_x: bool,
    want_w: bool,
    want_b: bool,
) -> LinearGrads {
    const ACCEPTED: &str = "the fused forward pass accepted these inputs";
    let x_shape = x.shape();
    let dims = x_shape.as_slice();
    let k = dims[dims.len() - 1];
    let m = dims[..dims.len() - 1].iter().product::<usize>();
    let n = w.shape()[1];
    let xs = x.as_slice::<f32>().expect(ACCEPTED);
    let (ws, w_start, w_rs, w_cs) = view2(w, k, n).expect(ACCEPTED);
    // `dy` as row-major `[m, n]`: its own buffer when contiguous, else a copy
    let dy: Cow<'_, [f32]> = match dy.as_slice::<f32>() {
        Some(s) if s.len() == m * n => Cow::Borrowed(s),
        _ => Cow::Owned(
            dy.clone()
                .into_data()
                .try_into_vec::<f32>()
                .expect("the gradient of an f32 output is f32"),
        ),
    };
    let dx = want_x.then(|| {
        let mut dx = output_buffer(m, k);
        // SAFETY: `dy` is `m x n` row-major; `w`'s `k x n` elements at its strides lie in `ws` (`view2`),
        // read here as `w^T` (`n x k`); `dx` has room for `m x k` values, all written by gemm (`read_dst`
        // false) before the length is set ([`output_buffer`] zeroes a single row or column).
        unsafe {
            gemm_into(
                [m, k, n],
                (dx.as_mut_ptr(), k as isize),
                (dy.as_ptr(), n as isize, 1),
                (ws.as_ptr().wrapping_add(w_start), w_cs, w_rs),
                gemm_parallelism(m, k, n),
            );
            dx.set_len(m * k);
        }
        FlexTensor::from_data(TensorData::new(dx, x_shape.to_vec()))
    });
    let dw = want_w.then(|| {
        let mut dw = output_buffer(k, n);
        // SAFETY: `x` is `m x k` row-major in `xs` (read as `x^T`, `k x m`), `dy` `m x n`; `dw` has room for
        // `k x n` values, all written by gemm before the length is set.
        unsafe {
            gemm_into(
                [k, n, m],
                (dw.as_mut_ptr(), n as isize),
                (xs.as_ptr(), 1, k as isize),
                (dy.as_ptr(), n as isize, 1),
                gemm_parallelism(k, n, m),
            );
            dw.set_len(k * n);
        }
        FlexTensor::from_data(TensorData::new(dw, [k, n]))
    });
    let db = want_b.then(|| {
        let mut db = vec![0.0f32; n];
        for row in dy.chunks_exact(n) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
        FlexTensor::from_data(TensorData::new(db, [n]))
    });
    LinearGrads {
        x: dx,
        w: dw,
        b: db,
    }
}
