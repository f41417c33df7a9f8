//! AdamW with a fused update on `flex`: burn's [`AdamW`](burn::optim::AdamW) arithmetic, one pass per parameter.
//!
//! burn's AdamW composes its update from about fifteen tensor operations (moments, bias correction, square
//! root, division, decay, step), each a pass over the parameter into a fresh buffer. [`FusedAdamW`] performs
//! the same f32 operations in the same order for each element in one pass over the parameter, its gradient
//! and its two moments, split across rayon's threads, so its results are bit-identical to burn's (tested)
//! at a fraction of the memory traffic. Its state ([`FusedState`]) holds burn's [`AdamWState`] and is written
//! under the same names, so optimizer records (and checkpoints) are the same as with burn's AdamW. On any
//! other device, or with `GENIR_FLEX_FASTMATH=0`, it runs burn's tensor operations.
//!
//! A loaded record keeps its moments on the host until the first step moves them to the parameter's
//! device: burn's `ModuleOptimizer::load_record` rebuilds states on `Device::default()`, which in a build
//! with the `wgpu` (or `cuda`) feature is the GPU backend, so resuming a `flex` run would otherwise start a
//! GPU runtime (or fail where no adapter exists) only to copy the moments back.

use burn::optim::{
    AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer, RecordState,
    StateSink, StateSource,
};
use burn::prelude::*;
use rayon::prelude::*;

/// AdamW (decoupled weight decay, bias-corrected moments, no AMSGrad) with burn's defaults
/// (`beta_1` 0.9, `beta_2` 0.999).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusedAdamW {
    /// First-moment decay.
    pub beta_1: f32,
    /// Second-moment decay.
    pub beta_2: f32,
    /// Added to the square root of the second moment.
    pub epsilon: f32,
    /// Decoupled weight decay (multiplied by the learning rate).
    pub weight_decay: f32,
}

impl FusedAdamW {
    /// burn's `AdamWConfig::new().with_weight_decay(weight_decay).with_epsilon(epsilon)`.
    pub fn new(weight_decay: f32, epsilon: f32) -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon,
            weight_decay,
        }
    }

    /// The whole-module optimizer (gradient clipping, if any, is the caller's).
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }

    /// The f32 scalars of step `time` (1-based) at learning rate `lr`, as burn computes them.
    fn scalars(&self, lr: LearningRate, time: usize) -> Scalars {
        let t = time as i32;
        let decay_rate = lr * f64::from(self.weight_decay);
        Scalars {
            b1: self.beta_1,
            b2: self.beta_2,
            f1: 1.0 - self.beta_1,
            f2: 1.0 - self.beta_2,
            c1: 1f32 - self.beta_1.powi(t),
            c2: 1f32 - self.beta_2.powi(t),
            eps: self.epsilon,
            keep: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
            lr: lr as f32,
            first: time == 1,
        }
    }
}

/// Per-step constants, each rounded to f32 where burn rounds it.
#[derive(Clone, Copy)]
struct Scalars {
    b1: f32,
    b2: f32,
    f1: f32,
    f2: f32,
    c1: f32,
    c2: f32,
    eps: f32,
    keep: Option<f32>,
    lr: f32,
    first: bool,
}

/// One element of burn's AdamW step: the same f32 operations, in the same order.
#[inline(always)]
fn update(s: &Scalars, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
    if s.first {
        *m = g * s.f1;
        *v = (g * g) * s.f2;
    } else {
        *m = *m * s.b1 + g * s.f1;
        *v = *v * s.b2 + (g * g) * s.f2;
    }
    let delta = (*m / s.c1) / ((*v / s.c2).sqrt() + s.eps);
    let decayed = match s.keep {
        Some(k) => *p * k,
        None => *p,
    };
    *p = decayed - delta * s.lr;
}

/// Elements per rayon task.
const GRAIN: usize = 32 * 1024;

/// One rayon task's slices: parameter, gradient, first and second moment.
type Chunk<'a> = (((&'a mut [f32], &'a [f32]), &'a mut [f32]), &'a mut [f32]);

/// The fused step over host buffers (every slice the same length).
fn update_all(s: &Scalars, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let run = |(((p, g), m), v): Chunk<'_>| {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            update(s, p, g, m, v);
        }
    };
    if p.len() <= GRAIN {
        run((((p, g), m), v));
    } else {
        p.par_chunks_mut(GRAIN)
            .zip(g.par_chunks(GRAIN))
            .zip(m.par_chunks_mut(GRAIN))
            .zip(v.par_chunks_mut(GRAIN))
            .for_each(run);
    }
}

