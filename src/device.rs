//! Device choice. CUDA is available when the GPU engine is loaded (linked in the developer
//! build, loaded on request in a release: see [`crate::engine`]) and a driver and GPU are
//! present; otherwise everything runs on the CPU.

use tch::Device;

use crate::error::{Error, Result};

/// What the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The first GPU when there is one, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceRequest {
    /// `auto`, `cpu`, `cuda`, `cuda:N` or `gpu:N`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" | "" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "gpu" => Ok(DeviceRequest::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .or_else(|| s.strip_prefix("gpu:"))
                .and_then(|n| n.parse().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| Error::arg("device", format!("`{s}` is not one of auto, cpu, cuda, cuda:N"))),
        }
    }

    /// The device to use, or an error when a GPU that is not there was asked for by index (or
    /// the GPU engine is not installed), or the loaded libtorch is not the one built for.
    pub fn resolve(self) -> Result<Device> {
        crate::engine::check_version()?;
        match self {
            DeviceRequest::Cpu => Ok(Device::Cpu),
            DeviceRequest::Auto => {
                // A driver is there: a GPU engine installed beside the CPU one is used.
                if crate::engine::gpu_driver_present() {
                    if let Err(e) = crate::engine::ensure_gpu_engine() {
                        log::info!("auto device: {e}; running on the CPU");
                    }
                }
                Ok(if cuda_device_count() > 0 { Device::Cuda(0) } else { Device::Cpu })
            }
            DeviceRequest::Cuda(i) => {
                crate::engine::ensure_gpu_engine()?;
                let n = cuda_device_count();
                if i < n {
                    Ok(Device::Cuda(i))
                } else if n == 0 {
                    let why = crate::engine::cuda_refusal().unwrap_or_else(|| "no GPU is visible".into());
                    Err(Error::Device(format!("cuda:{i} requested but CUDA is not available: {why}")))
                } else {
                    Err(Error::Device(format!("cuda:{i} requested but only {n} GPU(s) are visible")))
                }
            }
        }
    }
}

pub fn cuda_device_count() -> usize {
    if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    }
}

/// Human-readable device name for logs and `info`.
pub fn describe(d: Device) -> String {
    match d {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

/// The most threads a caller may ask for: the machine's logical CPUs. libtorch starts every
/// thread it is told to (100 000 of them hang the process), and more than one per logical CPU
/// only slows the work down.
pub fn max_threads() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

/// Sets the intra-op thread count; 0 keeps libtorch's default (one per physical core).
pub fn set_threads(n: usize) -> Result<()> {
    let max = max_threads();
    if n > max {
        return Err(Error::arg("threads", format!("{n} is more than this machine's {max} logical CPUs")));
    }
    if n > 0 {
        tch::set_num_threads(n as i32);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(DeviceRequest::parse("CPU").unwrap(), DeviceRequest::Cpu);
        assert_eq!(DeviceRequest::parse("cuda:2").unwrap(), DeviceRequest::Cuda(2));
        assert_eq!(DeviceRequest::parse("auto").unwrap(), DeviceRequest::Auto);
        let e = DeviceRequest::parse("tpu").unwrap_err().to_string();
        assert!(e.contains("device") && e.contains("tpu"), "{e}");
    }

    #[test]
    fn absent_gpu_index_is_a_clear_error() {
        let e = DeviceRequest::Cuda(99).resolve().unwrap_err().to_string();
        assert!(e.contains("cuda:99"), "{e}");
    }
}
