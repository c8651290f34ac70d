//! Link-time facts torch-sys does not take care of for a library loaded by GIMP, Krita or a C program.
//!
//! The developer build (the venv's torch, `install/setup.sh`):
//! 1. `--as-needed` drops `libtorch_cuda.so` (no symbol of it is referenced directly), and CUDA is then
//!    never available at run time. We force it into DT_NEEDED when the libtorch build has it.
//! 2. Host processes do not set LD_LIBRARY_PATH, so every artefact gets an rpath to torch's lib dir.
//!
//! The release build (`CLIPSHAPE_RELEASE=1`, `install/package.sh`): nothing of the build machine.
//! The library needs the CPU engine alone (`libtorch_cpu.so`, `libc10.so`), found through
//! `$ORIGIN` (the library's own folder; `$ORIGIN/../lib` for the command line); the GPU engine is
//! loaded at run time when a GPU is asked for (`device.rs`). DT_RPATH rather than DT_RUNPATH, so
//! an LD_LIBRARY_PATH naming another libtorch cannot take the bundle's place.
//!
//! Either way the libtorch version built against is compiled in (`CLIPSHAPE_TORCH_VERSION`), so
//! the library can refuse another one by name.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn env_rerun(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok()
}

/// The torch package the build uses, through its interpreter: (lib dir, version without `+…`).
fn torch_from_python() -> Option<(PathBuf, String)> {
    let python = if env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
    let out = Command::new(python)
        .args([
            "-c",
            "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib')); print(torch.__version__)",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let dir = lines.next()?.trim().to_string();
    let version = lines.next()?.trim().split('+').next()?.to_string();
    (!dir.is_empty()).then(|| (PathBuf::from(dir), version))
}

/// The same lookup torch-sys performs, so both agree on which libtorch is linked.
fn libtorch() -> Option<(PathBuf, Option<String>)> {
    if env_rerun("LIBTORCH_USE_PYTORCH").is_some() {
        return torch_from_python().map(|(dir, v)| (dir, Some(v)));
    }
    if let Some(lib) = env_rerun("LIBTORCH_LIB") {
        return Some((PathBuf::from(lib).join("lib"), None));
    }
    env_rerun("LIBTORCH").map(|root| (PathBuf::from(root).join("lib"), None))
}

pub fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let release = env_rerun("CLIPSHAPE_RELEASE").is_some_and(|v| v == "1");
    let Some((lib, version)) = libtorch() else {
        println!("cargo:warning=libtorch lib dir not found: no rpath and no forced libtorch_cuda link");
        println!("cargo:rustc-env=CLIPSHAPE_TORCH_VERSION=");
        return;
    };
    println!("cargo:rustc-env=CLIPSHAPE_TORCH_VERSION={}", version.unwrap_or_default());
    println!("cargo:rustc-link-search=native={}", lib.display());
    if release {
        let origin =
            if env::var("CARGO_PKG_NAME").is_ok_and(|n| n == "clipshape") { "$ORIGIN" } else { "$ORIGIN/../lib" };
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{origin}");
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
