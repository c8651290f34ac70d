//! What the CLI test files share: running the built `clipshape`, on the CPU unless the
//! arguments say otherwise.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use super::common::golden;

pub fn clipshape(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipshape"));
    cmd.args(args);
    if !args.contains(&"--device") {
        cmd.args(["--device", "cpu"]);
    }
    // What the user's own model store holds (a face detector, a set) must not change a test.
    if std::env::var_os("CLIPSHAPE_MODELS").is_none() {
        cmd.env("CLIPSHAPE_MODELS", std::env::temp_dir().join("clipshape-cli-tests-no-store"));
    }
    cmd.output().expect("run clipshape")
}

pub fn ok(args: &[&str]) -> String {
    let out = clipshape(args);
    assert!(out.status.success(), "clipshape {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn fails(args: &[&str]) -> String {
    let out = clipshape(args);
    assert!(!out.status.success(), "clipshape {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

pub fn ok_owned(args: &[String]) -> String {
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

pub fn fails_owned(args: &[String]) -> String {
    fails(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `--clip … --vocab …` of the tiny golden CLIP.
pub fn clip_args() -> Vec<String> {
    vec![
        "--clip".into(),
        golden("clip_jit.pt").display().to_string(),
        "--vocab".into(),
        golden("bpe_simple_vocab_16e6.txt.gz").display().to_string(),
    ]
}

/// `edit` of the tiny e4e model with the tiny CLIP: `extra` goes between the model and the CLIP
/// files (inputs, options).
pub fn tiny_edit(extra: &[&str]) -> Vec<String> {
    let mut a = vec!["edit".to_string(), p(&golden("e4e.pt")).to_string()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(clip_args());
    a
}
