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
//!   `<name>.lock` (an advisory lock) serialises concurrent fetches of one file.
//! - Files without a hash in the manifest get the hash of their first download pinned in
//!   `clipshape.lock` in the store directory, and are checked against it from then on.
//!
//! ```text
//! clipshape models list
//! clipshape models fetch ffhq            # e4e_ffhq_encode.pt + the `clip` set it requires
//! clipshape models fetch ffhq:generator  # an optional file of a set
//! clipshape models add car ~/Downloads/e4e_cars_encode.pt --link
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest shipped with the crate.
pub const BUILTIN_MANIFEST: &str = include_str!("../models/manifest.toml");
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

// ===========================================================================================
// Errors
// ===========================================================================================

/// Everything that can go wrong in the store; each variant names the file, URL or path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The manifest could not be read, parsed or validated. `message` carries toml's
    /// line/column report, or the table that is wrong.
    #[error("model manifest {origin}: {message}")]
    Manifest { origin: String, message: String },
    #[error("unknown model set '{set}' (known sets: {known})")]
    UnknownSet { set: String, known: String },
    #[error("model set '{set}' has no file with role '{role}' (roles: {known})")]
    UnknownRole {
        set: String,
        role: String,
        known: String,
    },
    #[error("'{file}' is not a file of model set '{set}' (its files: {known})")]
    UnknownFile {
        set: String,
        file: String,
        known: String,
    },
    /// Files are missing from the store; the message says which, from where, and where to.
    #[error("{message}")]
    Missing {
        set: String,
        files: Vec<String>,
        message: String,
    },
    #[error("no model directory: none of CLIPSHAPE_MODELS, XDG_DATA_HOME, HOME is set")]
    NoModelDir,
    #[error("{op} {}: {source}{}", .path.display(), io_hint(.source))]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("HTTP {status} from {url}")]
    HttpStatus { url: String, status: u16 },
    /// A network failure (connection refused, timeout, connection cut…). The `.part` file keeps
    /// what arrived; the next fetch resumes from there.
    #[error("download from {url} failed after {bytes} bytes: {message}")]
    Transfer {
        url: String,
        bytes: u64,
        message: String,
    },
    #[error("{file}: wrong size from {origin}: expected {expected} bytes, got {got}")]
    SizeMismatch {
        file: String,
        origin: String,
        expected: u64,
        got: u64,
    },
    #[error("{file}: SHA-256 mismatch ({origin}): expected {expected}, got {got}{}", moved_note(.moved_to))]
    HashMismatch {
        file: String,
        origin: String,
        expected: String,
        got: String,
        /// Where the bad file was moved (`<name>.bad`); `None` when the user's own file was
        /// checked (`add`) and left where it was.
        moved_to: Option<PathBuf>,
    },
    #[error("not enough disk space in {} for {file}: {needed} more bytes needed, {available} available", .path.display())]
    DiskFull {
        file: String,
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("{file}: the manifest has no download URL for it; get it yourself and register it with `clipshape models add SET FILE`")]
    NoUrl { file: String },
    #[error("download of {file} cancelled (the partial file is kept for a later resume)")]
    Cancelled { file: String },
    #[error("hash lock file {}: {message}", .path.display())]
    PinFile { path: PathBuf, message: String },
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_hint(e: &io::Error) -> &'static str {
    // ENOSPC (Linux/macOS 28) / ERROR_DISK_FULL (Windows 112) / ERROR_HANDLE_DISK_FULL (39).
    let full = matches!(e.raw_os_error(), Some(28)) && cfg!(unix)
        || matches!(e.raw_os_error(), Some(39) | Some(112)) && cfg!(windows);
    if full {
        " (disk full: free some space or point CLIPSHAPE_MODELS at a larger disk)"
    } else {
        ""
    }
}

fn moved_note(moved: &Option<PathBuf>) -> String {
    match moved {
        Some(p) => format!("; the bad file was moved aside to {}", p.display()),
        None => String::new(),
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl StoreError {
    /// Errors that concern one source (URL) and may go away on a retry or with another URL.
    fn is_source_error(&self) -> bool {
        matches!(
            self,
            StoreError::HttpStatus { .. }
                | StoreError::Transfer { .. }
                | StoreError::SizeMismatch { .. }
                | StoreError::HashMismatch { .. }
        )
    }

    /// Errors worth retrying on the same URL (resuming from the `.part`).
    fn is_retryable(&self) -> bool {
        match self {
            StoreError::Transfer { .. } => true,
            StoreError::HttpStatus { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            _ => false,
        }
    }
}

// ===========================================================================================
// Manifest
// ===========================================================================================

/// The parsed `models/manifest.toml`: files by name, sets by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    #[serde(default)]
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    pub sets: BTreeMap<String, SetEntry>,
}

/// One downloadable file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    #[serde(default)]
    pub description: Option<String>,
    /// Tried in order; may be empty (the file can only be added by hand then).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Exact size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256; `None`: pinned at first download in [`PIN_FILE_NAME`].
    #[serde(default)]
    pub sha256: Option<String>,
    /// Licence note shown before downloading.
    #[serde(default)]
    pub licence: Option<String>,
}

/// A named model set: files by role, plus the sets it requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEntry {
    #[serde(default)]
    pub description: String,
    /// Sets whose files this set needs too (every domain set requires `clip`).
    #[serde(default)]
    pub requires: Vec<String>,
    /// Role → file name: fetched by `models fetch SET`.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Role → file name: used when present, fetched by `models fetch SET:ROLE`.
    #[serde(default)]
    pub optional: BTreeMap<String, String>,
    /// Editing defaults of an image domain; `None` for helper sets such as `clip`.
    #[serde(default)]
    pub domain: Option<Domain>,
}

/// Per-domain defaults of the editing method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// "face", "car", "horse".
    pub name: String,
    /// Side of the square generator output, px.
    pub generator_size: u32,
    /// The picture inside the generator output (cars: rows 64..448 of 512²).
    pub frame: Frame,
    /// Size e4e is fed.
    pub encoder_input: Size,
    /// Alignment applied to a photo before encoding.
    pub align: Align,
    /// Generator conv whose raw weight gets the shift: `conv1` or `convs.N`.
    pub default_layer: String,
    /// Weight of ‖x‖₂ in the loss.
    pub default_lambda2: f64,
    #[serde(default)]
    pub prompts: Vec<String>,
}

/// A crop of the generator output, px.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// Height × width, px.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub height: u32,
    pub width: u32,
}

/// Photo alignment before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    /// FFHQ landmark-based crop (faces).
    Ffhq,
    /// Resize/crop only.
    None,
}

/// Feature-map side (px) at which a rosinality generator layer works: `conv1` → 4,
/// `convs.N` → 2^(3 + N/2). The map does not depend on the output size; `None` for other names.
pub fn layer_resolution(layer: &str) -> Option<u32> {
    if layer == "conv1" {
        return Some(4);
    }
    let n: u32 = layer.strip_prefix("convs.")?.parse().ok()?;
    1u32.checked_shl(3 + n / 2)
}

/// Number of `convs.*` layers of a generator with the given output size (1024 → 16).
pub fn conv_count(generator_size: u32) -> Option<u32> {
    if generator_size < 8 || !generator_size.is_power_of_two() {
        return None;
    }
    Some(2 * (generator_size.trailing_zeros() - 2))
}

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with(needle))
        .map(|i| i + 1)
}

fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        && ![".part", ".lock", ".bad", ".tmp"]
            .iter()
            .any(|s| name.ends_with(s))
        && name != PIN_FILE_NAME
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Manifest {
    /// The manifest built into the crate (`models/manifest.toml`).
    pub fn builtin() -> Result<Manifest> {
        Manifest::parse(BUILTIN_MANIFEST, "models/manifest.toml (built in)")
    }

    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = fs::read_to_string(path).map_err(io_err("read manifest", path))?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Parses and validates manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        let mut m: Manifest = toml::from_str(text).map_err(|e| StoreError::Manifest {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for f in m.files.values_mut() {
            if let Some(h) = f.sha256.as_mut() {
                *h = h.to_ascii_lowercase();
            }
        }
        let problems = m.problems(text);
        if problems.is_empty() {
            Ok(m)
        } else {
            Err(StoreError::Manifest {
                origin: origin.to_string(),
                message: problems.join("; "),
            })
        }
    }

    fn problems(&self, text: &str) -> Vec<String> {
        let mut p = Vec::new();
        let at = |needle: String| match line_of(text, &needle) {
            Some(l) => format!("line {l}: {needle}"),
            None => needle,
        };
        if self.schema != MANIFEST_SCHEMA {
            p.push(format!(
                "schema {} is not supported (this build reads {MANIFEST_SCHEMA})",
                self.schema
            ));
        }
        for (name, f) in &self.files {
            let here = at(format!("[files.\"{name}\"]"));
            if !valid_file_name(name) {
                p.push(format!("{here}: file name must be letters, digits and ._-+ (no path, no .part/.lock/.bad ending)"));
            }
            if f.size == 0 {
                p.push(format!("{here}: size must be > 0"));
            }
            if let Some(h) = &f.sha256 {
                if !is_sha256_hex(h) {
                    p.push(format!("{here}: sha256 must be 64 hex digits, got '{h}'"));
                }
            }
            for u in &f.urls {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    p.push(format!("{here}: URL '{u}' is not http(s)"));
                }
            }
        }
        for (name, s) in &self.sets {
            let here = at(format!("[sets.{name}]"));
            if s.files.is_empty() {
                p.push(format!("{here}: a set needs at least one required file"));
            }
            for (role, file) in s.files.iter().chain(&s.optional) {
                if !self.files.contains_key(file) {
                    p.push(format!(
                        "{here}: role '{role}' names file '{file}', which [files] does not list"
                    ));
                }
            }
            for r in &s.requires {
                if r == name || !self.sets.contains_key(r) {
                    p.push(format!("{here}: requires unknown set '{r}'"));
                }
            }
            if let Ok(closure) = self.closure(name) {
                let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
                for set_name in &closure {
                    let Some(entry) = self.sets.get(set_name) else {
                        continue;
                    };
                    for role in entry.files.keys().chain(entry.optional.keys()) {
                        if let Some(other) = seen.insert(role.as_str(), set_name.as_str()) {
                            p.push(format!("{here}: role '{role}' is in both set '{other}' and set '{set_name}'"));
                        }
                    }
                }
            }
            if let Some(d) = &s.domain {
                let n = d.generator_size;
                match conv_count(n) {
                    None => p.push(format!(
                        "{here}: generator_size {n} is not a power of two >= 8"
                    )),
                    Some(count) => {
                        let f = d.frame;
                        if f.height == 0
                            || f.width == 0
                            || f.top + f.height > n
                            || f.left + f.width > n
                        {
                            p.push(format!("{here}: frame {f:?} does not fit a {n}x{n} output"));
                        }
                        let layer_ok = d.default_layer == "conv1"
                            || d.default_layer
                                .strip_prefix("convs.")
                                .and_then(|i| i.parse::<u32>().ok())
                                .is_some_and(|i| i < count);
                        if !layer_ok {
                            p.push(format!(
                                "{here}: default_layer '{}' is not conv1 or convs.0..convs.{} of a {n} px generator",
                                d.default_layer,
                                count - 1
                            ));
                        }
                    }
                }
                if d.encoder_input.height == 0 || d.encoder_input.width == 0 {
                    p.push(format!("{here}: encoder_input must be non-zero"));
                }
                if !(d.default_lambda2.is_finite() && (0.0..=1.0).contains(&d.default_lambda2)) {
                    p.push(format!(
                        "{here}: default_lambda2 {} is outside 0..=1",
                        d.default_lambda2
                    ));
                }
            }
        }
        p
    }

    /// The set and every set it requires (transitively), the set itself first.
    pub fn closure(&self, set: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let mut stack = vec![set.to_string()];
        while let Some(name) = stack.pop() {
            if out.contains(&name) {
                continue;
            }
            let entry = self.set(&name)?;
            stack.extend(entry.requires.iter().rev().cloned());
            out.push(name);
        }
        Ok(out)
    }

    /// A set by name.
    pub fn set(&self, name: &str) -> Result<&SetEntry> {
        self.sets.get(name).ok_or_else(|| StoreError::UnknownSet {
            set: name.to_string(),
            known: self.sets.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// A file by name.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.get(name)
    }
}

// ===========================================================================================
// Progress
// ===========================================================================================

/// Download/verification progress. One file at a time: `start`, any number of `advance`,
/// `finish` (also after a failure).
pub trait Progress {
    /// A file begins; `done` bytes are already there (a resumed `.part`).
    fn start(&mut self, file: &str, total: u64, done: u64);
    /// `bytes` more bytes arrived (or were hashed).
    fn advance(&mut self, bytes: u64);
    /// The current file ended (successfully or not).
    fn finish(&mut self, file: &str);
    /// A line for the user (licence notes, pinned hashes, restarts).
    fn note(&mut self, _message: &str) {}
    /// Polled between chunks; `true` stops the download with [`StoreError::Cancelled`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: u64, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self, _: &str) {}
}

/// Calls `f(file, done, total)` on start, each chunk and finish; `f` returning `false` cancels.
/// The shape the C ABI wraps (`user_data` lives in the closure).
pub struct CallbackProgress<F: FnMut(&str, u64, u64) -> bool> {
    f: F,
    file: String,
    done: u64,
    total: u64,
    stop: bool,
}

impl<F: FnMut(&str, u64, u64) -> bool> CallbackProgress<F> {
    pub fn new(f: F) -> Self {
        CallbackProgress {
            f,
            file: String::new(),
            done: 0,
            total: 0,
            stop: false,
        }
    }

    fn call(&mut self) {
        if !(self.f)(&self.file, self.done, self.total) {
            self.stop = true;
        }
    }
}

impl<F: FnMut(&str, u64, u64) -> bool> Progress for CallbackProgress<F> {
    fn start(&mut self, file: &str, total: u64, done: u64) {
        self.file = file.to_string();
        self.total = total;
        self.done = done;
        self.call();
    }
    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        self.call();
    }
    fn finish(&mut self, _file: &str) {
        self.call();
    }
    fn cancelled(&self) -> bool {
        self.stop
    }
}

/// A terminal progress bar (indicatif, on stderr): bytes, MB/s and ETA. Hidden when stderr is
/// not a terminal; notes are then printed as plain lines.
#[derive(Default)]
pub struct TerminalProgress {
    bar: Option<indicatif::ProgressBar>,
}

impl TerminalProgress {
    pub fn new() -> Self {
        TerminalProgress { bar: None }
    }
}

impl Progress for TerminalProgress {
    fn start(&mut self, file: &str, total: u64, done: u64) {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {decimal_bytes_per_sec} ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(file.to_string());
        bar.set_position(done);
        bar.reset_eta();
        bar.reset_elapsed();
        self.bar = Some(bar);
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
    fn finish(&mut self, _file: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(message),
            _ => eprintln!("{message}"),
        }
    }
}

// ===========================================================================================
// Store
// ===========================================================================================

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
    Downloaded {
        bytes: u64,
        resumed_from: u64,
        url: String,
    },
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
        return Ok(home
            .join(".local")
            .join("share")
            .join("clipshape")
            .join("models"));
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
        ModelStore {
            root: root.into(),
            manifest,
            mirror: None,
            options: StoreOptions::default(),
        }
    }

    /// The store the CLI uses: [`default_root`], `CLIPSHAPE_MANIFEST` or the built-in manifest,
    /// and `CLIPSHAPE_MODELS_MIRROR`.
    pub fn from_env() -> Result<Self> {
        Self::from_env_with(|k| std::env::var_os(k))
    }

    /// [`ModelStore::from_env`] with an injected environment.
    pub fn from_env_with(env: impl Fn(&str) -> Option<OsString>) -> Result<Self> {
        let root = default_root_with(&env)?;
        let manifest = match env(ENV_MANIFEST).filter(|v| !v.is_empty()) {
            Some(path) => Manifest::load(Path::new(&path))?,
            None => Manifest::builtin()?,
        };
        let mirror = env(ENV_MIRROR)
            .and_then(|v| v.into_string().ok())
            .filter(|v| !v.trim().is_empty());
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
        self.manifest
            .file(file)
            .ok_or_else(|| StoreError::Manifest {
                origin: "manifest".into(),
                message: format!("no file '{file}' in [files]"),
            })
    }

    /// The URLs a file is fetched from: the mirror's when one is set, else the manifest's.
    pub fn urls_for(&self, file: &str) -> Vec<String> {
        match &self.mirror {
            Some(base) => vec![format!("{base}/{file}")],
            None => self
                .manifest
                .file(file)
                .map(|f| f.urls.clone())
                .unwrap_or_default(),
        }
    }

    /// (set, role, file, required) for the set and the sets it requires; optional files of
    /// all of them when `with_optional`.
    fn members(
        &self,
        set: &str,
        with_optional: bool,
    ) -> Result<Vec<(String, String, String, bool)>> {
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
                partial: fs::metadata(self.side_path(file, ".part"))
                    .map(|m| m.len())
                    .unwrap_or(0),
            },
        };
        (state, link_target)
    }

    fn present(&self, file: &str) -> bool {
        matches!(self.state_of(file).0, FileState::Present { .. })
    }

    /// Every set with the state of its files. Never fails: unreadable files count as missing.
    pub fn list(&self) -> Vec<SetStatus> {
        self.manifest
            .sets
            .keys()
            .filter_map(|s| self.status(s).ok())
            .collect()
    }

    /// One set with the state of its files.
    pub fn status(&self, set: &str) -> Result<SetStatus> {
        let entry = self.manifest.set(set)?;
        let mut files = Vec::new();
        let own = entry
            .files
            .iter()
            .map(|(r, f)| (r, f, true))
            .chain(entry.optional.iter().map(|(r, f)| (r, f, false)));
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
        let complete = self
            .members(set, false)?
            .iter()
            .all(|(_, _, f, _)| self.present(f));
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
            return members
                .iter()
                .find(|(_, r, _, _)| r == role)
                .map(|(_, _, f, _)| vec![f.clone()])
                .ok_or_else(|| StoreError::UnknownRole {
                    set: set.to_string(),
                    role: role.to_string(),
                    known: members
                        .iter()
                        .map(|(_, r, _, _)| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
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
                partial: fs::metadata(self.side_path(&file, ".part"))
                    .map(|m| m.len())
                    .unwrap_or(0),
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
        Ok(FetchReport {
            target: target.to_string(),
            files,
        })
    }

    fn ensure_root(&self) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(io_err("create directory", &self.root))
    }

    fn lock_file(&self, file: &str) -> Result<FileLock> {
        let path = self.side_path(file, ".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        fs4::FileExt::lock(&f).map_err(io_err("lock", &path))?;
        Ok(FileLock { _file: f })
    }

    /// Downloads one file of the manifest unless it is present. Blocks while another process
    /// or thread downloads the same file, then finds it complete.
    pub fn fetch_file(&self, file: &str, progress: &mut dyn Progress) -> Result<FileOutcome> {
        let entry = self.entry(file)?;
        let dest = self.file_path(file);
        let done = |action| FileOutcome {
            file: file.to_string(),
            path: dest.clone(),
            action,
            licence: entry.licence.clone(),
            pinned: None,
        };
        if self.present(file) {
            return Ok(done(FetchAction::AlreadyPresent));
        }
        self.ensure_root()?;
        let _lock = self.lock_file(file)?;
        match self.state_of(file).0 {
            FileState::Present { .. } => return Ok(done(FetchAction::AlreadyPresent)),
            FileState::WrongSize { size } => {
                let bad = self.side_path(file, ".bad");
                progress.note(&format!(
                    "{file}: the file in the store has {size} bytes instead of {}; moved aside to {}",
                    entry.size,
                    bad.display()
                ));
                move_aside(&dest, &bad)?;
            }
            FileState::Missing { .. } => {}
        }
        let urls = self.urls_for(file);
        if urls.is_empty() {
            return Err(StoreError::NoUrl {
                file: file.to_string(),
            });
        }
        let mut last_err = None;
        for url in &urls {
            let mut attempt = 0;
            loop {
                let resumed_from = fs::metadata(self.side_path(file, ".part"))
                    .map(|m| m.len())
                    .unwrap_or(0);
                progress.start(file, entry.size, resumed_from.min(entry.size));
                let result = self.download_once(file, entry, url, progress);
                progress.finish(file);
                match result.and_then(|(digest, resumed_from)| {
                    self.install(file, entry, url, &digest)
                        .map(|pinned| (pinned, resumed_from))
                }) {
                    Ok((pinned, resumed_from)) => {
                        if let Some(h) = &pinned {
                            progress.note(&format!(
                                "{file}: the manifest has no SHA-256; pinned {h} in {}",
                                self.root.join(PIN_FILE_NAME).display()
                            ));
                        }
                        let mut out = done(FetchAction::Downloaded {
                            bytes: entry.size - resumed_from,
                            resumed_from,
                            url: url.clone(),
                        });
                        out.pinned = pinned;
                        return Ok(out);
                    }
                    Err(e) if e.is_retryable() && attempt < self.options.retries => {
                        attempt += 1;
                        progress.note(&format!(
                            "{e}; retrying ({attempt}/{})",
                            self.options.retries
                        ));
                        std::thread::sleep(self.options.retry_delay * attempt);
                    }
                    Err(e) if e.is_source_error() => {
                        log::warn!("{e}");
                        last_err = Some(e);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last_err.unwrap_or(StoreError::NoUrl {
            file: file.to_string(),
        }))
    }

    fn agent(&self) -> ureq::Agent {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(10)
            .timeout_connect(Some(self.options.connect_timeout))
            .timeout_recv_response(Some(self.options.read_timeout))
            .timeout_per_read(Some(self.options.read_timeout))
            .user_agent(concat!("clipshape/", env!("CARGO_PKG_VERSION")))
            .build();
        ureq::Agent::new_with_config(config)
    }

    /// One HTTP attempt: brings `<file>.part` to the full size and returns its SHA-256 and the
    /// offset it resumed from. Never touches the final file.
    fn download_once(
        &self,
        file: &str,
        entry: &FileEntry,
        url: &str,
        progress: &mut dyn Progress,
    ) -> Result<(String, u64)> {
        let part = self.side_path(file, ".part");
        let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if have > entry.size {
            fs::remove_file(&part).map_err(io_err("remove", &part))?;
            have = 0;
        }
        let mut hasher = Sha256::new();
        if have > 0 {
            hash_reader(
                &mut File::open(&part).map_err(io_err("open", &part))?,
                &part,
                &mut hasher,
                None,
            )?;
        }
        if have == entry.size {
            return Ok((hex::encode(hasher.finalize()), have));
        }
        if self.options.check_disk_space {
            if let Ok(available) = fs4::available_space(&self.root) {
                let needed = entry.size - have;
                if available < needed {
                    return Err(StoreError::DiskFull {
                        file: file.to_string(),
                        path: self.root.clone(),
                        needed,
                        available,
                    });
                }
            }
        }
        let transfer = |bytes: u64, message: String| StoreError::Transfer {
            url: url.to_string(),
            bytes,
            message,
        };
        let mut request = self.agent().get(url).header("Accept-Encoding", "identity");
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let response = request.call().map_err(|e| transfer(0, e.to_string()))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let size_mismatch = |got: u64| StoreError::SizeMismatch {
            file: file.to_string(),
            origin: url.to_string(),
            expected: entry.size,
            got,
        };
        let resumed_from = match status {
            206 => {
                let (start, total) = header("content-range")
                    .as_deref()
                    .and_then(parse_content_range)
                    .ok_or_else(|| transfer(0, "206 without a usable Content-Range".into()))?;
                if let Some(total) = total {
                    if total != entry.size {
                        remove_if_exists(&part)?;
                        return Err(size_mismatch(total));
                    }
                }
                if start != have {
                    remove_if_exists(&part)?;
                    return Err(transfer(
                        0,
                        format!("server resumed at byte {start} instead of {have}; restarting"),
                    ));
                }
                have
            }
            200 => {
                if have > 0 {
                    progress.note(&format!(
                        "{file}: {url} does not resume downloads; starting again from 0"
                    ));
                    progress.start(file, entry.size, 0);
                    hasher = Sha256::new();
                }
                0
            }
            416 => {
                remove_if_exists(&part)?;
                return Err(transfer(
                    0,
                    "server refused the resume range (416); restarting".into(),
                ));
            }
            _ => {
                return Err(StoreError::HttpStatus {
                    url: url.to_string(),
                    status,
                })
            }
        };
        if let Some(len) = header("content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
            if resumed_from + len != entry.size {
                if resumed_from == 0 {
                    remove_if_exists(&part)?;
                }
                return Err(size_mismatch(resumed_from + len));
            }
        }
        let mut out = if resumed_from == 0 {
            File::create(&part).map_err(io_err("create", &part))?
        } else {
            let mut f = OpenOptions::new()
                .write(true)
                .open(&part)
                .map_err(io_err("open", &part))?;
            f.seek(SeekFrom::Start(resumed_from))
                .map_err(io_err("seek", &part))?;
            f
        };
        let mut have = resumed_from;
        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; CHUNK];
        loop {
            if progress.cancelled() {
                out.sync_all().map_err(io_err("write", &part))?;
                return Err(StoreError::Cancelled {
                    file: file.to_string(),
                });
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.sync_all().map_err(io_err("write", &part))?;
                    return Err(transfer(have, e.to_string()));
                }
            };
            if have + n as u64 > entry.size {
                drop(out);
                remove_if_exists(&part)?;
                return Err(StoreError::SizeMismatch {
                    file: file.to_string(),
                    origin: format!("{url} (it sent more)"),
                    expected: entry.size,
                    got: have + n as u64,
                });
            }
            let chunk = buf.get(..n).unwrap_or_default();
            out.write_all(chunk).map_err(io_err("write", &part))?;
            hasher.update(chunk);
            have += n as u64;
            progress.advance(n as u64);
        }
        out.sync_all().map_err(io_err("write", &part))?;
        if have != entry.size {
            return Err(transfer(
                have,
                format!("connection closed at {have} of {} bytes", entry.size),
            ));
        }
        Ok((hex::encode(hasher.finalize()), resumed_from))
    }

    /// Checks the hash of a complete `.part`, then renames it into place. Returns the hash it
    /// pinned, if the manifest had none.
    fn install(
        &self,
        file: &str,
        entry: &FileEntry,
        origin: &str,
        digest: &str,
    ) -> Result<Option<String>> {
        let part = self.side_path(file, ".part");
        let pinned = match self.expected_hash(file)? {
            Some(expected) if expected != digest => {
                let bad = self.side_path(file, ".bad");
                move_aside(&part, &bad)?;
                return Err(StoreError::HashMismatch {
                    file: file.to_string(),
                    origin: origin.to_string(),
                    expected,
                    got: digest.to_string(),
                    moved_to: Some(bad),
                });
            }
            Some(_) => None,
            None => {
                self.pin(file, digest, entry.size)?;
                Some(digest.to_string())
            }
        };
        let dest = self.file_path(file);
        fs::rename(&part, &dest).map_err(io_err("rename into place", &dest))?;
        Ok(pinned)
    }

    /// The hash a file must have: the manifest's, else the one pinned in [`PIN_FILE_NAME`].
    pub fn expected_hash(&self, file: &str) -> Result<Option<String>> {
        if let Some(h) = self.manifest.file(file).and_then(|f| f.sha256.clone()) {
            return Ok(Some(h));
        }
        Ok(self.read_pins()?.pinned.get(file).map(|p| p.sha256.clone()))
    }

    fn read_pins(&self) -> Result<PinFile> {
        let path = self.root.join(PIN_FILE_NAME);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PinFile::default()),
            Err(e) => {
                return Err(StoreError::Io {
                    op: "open",
                    path,
                    source: e,
                })
            }
        };
        // Shared lock: `pin` rewrites the file in place under an exclusive one.
        fs4::FileExt::lock_shared(&f).map_err(io_err("lock", &path))?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(io_err("read", &path))?;
        parse_pins(&text, &path)
    }

    fn pin(&self, file: &str, sha256: &str, size: u64) -> Result<()> {
        self.ensure_root()?;
        let path = self.root.join(PIN_FILE_NAME);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        fs4::FileExt::lock(&f).map_err(io_err("lock", &path))?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(io_err("read", &path))?;
        let mut pins = parse_pins(&text, &path)?;
        pins.pinned.insert(
            file.to_string(),
            Pin {
                sha256: sha256.to_string(),
                size,
            },
        );
        let body = toml::to_string_pretty(&pins).map_err(|e| StoreError::PinFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let text = format!(
            "# SHA-256 of model files whose manifest entry has no hash, pinned at their first download\n\
             # by clipshape. Delete an entry to accept a new upstream version of that file.\n\n{body}"
        );
        f.set_len(0).map_err(io_err("truncate", &path))?;
        f.seek(SeekFrom::Start(0)).map_err(io_err("seek", &path))?;
        f.write_all(text.as_bytes())
            .map_err(io_err("write", &path))?;
        f.sync_all().map_err(io_err("write", &path))
    }

    /// Full check of the set's files (and of the sets it requires): size and SHA-256. A file
    /// with a wrong hash is moved aside to `<name>.bad` so that `fetch` replaces it; a file
    /// without a known hash gets its hash pinned.
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
                FileState::WrongSize { size } => CheckResult::WrongSize {
                    expected: entry.size,
                    got: size,
                },
                FileState::Present { .. } => {
                    let digest = hash_file(&path, &file, progress)?;
                    match self.expected_hash(&file)? {
                        Some(expected) if expected == digest => CheckResult::Ok { sha256: digest },
                        Some(expected) => {
                            let bad = self.side_path(&file, ".bad");
                            move_aside(&path, &bad)?;
                            CheckResult::HashMismatch {
                                expected,
                                got: digest,
                                moved_to: Some(bad),
                            }
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
            members
                .iter()
                .find(|(_, r, _, _)| r == role)
                .ok_or_else(|| StoreError::UnknownRole {
                    set: set.to_string(),
                    role: role.to_string(),
                    known: members
                        .iter()
                        .map(|(_, r, _, _)| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        if self.present(file) {
            return Ok(self.file_path(file));
        }
        let target = if *required {
            set.to_string()
        } else {
            format!("{set}:{role}")
        };
        Err(StoreError::Missing {
            set: set.to_string(),
            files: vec![file.clone()],
            message: self.compose_missing(set, std::slice::from_ref(file), &target),
        })
    }

    /// Every path a command needs for `set`, or [`StoreError::Missing`] naming what is absent.
    pub fn set_paths(&self, set: &str) -> Result<SetPaths> {
        let entry = self.manifest.set(set)?;
        let missing = self.missing_files(set)?;
        if !missing.is_empty() {
            return Err(StoreError::Missing {
                set: set.to_string(),
                message: self.compose_missing(set, &missing, set),
                files: missing,
            });
        }
        let mut files = BTreeMap::new();
        for (_, role, file, required) in self.members(set, true)? {
            if required || self.present(&file) {
                files.insert(role, self.file_path(&file));
            }
        }
        Ok(SetPaths {
            set: set.to_string(),
            dir: self.root.clone(),
            files,
            domain: entry.domain.clone(),
        })
    }

    fn missing_files(&self, set: &str) -> Result<Vec<String>> {
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
        Ok((!missing.is_empty()).then(|| self.compose_missing(set, &missing, set)))
    }

    fn compose_missing(&self, set: &str, missing: &[String], target: &str) -> String {
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
                    let _ = writeln!(
                        m,
                        "      sha256 not in the manifest (pinned at first download)"
                    );
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
                    let _ = writeln!(
                        m,
                        "      (a file of the wrong size, {size} bytes, is in its place)"
                    );
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
        let _ = write!(
            m,
            "Fetch them with `clipshape models fetch {target}`, or download the URLs yourself and put the \
             files, with these names, into {dir}\n(or run `clipshape models add {set} /path/to/FILE [--link]` \
             for a copy you already have). Set {ENV_MODELS_DIR} to use another directory."
        );
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
            let digest = hash_file(src, &file, &mut NoProgress)?;
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
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(StoreError::Io {
                            op: "read",
                            path: src.to_path_buf(),
                            source: e,
                        })
                    }
                };
                let chunk = buf.get(..n).unwrap_or_default();
                to.write_all(chunk).map_err(io_err("write", &part))?;
                hasher.update(chunk);
            }
            to.sync_all().map_err(io_err("write", &part))?;
            drop(to);
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
        Ok(AddOutcome {
            file,
            path: dest,
            linked: link && !same,
            licence: entry.licence.clone(),
            pinned,
        })
    }
}

fn parse_pins(text: &str, path: &Path) -> Result<PinFile> {
    if text.trim().is_empty() {
        return Ok(PinFile::default());
    }
    toml::from_str(text).map_err(|e| StoreError::PinFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `bytes START-END/TOTAL` → (START, TOTAL); TOTAL `*` → None.
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Renames `from` over `to` (removing `to` first where rename does not replace).
fn replace(from: &Path, to: &Path) -> Result<()> {
    if cfg!(windows) {
        remove_if_exists(to)?;
    }
    fs::rename(from, to).map_err(io_err("rename into place", to))
}

fn move_aside(from: &Path, bad: &Path) -> Result<()> {
    replace(from, bad)
}

#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn make_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

#[cfg(not(any(unix, windows)))]
fn make_symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symlinks are not supported here; add without --link",
    ))
}

fn hash_reader(
    r: &mut dyn Read,
    path: &Path,
    hasher: &mut Sha256,
    mut progress: Option<&mut dyn Progress>,
) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(StoreError::Io {
                    op: "read",
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        };
        hasher.update(buf.get(..n).unwrap_or_default());
        total += n as u64;
        if let Some(p) = progress.as_deref_mut() {
            p.advance(n as u64);
        }
    }
}

fn hash_file(path: &Path, label: &str, progress: &mut dyn Progress) -> Result<String> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut hasher = Sha256::new();
    progress.start(label, len, 0);
    let r = hash_reader(&mut f, path, &mut hasher, Some(progress));
    progress.finish(label);
    r?;
    Ok(hex::encode(hasher.finalize()))
}

// ===========================================================================================
// CLI
// ===========================================================================================

/// `clipshape models …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModelsCommand {
    /// List model sets, their files, and whether each is present
    List,
    /// Download model sets (SET, SET:ROLE for an optional file, or a file name)
    Fetch {
        /// What to fetch, e.g. `ffhq` or `ffhq:generator`
        sets: Vec<String>,
    },
    /// Check sizes and SHA-256 of the files present (every set when none is named)
    Verify { set: Option<String> },
    /// Print the directory holding a set's files (fails, listing them, when files are missing)
    Path { set: String },
    /// Register a file you already have: check it, then copy it into the store
    Add {
        set: String,
        file: PathBuf,
        /// Symlink instead of copying
        #[arg(long)]
        link: bool,
    },
}

