//! Pure-Rust reader for PyTorch checkpoint files (no Python, no libtorch).
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

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zip::result::ZipError;
use zip::ZipArchive;

/// Nesting deeper than this is rejected: real checkpoints nest a few dozen
/// levels at most, and recursive walks must not overflow the stack.
const MAX_DEPTH: usize = 512;
/// Upper bound on the values one pickle may expand to.  Memo references can
/// share sub-trees, so a small malicious pickle could otherwise expand
/// exponentially when converted to an owned tree.
const MAX_VALUES: usize = 20_000_000;
/// A strided view may be larger than the storage bytes it reads only when
/// some stride is 0 (an expanded tensor); cap what such a view may allocate.
const MAX_EXPANDED_BYTES: usize = 1 << 30;
/// Tensor-subclass rebuilds wrap a plain rebuild once; allow a little more.
const MAX_NESTED_CALLS: usize = 8;
/// Longest `module\nname\n` line accepted in a GLOBAL opcode.
const MAX_LINE: usize = 4096;
/// The first pickle of a legacy `torch.save` stream is this integer.
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
    UnsupportedOpcode {
        path: PathBuf,
        opcode: u8,
        offset: u64,
    },
    #[error("{}: tensor storage '{key}' is not in the file", .path.display())]
    MissingStorage { path: PathBuf, key: String },
    #[error("{}: unsupported checkpoint feature: {reason}", .path.display())]
    Unsupported { path: PathBuf, reason: String },
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Short reads and checksum failures mean the file is damaged, not that the
/// system failed; keep `Io` for the latter.
fn io_error(path: &Path, source: io::Error) -> CheckpointError {
    match source.kind() {
        io::ErrorKind::UnexpectedEof => corrupt(path, "file ends early"),
        io::ErrorKind::InvalidData => corrupt(path, source.to_string()),
        _ => CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn zip_error(path: &Path, err: ZipError) -> CheckpointError {
    match err {
        ZipError::Io(e) => io_error(path, e),
        other => corrupt(path, format!("bad zip archive: {other}")),
    }
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

/// Element type of a tensor storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    BF16,
    F32,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The dtype name used by safetensors headers.
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }

    /// `torch.FloatStorage` and friends, as named in persistent ids.
    fn from_storage_class(class: &str) -> Option<DType> {
        Some(match class.strip_prefix("torch.")? {
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" | "UntypedStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    /// `torch.float32` and friends, as passed to `_rebuild_tensor_v3`.
    fn from_torch_dtype(name: &str) -> Option<DType> {
        Some(match name.strip_prefix("torch.")? {
            "float16" | "half" => DType::F16,
            "bfloat16" => DType::BF16,
            "float32" | "float" => DType::F32,
            "float64" | "double" => DType::F64,
            "int64" | "long" => DType::I64,
            "int32" | "int" => DType::I32,
            "int16" | "short" => DType::I16,
            "int8" => DType::I8,
            "uint8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

/// A tensor as described by the pickle: a strided view into a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// Storage key (the entry name under `data/` in zip archives).
    pub storage: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Strides in elements, one per dimension.
    pub stride: Vec<usize>,
    /// Offset of the first element into the storage, in elements.
    pub offset: usize,
}

impl TensorRef {
    /// Number of elements, `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
}

/// Materialised tensor contents: contiguous, C order, little-endian.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl TensorData {
    /// The elements converted to f32 (integers and bools by value).
    pub fn to_f32(&self) -> Vec<f32> {
        let b = &self.bytes;
        match self.dtype {
            DType::F32 => chunks::<4>(b).map(f32::from_le_bytes).collect(),
            DType::F64 => chunks::<8>(b)
                .map(|c| f64::from_le_bytes(c) as f32)
                .collect(),
            DType::F16 => chunks::<2>(b)
                .map(|c| f16_to_f32(u16::from_le_bytes(c)))
                .collect(),
            DType::BF16 => chunks::<2>(b)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes(c)) << 16))
                .collect(),
            _ => self
                .to_i64()
                .unwrap_or_default()
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        }
    }

    /// The elements as i64 for integer and bool tensors, `None` for floats.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let b = &self.bytes;
        Some(match self.dtype {
            DType::I64 => chunks::<8>(b).map(i64::from_le_bytes).collect(),
            DType::I32 => chunks::<4>(b)
                .map(|c| i64::from(i32::from_le_bytes(c)))
                .collect(),
            DType::I16 => chunks::<2>(b)
                .map(|c| i64::from(i16::from_le_bytes(c)))
                .collect(),
            DType::I8 => b.iter().map(|&v| i64::from(v as i8)).collect(),
            DType::U8 => b.iter().map(|&v| i64::from(v)).collect(),
            DType::Bool => b.iter().map(|&v| i64::from(v != 0)).collect(),
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 => return None,
        })
    }
}

fn chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        // Subnormal half: mant * 2^-24, exact in f32.
        (0, m) => {
            let v = m as f32 / 16_777_216.0;
            return if sign != 0 { -v } else { v };
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// A Python object reconstructed from a pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64: little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Any dict, `OrderedDict` included, in insertion order.
    Dict(Vec<(Value, Value)>),
    Tensor(TensorRef),
    /// An instance of a class the reader does not interpret: `class` is
    /// `"module.name"`, `args` what it was constructed with, `state` what
    /// BUILD set (for TorchScript modules: the attribute dict).  Items added
    /// to dict/list subclasses land in a dict `state` / in `args`.
    Object {
        class: String,
        args: Vec<Value>,
        state: Option<Box<Value>>,
    },
    /// A bare reference to a Python global (class or function).
    Global(String),
}

impl Value {
    /// Looks `key` up in a dict, or in an object's state dict.  Integer keys
    /// match their decimal spelling.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries()?
            .iter()
            .find(|(k, _)| key_string(k).as_deref() == Some(key))
            .map(|(_, v)| v)
    }

    /// Entries of a dict, or of an object's state dict.
    pub fn entries(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            Value::Object {
                state: Some(state), ..
            } => match state.as_ref() {
                Value::Dict(entries) => Some(entries),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// Floats, and integers converted to float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&TensorRef> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// Items of a list or tuple.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) | Value::Tuple(items) => Some(items),
            _ => None,
        }
    }
}

fn key_string(key: &Value) -> Option<String> {
    match key {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// All tensors reachable from `v`, with dotted names below `prefix`.
///
/// Dicts contribute their (string or integer) keys, lists and tuples their
/// indices, objects their state: for TorchScript modules that is the
/// attribute dict, so names come out as in the eager state dict
/// (`visual.conv1.weight`).  A pickled eager `nn.Module` keeps tensors in
/// `_parameters` / `_buffers` / `_modules`; those container names are
/// skipped for the same reason.
pub fn flatten_tensors(v: &Value, prefix: &str) -> Vec<(String, TensorRef)> {
    let mut out = Vec::new();
    walk_tensors(v, prefix, 0, &mut out);
    out
}

fn join_name(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_tensors(v: &Value, name: &str, depth: usize, out: &mut Vec<(String, TensorRef)>) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Tensor(t) => out.push((name.to_string(), t.clone())),
        Value::Dict(entries) => {
            for (k, item) in entries {
                if let Some(k) = key_string(k) {
                    walk_tensors(item, &join_name(name, &k), depth + 1, out);
                }
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_tensors(item, &join_name(name, &i.to_string()), depth + 1, out);
            }
        }
        Value::Object {
            state: Some(state), ..
        } => walk_object_state(state, name, depth + 1, out),
        _ => {}
    }
}

fn walk_object_state(state: &Value, name: &str, depth: usize, out: &mut Vec<(String, TensorRef)>) {
    const MODULE_SLOTS: [&str; 3] = ["_parameters", "_buffers", "_modules"];
    match state {
        Value::Dict(_) if MODULE_SLOTS.iter().any(|k| state.get(k).is_some()) => {
            for slot in MODULE_SLOTS {
                if let Some(items) = state.get(slot) {
                    walk_tensors(items, name, depth + 1, out);
                }
            }
        }
        // `__reduce__` may give (dict_state, slot_state); neither is an index.
        Value::Tuple(parts) if parts.len() == 2 => {
            for part in parts {
                walk_object_state(part, name, depth + 1, out);
            }
        }
        other => walk_tensors(other, name, depth, out),
    }
}

// ---------------------------------------------------------------------------
// The pickle machine
// ---------------------------------------------------------------------------

/// Pickle opcodes (names as in CPython's `pickletools`).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINFLOAT: u8 = b'G';
    pub const BINUNICODE: u8 = b'X';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES: u8 = b'B';
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_LIST: u8 = b']';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const EMPTY_SET: u8 = 0x8f;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const TUPLE: u8 = b't';
    pub const LIST: u8 = b'l';
    pub const FROZENSET: u8 = 0x91;
    pub const DICT: u8 = b'd';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const ADDITEMS: u8 = 0x90;
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const GLOBAL: u8 = b'c';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const REDUCE: u8 = b'R';
    pub const NEWOBJ: u8 = 0x81;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const BUILD: u8 = b'b';
    pub const BINPERSID: u8 = b'Q';
}

/// Objects live in an arena and the stack and memo hold indices, so that
/// mutations after memoisation (a dict filled by SETITEMS after BINPUT) are
/// seen through every reference, as in Python.
type Id = usize;

#[derive(Debug)]
enum Node {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Global(String),
    Storage(StorageRef),
    Tensor(TensorRef),
    Object {
        class: String,
        args: Vec<Id>,
        state: Option<Id>,
    },
}

/// The object a `('storage', ...)` persistent id resolves to.
#[derive(Debug, Clone)]
struct StorageRef {
    class: String,
    dtype: Option<DType>,
    key: String,
    location: String,
    numel: i64,
    /// Legacy files may persist a view into a bigger root storage; tensors
    /// on it start this many elements into the root.
    view_offset: usize,
}

/// Counts consumed bytes so errors (and the legacy storage scan) know where
/// they are.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

struct Unpickler<'a, R> {
    path: &'a Path,
    rd: &'a mut Counting<R>,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    /// Stacks saved by MARK; popping to a mark restores the saved one, so a
    /// plain pop can never reach below a mark.
    metastack: Vec<Vec<Id>>,
    memo: HashMap<u32, Id>,
    /// Storage key -> dtype of every storage the pickle referenced.
    storages: &'a mut HashMap<String, DType>,
    /// Depth of `call` re-entering itself for tensor subclasses.
    nested_calls: usize,
}

