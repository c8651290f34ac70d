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

/// libtorch appends a C++ backtrace to its messages (`Exception raised from …`, or `frame #0:
/// …` lines); users need what comes before it.
fn torch_message(e: &tch::TchError) -> String {
    let s = e.to_string();
    let end = ["\nException raised from", "\nframe #"].iter().filter_map(|m| s.find(m)).min().unwrap_or(s.len());
    s[..end].trim().to_string()
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
        if let Some(bytes) = s.split("you tried to allocate ").nth(1).and_then(|t| t.split(' ').next()) {
            let mb = bytes.parse::<f64>().map(|b| format!(" ({:.0} MB)", b / 1e6)).unwrap_or_default();
            Error::OutOfMemory(format!("libtorch could not allocate {bytes} bytes{mb}"))
        } else if s.contains("out of memory") || s.contains("DefaultCPUAllocator: can't allocate") {
            Error::OutOfMemory(s.lines().next().unwrap_or_default().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #29 item 7: libtorch's allocation failures carry a C++ backtrace; what a host shows
    /// is one line naming the size.
    #[test]
    fn a_failed_allocation_is_one_line_naming_its_size() {
        let e: Error = tch::Tensor::f_zeros([1i64 << 42], (tch::Kind::Float, tch::Device::Cpu)).unwrap_err().into();
        let m = e.to_string();
        assert!(matches!(e, Error::OutOfMemory(_)), "{m}");
        assert!(!m.contains('\n') && m.len() < 300 && m.contains("17592186044416 bytes"), "{m}");
    }
}
