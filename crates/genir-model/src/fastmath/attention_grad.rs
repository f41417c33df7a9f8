//! [`super::attention_heads`] on an autodiff `flex` device (training): the fused forward pass recorded as
//! one autodiff operation, whose backward pass recomputes each (sequence, head) pattern exactly as the
//! forward pass made it and gives the gradients of the queries, keys, values and bias in one task per block
//! (burn's composition records about a dozen operations per attention, each a pass over the scores, plus
//! the copies of the transposed views).
//!
//! With `P = softmax(S)`, `S = q k^T / divisor + bias` and `z = P v` per block, and `dz` the gradient of
//! `z`: `dP = dz v^T`, `dS = P * (dP - rowsum(dP * P))`, `dq = dS k / divisor`, `dk = dS^T q / divisor`,
//! `dv = P^T dz`, and the bias's gradient is `dS` summed over the axes it was broadcast along.

use super::{gemm_into, view4, HeadViews, SharedOut};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{broadcast_shape, Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{DispatchKindConversion, TensorMetadata};
use burn::prelude::*;
use burn::tensor::DispatchTensor;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

/// The fused attention of autodiff `flex` tensors, or `None` when it does not apply (another device, no
/// autodiff, fused passes disabled, or a shape or layout [`super::flex_attention`] declines).
pub(super) fn attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    bias: &Tensor<4>,
    divisor: Option<f64>,
) -> Option<Tensor<3>> {
    if !super::autodiff_flex_f32(q) {
        return None;
    }
    attention_with::<NoCheckpointing>(q, k, v, bias, divisor)
        .or_else(|| attention_with::<BalancedCheckpointing>(q, k, v, bias, divisor))
}

/// [`attention`] for tensors recorded with the checkpointing strategy `C` (`None` for another one).
fn attention_with<C: CheckpointStrategy>(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    bias: &Tensor<4>,
    divisor: Option<f64>,
) -> Option<Tensor<3>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    let tracked = |t: &Tensor<4>| -> Option<FloatTensor<Autodiff<Flex, C>>> {
        t.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()
    };
    let (qa, ka, va, ba) = (tracked(q)?, tracked(k)?, tracked(v)?, tracked(bias)?);
    let plain = |t: &FloatTensor<Autodiff<Flex, C>>| {
        Tensor::<4>::from_primitive::<Flex>(t.primitive().clone())
    };
    let z = super::flex_attention(&plain(&qa), &plain(&ka), &plain(&va), &plain(&ba), divisor)?;
    let z: FlexTensor = z.try_into_primitive::<Flex>().ok()?;
    let op = FusedAttention { divisor };
    let out = match op
        .prepare::<C>([qa.node(), ka.node(), va.node(), ba.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = [
                qa.primitive().clone(),
                ka.primitive().clone(),
                va.primitive().clone(),
                ba.primitive().clone(),
            ];
            prep.finish(state, z)
        }
        OpsKind::UnTracked(prep) => prep.finish(z),
    };
    Some(Tensor::<3>::from_primitive::<Autodiff<Flex, C>>(out))
}

/// The recorded operation: its state is the inputs `[q, k, v, bias]` (shared buffers, not copies).
#[derive(Debug)]
struct FusedAttention {
    divisor: Option<f64>,
}

impl Backward<Flex, 4> for FusedAttention {
    type State = [FlexTensor; 4];

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dz = grads.consume::<Flex>(&ops.node);
        let [pq, pk, pv, pb] = ops.parents;
        let [q, k, v, bias] = ops.state;
        let g = gradients([&q, &k, &v, &bias], dz, self.divisor, pb.is_some());
        for (parent, grad) in [(pq, g.q), (pk, g.k), (pv, g.v)] {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, grad);
            }
        }
        if let (Some(node), Some(full)) = (pb, g.bias) {
            grads.register::<Flex>(node.id, broadcast_shape::<Flex>(full, &bias.shape()));
        }
    }
}

/// Gradients of one attention: `q`, `k`, `v` as `[batch, heads, len, d_head]` (views of buffers laid out
/// `[batch, len, heads, d_head]`, see [`heads_view`]), and the bias's as the full
/// `[batch, heads, q_len, k_len]` (before summing over broadcast axes) when asked for.
struct AttentionGrads {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    bias: Option<FlexTensor>,
}

/// A contiguous flex tensor of `dims` holding `values`.
fn flex_tensor<const D: usize>(values: Vec<f32>, dims: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}

