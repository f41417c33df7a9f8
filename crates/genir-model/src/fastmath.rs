//! Fused attention softmax, GELU and norms for inference on the `flex` (CPU) backend, used by BERT and T5.
//!
//! burn composes softmax from four tensor operations (max, `exp`, sum, divide: four passes over the scores,
//! four fresh buffers, and a scalar `expf` per element). [`softmax_last`] does it in one vectorised pass per
//! row (AVX2 + FMA when the CPU has them) on the host buffer, to within 1e-6 of burn's result (tested).
//! A row padded with masked keys gives bit-identical probabilities to the unpadded row, so a padded batch
//! and each sequence alone agree exactly. On any other device, and on an autodiff device (training and
//! attribution patching need the gradient, and the fused pass goes through host memory, outside the graph),
//! it is burn's `activation::softmax`, as it is everywhere when the environment variable
//! `GENIR_FLEX_FASTMATH=0` is set (read once per process). burn's device equality ignores autodiff
//! (`Device::flex().autodiff() == Device::flex()`), so the check is `is_autodiff()`, tested below: an
//! earlier version compared devices only, and cut the softmax out of every gradient on flex.
//!
//! [`gelu`] is the exact (erf) GELU the same way: one vectorised pass over the host buffer, `erf` computed in
//! f64 (Maclaurin series near 0, Numerical Recipes' `erfc` fit beyond) and rounded to f32, then
//! `x/2 (1 + erf)` in f32 as burn (libm's `erff`, one element at a time) and PyTorch compute it, so the three
//! agree to the last bit except where an `erf` rounds the other way (under 0.1% of inputs, tested). Every
//! BERT and T5 MLP applies its non-linearity through [`crate::t5::Activation::apply`], so a sweep that
//! re-runs part of a block computes exactly what the forward pass does.
//!
//! [`layer_norm`] (BERT) and [`rms_norm`] (T5) are one pass per row, with the mean and variance accumulated
//! in f64 (burn's composition takes eight passes, each into a fresh buffer, and accumulates in f32). All these
//! passes are row- or element-wise and split large buffers across rayon's threads (the ones gemm uses), so
//! their results do not depend on the number of threads (tested).

use burn::prelude::*;
use burn::tensor::activation;
use rayon::prelude::*;

#[cfg(feature = "flex")]
mod attention_grad;
#[cfg(feature = "flex")]
mod linear_grad;
#[cfg(feature = "flex")]
mod norm_grad;

/// Whether the fused path is on (`GENIR_FLEX_FASTMATH` is not `0`).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("GENIR_FLEX_FASTMATH").map_or(true, |v| v.trim() != "0"))
}

/// Softmax over the last dimension (attention patterns), fused on `flex` without autodiff (see the module docs).
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let width = x.dims()[D - 1];
    if width == 0 {
        return activation::softmax(x, D - 1);
    }
    fused(
        x,
        |values| softmax_rows_in_place(values, width),
        |x| activation::softmax(x, D - 1),
    )
}

/// Exact (erf) GELU, `x/2 (1 + erf(x/sqrt 2))`, fused on `flex` without autodiff (see the module docs).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    fused(x, gelu_in_place, activation::gelu)
}

/// Layer norm over the last axis, `(x - mean) / sqrt(var + eps) * weight + bias` with the biased variance
/// (PyTorch's `nn.LayerNorm`), fused on `flex` without autodiff: one pass per row, mean and variance
/// accumulated in f64 (burn's composition, used elsewhere, takes eight passes and accumulates in f32).
pub fn layer_norm(x: Tensor<3>, weight: Tensor<1>, bias: Tensor<1>, eps: f64) -> Tensor<3> {
    let d = x.dims()[2];
    let burn = |x: Tensor<3>| {
        let mean = x.clone().mean_dim(2);
        let centred = x - mean;
        let var = centred.clone().square().mean_dim(2);
        centred * var.add_scalar(eps).sqrt().recip() * weight.clone().reshape([1, 1, d])
            + bias.clone().reshape([1, 1, d])
    };
    match (host_vec(&weight), host_vec(&bias)) {
        (Some(w), Some(b)) if w.len() == d && b.len() == d && d > 0 => fused(
            x,
            |values| norm_rows_in_place(values, &w, Some(&b), eps, true),
            burn,
        ),
        _ => burn(x),
    }
}

/// T5's norm over the last axis, `x / sqrt(mean(x^2) + eps) * weight` (no centring, no bias), fused on
/// `flex` without autodiff like [`layer_norm`]; on an autodiff `flex` device (training) the same pass is
/// recorded as one operation with its own backward pass (values and gradients within 1e-6 and 1e-5 of
/// burn's composition, tested).
pub fn rms_norm(x: Tensor<3>, weight: Tensor<1>, eps: f64) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if let Some(y) = norm_grad::rms_norm(&x, &weight, eps) {
        return y;
    }
    let d = x.dims()[2];
    match host_vec(&weight) {
        Some(w) if w.len() == d && d > 0 => fused(
            x,
            |values| norm_rows_in_place(values, &w, None, eps, false),
            |x| rms_norm_burn(x, &weight, eps),
        ),
        _ => rms_norm_burn(x, &weight, eps),
    }
}

/// burn's composition of [`rms_norm`]: its fallback, and its reference in the tests.
fn rms_norm_burn(x: Tensor<3>, weight: &Tensor<1>, eps: f64) -> Tensor<3> {
    let d = x.dims()[2];
    let ms = x.clone().square().mean_dim(2);
    x * ms.add_scalar(eps).sqrt().recip() * weight.clone().reshape([1, 1, d])
}

/// Log-softmax over the last axis of `x: [rows, width]`, read at the columns `cols` only: `rows x cols.len()`
/// host values, row-major (constrained decoding scores a few docid tokens against the whole vocabulary). On
/// `flex` without autodiff it is one pass per row (max, then a vectorised sum of `e^(x - max)` in f32 lanes,
/// its log in f64) and only the chosen columns are written; elsewhere it is burn's `log_softmax` and a
/// column select on the device.
pub fn log_softmax_at(mut x: Tensor<2>, cols: &[usize]) -> Result<Vec<f32>, crate::ModelError> {
    let [rows, width] = x.dims();
    if let Some(&c) = cols.iter().find(|&&c| c >= width) {
        return Err(crate::ModelError::Input(format!(
            "log_softmax_at: column {c} is outside the {width} columns"
        )));
    }
    if fusable(&x) && width > 0 && rows > 0 {
        let device = x.device();
        let data = x.into_data();
        if let Ok(values) = data.as_slice::<f32>() {
            let mut out = vec![0.0f32; rows * cols.len()];
            let rows_per_task = (PAR_GRAIN / width).max(1);
            let task = |(vals, out): (&[f32], &mut [f32])| {
                for (row, o) in vals.chunks(width).zip(out.chunks_mut(cols.len().max(1))) {
                    let lse = log_sum_exp(row);
                    for (o, &c) in o.iter_mut().zip(cols) {
                        *o = (f64::from(row[c]) - lse) as f32;
                    }
                }
            };
            if values.len() <= PAR_GRAIN || cols.is_empty() {
                task((values, &mut out));
            } else {
                values
                    .par_chunks(rows_per_task * width)
                    .zip(out.par_chunks_mut(rows_per_task * cols.len()))
                    .for_each(task);
            }
            return Ok(out);
        }
        // not reached for f32 on flex (what `fusable` checks): burn's operations below
        x = Tensor::from_data(data, &device);
    }
    let device = x.device();
    let idx: Vec<i64> = cols.iter().map(|&c| c as i64).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [cols.len()]), &device);
    activation::log_softmax(x, 1)
        .select(1, idx)
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| crate::ModelError::Tensor(format!("{e:?}")))
}

/// `ln(sum e^x)` of one row (the max taken out first), vectorised like [`softmax_row`].
fn log_sum_exp(row: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `log_sum_exp_avx2` is compiled for (checked just above).
        return unsafe { log_sum_exp_avx2(row) };
    }
    log_sum_exp_row(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn log_sum_exp_avx2(row: &[f32]) -> f64 {
    let max = row_max(row);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let lanes = simd::exp_sum(row.as_ptr(), None, row.len(), max);
    f64::from(max) + f64::from(lanes.iter().sum::<f32>()).ln()
}

#[inline(always)]
fn log_sum_exp_row(row: &[f32]) -> f64 {
    let max = row_max(row);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let mut lanes = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += exp_neg(v - max);
        }
    }
    for (l, &v) in lanes.iter_mut().zip(tail) {
        *l += exp_neg(v - max);
    }
    f64::from(max) + f64::from(lanes.iter().sum::<f32>()).ln()
}

/// The largest value of a row, in eight lanes so the loop vectorises.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v);
        }
    }
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// The largest value of a row for a softmax, or `None` where burn's and PyTorch's softmax give a NaN row:
/// a NaN in the row (NaN survives `x - max` and the sum there, while [`exp_neg`] clamps it to a tiny
/// value), or an infinite maximum (every score `-inf`: `-inf - -inf` is NaN).
#[inline(always)]
fn softmax_max(row: &[f32]) -> Option<f32> {
    let mut nan = [false; 8];
    let chunks = row.chunks_exact(8);
    for &v in chunks.remainder() {
        nan[0] |= v.is_nan();
    }
    for c in chunks {
        for (n, &v) in nan.iter_mut().zip(c) {
            *n |= v.is_nan();
        }
    }
    let max = row_max(row);
    (max.is_finite() && !nan.contains(&true)).then_some(max)
}

/// `x @ w (+ b)` over the last axis of `x`, with `w: [d_in, d_out]` and `b: [d_out]`: every linear map of
/// BERT and T5 and the LM head. burn runs it as one `[rows, d_in] @ [d_in, d_out]` product into a fresh
/// buffer that flex zero-fills and then copies once more to realign it, and adds the bias in another pass.
/// On `flex` without autodiff this calls the same gemm kernel with the same arguments on flex's own buffers
/// (no copy of `x` or `w`, any strides of `w`, so a transposed view costs nothing), writes into a buffer of
/// ours without filling it first, and adds the bias in place: bit-identical to burn's result (tested).
/// Elsewhere, and for a non-contiguous `x`, it is burn's product and add.
pub fn linear<const D: usize>(x: Tensor<D>, w: &Tensor<2>, b: Option<&Tensor<1>>) -> Tensor<D> {
    linear_then(x, w, b, false)
}

