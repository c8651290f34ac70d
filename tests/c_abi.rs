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

/// Builds abi_test.c and prepares its inputs; returns (program, its arguments, the temp dir).
fn prepare() -> (PathBuf, Vec<PathBuf>, tempfile::TempDir) {
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
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
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
    let args = vec![
        golden("stylegan2.pt"),
        tmp.path().join("latent.f32"),
        tmp.path().join("shift.f32"),
        tmp.path().join("expected.rgba"),
        tmp.path().to_path_buf(),
        golden("e4e.pt"),
        golden("clip_jit.pt"),
        golden("bpe_simple_vocab_16e6.txt.gz"),
    ];
    (exe, args, tmp)
}

#[test]
fn c_program_renders_the_golden_edit_without_ld_library_path() {
    let (exe, args, _tmp) = prepare();
    let out = Command::new(&exe).env_remove("LD_LIBRARY_PATH").args(&args).output().expect("run abi_test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "abi_test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

/// The same program under valgrind (memcheck): no error may have a frame in libclipshape.so.
/// libtorch's own reports (OpenMP thread pools, oneDNN's JIT) are not ours to fix and are
/// counted apart. Runs when `CLIPSHAPE_VALGRIND=1` (install/test.sh sets it when valgrind is
/// installed); slow (minutes), so not by default.
#[test]
fn c_program_is_clean_under_valgrind() {
    if std::env::var_os("CLIPSHAPE_VALGRIND").is_none() {
        eprintln!("skipped: set CLIPSHAPE_VALGRIND=1 (needs valgrind)");
        return;
    }
    let (exe, args, tmp) = prepare();
    let xml = tmp.path().join("memcheck.xml");
    let out = Command::new("valgrind")
        .args(["--tool=memcheck", "--error-limit=no", "--num-callers=40", "--xml=yes"])
        .arg(format!("--xml-file={}", xml.display()))
        .arg(&exe)
        .args(&args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run valgrind");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "abi_test under valgrind failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    let report = std::fs::read_to_string(&xml).expect("valgrind XML report");
    let errors: Vec<&str> = report.split("<error>").skip(1).map(|e| e.split("</error>").next().unwrap_or(e)).collect();
    let kind = |e: &str| e.split("<kind>").nth(1).and_then(|k| k.split("</kind>").next()).unwrap_or("?").to_string();
    // Memory errors anywhere in our frames, and memory we lose for good, fail; "possibly lost" and
    // "still reachable" blocks are the process-wide statics (thread-local last error, logger,
    // caches) that live until exit by design.
    let ours: Vec<&&str> = errors
        .iter()
        .filter(|e| e.contains("libclipshape.so"))
        .filter(|e| !kind(e).starts_with("Leak_") || kind(e) == "Leak_DefinitelyLost")
        .collect();
    let mut kinds: Vec<String> = errors.iter().map(|e| kind(e)).collect();
    kinds.sort();
    kinds.dedup();
    eprintln!("valgrind: {} reports ({kinds:?}), {} against libclipshape.so", errors.len(), ours.len());
    assert!(
        ours.is_empty(),
        "valgrind errors in libclipshape.so:\n{}",
        ours.iter().take(3).map(|e| e.to_string()).collect::<Vec<_>>().join("\n----\n")
    );
}
