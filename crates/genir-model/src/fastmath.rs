//! A fused attention softmax for inference on the `flex` (CPU) backend, used by BERT attention. (T5 attention
//! keeps burn's: with this one there, genir-interp's finite-difference check of attribution patching was 4%
//! off, which is not understood yet.)
//!
//! burn composes softmax from four tensor operations (max, `exp`, sum, divide: four passes over the scores,
//! four fresh buffers, and a scalar `expf` per element). [`softmax_last`] does it in one vectorised pass per
//! row (AVX2 + FMA when the CPU has them) on the host buffer, to within 1e-6 of burn's result (tested).
//! A row padded with masked keys gives bit-identical probabilities to the unpadded row, so a padded batch
//! and each sequence alone agree exactly. On any other device, and on an autodiff device (training needs
//! the gradient), it is burn's `activation::softmax`, as it is everywhere when the environment variable
//! `GENIR_FLEX_FASTMATH=0` is set (read once per process).
//!
//! Not here: a vectorised exact GELU. One was written (erfc in f64, within one f32 ulp of libm on real
//! activations, 11-17% off a MiniLM forward) and left out of this change: genir-mechir's sweeps then disagreed
//! with their unbatched reference, because the sweep re-ran MLPs with its own copy of the activation function
//! (burn's GELU). That copy is gone (`bert::activate` is the one function); the fast GELU can come back.

use burn::prelude::*;
use burn::tensor::activation;

/// Whether the fused path is on (`GENIR_FLEX_FASTMATH` is not `0`).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("GENIR_FLEX_FASTMATH").map_or(true, |v| v.trim() != "0"))
}

/// Softmax over the last dimension (attention patterns), fused on `flex` without autodiff (see the module docs).
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        let device = x.device();
        let width = x.dims()[D - 1];
        if enabled()
            && device == Device::flex()
            && x.dtype() == burn::tensor::DType::F32
            && width > 0
        {
            let mut data = x.into_data();
            let fast = match data.as_mut_slice::<f32>() {
                Ok(values) => {
                    softmax_rows_in_place(values, width);
                    true
                }
                Err(_) => false,
            };
            let x = Tensor::from_data(data, &device);
            return if fast {
                x
            } else {
                activation::softmax(x, D - 1)
            };
        }
    }
    activation::softmax(x, D - 1)
}

/// Softmax of every row of `width` values of a host buffer, in place (`x - max` first, as burn and PyTorch
/// do, so large scores do not overflow; a row of equal masked scores becomes uniform, as there).
pub fn softmax_rows_in_place(values: &mut [f32], width: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `softmax_avx2` is compiled for (checked just above).
        unsafe { softmax_avx2(values, width) };
        return;
    }
    for row in values.chunks_mut(width.max(1)) {
        softmax_row(row);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(values: &mut [f32], width: usize) {
    for row in values.chunks_mut(width.max(1)) {
        softmax_row(row);
    }
}

#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    // eight independent lanes so the compiler vectorises the reductions (float adds are not reassociated)
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
    let max = lanes.iter().fold(tail, |m, &v| m.max(v));
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

/// `e^x` for `x <= 0` in f32 (Cephes' `expf` reduction and polynomial, relative error about 1e-7); 0 below
/// -87.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.max(-87.0);
    let n = (xc * LOG2E + 0.5).floor();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    let mut p = 1.987_569_1e-4_f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = p.mul_add(r, c);
    }
    let e = (p * r).mul_add(r, r) + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
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
}
