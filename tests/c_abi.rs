//! Builds tests/c/abi_test.c with the system C compiler against include/clipshape.h and the
//! freshly built libclipshape.so, then runs it with LD_LIBRARY_PATH unset: a host process
//! (GIMP, Krita, a C program) must load the library and libtorch through the rpath alone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{golden, io, tmpdir};
use tch::Kind;

/// target/<profile>/deps/, beside this test binary: `cargo test` rebuilds the cdylib there
/// (the copy in target/<profile>/ is only refreshed by `cargo build`).
fn artefact_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().expect("deps dir").to_path_buf()
}

fn write_f32(path: &Path, t: &tch::Tensor) {
    let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).unwrap();
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn c_program_renders_the_golden_edit_without_ld_library_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = artefact_dir();
    let so = lib_dir.join("libclipshape.so");
    assert!(so.exists(), "{} not built", so.display());
    let tmp = tmpdir();
    let io = io("stylegan2_io.safetensors");
    write_f32(&tmp.path().join("latent.f32"), &io.tensor("wplus").unwrap().get(0));
    write_f32(&tmp.path().join("shift.f32"), &io.tensor("shift_x").unwrap());
    // Expected pixels: the golden renders through the documented mapping round((x+1)·127.5).
    let pixels =
        clipshape::edit::to_rgba8(&io.tensor("img_shift").unwrap(), clipshape::edit::PixelFormat::Rgba8).unwrap();
    std::fs::write(tmp.path().join("expected.rgba"), pixels.concat()).unwrap();

    let exe = tmp.path().join("abi_test");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/abi_test.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .args(["-lclipshape", "-lm", "-lpthread"])
        .status()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(status.success(), "compiling abi_test.c failed");

    let out = Command::new(&exe)
        .env_remove("LD_LIBRARY_PATH")
        .arg(golden("stylegan2.pt"))
        .arg(tmp.path().join("latent.f32"))
        .arg(tmp.path().join("shift.f32"))
        .arg(tmp.path().join("expected.rgba"))
        .arg(tmp.path())
        .arg(golden("e4e.pt"))
        .arg(golden("clip_jit.pt"))
        .arg(golden("bpe_simple_vocab_16e6.txt.gz"))
        .output()
        .expect("run abi_test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "abi_test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
