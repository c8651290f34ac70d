//! The libtorch engine this process runs on: which version it is, and the GPU engine loaded
//! when a GPU is asked for.
//!
//! A release (`install/package.sh`) ships the CPU engine beside the library (`libtorch_cpu.so`,
//! `libc10.so` and the few small libraries they need, ≈ 460 MB) and not the GPU engine
//! (`libtorch_cuda.so` and the CUDA libraries, ≈ 3 GB), so the library does not NEED
//! `libtorch_cuda.so`. libtorch registers its CUDA backend when `libtorch_cuda.so` is loaded, so
//! asking for a GPU loads it at run time: from `$CLIPSHAPE_GPU_ENGINE`, else from beside the CPU
//! engine; without it the answer is a plain "the GPU engine is not installed". The developer
//! build links `libtorch_cuda.so` (build.rs) and never needs the load.
//!
//! The library is built against one libtorch version (tch pins it) and another one loaded in its
//! place fails in ways that name nothing; the loaded engine's version is read beside it (a torch
//! wheel's `version.py`, a release's `torch_version.txt`) and another one is refused by name.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// The libtorch version this library was built against.
pub const TORCH_VERSION: &str = env!("CLIPSHAPE_TORCH_VERSION");

/// Where `$CLIPSHAPE_GPU_ENGINE` points: a folder holding `libtorch_cuda.so` (a torch CUDA
/// wheel's `torch/lib`, whose CUDA libraries it finds through its own rpath).
pub const GPU_ENGINE_ENV: &str = "CLIPSHAPE_GPU_ENGINE";

/// A file beside the CPU engine naming the GPU engine's folder (`install.sh --gpu-engine DIR`).
pub const GPU_ENGINE_FILE: &str = "gpu_engine.path";

/// The folder of the `libtorch_cpu.so` this process loaded (from /proc/self/maps; None where
/// there is no such file, or off Linux).
pub fn cpu_engine_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
}

/// The version of the engine in `dir`: its torch wheel's `../version.py`, or a release's
/// `torch_version.txt`; without `+…` (the CUDA flavour does not change the CPU engine's ABI).
pub fn version_in(dir: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join("torch_version.txt")) {
        return Some(text.trim().split('+').next()?.to_string());
    }
    let text = std::fs::read_to_string(dir.parent()?.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with("__version__"))?;
    let quoted = line.split(['\'', '"']).nth(1)?;
    Some(quoted.split('+').next()?.to_string())
}

/// Refuses, by name, a loaded libtorch of another version than the one this library was built
/// against. An engine whose version cannot be read is let through (a libtorch unpacked by hand).
pub fn check_version() -> Result<()> {
    static CHECKED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let Some(dir) = cpu_engine_dir() else { return Ok(()) };
        match version_in(&dir) {
            Some(v) if !TORCH_VERSION.is_empty() && v != TORCH_VERSION => Err(format!(
                "the libtorch loaded from {} is version {v}; this library was built for libtorch {TORCH_VERSION} and \
                 runs on that one only: reinstall CLIPShape, or remove the other libtorch from LD_LIBRARY_PATH",
                dir.display()
            )),
            _ => Ok(()),
        }
    });
    result.clone().map_err(Error::Device)
}

/// Whether libtorch's CUDA backend is registered: what it says when a tensor is put on a GPU
/// tells "no driver" or "no GPU" (registered) from "Could not run … from the 'CUDA' backend"
/// (not registered).
pub fn cuda_backend_registered() -> bool {
    match Tensor::f_zeros([1], (Kind::Float, Device::Cuda(0))) {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("'CUDA' backend"),
    }
}

/// What libtorch says when a tensor is put on the first GPU: None when it can be.
pub fn cuda_refusal() -> Option<String> {
    Tensor::f_zeros([1], (Kind::Float, Device::Cuda(0)))
        .err()
        .map(|e| Error::from(e).to_string().lines().next().unwrap_or_default().to_string())
}

