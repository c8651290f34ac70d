//! Where a run's results go. Two shapes, one rule: results are written aside and swapped in
//! whole at the end, so a failure or Ctrl-C leaves everything as it was, and nothing a person
//! did not get from us is ever removed or written over.
//! - [`OutputDir`]: the folders of `edit`, `apply` and `render` (`00.png…`, `sheet.png`, …),
//!   with a [`record`] of what our runs wrote there;
//! - [`OutputFiles`]: the named files of `align`, `encode`, `sample` and `transfer`.

pub mod files;
pub mod record;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

pub use files::OutputFiles;
use record::{inside_without_links, is_joint_folder, is_output_name, Reading, Record, RECORD};

/// Temporary files and staging folders younger than this may belong to a run still writing.
const STALE_AFTER: Duration = Duration::from_secs(60);
/// A run assembles its files in `.clipshape-XXXXXX.stage` beside where they go.
const STAGE_SUFFIX: &str = ".stage";

/// An output folder. A run writes into a staging folder inside it ([`OutputDir::join`]) and
/// [`OutputDir::commit`] swaps the result in whole: the earlier run's files (those its trusted
/// record lists, unchanged) go, the new ones move in, the record is rewritten. Files of the
/// user's are never removed or written over: a folder holding files under our names that no
/// run of ours can be shown to have written is refused, and so is a folder where the run would
/// remove or replace one of its own inputs.
pub struct OutputDir {
    pub path: PathBuf,
    staging: PathBuf,
    written: std::cell::RefCell<Vec<String>>,
    /// This run's inputs, resolved: never removed, whatever a record says.
    inputs: Vec<PathBuf>,
    /// Folders this run created (the deepest first): a run that ends without committing
    /// removes them again while they are empty (no trace of a failed run).
    created: Vec<PathBuf>,
    committed: std::cell::Cell<bool>,
}