/// [`FusedAdamW`]'s state of one parameter: burn's AdamW state on a device, or moments read from a record
/// and not yet placed (they go to the parameter's device before its next step).
#[derive(Clone)]
pub enum FusedState<const D: usize> {
    /// burn's AdamW state, its moments on the parameter's device (boxed: burn's tensors are large values).
    Device(Box<AdamWState<D>>),
    /// Read from an optimizer record: step count and moments as host data.
    Host(Box<HostMoments>),
}

/// An AdamW state read from an optimizer record, before it is placed on a device.
#[derive(Clone)]
pub struct HostMoments {
    /// Steps taken.
    pub time: usize,
    /// First moment.
    pub moment_1: TensorData,
    /// Second moment.
    pub moment_2: TensorData,
    /// AMSGrad's running maximum (absent for AdamW).
    pub max_moment_2: Option<TensorData>,
}

/// Where burn's `AdamWState` keeps its momentum fields in a record.
const MOMENTUM: &str = "momentum";

impl<const D: usize> FusedState<D> {
    /// The state on `device` (moments read from a record are uploaded; others moved if elsewhere).
    pub fn on(self, device: &Device) -> AdamWState<D> {
        match self {
            FusedState::Device(s) => {
                let mut s = *s;
                s.momentum = s.momentum.to_device(device);
                s
            }
            FusedState::Host(h) => {
                let HostMoments {
                    time,
                    moment_1,
                    moment_2,
                    max_moment_2,
                } = *h;
                let mut m = AdaptiveMomentumState::new(
                    time,
                    Tensor::from_data(moment_1, device),
                    Tensor::from_data(moment_2, device),
                );
                m.max_moment_2 = max_moment_2.map(|d| Tensor::from_data(d, device));
                AdamWState::new(m)
            }
        }
    }
}

impl<const D: usize> RecordState for FusedState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        match self {
            FusedState::Device(s) => s.state_flatten(prefix, out),
            FusedState::Host(h) => {
                let p = burn::optim::join_path(prefix, MOMENTUM);
                out.push_scalar(&p, "time", h.time.into());
                out.push_tensor(&p, "moment_1", h.moment_1.clone());
                out.push_tensor(&p, "moment_2", h.moment_2.clone());
                if let Some(m) = &h.max_moment_2 {
                    out.push_tensor(&p, "max_moment_2", m.clone());
                }
            }
        }
    }

    /// Reads the fields burn's `AdamWState` writes, leaving them on the host (`device` is not used: see the
    /// module documentation).
    fn state_unflatten(prefix: &str, src: &mut StateSource, _device: &Device) -> Option<Self> {
        let p = burn::optim::join_path(prefix, MOMENTUM);
        let time = usize::try_from(src.take_scalar(&p, "time")?).ok()?;
        let moment_1 = src.take_tensor(&p, "moment_1")?;
        let moment_2 = src.take_tensor(&p, "moment_2")?;
        let max_moment_2 = src.take_tensor(&p, "max_moment_2");
        Some(FusedState::Host(Box::new(HostMoments {
            time,
            moment_1,
            moment_2,
            max_moment_2,
        })))
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = FusedState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // burn's mapper has already called `to_device` on the state (a device state as it is; a host one only
        // if a caller skipped that)
        let state = state.map(|s| match s {
            FusedState::Device(s) => *s,
            host => host.on(&tensor.device()),
        });
        let (p, s) = self.step_adamw(lr, tensor, grad, state);
        (p, s.map(|s| FusedState::Device(Box::new(s))))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        FusedState::Device(Box::new(state.on(device)))
    }
}

