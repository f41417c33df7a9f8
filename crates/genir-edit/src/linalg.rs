//! Small dense linear algebra on host vectors: L-BFGS for one `d_model`-sized row and IncDSI's hinge
//! objective over contiguous `f32` constraint rows ([`Hinges`], [`HingeObjective`]), Cholesky solves for the
//! `d_ff x d_ff` key covariance of the rank-one MLP edit. Matrices are row-major `f64` unless said otherwise;
//! dot products use fixed partial sums (vectorised, deterministic).

/// Lanes of the partial sums of the dot products: independent accumulators let the compiler vectorise a
/// reduction that strict floating-point order would otherwise keep scalar (one add per cycle of latency).
const LANES: usize = 8;

/// Dot product (eight partial sums in a fixed order: deterministic, not the sequential sum's rounding).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    lane_dot(a, b)
}

/// `f32` dot product in `f32` (eight partial sums, as [`dot`]).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    lane_dot(a, b)
}

/// Cosine of two `f32` vectors (in `f64`); 0 when either is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let ab = f64::from(dot_f32(a, b));
    let n = f64::from(dot_f32(a, a)).sqrt() * f64::from(dot_f32(b, b)).sqrt();
    if n > 0.0 {
        ab / n
    } else {
        0.0
    }
}

/// `sum a_i b_i` over [`LANES`] partial sums, reduced pairwise as [`reduce`], then the tail.
#[inline(always)]
fn lane_dot<T>(a: &[T], b: &[T]) -> T
where
    T: Copy + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T> + std::iter::Sum,
{
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::default(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: T = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] = acc[l] + x[l] * y[l];
        }
    }
    reduce(acc) + tail
}

/// Dot product of an `f32` row and an `f64` vector, in `f64` (every product exact as in `f64` arithmetic on
/// the widened row; sixteen partial sums in a fixed order). With AVX2 the same operations in the same order
/// run on 256-bit registers (no fused multiply-add), so the result is bit-identical on every x86-64 machine.
pub fn dot_mixed(a: &[f32], w: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { dot_mixed_avx2(a, w) };
    }
    dot_mixed_lanes(a, w)
}

/// [`dot_mixed_lanes`] with explicit 256-bit operations: accumulator `k` holds lanes `4k..4k + 4`, the
/// same products and additions in the same order (no fused multiply-add), so the result is bit-identical.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_mixed_avx2(a: &[f32], w: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    let n = a.len().min(w.len());
    let (a, w) = (&a[..n], &w[..n]);
    let (ca, cw) = (a.chunks_exact(MIXED_LANES), w.chunks_exact(MIXED_LANES));
    let tail = mixed_tail(ca.remainder(), cw.remainder());
    let mut acc = [_mm256_setzero_pd(); 4];
    for (x, y) in ca.zip(cw) {
        for (k, acc_k) in acc.iter_mut().enumerate() {
            // SAFETY: `x` has 16 f32 and `y` 16 f64 values (chunks_exact); unaligned loads of 4 each at 4k.
            let (xk, yk) = unsafe {
                (
                    _mm256_cvtps_pd(_mm_loadu_ps(x.as_ptr().add(4 * k))),
                    _mm256_loadu_pd(y.as_ptr().add(4 * k)),
                )
            };
            *acc_k = _mm256_add_pd(*acc_k, _mm256_mul_pd(xk, yk));
        }
    }
    // half[l] = acc[l] + acc[l + 8]: lanes 0..4 from accumulators 0 + 2, lanes 4..8 from 1 + 3
    let lo = _mm256_add_pd(acc[0], acc[2]);
    let hi = _mm256_add_pd(acc[1], acc[3]);
    let mut half = [0.0f64; LANES];
    // SAFETY: `half` holds 8 f64 values; two unaligned stores of 4.
    unsafe {
        _mm256_storeu_pd(half.as_mut_ptr(), lo);
        _mm256_storeu_pd(half.as_mut_ptr().add(4), hi);
    }
    reduce(half) + tail
}

fn mixed_tail(a: &[f32], w: &[f64]) -> f64 {
    a.iter().zip(w).map(|(x, y)| f64::from(*x) * y).sum()
}

/// Partial sums of [`dot_mixed`]: four 256-bit accumulators, enough to hide the latency of the additions.
const MIXED_LANES: usize = 16;

