//! The store's answers about what is missing (the messages every command shows offline) and
//! registering a file the user already has (`clipshape models add`).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::download::*;
use super::error::io_err;

use super::*;

impl ModelStore {
    pub(super) fn missing_files(&self, set: &str) -> Result<Vec<String>> {
        let mut missing: Vec<String> = Vec::new();
        for (_, _, file, _) in self.members(set, false)? {
            if !self.present(&file) && !missing.contains(&file) {
                missing.push(file);
            }
        }
        Ok(missing)
    }

    /// `None` when the set is complete; otherwise the text every command shows offline: which
    /// files are missing, their sizes and URLs, the directory to put them in, and the commands
    /// that fetch or register them.
    pub fn missing_files_message(&self, set: &str) -> Result<Option<String>> {
        let missing = self.missing_files(set)?;
        Ok((!missing.is_empty()).then(|| self.compose_missing(set, &missing, Some(set))))
    }

    /// What to say after a fetch of `set` failed (its cause goes first, from the caller): the
    /// files still missing and where to put them, without advising the fetch that just failed.
    pub fn after_failed_fetch_message(&self, set: &str) -> Result<Option<String>> {
        let missing = self.missing_files(set)?;
        Ok((!missing.is_empty()).then(|| self.compose_missing(set, &missing, None)))
    }

    /// `fetch_target`: the `models fetch` argument to advise, None when a fetch just failed.
    pub(super) fn compose_missing(&self, set: &str, missing: &[String], fetch_target: Option<&str>) -> String {
        let dir = self.root.display();
        let mut m = format!(
            "model set '{set}' is incomplete: {} file{} missing in {dir}\n",
            missing.len(),
            if missing.len() == 1 { " is" } else { "s are" }
        );
        for file in missing {
            let (size, hash) = match self.manifest.file(file) {
                Some(e) => (human_size(e.size), e.sha256.clone()),
                None => ("?".into(), None),
            };
            let bytes = self.manifest.file(file).map(|e| e.size).unwrap_or(0);
            let _ = writeln!(m, "  {file}  ({size}, {bytes} bytes)");
            match &hash {
                Some(h) => {
                    let _ = writeln!(m, "      sha256 {h}");
                }
                None => {
                    let _ = writeln!(m, "      sha256 not in the manifest (pinned at first download)");
                }
            }
            let urls = self.urls_for(file);
            if urls.is_empty() {
                let _ = writeln!(m, "      no download URL known: get it yourself");
            }
            for u in urls {
                let _ = writeln!(m, "      {u}");
            }
            match self.state_of(file).0 {
                FileState::WrongSize { size } => {
                    let _ = writeln!(m, "      (a file of the wrong size, {size} bytes, is in its place)");
                }
                FileState::Missing { partial } if partial > 0 => {
                    let _ = writeln!(
                        m,
                        "      ({} already downloaded in {file}.part; a fetch resumes it)",
                        human_size(partial)
                    );
                }
                _ => {}
            }
        }
        match fetch_target {
            Some(target) => {
                let _ = write!(
                    m,
                    "Fetch them with `clipshape models fetch {target}`, or download the URLs yourself and put \
                     the files, with these names, into {dir}\n(or run `clipshape models add {set} /path/to/FILE \
                     [--link]` for a copy you already have). Set {ENV_MODELS_DIR} to use another directory."
                );
            }
            None => {
                let _ = write!(
                    m,
                    "Download the URLs on a machine that has network and put the files, with these names, into \
                     {dir},\nor register copies you already have with `clipshape models add {set} /path/to/FILE \
                     [--link]`. Set {ENV_MODELS_DIR} to use another directory, {ENV_MIRROR}=BASE_URL to fetch \
                     from a mirror."
                );
            }
        }
        m
    }

