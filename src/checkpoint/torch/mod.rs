//! Pure-Rust reader for PyTorch files (no Python, no libtorch): the containers.
//!
//! Three on-disk layouts are understood:
//!
//! * the zip format of `torch.save` (torch >= 1.6): `<prefix>/data.pkl` plus one
//!   raw entry per storage under `<prefix>/data/<key>`;
//! * TorchScript archives (`torch.jit.save`): the same zip layout, but the
//!   pickle holds `__torch__.*` module objects whose state dicts carry the
//!   parameters (and `<prefix>/code/` holds the compiled source, ignored here);
//! * the legacy stream of `torch.save` (before 1.6, or with
//!   `_use_new_zipfile_serialization=False`): a magic number, a protocol
//!   version, a sys-info dict, the main pickle, the list of storage keys, then
//!   each storage as an 8-byte element count followed by its raw bytes.
//!
//! Only the subset of the pickle machine that torch's picklers emit is
//! implemented.  Python callables are never executed: the few that matter
//! (tensor rebuilding, `OrderedDict`, `torch.Size`, ...) are interpreted, and
//! every other global becomes an inert [`Value::Global`] / [`Value::Object`],
//! so checkpoints carrying arbitrary Python objects (training options, numpy
//! scalars) still parse.
//!
//! The reader treats files as untrusted: malformed input yields a
//! [`CheckpointError`], never a panic, and no allocation is sized from a
//! length field before the bytes behind it have actually been read.
//!
//! - [`dtype`]: element types, tensor references and their raw bytes.
//! - [`value`]: the object tree a pickle builds.
//! - `unpickler`: the pickle machine.

pub mod dtype;
#[cfg(test)]
mod tests;
mod unpickler;
pub mod value;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zip::result::ZipError;
use zip::ZipArchive;

pub use dtype::{DType, TensorData, TensorRef};
pub use unpickler::parse_pickle;
use unpickler::{unpickle, Counting, MAX_EXPANDED_BYTES};
use value::key_string;
pub use value::{flatten_tensors, Value};

const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL: i64 = 1001;

type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading a checkpoint; every variant
/// names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: I/O error: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a PyTorch checkpoint: {reason}", .path.display())]
    NotACheckpoint { path: PathBuf, reason: String },
    #[error("{}: corrupt checkpoint: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: unsupported pickle opcode 0x{opcode:02x} at byte {offset}", .path.display())]
    UnsupportedOpcode { path: PathBuf, opcode: u8, offset: u64 },
    #[error("{}: tensor storage '{key}' is not in the file", .path.display())]
    MissingStorage { path: PathBuf, key: String },
    #[error("{}: unsupported checkpoint feature: {reason}", .path.display())]
    Unsupported { path: PathBuf, reason: String },
}

impl CheckpointError {
    /// The message without the file name, for callers that name the file themselves.
    pub fn without_path(&self) -> String {
        match self {
            CheckpointError::Io { source, .. } => format!("I/O error: {source}"),
            CheckpointError::NotACheckpoint { reason, .. } => format!("not a PyTorch checkpoint: {reason}"),
            CheckpointError::Corrupt { reason, .. } => format!("corrupt checkpoint: {reason}"),
            CheckpointError::UnsupportedOpcode { opcode, offset, .. } => {
                format!("unsupported pickle opcode 0x{opcode:02x} at byte {offset}")
            }
            CheckpointError::MissingStorage { key, .. } => format!("tensor storage '{key}' is not in the file"),
            CheckpointError::Unsupported { reason, .. } => format!("unsupported checkpoint feature: {reason}"),
        }
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt { path: path.to_path_buf(), reason: reason.into() }
}

/// Short reads and checksum failures mean the file is damaged, not that the
/// system failed; keep `Io` for the latter.
fn io_error(path: &Path, source: io::Error) -> CheckpointError {
    match source.kind() {
        io::ErrorKind::UnexpectedEof => corrupt(path, "file ends early"),
        io::ErrorKind::InvalidData => corrupt(path, source.to_string()),
        _ => CheckpointError::Io { path: path.to_path_buf(), source },
    }
}

fn zip_error(path: &Path, err: ZipError) -> CheckpointError {
    match err {
        ZipError::Io(e) => io_error(path, e),
        other => corrupt(path, format!("bad zip archive: {other}")),
    }
}

/// Which on-disk layout a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `torch.save`, zip format (torch >= 1.6).
    Zip,
    /// `torch.jit.save` archive.
    TorchScript,
    /// `torch.save` before 1.6 (or `_use_new_zipfile_serialization=False`).
    Legacy,
}