/// Runs one pickle from `rd` (which is left just past its STOP opcode).
fn unpickle<R: Read>(
    path: &Path,
    rd: &mut Counting<R>,
    storages: &mut HashMap<String, DType>,
) -> Result<Value> {
    let mut u = Unpickler {
        path,
        rd,
        nodes: Vec::new(),
        stack: Vec::new(),
        metastack: Vec::new(),
        memo: HashMap::new(),
        storages,
        nested_calls: 0,
    };
    let root = u.run()?;
    let mut budget = MAX_VALUES;
    let mut visiting = vec![false; u.nodes.len()];
    u.to_value(root, 0, &mut budget, &mut visiting)
}

/// Parses one standalone pickle held in memory (e.g. an archive's
/// `constants.pkl`).  Tensors in it are references only.
pub fn parse_pickle(bytes: &[u8]) -> Result<Value> {
    let mut rd = Counting {
        inner: bytes,
        pos: 0,
    };
    unpickle(Path::new("<pickle>"), &mut rd, &mut HashMap::new())
}

impl<R: Read> Unpickler<'_, R> {
    fn corrupt(&self, reason: impl Into<String>) -> CheckpointError {
        corrupt(
            self.path,
            format!("pickle at byte {}: {}", self.rd.pos, reason.into()),
        )
    }

    fn read_exact<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        match self.rd.read_exact(&mut buf) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.corrupt("pickle ends early"))
            }
            Err(e) => Err(io_error(self.path, e)),
        }
    }

    fn read_u8(&mut self) -> Result<u8> {
        Ok(self.read_exact::<1>()?[0])
    }

    fn read_u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.read_exact()?))
    }

    /// Reads a length-prefixed payload without trusting the length for the
    /// allocation: the buffer only grows as bytes actually arrive.
    fn read_bytes(&mut self, len: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        (&mut *self.rd)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| io_error(self.path, e))?;
        if (buf.len() as u64) < len {
            return Err(self.corrupt(format!("pickle ends early inside a {len}-byte field")));
        }
        Ok(buf)
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = Vec::new();
        loop {
            match self.read_u8()? {
                b'\n' => break,
                b => line.push(b),
            }
            if line.len() > MAX_LINE {
                return Err(self.corrupt("GLOBAL name too long"));
            }
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn alloc(&mut self, node: Node) -> Result<Id> {
        if self.nodes.len() >= MAX_VALUES {
            return Err(self.corrupt("too many objects"));
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn push(&mut self, node: Node) -> Result<()> {
        let id = self.alloc(node)?;
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self) -> Result<Id> {
        match self.stack.pop() {
            Some(id) => Ok(id),
            None => Err(self.corrupt("stack underflow")),
        }
    }

    fn top(&self) -> Result<Id> {
        match self.stack.last() {
            Some(&id) => Ok(id),
            None => Err(self.corrupt("stack underflow")),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>> {
        match self.metastack.pop() {
            Some(saved) => Ok(std::mem::replace(&mut self.stack, saved)),
            None => Err(self.corrupt("no MARK on the stack")),
        }
    }

    fn node(&self, id: Id) -> &Node {
        // Ids only come from `alloc`, so they are always in range.
        &self.nodes[id]
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        match self.memo.get(&key) {
            Some(&id) => {
                self.stack.push(id);
                Ok(())
            }
            None => Err(self.corrupt(format!("memo key {key} was never stored"))),
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn run(&mut self) -> Result<Id> {
        loop {
            let offset = self.rd.pos;
            let code = self.read_u8()?;
            match code {
                op::PROTO => {
                    // Any protocol is fine: unknown opcodes are caught anyway.
                    self.read_u8()?;
                }
                op::FRAME => {
                    // Framing is only a read-ahead hint.
                    self.read_exact::<8>()?;
                }
                op::STOP => return self.pop(),
                op::MARK => {
                    let saved = std::mem::take(&mut self.stack);
                    self.metastack.push(saved);
                }
                op::POP => {
                    self.pop()?;
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let id = self.top()?;
                    self.stack.push(id);
                }
                // Constants and scalars.
                op::NONE => self.push(Node::None)?,
                op::NEWTRUE => self.push(Node::Bool(true))?,
                op::NEWFALSE => self.push(Node::Bool(false))?,
                op::BININT => {
                    let v = i32::from_le_bytes(self.read_exact()?);
                    self.push(Node::Int(i64::from(v)))?;
                }
                op::BININT1 => {
                    let v = self.read_u8()?;
                    self.push(Node::Int(i64::from(v)))?;
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.read_exact()?);
                    self.push(Node::Int(i64::from(v)))?;
                }
                op::LONG1 => {
                    let n = self.read_u8()?;
                    let bytes = self.read_bytes(u64::from(n))?;
                    self.push(long_node(bytes))?;
                }
                op::LONG4 => {
                    let n = i32::from_le_bytes(self.read_exact()?);
                    let n = u64::try_from(n).map_err(|_| self.corrupt("negative LONG4 length"))?;
                    let bytes = self.read_bytes(n)?;
                    self.push(long_node(bytes))?;
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.read_exact()?);
                    self.push(Node::Float(v))?;
                }
                // Strings and bytes.
                op::BINUNICODE => {
                    let n = self.read_u32()?;
                    self.push_str(u64::from(n))?;
                }
                op::SHORT_BINUNICODE => {
                    let n = self.read_u8()?;
                    self.push_str(u64::from(n))?;
                }
                op::BINUNICODE8 => {
                    let n = u64::from_le_bytes(self.read_exact()?);
                    self.push_str(n)?;
                }
                // Python 2 `str`, decoded as UTF-8 like torch.load does.
                op::BINSTRING => {
                    let n = i32::from_le_bytes(self.read_exact()?);
                    let n =
                        u64::try_from(n).map_err(|_| self.corrupt("negative BINSTRING length"))?;
                    self.push_str(n)?;
                }
                op::SHORT_BINSTRING => {
                    let n = self.read_u8()?;
                    self.push_str(u64::from(n))?;
                }
                op::SHORT_BINBYTES => {
                    let n = self.read_u8()?;
                    let bytes = self.read_bytes(u64::from(n))?;
                    self.push(Node::Bytes(bytes))?;
                }
                op::BINBYTES => {
                    let n = self.read_u32()?;
                    let bytes = self.read_bytes(u64::from(n))?;
                    self.push(Node::Bytes(bytes))?;
                }
                op::BINBYTES8 => {
                    let n = u64::from_le_bytes(self.read_exact()?);
                    let bytes = self.read_bytes(n)?;
                    self.push(Node::Bytes(bytes))?;
                }
                // Containers.
                op::EMPTY_DICT => self.push(Node::Dict(Vec::new()))?,
                op::EMPTY_LIST => self.push(Node::List(Vec::new()))?,
                op::EMPTY_TUPLE => self.push(Node::Tuple(Vec::new()))?,
                // Sets become lists: nothing in a checkpoint relies on set semantics.
                op::EMPTY_SET => self.push(Node::List(Vec::new()))?,
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(code - op::TUPLE1) + 1;
                    if self.stack.len() < n {
                        return Err(self.corrupt("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Node::Tuple(items))?;
                }
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))?;
                }
                op::LIST => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?;
                }
                op::FROZENSET => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?;
                }
                op::DICT => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push(Node::Dict(pairs))?;
                }
                op::SETITEM => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let target = self.top()?;
                    self.set_items(target, vec![(key, value)])?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    let target = self.top()?;
                    self.set_items(target, pairs)?;
                }
                op::APPEND => {
                    let item = self.pop()?;
                    let target = self.top()?;
                    self.append(target, vec![item])?;
                }
                op::APPENDS | op::ADDITEMS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.append(target, items)?;
                }
                // Memo.
                op::BINPUT => {
                    let k = self.read_u8()?;
                    self.memo_put(u32::from(k))?;
                }
                op::LONG_BINPUT => {
                    let k = self.read_u32()?;
                    self.memo_put(k)?;
                }
                op::MEMOIZE => {
                    let k = u32::try_from(self.memo.len())
                        .map_err(|_| self.corrupt("memo overflow"))?;
                    self.memo_put(k)?;
                }
                op::BINGET => {
                    let k = self.read_u8()?;
                    self.memo_get(u32::from(k))?;
                }
                op::LONG_BINGET => {
                    let k = self.read_u32()?;
                    self.memo_get(k)?;
                }
                // Objects.
                op::GLOBAL => {
                    let module = self.read_line()?;
                    let name = self.read_line()?;
                    self.push(Node::Global(format!("{module}.{name}")))?;
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let global = match (self.node(module), self.node(name)) {
                        (Node::Str(m), Node::Str(n)) => format!("{m}.{n}"),
                        _ => return Err(self.corrupt("STACK_GLOBAL needs two strings")),
                    };
                    self.push(Node::Global(global))?;
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let args = self.tuple_items(args, "REDUCE arguments")?;
                    let id = self.call(callable, args)?;
                    self.stack.push(id);
                }
                op::NEWOBJ => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let args = self.tuple_items(args, "NEWOBJ arguments")?;
                    let id = self.call(class, args)?;
                    self.stack.push(id);
                }
                op::NEWOBJ_EX => {
                    // Keyword arguments are kept as a trailing dict.
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let mut args = self.tuple_items(args, "NEWOBJ_EX arguments")?;
                    args.push(kwargs);
                    let id = self.call(class, args)?;
                    self.stack.push(id);
                }
                op::BUILD => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    self.build(target, state);
                }
                op::BINPERSID => {
                    let pid = self.pop()?;
                    let node = self.persistent_load(pid)?;
                    self.push(node)?;
                }
                _ => {
                    return Err(CheckpointError::UnsupportedOpcode {
                        path: self.path.to_path_buf(),
                        opcode: code,
                        offset,
                    })
                }
            }
        }
    }

    fn push_str(&mut self, len: u64) -> Result<()> {
        let bytes = self.read_bytes(len)?;
        let s = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        self.push(Node::Str(s))
    }

    fn pairs(&self, items: Vec<Id>) -> Result<Vec<(Id, Id)>> {
        if items.len() % 2 == 1 {
            return Err(self.corrupt("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
    }

    fn tuple_items(&self, id: Id, what: &str) -> Result<Vec<Id>> {
        match self.node(id) {
            Node::Tuple(items) | Node::List(items) => Ok(items.clone()),
            _ => Err(self.corrupt(format!("{what} are not a tuple"))),
        }
    }

    fn set_items(&mut self, target: Id, pairs: Vec<(Id, Id)>) -> Result<()> {
        let state_slot = match &mut self.nodes[target] {
            Node::Dict(entries) => {
                entries.extend(pairs);
                return Ok(());
            }
            Node::Object { state, .. } => *state,
            _ => return Err(self.corrupt("SETITEM(S) on something that is not a dict")),
        };
        // A dict subclass (e.g. an EasyDict of options): keep its items as its state.
        match state_slot {
            Some(sid) => match &mut self.nodes[sid] {
                Node::Dict(entries) => entries.extend(pairs),
                _ => return Err(self.corrupt("SETITEM(S) on an object with a non-dict state")),
            },
            None => {
                let sid = self.alloc(Node::Dict(pairs))?;
                if let Node::Object { state, .. } = &mut self.nodes[target] {
                    *state = Some(sid);
                }
            }
        }
        Ok(())
    }

    fn append(&mut self, target: Id, items: Vec<Id>) -> Result<()> {
        match &mut self.nodes[target] {
            Node::List(list) => list.extend(items),
            // A list subclass: keep its items with its constructor arguments.
            Node::Object { args, .. } => args.extend(items),
            _ => return Err(self.corrupt("APPEND(S) on something that is not a list")),
        }
        Ok(())
    }

    /// BUILD sets an object's `__setstate__` state.  On dicts (the
    /// `_metadata` of a state dict) and tensors the state carries nothing
    /// the reader needs, so it is dropped.
    fn build(&mut self, target: Id, new_state: Id) {
        let old = match &self.nodes[target] {
            Node::Object { state, .. } => *state,
            _ => return,
        };
        let merged = match old {
            Some(old_id) if old_id != new_state => {
                let extra = match &self.nodes[new_state] {
                    Node::Dict(entries) => Some(entries.clone()),
                    _ => None,
                };
                match (&mut self.nodes[old_id], extra) {
                    (Node::Dict(entries), Some(extra)) => {
                        entries.extend(extra);
                        old_id
                    }
                    _ => new_state,
                }
            }
            _ => new_state,
        };
        if let Node::Object { state, .. } = &mut self.nodes[target] {
            *state = Some(merged);
        }
    }

    /// Interprets the Python callables torch checkpoints depend on; any
    /// other call becomes an inert object.
    fn call(&mut self, callable: Id, args: Vec<Id>) -> Result<Id> {
        let name = match self.node(callable) {
            Node::Global(name) => name.clone(),
            _ => {
                let class = "<call>".to_string();
                let mut all = vec![callable];
                all.extend(args);
                return self.alloc(Node::Object {
                    class,
                    args: all,
                    state: None,
                });
            }
        };
        let arg = |i: usize| args.get(i).copied();
        let node = match name.as_str() {
            "torch._utils._rebuild_tensor" | "torch._utils._rebuild_tensor_v2" => {
                self.rebuild_tensor(&args, None)?
            }
            "torch._utils._rebuild_tensor_v3" => {
                let dtype = match arg(6).map(|id| self.node(id)) {
                    Some(Node::Global(d)) => DType::from_torch_dtype(d),
                    _ => None,
                };
                match dtype {
                    Some(dtype) => self.rebuild_tensor(&args, Some(dtype))?,
                    None => None,
                }
            }
            // Wrappers whose first argument already is the result.
            "torch._utils._rebuild_parameter"
            | "torch._utils._rebuild_parameter_with_state"
            | "torch.jit._pickle.restore_type_tag"
            | "torch.jit._pickle.build_intlist"
            | "torch.jit._pickle.build_doublelist"
            | "torch.jit._pickle.build_boollist"
            | "torch.jit._pickle.build_tensorlist"
            | "torch.jit._pickle.build_tensor_from_id" => match arg(0) {
                Some(id) => return Ok(id),
                None => None,
            },
            // Tensor subclasses: (func, type, func_args, state).
            "torch._tensor._rebuild_from_type" | "torch._tensor._rebuild_from_type_v2" => {
                match (arg(0), arg(2)) {
                    (Some(func), Some(func_args)) => {
                        // A self-referencing argument list could recurse forever.
                        if self.nested_calls >= MAX_NESTED_CALLS {
                            return Err(self.corrupt("tensor subclass rebuilds nest too deeply"));
                        }
                        let func_args = self.tuple_items(func_args, "tensor subclass arguments")?;
                        self.nested_calls += 1;
                        let result = self.call(func, func_args);
                        self.nested_calls -= 1;
                        return result;
                    }
                    _ => None,
                }
            }
            "collections.OrderedDict" | "builtins.dict" | "__builtin__.dict" => {
                let pairs = match arg(0).map(|id| self.node(id)) {
                    None => Some(Vec::new()),
                    Some(Node::Dict(entries)) => Some(entries.clone()),
                    Some(Node::List(items)) | Some(Node::Tuple(items)) => items
                        .iter()
                        .map(|&i| self.pair_of(i))
                        .collect::<Option<Vec<_>>>(),
                    Some(_) => None,
                };
                pairs.map(Node::Dict)
            }
            "torch.Size" | "builtins.tuple" | "__builtin__.tuple" => {
                match arg(0).map(|id| self.node(id)) {
                    None => Some(Node::Tuple(Vec::new())),
                    Some(Node::Tuple(items)) | Some(Node::List(items)) => {
                        Some(Node::Tuple(items.clone()))
                    }
                    Some(_) => None,
                }
            }
            "builtins.list" | "__builtin__.list" | "builtins.set" | "__builtin__.set"
            | "builtins.frozenset" => match arg(0).map(|id| self.node(id)) {
                None => Some(Node::List(Vec::new())),
                Some(Node::Tuple(items)) | Some(Node::List(items)) => {
                    Some(Node::List(items.clone()))
                }
                Some(_) => None,
            },
            // How protocol 2 pickles `bytes` (numpy scalars use it).
            "_codecs.encode" => match (
                arg(0).map(|id| self.node(id)),
                arg(1).map(|id| self.node(id)),
            ) {
                (Some(Node::Str(s)), Some(Node::Str(enc)))
                    if enc == "latin1" || enc == "latin-1" =>
                {
                    let bytes: Option<Vec<u8>> =
                        s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                    bytes.map(Node::Bytes)
                }
                (Some(Node::Str(s)), _) => Some(Node::Bytes(s.as_bytes().to_vec())),
                _ => None,
            },
            _ => None,
        };
        let node = node.unwrap_or(Node::Object {
            class: name,
            args,
            state: None,
        });
        self.alloc(node)
    }

    fn pair_of(&self, id: Id) -> Option<(Id, Id)> {
        match self.node(id) {
            Node::Tuple(kv) | Node::List(kv) if kv.len() == 2 => Some((kv[0], kv[1])),
            _ => None,
        }
    }

    /// `_rebuild_tensor[_v2|_v3](storage, storage_offset, size, stride, ...)`.
    /// Returns `None` (leave it an inert object) for storages of a dtype the
    /// reader cannot represent; malformed arguments are an error.
    fn rebuild_tensor(&self, args: &[Id], dtype: Option<DType>) -> Result<Option<Node>> {
        if args.len() < 4 {
            return Err(self.corrupt("tensor rebuilt with fewer than 4 arguments"));
        }
        let storage = match self.node(args[0]) {
            Node::Storage(s) => s,
            _ => return Err(self.corrupt("tensor rebuilt from something that is not a storage")),
        };
        let dtype = match dtype.or(storage.dtype) {
            Some(d) => d,
            None => return Ok(None),
        };
        let offset = self.usize_of(args[1], "tensor storage offset")?;
        let shape = self.usize_list(args[2], "tensor size")?;
        let stride = self.usize_list(args[3], "tensor stride")?;
        if shape.len() != stride.len() {
            return Err(self.corrupt(format!(
                "tensor size {shape:?} and stride {stride:?} differ in rank"
            )));
        }
        let offset = storage
            .view_offset
            .checked_add(offset)
            .ok_or_else(|| self.corrupt("tensor storage offset overflows"))?;
        Ok(Some(Node::Tensor(TensorRef {
            storage: storage.key.clone(),
            dtype,
            shape,
            stride,
            offset,
        })))
    }

    fn usize_of(&self, id: Id, what: &str) -> Result<usize> {
        match self.node(id) {
            Node::Int(v) => {
                usize::try_from(*v).map_err(|_| self.corrupt(format!("{what} is negative: {v}")))
            }
            _ => Err(self.corrupt(format!("{what} is not an integer"))),
        }
    }

    fn usize_list(&self, id: Id, what: &str) -> Result<Vec<usize>> {
        match self.node(id) {
            Node::Tuple(items) | Node::List(items) => {
                items.iter().map(|&i| self.usize_of(i, what)).collect()
            }
            _ => Err(self.corrupt(format!("{what} is not a tuple"))),
        }
    }

    /// BINPERSID: torch persists storages as
    /// `('storage', storage_class, key, location, numel[, view_metadata])`.
    /// Anything else is kept as an inert object.
    fn persistent_load(&mut self, pid: Id) -> Result<Node> {
        let items = match self.node(pid) {
            Node::Tuple(items) | Node::List(items) => items.clone(),
            _ => {
                return Ok(Node::Object {
                    class: "persistent_id".into(),
                    args: vec![pid],
                    state: None,
                })
            }
        };
        let is_storage =
            matches!(items.first().map(|&i| self.node(i)), Some(Node::Str(s)) if s == "storage");
        if !is_storage {
            return Ok(Node::Object {
                class: "persistent_id".into(),
                args: items,
                state: None,
            });
        }
        if items.len() < 5 {
            return Err(self.corrupt("storage persistent id has fewer than 5 fields"));
        }
        let class = match self.node(items[1]) {
            Node::Global(name) => name.clone(),
            _ => return Err(self.corrupt("storage type is not a global")),
        };
        let key = match self.node(items[2]) {
            Node::Str(s) => s.clone(),
            Node::Int(i) => i.to_string(),
            _ => return Err(self.corrupt("storage key is not a string")),
        };
        let location = match self.node(items[3]) {
            Node::Str(s) => s.clone(),
            _ => String::new(),
        };
        let numel = match self.node(items[4]) {
            Node::Int(n) if *n >= 0 => *n,
            _ => return Err(self.corrupt("storage size is not a non-negative integer")),
        };
        let view_offset = match items.get(5).map(|&i| self.node(i)) {
            None | Some(Node::None) => 0,
            Some(Node::Tuple(view)) if view.len() == 3 => {
                self.usize_of(view[1], "storage view offset")?
            }
            Some(_) => return Err(self.corrupt("malformed storage view metadata")),
        };
        let dtype = DType::from_storage_class(&class);
        if let Some(d) = dtype {
            self.storages.insert(key.clone(), d);
        }
        Ok(Node::Storage(StorageRef {
            class,
            dtype,
            key,
            location,
            numel,
            view_offset,
        }))
    }

    /// Converts the arena graph rooted at `id` into an owned tree.  Shared
    /// references are copied; a reference back into its own ancestors
    /// (a cycle) becomes `Global("<cycle>")` instead of recursing forever.
    fn to_value(
        &self,
        id: Id,
        depth: usize,
        budget: &mut usize,
        visiting: &mut [bool],
    ) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(corrupt(self.path, "pickle nests too deeply"));
        }
        if *budget == 0 {
            return Err(corrupt(self.path, "pickle expands to too many values"));
        }
        *budget -= 1;
        if visiting[id] {
            return Ok(Value::Global("<cycle>".into()));
        }
        visiting[id] = true;
        let seq = |items: &[Id], budget: &mut usize, visiting: &mut [bool]| -> Result<Vec<Value>> {
            items
                .iter()
                .map(|&i| self.to_value(i, depth + 1, budget, visiting))
                .collect()
        };
        let value = match self.node(id) {
            Node::None => Value::None,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::Int(*i),
            Node::BigInt(b) => Value::BigInt(b.clone()),
            Node::Float(f) => Value::Float(*f),
            Node::Str(s) => Value::Str(s.clone()),
            Node::Bytes(b) => Value::Bytes(b.clone()),
            Node::List(items) => Value::List(seq(items, budget, visiting)?),
            Node::Tuple(items) => Value::Tuple(seq(items, budget, visiting)?),
            Node::Dict(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for &(k, v) in entries {
                    out.push((
                        self.to_value(k, depth + 1, budget, visiting)?,
                        self.to_value(v, depth + 1, budget, visiting)?,
                    ));
                }
                Value::Dict(out)
            }
            Node::Global(name) => Value::Global(name.clone()),
            Node::Tensor(t) => Value::Tensor(t.clone()),
            Node::Storage(s) => Value::Object {
                class: s.class.clone(),
                args: vec![
                    Value::Str(s.key.clone()),
                    Value::Str(s.location.clone()),
                    Value::Int(s.numel),
                ],
                state: None,
            },
            Node::Object { class, args, state } => {
                let args = seq(args, budget, visiting)?;
                let state = match state {
                    Some(s) => Some(Box::new(self.to_value(*s, depth + 1, budget, visiting)?)),
                    None => None,
                };
                Value::Object {
                    class: class.clone(),
                    args,
                    state,
                }
            }
        };
        visiting[id] = false;
        Ok(value)
    }
}

