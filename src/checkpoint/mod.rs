//! Named tensors from the files users download, without Python:
//! safetensors, torch.save zip archives (rosinality `{'g_ema', 'latent_avg'}`, e4e
//! `{'state_dict', 'latent_avg', 'opts'}`), the legacy pre-1.6 torch.save stream, and TorchScript
//! archives (OpenAI CLIP). Nested dicts become dotted keys (`g_ema.conv1.conv.weight`,
//! `state_dict.decoder.style.1.weight`), so a model's VarStore path plus a prefix is the key.
//!
//! Tensors are materialised one at a time on request: the official e4e files are over a gigabyte
//! and a generator only needs its half.

pub mod torch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Where one tensor's bytes live.
enum Source {
    Safetensors { dtype: safetensors::Dtype, start: usize, end: usize },
    Pickle(torch::TensorRef),
    Memory(Tensor),
}

struct Entry {
    shape: Vec<i64>,
    source: Source,
}

enum Backing {
    Safetensors(Vec<u8>),
    Pickle(torch::TorchFile),
    Memory,
}

/// An opened model file: its tensor names and shapes, read lazily.
pub struct Checkpoint {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
    backing: Backing,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkpoint({}, {} tensors)", self.path.display(), self.entries.len())
    }
}

impl Checkpoint {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::format(path, "is a directory, expected a model file"));
        }
        // A pipe or a device would block the read below, or never end.
        if !meta.is_file() {
            return Err(Error::format(path, "is not a regular file (a pipe, socket or device), expected a file"));
        }
        let mut head = [0u8; 16];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            f.read(&mut head).map_err(|e| Error::io(path, e))?
        };
        let head = &head[..n];
        // Safetensors first: its header length is any number, so its first byte may well be
        // 0x80 or its first two "PK" (a 640-byte header starts 80 02, like a pickle). A header
        // that opens with `{` at byte 8 and fits in the file is never a zip or a torch pickle
        // (byte 8 is a zip's compression method, a legacy torch file's magic number).
        let header_fits = |h: &[u8]| {
            let len = u64::from_le_bytes(h[..8].try_into().unwrap_or([0xff; 8]));
            len.checked_add(8).is_some_and(|end| end <= meta.len())
        };
        if head.len() >= 9 && head[8] == b'{' && header_fits(head) {
            Self::open_safetensors(path)
        } else if head.starts_with(b"PK") || head.first() == Some(&0x80) {
            Self::open_pickle(path)
        } else if head.len() >= 9 && head[8] == b'{' {
            Self::open_safetensors(path)
        } else if head.is_empty() {
            Err(Error::format(path, "the file is empty"))
        } else {
            Err(Error::format(path, "neither a safetensors file nor a PyTorch checkpoint (torch.save / TorchScript)"))
        }
    }

    fn open_safetensors(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (header_len, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(path, format!("corrupt safetensors header: {e}")))?;
        let data_start = 8 + header_len;
        let mut entries = BTreeMap::new();
        for (name, info) in header.tensors() {
            let (start, end) = (data_start + info.data_offsets.0, data_start + info.data_offsets.1);
            if end > bytes.len() || start > end {
                return Err(Error::format(path, format!("tensor `{name}` lies past the end of the file (truncated?)")));
            }
            let shape = info.shape.iter().map(|&d| d as i64).collect();
            entries
                .insert(name.clone(), Entry { shape, source: Source::Safetensors { dtype: info.dtype, start, end } });
        }
        let metadata = header.metadata().clone().unwrap_or_default().into_iter().collect();
        Ok(Checkpoint { path: path.to_path_buf(), entries, metadata, backing: Backing::Safetensors(bytes) })
    }

    fn open_pickle(path: &Path) -> Result<Self> {
        let ck = torch::TorchFile::open(path)?;
        let mut entries = BTreeMap::new();
        for (name, tref) in torch::flatten_tensors(ck.root(), "") {
            let shape = tref.shape.iter().map(|&d| d as i64).collect();
            entries.insert(name, Entry { shape, source: Source::Pickle(tref) });
        }
        Ok(Checkpoint { path: path.to_path_buf(), entries, metadata: BTreeMap::new(), backing: Backing::Pickle(ck) })
    }

    /// An in-memory state dict (randomly initialised models for benchmarks, edited copies in
    /// tests); `name` stands in for the path in messages.
    pub fn from_tensors(name: &str, tensors: impl IntoIterator<Item = (String, Tensor)>) -> Checkpoint {
        let entries =
            tensors.into_iter().map(|(k, t)| (k, Entry { shape: t.size(), source: Source::Memory(t) })).collect();
        Checkpoint { path: PathBuf::from(name), entries, metadata: BTreeMap::new(), backing: Backing::Memory }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn shape(&self, key: &str) -> Option<&[i64]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    /// safetensors `__metadata__` (empty for pickles).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The unpickled object tree (None for safetensors): where e4e keeps `opts`.
    pub fn pickle_root(&self) -> Option<&torch::Value> {
        match &self.backing {
            Backing::Pickle(ck) => Some(ck.root()),
            Backing::Safetensors(_) | Backing::Memory => None,
        }
    }

    /// A raw entry of a zip archive (`constants.pkl`, `code/...`), by its name inside the
    /// archive folder; None for other formats or when absent.
    pub fn archive_entry(&self, name: &str) -> Result<Option<Vec<u8>>> {
        const LIMIT: u64 = 64 << 20;
        match &self.backing {
            Backing::Pickle(ck) => Ok(ck.read_entry(name, LIMIT)?),
            _ => Ok(None),
        }
    }

    /// The tensor on the CPU. Half and bfloat16 weights come back as float32: every model here
    /// runs in float32 so that gradients through them stay stable.
    pub fn tensor(&self, key: &str) -> Result<Tensor> {
        let entry = self
            .entries
            .get(key)
            .ok_or_else(|| Error::MissingTensor { path: self.path.clone(), key: key.to_string() })?;
        let t = match (&entry.source, &self.backing) {
            (Source::Safetensors { dtype, start, end }, Backing::Safetensors(bytes)) => {
                let kind = safetensors_kind(*dtype).ok_or_else(|| {
                    Error::format(&self.path, format!("tensor `{key}` has unsupported dtype {dtype:?}"))
                })?;
                from_bytes(&bytes[*start..*end], &entry.shape, kind, &self.path, key)?
            }
            (Source::Pickle(tref), Backing::Pickle(ck)) => {
                let data = ck
                    .tensor_bytes(tref)
                    .map_err(|e| Error::format(&self.path, format!("tensor `{key}`: {}", e.without_path())))?;
                from_bytes(&data.bytes, &entry.shape, pickle_kind(data.dtype), &self.path, key)?
            }
            (Source::Memory(t), _) => t.shallow_clone(),
            _ => return Err(Error::Internal("checkpoint source and backing disagree".into())),
        };
        let t = match t.kind() {
            Kind::Half | Kind::BFloat16 | Kind::Double => t.f_to_kind(Kind::Float)?,
            _ => t,
        };
        // A NaN or infinite weight makes every output black or NaN far from its cause; one pass
        // over the values at load names the tensor instead.
        if t.f_is_floating_point()? && t.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
            return Err(Error::NotFinite { path: self.path.clone(), key: key.to_string() });
        }
        Ok(t)
    }
}

