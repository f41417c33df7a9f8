//! Reading and writing the few tensors that edits touch, by name, on host vectors.
//!
//! Names are genir's (and the edit log's), with genir's layouts:
//! - `shared`: the shared embedding `[vocab, d_model]`; also the output (unembedding) table when the head is
//!   tied, which is the case for models trained from scratch;
//! - `lm_head`: the separate output table `[vocab, d_model]` of untied models;
//! - `decoder.blocks.{l}.ff.wo`: the output matrix of decoder block `l`'s feed-forward block, `[d_ff, d_model]`
//!   (the transpose of Hugging Face's `decoder.block.{l}.layer.2.DenseReluDense.wo.weight`), used as
//!   `out = hidden @ wo`.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;
use genir_model::t5::T5Model;
use genir_model::weights::HostTensor;

use crate::error::{EditError, Result};

/// Name of the output table that docid rows live in.
pub fn unembed_name(model: &T5Model) -> &'static str {
    if model.lm_head.is_some() {
        "lm_head"
    } else {
        "shared"
    }
}

/// Name of the feed-forward output matrix of decoder block `layer`.
pub fn wo_name(layer: usize) -> String {
    format!("decoder.blocks.{layer}.ff.wo")
}

fn param<'m>(model: &'m T5Model, name: &str) -> Result<&'m Param<Tensor<2>>> {
    if name == "shared" {
        return Ok(&model.shared);
    }
    if name == "lm_head" {
        return model
            .lm_head
            .as_ref()
            .ok_or_else(|| EditError::Invalid("the model has no separate lm_head".into()));
    }
    let layer = parse_wo(name)?;
    model
        .decoder
        .blocks
        .get(layer)
        .map(|b| &b.ff.wo)
        .ok_or_else(|| EditError::Invalid(format!("tensor {name}: no decoder block {layer}")))
}

fn param_mut<'m>(model: &'m mut T5Model, name: &str) -> Result<&'m mut Param<Tensor<2>>> {
    if name == "shared" {
        return Ok(&mut model.shared);
    }
    if name == "lm_head" {
        return model
            .lm_head
            .as_mut()
            .ok_or_else(|| EditError::Invalid("the model has no separate lm_head".into()));
    }
    let layer = parse_wo(name)?;
    model
        .decoder
        .blocks
        .get_mut(layer)
        .map(|b| &mut b.ff.wo)
        .ok_or_else(|| EditError::Invalid(format!("tensor {name}: no decoder block {layer}")))
}

fn parse_wo(name: &str) -> Result<usize> {
    name.strip_prefix("decoder.blocks.")
        .and_then(|r| r.strip_suffix(".ff.wo"))
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| EditError::Invalid(format!("unknown tensor name {name:?}")))
}

fn to_host(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| EditError::Tensor(format!("{e:?}")))
}

/// Shape `[rows, cols]` of a named tensor.
pub fn shape(model: &T5Model, name: &str) -> Result<[usize; 2]> {
    Ok(param(model, name)?.val().dims())
}

/// The whole named tensor.
pub fn read(model: &T5Model, name: &str) -> Result<HostTensor> {
    let t = param(model, name)?.val();
    let dims = t.dims();
    Ok(HostTensor::new(dims.to_vec(), to_host(t)?))
}

/// Rows `start..start + n` of a named tensor, row-major.
pub fn read_rows(model: &T5Model, name: &str, start: usize, n: usize) -> Result<Vec<f32>> {
    let t = param(model, name)?.val();
    let [r, c] = t.dims();
    if start.checked_add(n).is_none_or(|end| end > r) {
        return Err(EditError::Invalid(format!(
            "{n} rows from row {start} of {name} but it has {r}"
        )));
    }
    to_host(t.slice([start..start + n, 0..c]))
}

/// Overwrites rows `start..` of a named tensor with `values` (`n * cols` values).
pub fn write_rows(model: &mut T5Model, name: &str, start: usize, values: &[f32]) -> Result<()> {
    let p = param_mut(model, name)?;
    let [r, c] = p.val().dims();
    if c == 0
        || !values.len().is_multiple_of(c)
        || start
            .checked_add(values.len() / c)
            .is_none_or(|end| end > r)
    {
        return Err(EditError::Invalid(format!(
            "cannot write {} values at row {start} of {name} [{r}, {c}]",
            values.len()
        )));
    }
    let n = values.len() / c;
    let device = p.val().device();
    let rows = Tensor::<2>::from_data(TensorData::new(values.to_vec(), [n, c]), &device);
    *p = p
        .clone()
        .map(|t| t.slice_assign([start..start + n, 0..c], rows));
    Ok(())
}

