//! Model store: the manifest of model sets (`models/manifest.toml`), downloads with progress,
//! resume and verification, and the offline story (which files, from where, to which directory).
//!
//! This module has no torch dependency: it moves and checks files. The rest of the crate asks it
//! for paths ([`ModelStore::set_paths`]) and shows [`StoreError::Missing`] as is when a file is
//! absent; the message names every file, its URL(s) and the directory to put it in.
//!
//! - Store directory: `$CLIPSHAPE_MODELS`, else `$XDG_DATA_HOME/clipshape/models`, else
//!   `~/.local/share/clipshape/models` ([`default_root`]).
//! - Mirror: `CLIPSHAPE_MODELS_MIRROR=BASE` fetches every file from `BASE/<file name>`; sizes and
//!   hashes are still checked.
//! - Manifest: built in; `CLIPSHAPE_MANIFEST=FILE` reads another one.
//! - Downloads go to `<name>.part`, resume with `Range: bytes=N-` (from 0 when the server answers
//!   200), hash while streaming, check the size, and are renamed into place only when both match.
//!   A file whose hash is wrong is moved aside to `<name>.bad`, never left under its name.
//!   `.locks/<name>.lock` (an advisory lock) serialises concurrent fetches of one file; the
//!   lock files live apart, so the store's folder shows the models alone.
//! - Files without a hash in the manifest get the hash of their first download pinned in
//!   `clipshape.lock` in the store directory, and are checked against it from then on.
//!
//! ```text
//! clipshape models list
//! clipshape models fetch ffhq            # e4e_ffhq_encode.pt + the `clip` set it requires
//! clipshape models fetch ffhq:generator  # an optional file of a set
//! clipshape models add car ~/Downloads/e4e_cars_encode.pt --link
//! ```

mod download;
mod error;
mod local;
mod manifest;
mod progress;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::domain::{Align, Domain, Frame, Size};
use download::*;
pub use error::{moved_note, Result, StoreError};
pub use manifest::{FileEntry, Manifest, SetEntry};
pub use progress::{CallbackProgress, NoProgress, Progress};

/// The manifest shipped with the crate.
pub const BUILTIN_MANIFEST: &str = include_str!("../../models/manifest.toml");
/// Environment variable: the store directory.
pub const ENV_MODELS_DIR: &str = "CLIPSHAPE_MODELS";
/// Environment variable: a base URL every file is fetched from (`BASE/<file name>`).
pub const ENV_MIRROR: &str = "CLIPSHAPE_MODELS_MIRROR";
/// Environment variable: a manifest file to use instead of the built-in one.
pub const ENV_MANIFEST: &str = "CLIPSHAPE_MANIFEST";
/// Name of the file, in the store directory, that pins hashes the manifest does not know.
pub const PIN_FILE_NAME: &str = "clipshape.lock";
/// The manifest schema version this code reads.
pub const MANIFEST_SCHEMA: u32 = 1;

const CHUNK: usize = 64 * 1024;

/// Network and behaviour knobs.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the response head and for each read of the body (a stalled transfer).
    pub read_timeout: Duration,
    /// Extra attempts per URL after a network failure or a 5xx (each resumes the `.part`).
    pub retries: u32,
    /// Pause before retry `k` is `k × retry_delay`.
    pub retry_delay: Duration,
    /// Refuse to start a download the disk cannot hold.
    pub check_disk_space: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retries: 3,
            retry_delay: Duration::from_secs(2),
            check_disk_space: true,
        }
    }
}

/// Where a file stands on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Present with the manifest's size (hash checked by `verify` and after downloads).
    Present { size: u64 },
    /// Absent; `partial` bytes wait in `<name>.part`.
    Missing { partial: u64 },
    /// Present with another size (`fetch` moves it aside and downloads again).
    WrongSize { size: u64 },
}

/// One file of a set, as [`ModelStore::list`] sees it.
#[derive(Debug, Clone)]
pub struct FileStatus {
    pub role: String,
    pub file: String,
    /// `false` for the set's `optional` files.
    pub required: bool,
    pub path: PathBuf,
    /// Target when `path` is a symlink (`models add --link`).
    pub link_target: Option<PathBuf>,
    pub expected_size: u64,
    pub state: FileState,
}

/// One set, as [`ModelStore::list`] sees it.
#[derive(Debug, Clone)]
pub struct SetStatus {
    pub set: String,
    pub description: String,
    pub requires: Vec<String>,
    /// Every required file of the set and of the sets it requires is present.
    pub complete: bool,
    /// The set's own files (required, then optional); required sets are listed separately.
    pub files: Vec<FileStatus>,
}

/// A file `fetch` is about to download.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub file: String,
    pub size: u64,
    /// Bytes already in `<name>.part`.
    pub partial: u64,
    pub urls: Vec<String>,
    pub licence: Option<String>,
}

