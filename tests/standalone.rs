//! The repository stands on its own. CI machines keep a folder of parity data beside the
//! checkout that users do not have; the project's own copy lives in `tests/fixtures/golden`, and
//! no tracked file may name the outside one again.

use std::path::Path;
use std::process::Command;

/// Built at run time so that this file does not name the folder itself.
fn outside_folder() -> String {
    format!("..{}{}", std::path::MAIN_SEPARATOR, "shared")
}

fn tracked_files(root: &Path) -> Vec<String> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .expect("run git ls-files (the test needs git and a checkout)");
    assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

#[test]
fn no_tracked_file_names_the_folder_beside_the_checkout() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let needle = outside_folder();
    let files = tracked_files(root);
    assert!(files.iter().any(|f| f == "tests/standalone.rs"), "the listing covers this very file");
    let offenders: Vec<&String> = files
        .iter()
        .filter(|f| {
            std::fs::read(root.join(f))
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect();
    assert!(offenders.is_empty(), "these tracked files name {needle}, which no user has: {offenders:?}");
}

#[test]
fn the_fixtures_the_tests_and_setup_read_are_in_the_repository() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden");
    for f in [
        "stylegan2.pt",
        "e4e.pt",
        "clip_jit.pt",
        "bpe_simple_vocab_16e6.txt.gz",
        "face/astronaut.png",
        "face/mtcnn/pnet.pt",
        "face/mtcnn/rnet.pt",
        "face/mtcnn/onet.pt",
        "transfer/astronaut_bignose_truth.png",
    ] {
        assert!(golden.join(f).is_file(), "{} is missing", golden.join(f).display());
    }
}