/// LONG1/LONG4 payload: little-endian two's complement of any length.
fn long_node(bytes: Vec<u8>) -> Node {
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0x00 };
    let fits = bytes.len() <= 8
        || (bytes[8..].iter().all(|&b| b == fill) && (bytes[7] & 0x80 != 0) == negative);
    if !fits {
        return Node::BigInt(bytes);
    }
    let mut buf = [fill; 8];
    for (dst, src) in buf.iter_mut().zip(&bytes) {
        *dst = *src;
    }
    Node::Int(i64::from_le_bytes(buf))
}

// ---------------------------------------------------------------------------
// Checkpoint files
// ---------------------------------------------------------------------------

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
pub struct Checkpoint {
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

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("format", &self.format)
            .finish()
    }
}

impl Checkpoint {
    /// Opens a checkpoint and parses its object tree (not its tensor data).
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
        let file_len = file.metadata().map_err(|e| io_error(path, e))?.len();
        let mut head = Vec::new();
        (&mut file)
            .take(4)
            .read_to_end(&mut head)
            .map_err(|e| io_error(path, e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_error(path, e))?;
        if head.is_empty() {
            return Err(not_a_checkpoint(path, "the file is empty"));
        }
        if head.starts_with(b"PK") {
            Self::open_zip(path, file, file_len)
        } else if head[0] == 0x80 {
            Self::open_legacy(path, file, file_len)
        } else {
            Err(not_a_checkpoint(
                path,
                format!("unknown file signature {head:02x?}"),
            ))
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

    fn open_zip(path: &Path, file: File, file_len: u64) -> Result<Checkpoint> {
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
            None if names
                .iter()
                .any(|n| n == "model.json" || n.ends_with("/model.json")) =>
            {
                return Err(CheckpointError::Unsupported {
                    path: path.to_path_buf(),
                    reason: "old TorchScript archive layout (model.json, no data.pkl)".into(),
                })
            }
            None => {
                return Err(not_a_checkpoint(
                    path,
                    "zip archive without a data.pkl entry",
                ))
            }
        };
        let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
        let torchscript = names.iter().any(|n| {
            n.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with("code/") || rest == "constants.pkl")
        });

        // Archives written before the byteorder record existed are little-endian.
        let big_endian = match archive.by_name(&format!("{prefix}byteorder")) {
            Ok(entry) => {
                let mut text = Vec::new();
                entry
                    .take(64)
                    .read_to_end(&mut text)
                    .map_err(|e| io_error(path, e))?;
                match text.trim_ascii() {
                    b"little" => false,
                    b"big" => true,
                    other => {
                        return Err(corrupt(
                            path,
                            format!("byteorder record is {:?}", String::from_utf8_lossy(other)),
                        ))
                    }
                }
            }
            Err(ZipError::FileNotFound) => false,
            Err(e) => return Err(zip_error(path, e)),
        };

        let root = {
            let entry = archive.by_name(&pkl).map_err(|e| zip_error(path, e))?;
            let mut rd = Counting {
                inner: BufReader::new(entry),
                pos: 0,
            };
            unpickle(path, &mut rd, &mut HashMap::new())?
        };
        Ok(Checkpoint {
            path: path.to_path_buf(),
            format: if torchscript {
                Format::TorchScript
            } else {
                Format::Zip
            },
            root,
            storages: Storages::Zip {
                archive: Mutex::new(archive),
                prefix,
            },
            big_endian,
            reserve_limit: usize::try_from(file_len).unwrap_or(usize::MAX),
        })
    }

