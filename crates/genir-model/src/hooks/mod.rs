//! Hook points, activation caches and interventions (patch, ablate, replace) on a forward pass.
//!
//! One mechanism serves reading and writing, as in TransformerLens: the model calls [`Hooks::apply3`] /
//! [`Hooks::apply4`] at every named point; a [`Hooks`] value holds the interventions to apply there and
//! the cache to record into. With [`Hooks::none`] the calls return their input untouched.

mod point;

use std::collections::{BTreeMap, HashMap};

use burn::prelude::*;
use burn::tensor::{Bool, TensorData};

pub use point::{AttnKind, AttnSite, AxisLayout, HookFilter, HookPoint, Site, Stack};

use crate::error::ModelError;

/// An activation tensor at a hook point: rank 3 (`[batch, pos, d]`) or rank 4 (per head, or attention).
#[derive(Clone, Debug)]
pub enum Activation {
    /// `[batch, pos, d]`.
    Rank3(Tensor<3>),
    /// `[batch, pos, head, d_head]` or `[batch, head, query_pos, key_pos]`.
    Rank4(Tensor<4>),
}

impl Activation {
    /// The tensor's shape.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Activation::Rank3(t) => t.dims().to_vec(),
            Activation::Rank4(t) => t.dims().to_vec(),
        }
    }

    /// The values as f32 in row-major order.
    pub fn to_vec(&self) -> Result<Vec<f32>, ModelError> {
        let data = match self {
            Activation::Rank3(t) => t.to_data(),
            Activation::Rank4(t) => t.to_data(),
        };
        data.try_to_vec::<f32>()
            .map_err(|e| ModelError::Tensor(format!("{e:?}")))
    }

    /// The rank-3 tensor, or an error naming `point`.
    pub fn rank3(&self, point: &HookPoint) -> Result<Tensor<3>, ModelError> {
        match self {
            Activation::Rank3(t) => Ok(t.clone()),
            Activation::Rank4(t) => Err(ModelError::HookShape {
                point: point.to_string(),
                expected: "a rank-3 tensor".into(),
                found: format!("{:?}", t.dims()),
            }),
        }
    }

    /// The rank-4 tensor, or an error naming `point`.
    pub fn rank4(&self, point: &HookPoint) -> Result<Tensor<4>, ModelError> {
        match self {
            Activation::Rank4(t) => Ok(t.clone()),
            Activation::Rank3(t) => Err(ModelError::HookShape {
                point: point.to_string(),
                expected: "a rank-4 tensor".into(),
                found: format!("{:?}", t.dims()),
            }),
        }
    }

    /// Moves the tensor to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        match self {
            Activation::Rank3(t) => Activation::Rank3(t.to_device(device)),
            Activation::Rank4(t) => Activation::Rank4(t.to_device(device)),
        }
    }
}

/// Activations recorded during a forward pass, keyed by hook point (model order).
#[derive(Clone, Debug, Default)]
pub struct ActivationCache {
    entries: BTreeMap<HookPoint, Activation>,
}

impl ActivationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The activation at `point`, if recorded.
    pub fn get(&self, point: &HookPoint) -> Option<&Activation> {
        self.entries.get(point)
    }

    /// The activation at `point`, or an error saying it was not cached.
    pub fn require(&self, point: &HookPoint) -> Result<&Activation, ModelError> {
        self.entries
            .get(point)
            .ok_or_else(|| ModelError::NotCached(point.to_string()))
    }

    /// Records an activation (replacing an earlier one at the same point).
    pub fn insert(&mut self, point: HookPoint, act: Activation) {
        self.entries.insert(point, act);
    }

    /// All recorded points and activations, in model order.
    pub fn iter(&self) -> impl Iterator<Item = (&HookPoint, &Activation)> {
        self.entries.iter()
    }

    /// Number of recorded points.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Which slice of a hooked tensor an intervention touches: chosen positions and/or heads
/// (`None` means all). Positions index the position axis (the query axis of attention patterns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Positions to touch; `None` for all.
    pub positions: Option<Vec<usize>>,
    /// Heads to touch (per-head points only); `None` for all.
    pub heads: Option<Vec<usize>>,
    /// Batch rows to touch; `None` for all.
    pub batch: Option<Vec<usize>>,
}

impl Selection {
    /// The whole tensor.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only these positions.
    pub fn positions(p: impl Into<Vec<usize>>) -> Self {
        Self {
            positions: Some(p.into()),
            ..Self::default()
        }
    }

    /// Only these heads.
    pub fn heads(h: impl Into<Vec<usize>>) -> Self {
        Self {
            heads: Some(h.into()),
            ..Self::default()
        }
    }

    /// Only these batch rows.
    pub fn batch(b: impl Into<Vec<usize>>) -> Self {
        Self {
            batch: Some(b.into()),
            ..Self::default()
        }
    }

    fn is_all(&self) -> bool {
        self.positions.is_none() && self.heads.is_none() && self.batch.is_none()
    }
}

/// A user function applied at a hook point; it may read and return a modified activation.
pub type HookFn<'a> = Box<dyn FnMut(&HookPoint, Activation) -> Result<Activation, ModelError> + 'a>;

