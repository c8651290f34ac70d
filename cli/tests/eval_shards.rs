//! `clipshape eval --shard I/N --stats-out` and `--merge` (issue #33): the shards put together
//! give the unsharded table exactly; merges that cannot mean one run are refused by name.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};

use common::{golden, tmpdir};
use support::*;

fn inception() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/inception/tiny_inception.pth")
}

/// A learnt shift of the tiny models (a seed's edit, two steps).
fn shift(dir: &Path, prompt: &str) -> PathBuf {
    let out = dir.join(prompt.replace(' ', "-"));
    ok_owned(&tiny_edit(&[prompt, "--seed", "1", "--steps", "2", "--strengths=0", "--out", p(&out)]));
    out.join("shift.safetensors")
}

/// `eval SHIFT` of 10 seeds with the tiny models and Inception, plus `extra`.
fn eval(shift: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["eval".to_string(), p(shift).into(), "--model".into(), p(&golden("e4e.pt")).into()];
    a.extend(clip_args());
    a.extend(["--seeds", "0-9", "--inception", p(&inception())].map(String::from));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn shards(shift: &Path, dir: &Path, n: usize, extra: &[&str]) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let out = dir.join(format!("s{i}-of-{n}.st"));
            let mut a = eval(shift, extra);
            a.extend(["--shard".into(), format!("{i}/{n}"), "--stats-out".into(), p(&out).into()]);
            ok_owned(&a);
            out
        })
        .collect()
}

fn merge(files: &[PathBuf], extra: &[&str]) -> std::process::Output {
    let mut a = vec!["eval", "--merge"];
    a.extend(files.iter().map(|f| p(f)));
    a.extend(extra);
    clipshape(&a)
}

#[test]
fn the_merged_shards_give_the_unsharded_table_exactly() {
    let dir = tmpdir();
    let s = shift(dir.path(), "face");
    let whole = ok_owned(&eval(&s, &["--json"]));
    for n in [1, 3, 4] {
        let files = shards(&s, dir.path(), n, &[]);
        let merged = merge(&files, &["--json"]);
        assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
        assert_eq!(String::from_utf8(merged.stdout).unwrap(), whole, "{n} shards");
    }
    let rows: serde_json::Value = serde_json::from_str(&whole).unwrap();
    assert!(rows[0]["fid"].as_f64().is_some_and(f64::is_finite), "{whole}");
}

#[test]
fn merges_of_other_runs_or_missing_shards_are_refused_by_name() {
    let dir = tmpdir();
    let (s, other) = (shift(dir.path(), "face"), shift(dir.path(), "round face"));
    let files = shards(&s, dir.path(), 3, &[]);
    let refused = |files: &[PathBuf], want: &[&str]| {
        let out = merge(files, &[]);
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success() && want.iter().all(|w| e.contains(w)), "{want:?}: {e}");
    };
    refused(&files[..2], &["shard 2/3 missing"]);
    refused(&[files[0].clone(), files[1].clone(), files[1].clone(), files[2].clone()], &["both shard 1/3"]);
    let foreign = |name: &str, shift: &Path, extra: &[&str]| -> PathBuf {
        let out = dir.path().join(name);
        let mut a = eval(shift, extra);
        a.extend(["--shard", "2/3", "--stats-out", p(&out)].map(String::from));
        ok_owned(&a);
        out
    };
    let mixed = |f: PathBuf| vec![files[0].clone(), files[1].clone(), f];
    refused(&mixed(foreign("shift.st", &other, &[])), &["shift.st", "another"]);
    refused(&mixed(foreign("strengths.st", &s, &["--strengths=1,2"])), &["strengths.st", "another strengths"]);
    refused(&mixed(foreign("seeds.st", &s, &["--truncation", "0.5"])), &["seeds.st", "another pictures"]);
    // Another Inception network: the same architecture, one weight changed.
    let ck = clipshape::checkpoint::Checkpoint::open(inception()).unwrap();
    let tensors: Vec<(String, tch::Tensor)> = ck
        .keys()
        .enumerate()
        .map(|(i, k)| (k.to_string(), if i == 0 { ck.tensor(k).unwrap() * 1.5 } else { ck.tensor(k).unwrap() }))
        .collect();
    let changed = dir.path().join("inception2.safetensors");
    tch::Tensor::write_safetensors(&tensors, &changed).unwrap();
    let mut a = eval(&s, &[]);
    let at = a.iter().position(|x| x == p(&inception())).unwrap();
    a[at] = p(&changed).into();
    let out = dir.path().join("inception.st");
    a.extend(["--shard", "2/3", "--stats-out", p(&out)].map(String::from));
    ok_owned(&a);
    refused(&mixed(out), &["inception.st", "another inception"]);
    let cut = dir.path().join("cut.st");
    let bytes = std::fs::read(&files[2]).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refused(&mixed(cut), &["cut.st", "not a stats file"]);
}

#[test]
fn a_reference_set_is_measured_once_and_cached_by_content() {
    let dir = tmpdir();
    let s = shift(dir.path(), "face");
    let refs = dir.path().join("refs");
    std::fs::create_dir(&refs).unwrap();
    for (i, f) in ["picture.png", "face/astronaut.png"].iter().enumerate() {
        std::fs::copy(golden(f), refs.join(format!("{i}.png"))).unwrap();
    }
    let cache = dir.path().join("cache");
    let files = shards(&s, dir.path(), 2, &[]);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_clipshape"));
    let net = inception();
    let mut args = vec!["--device", "cpu", "eval", "--merge"];
    args.extend(files.iter().map(|f| p(f)));
    args.extend(["--inception", p(&net), "--reference", p(&refs), "--json"]);
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.args(&args).env("XDG_CACHE_HOME", &cache).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run(&mut cmd);
    let cached: Vec<_> = std::fs::read_dir(cache.join("clipshape/fid-reference")).unwrap().collect();
    assert_eq!(cached.len(), 1, "one entry for the folder's content");
    let again = run(&mut std::process::Command::new(env!("CARGO_BIN_EXE_clipshape")));
    assert_eq!(first, again, "read back from the cache, the same FID");
    // A changed picture is another content: a second entry.
    std::fs::copy(golden("face/astronaut.png"), refs.join("0.png")).unwrap();
    run(&mut std::process::Command::new(env!("CARGO_BIN_EXE_clipshape")));
    assert_eq!(std::fs::read_dir(cache.join("clipshape/fid-reference")).unwrap().count(), 2);
    let e = fails(&["eval", s.to_str().unwrap(), "--shard", "0/2", "--stats-out", "x.st", "--reference", p(&refs)]);
    assert!(e.contains("--reference goes with --merge"), "{e}");
}