    /// Registers a file the user already has: checks its size and hash against the manifest
    /// (pinning the hash when unknown), then copies it into the store, or symlinks it with
    /// `link`. `file_name` picks the manifest file; `None` infers it from `src`'s name, else from
    /// its size among the set's files.
    pub fn add(
        &self,
        set: &str,
        file_name: Option<&str>,
        src: &Path,
        link: bool,
        progress: &mut dyn Progress,
    ) -> Result<AddOutcome> {
        let members = self.members(set, true)?;
        let meta = fs::metadata(src).map_err(io_err("read", src))?;
        if !meta.is_file() {
            return Err(StoreError::Io {
                op: "add",
                path: src.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let names: Vec<&str> = members.iter().map(|(_, _, f, _)| f.as_str()).collect();
        let unknown = |file: &str| StoreError::UnknownFile {
            set: set.to_string(),
            file: file.to_string(),
            known: names.join(", "),
        };
        let file = match file_name {
            Some(f) if names.contains(&f) => f.to_string(),
            Some(f) => return Err(unknown(f)),
            None => {
                let base = src.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if names.contains(&base) {
                    base.to_string()
                } else {
                    let by_size: Vec<&str> = names
                        .iter()
                        .copied()
                        .filter(|n| self.manifest.file(n).is_some_and(|e| e.size == meta.len()))
                        .collect();
                    match by_size.as_slice() {
                        [one] => one.to_string(),
                        _ => return Err(unknown(base)),
                    }
                }
            }
        };
        let entry = self.entry(&file)?;
        if meta.len() != entry.size {
            return Err(StoreError::SizeMismatch {
                file: file.clone(),
                origin: src.display().to_string(),
                expected: entry.size,
                got: meta.len(),
            });
        }
        self.ensure_root()?;
        let _lock = self.lock_file(&file)?;
        let dest = self.file_path(&file);
        let src_abs = fs::canonicalize(src).map_err(io_err("resolve", src))?;
        let same = fs::canonicalize(&dest).is_ok_and(|d| d == src_abs);
        let expected = self.expected_hash(&file)?;
        let mismatch = |got: String, expected: String| StoreError::HashMismatch {
            file: file.clone(),
            origin: src.display().to_string(),
            expected,
            got,
            moved_to: None,
        };
        let digest = if link || same {
            let digest = hash_file(src, &file, progress)?;
            if let Some(exp) = &expected {
                if *exp != digest {
                    return Err(mismatch(digest, exp.clone()));
                }
            }
            if !same {
                let tmp = self.side_path(&file, ".link.tmp");
                remove_if_exists(&tmp)?;
                make_symlink(&src_abs, &tmp).map_err(io_err("symlink", &tmp))?;
                replace(&tmp, &dest)?;
            }
            digest
        } else {
            let part = self.side_path(&file, ".part");
            let mut from = File::open(src).map_err(io_err("open", src))?;
            let mut to = File::create(&part).map_err(io_err("create", &part))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; CHUNK];
            progress.start(&file, meta.len(), 0);
            let copied = (|| -> Result<()> {
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(StoreError::Io { op: "read", path: src.to_path_buf(), source: e }),
                    };
                    let chunk = buf.get(..n).unwrap_or_default();
                    to.write_all(chunk).map_err(io_err("write", &part))?;
                    hasher.update(chunk);
                    progress.advance(n as u64);
                    // Unlike a download's, a copy's part is no use later: it goes.
                    if progress.cancelled() {
                        return Err(StoreError::Cancelled { file: file.clone() });
                    }
                }
            })()
            .and_then(|()| to.sync_all().map_err(io_err("write", &part)));
            progress.finish(&file);
            drop(to);
            if let Err(e) = copied {
                let _ = fs::remove_file(&part);
                return Err(e);
            }
            let digest = hex::encode(hasher.finalize());
            if let Some(exp) = &expected {
                if *exp != digest {
                    remove_if_exists(&part)?;
                    return Err(mismatch(digest, exp.clone()));
                }
            }
            replace(&part, &dest)?;
            digest
        };
        let pinned = if expected.is_none() {
            self.pin(&file, &digest, entry.size)?;
            Some(digest)
        } else {
            None
        };
        Ok(AddOutcome { file, path: dest, linked: link && !same, licence: entry.licence.clone(), pinned })
    }
}