/// What to do to an activation as it passes a hook point.
pub enum Intervention<'a> {
    /// Copy `source` (same shape, e.g. from another run's cache) into the selected slice.
    Patch {
        /// Values to copy in.
        source: Activation,
        /// Where to copy them.
        selection: Selection,
    },
    /// Set the selected slice to zero.
    Zero(Selection),
    /// Set the selected slice to a mean activation, broadcast over batch (and positions, if the mean has
    /// one position).
    Mean {
        /// Shape `[1, pos or 1, ...]` matching the point's trailing dimensions.
        mean: Activation,
        /// Where to write it.
        selection: Selection,
    },
    /// Any function of the activation.
    Custom(HookFn<'a>),
}

/// The hooks of one forward pass: interventions per point, and an optional cache with a filter.
#[derive(Default)]
pub struct Hooks<'a> {
    interventions: HashMap<HookPoint, Vec<Intervention<'a>>>,
    cache: Option<(HookFilter, ActivationCache)>,
}

impl<'a> Hooks<'a> {
    /// No hooks: the forward pass runs untouched.
    pub fn none() -> Self {
        Self::default()
    }

    /// Records every point selected by `filter`.
    pub fn caching(filter: HookFilter) -> Self {
        Self {
            interventions: HashMap::new(),
            cache: Some((filter, ActivationCache::new())),
        }
    }

    /// Adds caching of the points selected by `filter` (values after interventions).
    pub fn with_cache(mut self, filter: HookFilter) -> Self {
        self.cache = Some((filter, ActivationCache::new()));
        self
    }

    /// Adds an intervention at `point` (several at one point run in the order added).
    pub fn add(&mut self, point: HookPoint, intervention: Intervention<'a>) -> &mut Self {
        self.interventions
            .entry(point)
            .or_default()
            .push(intervention);
        self
    }

    /// Builder form of [`Hooks::add`].
    pub fn with(mut self, point: HookPoint, intervention: Intervention<'a>) -> Self {
        self.add(point, intervention);
        self
    }

    /// Patches `point` from another run's cache (whole tensor or a selection).
    pub fn patch_from(
        mut self,
        cache: &ActivationCache,
        point: HookPoint,
        selection: Selection,
    ) -> Result<Self, ModelError> {
        let source = cache.require(&point)?.clone();
        self.add(point, Intervention::Patch { source, selection });
        Ok(self)
    }

    /// Whether any hook is installed (the model skips all hook work when not).
    pub fn is_active(&self) -> bool {
        !self.interventions.is_empty() || self.cache.is_some()
    }

    /// Whether `point` is read or written by these hooks.
    pub fn wants(&self, point: &HookPoint) -> bool {
        self.interventions.contains_key(point)
            || self.cache.as_ref().is_some_and(|(f, _)| f.matches(point))
    }

    /// Takes the recorded cache out (empty if caching was off).
    pub fn take_cache(&mut self) -> ActivationCache {
        self.cache
            .as_mut()
            .map(|(_, c)| std::mem::take(c))
            .unwrap_or_default()
    }

    /// Checks every intervention's point against a model of the given size.
    pub fn validate(&self, encoder_layers: usize, decoder_layers: usize) -> Result<(), ModelError> {
        for p in self.interventions.keys() {
            p.validate(encoder_layers, decoder_layers)?;
        }
        if let Some((f, _)) = &self.cache {
            f.validate(encoder_layers, decoder_layers)?;
        }
        Ok(())
    }

    /// Checks every intervention's point and the cache filter against `known`, the points of a model
    /// (encoder-only models pass [`HookPoint::encoder_only`]).
    pub fn validate_in(&self, known: &[HookPoint]) -> Result<(), ModelError> {
        for p in self.interventions.keys() {
            p.validate_in(known)?;
        }
        if let Some((f, _)) = &self.cache {
            f.validate_in(known)?;
        }
        Ok(())
    }

    /// Runs the hooks of `point` on a rank-3 activation.
    pub fn apply3(&mut self, point: HookPoint, x: Tensor<3>) -> Result<Tensor<3>, ModelError> {
        if !self.wants(&point) {
            return Ok(x);
        }
        self.apply(point, Activation::Rank3(x))?.rank3(&point)
    }

    /// Runs the hooks of `point` on a rank-4 activation.
    pub fn apply4(&mut self, point: HookPoint, x: Tensor<4>) -> Result<Tensor<4>, ModelError> {
        if !self.wants(&point) {
            return Ok(x);
        }
        self.apply(point, Activation::Rank4(x))?.rank4(&point)
    }

    fn apply(&mut self, point: HookPoint, mut x: Activation) -> Result<Activation, ModelError> {
        if let Some(list) = self.interventions.get_mut(&point) {
            for iv in list.iter_mut() {
                x = intervene(&point, x, iv)?;
            }
        }
        if let Some((filter, cache)) = &mut self.cache {
            if filter.matches(&point) {
                cache.insert(point, x.clone());
            }
        }
        Ok(x)
    }
}