fn from_bytes(bytes: &[u8], shape: &[i64], kind: Kind, path: &Path, key: &str) -> Result<Tensor> {
    let numel: i64 = shape.iter().product();
    let want = numel as usize * kind.elt_size_in_bytes();
    if bytes.len() != want {
        return Err(Error::format(
            path,
            format!("tensor `{key}` of shape {shape:?} needs {want} bytes, the file holds {}", bytes.len()),
        ));
    }
    Ok(Tensor::f_from_data_size(bytes, shape, kind)?)
}

fn safetensors_kind(d: safetensors::Dtype) -> Option<Kind> {
    use safetensors::Dtype as D;
    Some(match d {
        D::F32 => Kind::Float,
        D::F16 => Kind::Half,
        D::BF16 => Kind::BFloat16,
        D::F64 => Kind::Double,
        D::I64 => Kind::Int64,
        D::I32 => Kind::Int,
        D::I16 => Kind::Int16,
        D::I8 => Kind::Int8,
        D::U8 => Kind::Uint8,
        D::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn pickle_kind(d: torch::DType) -> Kind {
    use torch::DType as D;
    match d {
        D::F16 => Kind::Half,
        D::BF16 => Kind::BFloat16,
        D::F32 => Kind::Float,
        D::F64 => Kind::Double,
        D::I64 => Kind::Int64,
        D::I32 => Kind::Int,
        D::I16 => Kind::Int16,
        D::I8 => Kind::Int8,
        D::U8 => Kind::Uint8,
        D::Bool => Kind::Bool,
    }
}

/// Fills a model's VarStore from a checkpoint: the VarStore path plus `prefix` is the key.
/// Every problem (missing key, wrong shape, unexpected key) is collected and reported in one
/// error, so a user fixes a bad file in one round.
pub struct Loader<'a> {
    ckpt: &'a Checkpoint,
    prefix: String,
    model: &'static str,
    used: std::cell::RefCell<std::collections::BTreeSet<String>>,
    problems: std::cell::RefCell<Vec<String>>,
}

impl<'a> Loader<'a> {
    pub fn new(ckpt: &'a Checkpoint, prefix: &str, model: &'static str) -> Self {
        Loader { ckpt, prefix: prefix.to_string(), model, used: Default::default(), problems: Default::default() }
    }

    /// A constant (weights and buffers alike: nothing in a loaded model is trained).
    /// On a problem it records it and returns zeros so loading can go on and report the rest.
    pub fn tensor(&self, p: &tch::nn::Path, name: &str, shape: &[i64]) -> Result<Tensor> {
        let key = format!("{}{}", self.prefix, p.path(name));
        self.used.borrow_mut().insert(key.clone());
        let problem = match self.ckpt.shape(&key) {
            None => format!("missing `{key}` {shape:?}"),
            Some(got) if got != shape => format!("`{key}` has shape {got:?}, expected {shape:?}"),
            Some(_) => {
                // The tensor read from the file becomes the variable itself: no zero-filled
                // copy to fill, which took `clipshape info` of a 1.2 GB e4e file from 2.1 to 1.7 GB and 7.2 to 4.0 s.
                let t = self.ckpt.tensor(&key)?.f_to_kind(tch::Kind::Float)?.f_to_device(p.device())?;
                return Ok(p.add(name, t, false));
            }
        };
        self.problems.borrow_mut().push(problem);
        Ok(p.f_zeros_no_train(name, shape)?)
    }

    /// Ends loading: an error listing every problem, including keys under the prefix the model
    /// did not ask for (except those `ignore` accepts).
    pub fn finish(self, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let used = self.used.into_inner();
        let mut problems = self.problems.into_inner();
        let unexpected: Vec<&str> = self
            .ckpt
            .keys()
            .filter(|k| k.starts_with(&self.prefix) && !used.contains(*k) && !ignore(&k[self.prefix.len()..]))
            .collect();
        if !unexpected.is_empty() {
            let shown: Vec<String> = unexpected.iter().take(8).map(|k| format!("`{k}`")).collect();
            let more = if unexpected.len() > 8 { format!(" and {} more", unexpected.len() - 8) } else { String::new() };
            problems.push(format!("unexpected {}{more}", shown.join(", ")));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::Keys { path: self.ckpt.path.clone(), model: self.model, details: problems.join("; ") })
    }
}