#[inline(always)]
fn dot_mixed_lanes(a: &[f32], w: &[f64]) -> f64 {
    let n = a.len().min(w.len());
    let (a, w) = (&a[..n], &w[..n]);
    let mut acc = [0.0f64; MIXED_LANES];
    let (ca, cw) = (a.chunks_exact(MIXED_LANES), w.chunks_exact(MIXED_LANES));
    let tail = mixed_tail(ca.remainder(), cw.remainder());
    for (x, y) in ca.zip(cw) {
        for l in 0..MIXED_LANES {
            acc[l] += f64::from(x[l]) * y[l];
        }
    }
    let mut half = [0.0f64; LANES];
    for l in 0..LANES {
        half[l] = acc[l] + acc[l + LANES];
    }
    reduce(half) + tail
}

/// `g += alpha * row` for an `f32` row (AVX2 when the CPU has it; the same result either way).
pub fn axpy_mixed(g: &mut [f64], alpha: f64, row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { axpy_mixed_avx2(g, alpha, row) };
        return;
    }
    axpy_mixed_plain(g, alpha, row);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn axpy_mixed_avx2(g: &mut [f64], alpha: f64, row: &[f32]) {
    axpy_mixed_plain(g, alpha, row);
}

#[inline(always)]
fn axpy_mixed_plain(g: &mut [f64], alpha: f64, row: &[f32]) {
    for (gj, rj) in g.iter_mut().zip(row) {
        *gj += alpha * f64::from(*rj);
    }
}

fn reduce<T: Copy + std::ops::Add<Output = T>>(acc: [T; LANES]) -> T {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Linear constraints on one `d`-sized row `w`: `w . row >= bound` (positives) or `w . row <= bound`
/// (negatives), the rows kept contiguous in the model's `f32`, the bounds in `f64`.
#[derive(Clone, Debug, Default)]
pub struct Hinges {
    d: usize,
    rows: Vec<f32>,
    bounds: Vec<f64>,
}

impl Hinges {
    /// No constraints on rows of size `d`.
    pub fn new(d: usize) -> Self {
        Self {
            d,
            rows: Vec::new(),
            bounds: Vec::new(),
        }
    }

    /// Adds a constraint; `row` must have `d` values (panics otherwise: a programming error, not user data).
    pub fn push(&mut self, row: &[f32], bound: f64) {
        assert_eq!(row.len(), self.d, "constraint row of the wrong size");
        self.rows.extend_from_slice(row);
        self.bounds.push(bound);
    }

    /// Number of constraints.
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// The constraints, as (row, bound).
    pub fn iter(&self) -> impl Iterator<Item = (&[f32], f64)> + '_ {
        self.rows
            .chunks_exact(self.d.max(1))
            .zip(self.bounds.iter().copied())
    }
}

/// IncDSI's objective for one output row: `l2/2 |w - reference|^2 + 1/2 sum_pos max(0, t - w.p)^2
/// + old_weight/2 sum_neg max(0, w.o - b)^2`.
#[derive(Clone, Copy, Debug)]
pub struct HingeObjective<'a> {
    /// Rows the new row must score at least their bound on.
    pub positives: &'a Hinges,
    /// Rows it must score at most their bound on.
    pub negatives: &'a Hinges,
    /// Weight of the distance to `reference`.
    pub l2: f64,
    /// Weight of the negatives' hinge terms.
    pub old_weight: f64,
    /// The row the L2 term pulls towards.
    pub reference: &'a [f64],
}

impl HingeObjective<'_> {
    /// Value at `w`; writes the gradient into `g`. `2 d` flops per constraint, plus `2 d` per active one.
    pub fn value_grad(&self, w: &[f64], g: &mut [f64]) -> f64 {
        let mut f = 0.0;
        for ((gj, wj), rj) in g.iter_mut().zip(w).zip(self.reference) {
            let diff = wj - rj;
            f += 0.5 * self.l2 * diff * diff;
            *gj = self.l2 * diff;
        }
        for (p, t) in self.positives.iter() {
            let h = t - dot_mixed(p, w);
            if h > 0.0 {
                f += 0.5 * h * h;
                axpy_mixed(g, -h, p);
            }
        }
        let ow = self.old_weight;
        for (o, b) in self.negatives.iter() {
            let h = dot_mixed(o, w) - b;
            if h > 0.0 {
                f += 0.5 * ow * h * h;
                axpy_mixed(g, ow * h, o);
            }
        }
        f
    }
}

/// Euclidean norm.
pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Result of a minimisation.
#[derive(Clone, Debug)]
pub struct Minimum {
    /// The minimiser found.
    pub x: Vec<f64>,
    /// Objective value there.
    pub value: f64,
    /// Iterations taken.
    pub iterations: usize,
}

