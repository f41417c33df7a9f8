//! Named f32 tensors read from Hugging Face weight files (safetensors or `pytorch_model.bin`) and
//! written back as safetensors, atomically.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use crate::error::ModelError;

/// A host-side tensor: shape and row-major f32 values.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// A tensor from its parts (`values.len()` must equal the product of `shape`).
    pub fn new(shape: Vec<usize>, values: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Self { shape, values }
    }

    /// The transpose of a matrix.
    pub fn transposed(&self) -> Self {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                out[j * r + i] = self.values[i * c + j];
            }
        }
        Self::new(vec![c, r], out)
    }
}

/// The tensors of one weights file, taken out by name with their expected shape.
#[derive(Debug)]
pub struct WeightFile {
    path: PathBuf,
    tensors: HashMap<String, HostTensor>,
    taken: HashSet<String>,
    /// Non-float tensors (integer buffers such as BERT's `embeddings.position_ids`), name -> dtype: not loaded.
    skipped: HashMap<String, String>,
}

impl WeightFile {
    /// Reads `model.safetensors` or, failing that, `pytorch_model.bin` from a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let st = dir.join("model.safetensors");
        let bin = dir.join("pytorch_model.bin");
        if st.exists() {
            Self::read_safetensors(&st)
        } else if bin.exists() {
            Self::read_pytorch(&bin)
        } else {
            Err(ModelError::io(
                st,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "neither model.safetensors nor pytorch_model.bin is in the folder",
                ),
            ))
        }
    }

    /// Reads a safetensors file (f32, f16, bf16 and f64 tensors are converted to f32).
    pub fn read_safetensors(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Weights {
                path: path.into(),
                message: e.to_string(),
            })?;
        let mut tensors = HashMap::new();
        let mut skipped = HashMap::new();
        for (name, view) in st.tensors() {
            if !is_float(view.dtype()) {
                tracing::debug!(file = %path.display(), %name, dtype = ?view.dtype(), "non-float tensor not loaded");
                skipped.insert(name, format!("{:?}", view.dtype()));
                continue;
            }
            let values = to_f32(&view).map_err(|message| ModelError::Weights {
                path: path.into(),
                message: format!("tensor `{name}`: {message}"),
            })?;
            tensors.insert(name, HostTensor::new(view.shape().to_vec(), values));
        }
        Ok(Self {
            path: path.into(),
            tensors,
            taken: HashSet::new(),
            skipped,
        })
    }

    /// Reads a PyTorch `state_dict` file through burn-store's reader.
    pub fn read_pytorch(path: &Path) -> Result<Self, ModelError> {
        use burn::store::pytorch_reader::{DType as PtDtype, PytorchReader};
        let bad = |message: String| ModelError::Weights {
            path: path.into(),
            message,
        };
        let reader = PytorchReader::new(path).map_err(|e| bad(e.to_string()))?;
        let mut tensors = HashMap::new();
        let mut skipped = HashMap::new();
        for (name, t) in reader.tensors() {
            let float = match t.dtype() {
                PtDtype::F64 => FloatBytes::F64,
                PtDtype::F32 => FloatBytes::F32,
                PtDtype::F16 => FloatBytes::F16,
                PtDtype::BF16 => FloatBytes::BF16,
                other => {
                    tracing::debug!(file = %path.display(), %name, dtype = ?other, "non-float tensor not loaded");
                    skipped.insert(name.clone(), format!("{other:?}"));
                    continue;
                }
            };
            let bytes = t.read().map_err(|e| bad(e.to_string()))?;
            tensors.insert(
                name.clone(),
                HostTensor::new(t.shape().to_vec(), float.decode(&bytes)),
            );
        }
        Ok(Self {
            path: path.into(),
            tensors,
            taken: HashSet::new(),
            skipped,
        })
    }

    /// A file built in memory (tests, conversions).
    pub fn from_tensors(path: impl Into<PathBuf>, tensors: HashMap<String, HostTensor>) -> Self {
        Self {
            path: path.into(),
            tensors,
            taken: HashSet::new(),
            skipped: HashMap::new(),
        }
    }

    /// The file these tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names and dtypes of the non-float tensors in the file (integer buffers), which are not loaded, sorted.
    pub fn skipped(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .skipped
            .iter()
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect();
        v.sort();
        v
    }

    /// All (float) tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }

    /// A tensor by name without marking it used.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Takes the tensor `name`, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor, ModelError> {
        if let Some(dtype) = self.skipped.get(name) {
            return Err(ModelError::Weights {
                path: self.path.clone(),
                message: format!("tensor `{name}` has dtype {dtype}, expected a float type"),
            });
        }
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.into(),
            })?;
        if t.shape != shape {
            return Err(ModelError::TensorShape {
                path: self.path.clone(),
                name: name.into(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        self.taken.insert(name.to_string());
        Ok(t.clone())
    }

    /// Takes the first of several alternative names that exists.
    pub fn take_any(&mut self, names: &[&str], shape: &[usize]) -> Result<HostTensor, ModelError> {
        let name = names
            .iter()
            .find(|n| self.contains(n))
            .copied()
            .unwrap_or(names[0]);
        self.take(name, shape)
    }

    /// Names present in the file that nothing took, sorted.
    pub fn unused(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !self.taken.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }
}

/// Little-endian float encodings found in checkpoints.
#[derive(Clone, Copy)]
enum FloatBytes {
    F64,
    F32,
    F16,
    BF16,
}

impl FloatBytes {
    fn decode(self, data: &[u8]) -> Vec<f32> {
        match self {
            FloatBytes::F64 => data
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            FloatBytes::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            FloatBytes::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            FloatBytes::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

fn to_f32(view: &TensorView<'_>) -> Result<Vec<f32>, String> {
    let float = match view.dtype() {
        Dtype::F64 => FloatBytes::F64,
        Dtype::F32 => FloatBytes::F32,
        Dtype::F16 => FloatBytes::F16,
        Dtype::BF16 => FloatBytes::BF16,
        other => return Err(format!("dtype {other:?} is not a float type")),
    };
    Ok(float.decode(view.data()))
}

/// Writes named f32 tensors (and string metadata) as one safetensors file: to a temporary file in the same
/// folder, then renamed into place, so a reader never sees a half-written file.
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), ModelError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let b: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), b, t.shape.clone())
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, b, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| ModelError::Weights {
                    path: path.into(),
                    message: format!("tensor `{name}`: {e}"),
                })
        })
        .collect::<Result<_, _>>()?;
    let data = safetensors::serialize(views, metadata).map_err(|e| ModelError::Weights {
        path: path.into(),
        message: e.to_string(),
    })?;
    Ok(genir_io::write_atomic(path, &data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors_name_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut m = BTreeMap::new();
        m.insert(
            "a.weight".to_string(),
            HostTensor::new(vec![2, 3], (0..6).map(|v| v as f32).collect()),
        );
        write_safetensors(&path, &m, None).unwrap();
        let mut w = WeightFile::read_safetensors(&path).unwrap();
        let err = w.take("a.weight", &[3, 2]).unwrap_err().to_string();
        assert!(err.contains("a.weight") && err.contains("[2, 3]"), "{err}");
        let err = w.take("b.weight", &[1]).unwrap_err().to_string();
        assert!(err.contains("missing tensor `b.weight`"), "{err}");
        let t = w.take("a.weight", &[2, 3]).unwrap();
        assert_eq!(t.transposed().values, vec![0., 3., 1., 4., 2., 5.]);
        assert!(w.unused().is_empty());
    }

    #[test]
    fn integer_buffers_are_skipped_not_fatal() {
        // BERT checkpoints carry `embeddings.position_ids` (int64) next to the float weights.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let ids: Vec<u8> = (0..4i64).flat_map(|v| v.to_le_bytes()).collect();
        let w: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            (
                "embeddings.position_ids".to_string(),
                TensorView::new(Dtype::I64, vec![1, 4], &ids).unwrap(),
            ),
            (
                "w".to_string(),
                TensorView::new(Dtype::F32, vec![2], &w).unwrap(),
            ),
        ];
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        let mut f = WeightFile::read_safetensors(&path).unwrap();
        assert_eq!(f.names(), vec!["w".to_string()]);
        assert_eq!(
            f.skipped(),
            vec![("embeddings.position_ids".to_string(), "I64".to_string())]
        );
        let err = f
            .take("embeddings.position_ids", &[1, 4])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("embeddings.position_ids") && err.contains("I64"),
            "{err}"
        );
        assert_eq!(f.take("w", &[2]).unwrap().values, vec![1.0, 2.0]);
    }

    #[test]
    fn truncated_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut m = BTreeMap::new();
        m.insert("x".to_string(), HostTensor::new(vec![4], vec![1.0; 4]));
        write_safetensors(&path, &m, None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = WeightFile::read_safetensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("w.safetensors") && err.contains("corrupt"),
            "{err}"
        );
    }
}
