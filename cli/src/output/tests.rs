use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// One run: `files` written (name, bytes), committed.
fn run(dir: &Path, inputs: &[&Path], files: &[(&str, &[u8])]) -> Result<Vec<PathBuf>> {
    let out = OutputDir::prepare(dir, inputs)?;
    for (name, bytes) in files {
        std::fs::write(out.root().join(name), bytes).unwrap();
    }
    out.commit()
}

#[test]
fn a_later_run_replaces_only_what_an_earlier_run_of_ours_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("mine.txt"), b"x").unwrap();
    std::fs::write(d.join(".clipshape-young1.part"), b"x").unwrap();
    let old = std::fs::File::create(d.join(".clipshape-old123.part")).unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(120)).unwrap();
    let paths = run(d, &[], &[("00.png", b"a"), ("01.png", b"b"), ("sheet.png", b"s")]).unwrap();
    assert_eq!(paths, vec![d.join("00.png"), d.join("01.png"), d.join("sheet.png")]);
    run(d, &[], &[("00.png", b"c")]).unwrap();
    assert_eq!(names(d), [".clipshape-young1.part", ".clipshape.json", "00.png", "mine.txt"]);
    assert_eq!(std::fs::read(d.join("00.png")).unwrap(), b"c");

    let file = d.join("f");
    std::fs::write(&file, b"x").unwrap();
    assert!(OutputDir::prepare(&file, &[]).is_err(), "a file is not an output directory");
}

#[test]
fn files_of_the_users_under_our_names_and_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in ["01.png", "2024.png", "sheet.png"] {
        std::fs::write(d.join(f), b"photo").unwrap();
    }
    let e = run(d, &[], &[("00.png", b"a")]).unwrap_err().to_string();
    assert!(e.contains("no earlier run of ours wrote it") && e.contains("01.png"), "{e}");
    let e = run(d, &[&d.join("2024.png")], &[("00.png", b"a")]).unwrap_err().to_string();
    assert!(e.contains("its input") && e.contains("2024.png"), "{e}");
    assert_eq!(names(d), ["01.png", "2024.png", "sheet.png"], "nothing touched, nothing left behind");

    // A file of ours the user changed since is theirs now.
    let other = tempfile::tempdir().unwrap();
    run(other.path(), &[], &[("00.png", b"a")]).unwrap();
    std::fs::write(other.path().join("00.png"), b"edited by hand").unwrap();
    let e = run(other.path(), &[], &[("00.png", b"b")]).unwrap_err().to_string();
    assert!(e.contains("changed since"), "{e}");
    // Our own earlier output as this run's input: it would be removed.
    let third = tempfile::tempdir().unwrap();
    run(third.path(), &[], &[("shift.safetensors", b"s")]).unwrap();
    let e = run(third.path(), &[&third.path().join("shift.safetensors")], &[("00.png", b"a")]).unwrap_err();
    assert!(e.to_string().contains("its input"), "{e}");
}

#[test]
fn a_run_that_fails_leaves_the_earlier_results_and_no_staging() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(d, &[], &[("00.png", b"a"), ("01.png", b"b")]).unwrap();
    {
        let out = OutputDir::prepare(d, &[]).unwrap();
        std::fs::write(out.root().join("00.png"), b"new").unwrap();
        // Dropped without commit: the run failed or was cancelled.
    }
    assert_eq!(names(d), [".clipshape.json", "00.png", "01.png"]);
    assert_eq!(std::fs::read(d.join("01.png")).unwrap(), b"b");
    // A commit that cannot finish puts everything back.
    let out = OutputDir::prepare(d, &[]).unwrap();
    std::fs::write(out.root().join("00.png"), b"new").unwrap();
    std::fs::write(out.root().join("02.png"), b"new").unwrap();
    std::fs::write(d.join("02.png"), b"appeared meanwhile").unwrap();
    assert!(out.commit().unwrap_err().to_string().contains("appeared while the run worked"));
    assert_eq!(names(d), [".clipshape.json", "00.png", "01.png", "02.png"]);
    assert_eq!(std::fs::read(d.join("00.png")).unwrap(), b"a");
    assert_eq!(std::fs::read(d.join("02.png")).unwrap(), b"appeared meanwhile");
}

