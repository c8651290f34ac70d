//! File writes that never leave a half-written file behind (a cancelled GIMP plug-in is killed
//! mid-run): write to a temporary file in the target's directory, fsync, rename over the target.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Temporary files of writes in progress, so a signal handler can remove them
/// ([`remove_in_flight`]); the process dies without unwinding there.
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Name pattern of our temporary files: `.clipshape-XXXXXX.part` beside the target.
pub const TEMP_PREFIX: &str = ".clipshape-";
pub const TEMP_SUFFIX: &str = ".part";

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX);
    // What any other program writes: 0666 less the umask (tempfile's own 0600 is for secrets).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    lock_in_flight().push(tmp_path.clone());
    let result = (|| {
        tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        Ok(())
    })();
    lock_in_flight().retain(|p| p != &tmp_path);
    result
}

fn lock_in_flight() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the temporary files of writes still in progress (from a signal handler, before the
/// process exits). Best effort: nothing to report to anyone at that point.
pub fn remove_in_flight() {
    // try_lock: the interrupted thread may hold the lock; a leftover is then cleaned by the next
    // run into the folder (the command line's output folders).
    if let Ok(paths) = IN_FLIGHT.try_lock() {
        for p in paths.iter() {
            let _ = std::fs::remove_file(p);
        }
    }
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