fn intervene(
    point: &HookPoint,
    x: Activation,
    iv: &mut Intervention<'_>,
) -> Result<Activation, ModelError> {
    match iv {
        Intervention::Custom(f) => {
            let dims = x.dims();
            let out = f(point, x)?;
            if out.dims() != dims {
                return Err(ModelError::HookShape {
                    point: point.to_string(),
                    expected: format!("{dims:?} from the custom hook"),
                    found: format!("{:?}", out.dims()),
                });
            }
            Ok(out)
        }
        Intervention::Patch { source, selection } => {
            check_same_shape(point, &x, source)?;
            blend(point, x, source.clone(), selection)
        }
        Intervention::Zero(selection) => {
            let zeros = match &x {
                Activation::Rank3(t) => Activation::Rank3(t.zeros_like()),
                Activation::Rank4(t) => Activation::Rank4(t.zeros_like()),
            };
            blend(point, x, zeros, selection)
        }
        Intervention::Mean { mean, selection } => {
            let full = broadcast_to(point, mean, &x)?;
            blend(point, x, full, selection)
        }
    }
}

fn check_same_shape(point: &HookPoint, x: &Activation, src: &Activation) -> Result<(), ModelError> {
    if x.dims() != src.dims() {
        return Err(ModelError::HookShape {
            point: point.to_string(),
            expected: format!("{:?} (the activation being patched)", x.dims()),
            found: format!("{:?} (the patch source)", src.dims()),
        });
    }
    Ok(())
}

fn broadcast_to(
    point: &HookPoint,
    mean: &Activation,
    x: &Activation,
) -> Result<Activation, ModelError> {
    let target = x.dims();
    let src = mean.dims();
    let ok = src.len() == target.len() && src.iter().zip(&target).all(|(s, t)| *s == *t || *s == 1);
    if !ok {
        return Err(ModelError::HookShape {
            point: point.to_string(),
            expected: format!("a mean broadcastable to {target:?}"),
            found: format!("{src:?}"),
        });
    }
    Ok(match (mean, x) {
        (Activation::Rank3(m), Activation::Rank3(_)) => {
            Activation::Rank3(m.clone().expand([target[0], target[1], target[2]]))
        }
        (Activation::Rank4(m), Activation::Rank4(_)) => Activation::Rank4(
            m.clone()
                .expand([target[0], target[1], target[2], target[3]]),
        ),
        _ => unreachable!("ranks were compared above"),
    })
}

/// `x` with the selected slice taken from `src` (same shape).
fn blend(
    point: &HookPoint,
    x: Activation,
    src: Activation,
    sel: &Selection,
) -> Result<Activation, ModelError> {
    if sel.is_all() {
        return Ok(src);
    }
    let dims = x.dims();
    let layout = point.layout();
    let check = |idx: &Option<Vec<usize>>, axis: Option<usize>, what: &str| {
        if let Some(list) = idx {
            let axis = axis.ok_or_else(|| ModelError::HookShape {
                point: point.to_string(),
                expected: format!("a per-head point to select {what}"),
                found: format!("{dims:?}"),
            })?;
            if let Some(bad) = list.iter().find(|&&i| i >= dims[axis]) {
                return Err(ModelError::HookShape {
                    point: point.to_string(),
                    expected: format!("{what} below {}", dims[axis]),
                    found: format!("{what} {bad}"),
                });
            }
        }
        Ok::<(), ModelError>(())
    };
    check(&sel.positions, Some(layout.pos), "positions")?;
    check(&sel.heads, layout.head, "heads")?;
    check(&sel.batch, Some(0), "batch rows")?;

    let n: usize = dims.iter().product();
    let mut mask = vec![false; n];
    let strides: Vec<usize> = (0..dims.len())
        .map(|i| dims[i + 1..].iter().product())
        .collect();
    let contains =
        |list: &Option<Vec<usize>>, i: usize| list.as_ref().is_none_or(|l| l.contains(&i));
    for (flat, m) in mask.iter_mut().enumerate() {
        let coord = |axis: usize| (flat / strides[axis]) % dims[axis];
        *m = contains(&sel.batch, coord(0))
            && contains(&sel.positions, coord(layout.pos))
            && layout.head.is_none_or(|h| contains(&sel.heads, coord(h)));
    }
    Ok(match (x, src) {
        (Activation::Rank3(x), Activation::Rank3(s)) => {
            let device = x.device();
            let m: Tensor<3, Bool> =
                Tensor::from_data(TensorData::new(mask, [dims[0], dims[1], dims[2]]), &device);
            Activation::Rank3(x.mask_where(m, s))
        }
        (Activation::Rank4(x), Activation::Rank4(s)) => {
            let device = x.device();
            let m: Tensor<4, Bool> = Tensor::from_data(
                TensorData::new(mask, [dims[0], dims[1], dims[2], dims[3]]),
                &device,
            );
            Activation::Rank4(x.mask_where(m, s))
        }
        _ => {
            return Err(ModelError::HookShape {
                point: point.to_string(),
                expected: "source and target of the same rank".into(),
                found: "different ranks".into(),
            })
        }
    })
}