enum Storages {
    Zip {
        archive: Mutex<ZipArchive<BufReader<File>>>,
        /// Archive folder holding data.pkl, with its trailing '/' (or empty).
        prefix: String,
    },
    Legacy {
        file: Mutex<File>,
        /// Storage key -> (byte offset of its data, byte length).
        entries: HashMap<String, (u64, u64)>,
    },
}

/// An open checkpoint: the parsed object tree plus lazy access to the
/// tensor storages, which are only read when asked for.
pub struct TorchFile {
    path: PathBuf,
    format: Format,
    root: Value,
    storages: Storages,
    /// Storages were written big-endian and must be swapped on read.
    big_endian: bool,
    /// The file size: the most a storage read pre-allocates, so a lying
    /// length field cannot force a huge allocation.
    reserve_limit: usize,
}

impl std::fmt::Debug for TorchFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchFile").field("path", &self.path).field("format", &self.format).finish()
    }
}

impl TorchFile {
    /// Opens a checkpoint and parses its object tree (not its tensor data).
    pub fn open(path: impl AsRef<Path>) -> Result<TorchFile> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
        let file_len = file.metadata().map_err(|e| io_error(path, e))?.len();
        let mut head = Vec::new();
        (&mut file).take(4).read_to_end(&mut head).map_err(|e| io_error(path, e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| io_error(path, e))?;
        if head.is_empty() {
            return Err(not_a_checkpoint(path, "the file is empty"));
        }
        if head.starts_with(b"PK") {
            Self::open_zip(path, file, file_len)
        } else if head[0] == 0x80 {
            Self::open_legacy(path, file, file_len)
        } else {
            Err(not_a_checkpoint(path, format!("unknown file signature {head:02x?}")))
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The object `torch.save` was given (for TorchScript: the root module).
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Every tensor in the checkpoint, with dotted names.
    pub fn tensors(&self) -> Vec<(String, TensorRef)> {
        flatten_tensors(&self.root, "")
    }

    /// Another entry of a zip archive, by its name inside the archive folder (`constants.pkl`,
    /// `code/__torch__/...`): TorchScript keeps facts there that the weights do not carry.
    /// `None` for legacy files and absent entries; entries over `limit` bytes are refused.
    pub fn read_entry(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Storages::Zip { archive, prefix } = &self.storages else {
            return Ok(None);
        };
        let mut archive = archive.lock().unwrap_or_else(|e| e.into_inner());
        let full = format!("{prefix}{name}");
        let mut entry = match archive.by_name(&full) {
            Ok(e) => e,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(zip_error(&self.path, e)),
        };
        if entry.size() > limit {
            return Err(self.corrupt_entry(&full, format!("{} bytes, more than the {limit} allowed", entry.size())));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| io_error(&self.path, e))?;
        Ok(Some(bytes))
    }

    fn corrupt_entry(&self, name: &str, reason: String) -> CheckpointError {
        CheckpointError::Corrupt { path: self.path.clone(), reason: format!("entry `{name}`: {reason}") }
    }

    fn open_zip(path: &Path, file: File, file_len: u64) -> Result<TorchFile> {
        let mut archive = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_error(path, e))?;
        let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
        // The archive folder name is arbitrary; nested data.pkl files (if
        // any) belong to something else, so prefer the shallowest.
        let pkl = names
            .iter()
            .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
            .min_by_key(|n| (n.matches('/').count(), n.len()))
            .cloned();
        let pkl = match pkl {
            Some(p) => p,
            None if names.iter().any(|n| n == "model.json" || n.ends_with("/model.json")) => {
                return Err(CheckpointError::Unsupported {
                    path: path.to_path_buf(),
                    reason: "old TorchScript archive layout (model.json, no data.pkl)".into(),
                })
            }
            None => return Err(not_a_checkpoint(path, "zip archive without a data.pkl entry")),
        };
        let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
        let torchscript = names.iter().any(|n| {
            n.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with("code/") || rest == "constants.pkl")
        });

        // Archives written before the byteorder record existed are little-endian.
        let big_endian = match archive.by_name(&format!("{prefix}byteorder")) {
            Ok(entry) => {
                let mut text = Vec::new();
                entry.take(64).read_to_end(&mut text).map_err(|e| io_error(path, e))?;
                match text.trim_ascii() {
                    b"little" => false,
                    b"big" => true,
                    other => {
                        return Err(corrupt(path, format!("byteorder record is {:?}", String::from_utf8_lossy(other))))
                    }
                }
            }
            Err(ZipError::FileNotFound) => false,
            Err(e) => return Err(zip_error(path, e)),
        };

        let root = {
            let entry = archive.by_name(&pkl).map_err(|e| zip_error(path, e))?;
            let mut rd = Counting { inner: BufReader::new(entry), pos: 0 };
            unpickle(path, &mut rd, &mut HashMap::new())?
        };
        Ok(TorchFile {
            path: path.to_path_buf(),
            format: if torchscript { Format::TorchScript } else { Format::Zip },
            root,
            storages: Storages::Zip { archive: Mutex::new(archive), prefix },
            big_endian,
            reserve_limit: usize::try_from(file_len).unwrap_or(usize::MAX),
        })
    }

