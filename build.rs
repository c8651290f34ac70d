//! Link-time facts torch-sys does not take care of for a library loaded by GIMP, Krita or a C program:
//! 1. `--as-needed` drops `libtorch_cuda.so` (no symbol of it is referenced directly), and CUDA is then
//!    never available at run time. We force it into DT_NEEDED when the libtorch build has it.
//! 2. Host processes do not set LD_LIBRARY_PATH, so every artefact gets an rpath to torch's lib dir.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn env_rerun(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok()
}

/// The same lookup torch-sys performs, so both agree on which libtorch is linked.
fn libtorch_lib_dir() -> Option<PathBuf> {
    if env_rerun("LIBTORCH_USE_PYTORCH").is_some() {
        let python = if env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
        let out = Command::new(python)
            .args(["-c", "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"])
            .output()
            .ok()?;
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if let Some(lib) = env_rerun("LIBTORCH_LIB") {
        return Some(PathBuf::from(lib).join("lib"));
    }
    env_rerun("LIBTORCH").map(|root| PathBuf::from(root).join("lib"))
}

pub fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(lib) = libtorch_lib_dir() else {
        println!("cargo:warning=libtorch lib dir not found: no rpath and no forced libtorch_cuda link");
        return;
    };
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