/// Runs a `models` subcommand against the store from the environment (see [`ModelStore::from_env`]).
pub fn run_cli(cmd: ModelsCommand) -> anyhow::Result<()> {
    let store = ModelStore::from_env()?;
    let stdout = io::stdout();
    run_cli_with(
        &store,
        cmd,
        &mut stdout.lock(),
        &mut TerminalProgress::new(),
    )
}

/// [`run_cli`] with an explicit store, output and progress (tests, embedders).
pub fn run_cli_with(
    store: &ModelStore,
    cmd: ModelsCommand,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match cmd {
        ModelsCommand::List => {
            let mut rows = vec![[
                "SET".to_string(),
                "FILE".into(),
                "STATE".into(),
                "SIZE".into(),
                "PATH".into(),
            ]];
            for s in store.list() {
                for f in &s.files {
                    let state = match (&f.state, f.required) {
                        (FileState::Present { .. }, _) => "present".to_string(),
                        (FileState::Missing { partial }, req) if *partial > 0 => {
                            format!(
                                "{} ({} partial)",
                                if req { "missing" } else { "optional" },
                                human_size(*partial)
                            )
                        }
                        (FileState::Missing { .. }, true) => "missing".into(),
                        (FileState::Missing { .. }, false) => "optional, absent".into(),
                        (FileState::WrongSize { size }, _) => format!("wrong size ({size} B)"),
                    };
                    let path = match &f.link_target {
                        Some(t) => format!("{} -> {}", f.path.display(), t.display()),
                        None => f.path.display().to_string(),
                    };
                    rows.push([
                        format!("{}{}", s.set, if s.complete { "" } else { "*" }),
                        f.file.clone(),
                        state,
                        human_size(f.expected_size),
                        path,
                    ]);
                }
            }
            let widths: Vec<usize> = (0..4)
                .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
                .collect();
            for r in &rows {
                writeln!(
                    out,
                    "{:w0$}  {:w1$}  {:w2$}  {:>w3$}  {}",
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2],
                    w3 = widths[3]
                )?;
            }
            writeln!(
                out,
                "(* = set incomplete; directory {})",
                store.root().display()
            )?;
        }
        ModelsCommand::Fetch { sets } => {
            if sets.is_empty() {
                anyhow::bail!(
                    "name what to fetch: {} (SET:ROLE for an optional file)",
                    store
                        .manifest()
                        .sets
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for target in &sets {
                let plan = store.plan(target)?;
                if !plan.is_empty() {
                    let total: u64 = plan.iter().map(|p| p.size - p.partial.min(p.size)).sum();
                    writeln!(
                        out,
                        "{target}: {} file(s), {} to download into {}",
                        plan.len(),
                        human_size(total),
                        store.root().display()
                    )?;
                    for p in &plan {
                        writeln!(
                            out,
                            "  {} ({}): {}",
                            p.file,
                            human_size(p.size),
                            p.licence.as_deref().unwrap_or("no licence note")
                        )?;
                    }
                }
                let report = store.fetch(target, progress).map_err(|e| {
                    let hint = store
                        .missing_files_message(target.split(':').next().unwrap_or(target))
                        .ok()
                        .flatten();
                    match hint {
                        Some(h)
                            if matches!(
                                e,
                                StoreError::Transfer { .. } | StoreError::HttpStatus { .. }
                            ) =>
                        {
                            anyhow::Error::new(e).context(format!("fetching {target} failed\n{h}"))
                        }
                        _ => anyhow::Error::new(e).context(format!("fetching {target} failed")),
                    }
                })?;
                for f in &report.files {
                    match &f.action {
                        FetchAction::AlreadyPresent => writeln!(out, "{}: present", f.file)?,
                        FetchAction::Downloaded {
                            bytes,
                            resumed_from,
                            url,
                        } => writeln!(
                            out,
                            "{}: downloaded {}{} from {url}, SHA-256 ok",
                            f.file,
                            human_size(*bytes),
                            if *resumed_from > 0 {
                                format!(" (resumed at {})", human_size(*resumed_from))
                            } else {
                                String::new()
                            }
                        )?,
                    }
                    if let Some(h) = &f.pinned {
                        writeln!(
                            out,
                            "{}: no SHA-256 in the manifest; pinned {h} in {}",
                            f.file,
                            store.root().join(PIN_FILE_NAME).display()
                        )?;
                    }
                }
            }
        }
        ModelsCommand::Verify { set } => {
            let sets: Vec<String> = match set {
                Some(s) => vec![s],
                None => store.manifest().sets.keys().cloned().collect(),
            };
            let mut bad = 0usize;
            let mut seen = BTreeSet::new();
            for s in &sets {
                for c in store.verify(s, progress)? {
                    if !seen.insert(c.file.clone()) {
                        continue;
                    }
                    let line = match &c.result {
                        CheckResult::Ok { .. } => "ok".to_string(),
                        CheckResult::Pinned { sha256 } => {
                            format!("ok, SHA-256 {sha256} pinned in {PIN_FILE_NAME}")
                        }
                        CheckResult::Missing => "missing".to_string(),
                        CheckResult::WrongSize { expected, got } => {
                            bad += 1;
                            format!("WRONG SIZE: expected {expected} bytes, got {got}")
                        }
                        CheckResult::HashMismatch {
                            expected,
                            got,
                            moved_to,
                        } => {
                            bad += 1;
                            format!(
                                "BAD SHA-256: expected {expected}, got {got}{}",
                                moved_note(moved_to)
                            )
                        }
                    };
                    writeln!(out, "{:8} {:32} {line}", c.set, c.file)?;
                }
            }
            if bad > 0 {
                anyhow::bail!("{bad} file(s) failed verification; `clipshape models fetch SET` downloads them again");
            }
        }
        ModelsCommand::Path { set } => {
            let paths = store.set_paths(&set)?;
            writeln!(out, "{}", paths.dir.display())?;
        }
        ModelsCommand::Add { set, file, link } => {
            let r = store
                .add(&set, None, &file, link)
                .with_context(|| format!("adding {} to set {set}", file.display()))?;
            writeln!(
                out,
                "{}: {} {} ({})",
                r.file,
                if r.linked { "linked at" } else { "copied to" },
                r.path.display(),
                r.licence.as_deref().unwrap_or("no licence note")
            )?;
            if let Some(h) = &r.pinned {
                writeln!(
                    out,
                    "{}: no SHA-256 in the manifest; pinned {h} in {}",
                    r.file,
                    store.root().join(PIN_FILE_NAME).display()
                )?;
            }
        }
    }
    Ok(())
}

// ===========================================================================================
// Tests (a loopback HTTP server on 127.0.0.1:0; no other traffic)
// ===========================================================================================

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier, Mutex};
    use std::thread::JoinHandle;
    use std::time::Instant;

    /// What the test server does; changeable while it runs.
    #[derive(Default)]
    struct Behaviour {
        files: HashMap<String, Vec<u8>>,
        ignore_range: bool,
        /// Body bytes sent before the connection is cut (for the next `cuts_left` responses).
        cut_after: Option<usize>,
        cuts_left: usize,
        /// Answer this many requests with 302 → /moved/<name>.
        redirects_left: usize,
        chunk_delay: Duration,
        /// (path, Range header) of every request.
        requests: Vec<(String, Option<String>)>,
    }

    struct Server {
        addr: SocketAddr,
        state: Arc<Mutex<Behaviour>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Server {
        fn start(files: &[(&str, &[u8])]) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
            listener.set_nonblocking(true).expect("nonblocking");
            let addr = listener.local_addr().expect("addr");
            let mut b = Behaviour::default();
            for (name, data) in files {
                b.files.insert(name.to_string(), data.to_vec());
            }
            let state = Arc::new(Mutex::new(b));
            let stop = Arc::new(AtomicBool::new(false));
            let (st, sp) = (state.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut handlers = Vec::new();
                while !sp.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let st = st.clone();
                            let sp = sp.clone();
                            handlers.push(std::thread::spawn(move || serve(stream, st, addr, sp)));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
                for h in handlers {
                    let _ = h.join();
                }
            });
            Server {
                addr,
                state,
                stop,
                thread: Some(thread),
            }
        }

        fn base(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn with<R>(&self, f: impl FnOnce(&mut Behaviour) -> R) -> R {
            f(&mut self.state.lock().expect("server state"))
        }

        fn requests(&self) -> Vec<(String, Option<String>)> {
            self.with(|b| b.requests.clone())
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn serve(
        mut stream: TcpStream,
        state: Arc<Mutex<Behaviour>>,
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
    ) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let Ok(clone) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(clone);
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut range = None;
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = Some(v.trim().to_string());
                }
            }
        }
        let (head, body, cut, delay) = {
            let mut b = state.lock().expect("server state");
            b.requests.push((path.clone(), range.clone()));
            let name = path.trim_start_matches('/').to_string();
            let delay = b.chunk_delay;
            if b.redirects_left > 0 && !name.starts_with("moved/") {
                b.redirects_left -= 1;
                let head = format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://{addr}/moved/{name}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                (head, Vec::new(), None, delay)
            } else {
                let name = name.strip_prefix("moved/").unwrap_or(&name).to_string();
                match b.files.get(&name).cloned() {
                    None => {
                        let body = b"not found".to_vec();
                        (format!("HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()), body, None, delay)
                    }
                    Some(data) => {
                        let start = if b.ignore_range {
                            None
                        } else {
                            range
                                .as_deref()
                                .and_then(|r| r.strip_prefix("bytes="))
                                .and_then(|r| r.strip_suffix('-'))
                                .and_then(|n| n.parse::<usize>().ok())
                        };
                        let cut = if b.cuts_left > 0 {
                            b.cuts_left -= 1;
                            b.cut_after
                        } else {
                            None
                        };
                        let len = data.len();
                        match start {
                            Some(s) if s >= len => (
                                format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                                Vec::new(),
                                None,
                                delay,
                            ),
                            Some(s) => (
                                format!(
                                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                                    len - 1,
                                    len - s
                                ),
                                data[s..].to_vec(),
                                cut,
                                delay,
                            ),
                            None => (
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"),
                                data,
                                cut,
                                delay,
                            ),
                        }
                    }
                }
            }
        };
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let limit = cut.unwrap_or(body.len()).min(body.len());
        for chunk in body[..limit].chunks(8192) {
            if stop.load(Ordering::SeqCst) || stream.write_all(chunk).is_err() {
                return;
            }
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
        }
        let _ = stream.flush();
        let _ = stream.shutdown(Shutdown::Both);
    }

    /// Deterministic pseudo-random bytes.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// A manifest with `w.bin` (set `demo`, which requires `tok` = `v.txt`) and an optional
    /// `x.bin`; URLs at `base`.
    fn manifest(base: &str, w_size: u64, w_hash: Option<String>, v: &[u8], x: &[u8]) -> Manifest {
        let mut t = String::from("schema = 1\n");
        let mut file = |name: &str, size: u64, hash: Option<String>| {
            t += &format!("[files.\"{name}\"]\nurls = [\"{base}/{name}\"]\nsize = {size}\nlicence = \"test licence of {name}\"\n");
            if let Some(h) = hash {
                t += &format!("sha256 = \"{h}\"\n");
            }
        };
        file("w.bin", w_size, w_hash);
        file("v.txt", v.len() as u64, Some(sha(v)));
        file("x.bin", x.len() as u64, Some(sha(x)));
        t += r#"
[sets.tok]
files = { vocab = "v.txt" }
[sets.demo]
description = "test set"
requires = ["tok"]
files = { weights = "w.bin" }
optional = { extra = "x.bin" }
[sets.demo.domain]
name = "face"
generator_size = 256
frame = { top = 0, left = 0, height = 256, width = 256 }
encoder_input = { height = 256, width = 256 }
align = "none"
default_layer = "convs.3"
default_lambda2 = 0.05
"#;
        Manifest::parse(&t, "test manifest").expect("test manifest parses")
    }

    fn options() -> StoreOptions {
        StoreOptions {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            retries: 0,
            retry_delay: Duration::ZERO,
            check_disk_space: true,
        }
    }

    struct Fx {
        server: Server,
        dir: tempfile::TempDir,
        store: ModelStore,
        w: Vec<u8>,
        v: Vec<u8>,
    }

    /// Server serving `served_w` as w.bin (None: the real w), manifest with the real w's size
    /// and hash (unless `hash_w` is false).
    fn fx(served_w: Option<Vec<u8>>, hash_w: bool) -> Fx {
        let w = bytes(300_000, 1);
        let v = bytes(20_000, 2);
        let x = bytes(7_000, 3);
        let served = served_w.unwrap_or_else(|| w.clone());
        let server = Server::start(&[("w.bin", &served), ("v.txt", &v), ("x.bin", &x)]);
        let m = manifest(
            &server.base(),
            w.len() as u64,
            hash_w.then(|| sha(&w)),
            &v,
            &x,
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ModelStore::new(dir.path().join("models"), m).with_options(options());
        Fx {
            server,
            dir,
            store,
            w,
            v,
        }
    }

    fn read(p: &Path) -> Vec<u8> {
        fs::read(p).expect("read file")
    }

    fn dead_url() -> String {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        format!("http://{addr}")
    }

    #[test]
    fn full_download_of_a_set_and_the_set_it_requires() {
        let f = fx(None, true);
        assert!(f
            .store
            .missing_files_message("demo")
            .expect("known set")
            .is_some());
        let report = f.store.fetch("demo", &mut NoProgress).expect("fetch");
        let names: Vec<&str> = report.files.iter().map(|o| o.file.as_str()).collect();
        assert_eq!(names, ["w.bin", "v.txt"]);
        for o in &report.files {
            assert!(
                matches!(
                    o.action,
                    FetchAction::Downloaded {
                        resumed_from: 0,
                        ..
                    }
                ),
                "{o:?}"
            );
            assert_eq!(
                o.licence.as_deref(),
                Some(format!("test licence of {}", o.file).as_str())
            );
            assert!(o.pinned.is_none());
        }
        assert_eq!(read(&f.store.file_path("w.bin")), f.w);
        assert_eq!(read(&f.store.file_path("v.txt")), f.v);
        assert!(!f.store.root().join("w.bin.part").exists());
        assert_eq!(f.server.requests().len(), 2);
        let paths = f.store.set_paths("demo").expect("complete");
        assert_eq!(
            paths.get("weights"),
            Some(f.store.file_path("w.bin").as_path())
        );
        assert_eq!(
            paths.get("vocab"),
            Some(f.store.file_path("v.txt").as_path())
        );
        assert_eq!(paths.get("extra"), None, "optional file absent");
        assert_eq!(
            paths.domain.as_ref().map(|d| d.default_layer.as_str()),
            Some("convs.3")
        );
        assert!(f
            .store
            .missing_files_message("demo")
            .expect("known set")
            .is_none());
        let st = f.store.status("demo").expect("status");
        assert!(st.complete);
        // The optional file comes with SET:ROLE.
        f.store
            .fetch("demo:extra", &mut NoProgress)
            .expect("fetch optional");
        assert!(f
            .store
            .set_paths("demo")
            .expect("complete")
            .get("extra")
            .is_some());
        let checks = f.store.verify("demo", &mut NoProgress).expect("verify");
        assert_eq!(checks.len(), 3);
        assert!(
            checks
                .iter()
                .all(|c| matches!(c.result, CheckResult::Ok { .. })),
            "{checks:?}"
        );
    }

    #[test]
    fn redirect_is_followed() {
        let f = fx(None, true);
        f.server.with(|b| b.redirects_left = 1);
        f.store
            .fetch_file("w.bin", &mut NoProgress)
            .expect("fetch through a redirect");
        assert_eq!(read(&f.store.file_path("w.bin")), f.w);
        let paths: Vec<String> = f.server.requests().into_iter().map(|r| r.0).collect();
        assert_eq!(paths, ["/w.bin", "/moved/w.bin"]);
    }

    #[test]
    fn resume_after_a_cut_connection() {
        let f = fx(None, true);
        f.server.with(|b| {
            b.cut_after = Some(100_000);
            b.cuts_left = 1;
        });
        let url = format!("{}/w.bin", f.server.base());
        let err = f
            .store
            .fetch_file("w.bin", &mut NoProgress)
            .expect_err("connection cut");
        assert!(matches!(err, StoreError::Transfer { .. }), "{err:?}");
        assert!(err.to_string().contains(&url), "{err}");
        let part = f.store.root().join("w.bin.part");
        let have = fs::metadata(&part).expect("partial file kept").len();
        assert!(have > 0 && have <= 100_000, "{have}");
        assert!(!f.store.file_path("w.bin").exists());
        let msg = f
            .store
            .missing_files_message("demo")
            .expect("set")
            .expect("incomplete");
        assert!(msg.contains("w.bin.part; a fetch resumes it"), "{msg}");

        // The resume goes through a redirect, as on Hugging Face: the Range header must survive.
        f.server.with(|b| b.redirects_left = 1);
        let out = f
            .store
            .fetch_file("w.bin", &mut NoProgress)
            .expect("resumed fetch");
        assert!(
            matches!(out.action, FetchAction::Downloaded { resumed_from, .. } if resumed_from == have),
            "{out:?}"
        );
        let last = f.server.requests().pop().expect("a request");
        assert_eq!(
            last,
            ("/moved/w.bin".to_string(), Some(format!("bytes={have}-")))
        );
        assert_eq!(read(&f.store.file_path("w.bin")), f.w);
        assert!(!part.exists());
    }

    #[test]
    fn retries_resume_within_one_fetch() {
        let f = fx(None, true);
        f.server.with(|b| {
            b.cut_after = Some(50_000);
            b.cuts_left = 2;
        });
        let store = f.store.clone().with_options(StoreOptions {
            retries: 2,
            ..options()
        });
        let out = store
            .fetch_file("w.bin", &mut NoProgress)
            .expect("fetch with retries");
        assert!(
            matches!(out.action, FetchAction::Downloaded { resumed_from, .. } if resumed_from > 0),
            "{out:?}"
        );
        assert_eq!(read(&store.file_path("w.bin")), f.w);
        let reqs = f.server.requests();
        assert_eq!(reqs.len(), 3);
        assert!(reqs[1].1.is_some() && reqs[2].1.is_some(), "{reqs:?}");
    }

    #[test]
    fn a_stalled_transfer_times_out() {
        let f = fx(None, true);
        f.server
            .with(|b| b.chunk_delay = Duration::from_millis(1500));
        let store = f.store.clone().with_options(StoreOptions {
            read_timeout: Duration::from_millis(300),
            ..options()
        });
        let t0 = Instant::now();
        let err = store
            .fetch_file("w.bin", &mut NoProgress)
            .expect_err("stalled");
        assert!(matches!(err, StoreError::Transfer { .. }), "{err:?}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(!store.file_path("w.bin").exists());
    }

    #[test]
    fn server_without_range_support_restarts_from_zero() {
        let f = fx(None, true);
        f.server.with(|b| b.ignore_range = true);
        fs::create_dir_all(f.store.root()).expect("mkdir");
        // A stale .part that does not even match: the 200 answer must discard it.
        fs::write(f.store.root().join("w.bin.part"), vec![0xAB; 5000]).expect("write part");
        let out = f.store.fetch_file("w.bin", &mut NoProgress).expect("fetch");
        assert!(
            matches!(
                out.action,
                FetchAction::Downloaded {
                    resumed_from: 0,
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(read(&f.store.file_path("w.bin")), f.w);
        assert_eq!(f.server.requests()[0].1.as_deref(), Some("bytes=5000-"));
    }

    #[test]
    fn http_404_names_the_url_and_status() {
        let f = fx(None, true);
        f.server.with(|b| b.files.remove("w.bin"));
        let err = f
            .store
            .fetch_file("w.bin", &mut NoProgress)
            .expect_err("404");
        assert!(
            matches!(err, StoreError::HttpStatus { status: 404, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("404") && msg.contains(&format!("{}/w.bin", f.server.base())),
            "{msg}"
        );
        assert!(!f.store.file_path("w.bin").exists());
        assert!(!f.store.root().join("w.bin.part").exists());
    }

    #[test]
    fn a_wrong_size_is_never_success() {
        for served_len in [299_990usize, 300_010] {
            let f = fx(Some(bytes(served_len, 1)), true);
            let err = f
                .store
                .fetch_file("w.bin", &mut NoProgress)
                .expect_err("wrong size");
            match &err {
                StoreError::SizeMismatch { expected, got, .. } => {
                    assert_eq!((*expected, *got), (300_000, served_len as u64));
                }
                other => panic!("{other:?}"),
            }
            assert!(!f.store.file_path("w.bin").exists());
            let st = f.store.status("demo").expect("status");
            assert!(!st.complete);
            assert!(matches!(st.files[0].state, FileState::Missing { .. }));
        }
    }

    #[test]
    fn hash_mismatch_moves_the_file_aside() {
        let f = fx(Some(bytes(300_000, 99)), true);
        let err = f
            .store
            .fetch_file("w.bin", &mut NoProgress)
            .expect_err("bad hash");
        let msg = err.to_string();
        assert!(
            msg.contains(&sha(&f.w)) && msg.contains(&sha(&bytes(300_000, 99))),
            "{msg}"
        );
        match &err {
            StoreError::HashMismatch {
                moved_to: Some(p), ..
            } => assert_eq!(read(p), bytes(300_000, 99)),
            other => panic!("{other:?}"),
        }
        assert!(
            !f.store.file_path("w.bin").exists(),
            "a bad file is never under its name"
        );
        assert!(matches!(
            f.store.set_paths("demo"),
            Err(StoreError::Missing { .. })
        ));
    }

    #[test]
    fn a_present_file_is_not_downloaded_again() {
        let f = fx(None, true);
        f.store
            .fetch_file("w.bin", &mut NoProgress)
            .expect("first fetch");
        let again = f
            .store
            .fetch_file("w.bin", &mut NoProgress)
            .expect("second fetch");
        assert_eq!(again.action, FetchAction::AlreadyPresent);
        assert_eq!(f.server.requests().len(), 1);
        assert!(f.store.plan("w.bin").expect("plan").is_empty());
    }

    #[test]
    fn add_copies_or_links_a_checked_file() {
        let f = fx(None, true);
        let src = f.dir.path().join("my-download.bin");
        fs::write(&src, &f.w).expect("write src");
        // Copy, with the manifest file inferred from the size.
        let out = f.store.add("demo", None, &src, false).expect("add copy");
        assert_eq!(out.file, "w.bin");
        assert!(!out.linked);
        let dest = f.store.file_path("w.bin");
        assert!(!fs::symlink_metadata(&dest)
            .expect("dest")
            .file_type()
            .is_symlink());
        assert_eq!(read(&dest), f.w);
        // Link, naming the file.
        fs::remove_file(&dest).expect("rm");
        let out = f
            .store
            .add("demo", Some("w.bin"), &src, true)
            .expect("add link");
        assert!(out.linked);
        #[cfg(unix)]
        assert_eq!(
            fs::read_link(&dest).expect("symlink"),
            fs::canonicalize(&src).expect("canon")
        );
        assert_eq!(read(&dest), f.w);
        assert!(f.store.status("demo").expect("status").files[0]
            .link_target
            .is_some());
        // A same-size file with other content is refused and left alone.
        fs::remove_file(&dest).expect("rm");
        let wrong = f.dir.path().join("w.bin");
        fs::write(&wrong, bytes(300_000, 7)).expect("write");
        let err = f
            .store
            .add("demo", None, &wrong, false)
            .expect_err("wrong content");
        assert!(
            matches!(err, StoreError::HashMismatch { moved_to: None, .. }),
            "{err:?}"
        );
        assert!(wrong.exists() && !dest.exists());
        let err = f
            .store
            .add("demo", Some("nope.bin"), &src, false)
            .expect_err("unknown file");
        assert!(err.to_string().contains("w.bin"), "{err}");
        assert_eq!(f.server.requests().len(), 0);
    }

    #[test]
    fn concurrent_fetches_of_one_file_end_with_one_correct_file() {
        let f = fx(None, true);
        f.server.with(|b| b.chunk_delay = Duration::from_millis(4));
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let store = f.store.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    store.fetch_file("w.bin", &mut NoProgress).map(|o| o.action)
                })
            })
            .collect();
        let actions: Vec<FetchAction> = handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("fetch"))
            .collect();
        assert_eq!(
            actions
                .iter()
                .filter(|a| matches!(a, FetchAction::Downloaded { .. }))
                .count(),
            1,
            "{actions:?}"
        );
        assert!(actions.contains(&FetchAction::AlreadyPresent));
        assert_eq!(f.server.requests().len(), 1);
        assert_eq!(read(&f.store.file_path("w.bin")), f.w);
        assert!(!f.store.root().join("w.bin.part").exists());
    }

    #[test]
    fn an_unknown_hash_is_pinned_then_enforced() {
        let f = fx(None, false);
        let out = f.store.fetch_file("w.bin", &mut NoProgress).expect("fetch");
        assert_eq!(out.pinned.as_deref(), Some(sha(&f.w).as_str()));
        let lock = fs::read_to_string(f.store.root().join(PIN_FILE_NAME)).expect("lock file");
        assert!(
            lock.contains("w.bin") && lock.contains(&sha(&f.w)),
            "{lock}"
        );
        assert_eq!(
            f.store.expected_hash("w.bin").expect("pins"),
            Some(sha(&f.w))
        );
        // Upstream changes: the pinned hash rejects the new bytes.
        fs::remove_file(f.store.file_path("w.bin")).expect("rm");
        f.server
            .with(|b| b.files.insert("w.bin".into(), bytes(300_000, 5)));
        let err = f
            .store
            .fetch_file("w.bin", &mut NoProgress)
            .expect_err("pinned hash");
        match err {
            StoreError::HashMismatch { expected, .. } => assert_eq!(expected, sha(&f.w)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_mirror_replaces_the_manifest_urls() {
        let f = fx(None, true);
        let w = f.w.clone();
        let m = manifest(
            &dead_url(),
            w.len() as u64,
            Some(sha(&w)),
            &f.v,
            &bytes(7_000, 3),
        );
        let store = ModelStore::new(f.dir.path().join("m2"), m)
            .with_options(options())
            .with_mirror(Some(format!("{}/", f.server.base())));
        assert_eq!(
            store.urls_for("w.bin"),
            [format!("{}/w.bin", f.server.base())]
        );
        store
            .fetch("demo", &mut NoProgress)
            .expect("fetch from mirror");
        assert_eq!(read(&store.file_path("w.bin")), w);
        let msg = ModelStore::new(f.dir.path().join("m3"), store.manifest().clone())
            .with_mirror(Some("http://127.0.0.1:9/mirror".into()))
            .missing_files_message("demo")
            .expect("known set")
            .expect("incomplete");
        assert!(msg.contains("http://127.0.0.1:9/mirror/w.bin"), "{msg}");
    }

    #[test]
    fn offline_message_lists_files_urls_and_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let store = ModelStore::new(&root, Manifest::builtin().expect("builtin manifest"));
        let msg = store
            .missing_files_message("ffhq")
            .expect("known set")
            .expect("incomplete");
        for needle in [
            "e4e_ffhq_encode.pt",
            "https://huggingface.co/public-data/e4e/resolve/fdd18714fc6b639487adbd901f16f67eb24ba786/e4e_ffhq_encode.pt",
            "ViT-B-32.pt",
            "bpe_simple_vocab_16e6.txt.gz",
            "https://raw.githubusercontent.com/openai/CLIP/d05afc436d78f1c48dc0dbf8e5980a9d471f35f6/clip/bpe_simple_vocab_16e6.txt.gz",
            "clipshape models fetch ffhq",
            "1201649680",
        ] {
            assert!(msg.contains(needle), "missing {needle} in:\n{msg}");
        }
        assert!(msg.contains(&root.display().to_string()), "{msg}");
        match store.set_paths("ffhq") {
            Err(StoreError::Missing { files, message, .. }) => {
                assert_eq!(files.len(), 3);
                assert_eq!(message, msg);
            }
            other => panic!("{other:?}"),
        }
        let err = store
            .path("ffhq", "generator")
            .expect_err("optional absent");
        assert!(
            err.to_string()
                .contains("clipshape models fetch ffhq:generator"),
            "{err}"
        );
        assert!(matches!(
            store.path("ffhq", "nope"),
            Err(StoreError::UnknownRole { .. })
        ));
        assert!(matches!(
            store.set_paths("nope"),
            Err(StoreError::UnknownSet { .. })
        ));
        // Unreachable source: the error names the URL.
        let dead = dead_url();
        let store = store
            .with_mirror(Some(dead.clone()))
            .with_options(options());
        let err = store
            .fetch_file("bpe_simple_vocab_16e6.txt.gz", &mut NoProgress)
            .expect_err("refused");
        assert!(matches!(err, StoreError::Transfer { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("{dead}/bpe_simple_vocab_16e6.txt.gz")),
            "{err}"
        );
    }

    #[test]
    fn the_real_manifest_is_consistent() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/manifest.toml");
        let m = Manifest::load(Path::new(path)).expect("models/manifest.toml parses and validates");
        assert_eq!(m, Manifest::builtin().expect("builtin"));
        for set in ["ffhq", "car", "horse", "clip"] {
            assert!(m.sets.contains_key(set), "{set}");
        }
        let clip = m.set("clip").expect("clip");
        assert_eq!(
            clip.files.get("clip").map(String::as_str),
            Some("ViT-B-32.pt")
        );
        assert_eq!(
            clip.files.get("bpe").map(String::as_str),
            Some("bpe_simple_vocab_16e6.txt.gz")
        );
        for (name, f) in &m.files {
            assert!(f.size > 100_000, "{name}: implausible size {}", f.size);
            let h = f.sha256.as_deref().unwrap_or_default();
            assert!(
                is_sha256_hex(h) && h == h.to_ascii_lowercase(),
                "{name}: {h}"
            );
            assert!(
                !f.urls.is_empty() && f.urls.iter().all(|u| u.starts_with("https://")),
                "{name}"
            );
            assert!(
                f.urls.iter().all(|u| u.ends_with(&format!("/{name}"))),
                "{name}"
            );
            assert!(
                f.licence.as_deref().is_some_and(|l| !l.is_empty()),
                "{name}"
            );
        }
        let expect = [
            ("ffhq", "e4e_ffhq_encode.pt", 1024u32),
            ("car", "e4e_cars_encode.pt", 512),
            ("horse", "e4e_horse_encode.pt", 256),
        ];
        for (set, e4e, size) in expect {
            let s = m.set(set).expect("set");
            assert_eq!(s.requires, ["clip"], "{set}");
            assert_eq!(s.files.get("e4e").map(String::as_str), Some(e4e));
            assert!(
                m.files[e4e].size > 500_000_000,
                "{set}: an e4e file holds encoder + generator"
            );
            let gen = s
                .optional
                .get("generator")
                .expect("standalone generator alternative");
            assert!(gen.starts_with("stylegan2-") && gen.ends_with("-config-f.pt"));
            for file in s.files.values().chain(s.optional.values()) {
                assert!(m.files.contains_key(file), "{set}: {file}");
            }
            let d = s.domain.as_ref().expect("domain");
            assert_eq!(d.generator_size, size);
            let res = layer_resolution(&d.default_layer).expect("layer name");
            assert!(
                (16..=32).contains(&res),
                "{set}: {} works at {res} px",
                d.default_layer
            );
            assert!((0.01..=0.1).contains(&d.default_lambda2), "{set}");
            assert!(!d.prompts.is_empty());
        }
        let car = m
            .set("car")
            .and_then(|s| s.domain.clone().ok_or(StoreError::NoModelDir))
            .expect("car domain");
        assert_eq!(
            car.frame,
            Frame {
                top: 64,
                left: 0,
                height: 384,
                width: 512
            }
        );
        assert_eq!(
            car.encoder_input,
            Size {
                height: 192,
                width: 256
            }
        );
        let ffhq = m
            .set("ffhq")
            .and_then(|s| s.domain.clone().ok_or(StoreError::NoModelDir))
            .expect("ffhq domain");
        assert_eq!(ffhq.align, Align::Ffhq);
        assert_eq!(
            ffhq.frame,
            Frame {
                top: 0,
                left: 0,
                height: 1024,
                width: 1024
            }
        );
        assert!(ffhq.prompts.iter().any(|p| p == "face with big nose"));
    }

    #[test]
    fn manifest_errors_are_located() {
        let err = Manifest::parse("schema = 1\n[files.\"a.bin\"]\nsize = = 3\n", "bad.toml")
            .expect_err("syntax");
        let msg = err.to_string();
        assert!(msg.contains("bad.toml") && msg.contains("line 3"), "{msg}");
        let text = "schema = 1\n[files.\"a.bin\"]\nsize = 3\nsha256 = \"abc\"\n\n[sets.s]\nfiles = { w = \"b.bin\" }\n";
        let msg = Manifest::parse(text, "m.toml")
            .expect_err("semantic")
            .to_string();
        assert!(msg.contains("line 2") && msg.contains("64 hex"), "{msg}");
        assert!(msg.contains("line 6") && msg.contains("'b.bin'"), "{msg}");
        let msg = Manifest::parse("schema = 1\nfoo = 2\n", "m.toml")
            .expect_err("unknown key")
            .to_string();
        assert!(msg.contains("foo"), "{msg}");
        // A missing hash is allowed.
        Manifest::parse(
            "schema = 1\n[files.\"a.bin\"]\nsize = 3\n[sets.s]\nfiles = { w = \"a.bin\" }\n",
            "ok",
        )
        .expect("no hash is fine");
    }

    #[test]
    fn default_root_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let r = |p: &'static [(&'static str, &'static str)]| default_root_with(env(p)).ok();
        assert_eq!(
            r(&[
                ("CLIPSHAPE_MODELS", "/m"),
                ("XDG_DATA_HOME", "/x"),
                ("HOME", "/h")
            ]),
            Some(PathBuf::from("/m"))
        );
        assert_eq!(
            r(&[
                ("CLIPSHAPE_MODELS", ""),
                ("XDG_DATA_HOME", "/x"),
                ("HOME", "/h")
            ]),
            Some(PathBuf::from("/x/clipshape/models"))
        );
        assert_eq!(
            r(&[("XDG_DATA_HOME", "rel"), ("HOME", "/h")]),
            Some(PathBuf::from("/h/.local/share/clipshape/models"))
        );
        assert_eq!(r(&[]), None);
        let store = ModelStore::from_env_with(env(&[
            ("HOME", "/h"),
            ("CLIPSHAPE_MODELS_MIRROR", "http://127.0.0.1:1/base/"),
        ]))
        .expect("store");
        assert_eq!(
            store.urls_for("ViT-B-32.pt"),
            ["http://127.0.0.1:1/base/ViT-B-32.pt"]
        );
        assert_eq!(store.root(), Path::new("/h/.local/share/clipshape/models"));
    }

    #[test]
    fn a_callback_can_cancel_and_the_part_is_kept() {
        let f = fx(None, true);
        let mut calls = 0u32;
        let mut seen_total = 0;
        let mut p = CallbackProgress::new(|file: &str, done: u64, total: u64| {
            assert_eq!(file, "w.bin");
            seen_total = total;
            calls += 1;
            done == 0
        });
        let err = f.store.fetch_file("w.bin", &mut p).expect_err("cancelled");
        assert!(matches!(err, StoreError::Cancelled { .. }), "{err:?}");
        assert!(f.store.root().join("w.bin.part").exists());
        assert!(!f.store.file_path("w.bin").exists());
        drop(p);
        assert!(calls >= 2);
        assert_eq!(seen_total, 300_000);
    }

    #[test]
    fn verify_moves_a_corrupt_file_aside() {
        let f = fx(None, true);
        f.store.fetch("demo", &mut NoProgress).expect("fetch");
        fs::write(f.store.file_path("w.bin"), bytes(300_000, 42)).expect("corrupt");
        let checks = f.store.verify("demo", &mut NoProgress).expect("verify");
        let w = checks
            .iter()
            .find(|c| c.file == "w.bin")
            .expect("w checked");
        assert!(
            matches!(
                &w.result,
                CheckResult::HashMismatch {
                    moved_to: Some(_),
                    ..
                }
            ),
            "{w:?}"
        );
        assert!(!f.store.file_path("w.bin").exists());
        let v = checks
            .iter()
            .find(|c| c.file == "v.txt")
            .expect("v checked");
        assert!(matches!(v.result, CheckResult::Ok { .. }));
        // fetch replaces it.
        f.store.fetch("demo", &mut NoProgress).expect("refetch");
        assert_eq!(read(&f.store.file_path("w.bin")), f.w);
    }

    #[test]
    fn layer_resolutions() {
        assert_eq!(layer_resolution("conv1"), Some(4));
        assert_eq!(layer_resolution("convs.0"), Some(8));
        assert_eq!(layer_resolution("convs.3"), Some(16));
        assert_eq!(layer_resolution("convs.5"), Some(32));
        assert_eq!(layer_resolution("convs.15"), Some(1024));
        assert_eq!(layer_resolution("to_rgbs.1"), None);
        assert_eq!(conv_count(1024), Some(16));
        assert_eq!(conv_count(512), Some(14));
        assert_eq!(conv_count(256), Some(12));
        assert_eq!(conv_count(300), None);
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn cli_list_path_and_parse() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: ModelsCommand,
        }
        use clap::Parser as _;
        let cli =
            Cli::try_parse_from(["models", "add", "ffhq", "/tmp/a.pt", "--link"]).expect("parse");
        assert!(matches!(cli.cmd, ModelsCommand::Add { link: true, .. }));
        let cli = Cli::try_parse_from(["models", "fetch", "ffhq", "car:generator"]).expect("parse");
        assert!(matches!(cli.cmd, ModelsCommand::Fetch { ref sets } if sets.len() == 2));

        let f = fx(None, true);
        let run = |cmd| {
            let mut out = Vec::new();
            let r = run_cli_with(&f.store, cmd, &mut out, &mut NoProgress);
            (r, String::from_utf8_lossy(&out).into_owned())
        };
        let (r, out) = run(ModelsCommand::List);
        r.expect("list");
        assert!(
            out.contains("demo*") && out.contains("w.bin") && out.contains("missing"),
            "{out}"
        );
        let (r, out) = run(ModelsCommand::Path { set: "demo".into() });
        assert!(out.is_empty());
        assert!(format!("{:#}", r.expect_err("incomplete")).contains("w.bin"));
        let (r, out) = run(ModelsCommand::Fetch {
            sets: vec!["demo".into()],
        });
        r.expect("fetch");
        assert!(out.contains("test licence of w.bin"), "{out}");
        let (r, out) = run(ModelsCommand::Path { set: "demo".into() });
        r.expect("path");
        assert_eq!(out, format!("{}\n", f.store.root().display()));
        let (r, out) = run(ModelsCommand::Verify { set: None });
        r.expect("verify");
        assert!(out.contains("w.bin") && out.contains("ok"), "{out}");
        let (r, out) = run(ModelsCommand::List);
        r.expect("list");
        assert!(out.contains("present") && !out.contains("demo*"), "{out}");
    }
}