/// Minimises a smooth function with L-BFGS (two-loop recursion, `memory` pairs) and a backtracking Armijo
/// line search. `f(x, grad)` returns the value and writes the gradient. Stops when the gradient's max-norm
/// falls below `tol`, the value stops decreasing, or after `max_iter` iterations.
pub fn lbfgs(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    x0: Vec<f64>,
    max_iter: usize,
    memory: usize,
    tol: f64,
) -> Minimum {
    let n = x0.len();
    let mut x = x0;
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut iterations = 0;
    let mut g_new = vec![0.0; n];
    let mut x_new = vec![0.0; n];
    for it in 0..max_iter {
        iterations = it;
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < tol {
            break;
        }
        // two-loop recursion: d = -H g
        let mut q = g.clone();
        let k = s_hist.len();
        let mut alpha = vec![0.0; k];
        for i in (0..k).rev() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            alpha[i] = rho * dot(&s_hist[i], &q);
            for (qj, yj) in q.iter_mut().zip(&y_hist[i]) {
                *qj -= alpha[i] * yj;
            }
        }
        let gamma = if k > 0 {
            dot(&s_hist[k - 1], &y_hist[k - 1]) / dot(&y_hist[k - 1], &y_hist[k - 1])
        } else {
            1.0 / norm(&g).max(1e-12)
        };
        for v in &mut q {
            *v *= gamma;
        }
        for i in 0..k {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            let beta = rho * dot(&y_hist[i], &q);
            for (qj, sj) in q.iter_mut().zip(&s_hist[i]) {
                *qj += (alpha[i] - beta) * sj;
            }
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // not a descent direction: restart from steepest descent
            s_hist.clear();
            y_hist.clear();
            let scale = 1.0 / norm(&g).max(1e-12);
            d = g.iter().map(|v| -v * scale).collect();
            slope = dot(&g, &d);
        }
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            for i in 0..n {
                x_new[i] = x[i] + step * d[i];
            }
            let f_new = f(&x_new, &mut g_new);
            if f_new.is_finite() && f_new <= fx + 1e-4 * step * slope {
                accepted = true;
                let s: Vec<f64> = (0..n).map(|i| x_new[i] - x[i]).collect();
                let y: Vec<f64> = (0..n).map(|i| g_new[i] - g[i]).collect();
                let decrease = fx - f_new;
                if dot(&s, &y) > 1e-12 {
                    s_hist.push(s);
                    y_hist.push(y);
                    if s_hist.len() > memory {
                        s_hist.remove(0);
                        y_hist.remove(0);
                    }
                }
                std::mem::swap(&mut x, &mut x_new);
                std::mem::swap(&mut g, &mut g_new);
                fx = f_new;
                if decrease <= 1e-12 * fx.abs().max(1e-12) {
                    return Minimum {
                        x,
                        value: fx,
                        iterations: it + 1,
                    };
                }
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
        iterations = it + 1;
    }
    Minimum {
        x,
        value: fx,
        iterations,
    }
}

