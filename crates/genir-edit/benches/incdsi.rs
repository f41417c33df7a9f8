//! IncDSI's row solve (`genir_edit::linalg`), the part of adding a document that grows with the anchors: the
//! objective and gradient over `d_model` = 512 (flan-t5-small) with 20 positives (a passage's chunks and
//! sentences) and 2,000 or 10,000 anchors, against the same objective written with one heap vector per
//! constraint and sequential sums (the implementation before the contiguous, eight-lane one), in the same
//! run. Throughput is in FLOP: `2 d` per constraint for its product, `2 d` more per active one.
//!
//! `cargo bench -p genir-edit --bench incdsi`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use genir_edit::linalg::{lbfgs, HingeObjective, Hinges};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const D: usize = 512;
const POSITIVES: usize = 20;

struct Problem {
    pos: Hinges,
    neg: Hinges,
    /// The same constraints as `f64` vectors, one allocation each.
    pos_vecs: Vec<(Vec<f64>, f64)>,
    neg_vecs: Vec<(Vec<f64>, f64)>,
    w: Vec<f64>,
    reference: Vec<f64>,
}

fn problem(anchors: usize) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let row = |rng: &mut ChaCha8Rng| -> Vec<f32> {
        (0..D).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    };
    let w: Vec<f64> = (0..D).map(|_| rng.random_range(-0.1..0.1)).collect();
    let mut p = Problem {
        pos: Hinges::new(D),
        neg: Hinges::new(D),
        pos_vecs: Vec::new(),
        neg_vecs: Vec::new(),
        w,
        reference: vec![0.0; D],
    };
    for _ in 0..POSITIVES {
        let r = row(&mut rng);
        let b = rng.random_range(0.5..2.0);
        p.pos_vecs
            .push((r.iter().map(|&v| f64::from(v)).collect(), b));
        p.pos.push(&r, b);
    }
    for _ in 0..anchors {
        let r = row(&mut rng);
        // about a fifth of the anchors violated at `w`, as early in a solve
        let b = rng.random_range(-1.5..6.0);
        p.neg_vecs
            .push((r.iter().map(|&v| f64::from(v)).collect(), b));
        p.neg.push(&r, b);
    }
    p
}

/// The objective as it was written before: heap vectors, sequential dot products.
fn naive(p: &Problem, w: &[f64], g: &mut [f64], l2: f64, ow: f64) -> f64 {
    let dot = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
    let mut f = 0.0;
    for j in 0..D {
        let diff = w[j] - p.reference[j];
        f += 0.5 * l2 * diff * diff;
        g[j] = l2 * diff;
    }
    for (q, t) in &p.pos_vecs {
        let h = t - dot(w, q);
        if h > 0.0 {
            f += 0.5 * h * h;
            for j in 0..D {
                g[j] -= h * q[j];
            }
        }
    }
    for (o, b) in &p.neg_vecs {
        let h = dot(w, o) - b;
        if h > 0.0 {
            f += 0.5 * ow * h * h;
            for j in 0..D {
                g[j] += ow * h * o[j];
            }
        }
    }
    f
}

fn bench(c: &mut Criterion) {
    let (l2, ow) = (0.1, 1.0);
    for anchors in [2000, 10_000] {
        let p = problem(anchors);
        let obj = HingeObjective {
            positives: &p.pos,
            negatives: &p.neg,
            l2,
            old_weight: ow,
            reference: &p.reference,
        };
        let mut g = vec![0.0; D];
        let mut g2 = vec![0.0; D];
        let f_new = obj.value_grad(&p.w, &mut g);
        let f_old = naive(&p, &p.w, &mut g2, l2, ow);
        assert!(
            (f_new - f_old).abs() < 1e-9 * f_old.abs().max(1.0),
            "{f_new} vs {f_old}"
        );
        let active = p
            .neg
            .iter()
            .filter(|(o, b)| genir_edit::linalg::dot_mixed(o, &p.w) > *b)
            .count()
            + POSITIVES;
        let flops = (2 * D * (POSITIVES + anchors) + 2 * D * active) as u64;
        let mut group = c.benchmark_group(format!("incdsi_objective_{anchors}_anchors"));
        group.throughput(Throughput::Elements(flops));
        group.bench_function("sequential_vectors", |b| {
            b.iter(|| naive(&p, &p.w, &mut g2, l2, ow))
        });
        group.bench_function("contiguous_lanes", |b| {
            b.iter(|| obj.value_grad(&p.w, &mut g))
        });
        group.finish();
        let mut group = c.benchmark_group(format!("incdsi_solve_{anchors}_anchors"));
        group.sample_size(10);
        group.bench_function("lbfgs_100_iterations", |b| {
            b.iter(|| lbfgs(|w, g| obj.value_grad(w, g), p.w.clone(), 100, 10, 1e-6))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