/// What `fetch` did for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAction {
    AlreadyPresent,
    Downloaded { bytes: u64, resumed_from: u64, url: String },
}

/// The outcome for one file of `fetch`.
#[derive(Debug, Clone)]
pub struct FileOutcome {
    pub file: String,
    pub path: PathBuf,
    pub action: FetchAction,
    pub licence: Option<String>,
    /// The hash that was pinned in [`PIN_FILE_NAME`] just now (manifest had none).
    pub pinned: Option<String>,
}

/// The outcome of `fetch`.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub target: String,
    pub files: Vec<FileOutcome>,
}

/// Result of a full check of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    Ok {
        sha256: String,
    },
    /// The manifest has no hash; this one was pinned just now.
    Pinned {
        sha256: String,
    },
    Missing,
    WrongSize {
        expected: u64,
        got: u64,
    },
    /// The file was moved aside to `moved_to` so that `fetch` replaces it.
    HashMismatch {
        expected: String,
        got: String,
        moved_to: Option<PathBuf>,
    },
}

/// One line of `verify`.
#[derive(Debug, Clone)]
pub struct FileCheck {
    pub set: String,
    pub role: String,
    pub file: String,
    pub path: PathBuf,
    pub result: CheckResult,
}

/// What `add` did.
#[derive(Debug, Clone)]
pub struct AddOutcome {
    pub file: String,
    pub path: PathBuf,
    pub linked: bool,
    pub licence: Option<String>,
    pub pinned: Option<String>,
}

/// Every file a command needs, by role, once the set is complete.
#[derive(Debug, Clone)]
pub struct SetPaths {
    pub set: String,
    pub dir: PathBuf,
    /// Role → path for the required files of the set and of the sets it requires, plus the
    /// optional files that are present.
    pub files: BTreeMap<String, PathBuf>,
    pub domain: Option<Domain>,
}

