//! The library's one error type. `ffi.rs` maps each variant to a `cs_status` and keeps the
//! message as the thread's last error, so every message must name what was wrong (file, key,
//! shape, argument) on its own.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: not a supported model file: {reason}")]
    Format { path: PathBuf, reason: String },

    #[error("{path}: missing tensor `{key}`")]
    MissingTensor { path: PathBuf, key: String },

    #[error("{path}: tensor `{key}` has shape {got:?}, expected {expected:?}")]
    Shape { path: PathBuf, key: String, expected: Vec<i64>, got: Vec<i64> },

    #[error("{path}: tensor `{key}` contains NaN or infinite values")]
    NotFinite { path: PathBuf, key: String },

    /// Several key problems at once: users fix a checkpoint in one round, not one key per run.
    #[error("{path}: checkpoint does not match the {model} architecture: {details}")]
    Keys { path: PathBuf, model: &'static str, details: String },

    #[error("{path}: cannot tell the {model} architecture: {reason}")]
    UnknownArchitecture { path: PathBuf, model: &'static str, reason: String },

    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument { name: &'static str, reason: String },

    #[error("model mismatch: {0}")]
    Mismatch(String),

    /// A PyTorch file could not be read (kept whole so I/O and corruption stay apart).
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::torch::CheckpointError),

    /// Model files missing, a download failed, a file failed verification, or the manifest is
    /// wrong: the store's own error, kept whole so each kind gets its status.
    #[error(transparent)]
    Store(crate::store::StoreError),

    #[error("device: {0}")]
    Device(String),

    #[error("cancelled")]
    Cancelled,

    /// libtorch could not allocate (it reports this as a plain exception; told apart once, in
    /// `From<TchError>`).
    #[error("out of memory: {0}")]
    OutOfMemory(String),

    /// The optimisation produced a non-finite loss or result.
    #[error("the optimisation diverged: {0}")]
    Diverged(String),

    #[error("torch: {}", torch_message(.0))]
    Torch(tch::TchError),

    #[error("internal error: {0}")]
    Internal(String),
}

/// libtorch appends a C++ backtrace to its messages; users need the first lines only.
fn torch_message(e: &tch::TchError) -> String {
    let s = e.to_string();
    s.split("\nException raised from").next().unwrap_or(&s).trim().to_string()
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::Cancelled { .. } => Error::Cancelled,
            S::UnknownSet { .. } | S::UnknownRole { .. } | S::UnknownFile { .. } => Error::arg("set", e.to_string()),
            e => Error::Store(e),
        }
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        let s = torch_message(&e);
        if s.contains("out of memory") || s.contains("DefaultCPUAllocator: can't allocate") {
            Error::OutOfMemory(s)
        } else {
            Error::Torch(e)
        }
    }
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    pub fn format(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::Format { path: path.as_ref().to_path_buf(), reason: reason.into() }
    }

    pub fn arg(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { name, reason: reason.into() }
    }
}
