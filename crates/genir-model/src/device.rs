//! Backend selection: which burn devices this build has, by name (`--backend flex|wgpu|cuda`).

use burn::prelude::Device;

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

    /// A device of this backend, or an error if this build does not include it.
    pub fn device(self) -> Result<Device, ModelError> {
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