/// `relu(x @ w (+ b))`: T5's ReLU feed-forward map, as [`linear`] with the ReLU applied in place to the
/// product's buffer on `flex` (one pass and one buffer fewer), and on an autodiff `flex` device recorded with
/// the product as one operation whose backward pass masks the output gradient by `y > 0` (burn's ReLU records
/// its own operation, and its backward pass makes a mask tensor, then a masked copy). ReLU is exact, so the
/// values are bit-identical to `relu(linear(x, w, b))` on every device (tested).
pub fn linear_relu<const D: usize>(
    x: Tensor<D>,
    w: &Tensor<2>,
    b: Option<&Tensor<1>>,
) -> Tensor<D> {
    linear_then(x, w, b, true)
}

/// [`linear`], then a ReLU when `relu`.
fn linear_then<const D: usize>(
    x: Tensor<D>,
    w: &Tensor<2>,
    b: Option<&Tensor<1>>,
    relu: bool,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex_linear(&x, w, b, relu).or_else(|| linear_grad::linear(&x, w, b, relu)) {
        return y;
    }
    let y = linear_burn(x, w, b);
    if relu {
        activation::relu(y)
    } else {
        y
    }
}

/// ReLU in place, as burn's (`x <= 0` becomes `+0`; NaN stays NaN).
#[cfg(feature = "flex")]
fn relu_in_place(values: &mut [f32]) {
    // the value's bits and-ed with all ones or all zeros (branch-free, so the loop vectorises)
    for v in values {
        let keep = u32::from(*v <= 0.0).wrapping_sub(1);
        *v = f32::from_bits(v.to_bits() & keep);
    }
}

