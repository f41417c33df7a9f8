//! Small dense linear algebra on host vectors: L-BFGS for one `d_model`-sized row, Cholesky solves for the
//! `d_ff x d_ff` key covariance of the rank-one MLP edit. Everything is row-major `f64`.

/// Dot product.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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