impl OutputDir {
    /// Makes the folder ready before any work: it exists (created when missing), is writable,
    /// holds nothing of the user's under our names, and none of `inputs` (files the run reads)
    /// lies where the run would remove or replace it.
    pub fn prepare(path: &Path, inputs: &[&Path]) -> Result<OutputDir> {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if m.file_type().is_symlink() && !path.exists() {
                bail!("--out {}: a link to a place that does not exist", path.display());
            }
            if !(m.is_dir() || (m.file_type().is_symlink() && path.is_dir())) {
                bail!("--out {}: exists and is not a directory", path.display());
            }
        }
        let created = create_dirs(path).with_context(|| format!("--out {}: cannot create it", path.display()))?;
        crate::signals::register_created(&created);
        let mut dir = OutputDir {
            path: path.to_path_buf(),
            staging: PathBuf::new(),
            written: Default::default(),
            inputs: resolve_all(inputs),
            created,
            committed: Default::default(),
        };
        remove_stale(path, &dir.inputs);
        if dir.input_at(&path.join(RECORD)).is_some() {
            bail!("--out {}: its {RECORD} is an input of this run: choose another folder", path.display());
        }
        let record = match Record::read(path) {
            Reading::Absent => Record::default(),
            Reading::Trusted(r) => r,
            // Not ours: never written over, and nothing it names is removed.
            Reading::Ignored(why) => bail!(
                "--out {}: {why}; it is not written over: remove it, or choose an empty or new folder",
                path.display()
            ),
        };
        let ours = our_names_in(path);
        if let Some(i) = ours.iter().find_map(|(_, full)| dir.input_at(full)) {
            bail!(
                "--out {}: the run would remove or write over its input {}: choose another folder",
                path.display(),
                i.display()
            );
        }
        for (rel, _) in ours {
            if !record.files.iter().any(|w| w.path == rel && Record::unchanged(path, w)) {
                bail!(
                    "--out {}: it holds {}, which a run here would write over, and no earlier run of ours wrote it, or \
                     it changed since: choose an empty or new folder",
                    path.display(),
                    crate::text::escaped(&rel),
                );
            }
        }
        dir.staging = new_stage(path).with_context(|| format!("--out {}: cannot write there", path.display()))?;
        crate::signals::register_stage(&dir.staging);
        Ok(dir)
    }

    /// The input of this run that `file` is, if it is one.
    fn input_at(&self, file: &Path) -> Option<&PathBuf> {
        let f = std::fs::canonicalize(file).ok()?;
        self.inputs.iter().find(|i| **i == f)
    }

    /// Where the run writes the file `name` (relative, `/`-separated: `1/00.png` for a joint
    /// edit's first prompt); it reaches the folder at [`OutputDir::commit`].
    pub fn join(&self, name: &str) -> PathBuf {
        let p = self.staging.join(name);
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        self.written.borrow_mut().push(name.to_string());
        p
    }

    /// Swaps the run's files in whole: the earlier run's files (those a trusted record lists,
    /// still as it wrote them, and no input of this run) go aside, the new files move in, the
    /// record is rewritten, then the old files go; a failure on the way puts everything back
    /// as it was. Returns the files' paths in the order they were joined.
    pub fn commit(self) -> Result<Vec<PathBuf>> {
        crate::signals::swapping(|| self.swap())
    }

    fn swap(&self) -> Result<Vec<PathBuf>> {
        let old = match Record::read(&self.path) {
            Reading::Trusted(r) => r.files,
            _ => Vec::new(),
        };
        let mut names: Vec<String> = Vec::new();
        for name in self.written.borrow().iter() {
            if self.staging.join(name).is_file() && !names.contains(name) {
                names.push(name.clone());
            }
        }
        let aside = self.staging.join(ASIDE_PREFIX);
        let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
        let result = (|| -> Result<()> {
            for w in &old {
                let full = self.path.join(&w.path);
                if Record::unchanged(&self.path, w) && self.input_at(&full).is_none() {
                    move_file(&full, &aside.join(&w.path), &mut moves)?;
                }
            }
            for name in &names {
                let target = self.path.join(name);
                if let Some((dir, _)) = name.rsplit_once('/') {
                    let d = self.path.join(dir);
                    if std::fs::symlink_metadata(&d).is_ok_and(|m| m.file_type().is_symlink()) {
                        bail!("{}: a link where this run writes its folder: not followed", d.display());
                    }
                }
                if std::fs::symlink_metadata(&target).is_ok() {
                    bail!("{}: appeared while the run worked; left as it is", target.display());
                }
                move_file(&self.staging.join(name), &target, &mut moves)?;
            }
            let record = Record::of_files(&self.path, &names).context("recording the run's files")?;
            clipshape::io::write_atomic(&self.path.join(RECORD), &serde_json::to_vec_pretty(&record)?)?;
            Ok(())
        })();
        if let Err(e) = result {
            for (from, to) in moves.iter().rev() {
                let _ = std::fs::rename(to, from);
            }
            return Err(e);
        }
        // Subfolders the earlier run made and this one left empty.
        for w in &old {
            if let Some((dir, _)) = w.path.rsplit_once('/') {
                if inside_without_links(&self.path, dir) {
                    let _ = std::fs::remove_dir(self.path.join(dir));
                }
            }
        }
        self.committed.set(true);
        Ok(names.iter().map(|n| self.path.join(n)).collect())
    }

    /// The folder's own files.
    pub fn root(&self) -> Folder<'_> {
        Folder { out: self, prefix: String::new() }
    }

    /// A joint edit's subfolder (`1`, `2`, …, `together`).
    pub fn folder(&self, name: &str) -> Folder<'_> {
        Folder { out: self, prefix: format!("{name}/") }
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.staging.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.staging);
            crate::signals::unregister_stage(&self.staging);
        }
        if !self.committed.get() {
            // remove_dir removes an empty folder only.
            for d in &self.created {
                let _ = std::fs::remove_dir(d);
            }
        }
        crate::signals::unregister_created(&self.created);
    }
}

/// Where one set of results goes in an [`OutputDir`]: its root, or one of its subfolders.
pub struct Folder<'a> {
    out: &'a OutputDir,
    prefix: String,
}

