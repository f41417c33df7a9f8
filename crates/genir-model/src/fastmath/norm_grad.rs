//! [`super::rms_norm`] on an autodiff `flex` device (training): the fused row pass (one pass per row, the
//! mean square in f64) recorded as one autodiff operation. burn's composition records a square, a mean, an
//! add, a square root, a reciprocal and two products, each a pass over the activations with its own buffer,
//! and as many again backwards.
//!
//! With `r = 1 / sqrt(mean(x^2) + eps)` per row of `n` values and `y = x r w`, the backward pass gives
//! `dx = r (dy w) - r^3 x sum(dy w x) / n` and `dw = sum over rows of dy x r`, `r` recomputed from `x` as the
//! forward pass made it.

use super::{lanes_sum, norm_rows_in_place, PAR_GRAIN};
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
use burn::tensor::DispatchTensor;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// `x / sqrt(mean(x^2) + eps) * w` over the last axis of autodiff `flex` tensors, or `None` when it does not
/// apply (another device, no autodiff, fused passes disabled, a non-contiguous `x` or `w`, mismatched widths).
pub(super) fn rms_norm(x: &Tensor<3>, w: &Tensor<1>, eps: f64) -> Option<Tensor<3>> {
    if !super::autodiff_flex_f32(x) || !super::autodiff_flex_f32(w) {
        return None;
    }
    rms_norm_with::<NoCheckpointing>(x, w, eps)
        .or_else(|| rms_norm_with::<BalancedCheckpointing>(x, w, eps))
}