/// Makes the CUDA backend available: at once when it is registered, else by loading the GPU
/// engine (see the module's documentation). The error says what to install, or why the engine
/// found did not load.
pub fn ensure_gpu_engine() -> Result<()> {
    static LOADING: Mutex<()> = Mutex::new(());
    let _one = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if cuda_backend_registered() {
        return Ok(());
    }
    // Named by the environment, else by a release's `install.sh --gpu-engine DIR` (a file beside
    // the CPU engine, read by every host), else beside the CPU engine itself.
    let beside = cpu_engine_dir();
    let named = std::env::var_os(GPU_ENGINE_ENV).map(PathBuf::from).or_else(|| {
        let text = std::fs::read_to_string(beside.as_ref()?.join(GPU_ENGINE_FILE)).ok()?;
        Some(PathBuf::from(text.trim()))
    });
    let Some(dir) = named.iter().chain(beside.iter()).find(|d| d.join("libtorch_cuda.so").is_file()) else {
        let places = match (&named, &beside) {
            (Some(n), Some(b)) => format!(
                "in {} (named by ${GPU_ENGINE_ENV} or {GPU_ENGINE_FILE}) nor beside the CPU engine ({})",
                n.display(),
                b.display()
            ),
            (Some(n), None) => format!("in {} (named by ${GPU_ENGINE_ENV})", n.display()),
            (None, Some(b)) => format!("beside the CPU engine ({}), and ${GPU_ENGINE_ENV} is not set", b.display()),
            (None, None) => format!("anywhere: ${GPU_ENGINE_ENV} is not set"),
        };
        return Err(Error::Device(format!(
            "the GPU engine is not installed: libtorch_cuda.so was not found {places}. Install it as README's \
             \"GPU\" section says, or run on the CPU"
        )));
    };
    if let Some(v) = version_in(dir).filter(|v| !TORCH_VERSION.is_empty() && v != TORCH_VERSION) {
        return Err(Error::Device(format!(
            "the GPU engine in {} is libtorch {v}; this library needs libtorch {TORCH_VERSION}",
            dir.display()
        )));
    }
    load_global(&dir.join("libtorch_cuda.so"))?;
    if cuda_backend_registered() {
        log::info!("loaded the GPU engine from {}", dir.display());
        Ok(())
    } else {
        Err(Error::Device(format!("the GPU engine in {} loaded but registered no CUDA backend", dir.display())))
    }
}

/// Whether a GPU engine is worth looking for without being asked (the `auto` device): an NVIDIA
/// driver is present.
pub fn gpu_driver_present() -> bool {
    Path::new("/dev/nvidiactl").exists() || Path::new("/proc/driver/nvidia/version").exists()
}

/// `dlopen(path, RTLD_NOW | RTLD_GLOBAL)`: the engine's symbols must be visible to the libtorch
/// already loaded, and its static initialisers register the CUDA backend.
fn load_global(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::arg("GPU engine", format!("{}: a path with a NUL byte", path.display())))?;
    // SAFETY: the second of the library's two documented `unsafe` uses outside the C ABI (see
    // ARCHITECTURE.md, "Linking"). `c` is a valid C string for the call; the handle is kept for
    // the life of the process (the engine is never unloaded), and dlerror's message is copied
    // before any other dl call on this thread.
    unsafe {
        let handle = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if handle.is_null() {
            let why = libc::dlerror();
            let why = if why.is_null() {
                "unknown reason".to_string()
            } else {
                std::ffi::CStr::from_ptr(why).to_string_lossy().into_owned()
            };
            return Err(Error::Device(format!("the GPU engine {} could not be loaded: {why}", path.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loaded_engine_is_found_and_is_the_version_built_for() {
        let _ = Tensor::f_zeros([1], (Kind::Float, Device::Cpu)).unwrap();
        let dir = cpu_engine_dir().expect("libtorch_cpu.so is mapped");
        assert!(dir.join("libtorch_cpu.so").is_file());
        assert_eq!(version_in(&dir).as_deref(), Some(TORCH_VERSION));
        check_version().unwrap();
    }

    #[test]
    fn versions_are_read_from_a_wheel_or_a_release() {
        let d = tempfile::tempdir().unwrap();
        let lib = d.path().join("torch/lib");
        std::fs::create_dir_all(&lib).unwrap();
        assert_eq!(version_in(&lib), None);
        std::fs::write(d.path().join("torch/version.py"), "x = 1\n__version__ = '2.10.1+cpu'\n").unwrap();
        assert_eq!(version_in(&lib).as_deref(), Some("2.10.1"));
        std::fs::write(lib.join("torch_version.txt"), "2.11.0\n").unwrap();
        assert_eq!(version_in(&lib).as_deref(), Some("2.11.0"));
    }
}