    fn open_legacy(path: &Path, file: File, file_len: u64) -> Result<Checkpoint> {
        let mut rd = Counting {
            inner: BufReader::new(file),
            pos: 0,
        };
        let mut seen = HashMap::new();

        let magic = unpickle(path, &mut rd, &mut seen).map_err(|e| {
            not_a_checkpoint(path, format!("starts like a pickle but is not one ({e})"))
        })?;
        match magic {
            Value::BigInt(bytes) if bytes == LEGACY_MAGIC => {}
            _ => {
                return Err(not_a_checkpoint(
                    path,
                    "a pickle, but without the torch.save magic number",
                ))
            }
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
        let keys = keys
            .as_seq()
            .ok_or_else(|| corrupt(path, "storage key list is not a list"))?;

        // Storages follow back to back: locate each one now (a few seeks),
        // read them only when a tensor asks.
        let mut entries = HashMap::new();
        let mut pos = rd.pos;
        let mut file = rd.inner.into_inner();
        for key in keys {
            let key =
                key_string(key).ok_or_else(|| corrupt(path, "storage key is not a string"))?;
            let dtype = *seen.get(&key).ok_or_else(|| {
                corrupt(
                    path,
                    format!("storage '{key}' has no type (never referenced)"),
                )
            })?;
            file.seek(SeekFrom::Start(pos))
                .map_err(|e| io_error(path, e))?;
            let mut count = [0u8; 8];
            file.read_exact(&mut count).map_err(|e| io_error(path, e))?;
            let count = if big_endian {
                i64::from_be_bytes(count)
            } else {
                i64::from_le_bytes(count)
            };
            let nbytes = u64::try_from(count)
                .ok()
                .and_then(|n| n.checked_mul(dtype.size() as u64))
                .ok_or_else(|| {
                    corrupt(
                        path,
                        format!("storage '{key}' has a bad element count {count}"),
                    )
                })?;
            let start = pos + 8;
            let end = start
                .checked_add(nbytes)
                .filter(|&end| end <= file_len)
                .ok_or_else(|| {
                    corrupt(
                        path,
                        format!("storage '{key}' runs past the end of the file"),
                    )
                })?;
            entries.insert(key, (start, nbytes));
            pos = end;
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            format: Format::Legacy,
            root,
            storages: Storages::Legacy {
                file: Mutex::new(file),
                entries,
            },
            big_endian,
            reserve_limit: usize::try_from(file_len).unwrap_or(usize::MAX),
        })
    }

