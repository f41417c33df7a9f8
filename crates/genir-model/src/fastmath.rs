//! A fused attention softmax for inference on the `flex` (CPU) backend, used by BERT and T5 attention.
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
            && !device.is_autodiff()
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

/// Exact (erf) GELU, `x/2 (1 + erf(x/sqrt 2))`, fused on `flex` without autodiff (see the module docs).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        let device = x.device();
        if enabled()
            && device == Device::flex()
            && !device.is_autodiff()
            && x.dtype() == burn::tensor::DType::F32
        {
            let mut data = x.into_data();
            let fast = match data.as_mut_slice::<f32>() {
                Ok(values) => {
                    gelu_in_place(values);
                    true
                }
                Err(_) => false,
            };
            let x = Tensor::from_data(data, &device);
            return if fast { x } else { activation::gelu(x) };
        }
    }
    activation::gelu(x)
}

/// Exact GELU of every value of a host buffer, in place.
pub fn gelu_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `gelu_avx2` is compiled for (checked just above).
        unsafe { gelu_avx2(values) };
        return;
    }
    for v in values.iter_mut() {
        *v = gelu_one(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = gelu_one(*v);
    }
}

/// `gelu(x) = x/2 (1 + erf(x/sqrt 2))` with the f32 operations in the order burn's and PyTorch's GELU use
/// (so it agrees with them to the last bit wherever their `erf` is correctly rounded), and `erf` itself in
/// f64: its Maclaurin series below |z| = 1.5, `1 - erfc` from Numerical Recipes' fit (fractional error
/// 1.2e-7, at most 4e-9 absolute there) above. Branch-free so the loop vectorises.
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    let z = f64::from(x / std::f32::consts::SQRT_2);
    let series = std::f64::consts::FRAC_2_SQRT_PI * z * {
        let u = z * z;
        let mut s = ERF_SERIES[ERF_SERIES.len() - 1];
        for &c in ERF_SERIES.iter().rev().skip(1) {
            s = s.mul_add(u, c);
        }
        s
    };
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