/// [`rms_norm`] for tensors recorded with the checkpointing strategy `C` (`None` for another one).
fn rms_norm_with<C: CheckpointStrategy>(x: &Tensor<3>, w: &Tensor<1>, eps: f64) -> Option<Tensor<3>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    let xa: FloatTensor<Autodiff<Flex, C>> = x.clone().try_into_primitive().ok()?;
    let wa: FloatTensor<Autodiff<Flex, C>> = w.clone().try_into_primitive().ok()?;
    let (xp, wp) = (xa.primitive(), wa.primitive());
    let d = wp.shape()[0];
    let xs = xp.as_slice::<f32>()?;
    let ws = wp.as_slice::<f32>()?;
    if d == 0 || x.dims()[2] != d || ws.len() != d || xs.len() != x.dims().iter().product::<usize>()
    {
        return None;
    }
    let mut y = xs.to_vec();
    norm_rows_in_place(&mut y, ws, None, eps, false);
    let y = FlexTensor::from_data(TensorData::new(y, x.dims()));
    let out = match (FusedRmsNorm { eps })
        .prepare::<C>([xa.node(), wa.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish([xp.clone(), wp.clone()], y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::<3>::from_primitive::<Autodiff<Flex, C>>(out))
}

/// The recorded operation: its state is the inputs `[x, w]` (shared buffers, not copies).
#[derive(Debug)]
struct FusedRmsNorm {
    eps: f64,
}

impl Backward<Flex, 2> for FusedRmsNorm {
    type State = [FlexTensor; 2];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [px, pw] = ops.parents;
        let [x, w] = ops.state;
        let (dx, dw) = gradients(&x, &w, dy, self.eps, px.is_some(), pw.is_some());
        for (parent, grad) in [(px, dx), (pw, dw)] {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// The backward pass on the inputs the forward pass accepted (`x` and `w` contiguous): `x`'s gradient in its
/// shape and `w`'s as `[d]`, each when asked for.
fn gradients(
    x: &FlexTensor,
    w: &FlexTensor,
    dy: FlexTensor,
    eps: f64,
    want_x: bool,
    want_w: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    const ACCEPTED: &str = "the fused forward pass accepted these inputs";
    let xs = x.as_slice::<f32>().expect(ACCEPTED);
    let ws = w.as_slice::<f32>().expect(ACCEPTED);
    let d = ws.len();
    let shape = x.shape().to_vec();
    // `dy` row-major whatever its layout
    // `dy` row-major: its own buffer when contiguous, else a copy
    let dy: Cow<'_, [f32]> = match dy.as_slice::<f32>() {
        Some(s) if s.len() == xs.len() => Cow::Borrowed(s),
        _ => Cow::Owned(
            Tensor::<3>::from_primitive::<Flex>(dy.clone())
                .into_data()
                .try_into_vec::<f32>()
                .expect("the gradient of an f32 output is f32"),
        ),
    };
    debug_assert_eq!(dy.len(), xs.len());
    let n = d as f64;
    // one task per fixed chunk of rows (the same split on any number of threads, so `dw`'s sum is too)
    let rows_per_task = (PAR_GRAIN / d).max(1);
    let mut dx = if want_x {
        vec![0.0f32; xs.len()]
    } else {
        Vec::new()
    };
    let chunk = rows_per_task * d;
    let task = |(i, dx): (usize, &mut [f32])| -> Vec<f64> {
        let start = i * chunk;
        let end = (start + chunk).min(xs.len());
        let mut dw = if want_w { vec![0.0f64; d] } else { Vec::new() };
        for (r, (x_row, dy_row)) in xs[start..end]
            .chunks_exact(d)
            .zip(dy[start..end].chunks_exact(d))
            .enumerate()
        {
            // as the forward pass (`norm_row`): the mean square in f64, its inverse root rounded to f32
            let ms = lanes_sum(x_row, |v| f64::from(v) * f64::from(v)) / n;
            let inv = 1.0 / (ms + eps).sqrt();
            if want_w {
                let r32 = inv as f32;
                for ((g, &xv), &gy) in dw.iter_mut().zip(x_row).zip(dy_row) {
                    *g += f64::from(gy * xv * r32);
                }
            }
            if want_x {
                // sum(dy w x) in four lanes too (as `lanes_sum`: throughput, not latency)
                let term = |((&xv, &gy), &wv): ((&f32, &f32), &f32)| {
                    f64::from(gy) * f64::from(wv) * f64::from(xv)
                };
                let (xc, gc, wc) = (
                    x_row.chunks_exact(4),
                    dy_row.chunks_exact(4),
                    ws.chunks_exact(4),
                );
                let tail: f64 = xc
                    .remainder()
                    .iter()
                    .zip(gc.remainder())
                    .zip(wc.remainder())
                    .map(term)
                    .sum();
                let mut lanes = [0.0f64; 4];
                for ((x4, g4), w4) in xc.zip(gc).zip(wc) {
                    for (lane, v) in lanes.iter_mut().zip(x4.iter().zip(g4).zip(w4)) {
                        *lane += term(v);
                    }
                }
                let dot = lanes.iter().sum::<f64>() + tail;
                let (a, b) = (inv as f32, (inv * inv * inv * dot / n) as f32);
                let out = &mut dx[r * d..(r + 1) * d];
                for (((o, &xv), &gy), &wv) in out.iter_mut().zip(x_row).zip(dy_row).zip(ws) {
                    *o = a * gy * wv - b * xv;
                }
            }
        }
        dw
    };
    let rows = xs.len() / d;
    let tasks = rows.div_ceil(rows_per_task);
    let partial: Vec<Vec<f64>> = if want_x {
        dx.par_chunks_mut(chunk).enumerate().map(task).collect()
    } else {
        (0..tasks)
            .into_par_iter()
            .map(|i| task((i, &mut [][..])))
            .collect()
    };
    let dw = want_w.then(|| {
        let mut sum = vec![0.0f64; d];
        for p in &partial {
            for (s, &v) in sum.iter_mut().zip(p) {
                *s += v;
            }
        }
        let dw: Vec<f32> = sum.into_iter().map(|v| v as f32).collect();
        FlexTensor::from_data(TensorData::new(dw, [d]))
    });
    let dx = want_x.then(|| FlexTensor::from_data(TensorData::new(dx, shape)));
    (dx, dw)
}