impl SetPaths {
    /// The path of a role, if the set has it (optional roles only when present).
    pub fn get(&self, role: &str) -> Option<&Path> {
        self.files.get(role).map(PathBuf::as_path)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PinFile {
    #[serde(default)]
    pinned: BTreeMap<String, Pin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pin {
    sha256: String,
    size: u64,
}

/// The default store directory: `$CLIPSHAPE_MODELS`, else `$XDG_DATA_HOME/clipshape/models`
/// (absolute values only, as the XDG spec says), else `$HOME/.local/share/clipshape/models`
/// (else `%LOCALAPPDATA%\clipshape\models`).
pub fn default_root() -> Result<PathBuf> {
    default_root_with(|k| std::env::var_os(k))
}

/// [`default_root`] with an injected environment (for tests and embedders).
pub fn default_root_with(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = get(ENV_MODELS_DIR) {
        return Ok(dir);
    }
    if let Some(xdg) = get("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(xdg.join("clipshape").join("models"));
    }
    if let Some(home) = get("HOME") {
        return Ok(home.join(".local").join("share").join("clipshape").join("models"));
    }
    if let Some(local) = get("LOCALAPPDATA") {
        return Ok(local.join("clipshape").join("models"));
    }
    Err(StoreError::NoModelDir)
}

/// Human-readable decimal size ("1.20 GB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A directory of model files described by a [`Manifest`].
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
    manifest: Manifest,
    mirror: Option<String>,
    options: StoreOptions,
}

/// The advisory lock of one file, held while it is downloaded or added.
struct FileLock {
    _file: File,
}

impl ModelStore {
    /// A store at `root` (created when something is written).
    pub fn new(root: impl Into<PathBuf>, manifest: Manifest) -> Self {
        ModelStore { root: root.into(), manifest, mirror: None, options: StoreOptions::default() }
    }

    /// The store the CLI uses: [`default_root`], `CLIPSHAPE_MANIFEST` or the built-in manifest,
    /// and `CLIPSHAPE_MODELS_MIRROR`.
    pub fn from_env() -> Result<Self> {
        Self::from_env_with(|k| std::env::var_os(k))
    }

    /// [`ModelStore::from_env`] with an injected environment.
    pub fn from_env_with(env: impl Fn(&str) -> Option<OsString>) -> Result<Self> {
        let root = default_root_with(&env)?;
        Self::at_with(root, env)
    }

    /// A store at `root` (a folder the user chose), with the manifest and mirror of the
    /// environment as [`ModelStore::from_env`] reads them.
    pub fn at(root: impl Into<PathBuf>) -> Result<Self> {
        Self::at_with(root.into(), |k| std::env::var_os(k))
    }

    fn at_with(root: PathBuf, env: impl Fn(&str) -> Option<OsString>) -> Result<Self> {
        let manifest = match env(ENV_MANIFEST).filter(|v| !v.is_empty()) {
            Some(path) => Manifest::load(Path::new(&path))?,
            None => Manifest::builtin()?,
        };
        let mirror = env(ENV_MIRROR).and_then(|v| v.into_string().ok()).filter(|v| !v.trim().is_empty());
        Ok(ModelStore::new(root, manifest).with_mirror(mirror))
    }

    /// Fetch every file from `BASE/<file name>` instead of the manifest's URLs.
    pub fn with_mirror(mut self, base: Option<String>) -> Self {
        self.mirror = base.map(|b| b.trim().trim_end_matches('/').to_string());
        self
    }

    pub fn with_options(mut self, options: StoreOptions) -> Self {
        self.options = options;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn mirror(&self) -> Option<&str> {
        self.mirror.as_deref()
    }

    /// Where a file lives in the store (whether or not it is there).
    pub fn file_path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    fn side_path(&self, file: &str, suffix: &str) -> PathBuf {
        self.root.join(format!("{file}{suffix}"))
    }

    fn entry(&self, file: &str) -> Result<&FileEntry> {
        self.manifest.file(file).ok_or_else(|| StoreError::Manifest {
            origin: "manifest".into(),
            message: format!("no file '{file}' in [files]"),
        })
    }

    /// The URLs a file is fetched from: the mirror's when one is set, else the manifest's.
    pub fn urls_for(&self, file: &str) -> Vec<String> {
        match &self.mirror {
            Some(base) => vec![format!("{base}/{file}")],
            None => self.manifest.file(file).map(|f| f.urls.clone()).unwrap_or_default(),
        }
    }

    /// (set, role, file, required) for the set and the sets it requires; optional files of
    /// all of them when `with_optional`.
    fn members(&self, set: &str, with_optional: bool) -> Result<Vec<(String, String, String, bool)>> {
        let mut out = Vec::new();
        for name in self.manifest.closure(set)? {
            let entry = self.manifest.set(&name)?;
            for (role, file) in &entry.files {
                out.push((name.clone(), role.clone(), file.clone(), true));
            }
            if with_optional {
                for (role, file) in &entry.optional {
                    out.push((name.clone(), role.clone(), file.clone(), false));
                }
            }
        }
        Ok(out)
    }

    fn state_of(&self, file: &str) -> (FileState, Option<PathBuf>) {
        let path = self.file_path(file);
        let link_target = fs::read_link(&path).ok();
        let expected = self.manifest.file(file).map(|f| f.size).unwrap_or(0);
        let state = match fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() == expected => FileState::Present { size: m.len() },
            Ok(m) => FileState::WrongSize { size: m.len() },
            Err(_) => FileState::Missing {
                partial: fs::metadata(self.side_path(file, ".part")).map(|m| m.len()).unwrap_or(0),
            },
        };
        (state, link_target)
    }

    fn present(&self, file: &str) -> bool {
        matches!(self.state_of(file).0, FileState::Present { .. })
    }

    /// Every set with the state of its files. Never fails: unreadable files count as missing.
    pub fn list(&self) -> Vec<SetStatus> {
        self.manifest.sets.keys().filter_map(|s| self.status(s).ok()).collect()
    }

    /// One set with the state of its files.
    pub fn status(&self, set: &str) -> Result<SetStatus> {
        let entry = self.manifest.set(set)?;
        let mut files = Vec::new();
        let own =
            entry.files.iter().map(|(r, f)| (r, f, true)).chain(entry.optional.iter().map(|(r, f)| (r, f, false)));
        for (role, file, required) in own {
            let (state, link_target) = self.state_of(file);
            files.push(FileStatus {
                role: role.clone(),
                file: file.clone(),
                required,
                path: self.file_path(file),
                link_target,
                expected_size: self.manifest.file(file).map(|f| f.size).unwrap_or(0),
                state,
            });
        }
        let complete = self.members(set, false)?.iter().all(|(_, _, f, _)| self.present(f));
        Ok(SetStatus {
            set: set.to_string(),
            description: entry.description.clone(),
            requires: entry.requires.clone(),
            complete,
            files,
        })
    }

    /// Resolves a fetch target: `SET` (its required files and those of the sets it requires),
    /// `SET:ROLE` (one file of a set, optional ones included), or a file name of the manifest.
    pub fn target_files(&self, target: &str) -> Result<Vec<String>> {
        if let Some((set, role)) = target.split_once(':') {
            let members = self.members(set, true)?;
            return members.iter().find(|(_, r, _, _)| r == role).map(|(_, _, f, _)| vec![f.clone()]).ok_or_else(
                || StoreError::UnknownRole {
                    set: set.to_string(),
                    role: role.to_string(),
                    known: members.iter().map(|(_, r, _, _)| r.as_str()).collect::<Vec<_>>().join(", "),
                },
            );
        }
        if !self.manifest.sets.contains_key(target) && self.manifest.files.contains_key(target) {
            return Ok(vec![target.to_string()]);
        }
        let mut files: Vec<String> = Vec::new();
        for (_, _, f, _) in self.members(target, false)? {
            if !files.contains(&f) {
                files.push(f);
            }
        }
        Ok(files)
    }

    /// The files `fetch(target)` would download, with sizes, URLs and licence notes.
    pub fn plan(&self, target: &str) -> Result<Vec<PlannedFile>> {
        let mut out = Vec::new();
        for file in self.target_files(target)? {
            if self.present(&file) {
                continue;
            }
            let entry = self.entry(&file)?;
            out.push(PlannedFile {
                size: entry.size,
                partial: fs::metadata(self.side_path(&file, ".part")).map(|m| m.len()).unwrap_or(0),
                urls: self.urls_for(&file),
                licence: entry.licence.clone(),
                file,
            });
        }
        Ok(out)
    }

    /// Downloads whatever `target` (see [`ModelStore::target_files`]) lacks. Files already
    /// present with the right size are not downloaded again.
    pub fn fetch(&self, target: &str, progress: &mut dyn Progress) -> Result<FetchReport> {
        let mut files = Vec::new();
        for file in self.target_files(target)? {
            files.push(self.fetch_file(&file, progress)?);
        }
        Ok(FetchReport { target: target.to_string(), files })
    }

    /// without a known hash gets its hash pinned.
    /// Full check of the set's files (and of the sets it requires): size and SHA-256. A file
    /// with a wrong hash is moved aside to `<name>.bad` so that `fetch` replaces it; a file
    pub fn verify(&self, set: &str, progress: &mut dyn Progress) -> Result<Vec<FileCheck>> {
        let mut out = Vec::new();
        for (owner, role, file, required) in self.members(set, true)? {
            let path = self.file_path(&file);
            let entry = self.entry(&file)?;
            let check = |result| FileCheck {
                set: owner.clone(),
                role: role.clone(),
                file: file.clone(),
                path: path.clone(),
                result,
            };
            let result = match self.state_of(&file).0 {
                FileState::Missing { .. } if !required => continue,
                FileState::Missing { .. } => CheckResult::Missing,
                FileState::WrongSize { size } => CheckResult::WrongSize { expected: entry.size, got: size },
                FileState::Present { .. } => {
                    let digest = hash_file(&path, &file, progress)?;
                    match self.expected_hash(&file)? {
                        Some(expected) if expected == digest => CheckResult::Ok { sha256: digest },
                        Some(expected) => {
                            let bad = self.side_path(&file, ".bad");
                            move_aside(&path, &bad)?;
                            CheckResult::HashMismatch { expected, got: digest, moved_to: Some(bad) }
                        }
                        None => {
                            self.pin(&file, &digest, entry.size)?;
                            CheckResult::Pinned { sha256: digest }
                        }
                    }
                }
            };
            out.push(check(result));
        }
        Ok(out)
    }

    /// The path of one role of a set (roles of required sets included). Fails with
    /// [`StoreError::Missing`] when the file is not there.
    pub fn path(&self, set: &str, role: &str) -> Result<PathBuf> {
        let members = self.members(set, true)?;
        let (_, _, file, required) =
            members.iter().find(|(_, r, _, _)| r == role).ok_or_else(|| StoreError::UnknownRole {
                set: set.to_string(),
                role: role.to_string(),
                known: members.iter().map(|(_, r, _, _)| r.as_str()).collect::<Vec<_>>().join(", "),
            })?;
        if self.present(file) {
            return Ok(self.file_path(file));
        }
        let target = if *required { set.to_string() } else { format!("{set}:{role}") };
        Err(StoreError::Missing {
            set: set.to_string(),
            files: vec![file.clone()],
            message: self.compose_missing(set, std::slice::from_ref(file), Some(&target)),
        })
    }

    /// Every path a command needs for `set`, or [`StoreError::Missing`] naming what is absent.
    pub fn set_paths(&self, set: &str) -> Result<SetPaths> {
        let entry = self.manifest.set(set)?;
        let missing = self.missing_files(set)?;
        if !missing.is_empty() {
            return Err(StoreError::Missing {
                set: set.to_string(),
                message: self.compose_missing(set, &missing, Some(set)),
                files: missing,
            });
        }
        let mut files = BTreeMap::new();
        for (_, role, file, required) in self.members(set, true)? {
            if required || self.present(&file) {
                files.insert(role, self.file_path(&file));
            }
        }
        Ok(SetPaths { set: set.to_string(), dir: self.root.clone(), files, domain: entry.domain.clone() })
    }
}