    /// Reads a tensor's elements: contiguous, C order, little-endian,
    /// whatever the strides and offset of the view.
    pub fn tensor_bytes(&self, t: &TensorRef) -> Result<TensorData> {
        let bad = |reason: String| {
            corrupt(
                &self.path,
                format!("tensor on storage '{}': {reason}", t.storage),
            )
        };
        if t.shape.len() != t.stride.len() {
            return Err(bad("size and stride differ in rank".into()));
        }
        let elem = t.dtype.size();
        let numel = t
            .numel()
            .ok_or_else(|| bad("element count overflows".into()))?;
        let out_len = numel
            .checked_mul(elem)
            .ok_or_else(|| bad("byte size overflows".into()))?;
        if numel == 0 {
            return Ok(TensorData {
                dtype: t.dtype,
                shape: t.shape.clone(),
                bytes: Vec::new(),
            });
        }
        // Highest element the view touches; all indices lie in [offset, last].
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            })
            .ok_or_else(|| bad("view extent overflows".into()))?;
        let needed = last
            .checked_add(1)
            .and_then(|n| n.checked_mul(elem))
            .ok_or_else(|| bad("view extent overflows".into()))?;
        if out_len > needed && out_len > MAX_EXPANDED_BYTES {
            return Err(bad(format!(
                "expanded view of {out_len} bytes is implausibly large"
            )));
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
        Ok(TensorData {
            dtype: t.dtype,
            shape: t.shape.clone(),
            bytes,
        })
    }

    /// The first `needed` bytes of a storage; errors if it holds fewer.
    fn read_storage(&self, key: &str, needed: usize) -> Result<Vec<u8>> {
        let path = &self.path;
        let short = |have: u64| {
            corrupt(
                path,
                format!("a tensor needs {needed} bytes of storage '{key}', which holds {have}"),
            )
        };
        // Reserve up front: big storages would otherwise be regrown several times.
        let mut buf = Vec::with_capacity(needed.min(self.reserve_limit));
        match &self.storages {
            Storages::Zip { archive, prefix } => {
                let mut archive = archive
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let name = [
                    format!("{prefix}data/{key}"),
                    format!("{prefix}tensors/{key}"),
                ]
                .into_iter()
                .find(|n| archive.index_for_name(n).is_some())
                .ok_or_else(|| CheckpointError::MissingStorage {
                    path: path.clone(),
                    key: key.to_string(),
                })?;
                let entry = archive.by_name(&name).map_err(|e| zip_error(path, e))?;
                if entry.size() < needed as u64 {
                    return Err(short(entry.size()));
                }
                entry
                    .take(needed as u64)
                    .read_to_end(&mut buf)
                    .map_err(|e| io_error(path, e))?;
            }
            Storages::Legacy { file, entries } => {
                let &(start, len) =
                    entries
                        .get(key)
                        .ok_or_else(|| CheckpointError::MissingStorage {
                            path: path.clone(),
                            key: key.to_string(),
                        })?;
                if len < needed as u64 {
                    return Err(short(len));
                }
                let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| io_error(path, e))?;
                (&mut *file)
                    .take(needed as u64)
                    .read_to_end(&mut buf)
                    .map_err(|e| io_error(path, e))?;
            }
        }
        if buf.len() < needed {
            return Err(short(buf.len() as u64));
        }
        Ok(buf)
    }
}

