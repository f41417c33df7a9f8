//! [`super::linear`] on an autodiff `flex` device (training): the fused product (gemm straight into a
//! buffer it fills, any weight strides) recorded as one autodiff operation whose backward pass makes the two
//! products `dx = dy w^T` and `dw = x^T dy` the same way, and `db` as column sums of `dy`. burn's composition
//! records a reshape, a product and a broadcast add, and each of its three products zero-fills its output and
//! copies it again, and copies a transposed operand first. With a ReLU ([`super::linear_relu`]) the output
//! is kept too, and the backward pass masks `dy` by `y > 0` first.

use super::{gemm_new, view2, PAR_GRAIN};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{DispatchKindConversion, TensorMetadata};
use burn::prelude::*;
use burn::tensor::DispatchTensor;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// `x @ w (+ b)`, then a ReLU when `relu`, of autodiff `flex` tensors, or `None` when it does not apply
/// (another device, no autodiff, fused passes disabled, or what [`super::flex_linear`] declines: a
/// non-contiguous `x`, mismatched shapes).
pub(super) fn linear<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<2>,
    b: Option<&Tensor<1>>,
    relu: bool,
) -> Option<Tensor<D>> {
    if !super::autodiff_flex_f32(x) {
        return None;
    }
    linear_with::<NoCheckpointing, D>(x, w, b, relu)
        .or_else(|| linear_with::<BalancedCheckpointing, D>(x, w, b, relu))
}

/// [`linear`] for tensors recorded with the checkpointing strategy `C` (`None` for another one).
fn linear_with<C: CheckpointStrategy, const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<2>,
    b: Option<&Tensor<1>>,
    relu: bool,
) -> Option<Tensor<D>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    let xa = x.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    let wa = w.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    let plain_x = Tensor::<D>::from_primitive::<Flex>(xa.primitive().clone());
    let plain_w = Tensor::<2>::from_primitive::<Flex>(wa.primitive().clone());
    // the state: the inputs, and the output when a ReLU follows (shared buffers, not copies)
    let state = |y: &FlexTensor| -> LinearState {
        (
            [xa.primitive().clone(), wa.primitive().clone()],
            relu.then(|| y.clone()),
        )
    };
    let out = match b {
        None => {
            let y = super::flex_linear(&plain_x, &plain_w, None, relu)?;
            let y: FlexTensor = y.try_into_primitive::<Flex>().ok()?;
            record::<C, _, 2>(FusedLinear, [xa.node(), wa.node()], state, y)
        }
        Some(b) => {
            let ba: FloatTensor<Autodiff<Flex, C>> =
                b.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
            let plain_b = Tensor::<1>::from_primitive::<Flex>(ba.primitive().clone());
            let y = super::flex_linear(&plain_x, &plain_w, Some(&plain_b), relu)?;
            let y: FlexTensor = y.try_into_primitive::<Flex>().ok()?;
            record::<C, _, 3>(FusedLinearBias, [xa.node(), wa.node(), ba.node()], state, y)
        }
    };
    Some(Tensor::<D>::from_primitive::<Autodiff<Flex, C>>(out))
}

/// Records `y` as the output of `op` over the inputs' `nodes`, keeping `state(&y)` when a gradient is wanted.
fn record<C: CheckpointStrategy, O: Backward<Flex, N, State = LinearState>, const N: usize>(
    op: O,
    nodes: [NodeGuard; N],
    state: impl FnOnce(&FlexTensor) -> LinearState,
    y: FlexTensor,
) -> FloatTensor<Autodiff<Flex, C>> {
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let state = state(&y);
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// `x @ w` recorded; its state is the inputs `[x, w]` and, after a ReLU, the output (shared buffers, not
/// copies).
#[derive(Debug)]
struct FusedLinear;

/// `x @ w + b` recorded; same state (the bias's gradient needs only `dy`).
#[derive(Debug)]
struct FusedLinearBias;

/// The state of both: the inputs `[x, w]`, and the output when a ReLU follows the product.
type LinearState = ([FlexTensor; 2], Option<FlexTensor>);

impl Backward<Flex, 2> for FusedLinear {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [px, pw] = ops.parents;
        let ([x, w], y) = ops.state;
        let g = gradients(&x, &w, &dy, y.as_ref(), [px.is_some(), pw.is_some(), false]);
        for (parent, grad) in [(px, g.x), (pw, g.w)] {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

impl Backward<Flex, 3> for FusedLinearBias {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [px, pw, pb] = ops.parents;
        let ([x, w], y) = ops.state;
        let g = gradients(
            &x,
            &w,
            &dy,
            y.as_ref(),
            [px.is_some(), pw.is_some(), pb.is_some()],
        );
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
/// in its buffer), with `dy` in `y`'s shape; `relu_out`: the output of a ReLU that followed the product
/// (`dy` is masked by `relu_out > 0` first). `want`: the gradients asked for, of `[x, w, b]`.
fn gradients(
    x: &FlexTensor,
    w: &FlexTensor,
    dy: &FlexTensor,
    relu_out: Option<&FlexTensor>,
    [want_x, want_w, want_b]: [bool; 3],
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
    // after a ReLU: no gradient where its output is `<= 0` (burn's mask; a NaN passes its gradient on)
    let dy = match relu_out {
        None => dy,
        Some(y) => {
            let ys = y.as_slice::<f32>().expect(ACCEPTED);
            debug_assert_eq!(ys.len(), m * n);
            let mut masked = vec![0.0f32; m * n];
            // the gradient's bits and-ed with all ones or all zeros (branch-free, so the loop vectorises;
            // with a branch the random signs make it several times slower)
            let mask = |((out, g), y): ((&mut [f32], &[f32]), &[f32])| {
                for ((o, &g), &y) in out.iter_mut().zip(g).zip(y) {
                    let keep = u32::from(y <= 0.0).wrapping_sub(1);
                    *o = f32::from_bits(g.to_bits() & keep);
                }
            };
            if m * n <= PAR_GRAIN {
                mask(((&mut masked[..], &dy[..]), ys));
            } else {
                masked
                    .par_chunks_mut(PAR_GRAIN)
                    .zip(dy.par_chunks(PAR_GRAIN))
                    .zip(ys.par_chunks(PAR_GRAIN))
                    .for_each(mask);
            }
            Cow::Owned(masked)
        }
    };
    let dx = want_x.then(|| {
        // SAFETY: `dy` is `m x n` row-major; `w`'s `k x n` elements at its strides lie in `ws` (`view2`),
        // read here as `w^T` (`n x k`).
        let dx = unsafe {
            gemm_new(
                [m, k, n],
                (dy.as_ptr(), n as isize, 1),
                (ws.as_ptr().wrapping_add(w_start), w_cs, w_rs),
            )
        };
        FlexTensor::from_data(TensorData::new(dx, x_shape.to_vec()))
    });
    let dw = want_w.then(|| {
        // SAFETY: `x` is `m x k` row-major in `xs` (read as `x^T`, `k x m`), `dy` `m x n` row-major.
        let dw = unsafe {
            gemm_new(
                [k, n, m],
                (xs.as_ptr(), 1, k as isize),
                (dy.as_ptr(), n as isize, 1),
            )
        };
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