impl Folder<'_> {
    /// Where the run writes `name` here (staged until the folder is committed).
    pub fn join(&self, name: &str) -> PathBuf {
        self.out.join(&format!("{}{name}", self.prefix))
    }
}

/// Creates `path` and its missing parents; returns the folders it created, the deepest first.
fn create_dirs(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut p = path;
    while std::fs::symlink_metadata(p).is_err() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break,
        }
    }
    std::fs::create_dir_all(path)?;
    Ok(missing)
}

/// The paths that exist, resolved through their links.
fn resolve_all(paths: &[&Path]) -> Vec<PathBuf> {
    paths.iter().filter_map(|p| std::fs::canonicalize(p).ok()).collect()
}

/// Renames `from` to `to` (making `to`'s folder), remembering the move for a rollback.
fn move_file(from: &Path, to: &Path, moves: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::rename(from, to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    moves.push((from.to_path_buf(), to.to_path_buf()));
    Ok(())
}

/// Files under the names our runs write, directly in `dir` or in a joint edit's `N/` and
/// `together/` (never through a link), as (relative path, path).
fn our_names_in(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(name) = entry.file_name().into_string() else { continue };
        let path = entry.path();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if is_output_name(&name) {
            out.push((name, path));
        } else if is_joint_folder(&name) && path.is_dir() && !is_link {
            for inner in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let Ok(n) = inner.file_name().into_string() else { continue };
                if is_output_name(&n) {
                    out.push((format!("{name}/{n}"), inner.path()));
                }
            }
        }
    }
    out.sort();
    out
}

/// A staging folder of a run in `dir`: `.clipshape-XXXXXX.stage` holding the marker
/// [`STAGE_MARKER`], by which a later run knows it is a stage of ours.
fn new_stage(dir: &Path) -> std::io::Result<PathBuf> {
    let stage =
        tempfile::Builder::new().prefix(clipshape::io::TEMP_PREFIX).suffix(STAGE_SUFFIX).tempdir_in(dir)?.keep();
    std::fs::write(stage.join(STAGE_MARKER), b"")?;
    Ok(stage)
}

/// Marks a staging folder as ours.
const STAGE_MARKER: &str = ".clipshape-stage";
/// Inside a stage, where a run sets aside the files it replaces until its results are in place.
const ASIDE_PREFIX: &str = ".earlier";

/// Whether `name` is one of our temporary names: `.clipshape-`, the six letters or digits
/// tempfile draws, `suffix`.
fn ours_by_name(name: &str, suffix: &str) -> bool {
    name.strip_prefix(clipshape::io::TEMP_PREFIX)
        .and_then(|rest| rest.strip_suffix(suffix))
        .is_some_and(|mid| mid.len() == 6 && mid.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The leftovers of killed runs in `dir`, older than [`STALE_AFTER`] (younger ones may belong
/// to a run still writing): our temporary files and our staging folders, by their exact names
/// (and a stage's marker). Never one that is or holds an input of this run, and never a stage
/// holding a file a run had set aside (the earlier file at a named output's place: it is said).
fn remove_stale(dir: &Path, inputs: &[PathBuf]) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let old = entry.metadata().and_then(|m| m.modified()).map(|t| t.elapsed().unwrap_or_default() >= STALE_AFTER);
        if !old.unwrap_or(false) {
            continue;
        }
        let holds_input = std::fs::canonicalize(&path).is_ok_and(|p| inputs.iter().any(|i| i.starts_with(&p)));
        let Ok(kind) = entry.file_type() else { continue };
        if holds_input || kind.is_symlink() {
            continue;
        }
        if kind.is_file() && ours_by_name(&name, clipshape::io::TEMP_SUFFIX) {
            let _ = std::fs::remove_file(&path);
        } else if kind.is_dir() && ours_by_name(&name, STAGE_SUFFIX) && path.join(STAGE_MARKER).is_file() {
            let aside = std::fs::read_dir(&path)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(ASIDE_PREFIX));
            if aside {
                crate::text::say(&format!(
                    "note: {} holds a file a run set aside before it was killed: left for you to look at",
                    path.display()
                ));
            } else {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests;