#[test]
fn a_failed_run_removes_the_folders_it_made_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/c");
    drop(OutputDir::prepare(&nested, &[]).unwrap());
    assert_eq!(names(dir.path()), Vec::<String>::new(), "a, a/b and a/b/c go again");
    std::fs::create_dir(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a/mine.txt"), b"x").unwrap();
    drop(OutputDir::prepare(&nested, &[]).unwrap());
    assert_eq!(names(&dir.path().join("a")), ["mine.txt"], "the user's folder stays");
}

#[cfg(unix)]
#[test]
fn links_are_never_followed_out_of_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(elsewhere.path().join("00.png"), b"someone else's").unwrap();
    let out = OutputDir::prepare(d, &[]).unwrap();
    std::fs::write(out.folder("3").join("00.png"), b"a").unwrap();
    out.commit().unwrap();
    // The folder 3 replaced by a link to another place; the record still names 3/00.png.
    std::fs::remove_dir_all(d.join("3")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), d.join("3")).unwrap();
    let out = OutputDir::prepare(d, &[]).unwrap();
    std::fs::write(out.root().join("00.png"), b"b").unwrap();
    out.commit().unwrap();
    assert_eq!(std::fs::read(elsewhere.path().join("00.png")).unwrap(), b"someone else's");
}

/// Issue #29 item 1: a record copied from another folder, or written by hand, names the user's
/// files with their true sizes and hashes; nothing it names may go.
#[test]
fn a_copied_or_forged_record_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("sub")).unwrap();
    for (name, bytes) in [("mine.txt", &b"notes"[..]), ("photo.png", b"pixels"), ("sub/holiday.jpg", b"sun")] {
        std::fs::write(d.join(name), bytes).unwrap();
    }
    let files: Vec<serde_json::Value> = ["mine.txt", "photo.png", "sub/holiday.jpg"]
        .iter()
        .map(|n| {
            let bytes = std::fs::read(d.join(n)).unwrap();
            use sha2::Digest;
            serde_json::json!({"path": n, "size": bytes.len(), "sha256": hex::encode(sha2::Sha256::digest(&bytes))})
        })
        .collect();
    let forged = serde_json::json!({ "files": files });
    std::fs::write(d.join(RECORD), forged.to_string()).unwrap();
    let e = run(d, &[&d.join("photo.png")], &[("00.png", b"a")]).unwrap_err().to_string();
    assert!(e.contains("names mine.txt") && e.contains("not written over"), "{e}");
    for name in ["mine.txt", "photo.png", "sub/holiday.jpg", RECORD] {
        assert!(d.join(name).is_file(), "{name} is kept");
    }

    // A folder of our results copied elsewhere, record and all: the copy's files are new
    // files, so the record proves nothing there and our names are refused, not replaced.
    let ours = tempfile::tempdir().unwrap();
    run(ours.path(), &[], &[("00.png", b"a"), ("sheet.png", b"s")]).unwrap();
    let copy = tempfile::tempdir().unwrap();
    for name in [RECORD, "00.png", "sheet.png"] {
        std::fs::copy(ours.path().join(name), copy.path().join(name)).unwrap();
    }
    let e = run(copy.path(), &[], &[("00.png", b"b")]).unwrap_err().to_string();
    assert!(e.contains("was not written by a run of ours in this folder"), "{e}");
    assert_eq!(std::fs::read(copy.path().join("00.png")).unwrap(), b"a");

    // A trusted record of ours edited to name a file of the user's: ignored as a whole.
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ours.path().join(RECORD)).unwrap()).unwrap();
    std::fs::write(ours.path().join("mine.txt"), b"x").unwrap();
    record["files"][0]["path"] = "mine.txt".into();
    std::fs::write(ours.path().join(RECORD), record.to_string()).unwrap();
    assert!(run(ours.path(), &[], &[("00.png", b"b")]).is_err());
    assert!(ours.path().join("mine.txt").is_file());
}