    fn open_legacy(path: &Path, file: File, file_len: u64) -> Result<TorchFile> {
        let mut rd = Counting { inner: BufReader::new(file), pos: 0 };
        let mut seen = HashMap::new();

        let magic = unpickle(path, &mut rd, &mut seen)
            .map_err(|e| not_a_checkpoint(path, format!("starts like a pickle but is not one ({e})")))?;
        match magic {
            Value::BigInt(bytes) if bytes == LEGACY_MAGIC => {}
            _ => return Err(not_a_checkpoint(path, "a pickle, but without the torch.save magic number")),
        }
        match unpickle(path, &mut rd, &mut seen)? {
            Value::Int(LEGACY_PROTOCOL) => {}
            other => {
                return Err(CheckpointError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!("legacy protocol version {other:?}"),
                })
            }
        }
        let sys_info = unpickle(path, &mut rd, &mut seen)?;
        let big_endian = sys_info.get("little_endian").and_then(Value::as_bool) == Some(false);
        let root = unpickle(path, &mut rd, &mut seen)?;
        let keys = unpickle(path, &mut rd, &mut seen)?;
        let keys = keys.as_seq().ok_or_else(|| corrupt(path, "storage key list is not a list"))?;

        // Storages follow back to back: locate each one now (a few seeks),
        // read them only when a tensor asks.
        let mut entries = HashMap::new();
        let mut pos = rd.pos;
        let mut file = rd.inner.into_inner();
        for key in keys {
            let key = key_string(key).ok_or_else(|| corrupt(path, "storage key is not a string"))?;
            let dtype = *seen
                .get(&key)
                .ok_or_else(|| corrupt(path, format!("storage '{key}' has no type (never referenced)")))?;
            file.seek(SeekFrom::Start(pos)).map_err(|e| io_error(path, e))?;
            let mut count = [0u8; 8];
            file.read_exact(&mut count).map_err(|e| io_error(path, e))?;
            let count = if big_endian { i64::from_be_bytes(count) } else { i64::from_le_bytes(count) };
            let nbytes = u64::try_from(count)
                .ok()
                .and_then(|n| n.checked_mul(dtype.size() as u64))
                .ok_or_else(|| corrupt(path, format!("storage '{key}' has a bad element count {count}")))?;
            let start = pos + 8;
            let end = start
                .checked_add(nbytes)
                .filter(|&end| end <= file_len)
                .ok_or_else(|| corrupt(path, format!("storage '{key}' runs past the end of the file")))?;
            entries.insert(key, (start, nbytes));
            pos = end;
        }
        Ok(TorchFile {
            path: path.to_path_buf(),
            format: Format::Legacy,
            root,
            storages: Storages::Legacy { file: Mutex::new(file), entries },
            big_endian,
            reserve_limit: usize::try_from(file_len).unwrap_or(usize::MAX),
        })
    }

    /// Reads a tensor's elements: contiguous, C order, little-endian,
    /// whatever the strides and offset of the view.
    pub fn tensor_bytes(&self, t: &TensorRef) -> Result<TensorData> {
        let bad = |reason: String| corrupt(&self.path, format!("tensor on storage '{}': {reason}", t.storage));
        if t.shape.len() != t.stride.len() {
            return Err(bad("size and stride differ in rank".into()));
        }
        let elem = t.dtype.size();
        let numel = t.numel().ok_or_else(|| bad("element count overflows".into()))?;
        let out_len = numel.checked_mul(elem).ok_or_else(|| bad("byte size overflows".into()))?;
        if numel == 0 {
            return Ok(TensorData { dtype: t.dtype, shape: t.shape.clone(), bytes: Vec::new() });
        }
        // Highest element the view touches; all indices lie in [offset, last].
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x)))
            .ok_or_else(|| bad("view extent overflows".into()))?;
        let needed =
            last.checked_add(1).and_then(|n| n.checked_mul(elem)).ok_or_else(|| bad("view extent overflows".into()))?;
        if out_len > needed && out_len > MAX_EXPANDED_BYTES {
            return Err(bad(format!("expanded view of {out_len} bytes is implausibly large")));
        }
        let mut storage = self.read_storage(&t.storage, needed)?;
        let mut bytes = if is_contiguous(&t.shape, &t.stride) {
            // The read stops at the view's last byte: dropping the part
            // before its offset leaves exactly the tensor, without a copy of
            // what may be hundreds of megabytes.
            storage.drain(..t.offset * elem);
            storage
        } else {
            gather(&storage, elem, &t.shape, &t.stride, t.offset)
                .ok_or_else(|| bad("view reaches outside its storage".into()))?
        };
        if self.big_endian && elem > 1 {
            bytes.chunks_exact_mut(elem).for_each(<[u8]>::reverse);
        }
        Ok(TensorData { dtype: t.dtype, shape: t.shape.clone(), bytes })
    }

    /// The first `needed` bytes of a storage; errors if it holds fewer.
    fn read_storage(&self, key: &str, needed: usize) -> Result<Vec<u8>> {
        let path = &self.path;
        let short =
            |have: u64| corrupt(path, format!("a tensor needs {needed} bytes of storage '{key}', which holds {have}"));
        // Reserve up front: big storages would otherwise be regrown several times.
        let mut buf = Vec::with_capacity(needed.min(self.reserve_limit));
        match &self.storages {
            Storages::Zip { archive, prefix } => {
                let mut archive = archive.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let name = [format!("{prefix}data/{key}"), format!("{prefix}tensors/{key}")]
                    .into_iter()
                    .find(|n| archive.index_for_name(n).is_some())
                    .ok_or_else(|| CheckpointError::MissingStorage { path: path.clone(), key: key.to_string() })?;
                let mut entry = archive.by_name(&name).map_err(|e| zip_error(path, e))?;
                if entry.size() < needed as u64 {
                    return Err(short(entry.size()));
                }
                // Read to the entry's end, not just `needed` bytes: the zip reader checks the
                // entry's CRC-32 only when it reaches the end, and a flipped bit in a weight is
                // otherwise silent. A view into a larger storage is cut afterwards.
                entry.read_to_end(&mut buf).map_err(|e| io_error(path, e))?;
                buf.truncate(needed);
            }
            Storages::Legacy { file, entries } => {
                let &(start, len) = entries
                    .get(key)
                    .ok_or_else(|| CheckpointError::MissingStorage { path: path.clone(), key: key.to_string() })?;
                if len < needed as u64 {
                    return Err(short(len));
                }
                let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                file.seek(SeekFrom::Start(start)).map_err(|e| io_error(path, e))?;
                (&mut *file).take(needed as u64).read_to_end(&mut buf).map_err(|e| io_error(path, e))?;
            }
        }
        if buf.len() < needed {
            return Err(short(buf.len() as u64));
        }
        Ok(buf)
    }
}

