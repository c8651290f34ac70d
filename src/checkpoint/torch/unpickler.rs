//! The pickle machine: the opcodes torch's picklers emit, with limits on depth, size and
//! value count so a hostile file yields an error, never a panic or a huge allocation.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;

use super::dtype::{DType, TensorRef};
use super::value::{Value, MAX_DEPTH};
use super::{corrupt, io_error, CheckpointError, Result};

/// Upper bound on the values one pickle may expand to.  Memo references can
/// share sub-trees, so a small malicious pickle could otherwise expand
/// exponentially when converted to an owned tree.
pub(super) const MAX_VALUES: usize = 20_000_000;
/// A strided view may be larger than the storage bytes it reads only when
/// some stride is 0 (an expanded tensor); cap what such a view may allocate.
pub(super) const MAX_EXPANDED_BYTES: usize = 1 << 30;
/// Tensor-subclass rebuilds wrap a plain rebuild once; allow a little more.
pub(super) const MAX_NESTED_CALLS: usize = 8;
/// Longest `module\nname\n` line accepted in a GLOBAL opcode.
pub(super) const MAX_LINE: usize = 4096;

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
    Object { class: String, args: Vec<Id>, state: Option<Id> },
}

/// The object a `('storage', ...)` persistent id resolves to.
#[derive(Debug, Clone)]
pub(super) struct StorageRef {
    pub(super) class: String,
    pub(super) dtype: Option<DType>,
    pub(super) key: String,
    pub(super) location: String,
    pub(super) numel: i64,
    /// Legacy files may persist a view into a bigger root storage; tensors
    /// on it start this many elements into the root.
    pub(super) view_offset: usize,
}

/// Counts consumed bytes so errors (and the legacy storage scan) know where
/// they are.
pub(super) struct Counting<R> {
    pub(super) inner: R,
    pub(super) pos: u64,
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
pub(super) fn unpickle<R: Read>(
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
    let mut rd = Counting { inner: bytes, pos: 0 };
    unpickle(Path::new("<pickle>"), &mut rd, &mut HashMap::new())
}

impl<R: Read> Unpickler<'_, R> {
    fn corrupt(&self, reason: impl Into<String>) -> CheckpointError {
        corrupt(self.path, format!("pickle at byte {}: {}", self.rd.pos, reason.into()))
    }

