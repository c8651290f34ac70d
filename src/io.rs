//! File writes that never leave a half-written file behind (a cancelled GIMP plug-in is killed
//! mid-run): write to a temporary file in the target's directory, fsync, rename over the target.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".clipshape-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Serialises float32 tensors (moved to the CPU, made contiguous) with string metadata.
pub fn safetensors_bytes(tensors: &[(&str, &Tensor)], metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let mut data = vec![0u8; t.numel() * 4];
        t.f_copy_data_u8(&mut data, t.numel())?;
        owned.push((name.to_string(), shape, data));
    }
    let views = owned
        .iter()
        .map(|(n, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Internal(format!("safetensors view for `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    safetensors::serialize(views, &meta).map_err(|e| Error::Internal(format!("safetensors serialisation: {e}")))
}

/// Rejects NaN and infinity with the argument's name.
pub fn check_finite(name: &'static str, t: &Tensor) -> Result<()> {
    let finite = t.f_isfinite()?.f_all()?.f_int64_value(&[])? != 0;
    if finite {
        Ok(())
    } else {
        Err(Error::arg(name, "contains NaN or infinity"))
    }
}