/// burn's `x @ w (+ b)`: the fallback of [`linear`], and its reference in the tests.
fn linear_burn<const D: usize>(x: Tensor<D>, w: &Tensor<2>, b: Option<&Tensor<1>>) -> Tensor<D> {
    let dims = x.dims();
    let d_out = w.dims()[1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = x.reshape([rows, dims[D - 1]]).matmul(w.clone());
    let y = match b {
        Some(b) => y + b.clone().reshape([1, d_out]),
        None => y,
    };
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

/// `dst = lhs @ rhs` in f32 by gemm with `read_dst` false (the destination is written, never read), as
/// burn-flex calls it: `[m, n, k]`, then each matrix as a pointer with its row and column strides (the
/// destination's columns are contiguous).
///
/// # Safety
/// `lhs` spans `m x k` and `rhs` `k x n` readable values at their strides; `dst` spans `m x n` writable
/// values at its row stride, aliasing neither; see [`output_buffer`] for an uninitialised destination.
#[cfg(feature = "flex")]
unsafe fn gemm_into(
    [m, n, k]: [usize; 3],
    (dst, dst_rs): (*mut f32, isize),
    (lhs, lhs_rs, lhs_cs): (*const f32, isize, isize),
    (rhs, rhs_rs, rhs_cs): (*const f32, isize, isize),
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract above is gemm's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            false,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A buffer for an `m x n` gemm output written with `read_dst` false: capacity only, for gemm to fill
/// (gemm 0.19 never reads the destination then), except for a single row or column, where gemm's
/// matrix-vector paths take a `&mut [f32]` over the destination: that one is zeroed, so no reference to
/// uninitialised memory is ever made.
#[cfg(feature = "flex")]
fn output_buffer(m: usize, n: usize) -> Vec<f32> {
    if m == 1 || n == 1 {
        vec![0.0; m * n]
    } else {
        Vec::with_capacity(m * n)
    }
}

/// `lhs @ rhs` as a fresh row-major `m x n` buffer: [`gemm_into`] an [`output_buffer`], threaded as flex
/// would ([`gemm_parallelism`]).
///
/// # Safety
/// `lhs` spans `m x k` and `rhs` `k x n` readable values at their (row, column) strides.
#[cfg(feature = "flex")]
unsafe fn gemm_new(
    [m, n, k]: [usize; 3],
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
) -> Vec<f32> {
    let mut out = output_buffer(m, n);
    // SAFETY: the caller vouches for `lhs` and `rhs`; `out` is a fresh allocation (aliasing neither) with room
    // for `m x n` values at row stride `n`, all written by gemm (`read_dst` false: alpha is zero, the old
    // values are never read) before the length is set ([`output_buffer`]).
    unsafe {
        gemm_into(
            [m, n, k],
            (out.as_mut_ptr(), n as isize),
            lhs,
            rhs,
            gemm_parallelism(m, n, k),
        );
        out.set_len(m * n);
    }
    out
}

/// flex's threshold for letting gemm use rayon's threads on an `m x n x k` product (burn-flex `ops::matmul`).
#[cfg(feature = "flex")]
fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m * n * k >= 192 * 192 * 192 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// A 2-D f32 flex tensor's storage, start offset and (row, column) strides, when every element its
/// `rows x cols` strides reach lies in the storage (a layout flex made always does; strides may be negative).
#[cfg(feature = "flex")]
fn view2(
    t: &burn_flex::FlexTensor,
    rows: usize,
    cols: usize,
) -> Option<(&[f32], usize, isize, isize)> {
    let layout = t.layout();
    if t.dtype() != burn::tensor::DType::F32 || layout.strides().len() != 2 || rows * cols == 0 {
        return None;
    }
    let (rs, cs) = (layout.strides()[0], layout.strides()[1]);
    let storage = t.storage::<f32>();
    let span = |len: usize, stride: isize| (len as isize - 1) * stride;
    let start = layout.start_offset() as isize;
    let last = start + span(rows, rs).max(0) + span(cols, cs).max(0);
    let first = start + span(rows, rs).min(0) + span(cols, cs).min(0);
    (first >= 0 && (last as usize) < storage.len()).then_some((
        storage,
        layout.start_offset(),
        rs,
        cs,
    ))
}

/// The fused path of [`linear`]; `None` when it does not apply (see there).
#[cfg(feature = "flex")]
fn flex_linear<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<2>,
    b: Option<&Tensor<1>>,
    relu: bool,
) -> Option<Tensor<D>> {
    use burn::tensor::DType;
    use burn_flex::{Flex, FlexTensor};
    if !fusable(x) || w.dtype() != DType::F32 || b.is_some_and(|b| b.dtype() != DType::F32) {
        return None;
    }
    let dims = x.dims();
    let k = dims[D - 1];
    let [k_w, n] = w.dims();
    let m = dims[..D - 1].iter().product::<usize>();
    // shape errors and empty products are burn's to report or handle
    if k_w != k || k == 0 || m == 0 || n == 0 || b.is_some_and(|b| b.dims()[0] != n) {
        return None;
    }
    let xp: FlexTensor = x.clone().try_into_primitive::<Flex>().ok()?;
    let wp: FlexTensor = w.clone().try_into_primitive::<Flex>().ok()?;
    let bp: Option<FlexTensor> = match b {
        Some(b) => Some(b.clone().try_into_primitive::<Flex>().ok()?),
        None => None,
    };
    let xs = xp.as_slice::<f32>()?;
    let bias = match &bp {
        Some(bp) => Some(bp.as_slice::<f32>()?),
        None => None,
    };
    let (ws, w_start, w_rs, w_cs) = view2(&wp, k, n)?;
    if xs.len() != m * k {
        return None;
    }
    // the whole buffer's pointer: negative strides reach elements before `w_start`
    let w_ptr = ws.as_ptr().wrapping_add(w_start);
    // SAFETY: `x` is `m x k` row-major in `xs`; `w`'s `k x n` elements at its strides lie in `ws` (checked
    // above).
    let mut out = unsafe { gemm_new([m, n, k], (xs.as_ptr(), k as isize, 1), (w_ptr, w_rs, w_cs)) };
    if bias.is_some() || relu {
        par_rows(&mut out, n, |rows| {
            if let Some(bias) = bias {
                for row in rows.chunks_exact_mut(n) {
                    for (o, &b) in row.iter_mut().zip(bias) {
                        *o += b;
                    }
                }
            }
            if relu {
                relu_in_place(rows);
            }
        });
    }
    let mut shape = dims;
    shape[D - 1] = n;
    Some(Tensor::from_data(TensorData::new(out, shape), &x.device()))
}

/// Attention of heads `q: [batch, heads, q_len, d_head]` over `k`, `v: [batch, heads, k_len, d_head]` (any
/// strides: the transposed views the projections give, or cached keys/values), with an additive `bias`
/// broadcast from `[batch | 1, heads | 1, q_len | 1, k_len]`: `softmax(q k^T / divisor + bias) v` (BERT divides
/// by `sqrt(d_head)`; T5, `divisor` `None`, does not), returned as `[batch, q_len, heads * d_head]`. On `flex`
/// without autodiff this runs one task per (sequence, head): the gemm calls burn makes for the two batched
/// products (same shapes and strides, but 0 for an axis of length 1, which gemm never reads: its dispatch only
/// asks whether a stride is 1, and such axes of q, k and v are never the last), the division, bias and softmax on the task's own score buffer while it
/// is in cache, and the output written straight into its final layout (no score tensor, no transposed copy):
/// bit-identical to burn's operations followed by [`softmax_last`] (tested). On an autodiff `flex` device
/// (training) the same pass is recorded as one operation whose backward pass recomputes each block's pattern
/// and gives the gradients of q, k, v and the bias in one task per block (values and gradients within 1e-6 and
/// 2e-5 of burn's, tested). `None` when it does not apply
/// (another device, other shapes, a bias whose last axis is strided, heads of width 1): the caller
/// runs the operations itself, as it must when a hook reads or writes the scores, the pattern or `z`.
pub fn attention_heads(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    bias: &Tensor<4>,
    divisor: Option<f64>,
) -> Option<Tensor<3>> {
    #[cfg(feature = "flex")]
    {
        flex_attention(q, k, v, bias, divisor)
            .or_else(|| attention_grad::attention(q, k, v, bias, divisor))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (q, k, v, bias, divisor);
        None
    }
}

/// The values of a 4-D f32 flex tensor of `dims` from its start offset on, and its strides, when every
/// stride is non-negative and the last element they reach lies in the buffer (a layout flex makes always
/// does). An axis of length 1 gets stride 0, as a broadcast reads it.
#[cfg(feature = "flex")]
fn view4(t: &burn_flex::FlexTensor, dims: [usize; 4]) -> Option<(&[f32], [usize; 4])> {
    let layout = t.layout();
    if t.dtype() != burn::tensor::DType::F32 || layout.strides().len() != 4 {
        return None;
    }
    let storage = t.storage::<f32>();
    let start = layout.start_offset();
    let mut strides = [0usize; 4];
    let mut last = start;
    for (i, &n) in dims.iter().enumerate() {
        if n > 1 {
            strides[i] = usize::try_from(layout.strides()[i]).ok()?;
            last = last.checked_add((n - 1).checked_mul(strides[i])?)?;
        }
    }
    (last < storage.len()).then(|| (&storage[start..], strides))
}

/// A buffer's base pointer, shared by parallel tasks that each write only their own disjoint block of it.
#[cfg(feature = "flex")]
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: users hand each task a block of the buffer no other task touches (see each use).
#[cfg(feature = "flex")]
unsafe impl Send for SharedOut {}
#[cfg(feature = "flex")]
unsafe impl Sync for SharedOut {}
#[cfg(feature = "flex")]
impl SharedOut {
    /// The element `offset` places in (a method, so closures capture the whole wrapper).
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Strided views of one attention's queries, keys and bias (see [`view4`]) and its sizes: what computing
/// a (sequence, head) block's pattern needs, shared by the fused forward and backward passes so both see
/// the same pattern bit for bit.
#[cfg(feature = "flex")]
#[derive(Clone, Copy)]
pub(crate) struct HeadViews<'a> {
    q: (&'a [f32], [usize; 4]),
    k: (&'a [f32], [usize; 4]),
    bias: (&'a [f32], [usize; 4]),
    h: usize,
    lq: usize,
    lk: usize,
    dh: usize,
    divisor: Option<f32>,
}

#[cfg(feature = "flex")]
impl<'a> HeadViews<'a> {
    /// The views of `q: [b, h, lq, dh]`, `k: [b, h, lk, dh]` and a bias broadcast from
    /// `[b | 1, h | 1, lq | 1, lk]` (its dimensions as given), or `None` when one of them does not lie in its
    /// buffer or the bias's key axis is strided. `divisor` is rounded to f32, as burn's `div_scalar` rounds
    /// the scalar to the tensor's type.
    fn new(
        [q, k, bias]: [&'a burn_flex::FlexTensor; 3],
        [b, h, lq, lk, dh]: [usize; 5],
        bias_dims: [usize; 4],
        divisor: Option<f64>,
    ) -> Option<Self> {
        let q = view4(q, [b, h, lq, dh])?;
        let k = view4(k, [b, h, lk, dh])?;
        let bias = view4(bias, bias_dims)?;
        if lk > 1 && bias.1[3] != 1 {
            return None;
        }
        Some(Self {
            q,
            k,
            bias,
            h,
            lq,
            lk,
            dh,
            divisor: divisor.map(|d| d as f32),
        })
    }

    /// The pattern `softmax(q k^T / divisor + bias)` of block `t` (sequence `t / h`, head `t % h`) into
    /// `scores` (`lq x lk`, row-major): burn's batched product of the transposed view, its division and
    /// bias add, then [`softmax_rows_in_place`].
    fn pattern(&self, scores: &mut [f32], t: usize) {
        let (seq, head) = (t / self.h, t % self.h);
        let ((qs, qst), (ks, kst), (bs, bst)) = (self.q, self.k, self.bias);
        let (lq, lk, dh) = (self.lq, self.lk, self.dh);
        let q_at = seq * qst[0] + head * qst[1];
        let k_at = seq * kst[0] + head * kst[1];
        let bias_at = seq * bst[0] + head * bst[1];
        debug_assert!(scores.len() >= lq * lk);
        // SAFETY: `view4` checked that the `b x h x len x dh` elements of q and k at their strides lie in
        // their slices, so the (seq, head) block at these offsets does; `scores` holds `lq x lk` values.
        unsafe {
            gemm_into(
                [lq, lk, dh],
                (scores.as_mut_ptr(), lk as isize),
                (qs.as_ptr().add(q_at), qst[2] as isize, qst[3] as isize),
                (ks.as_ptr().add(k_at), kst[3] as isize, kst[2] as isize),
                gemm::Parallelism::None,
            );
        }
        let scores = &mut scores[..lq * lk];
        for (r, row) in scores.chunks_exact_mut(lk).enumerate() {
            let key_bias = &bs[bias_at + r * bst[2]..][..lk];
            match self.divisor {
                Some(d) => {
                    for (x, &kb) in row.iter_mut().zip(key_bias) {
                        *x = *x / d + kb;
                    }
                }
                None => {
                    for (x, &kb) in row.iter_mut().zip(key_bias) {
                        *x += kb;
                    }
                }
            }
        }
        softmax_rows_in_place(scores, lk);
    }
}

#[cfg(feature = "flex")]
fn flex_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    bias: &Tensor<4>,
    divisor: Option<f64>,
) -> Option<Tensor<3>> {
    use burn_flex::{Flex, FlexTensor};
    if !fusable(q) {
        return None;
    }
    let [b, h, lq, dh] = q.dims();
    let [kb, kh, lk, kd] = k.dims();
    let bd = bias.dims();
    let fits = |n: usize, want: usize| n == want || n == 1;
    if [kb, kh, kd] != [b, h, dh]
        || v.dims() != k.dims()
        || !(fits(bd[0], b) && fits(bd[1], h) && fits(bd[2], lq) && bd[3] == lk)
        || b * h * lq * lk == 0
        || dh < 2
    {
        return None;
    }
    let prim =
        |t: &Tensor<4>| -> Option<FlexTensor> { t.clone().try_into_primitive::<Flex>().ok() };
    let (qp, kp, vp, bp) = (prim(q)?, prim(k)?, prim(v)?, prim(bias)?);
    let views = HeadViews::new([&qp, &kp, &bp], [b, h, lq, lk, dh], bd, divisor)?;
    let (vs, vst) = view4(&vp, [b, h, lk, dh])?;
    // the output's row stride
    let width = h * dh;
    // `b * h` blocks of `lq x dh`, each one gemm's destination: zeroed where a block is a single row (see
    // [`output_buffer`]), else left for gemm to fill
    let mut out: Vec<f32> = if lq == 1 {
        vec![0.0; b * lq * width]
    } else {
        Vec::with_capacity(b * lq * width)
    };
    let dst = SharedOut(out.as_mut_ptr());
    let task = |scores: &mut Vec<f32>, t: usize| {
        let (seq, head) = (t / h, t % h);
        let v_at = seq * vst[0] + head * vst[1];
        views.pattern(scores, t);
        let out_at = seq * lq * width + head * dh;
        // SAFETY: v's (seq, head) block lies in its slice (`view4`); `scores` holds the `lq x lk` pattern;
        // the output block at `out_at` (row stride `width`) is this task's alone, and gemm writes all of it
        // (`read_dst` false).
        unsafe {
            gemm_into(
                [lq, dh, lk],
                (dst.at(out_at), width as isize),
                (scores.as_ptr(), lk as isize, 1),
                (vs.as_ptr().add(v_at), vst[2] as isize, vst[3] as isize),
                gemm::Parallelism::None,
            );
        }
    };
    (0..b * h)
        .into_par_iter()
        .for_each_init(|| vec![0.0f32; lq * lk], task);
    // SAFETY: the (sequence, head) blocks tile the whole `b x lq x width` buffer, each written above.
    unsafe { out.set_len(b * lq * width) };
    Some(Tensor::from_data(
        TensorData::new(out, [b, lq, width]),
        &q.device(),
    ))
}

/// Whether a tensor can take a fused host pass: on `flex`, not autodiff, f32, and fused passes are enabled
/// (`GENIR_FLEX_FASTMATH` is not `0`).
pub fn fusable<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    {
        let device = x.device();
        enabled()
            && device == Device::flex()
            && !device.is_autodiff()
            && x.dtype() == burn::tensor::DType::F32
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = x;
        false
    }
}

/// Whether a tensor can take a fused pass recorded on the autodiff tape: on an autodiff `flex` device, f32,
/// and fused passes are enabled.
#[cfg(feature = "flex")]
fn autodiff_flex_f32<const D: usize>(x: &Tensor<D>) -> bool {
    let device = x.device();
    enabled()
        && device.is_autodiff()
        && device == Device::flex()
        && x.dtype() == burn::tensor::DType::F32
}

/// The values of a small parameter tensor when it can take the fused path (`None` otherwise).
fn host_vec<const D: usize>(t: &Tensor<D>) -> Option<Vec<f32>> {
    if !fusable(t) {
        return None;
    }
    t.clone().into_data().try_into_vec::<f32>().ok()
}

/// Runs `f` on the host buffer of `x` when it can take the fused path, else `fallback(x)`.
fn fused<const D: usize>(
    x: Tensor<D>,
    f: impl FnOnce(&mut [f32]),
    fallback: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    if !fusable(&x) {
        return fallback(x);
    }
    let device = x.device();
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => {
            f(values);
            Tensor::from_data(data, &device)
        }
        Err(_) => fallback(Tensor::from_data(data, &device)),
    }
}

/// Elements per task when a fused pass is split across threads (smaller buffers run on one thread).
const PAR_GRAIN: usize = 16 * 1024;

/// Runs `f` on chunks of whole rows of `width` values, on rayon's threads when the buffer is large. Every
/// pass here is row- or element-wise, so the result does not depend on the split.
fn par_rows(values: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    let width = width.max(1);
    let rows_per_task = (PAR_GRAIN / width).max(1);
    if values.len() <= PAR_GRAIN || rayon::current_num_threads() < 2 {
        f(values);
    } else {
        values.par_chunks_mut(rows_per_task * width).for_each(f);
    }
}

/// Norm of every row of `w.len()` values of a host buffer, in place: layer norm (`centre`, with `bias`)
/// or RMS norm.
pub fn norm_rows_in_place(
    values: &mut [f32],
    w: &[f32],
    bias: Option<&[f32]>,
    eps: f64,
    centre: bool,
) {
    par_rows(values, w.len(), |chunk| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features `norm_avx2` is compiled for (checked just above).
            unsafe { norm_avx2(chunk, w, bias, eps, centre) };
            return;
        }
        for row in chunk.chunks_mut(w.len()) {
            norm_row(row, w, bias, eps, centre);
        }
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn norm_avx2(values: &mut [f32], w: &[f32], bias: Option<&[f32]>, eps: f64, centre: bool) {
    for row in values.chunks_mut(w.len()) {
        norm_row(row, w, bias, eps, centre);
    }
}

/// `sum f(v)` over a row in f64, in four interleaved lanes (four independent chains of additions, so it
/// runs at the adder's throughput rather than its latency): the norms' order of summation, shared by RMS
/// norm's forward and backward passes so both see the same inverse root.
#[inline(always)]
fn lanes_sum(row: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0.0f64; 4];
    let chunks = row.chunks_exact(4);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

#[inline(always)]
fn norm_row(row: &mut [f32], w: &[f32], bias: Option<&[f32]>, eps: f64, centre: bool) {
    let n = row.len() as f64;
    let mean = if centre {
        lanes_sum(row, f64::from) / n
    } else {
        0.0
    };
    let var = lanes_sum(row, |v| {
        let c = f64::from(v) - mean;
        c * c
    }) / n;
    let (mean, inv) = (mean as f32, (1.0 / (var + eps).sqrt()) as f32);
    match bias {
        Some(b) => {
            for ((v, &g), &b) in row.iter_mut().zip(w).zip(b) {
                *v = (*v - mean) * inv * g + b;
            }
        }
        None => {
            for (v, &g) in row.iter_mut().zip(w) {
                *v = (*v - mean) * inv * g;
            }
        }
    }
}

/// Exact GELU of every value of a host buffer, in place.
pub fn gelu_in_place(values: &mut [f32]) {
    par_rows(values, 1, |chunk| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features `gelu_avx512` is compiled for (checked just above).
            unsafe { gelu_avx512(chunk) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features `gelu_avx2` is compiled for (checked just above).
            unsafe { gelu_avx2(chunk) };
            return;
        }
        gelu_split(chunk);
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(values: &mut [f32]) {
    gelu_split(values);
}

/// The same operations with 512-bit vectors (and 32 registers, so the polynomial constants stay in them):
/// every lane computes exactly what [`gelu_avx2`] does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gelu_avx512(values: &mut [f32]) {
    gelu_split(values);
}

/// [`gelu_one`] of every value, without computing the far branch for every value: per block of 256, the
/// values at `|x/sqrt 2| >= 1.5` (and NaN) are set aside, every value goes through the series alone (a
/// vectorised loop of one polynomial), then the set-aside values through [`gelu_one`] (both branches,
/// vectorised) and back in place. The same operations per value as [`gelu_one`], so bit-identical to it.
#[inline(always)]
fn gelu_split(values: &mut [f32]) {
    const BLOCK: usize = 256;
    let mut far = [0.0f32; BLOCK];
    let mut at = [0u16; BLOCK];
    for chunk in values.chunks_mut(BLOCK) {
        let mut n = 0usize;
        for (i, &x) in chunk.iter().enumerate() {
            // n <= i < BLOCK: always in bounds; written every time, kept only when counted
            far[n] = x;
            at[n] = i as u16;
            n += usize::from(!gelu_is_near(x));
        }
        for v in chunk.iter_mut() {
            *v = gelu_near(*v);
        }
        for v in &mut far[..n] {
            *v = gelu_one(*v);
        }
        for (&i, &g) in at[..n].iter().zip(&far[..n]) {
            chunk[usize::from(i)] = g;
        }
    }
}

/// Whether [`gelu_one`] takes the series for `x` (false for NaN).
#[inline(always)]
fn gelu_is_near(x: f32) -> bool {
    gelu_z(x).abs() < 1.5
}

/// `x / sqrt 2` in f32, then widened: the argument of `erf` in GELU.
#[inline(always)]
fn gelu_z(x: f32) -> f64 {
    f64::from(x / std::f32::consts::SQRT_2)
}

/// `erf(z)` by its Maclaurin series, for `|z| < 1.5`.
#[inline(always)]
fn erf_series(z: f64) -> f64 {
    std::f64::consts::FRAC_2_SQRT_PI * z * {
        let u = z * z;
        let mut s = ERF_SERIES[ERF_SERIES.len() - 1];
        for &c in ERF_SERIES.iter().rev().skip(1) {
            s = s.mul_add(u, c);
        }
        s
    }
}

/// [`gelu_one`] for `|x/sqrt 2| < 1.5`, where it takes the series.
#[inline(always)]
fn gelu_near(x: f32) -> f32 {
    let erf = erf_series(gelu_z(x)) as f32;
    0.5 * x * (1.0 + erf)
}

/// `gelu(x) = x/2 (1 + erf(x/sqrt 2))` with the f32 operations in the order burn's and PyTorch's GELU use
/// (so it agrees with them to the last bit wherever their `erf` is correctly rounded), and `erf` itself in
/// f64: its Maclaurin series below |z| = 1.5, `1 - erfc` from Numerical Recipes' fit (fractional error
/// 1.2e-7, at most 4e-9 absolute there) above. Branch-free so the loop vectorises.
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    let z = gelu_z(x);
    let series = erf_series(z);
    let a = z.abs();
    let t = 1.0 / 0.5f64.mul_add(a, 1.0);
    let mut p = 0.170_872_77f64;
    for c in [
        -0.822_152_23,
        1.488_515_87,
        -1.135_203_98,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_68,
        -1.265_512_23,
    ] {
        p = p.mul_add(t, c);
    }
    let erfc = t * exp_f64((-a).mul_add(a, p));
    let tail = if z >= 0.0 { 1.0 - erfc } else { erfc - 1.0 };
    let erf = (if a < 1.5 { series } else { tail }) as f32;
    0.5 * x * (1.0 + erf)
}

/// `(-1)^n / (n! (2n + 1))`: `erf(z) = 2/sqrt(pi) z sum_n c_n z^(2n)`; 24 terms leave under 1e-17 at |z| = 1.5.
const ERF_SERIES: [f64; 24] = {
    let mut c = [0.0; 24];
    let mut fact = 1.0;
    let mut n = 0;
    while n < 24 {
        if n > 0 {
            fact *= n as f64;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        c[n] = sign / (fact * (2 * n + 1) as f64);
        n += 1;
    }
    c
};

/// `e^x` in f64 for `x <= 1` (relative error about 1e-13); 0 below -700, where every caller's f32 result
/// is 0 anyway.
#[inline(always)]
fn exp_f64(x: f64) -> f64 {
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let xc = x.max(-700.0);
    let n = xc.mul_add(std::f64::consts::LOG2_E, 0.5).floor();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    // Taylor series to r^11 / 11! on |r| <= ln2 / 2
    let mut p: f64 = 1.0 / 39_916_800.0;
    for k in (1..=10).rev() {
        p = p.mul_add(r, INV_FACTORIAL[k]);
    }
    let e = p.mul_add(r, 1.0);
    // 2^n from the bits of 2^52 + 1023 + n (an integer in the mantissa), shifted into the exponent field
    let scale = f64::from_bits((n + (1023.0 + 4_503_599_627_370_496.0)).to_bits() << 52);
    if x < -700.0 {
        0.0
    } else {
        e * scale
    }
}

const INV_FACTORIAL: [f64; 11] = [
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40_320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
];

/// Softmax of every row of `width` values of a host buffer, in place (`x - max` first, as burn and PyTorch
/// do, so large scores do not overflow; a row of equal masked scores becomes uniform, and a row with a NaN,
/// an infinite maximum or nothing but `-inf` becomes NaN, as there).
pub fn softmax_rows_in_place(values: &mut [f32], width: usize) {
    par_rows(values, width, |chunk| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features `softmax_avx2` is compiled for (checked just above).
            unsafe { softmax_avx2(chunk, width) };
            return;
        }
        for row in chunk.chunks_mut(width.max(1)) {
            softmax_row(row);
        }
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(values: &mut [f32], width: usize) {
    for row in values.chunks_mut(width.max(1)) {
        let Some(max) = softmax_max(row) else {
            row.fill(f32::NAN);
            continue;
        };
        let ptr = row.as_mut_ptr();
        let lanes = simd::exp_sum(ptr, Some(ptr), row.len(), max);
        let inv = 1.0 / lanes.iter().sum::<f32>();
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// [`exp_neg`] on eight lanes with AVX2 + FMA intrinsics: the same operations in the same order, so every
/// lane is bit-identical to the scalar function (written out because the compiler vectorises the scalar
/// loop only partly).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_neg8(x: __m256) -> __m256 {
        let floor = _mm256_set1_ps(-87.0);
        let xc = _mm256_max_ps(x, floor);
        let n = _mm256_floor_ps(_mm256_add_ps(
            _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _mm256_set1_ps(0.5),
        ));
        let r = _mm256_fmadd_ps(
            n,
            _mm256_set1_ps(-super::EXP_LN2_LO),
            _mm256_fmadd_ps(n, _mm256_set1_ps(-super::EXP_LN2_HI), xc),
        );
        let mut p = _mm256_set1_ps(super::EXP_POLY[0]);
        for &c in &super::EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let e = _mm256_add_ps(
            _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r),
            _mm256_set1_ps(1.0),
        );
        let bits = _mm256_castps_si256(_mm256_add_ps(n, _mm256_set1_ps(127.0 + 8_388_608.0)));
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(bits));
        let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, floor);
        _mm256_andnot_ps(under, _mm256_mul_ps(e, scale))
    }

    /// Adds `e^(src[i] - max)` into lane `i % 8` (in order, the tail too) and, with `dst`, writes each
    /// value there: what the scalar loops of `softmax_row` / `log_sum_exp_row` compute.
    ///
    /// # Safety
    /// `src` (and `dst`) must be valid for `len` values, and the CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_sum(
        src: *const f32,
        dst: Option<*mut f32>,
        len: usize,
        max: f32,
    ) -> [f32; 8] {
        let m = _mm256_set1_ps(max);
        let mut acc = _mm256_setzero_ps();
        let full = len / 8 * 8;
        let mut i = 0;
        while i < full {
            let e = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(src.add(i)), m));
            if let Some(d) = dst {
                _mm256_storeu_ps(d.add(i), e);
            }
            acc = _mm256_add_ps(acc, e);
            i += 8;
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        for (j, lane) in lanes.iter_mut().enumerate().take(len - full) {
            let e = super::exp_neg(*src.add(full + j) - max);
            if let Some(d) = dst {
                *d.add(full + j) = e;
            }
            *lane += e;
        }
        lanes
    }
}

#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    // eight independent lanes so the compiler vectorises the reductions (float adds are not reassociated)
    let Some(max) = softmax_max(row) else {
        row.fill(f32::NAN);
        return;
    };
    for v in row.iter_mut() {
        *v = exp_neg(*v - max);
    }
    // element j always lands in lane j % 8, tail included, so padding a row with masked (zero) keys leaves
    // the sum bit-identical: a padded batch gives the same patterns as each sequence alone
    let mut lanes = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    for (l, &v) in lanes.iter_mut().zip(tail) {
        *l += v;
    }
    let inv = 1.0 / lanes.iter().sum::<f32>();
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// `ln 2` split in two for [`exp_neg`]'s argument reduction (Cephes).
const EXP_LN2_HI: f32 = 0.693_359_4;
const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' `expf` polynomial, highest power first.
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `e^x` for `x <= 0` in f32 (Cephes' `expf` reduction and polynomial, relative error about 1e-7); 0 below
/// -87.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    let xc = x.max(-87.0);
    let n = (xc * std::f32::consts::LOG2_E + 0.5).floor();
    let r = n.mul_add(-EXP_LN2_LO, n.mul_add(-EXP_LN2_HI, xc));
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    let e = (p * r).mul_add(r, r) + 1.0;
    // 2^n from the bits of 2^23 + 127 + n (an integer in the mantissa), shifted into the exponent field:
    // `n as i32` would saturate, which keeps the compiler from vectorising the conversion
    let scale = f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23);
    if x < -87.0 {
        0.0
    } else {
        e * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_float_precision() {
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (got, want) = (exp_neg(x), f64::from(x).exp());
            assert!(
                ((f64::from(got) - want) / want).abs() < 2.5e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_neg(-100.0), 0.0);
    }

    #[test]
    fn softmax_equals_burns_on_flex() {
        let device = Device::flex();
        let xs: Vec<f32> = (0..6 * 37)
            .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0)
            .collect();
        let mut xs = xs;
        xs[5] = -1e9; // a masked key
        xs[37..74].iter_mut().for_each(|v| *v = f32::MIN); // a fully masked row: uniform, as in burn
        let x = Tensor::<3>::from_data(TensorData::new(xs, [2, 3, 37]), &device);
        let fast: Vec<f32> = softmax_last(x.clone()).into_data().try_into_vec().unwrap();
        let burn: Vec<f32> = activation::softmax(x, 2)
            .into_data()
            .try_into_vec()
            .unwrap();
        for (a, b) in fast.iter().zip(&burn) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert_eq!(fast[5], 0.0);
        for row in fast.chunks(37) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn softmax_rows_burn_makes_nan_are_nan() {
        // every score -inf (a hook masking every key), a NaN score, an infinite score; then a normal row,
        // at widths with and without an eight-value tail, on the portable and (where the CPU has it) AVX2 path
        for width in [5, 8, 13, 37] {
            let mut xs: Vec<f32> = (0..4 * width).map(|i| (i % 7) as f32 / 3.0).collect();
            xs[..width].fill(f32::NEG_INFINITY);
            xs[width + width / 2] = f32::NAN;
            xs[2 * width + 1] = f32::INFINITY;
            let device = Device::flex();
            let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [4, width]), &device);
            let burn: Vec<f32> = activation::softmax(x, 1)
                .into_data()
                .try_into_vec()
                .unwrap();
            let mut fast = xs.clone();
            softmax_rows_in_place(&mut fast, width);
            let mut portable = xs;
            for row in portable.chunks_mut(width) {
                softmax_row(row);
            }
            for got in [&fast, &portable] {
                for r in 0..3 {
                    let row = &got[r * width..(r + 1) * width];
                    assert!(row.iter().all(|v| v.is_nan()), "row {r}: {row:?}");
                    // burn: NaN where PyTorch is too (its infinite-score row is NaN at least there)
                    assert!(burn[r * width..(r + 1) * width].iter().any(|v| v.is_nan()));
                }
                for (a, b) in got[3 * width..].iter().zip(&burn[3 * width..]) {
                    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn exp_f64_matches_std() {
        for i in 0..=194_000 {
            let x = 1.0 - f64::from(i) * 3.6e-3;
            let (got, want) = (exp_f64(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 1e-12,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_f64(-800.0), 0.0);
    }

    #[test]
    fn gelu_rounds_like_the_f32_formula_with_an_exact_erf() {
        let xs: Vec<f32> = (-2_000_000..=2_000_000)
            .map(|i| i as f32 * 6e-6)
            .chain([-30.0, -12.5, -9.0, 9.0, 40.0, 1e-30, -1e-30, 0.0])
            .collect();
        let mut got = xs.clone();
        gelu_in_place(&mut got);
        let mut differ = 0;
        for (&x, &g) in xs.iter().zip(&got) {
            let erf = libm::erf(f64::from(x / std::f32::consts::SQRT_2)) as f32;
            let want = 0.5 * x * (1.0 + erf);
            if g != want {
                differ += 1;
                // a different rounding of erf moves 1 + erf by one ulp (2.4e-7 in [1, 2))
                assert!(
                    (g - want).abs() <= 0.5 * x.abs() * 2.5e-7,
                    "gelu({x}) = {g}, want {want}"
                );
            }
        }
        println!("{differ} of {} differ in the last bit", xs.len());
        assert!(differ * 1000 < xs.len(), "{differ} of {} differ", xs.len());
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn gelu_is_the_same_to_the_bit_with_every_instruction_set() {
        // in order (blocks all near or all far from 0) and interleaved (near and far values mixed in a
        // block, as in activations), with the special values
        let mut xs: Vec<f32> = (-300_000..=300_000).map(|i| i as f32 * 4e-5).collect();
        xs.extend((0..600_001usize).map(|i| ((i * 7919) % 600_001) as f32 * 4e-5 - 12.0));
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            2.1213202,
            -2.1213204,
        ]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut plain = xs.clone();
        plain.iter_mut().for_each(|v| *v = gelu_one(*v));
        let mut split = xs.clone();
        gelu_split(&mut split);
        assert_eq!(bits(&split), bits(&plain), "split");
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let mut v = xs.clone();
            // SAFETY: checked just above.
            unsafe { gelu_avx2(&mut v) };
            assert_eq!(bits(&v), bits(&plain), "avx2");
        }
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            let mut v = xs.clone();
            // SAFETY: checked just above.
            unsafe { gelu_avx512(&mut v) };
            assert_eq!(bits(&v), bits(&plain), "avx512");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn softmax_and_log_sum_exp_with_intrinsics_are_the_same_to_the_bit() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            println!("no AVX2 + FMA on this CPU: nothing to compare");
            return;
        }
        for width in [3usize, 8, 37, 1000] {
            // scores from -50 to 50, so some fall more than 87 below their row's maximum
            let xs: Vec<f32> = (0..width * 40)
                .map(|i| ((i * 7919) % 2001) as f32 * 0.05 - 50.0)
                .collect();
            let mut plain = xs.clone();
            plain.chunks_mut(width).for_each(softmax_row);
            let lse: Vec<f64> = xs.chunks(width).map(log_sum_exp_row).collect();
            let mut v = xs.clone();
            // SAFETY: checked above.
            unsafe { softmax_avx2(&mut v, width) };
            assert_eq!(v, plain, "softmax, width {width}");
            // SAFETY: checked above.
            let l: Vec<f64> = xs
                .chunks(width)
                .map(|r| unsafe { log_sum_exp_avx2(r) })
                .collect();
            assert_eq!(l, lse, "log-sum-exp, width {width}");
        }
    }

    #[test]
    fn gelu_equals_burns_on_flex_and_keeps_the_gradient_on_autodiff() {
        let xs: Vec<f32> = (0..4 * 33).map(|i| (i as f32 * 0.61).sin() * 6.0).collect();
        let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [4, 33]), &Device::flex());
        let fast: Vec<f32> = gelu(x.clone()).into_data().try_into_vec().unwrap();
        let burn: Vec<f32> = activation::gelu(x).into_data().try_into_vec().unwrap();
        for (a, b) in fast.iter().zip(&burn) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::from_data(TensorData::new(xs, [4, 33]), &device).require_grad();
        let grads = gelu(x.clone()).sum().backward();
        assert!(
            x.grad(&grads).is_some(),
            "no gradient through gelu on autodiff"
        );
    }

    #[test]
    fn gradients_flow_through_the_softmax_on_an_autodiff_device() {
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (0..2 * 9).map(|i| (i as f32 * 0.71).sin() * 3.0).collect();
        let w: Vec<f32> = (0..2 * 9).map(|i| (i as f32 * 0.37).cos()).collect();
        let grad_of = |fast: bool| -> Vec<f32> {
            let x =
                Tensor::<2>::from_data(TensorData::new(xs.clone(), [2, 9]), &device).require_grad();
            let w = Tensor::<2>::from_data(TensorData::new(w.clone(), [2, 9]), &device);
            let y = if fast {
                softmax_last(x.clone())
            } else {
                activation::softmax(x.clone(), 1)
            };
            let grads = (y * w).sum().backward();
            x.grad(&grads)
                .expect("the scores get a gradient")
                .into_data()
                .try_into_vec()
                .unwrap()
        };
        let (fast, burn) = (grad_of(true), grad_of(false));
        assert!(burn.iter().any(|g| g.abs() > 1e-3));
        for (a, b) in fast.iter().zip(&burn) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    /// burn's composition of the two norms, the reference for the fused ones.
    fn burn_norm(x: Tensor<3>, w: Tensor<1>, b: Option<Tensor<1>>, eps: f64) -> Tensor<3> {
        let d = x.dims()[2];
        match b {
            Some(b) => {
                let centred = x.clone() - x.mean_dim(2);
                let var = centred.clone().square().mean_dim(2);
                centred * var.add_scalar(eps).sqrt().recip() * w.reshape([1, 1, d])
                    + b.reshape([1, 1, d])
            }
            None => {
                let ms = x.clone().square().mean_dim(2);
                x * ms.add_scalar(eps).sqrt().recip() * w.reshape([1, 1, d])
            }
        }
    }

    #[test]
    fn norms_equal_burns_on_flex_in_one_thread_and_many() {
        let device = Device::flex();
        let d = 384;
        // 3 x 70 rows: past PAR_GRAIN, so the rows are split across threads; an offset row tests the
        // f64 accumulation (burn's f32 mean of values near 1e3 loses digits the fused pass keeps)
        let rows = 3 * 70;
        let mut xs: Vec<f32> = (0..rows * d)
            .map(|i| (i as f32 * 0.013).sin() * 4.0 + (i % 7) as f32)
            .collect();
        xs[..d]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = 1000.0 + (i as f32 * 0.1).cos());
        xs[d..2 * d].iter_mut().for_each(|v| *v = 2.5); // a constant row: zero variance, output = bias
        assert!(xs.len() > PAR_GRAIN);
        let w: Vec<f32> = (0..d)
            .map(|i| 1.0 + (i as f32 * 0.05).cos() * 0.3)
            .collect();
        let b: Vec<f32> = (0..d).map(|i| (i as f32 * 0.11).sin() * 0.2).collect();
        let x = Tensor::<3>::from_data(TensorData::new(xs.clone(), [3, 70, d]), &device);
        let wt = Tensor::<1>::from_data(TensorData::new(w.clone(), [d]), &device);
        let bt = Tensor::<1>::from_data(TensorData::new(b.clone(), [d]), &device);
        for centre in [true, false] {
            let (fast, want) = if centre {
                (
                    layer_norm(x.clone(), wt.clone(), bt.clone(), 1e-12),
                    burn_norm(x.clone(), wt.clone(), Some(bt.clone()), 1e-12),
                )
            } else {
                (
                    rms_norm(x.clone(), wt.clone(), 1e-6),
                    burn_norm(x.clone(), wt.clone(), None, 1e-6),
                )
            };
            let fast: Vec<f32> = fast.into_data().try_into_vec().unwrap();
            let want: Vec<f32> = want.into_data().try_into_vec().unwrap();
            // the offset row: burn's f32 mean is off by up to ~1e-4 of 1000, which the normalised value
            // (std 0.7) magnifies; compare it against an f64 computation instead
            let skip = if centre { d } else { 0 };
            for (i, (a, b)) in fast.iter().zip(&want).enumerate().skip(skip) {
                assert!(
                    (a - b).abs() < 2e-5 * (1.0 + b.abs()),
                    "centre {centre}, element {i}: {a} vs {b}"
                );
            }
            if centre {
                let row: Vec<f64> = xs[..d].iter().map(|&v| f64::from(v)).collect();
                let mean = row.iter().sum::<f64>() / d as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
                for i in 0..d {
                    let exact =
                        (row[i] - mean) / (var + 1e-12).sqrt() * f64::from(w[i]) + f64::from(b[i]);
                    assert!(
                        (f64::from(fast[i]) - exact).abs() < 1e-4,
                        "offset row {i}: {} vs {exact}",
                        fast[i]
                    );
                }
                assert!(fast[d..2 * d]
                    .iter()
                    .zip(&b)
                    .all(|(a, b)| (a - b).abs() < 1e-6));
            }
            // one thread and many agree to the bit
            let mut one = xs.clone();
            for row in one.chunks_mut(d) {
                norm_row(
                    row,
                    &w,
                    centre.then_some(&b[..]),
                    if centre { 1e-12 } else { 1e-6 },
                    centre,
                );
            }
            assert_eq!(
                one, fast,
                "centre {centre}: split across threads changed the result"
            );
        }
    }

    #[test]
    fn norms_keep_the_gradient_on_autodiff() {
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (0..2 * 3 * 8)
            .map(|i| (i as f32 * 0.71).sin() * 3.0)
            .collect();
        let x = Tensor::<3>::from_data(TensorData::new(xs, [2, 3, 8]), &device).require_grad();
        let w =
            Tensor::<1>::from_data(TensorData::new(vec![1.5f32; 8], [8]), &device).require_grad();
        let b = Tensor::<1>::from_data(TensorData::new(vec![0.1f32; 8], [8]), &device);
        let weights = Tensor::<3>::from_data(
            TensorData::new(
                (0..48)
                    .map(|i| (i as f32 * 0.3).cos())
                    .collect::<Vec<f32>>(),
                [2, 3, 8],
            ),
            &device,
        );
        let y = layer_norm(x.clone(), w.clone(), b, 1e-5) + rms_norm(x.clone(), w.clone(), 1e-6);
        let grads = (y * weights).sum().backward();
        assert!(x
            .grad(&grads)
            .is_some_and(|g| g.abs().sum().into_scalar::<f32>() > 1e-3));
        assert!(w.grad(&grads).is_some());
    }

    #[test]
    fn log_softmax_at_equals_burns_columns_on_flex_and_elsewhere() {
        // 40 rows x 1,100 columns: past PAR_GRAIN, so rows are split across threads; a row of large logits
        // checks that the max is taken out
        let (rows, width) = (40, 1100);
        let mut xs: Vec<f32> = (0..rows * width)
            .map(|i| (i as f32 * 0.0137).sin() * 9.0)
            .collect();
        xs[width..2 * width].iter_mut().for_each(|v| *v += 500.0);
        let cols = [0, 7, 1000, 1099, 7];
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [rows, width]), &device);
            let got = log_softmax_at(x.clone(), &cols).unwrap();
            let all: Vec<f32> = activation::log_softmax(x, 1)
                .into_data()
                .try_into_vec()
                .unwrap();
            assert_eq!(got.len(), rows * cols.len());
            for r in 0..rows {
                for (j, &c) in cols.iter().enumerate() {
                    let (a, b) = (got[r * cols.len() + j], all[r * width + c]);
                    assert!(
                        (a - b).abs() < 2e-5 * (1.0 + b.abs()),
                        "row {r} col {c}: {a} vs {b}"
                    );
                }
            }
        }
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.0f32; 6], [2, 3]), &Device::flex());
        let err = log_softmax_at(x, &[1, 3]).unwrap_err().to_string();
        assert!(
            err.contains("column 3") && err.contains("3 columns"),
            "{err}"
        );
    }

    #[test]
    fn softmax_of_a_row_padded_with_masked_keys_is_bit_identical() {
        let row: Vec<f32> = (0..11).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let mut alone = row.clone();
        softmax_rows_in_place(&mut alone, 11);
        for width in [12, 16, 24, 37] {
            let mut padded = row.clone();
            padded.resize(width, -1e9);
            softmax_rows_in_place(&mut padded, width);
            assert_eq!(&padded[..11], &alone[..], "width {width}");
            assert!(padded[11..].iter().all(|&v| v == 0.0));
        }
    }

    /// `n` values spread over `[-scale, scale]` in a scrambled order, different for each seed.
    fn spread(n: usize, seed: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0) * scale)
            .collect()
    }

    /// The two gradient strategies an autodiff tensor can carry: without and with checkpointing.
    fn autodiff_devices() -> [Device; 2] {
        [
            Device::flex().autodiff(),
            Device::flex().autodiff().gradient_checkpointing(),
        ]
    }

    /// A tensor of [`spread`] values, tracked when `grad`.
    fn leaf<const D: usize>(
        dims: [usize; D],
        seed: usize,
        scale: f32,
        grad: bool,
        device: &Device,
    ) -> Tensor<D> {
        let n = dims.iter().product();
        let t = Tensor::<D>::from_data(TensorData::new(spread(n, seed, scale), dims), device);
        if grad {
            t.require_grad()
        } else {
            t
        }
    }

    /// A loss that weighs every output differently; through a transposed view of `y` when `strided`, so the
    /// backward pass gets a non-contiguous output gradient.
    fn weighted_loss(y: Tensor<3>, weights: &Tensor<3>, strided: bool) -> Tensor<1> {
        if strided {
            (y.swap_dims(1, 2) * weights.clone().swap_dims(1, 2)).sum()
        } else {
            (y * weights.clone()).sum()
        }
    }

    /// A leaf's gradient from the fused pass against burn's: present in both exactly when `expected`, and
    /// equal to `tol` ([`max_rel_diff`]).
    fn check_grad<const D: usize>(
        name: &str,
        expected: bool,
        (got, reference): (Option<Tensor<D>>, Option<Tensor<D>>),
        tol: f32,
        what: &str,
    ) {
        assert_eq!(got.is_some(), expected, "{name} has a gradient: {what}");
        assert_eq!(
            reference.is_some(),
            expected,
            "{name} has a reference gradient: {what}"
        );
        if let (Some(g), Some(r)) = (got, reference) {
            assert_eq!(g.dims(), r.dims(), "{name}, {what}");
            let diff = max_rel_diff(g, r);
            assert!(diff < tol, "{name}'s gradient: {diff}, {what}");
        }
    }

    fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
        let v: Vec<f32> = t.into_data().try_into_vec().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    #[test]
    fn linear_is_bit_identical_to_burns_product_and_add() {
        let device = Device::flex();
        let vals = |n: usize, seed: usize| spread(n, seed, 0.8);
        // (rows per batch, batches, d_in, d_out): small (one thread), and past flex's threshold for threads
        // (single rows and columns take gemm's matrix-vector paths)
        for (s, bsz, k, n) in [
            (3, 2, 5, 7),
            (1, 1, 1, 1),
            (1, 1, 64, 300),
            (5, 3, 64, 1),
            (64, 4, 192, 200),
            (112, 3, 384, 96),
        ] {
            let x =
                Tensor::<3>::from_data(TensorData::new(vals(bsz * s * k, 1), [bsz, s, k]), &device);
            let w = Tensor::<2>::from_data(TensorData::new(vals(k * n, 2), [k, n]), &device);
            let b = Tensor::<1>::from_data(TensorData::new(vals(n, 3), [n]), &device);
            let case = format!("{bsz}x{s}x{k} @ {k}x{n}");
            assert!(
                flex_linear(&x, &w, Some(&b), false).is_some(),
                "{case}: fused path not taken"
            );
            // with the ReLU applied in the product's buffer
            assert_eq!(
                bits(linear_relu(x.clone(), &w, Some(&b))),
                bits(activation::relu(linear_burn(x.clone(), &w, Some(&b)))),
                "{case}, ReLU after the bias"
            );
            assert_eq!(
                bits(linear_relu(x.clone(), &w, None)),
                bits(activation::relu(linear_burn(x.clone(), &w, None))),
                "{case}, ReLU"
            );
            assert_eq!(
                bits(linear(x.clone(), &w, Some(&b))),
                bits(linear_burn(x.clone(), &w, Some(&b))),
                "{case}, with bias"
            );
            assert_eq!(
                bits(linear(x.clone(), &w, None)),
                bits(linear_burn(x.clone(), &w, None)),
                "{case}, no bias"
            );
            // the weight as a transposed view (the tied LM head) and as a column slice (an offset)
            let wt = Tensor::<2>::from_data(TensorData::new(vals(k * n, 4), [n, k]), &device)
                .transpose();
            assert_eq!(
                bits(linear(x.clone(), &wt, None)),
                bits(linear_burn(x.clone(), &wt, None)),
                "{case}, transposed weight"
            );
            let wide =
                Tensor::<2>::from_data(TensorData::new(vals(k * (n + 3), 5), [k, n + 3]), &device);
            let ws = wide.slice([0..k, 2..n + 2]);
            assert_eq!(
                bits(linear(x.clone(), &ws, Some(&b))),
                bits(linear_burn(x.clone(), &ws, Some(&b))),
                "{case}, sliced weight"
            );
            // two-dimensional input
            let x2 = x.clone().reshape([bsz * s, k]);
            assert_eq!(
                bits(linear(x2.clone(), &w, Some(&b))),
                bits(linear_burn(x2, &w, Some(&b)))
            );
            // a non-contiguous input falls back to burn and agrees too
            let xt =
                Tensor::<3>::from_data(TensorData::new(vals(bsz * s * k, 6), [s, bsz, k]), &device)
                    .swap_dims(0, 1);
            assert_eq!(
                bits(linear(xt.clone(), &w, Some(&b))),
                bits(linear_burn(xt, &w, Some(&b))),
                "{case}, non-contiguous input"
            );
        }
    }

    #[test]
    fn linear_keeps_the_gradient_on_autodiff() {
        let device = Device::flex().autodiff();
        let x = Tensor::<3>::from_data(
            TensorData::new(vec![0.5f32, -1.0, 2.0, 0.25], [1, 2, 2]),
            &device,
        )
        .require_grad();
        let w = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, -3.0, 0.5], [2, 2]),
            &device,
        )
        .require_grad();
        let b =
            Tensor::<1>::from_data(TensorData::new(vec![0.1f32, 0.2], [2]), &device).require_grad();
        let grads = linear(x.clone(), &w, Some(&b)).sum().backward();
        // d/dx sum(x w + b) = rows of w summed; d/dw = column sums of x; d/db = number of rows
        let gx: Vec<f32> = x.grad(&grads).unwrap().into_data().try_into_vec().unwrap();
        let gw: Vec<f32> = w.grad(&grads).unwrap().into_data().try_into_vec().unwrap();
        let gb: Vec<f32> = b.grad(&grads).unwrap().into_data().try_into_vec().unwrap();
        assert_eq!(gx, vec![3.0, -2.5, 3.0, -2.5]);
        assert_eq!(gw, vec![2.5, 2.5, -0.75, -0.75]);
        assert_eq!(gb, vec![2.0, 2.0]);
    }

    #[test]
    fn rms_norm_on_autodiff_gives_burns_values_and_gradients() {
        for ad in autodiff_devices() {
            // (batch, positions, width, which inputs want gradients [x, w]); sizes past the fused pass's
            // task size (several tasks, so `w`'s gradient is summed over partial sums), single rows and a width
            // of 1; every other case reaches the norm's backward pass with a non-contiguous output gradient
            let cases = [
                (2, 3, 8, [true, true]),
                (32, 64, 256, [true, true]),
                (1, 1, 5, [true, true]),
                (3, 7, 1, [true, true]),
                (4, 9, 33, [false, true]),
                (4, 9, 33, [true, false]),
                (2, 700, 64, [true, true]),
            ];
            for (case, (bsz, s, d, want)) in cases.into_iter().enumerate() {
                let strided_dy = case % 2 == 1;
                let x0 = leaf([bsz * s, d], 1, 2.0, want[0], &ad);
                let w0 = leaf([d], 2, 1.5, want[1], &ad);
                let weights = leaf([bsz, s, d], 3, 1.0, false, &ad);
                let what = format!("{bsz}x{s}x{d}, {want:?}, strided dy {strided_dy}");
                let x = || x0.clone().reshape([bsz, s, d]);
                // T5's eps, except at width 1, where x's true gradient is about eps / x^2 and would pass
                // any relative bound
                let eps = if d == 1 { 0.5 } else { 1e-6 };
                let fused = norm_grad::rms_norm(&x(), &w0, eps).expect("fused on autodiff");
                let want_y = rms_norm_burn(x(), &w0, eps);
                let diff = max_rel_diff(fused.clone(), want_y.clone());
                assert!(diff < 1e-6, "values: {diff}, {what}");
                let got = weighted_loss(fused, &weights, strided_dy).backward();
                let reference = weighted_loss(want_y, &weights, strided_dy).backward();
                let gx = (x0.grad(&got), x0.grad(&reference));
                check_grad("x", want[0], gx, 1e-5, &what);
                let gw = (w0.grad(&got), w0.grad(&reference));
                check_grad("w", want[1], gw, 1e-5, &what);
            }
        }
    }

    #[test]
    fn linear_relu_treats_zeros_and_nans_as_burns_relu_does() {
        // products of 0, NaN, positive and negative values, plus a bias of -0 on some columns
        let w = vec![0.0f32, -0.0, f32::NAN, 2.0, -3.0, 0.0];
        let bias = vec![-0.0f32, -0.0, 0.0, 0.0, 1.0, 0.0];
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x0 = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, -0.5], [2, 1]), &device);
            let w0 = Tensor::<2>::from_data(TensorData::new(w.clone(), [1, 6]), &device);
            let b0 = Tensor::<1>::from_data(TensorData::new(bias.clone(), [6]), &device);
            let (x0, w0, b0) = if device.is_autodiff() {
                (x0.require_grad(), w0.require_grad(), b0.require_grad())
            } else {
                (x0, w0, b0)
            };
            for b in [None, Some(&b0)] {
                let what = format!("autodiff {}, bias {}", device.is_autodiff(), b.is_some());
                // each pass its own view of the leaf (burn's tape is consumed by a backward pass)
                let x = || x0.clone().reshape([1, 2, 1]);
                let fused = linear_relu(x(), &w0, b);
                let reference = activation::relu(linear_burn(x(), &w0, b));
                assert_eq!(
                    bits(fused.clone()),
                    bits(reference.clone()),
                    "values: {what}"
                );
                if device.is_autodiff() {
                    let weights = Tensor::<3>::from_data(
                        TensorData::new(spread(12, 1, 1.0), [1, 2, 6]),
                        &device,
                    );
                    let got = (fused * weights.clone()).sum().backward();
                    let want = (reference * weights).sum().backward();
                    for (name, g, r) in [
                        ("x", x0.grad(&got), x0.grad(&want)),
                        ("w", w0.grad(&got), w0.grad(&want)),
                    ] {
                        let (g, r) = (g.expect("a gradient"), r.expect("a gradient"));
                        // NaN where the NaN weight multiplies (on both sides), equal elsewhere
                        let diff = max_rel_diff(g, r);
                        assert!(diff < 1e-6, "{name}'s gradient: {diff}, {what}");
                    }
                }
            }
        }
    }

    #[test]
    fn linear_on_autodiff_gives_burns_values_and_gradients() {
        for ad in autodiff_devices() {
            linear_gradients_on(&ad);
        }
    }

    fn linear_gradients_on(ad: &Device) {
        // (batch, rows, d_in, d_out, bias, weight stored transposed, which inputs want gradients [x, w, b]);
        // sizes past flex's threshold for threads, single rows and columns (gemm's matrix-vector paths); every
        // other case reaches the product with a non-contiguous output gradient (the loss reads a transposed view)
        let cases = [
            (2, 3, 5, 7, true, false, [true, true, true]),
            (1, 1, 64, 300, false, true, [true, true, false]),
            (4, 64, 96, 200, true, true, [true, true, true]),
            (2, 5, 8, 1, true, false, [true, true, true]),
            (3, 4, 1, 6, false, false, [true, true, false]),
            (2, 3, 5, 7, true, false, [false, true, true]),
            (2, 3, 5, 7, true, true, [true, false, false]),
        ];
        // each case without and with a ReLU after the product (`linear_relu`)
        let cases = cases.into_iter().flat_map(|c| [(c, false), (c, true)]);
        for (case, ((bsz, s, k, n, with_bias, transposed, want), relu)) in cases.enumerate() {
            let strided_dy = (case / 2) % 2 == 1;
            let x0 = leaf([bsz * s, k], 1, 0.8, want[0], ad);
            let w_dims = if transposed { [n, k] } else { [k, n] };
            let w0 = leaf(w_dims, 2, 0.8, want[1], ad);
            let b0 = leaf([n], 3, 0.5, want[2], ad);
            let what = format!(
                "{bsz}x{s}x{k} -> {n}, bias {with_bias}, transposed {transposed}, {want:?}, \
                 strided dy {strided_dy}, ReLU {relu}"
            );
            // each pass its own views of the leaves (burn's tape is consumed by a backward pass)
            let inputs = || {
                let x = x0.clone().reshape([bsz, s, k]);
                let w = if transposed {
                    w0.clone().transpose()
                } else {
                    w0.clone()
                };
                (x, w)
            };
            let bias = with_bias.then_some(&b0);
            let weights = leaf([bsz, s, n], 4, 1.0, false, ad);
            let (x, w) = inputs();
            let fused = linear_grad::linear(&x, &w, bias, relu).expect("fused on autodiff");
            let (x, w) = inputs();
            let want_y = linear_burn(x, &w, bias);
            let want_y = if relu {
                activation::relu(want_y)
            } else {
                want_y
            };
            let diff = max_rel_diff(fused.clone(), want_y.clone());
            assert!(diff < 1e-6, "values: {diff}, {what}");
            let got = weighted_loss(fused, &weights, strided_dy).backward();
            let reference = weighted_loss(want_y, &weights, strided_dy).backward();
            let gx = (x0.grad(&got), x0.grad(&reference));
            check_grad("x", want[0], gx, 1e-5, &what);
            let gw = (w0.grad(&got), w0.grad(&reference));
            check_grad("w", want[1], gw, 1e-5, &what);
            let gb = (b0.grad(&got), b0.grad(&reference));
            check_grad("b", want[2] && with_bias, gb, 1e-5, &what);
        }
        // a 2-D input (BERT's `forward2`), through the public entry point
        let x = leaf([6, 5], 5, 0.8, true, ad);
        let w = leaf([5, 3], 6, 0.8, true, ad);
        let b = leaf([3], 7, 0.5, true, ad);
        let got = linear(x.clone(), &w, Some(&b)).sum().backward();
        let reference = linear_burn(x.clone(), &w, Some(&b)).sum().backward();
        check_grad("x", true, (x.grad(&got), x.grad(&reference)), 1e-5, "2-D");
        check_grad("w", true, (w.grad(&got), w.grad(&reference)), 1e-5, "2-D");
        check_grad("b", true, (b.grad(&got), b.grad(&reference)), 1e-5, "2-D");
    }

    /// burn's operations that [`attention_heads`] replaces.
    fn attention_reference(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        bias: Tensor<4>,
        divisor: Option<f64>,
    ) -> Tensor<3> {
        let [b, h, lq, dh] = q.dims();
        let scores = q.matmul(k.swap_dims(2, 3));
        let scores = match divisor {
            Some(d) => scores.div_scalar(d) + bias,
            None => scores + bias,
        };
        softmax_last(scores)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, lq, h * dh])
    }

    #[test]
    fn attention_heads_is_bit_identical_to_burns_operations() {
        let device = Device::flex();
        let vals = |n: usize, seed: usize| spread(n, seed, 2.0);
        let t = |dims: [usize; 4], seed| {
            Tensor::<4>::from_data(
                TensorData::new(vals(dims.iter().product(), seed), dims),
                &device,
            )
        };
        // BERT: heads as projected, `[batch, pos, head, d_head]`, seen as `[batch, head, pos, d_head]` views;
        // a padding bias `[batch | 1, 1, 1, pos]`; the scores divided by sqrt(d_head)
        // (batch, positions, heads, d_head, one bias row per sequence); the first case has one position: each
        // head's output is a single row
        for (b, s, h, dh, per_seq) in [
            (3, 1, 2, 4, true),
            (2, 7, 3, 4, true),
            (3, 112, 12, 32, true),
            (2, 5, 2, 8, false),
        ] {
            let heads = |seed| t([b, s, h, dh], seed).swap_dims(1, 2);
            let (q, k, v) = (heads(1), heads(2), heads(3));
            let bb = if per_seq { b } else { 1 };
            // sequence r has its last r positions masked (BERT's padding bias)
            let bias: Vec<f32> = (0..bb * s)
                .map(|i| if i % s + i / s >= s { -10000.0 } else { 0.0 })
                .collect();
            let bias = Tensor::<4>::from_data(TensorData::new(bias, [bb, 1, 1, s]), &device);
            let scale = Some((dh as f64).sqrt());
            let fused = attention_heads(&q, &k, &v, &bias, scale).expect("fused path taken");
            let want = attention_reference(q, k, v, bias, scale);
            assert_eq!(bits(fused), bits(want), "{b}x{s}, {h} heads of {dh}");
        }
        // T5: no division; biases with heads and query positions (relative positions plus the mask, or
        // broadcast over the batch), cached keys/values stored `[batch, head, len, d_head]`, a decoding step
        // (one query position), a single key
        // (batch, q_len, k_len, heads, d_head, bias dims, keys/values as views of projections)
        for (b, lq, lk, h, dh, bd, kv_views) in [
            (2, 9, 9, 4, 8, [2, 4, 9, 9], true),
            (3, 9, 9, 4, 8, [1, 4, 9, 9], true),
            (3, 1, 6, 4, 16, [1, 4, 1, 6], false),
            (4, 3, 11, 2, 8, [4, 1, 1, 11], true),
            (2, 5, 1, 3, 4, [1, 3, 5, 1], false),
            (2, 70, 70, 4, 32, [2, 4, 70, 70], true),
        ] {
            let q = t([b, lq, h, dh], 4).swap_dims(1, 2);
            let kv = |seed| {
                if kv_views {
                    t([b, lk, h, dh], seed).swap_dims(1, 2)
                } else {
                    t([b, h, lk, dh], seed)
                }
            };
            let (k, v) = (kv(5), kv(6));
            let bias = t(bd, 7).mul_scalar(3.0);
            let fused = attention_heads(&q, &k, &v, &bias, None).expect("fused path taken");
            let want = attention_reference(q, k, v, bias, None);
            assert_eq!(
                bits(fused),
                bits(want),
                "{b}x{lq}x{lk}, {h} heads of {dh}, bias {bd:?}"
            );
        }
        // not fused: a bias of other dimensions, a bias strided along the keys, heads of width 1 (gemm would
        // see other strides than burn gives it)
        let q = t([2, 2, 3, 4], 1);
        assert!(attention_heads(&q, &q, &q, &t([2, 2, 3, 2], 2), None).is_none());
        assert!(attention_heads(&q, &q, &q, &t([3, 1, 1, 3], 2), None).is_none());
        let strided = t([1, 1, 3, 3], 2).swap_dims(2, 3);
        assert!(attention_heads(&q, &q, &q, &strided, None).is_none());
        let q1 = t([2, 2, 3, 1], 1);
        assert!(attention_heads(&q1, &q1, &q1, &t([2, 1, 1, 3], 2), Some(1.0)).is_none());
    }

    /// Largest `|a - b| / max(1, |b|)` over two tensors of the same shape.
    fn max_rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let a: Vec<f32> = a.into_data().try_into_vec().unwrap();
        let b: Vec<f32> = b.into_data().try_into_vec().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| {
                let d = (x - y).abs() / y.abs().max(1.0);
                // a NaN on either side is a difference, not something `max` may skip
                if d.is_nan() && !(x.is_nan() && y.is_nan()) {
                    f32::INFINITY
                } else if d.is_nan() {
                    0.0
                } else {
                    d
                }
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn attention_heads_on_autodiff_gives_burns_values_and_gradients() {
        for ad in autodiff_devices() {
            attention_gradients_on(&ad);
        }
    }

    fn attention_gradients_on(ad: &Device) {
        // (batch, q_len, k_len, heads, d_head, bias dims, divisor, keys/values as views of projections,
        // whether the bias wants a gradient, whether the keys do): T5's encoder (a relative-position bias
        // shared by the batch), a decoding step over a mask, BERT (divided, a padding bias), a single key, a
        // bias per sequence and head, one sequence and one head with untracked keys, and a size past one
        // cache line per row
        for (b, lq, lk, h, dh, bd, divisor, views, bias_grad, k_grad) in [
            (2, 9, 9, 4, 8, [1, 4, 9, 9], None, true, true, true),
            (3, 1, 6, 4, 16, [3, 1, 1, 6], None, false, false, true),
            (2, 7, 7, 3, 4, [2, 1, 1, 7], Some(2.0), true, true, true),
            (2, 5, 1, 3, 4, [1, 3, 5, 1], None, false, true, true),
            (
                2,
                6,
                5,
                2,
                8,
                [2, 2, 6, 5],
                Some(8f64.sqrt()),
                false,
                true,
                true,
            ),
            (1, 4, 6, 1, 8, [1, 1, 4, 6], None, true, true, false),
            (2, 33, 40, 4, 32, [2, 4, 33, 40], None, true, true, true),
        ] {
            let q0 = leaf([b, lq, h, dh], 4, 2.0, true, ad);
            let kv = |seed, grad| {
                if views {
                    leaf([b, lk, h, dh], seed, 2.0, grad, ad)
                } else {
                    leaf([b, h, lk, dh], seed, 2.0, grad, ad)
                }
            };
            let (k0, v0) = (kv(5, k_grad), kv(6, true));
            let as_heads = |t: &Tensor<4>, views| {
                if views {
                    t.clone().swap_dims(1, 2)
                } else {
                    t.clone()
                }
            };
            // each pass its own views of the leaves (burn's tape is consumed by a backward pass)
            let heads = || {
                (
                    as_heads(&q0, true),
                    as_heads(&k0, views),
                    as_heads(&v0, views),
                )
            };
            let bias = leaf(bd, 7, 6.0, bias_grad, ad);
            let what =
                format!("{b}x{lq}x{lk}, {h} heads of {dh}, bias {bd:?}, divisor {divisor:?}");
            let (q, k, v) = heads();
            let fused = attention_heads(&q, &k, &v, &bias, divisor).expect("fused on autodiff");
            let (q, k, v) = heads();
            let want = attention_reference(q, k, v, bias.clone(), divisor);
            // burn's softmax on autodiff is its own composition, not the fused one: equal to rounding
            let diff = max_rel_diff(fused.clone(), want.clone());
            assert!(diff < 1e-6, "values: {diff}, {what}");
            // a loss that weighs every output differently
            let w = leaf([b, lq, h * dh], 9, 1.0, false, ad);
            let got = weighted_loss(fused, &w, false).backward();
            let reference = weighted_loss(want, &w, false).backward();
            for (name, t, tracked) in [
                ("q", &q0, true),
                ("k", &k0, k_grad),
                ("v", &v0, true),
                ("bias", &bias, bias_grad),
            ] {
                check_grad(
                    name,
                    tracked,
                    (t.grad(&got), t.grad(&reference)),
                    2e-5,
                    &what,
                );
            }
        }
    }
}