    fn read_exact<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        match self.rd.read_exact(&mut buf) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.corrupt("pickle ends early")),
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
        (&mut *self.rd).take(len).read_to_end(&mut buf).map_err(|e| io_error(self.path, e))?;
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
                    let n = u64::try_from(n).map_err(|_| self.corrupt("negative BINSTRING length"))?;
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
                    let k = u32::try_from(self.memo.len()).map_err(|_| self.corrupt("memo overflow"))?;
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
                return self.alloc(Node::Object { class, args: all, state: None });
            }
        };
        let arg = |i: usize| args.get(i).copied();
        let node = match name.as_str() {
            "torch._utils._rebuild_tensor" | "torch._utils._rebuild_tensor_v2" => self.rebuild_tensor(&args, None)?,
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
                    Some(Node::List(items)) | Some(Node::Tuple(items)) => {
                        items.iter().map(|&i| self.pair_of(i)).collect::<Option<Vec<_>>>()
                    }
                    Some(_) => None,
                };
                pairs.map(Node::Dict)
            }
            "torch.Size" | "builtins.tuple" | "__builtin__.tuple" => match arg(0).map(|id| self.node(id)) {
                None => Some(Node::Tuple(Vec::new())),
                Some(Node::Tuple(items)) | Some(Node::List(items)) => Some(Node::Tuple(items.clone())),
                Some(_) => None,
            },
            "builtins.list" | "__builtin__.list" | "builtins.set" | "__builtin__.set" | "builtins.frozenset" => {
                match arg(0).map(|id| self.node(id)) {
                    None => Some(Node::List(Vec::new())),
                    Some(Node::Tuple(items)) | Some(Node::List(items)) => Some(Node::List(items.clone())),
                    Some(_) => None,
                }
            }
            // How protocol 2 pickles `bytes` (numpy scalars use it).
            "_codecs.encode" => match (arg(0).map(|id| self.node(id)), arg(1).map(|id| self.node(id))) {
                (Some(Node::Str(s)), Some(Node::Str(enc))) if enc == "latin1" || enc == "latin-1" => {
                    let bytes: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                    bytes.map(Node::Bytes)
                }
                (Some(Node::Str(s)), _) => Some(Node::Bytes(s.as_bytes().to_vec())),
                _ => None,
            },
            _ => None,
        };
        let node = node.unwrap_or(Node::Object { class: name, args, state: None });
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
            return Err(self.corrupt(format!("tensor size {shape:?} and stride {stride:?} differ in rank")));
        }
        let offset =
            storage.view_offset.checked_add(offset).ok_or_else(|| self.corrupt("tensor storage offset overflows"))?;
        Ok(Some(Node::Tensor(TensorRef { storage: storage.key.clone(), dtype, shape, stride, offset })))
    }

    fn usize_of(&self, id: Id, what: &str) -> Result<usize> {
        match self.node(id) {
            Node::Int(v) => usize::try_from(*v).map_err(|_| self.corrupt(format!("{what} is negative: {v}"))),
            _ => Err(self.corrupt(format!("{what} is not an integer"))),
        }
    }

    fn usize_list(&self, id: Id, what: &str) -> Result<Vec<usize>> {
        match self.node(id) {
            Node::Tuple(items) | Node::List(items) => items.iter().map(|&i| self.usize_of(i, what)).collect(),
            _ => Err(self.corrupt(format!("{what} is not a tuple"))),
        }
    }

    /// BINPERSID: torch persists storages as
    /// `('storage', storage_class, key, location, numel[, view_metadata])`.
    /// Anything else is kept as an inert object.
    fn persistent_load(&mut self, pid: Id) -> Result<Node> {
        let items = match self.node(pid) {
            Node::Tuple(items) | Node::List(items) => items.clone(),
            _ => return Ok(Node::Object { class: "persistent_id".into(), args: vec![pid], state: None }),
        };
        let is_storage = matches!(items.first().map(|&i| self.node(i)), Some(Node::Str(s)) if s == "storage");
        if !is_storage {
            return Ok(Node::Object { class: "persistent_id".into(), args: items, state: None });
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
            Some(Node::Tuple(view)) if view.len() == 3 => self.usize_of(view[1], "storage view offset")?,
            Some(_) => return Err(self.corrupt("malformed storage view metadata")),
        };
        let dtype = DType::from_storage_class(&class);
        if let Some(d) = dtype {
            self.storages.insert(key.clone(), d);
        }
        Ok(Node::Storage(StorageRef { class, dtype, key, location, numel, view_offset }))
    }

    /// Converts the arena graph rooted at `id` into an owned tree.  Shared
    /// references are copied; a reference back into its own ancestors
    /// (a cycle) becomes `Global("<cycle>")` instead of recursing forever.
    fn to_value(&self, id: Id, depth: usize, budget: &mut usize, visiting: &mut [bool]) -> Result<Value> {
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
            items.iter().map(|&i| self.to_value(i, depth + 1, budget, visiting)).collect()
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
                args: vec![Value::Str(s.key.clone()), Value::Str(s.location.clone()), Value::Int(s.numel)],
                state: None,
            },
            Node::Object { class, args, state } => {
                let args = seq(args, budget, visiting)?;
                let state = match state {
                    Some(s) => Some(Box::new(self.to_value(*s, depth + 1, budget, visiting)?)),
                    None => None,
                };
                Value::Object { class: class.clone(), args, state }
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
    let fits = bytes.len() <= 8 || (bytes[8..].iter().all(|&b| b == fill) && (bytes[7] & 0x80 != 0) == negative);
    if !fits {
        return Node::BigInt(bytes);
    }
    let mut buf = [fill; 8];
    for (dst, src) in buf.iter_mut().zip(&bytes) {
        *dst = *src;
    }
    Node::Int(i64::from_le_bytes(buf))
}
