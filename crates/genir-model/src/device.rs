//! Backend selection: which burn devices this build has, by name (`--backend flex|wgpu|cuda`).

use burn::prelude::{Device, Int, Tensor, TensorData};

use crate::error::ModelError;

/// A burn backend genir can be built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Pure-Rust CPU backend (SIMD + rayon).
    Flex,
    /// wgpu (Vulkan, Metal, DX12; on CPU-only machines, Mesa's lavapipe).
    Wgpu,
    /// CUDA.
    Cuda,
}

impl Backend {
    /// Backends compiled into this build, in order of preference for CPU work.
    pub fn available() -> Vec<Backend> {
        let mut v = Vec::new();
        if cfg!(feature = "flex") {
            v.push(Backend::Flex);
        }
        if cfg!(feature = "wgpu") {
            v.push(Backend::Wgpu);
        }
        if cfg!(feature = "cuda") {
            v.push(Backend::Cuda);
        }
        v
    }

    /// The backend's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    /// The backend named by the environment variable `var` (e.g. `GENIR_BENCH_BACKEND`); `flex` when unset.
    pub fn from_env(var: &str) -> Result<Backend, ModelError> {
        std::env::var(var).map_or(Ok(Backend::Flex), |v| v.parse())
    }

    /// A usable device of this backend: an error if this build does not include it, or if its runtime cannot
    /// start (e.g. `wgpu` on a machine with no Vulkan, Metal or DX12 adapter, which burn reports by
    /// panicking in its device thread: the panic is caught here and returned as the error).
    pub fn device(self) -> Result<Device, ModelError> {
        let device = self.device_unchecked()?;
        if self == Backend::Flex {
            return Ok(device);
        }
        let probe = device.clone();
        std::panic::catch_unwind(move || {
            Tensor::<1>::zeros([1], &probe)
                .into_data()
                .try_to_vec::<f32>()
                .is_ok()
        })
        .ok()
        .filter(|&ok| ok)
        .map(|_| device)
        .ok_or_else(|| ModelError::Backend {
            name: self.name().into(),
            message:
                "the runtime could not start (no usable adapter or driver; see the message above)"
                    .into(),
        })
    }

    /// A device of this backend without starting its runtime, or an error if this build does not include it.
    pub fn device_unchecked(self) -> Result<Device, ModelError> {
        let missing = |feature: &str| ModelError::Backend {
            name: self.name().into(),
            message: format!("not built in; rebuild with `--features {feature}`"),
        };
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[allow(unreachable_patterns)]
            other => Err(missing(other.name())),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "flex" | "cpu" => Ok(Backend::Flex),
            "wgpu" | "vulkan" => Ok(Backend::Wgpu),
            "cuda" => Ok(Backend::Cuda),
            _ => Err(ModelError::Backend {
                name: s.into(),
                message: "unknown backend; expected flex, wgpu or cuda".into(),
            }),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Largest buffer glibc's `malloc` is told to serve from its heap (and so reuse) rather than map afresh:
/// 32 MiB, the most `mallopt(M_MMAP_THRESHOLD)` accepts on 64-bit Linux.
pub const HEAP_THRESHOLD: usize = 32 << 20;

/// Freed heap memory glibc keeps instead of returning it to the system: 256 MiB.
pub const TRIM_THRESHOLD: usize = 256 << 20;

/// Tells the C allocator to keep and reuse freed tensor buffers instead of mapping fresh pages for every
/// intermediate. burn's CPU backend allocates a new buffer per operation; by default glibc maps each buffer
/// above a (dynamic) threshold separately and unmaps it when freed, so every forward pass pays page faults
/// and zeroing for memory it just gave back (about 20% of a BERT or T5 forward on `flex`, measured in
/// docs/benchmarks.md). Process-wide, so genir's binaries (`genir`, `xtask`, the benchmarks) call it at
/// start and a library user may too. Equivalent to
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456`. Returns
/// whether the settings were applied (only on glibc Linux; elsewhere it does nothing and returns false).
pub fn reuse_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters; both values are within its accepted ranges.
        let applied = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_THRESHOLD as libc::c_int) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
        };
        tracing::debug!(
            applied,
            "malloc keeps freed buffers up to {HEAP_THRESHOLD} bytes"
        );
        applied
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Row indices as an `Int` tensor on `device`, for `select` along a batch axis (keep, reorder or repeat rows).
pub fn index_tensor(rows: &[usize], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(
        TensorData::new(
            rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
            [rows.len()],
        ),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_freed_memory_applies_on_glibc_linux() {
        assert_eq!(
            reuse_freed_memory(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
        // allocations still work, large and small, after the change
        let big = vec![1.0f32; HEAP_THRESHOLD / 4 + 1];
        let small: Vec<u8> = (0..100).collect();
        assert_eq!(big.iter().sum::<f32>() as usize, big.len());
        assert_eq!(small[99], 99);
    }
}