fn not_a_checkpoint(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::NotACheckpoint { path: path.to_path_buf(), reason: reason.into() }
}

/// Whether a view is laid out in C order without gaps (dimensions of size 1
/// may carry any stride).
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d);
    }
    true
}

/// Copies a strided view out of `src` in C order.  `None` if any element
/// falls outside `src` (callers check bounds first; this stays safe anyway).
fn gather(src: &[u8], elem: usize, shape: &[usize], stride: &[usize], offset: usize) -> Option<Vec<u8>> {
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    let mut out = Vec::with_capacity(numel.checked_mul(elem)?);
    if numel == 0 {
        return Some(out);
    }
    let slice = |first: usize, count: usize| -> Option<&[u8]> {
        let start = first.checked_mul(elem)?;
        src.get(start..start.checked_add(count.checked_mul(elem)?)?)
    };
    let (Some((&inner_len, outer_shape)), Some((&inner_stride, outer_stride))) =
        (shape.split_last(), stride.split_last())
    else {
        // 0-d tensor: a single element.
        out.extend_from_slice(slice(offset, 1)?);
        return Some(out);
    };
    // Walk the outer dimensions like an odometer, copying one row of the
    // innermost dimension at a time (a single slice when it is unit-stride).
    let mut idx = vec![0usize; outer_shape.len()];
    loop {
        let base = idx.iter().zip(outer_stride).try_fold(offset, |acc, (&i, &s)| acc.checked_add(i.checked_mul(s)?))?;
        if inner_stride == 1 {
            out.extend_from_slice(slice(base, inner_len)?);
        } else {
            for j in 0..inner_len {
                out.extend_from_slice(slice(base.checked_add(j.checked_mul(inner_stride)?)?, 1)?);
            }
        }
        // Advance the odometer; when every digit wraps, the view is done.
        let mut dim = idx.len();
        loop {
            if dim == 0 {
                return Some(out);
            }
            dim -= 1;
            idx[dim] += 1;
            if idx[dim] < outer_shape[dim] {
                break;
            }
            idx[dim] = 0;
        }
    }
}
