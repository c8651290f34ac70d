//! The object tree a torch pickle builds: dicts, lists, tensors, inert Python objects, and
//! the walk that turns nested dicts (and TorchScript module states) into dotted tensor names.

use super::dtype::TensorRef;

/// Nesting deeper than this is rejected: real checkpoints nest a few dozen
/// levels at most, and recursive walks must not overflow the stack.
pub(super) const MAX_DEPTH: usize = 512;

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
        self.entries()?.iter().find(|(k, _)| key_string(k).as_deref() == Some(key)).map(|(_, v)| v)
    }

    /// Entries of a dict, or of an object's state dict.
    pub fn entries(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            Value::Object { state: Some(state), .. } => match state.as_ref() {
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

pub(super) fn key_string(key: &Value) -> Option<String> {
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
        Value::Object { state: Some(state), .. } => walk_object_state(state, name, depth + 1, out),
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
