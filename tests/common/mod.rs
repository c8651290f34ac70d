//! Shared by the integration tests: where the golden data is, and the golden README's
//! tolerances.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use clipshape::checkpoint::Checkpoint;
use tch::{Kind, Tensor};

/// `$CLIPSHAPE_GOLDEN`, else the repository's `tests/fixtures/golden` (this file also serves the
/// CLI crate's tests, whose manifest is one directory further down).
pub fn golden_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLIPSHAPE_GOLDEN") {
        return dir.into();
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("tests/fixtures/golden"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| here.join("tests/fixtures/golden"))
}

pub fn golden(name: &str) -> PathBuf {
    golden_dir().join(name)
}

pub fn io(name: &str) -> Checkpoint {
    Checkpoint::open(golden(name)).unwrap_or_else(|e| panic!("golden file {name}: {e}"))
}

fn check_close(ours: &Tensor, want: &Tensor, rel: f64, what: &str) {
    assert_eq!(ours.size(), want.size(), "{what}: shape");
    let ours = ours.to_device(tch::Device::Cpu).to_kind(Kind::Double);
    let want = want.to_kind(Kind::Double);
    let err = (&ours - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]);
    assert!(err <= rel * scale, "{what}: max|ours - golden| = {err:.3e} > {rel:.0e} * max|golden| ({scale:.3e})");
}

/// Forward outputs: max|ours - golden| <= 1e-4 · max|golden|.
pub fn assert_forward_close(ours: &Tensor, want: &Tensor, what: &str) {
    check_close(ours, want, 1e-4, what)
}

/// Gradients: max|ours - golden| <= 1e-3 · max|golden|.
pub fn assert_grad_close(ours: &Tensor, want: &Tensor, what: &str) {
    check_close(ours, want, 1e-3, what)
}

/// The tiny golden e4e (its generator) with the tiny CLIP, on the CPU: an edit's whole context.
pub fn edit_context() -> clipshape::context::Context {
    let params = clipshape::context::ContextParams {
        clip: Some(golden("clip_jit.pt")),
        vocab: Some(golden("bpe_simple_vocab_16e6.txt.gz")),
        device: clipshape::device::DeviceRequest::Cpu,
        ..clipshape::context::ContextParams::new(golden("e4e.pt"))
    };
    clipshape::context::Context::new(&params).unwrap()
}

pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}