/// Replaces a named tensor (same shape).
pub fn write(model: &mut T5Model, name: &str, t: &HostTensor) -> Result<()> {
    let p = param_mut(model, name)?;
    let dims = p.val().dims();
    if t.shape != dims {
        return Err(EditError::Invalid(format!(
            "tensor {name} has shape {dims:?}, the replacement {:?}",
            t.shape
        )));
    }
    let device = p.val().device();
    let value = Tensor::<2>::from_data(TensorData::new(t.values.clone(), dims), &device);
    *p = p.clone().map(|_| value);
    Ok(())
}

/// Appends `n` zero rows to the vocabulary tables (`shared`, and `lm_head` when untied); the vocabulary size
/// grows by `n`.
pub fn grow_vocab(model: &mut T5Model, n: usize) -> Result<()> {
    let d = model.config.d_model;
    let device = model.shared.val().device();
    let zeros = || Tensor::<2>::zeros([n, d], &device);
    model.shared = model
        .shared
        .clone()
        .map(|t| Tensor::cat(vec![t, zeros()], 0));
    if let Some(h) = model.lm_head.take() {
        model.lm_head = Some(h.map(|t| Tensor::cat(vec![t, zeros()], 0)));
    }
    model.config.vocab_size += n;
    Ok(())
}

/// Drops the last rows of the vocabulary tables so that `vocab` rows remain.
pub fn truncate_vocab(model: &mut T5Model, vocab: usize) -> Result<()> {
    let [v, d] = model.shared.val().dims();
    if vocab > v {
        return Err(EditError::Invalid(format!(
            "cannot truncate a vocabulary of {v} rows to {vocab}"
        )));
    }
    model.shared = model.shared.clone().map(|t| t.slice([0..vocab, 0..d]));
    if let Some(h) = model.lm_head.take() {
        model.lm_head = Some(h.map(|t| t.slice([0..vocab, 0..d])));
    }
    model.config.vocab_size = vocab;
    Ok(())
}

/// `a + u @ v` for `a: [r, c]`, `u: [r, k]`, `v: [k, c]`, on host in a fixed order (so that replaying an
/// edit gives identical bits).
pub fn add_low_rank(a: &HostTensor, u: &HostTensor, v: &HostTensor) -> Result<HostTensor> {
    let &[r, c] = a.shape.as_slice() else {
        return Err(EditError::Invalid(format!(
            "a low-rank update needs a matrix, not a tensor of shape {:?}",
            a.shape
        )));
    };
    let k = u.shape.get(1).copied().unwrap_or(0);
    if u.shape != [r, k] || v.shape != [k, c] {
        return Err(EditError::Invalid(format!(
            "low-rank update {:?} x {:?} does not fit a {:?} matrix",
            u.shape, v.shape, a.shape
        )));
    }
    let mut out = a.values.clone();
    for i in 0..r {
        let row = &mut out[i * c..(i + 1) * c];
        for j in 0..k {
            let f = u.values[i * k + j];
            if f != 0.0 {
                let vr = &v.values[j * c..(j + 1) * c];
                for (o, x) in row.iter_mut().zip(vr) {
                    *o += f * x;
                }
            }
        }
    }
    Ok(HostTensor::new(vec![r, c], out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_rank_update_checks_every_shape() {
        let a = HostTensor::new(vec![2, 3], vec![0.0; 6]);
        let u = HostTensor::new(vec![2, 1], vec![1.0, 2.0]);
        let v = HostTensor::new(vec![1, 3], vec![1.0, 0.0, -1.0]);
        let out = add_low_rank(&a, &u, &v).unwrap();
        assert_eq!(out.values, [1.0, 0.0, -1.0, 2.0, 0.0, -2.0]);
        // a base that is not a matrix (e.g. a corrupt edit log's base tensor) is an error, not a panic
        for shape in [vec![], vec![6], vec![1, 2, 3]] {
            let n = shape.iter().product::<usize>();
            let bad = HostTensor::new(shape.clone(), vec![0.0; n]);
            let e = add_low_rank(&bad, &u, &v).unwrap_err().to_string();
            assert!(e.contains("matrix"), "{shape:?}: {e}");
        }
        let e = add_low_rank(&a, &v, &u).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
    }
}
