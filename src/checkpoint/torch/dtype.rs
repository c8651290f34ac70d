//! Element types of tensor storages, references to a tensor inside a file, and the bytes read
//! for one.

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
    pub(super) fn from_storage_class(class: &str) -> Option<DType> {
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
    pub(super) fn from_torch_dtype(name: &str) -> Option<DType> {
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
        self.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
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
            DType::F64 => chunks::<8>(b).map(|c| f64::from_le_bytes(c) as f32).collect(),
            DType::F16 => chunks::<2>(b).map(|c| f16_to_f32(u16::from_le_bytes(c))).collect(),
            DType::BF16 => chunks::<2>(b).map(|c| f32::from_bits(u32::from(u16::from_le_bytes(c)) << 16)).collect(),
            _ => self.to_i64().unwrap_or_default().into_iter().map(|v| v as f32).collect(),
        }
    }

    /// The elements as i64 for integer and bool tensors, `None` for floats.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let b = &self.bytes;
        Some(match self.dtype {
            DType::I64 => chunks::<8>(b).map(i64::from_le_bytes).collect(),
            DType::I32 => chunks::<4>(b).map(|c| i64::from(i32::from_le_bytes(c))).collect(),
            DType::I16 => chunks::<2>(b).map(|c| i64::from(i16::from_le_bytes(c))).collect(),
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