/// Lower Cholesky factor of a symmetric positive definite `n x n` matrix (row-major); `None` when it is not
/// positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            let (ri, rj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            s -= dot(ri, rj);
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves `L L^T x = b` in place for a Cholesky factor `l`.
pub fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let s = dot(&l[i * n..i * n + i], &b[..i]);
        b[i] = (b[i] - s) / l[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= l[k * n + i] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

/// Solves a small dense system `a x = b` (`n x n`, Gaussian elimination with partial pivoting); `None` when
/// singular.
pub fn solve(mut a: Vec<f64>, n: usize, mut b: Vec<f64>) -> Option<Vec<f64>> {
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))?;
        if a[p * n + c].abs() < 1e-300 {
            return None;
        }
        if p != c {
            for k in 0..n {
                a.swap(p * n + k, c * n + k);
            }
            b.swap(p, c);
        }
        for r in c + 1..n {
            let f = a[r * n + c] / a[c * n + c];
            if f != 0.0 {
                for k in c..n {
                    a[r * n + k] -= f * a[c * n + k];
                }
                b[r] -= f * b[c];
            }
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r * n + k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r * n + r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded values in (-1, 1) (a small LCG: no dependency, reproducible).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn lane_dot_products_agree_with_the_sequential_sums_at_every_length() {
        for n in [0, 1, 7, 8, 9, 31, 512, 515] {
            let a = values(n, 1);
            let b = values(n, 2);
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(
                (dot(&a, &b) - exact).abs() <= 1e-12 * (1.0 + exact.abs()),
                "n {n}"
            );
            let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
            let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
            let mixed: f64 = a32.iter().zip(&b).map(|(x, y)| f64::from(*x) * y).sum();
            assert!((dot_mixed(&a32, &b) - mixed).abs() <= 1e-12 * (1.0 + mixed.abs()));
            // the dispatched (AVX2 where the CPU has it) and portable paths agree to the bit
            assert_eq!(
                dot_mixed(&a32, &b).to_bits(),
                dot_mixed_lanes(&a32, &b).to_bits()
            );
            let (mut g1, mut g2) = (b.clone(), b.clone());
            axpy_mixed(&mut g1, -0.37, &a32);
            axpy_mixed_plain(&mut g2, -0.37, &a32);
            assert_eq!(g1, g2);
            let single: f64 = a32
                .iter()
                .zip(&b32)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(dot_f32(&a32, &b32)) - single).abs() <= 1e-5 * (1.0 + single.abs()));
        }
    }

    #[test]
    fn hinge_objective_matches_its_formula_and_finite_differences() {
        let d = 19;
        let mut pos = Hinges::new(d);
        let mut neg = Hinges::new(d);
        let row = |s: u64| -> Vec<f32> { values(d, s).iter().map(|&v| v as f32).collect() };
        for k in 0..3 {
            pos.push(&row(10 + k), 0.5);
        }
        for k in 0..40 {
            neg.push(&row(100 + k), 0.1 * (k % 5) as f64 - 0.2);
        }
        assert_eq!((pos.len(), neg.len()), (3, 40));
        let reference = values(d, 7);
        let obj = HingeObjective {
            positives: &pos,
            negatives: &neg,
            l2: 0.3,
            old_weight: 2.0,
            reference: &reference,
        };
        let w = values(d, 9);
        let mut g = vec![0.0; d];
        let f = obj.value_grad(&w, &mut g);
        // the formula term by term, with plain sequential sums
        let wd = |r: &[f32]| -> f64 { r.iter().zip(&w).map(|(a, b)| f64::from(*a) * b).sum() };
        let mut want = 0.15
            * w.iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>();
        let (mut active_pos, mut active_neg) = (0, 0);
        for (p, t) in pos.iter() {
            let h = (t - wd(p)).max(0.0);
            active_pos += usize::from(h > 0.0);
            want += 0.5 * h * h;
        }
        for (o, b) in neg.iter() {
            let h = (wd(o) - b).max(0.0);
            active_neg += usize::from(h > 0.0);
            want += h * h;
        }
        assert!(
            active_pos > 0 && active_neg > 0 && active_neg < 40,
            "both kinds of terms take part"
        );
        assert!(
            (f - want).abs() < 1e-12 * want.abs().max(1.0),
            "{f} vs {want}"
        );
        // central differences
        for j in 0..d {
            let eps = 1e-6;
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[j] += eps;
            wm[j] -= eps;
            let mut scratch = vec![0.0; d];
            let num = (obj.value_grad(&wp, &mut scratch) - obj.value_grad(&wm, &mut scratch))
                / (2.0 * eps);
            assert!(
                (num - g[j]).abs() < 1e-6 * (1.0 + g[j].abs()),
                "component {j}: {num} vs {}",
                g[j]
            );
        }
    }

    #[test]
    fn lbfgs_minimises_a_quadratic() {
        // f = sum_i (i+1) (x_i - i)^2
        let m = lbfgs(
            |x, g| {
                let mut v = 0.0;
                for i in 0..x.len() {
                    let w = (i + 1) as f64;
                    v += w * (x[i] - i as f64).powi(2);
                    g[i] = 2.0 * w * (x[i] - i as f64);
                }
                v
            },
            vec![0.0; 8],
            200,
            8,
            1e-10,
        );
        for (i, v) in m.x.iter().enumerate() {
            assert!((v - i as f64).abs() < 1e-6, "{i}: {v}");
        }
    }

    #[test]
    fn cholesky_and_gauss_solve() {
        let a = vec![4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let l = cholesky(&a, 3).unwrap();
        let mut b = vec![1.0, 2.0, 3.0];
        cholesky_solve(&l, 3, &mut b);
        let x = solve(a.clone(), 3, vec![1.0, 2.0, 3.0]).unwrap();
        for i in 0..3 {
            assert!((b[i] - x[i]).abs() < 1e-12);
            let r: f64 = (0..3).map(|j| a[i * 3 + j] * x[j]).sum();
            assert!((r - [1.0, 2.0, 3.0][i]).abs() < 1e-12);
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