fn not_a_checkpoint(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::NotACheckpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
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
fn gather(
    src: &[u8],
    elem: usize,
    shape: &[usize],
    stride: &[usize],
    offset: usize,
) -> Option<Vec<u8>> {
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
        let base = idx
            .iter()
            .zip(outer_stride)
            .try_fold(offset, |acc, (&i, &s)| acc.checked_add(i.checked_mul(s)?))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    fn golden(name: &str) -> PathBuf {
        let dir = std::env::var_os("CLIPSHAPE_GOLDEN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden"))
            });
        let path = dir.join(name);
        assert!(
            path.exists(),
            "golden file {} is missing (set CLIPSHAPE_GOLDEN)",
            path.display()
        );
        path
    }

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
    }

    fn scratch_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("clipshape-pickle-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// name -> (dtype, shape, bytes) from a safetensors file.
    fn read_safetensors(path: &Path) -> HashMap<String, (String, Vec<usize>, Vec<u8>)> {
        let data = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
        let header: Json = serde_json::from_slice(&data[8..8 + n]).unwrap();
        let body = &data[8 + n..];
        let mut out = HashMap::new();
        for (name, info) in header.as_object().unwrap() {
            if name == "__metadata__" {
                continue;
            }
            let shape = info["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let offs = info["data_offsets"].as_array().unwrap();
            let (a, b) = (
                offs[0].as_u64().unwrap() as usize,
                offs[1].as_u64().unwrap() as usize,
            );
            out.insert(
                name.clone(),
                (
                    info["dtype"].as_str().unwrap().to_string(),
                    shape,
                    body[a..b].to_vec(),
                ),
            );
        }
        out
    }

    /// Every safetensors tensor must be found (under `prefix` + its name)
    /// with identical dtype, shape and bytes.  Returns the checkpoint
    /// tensors that have no safetensors counterpart.
    fn assert_matches_safetensors(ckpt: &Checkpoint, prefix: &str, st: &Path) -> Vec<String> {
        let expected = read_safetensors(st);
        let found: HashMap<String, TensorRef> = ckpt
            .tensors()
            .into_iter()
            .filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (s.to_string(), t)))
            .collect();
        for (name, (dtype, shape, bytes)) in &expected {
            let t = found
                .get(name)
                .unwrap_or_else(|| panic!("{name} not found in {}", ckpt.path().display()));
            let data = ckpt.tensor_bytes(t).unwrap();
            assert_eq!(data.dtype.name(), dtype, "{name}");
            assert_eq!(&data.shape, shape, "{name}");
            assert!(data.bytes == *bytes, "{name}: bytes differ");
        }
        let mut extra: Vec<String> = found
            .keys()
            .filter(|n| !expected.contains_key(*n))
            .cloned()
            .collect();
        extra.sort();
        extra
    }

    #[test]
    fn stylegan2_zip_matches_safetensors() {
        let ckpt = Checkpoint::open(golden("stylegan2.pt")).unwrap();
        assert_eq!(ckpt.format(), Format::Zip);
        let extra = assert_matches_safetensors(&ckpt, "g_ema.", &golden("stylegan2.safetensors"));
        assert_eq!(extra, Vec::<String>::new());
        let latent = ckpt
            .root()
            .get("latent_avg")
            .and_then(Value::as_tensor)
            .unwrap();
        assert_eq!(latent.shape, vec![64]);
        assert_eq!(ckpt.tensor_bytes(latent).unwrap().to_f32().len(), 64);
        // The state dict keeps its order: the mapping network comes first.
        let names = flatten_tensors(ckpt.root().get("g_ema").unwrap(), "");
        assert!(names[0].0.starts_with("style."), "{}", names[0].0);
    }

    #[test]
    fn e4e_zip_matches_safetensors_and_opts_are_readable() {
        let ckpt = Checkpoint::open(golden("e4e.pt")).unwrap();
        assert_eq!(ckpt.format(), Format::Zip);
        let extra = assert_matches_safetensors(
            &ckpt,
            "state_dict.encoder.",
            &golden("e4e_encoder.safetensors"),
        );
        assert!(!extra.is_empty());
        assert!(
            extra.iter().all(|n| n.ends_with("num_batches_tracked")),
            "{extra:?}"
        );
        let nbt = ckpt
            .tensors()
            .into_iter()
            .find(|(n, _)| n.ends_with("num_batches_tracked"))
            .unwrap()
            .1;
        assert_eq!((nbt.dtype, nbt.shape.len()), (DType::I64, 0));
        assert_eq!(ckpt.tensor_bytes(&nbt).unwrap().to_i64().unwrap().len(), 1);

        let opts = ckpt.root().get("opts").unwrap();
        assert_eq!(opts.get("stylegan_size").and_then(Value::as_int), Some(64));
        assert_eq!(
            opts.get("encoder_type").and_then(Value::as_str),
            Some("Encoder4Editing")
        );
        assert_eq!(
            opts.get("start_from_latent_avg").and_then(Value::as_bool),
            Some(true)
        );
        assert_eq!(
            opts.get("learning_rate").and_then(Value::as_f64),
            Some(0.0001)
        );
        assert!(!opts
            .get("progressive_steps")
            .and_then(Value::as_seq)
            .unwrap()
            .is_empty());
        let latent = ckpt
            .root()
            .get("latent_avg")
            .and_then(Value::as_tensor)
            .unwrap();
        assert_eq!(latent.shape, vec![10, 64]);
        // The decoder half of the state dict is there too.
        assert!(ckpt
            .tensors()
            .iter()
            .any(|(n, _)| n.starts_with("state_dict.decoder.style.")));
    }

    #[test]
    fn clip_torchscript_flattens_to_state_dict_names() {
        let ckpt = Checkpoint::open(golden("clip_jit.pt")).unwrap();
        assert_eq!(ckpt.format(), Format::TorchScript);
        let extra = assert_matches_safetensors(&ckpt, "", &golden("clip.safetensors"));
        assert_eq!(extra, ["context_length", "input_resolution", "vocab_size"]);
        let scalar = |name: &str| {
            let t = ckpt.root().get(name).and_then(Value::as_tensor).unwrap();
            assert!(t.shape.is_empty());
            ckpt.tensor_bytes(t).unwrap().to_i64().unwrap()
        };
        assert_eq!(scalar("input_resolution"), [64]);
        assert_eq!(scalar("context_length"), [77]);
        assert_eq!(scalar("vocab_size"), [49408]);
        let names: Vec<String> = ckpt.tensors().into_iter().map(|(n, _)| n).collect();
        assert!(names.iter().any(|n| n == "visual.conv1.weight"));
        assert!(names
            .iter()
            .any(|n| n == "transformer.resblocks.0.attn.in_proj_weight"));
        match ckpt.root() {
            Value::Object { class, .. } => {
                assert!(class.starts_with("__torch__.clip.model."), "{class}")
            }
            other => panic!("root is {other:?}"),
        }
        assert_eq!(
            ckpt.root().get("training").and_then(Value::as_bool),
            Some(false)
        );
    }

    fn expected_fixtures() -> Json {
        serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Every tensor listed in `expected` is found under its name with the
    /// exact bytes; returns the names in checkpoint order.
    fn assert_fixture_tensors(ckpt: &Checkpoint, expected: &Json) -> Vec<String> {
        let tensors = ckpt.tensors();
        let expected = expected.as_object().unwrap();
        for (name, want) in expected {
            let t = &tensors
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .1;
            let data = ckpt.tensor_bytes(t).unwrap();
            let shape: Vec<usize> = want["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let dtype = want["dtype"].as_str().unwrap().to_uppercase();
            assert_eq!(data.dtype.name(), dtype, "{name}");
            assert_eq!(data.shape, shape, "{name}");
            assert_eq!(hex(&data.bytes), want["hex"].as_str().unwrap(), "{name}");
        }
        assert_eq!(
            tensors.len(),
            expected.len(),
            "{:?}",
            tensors.iter().map(|t| &t.0).collect::<Vec<_>>()
        );
        tensors.into_iter().map(|(n, _)| n).collect()
    }

    fn assert_views_fixture(ckpt: &Checkpoint) {
        let expected = expected_fixtures();
        assert_fixture_tensors(ckpt, &expected["views"]);
        let root = ckpt.root();
        let t = |name: &str| root.get(name).and_then(Value::as_tensor).unwrap().clone();

        // The views really are views: shared storages, offsets, strides.
        let (base, tr, slice) = (t("base"), t("transposed"), t("slice"));
        assert_eq!(tr.storage, base.storage);
        assert_eq!(
            (tr.shape.as_slice(), tr.stride.as_slice()),
            (&[6, 4][..], &[1, 6][..])
        );
        assert_eq!(
            (
                slice.storage.as_str(),
                slice.offset,
                slice.stride.as_slice()
            ),
            (base.storage.as_str(), 8, &[6, 1][..])
        );
        assert_eq!(
            ckpt.tensor_bytes(&slice).unwrap().to_f32(),
            [8.0, 9.0, 10.0, 14.0, 15.0, 16.0]
        );
        assert_eq!(
            ckpt.tensor_bytes(&tr).unwrap().to_f32()[..5],
            [0.0, 6.0, 12.0, 18.0, 1.0]
        );
        let (a, b) = (t("shared_a"), t("shared_b"));
        assert_eq!((a.storage == b.storage, b.offset), (true, 3));
        assert_eq!(
            ckpt.tensor_bytes(&b).unwrap().to_f32(),
            [1.5, 2.0, 2.5, 3.0]
        );
        let expanded = t("expanded");
        assert_eq!(expanded.stride, [0, 1]);
        assert_eq!(
            ckpt.tensor_bytes(&expanded).unwrap().to_f32(),
            [0., 1., 2., 0., 1., 2., 0., 1., 2., 0., 1., 2.]
        );
        assert_eq!(ckpt.tensor_bytes(&t("scalar")).unwrap().to_f32(), [3.5]);
        assert_eq!(
            ckpt.tensor_bytes(&t("long")).unwrap().to_i64().unwrap(),
            [-(1i64 << 40), -1, 0, 1, 1 << 33, 7]
        );
        assert_eq!(
            ckpt.tensor_bytes(&t("bf16")).unwrap().to_f32()[..2],
            [1.5, -2.25]
        );
        let half = ckpt.tensor_bytes(&t("half")).unwrap().to_f32();
        let half_t = ckpt.tensor_bytes(&t("half_t")).unwrap().to_f32();
        assert_eq!(half_t[1], half[5]); // half is 3x5, half_t[0][1] == half[1][0]

        // Plain Python values.
        let meta = root.get("meta").unwrap();
        for key in ["int", "neg", "big"] {
            assert_eq!(
                meta.get(key).and_then(Value::as_int),
                expected["meta"][key].as_i64(),
                "{key}"
            );
        }
        assert_eq!(meta.get("float").and_then(Value::as_f64), Some(2.5));
        assert_eq!(meta.get("str").and_then(Value::as_str), Some("hello"));
        assert_eq!(meta.get("none"), Some(&Value::None));
        assert_eq!(meta.get("true").and_then(Value::as_bool), Some(true));
        let ints: Vec<i64> = meta
            .get("ints")
            .and_then(Value::as_seq)
            .unwrap()
            .iter()
            .filter_map(Value::as_int)
            .collect();
        assert_eq!(ints, [1, 2, 3]);
        let tuple = root.get("nested").and_then(|n| n.get("tuple")).unwrap();
        assert!(
            matches!(tuple, Value::Tuple(items) if items.len() == 3 && items[2] == Value::Str("text".into()))
        );
        // OrderedDicts keep insertion order.
        let od: Vec<String> = root
            .get("od")
            .and_then(Value::entries)
            .unwrap()
            .iter()
            .filter_map(|(k, _)| key_string(k))
            .collect();
        assert_eq!(od, ["first", "second"]);
    }

    #[test]
    fn zip_fixture_views_and_dtypes() {
        let ckpt = Checkpoint::open(fixture("views.pt")).unwrap();
        assert_eq!(ckpt.format(), Format::Zip);
        assert_views_fixture(&ckpt);
    }

    #[test]
    fn legacy_fixture_matches() {
        let ckpt = Checkpoint::open(fixture("legacy_format.pt")).unwrap();
        assert_eq!(ckpt.format(), Format::Legacy);
        assert_views_fixture(&ckpt);
    }

    #[test]
    fn jit_fixture_flattens_modules() {
        let ckpt = Checkpoint::open(fixture("jit_tiny.pt")).unwrap();
        assert_eq!(ckpt.format(), Format::TorchScript);
        let expected = expected_fixtures();
        let names = assert_fixture_tensors(&ckpt, &expected["jit"]);
        // Attribute order reproduces the eager state-dict order.
        let want: Vec<&str> = expected["jit_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn legacy_storage_views_are_resolved() {
        let ckpt = Checkpoint::open(fixture("legacy_views.pt")).unwrap();
        assert_eq!(ckpt.format(), Format::Legacy);
        assert_fixture_tensors(&ckpt, &expected_fixtures()["legacy_views"]);
        let t = ckpt
            .root()
            .get("in_view")
            .and_then(Value::as_tensor)
            .unwrap();
        assert_eq!((t.storage.as_str(), t.offset), ("root", 3));
        assert_eq!(ckpt.tensor_bytes(t).unwrap().to_f32(), [4.5, 6.0, 7.5, 9.0]);
    }

    #[test]
    fn rejects_empty_random_and_non_torch_files() {
        let dir = scratch_dir("bad");
        let empty = dir.join("empty.pt");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            Checkpoint::open(&empty),
            Err(CheckpointError::NotACheckpoint { .. })
        ));

        // Deterministic pseudo-random bytes.
        let mut x = 0x1234_5678_9abc_def0u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let rnd = dir.join("random.pt");
        std::fs::write(&rnd, &random).unwrap();
        assert!(matches!(
            Checkpoint::open(&rnd),
            Err(CheckpointError::NotACheckpoint { .. })
        ));

        // A pickle that is not a torch.save stream.
        let plain = dir.join("plain.pkl");
        std::fs::write(&plain, b"\x80\x02K\x05.").unwrap();
        assert!(matches!(
            Checkpoint::open(&plain),
            Err(CheckpointError::NotACheckpoint { .. })
        ));

        let missing = dir.join("does-not-exist.pt");
        assert!(matches!(
            Checkpoint::open(&missing),
            Err(CheckpointError::Io { .. })
        ));
        let err = Checkpoint::open(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.pt"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    /// Writes a stored (uncompressed) zip with the given entries.
    fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
        let mut w = zip::ZipWriter::new(File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            w.start_file(*name, opts).unwrap();
            io::Write::write_all(&mut w, data).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn rejects_truncated_and_incomplete_zips() {
        let dir = scratch_dir("zips");
        let full = std::fs::read(golden("stylegan2.pt")).unwrap();
        for cut in [full.len() / 2, full.len() - 30, 100] {
            let truncated = dir.join("truncated.pt");
            std::fs::write(&truncated, &full[..cut]).unwrap();
            let err = Checkpoint::open(&truncated).unwrap_err();
            assert!(
                matches!(err, CheckpointError::Corrupt { .. }),
                "cut {cut}: {err}"
            );
        }

        let no_pkl = dir.join("no_pkl.pt");
        write_zip(
            &no_pkl,
            &[
                ("archive/data/0", b"1234"),
                ("archive/byteorder", b"little"),
            ],
        );
        assert!(matches!(
            Checkpoint::open(&no_pkl),
            Err(CheckpointError::NotACheckpoint { .. })
        ));

        // data.pkl ending before STOP.
        let short = dir.join("short.pt");
        write_zip(
            &short,
            &[("a/data.pkl", b"\x80\x02}q\x00(X\x01\x00\x00\x00k")],
        );
        assert!(matches!(
            Checkpoint::open(&short),
            Err(CheckpointError::Corrupt { .. })
        ));

        let bad_op = dir.join("bad_op.pt");
        write_zip(&bad_op, &[("a/data.pkl", b"\x80\x02}\xff.")]);
        match Checkpoint::open(&bad_op) {
            Err(CheckpointError::UnsupportedOpcode {
                opcode: 0xff,
                offset: 3,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }

        // A tensor whose storage entry is absent, and one whose view runs
        // past the end of its storage.
        let pkl = tensor_pickle("7", 4, 1, &[2, 2], &[2, 1]);
        let missing = dir.join("missing.pt");
        write_zip(&missing, &[("m/data.pkl", &pkl)]);
        let ckpt = Checkpoint::open(&missing).unwrap();
        let t = ckpt.root().as_tensor().unwrap().clone();
        assert!(
            matches!(ckpt.tensor_bytes(&t), Err(CheckpointError::MissingStorage { ref key, .. }) if key == "7")
        );

        let oob = dir.join("oob.pt");
        write_zip(&oob, &[("m/data.pkl", &pkl), ("m/data/7", &[0u8; 16])]);
        let ckpt = Checkpoint::open(&oob).unwrap();
        let mut t = ckpt.root().as_tensor().unwrap().clone();
        assert!(matches!(
            ckpt.tensor_bytes(&t),
            Err(CheckpointError::Corrupt { .. })
        ));
        t.offset = 0;
        assert_eq!(ckpt.tensor_bytes(&t).unwrap().bytes.len(), 16);
        for (shape, stride, offset) in [
            (vec![usize::MAX, 2], vec![1, 1], 0),
            (vec![2, 2], vec![usize::MAX / 2, 1], 0),
            (vec![3], vec![1], usize::MAX),
            (vec![1 << 40, 1 << 40], vec![0, 0], 0),
        ] {
            let t = TensorRef {
                shape,
                stride,
                offset,
                ..t.clone()
            };
            assert!(
                matches!(ckpt.tensor_bytes(&t), Err(CheckpointError::Corrupt { .. })),
                "{t:?}"
            );
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn deflated_archives_read_the_same() {
        // torch stores entries uncompressed, but a re-zipped checkpoint may not be.
        let dir = scratch_dir("deflate");
        let mut src = ZipArchive::new(File::open(fixture("views.pt")).unwrap()).unwrap();
        let packed = dir.join("deflated.pt");
        let mut w = zip::ZipWriter::new(File::create(&packed).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for i in 0..src.len() {
            let mut entry = src.by_index(i).unwrap();
            let name = entry.name().replace("views/", "renamed_prefix/");
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            w.start_file(name, opts).unwrap();
            io::Write::write_all(&mut w, &data).unwrap();
        }
        w.finish().unwrap();
        let ckpt = Checkpoint::open(&packed).unwrap();
        assert_views_fixture(&ckpt);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A data.pkl holding one `_rebuild_tensor_v2` float tensor.
    fn tensor_pickle(key: &str, numel: u8, offset: u8, shape: &[u8], stride: &[u8]) -> Vec<u8> {
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
        p.extend(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n");
        p.push(b'X');
        p.extend((key.len() as u32).to_le_bytes());
        p.extend(key.as_bytes());
        p.extend(b"X\x03\x00\x00\x00cpuK");
        p.push(numel);
        p.extend(b"tQK");
        p.push(offset);
        for dims in [shape, stride] {
            p.push(b'(');
            for &d in dims {
                p.extend([b'K', d]);
            }
            p.push(b't');
        }
        p.extend(b"\x89ccollections\nOrderedDict\n)RtR.");
        p
    }

    #[test]
    fn rejects_truncated_legacy_files_without_panicking() {
        let dir = scratch_dir("legacy");
        let full = std::fs::read(fixture("legacy_format.pt")).unwrap();
        let path = dir.join("cut.pt");
        // Every cut inside the small header pickles, then a spread over the
        // main pickle, the key list and the storage data.
        for cut in (1..64).chain((64..full.len()).step_by(13)) {
            std::fs::write(&path, &full[..cut]).unwrap();
            match Checkpoint::open(&path) {
                Err(CheckpointError::Corrupt { .. }) => {}
                // Cut inside the magic-number pickle: no longer recognisable.
                Err(CheckpointError::NotACheckpoint { .. }) if cut <= 15 => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn mutated_pickles_never_panic() {
        let mut archive = ZipArchive::new(File::open(fixture("views.pt")).unwrap()).unwrap();
        let mut pkl = Vec::new();
        archive
            .by_name("views/data.pkl")
            .unwrap()
            .read_to_end(&mut pkl)
            .unwrap();
        assert!(parse_pickle(&pkl).is_ok());
        // Each position gets a bit flip and one of a rotating set of
        // structural opcodes / extreme bytes (all of them everywhere would
        // make this slow in debug builds).
        const SPECIAL: [u8; 8] = [0x00, 0xff, b'(', b'h', b'R', b'b', b'u', b'Q'];
        for i in 0..pkl.len() {
            for v in [pkl[i] ^ 0x01, SPECIAL[i % SPECIAL.len()]] {
                let mut m = pkl.clone();
                m[i] = v;
                let _ = parse_pickle(&m);
            }
            if i % 3 == 0 {
                assert!(parse_pickle(&pkl[..i]).is_err());
            }
        }
    }

    #[test]
    fn pickle_opcodes_and_sharing() {
        // {'a': [1, -2, 2**70, 1.5, 'x', b'yz', None, True], 'b': <same list>}
        // with the list filled after being memoised (Python aliasing).
        let mut p =
            b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94".to_vec();
        p.extend(b"\x8c\x01b\x94h\x02u");
        p.extend(b"h\x02(K\x01J\xfe\xff\xff\xff\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40G?\xf8\x00\x00\x00\x00\x00\x00");
        p.extend(b"\x8c\x01xC\x02yzN\x88e0.");
        let v = parse_pickle(&p).unwrap();
        let a = v.get("a").and_then(Value::as_seq).unwrap();
        assert_eq!(a[0], Value::Int(1));
        assert_eq!(a[1], Value::Int(-2));
        assert_eq!(a[2], Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40]));
        assert_eq!(a[3], Value::Float(1.5));
        assert_eq!(
            a[4..],
            [
                Value::Str("x".into()),
                Value::Bytes(b"yz".to_vec()),
                Value::None,
                Value::Bool(true)
            ]
        );
        assert_eq!(v.get("b"), v.get("a"));

        // Unknown globals become inert objects with their BUILD state.
        let p = b"\x80\x02cargparse\nNamespace\n)\x81}(X\x01\x00\x00\x00nK\x03ub.";
        match parse_pickle(p).unwrap() {
            Value::Object { class, args, state } => {
                assert_eq!(class, "argparse.Namespace");
                assert!(args.is_empty());
                assert_eq!(state.unwrap().get("n").and_then(Value::as_int), Some(3));
            }
            other => panic!("{other:?}"),
        }
        // A tensor-subclass rebuild whose argument list contains itself.
        let p = b"\x80\x02]q\x00(ctorch._tensor\n_rebuild_from_type_v2\nq\x01Nh\x00Neh\x01(h\x01Nh\x00NtR.";
        let err = parse_pickle(p).unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }) && err.to_string().contains("nest"));
        // A list containing itself does not recurse forever.
        let v = parse_pickle(b"\x80\x02]q\x00h\x00a.").unwrap();
        assert_eq!(v, Value::List(vec![Value::Global("<cycle>".into())]));
    }

    #[test]
    fn checkpoint_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Checkpoint>();
        assert_send_sync::<CheckpointError>();
    }

    #[test]
    fn f16_conversion() {
        let data = |bits: &[u16]| TensorData {
            dtype: DType::F16,
            shape: vec![bits.len()],
            bytes: bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
        };
        let v = data(&[0x3c00, 0xc000, 0x0001, 0x8000, 0x7c00, 0x7bff]).to_f32();
        assert_eq!(v[..4], [1.0, -2.0, 5.960_464_5e-8, -0.0]);
        assert_eq!(v[4], f32::INFINITY);
        assert_eq!(v[5], 65504.0);
    }
}