/// `values` laid out as `[batch, len, heads, d_head]`, seen as `[batch, heads, len, d_head]` (a view, no
/// copy): the layout of the projections the heads were cut from, so the gradient reaches them through the
/// models' `swap_dims` and `reshape` without a copy.
fn heads_view(values: Vec<f32>, [b, len, h, dh]: [usize; 4]) -> FlexTensor {
    Tensor::<4>::from_primitive::<Flex>(flex_tensor(values, [b, len, h, dh]))
        .swap_dims(1, 2)
        .try_into_primitive::<Flex>()
        .expect("a flex tensor stays a flex tensor")
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let shape = t.shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

/// The backward pass of [`FusedAttention`] on the inputs the forward pass accepted (so their views exist).
fn gradients(
    [q, k, v, bias]: [&FlexTensor; 4],
    dz: FlexTensor,
    divisor: Option<f64>,
    want_bias: bool,
) -> AttentionGrads {
    const ACCEPTED: &str = "the fused forward pass accepted these inputs";
    let [b, h, lq, dh] = dims4(q);
    let lk = dims4(k)[2];
    let views =
        HeadViews::new([q, k, bias], [b, h, lq, lk, dh], dims4(bias), divisor).expect(ACCEPTED);
    let ((qs, qst), (ks, kst)) = (views.q, views.k);
    let (vs, vst) = view4(v, [b, h, lk, dh]).expect(ACCEPTED);
    let divisor = views.divisor;
    // `dz` as `[batch, q_len, heads * d_head]`, row-major whatever its layout
    let dz = Tensor::<3>::from_primitive::<Flex>(dz)
        .into_data()
        .try_into_vec::<f32>()
        .expect("the gradient of an f32 output is f32");
    let width = h * dh;
    debug_assert_eq!(dz.len(), b * lq * width);
    // zeroed only where a block is a single row (gemm's matrix-vector paths make a `&mut [f32]` over such a
    // destination, see [`super::output_buffer`]); otherwise every value is written by a task below
    let buffer = |rows: usize| {
        if rows == 1 {
            vec![0.0f32; b * h * rows * dh]
        } else {
            Vec::with_capacity(b * h * rows * dh)
        }
    };
    let (mut dq, mut dk, mut dv) = (buffer(lq), buffer(lk), buffer(lk));
    let mut dbias = if want_bias {
        vec![0.0f32; b * h * lq * lk]
    } else {
        Vec::new()
    };
    let (dq_out, dk_out, dv_out) = (
        SharedOut(dq.as_mut_ptr()),
        SharedOut(dk.as_mut_ptr()),
        SharedOut(dv.as_mut_ptr()),
    );
    let dbias_out = SharedOut(dbias.as_mut_ptr());
    let task = |(p, ds): &mut (Vec<f32>, Vec<f32>), t: usize| {
        let (seq, head) = (t / h, t % h);
        views.pattern(p, t);
        let dz_at = seq * lq * width + head * dh;
        let q_at = seq * qst[0] + head * qst[1];
        let k_at = seq * kst[0] + head * kst[1];
        let v_at = seq * vst[0] + head * vst[1];
        // SAFETY: the (seq, head) blocks of q, k and v lie in their slices (`view4`), and this block of
        // `dz` (`lq` rows of `dh` at row stride `width`) in `dz`; `ds` holds `lq x lk` values.
        unsafe {
            // dP = dz v^T
            gemm_into(
                [lq, lk, dh],
                (ds.as_mut_ptr(), lk as isize),
                (dz.as_ptr().add(dz_at), width as isize, 1),
                (vs.as_ptr().add(v_at), vst[3] as isize, vst[2] as isize),
                gemm::Parallelism::None,
            );
        }
        // dS = P * (dP - rowsum(dP * P)), then / divisor
        for (dp_row, p_row) in ds.chunks_exact_mut(lk).zip(p.chunks_exact(lk)) {
            let dot: f32 = dp_row.iter().zip(p_row).map(|(a, b)| a * b).sum();
            for (d, &pv) in dp_row.iter_mut().zip(p_row) {
                *d = pv * (*d - dot);
            }
        }
        if want_bias {
            // SAFETY: block `t` of `lq x lk` values of `dbias` is this task's alone.
            let block =
                unsafe { std::slice::from_raw_parts_mut(dbias_out.at(t * lq * lk), lq * lk) };
            block.copy_from_slice(&ds[..lq * lk]);
        }
        if let Some(d) = divisor {
            for x in ds.iter_mut() {
                *x /= d;
            }
        }
        // SAFETY: as above; the (seq, head) blocks of `dq`, `dk`, `dv` (`lq | lk` rows of `dh` at row stride
        // `width`: laid out `[batch, len, heads, d_head]`) are this task's alone, and gemm writes all of each
        // (`read_dst` false).
        unsafe {
            // dq = dS k
            gemm_into(
                [lq, dh, lk],
                (dq_out.at(seq * lq * width + head * dh), width as isize),
                (ds.as_ptr(), lk as isize, 1),
                (ks.as_ptr().add(k_at), kst[2] as isize, kst[3] as isize),
                gemm::Parallelism::None,
            );
            // dk = dS^T q
            gemm_into(
                [lk, dh, lq],
                (dk_out.at(seq * lk * width + head * dh), width as isize),
                (ds.as_ptr(), 1, lk as isize),
                (qs.as_ptr().add(q_at), qst[2] as isize, qst[3] as isize),
                gemm::Parallelism::None,
            );
            // dv = P^T dz
            gemm_into(
                [lk, dh, lq],
                (dv_out.at(seq * lk * width + head * dh), width as isize),
                (p.as_ptr(), 1, lk as isize),
                (dz.as_ptr().add(dz_at), width as isize, 1),
                gemm::Parallelism::None,
            );
        }
    };
    (0..b * h)
        .into_par_iter()
        .for_each_init(|| (vec![0.0f32; lq * lk], vec![0.0f32; lq * lk]), task);
    // SAFETY: the (sequence, head) blocks tile each buffer, and gemm wrote every value of each above
    unsafe {
        dq.set_len(b * h * lq * dh);
        dk.set_len(b * h * lk * dh);
        dv.set_len(b * h * lk * dh);
    }
    AttentionGrads {
        q: heads_view(dq, [b, lq, h, dh]),
        k: heads_view(dk, [b, lk, h, dh]),
        v: heads_view(dv, [b, lk, h, dh]),
        bias: want_bias.then(|| flex_tensor(dbias, [b, h, lq, lk])),
    }
}