impl FusedAdamW {
    /// One step on burn's state: fused on host buffers where [`fastmath::fusable`](genir_model::fastmath::fusable)
    /// allows, burn's operations otherwise.
    fn step_adamw<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, Option<AdamWState<D>>) {
        let time = state.as_ref().map_or(1, |s| s.momentum.time + 1);
        let s = self.scalars(lr, time);
        let use_host = genir_model::fastmath::fusable(&tensor)
            && genir_model::fastmath::fusable(&grad)
            && state.as_ref().is_none_or(|st| {
                genir_model::fastmath::fusable(&st.momentum.moment_1)
                    && genir_model::fastmath::fusable(&st.momentum.moment_2)
                    && st.momentum.max_moment_2.is_none()
            });
        if !use_host {
            return self.step_burn(s, time, tensor, grad, state);
        }
        let device = tensor.device();
        let shape = tensor.shape();
        let zeros = || Tensor::<D>::zeros(shape.clone(), &device);
        let (m, v) = match state {
            Some(st) => (st.momentum.moment_1, st.momentum.moment_2),
            None => (zeros(), zeros()),
        };
        // host buffers: no copy when a tensor is the only owner of its buffer
        let (mut p, g, mut m, mut v) = (
            tensor.into_data(),
            grad.into_data(),
            m.into_data(),
            v.into_data(),
        );
        let done = match (
            p.as_mut_slice::<f32>(),
            g.as_slice::<f32>(),
            m.as_mut_slice::<f32>(),
            v.as_mut_slice::<f32>(),
        ) {
            (Ok(p), Ok(g), Ok(m), Ok(v))
                if g.len() == p.len() && m.len() == p.len() && v.len() == p.len() =>
            {
                update_all(&s, p, g, m, v);
                true
            }
            _ => false,
        };
        let back = |data: TensorData| Tensor::<D>::from_data(data, &device);
        let (p, g, m, v) = (back(p), back(g), back(m), back(v));
        if !done {
            // not reached for f32 on flex (what `fusable` checks); burn's operations otherwise
            let state =
                (time > 1).then(|| AdamWState::new(AdaptiveMomentumState::new(time - 1, m, v)));
            return self.step_burn(s, time, p, g, state);
        }
        let momentum = AdaptiveMomentumState::new(time, m, v);
        (p, Some(AdamWState::new(momentum)))
    }
    /// The same step with burn's tensor operations (any device).
    fn step_burn<const D: usize>(
        &self,
        s: Scalars,
        time: usize,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, Option<AdamWState<D>>) {
        let (m, v) = match state {
            Some(st) => (
                st.momentum.moment_1.mul_scalar(s.b1) + grad.clone().mul_scalar(s.f1),
                st.momentum.moment_2.mul_scalar(s.b2) + grad.square().mul_scalar(s.f2),
            ),
            None => (
                grad.clone().mul_scalar(s.f1),
                grad.square().mul_scalar(s.f2),
            ),
        };
        let delta =
            m.clone().div_scalar(s.c1) / v.clone().div_scalar(s.c2).sqrt().add_scalar(s.eps);
        let decayed = match s.keep {
            Some(k) => tensor.mul_scalar(k),
            None => tensor,
        };
        let momentum = AdaptiveMomentumState::new(time, m, v);
        (
            decayed - delta.mul_scalar(s.lr),
            Some(AdamWState::new(momentum)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::{AdamWConfig, GradientsParams};

    #[derive(Module, Debug)]
    struct Two {
        a: burn::module::Param<Tensor<2>>,
        b: burn::module::Param<Tensor<1>>,
    }

    fn model(device: &Device) -> Two {
        // `a` is large enough to be split across threads
        let a: Vec<f32> = (0..300 * 400).map(|i| (i as f32 * 0.013).sin()).collect();
        let b: Vec<f32> = (0..7).map(|i| i as f32 * 0.1 - 0.3).collect();
        Two {
            a: burn::module::Param::from_tensor(Tensor::from_data(
                TensorData::new(a, [300, 400]),
                device,
            )),
            b: burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(b, [7]), device)),
        }
    }

    fn values(m: &Two) -> Vec<f32> {
        let mut v: Vec<f32> = m.a.val().into_data().try_into_vec().unwrap();
        v.extend(m.b.val().into_data().try_into_vec::<f32>().unwrap());
        v
    }

    /// Steps `from..to` of a schedule whose loss gradient changes each step.
    fn steps(optim: &mut ModuleOptimizer, mut m: Two, from: usize, to: usize) -> Two {
        for step in from..to {
            let w = (step as f32 + 1.0) * 0.5;
            let loss = (m.a.val().sin() * w).sum() + (m.b.val().powi_scalar(2) * w).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            m = optim.step(1e-2 * (step as f64 + 1.0), m, grads);
        }
        m
    }

    /// Four steps of that schedule.
    fn train(mut optim: ModuleOptimizer, device: &Device) -> Vec<f32> {
        let ad = device.clone().autodiff();
        values(&steps(&mut optim, model(&ad), 0, 4))
    }

    fn burn_adamw() -> ModuleOptimizer {
        AdamWConfig::new()
            .with_weight_decay(0.01)
            .with_epsilon(1e-8)
            .init()
    }

    #[test]
    fn records_resume_bit_identically_and_are_burns_adamw_records() {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let whole = train(FusedAdamW::new(0.01, 1e-8).init(), &device);
        let mut o = FusedAdamW::new(0.01, 1e-8).init();
        let half = steps(&mut o, model(&ad), 0, 2);
        let bytes = o.into_bytes().unwrap();
        // fused record -> fused
        let mut resumed = FusedAdamW::new(0.01, 1e-8)
            .init()
            .from_bytes(bytes.clone())
            .unwrap();
        assert_eq!(values(&steps(&mut resumed, half.clone(), 2, 4)), whole);
        // fused record -> burn's AdamW
        let mut b = burn_adamw().from_bytes(bytes).unwrap();
        assert_eq!(values(&steps(&mut b, half.clone(), 2, 4)), whole);
        // burn's record -> fused
        let mut b = burn_adamw();
        let half_b = steps(&mut b, model(&ad), 0, 2);
        let mut f = FusedAdamW::new(0.01, 1e-8)
            .init()
            .from_bytes(b.into_bytes().unwrap())
            .unwrap();
        assert_eq!(values(&steps(&mut f, half_b, 2, 4)), whole);
        // without the record the moments restart: the record carried them
        let mut fresh = FusedAdamW::new(0.01, 1e-8).init();
        assert_ne!(values(&steps(&mut fresh, half, 2, 4)), whole);
    }

    #[test]
    fn a_state_read_from_a_record_stays_on_the_host_until_placed() {
        let device = Device::flex();
        let o = FusedAdamW::new(0.01, 1e-8);
        let p = Tensor::<1>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0], [3]), &device);
        let g = Tensor::<1>::from_data(TensorData::new(vec![0.1f32, 0.2, -0.3], [3]), &device);
        let (p, st) = o.step(1e-2, p, g.clone(), None);
        let (_, st) = o.step(1e-2, p, g, st);
        let st = st.unwrap();
        let mut sink = StateSink::default();
        st.state_flatten("7", &mut sink);
        let names: Vec<&str> = sink.tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["7.momentum.moment_1", "7.momentum.moment_2"]);
        let mut src = StateSource::new(sink.scalars.into_iter().collect());
        for (n, d) in sink.tensors {
            src.insert_tensor(n, d);
        }
        let back = FusedState::<1>::state_unflatten("7", &mut src, &device).unwrap();
        let FusedState::Host(h) = &back else {
            panic!("a state read from a record was placed on a device")
        };
        assert_eq!(h.time, 2);
        // a host state (a parameter without a gradient since the resume) is written as burn writes it
        let flat = |s: &FusedState<1>| {
            let mut sink = StateSink::default();
            s.state_flatten("7", &mut sink);
            let tensors: Vec<(String, Vec<f32>)> = sink
                .tensors
                .into_iter()
                .map(|(n, d)| (n, d.try_into_vec::<f32>().unwrap()))
                .collect();
            (format!("{:?}", sink.scalars), tensors)
        };
        assert_eq!(flat(&back), flat(&st));
        assert!(flat(&st).0.contains("7.momentum.time"), "{}", flat(&st).0);
        let host = |s: AdamWState<1>| {
            let m = s.momentum;
            (
                m.time,
                m.moment_1.into_data().try_into_vec::<f32>().unwrap(),
                m.moment_2.into_data().try_into_vec::<f32>().unwrap(),
            )
        };
        assert_eq!(host(back.on(&device)), host(st.on(&device)));
        // a record without the moments gives no state (burn then starts the parameter afresh)
        let mut empty = StateSource::new(Default::default());
        assert!(FusedState::<1>::state_unflatten("7", &mut empty, &device).is_none());
    }

    #[test]
    fn fused_adamw_is_bit_identical_to_burns() {
        let device = Device::flex();
        let burn = train(
            AdamWConfig::new()
                .with_weight_decay(0.01)
                .with_epsilon(1e-8)
                .init(),
            &device,
        );
        let fused = train(FusedAdamW::new(0.01, 1e-8).init(), &device);
        assert_eq!(fused.len(), burn.len());
        let differ = fused.iter().zip(&burn).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{differ} of {} values differ", fused.len());
        assert!(
            values(&model(&device)) != fused,
            "the steps changed nothing"
        );
        // no weight decay: the other branch of the decay
        let burn = train(
            AdamWConfig::new()
                .with_weight_decay(0.0)
                .with_epsilon(1e-8)
                .init(),
            &device,
        );
        let fused = train(FusedAdamW::new(0.0, 1e-8).init(), &device);
        let differ = fused.iter().zip(&burn).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ,
            0,
            "no decay: {differ} of {} values differ",
            fused.len()
        );
    }

    #[test]
    fn the_unfused_path_equals_the_fused_one() {
        let device = Device::flex();
        let o = FusedAdamW::new(0.01, 1e-8);
        let p = Tensor::<1>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0], [3]), &device);
        let g = Tensor::<1>::from_data(TensorData::new(vec![0.1f32, 0.2, -0.3], [3]), &device);
        let (p1, st) = o.step(1e-2, p.clone(), g.clone(), None);
        let (p1b, stb) = o.step_burn(o.scalars(1e-2, 1), 1, p, g.clone(), None);
        let host = |t: Tensor<1>| t.into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(host(p1.clone()), host(p1b.clone()));
        let (p2, _) = o.step(2e-2, p1, g.clone(), st);
        let (p2b, _) = o.step_burn(o.scalars(2e-2, 2), 2, p1b, g, stb);
        assert_eq!(host(p2), host(p2b));
    }
}
