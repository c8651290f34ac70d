//! The store's errors: each variant names the file, URL or path, and keeps its kind so the C
//! ABI can tell an integrity failure from a download failure from a bad manifest.

use std::io;
use std::path::{Path, PathBuf};

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
    UnknownRole { set: String, role: String, known: String },
    #[error("'{file}' is not a file of model set '{set}' (its files: {known})")]
    UnknownFile { set: String, file: String, known: String },
    /// Files are missing from the store; the message says which, from where, and where to.
    #[error("{message}")]
    Missing { set: String, files: Vec<String>, message: String },
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
    Transfer { url: String, bytes: u64, message: String },
    #[error("{file}: wrong size from {origin}: expected {expected} bytes, got {got}")]
    SizeMismatch { file: String, origin: String, expected: u64, got: u64 },
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
    DiskFull { file: String, path: PathBuf, needed: u64, available: u64 },
    #[error("{file}: the manifest has no download URL for it; get it yourself and register it with `clipshape models add SET FILE`")]
    NoUrl { file: String },
    #[error("download of {file} cancelled (the partial file is kept for a later resume)")]
    Cancelled { file: String },
    #[error("hash lock file {}: {message}", .path.display())]
    PinFile { path: PathBuf, message: String },
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(super) fn io_hint(e: &io::Error) -> &'static str {
    // ENOSPC (Linux/macOS 28) / ERROR_DISK_FULL (Windows 112) / ERROR_HANDLE_DISK_FULL (39).
    let full = matches!(e.raw_os_error(), Some(28)) && cfg!(unix)
        || matches!(e.raw_os_error(), Some(39) | Some(112)) && cfg!(windows);
    if full {
        " (disk full: free some space or point CLIPSHAPE_MODELS at a larger disk)"
    } else {
        ""
    }
}

pub fn moved_note(moved: &Option<PathBuf>) -> String {
    match moved {
        Some(p) => format!("; the bad file was moved aside to {}", p.display()),
        None => String::new(),
    }
}

pub(super) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}

impl StoreError {
    /// Errors that concern one source (URL) and may go away on a retry or with another URL.
    pub(super) fn is_source_error(&self) -> bool {
        matches!(
            self,
            StoreError::HttpStatus { .. }
                | StoreError::Transfer { .. }
                | StoreError::SizeMismatch { .. }
                | StoreError::HashMismatch { .. }
        )
    }

    /// Errors worth retrying on the same URL (resuming from the `.part`).
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            StoreError::Transfer { .. } => true,
            StoreError::HttpStatus { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}
