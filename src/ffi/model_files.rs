//! Model files: checking, listing and downloading model sets.

#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, CString};

use super::*;

// ───────────────────────────── model files ─────────────────────────────

pub(super) fn model_store(dir: *const c_char) -> Result<ModelStore> {
    if dir.is_null() {
        Ok(ModelStore::from_env()?)
    } else {
        // SAFETY: non-null, a NUL-terminated string from the caller.
        let d = unsafe { str_arg(dir, "models_dir")? };
        Ok(ModelStore::new(d, Manifest::builtin()?))
    }
}

/// OK when every file of `set` is in the store (`models_dir` NULL = the default directory);
/// otherwise MODELS_MISSING (before ABI 1.1: IO) and `cs_last_error()` says which files, their
/// URLs and where to put them. Also: INVALID_ARGUMENT (unknown set); MODEL_FORMAT (bad manifest).
#[no_mangle]
pub unsafe extern "C" fn cs_models_check(models_dir: *const c_char, set: *const c_char) -> cs_status {
    guard(|| {
        let store = model_store(models_dir)?;
        match store.missing_files_message(str_arg(set, "set")?)? {
            None => Ok(()),
            Some(message) => {
                Err(Error::Store(crate::store::StoreError::Missing { set: String::new(), files: Vec::new(), message }))
            }
        }
    })
}

/// The model sets that edit pictures (`ffhq`, `car`, `horse`, …), one per line: name, a tab,
/// 1 when all its files are present else 0, a tab, its example prompts separated by `|`.
/// Writes at most `cap` bytes (NUL-terminated) into the caller's `buf`; `*needed` receives the size
/// the whole text needs, so a caller can ask again with a larger buffer. Statuses: OK;
/// INVALID_ARGUMENT (NULL `needed`); MODEL_FORMAT (bad manifest).
#[no_mangle]
pub unsafe extern "C" fn cs_models_list_sets(
    models_dir: *const c_char,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> cs_status {
    guard(|| {
        let store = model_store(models_dir)?;
        let mut text = String::new();
        for status in store.list() {
            let Ok(entry) = store.manifest().set(&status.set) else { continue };
            let Some(domain) = &entry.domain else { continue };
            text += &format!("{}\t{}\t{}\n", status.set, status.complete as i32, domain.prompts.join("|"));
        }
        let bytes = text.replace('\0', " ").into_bytes();
        *out_arg(needed, "needed")? = bytes.len() + 1;
        if cap > 0 {
            if buf.is_null() {
                return Err(Error::arg("buf", "is NULL but cap is not 0"));
            }
            let n = bytes.len().min(cap - 1);
            std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, buf, n);
            *buf.add(n) = 0;
        }
        Ok(())
    })
}

/// Download progress: `file` being fetched, bytes done of total; nonzero return cancels
/// (the partial file is kept and a later fetch resumes it).
pub type cs_fetch_progress_fn =
    Option<unsafe extern "C" fn(user: *mut std::ffi::c_void, file: *const c_char, done: u64, total: u64) -> i32>;

/// Downloads the missing files of `set` (resuming partial ones, verifying sizes and hashes) into
/// the store (`models_dir` NULL = default). `progress(user, file, done, total)` is called from
/// this thread; `file` is valid during the call only; a nonzero return stops the download (the partial
/// file is kept for a later resume). Statuses: OK; INVALID_ARGUMENT; DOWNLOAD (HTTP error, network
/// failure); INTEGRITY (wrong size or SHA-256; the bad file is moved aside); CANCELLED; IO.
#[no_mangle]
pub unsafe extern "C" fn cs_models_fetch(
    models_dir: *const c_char,
    set: *const c_char,
    progress: cs_fetch_progress_fn,
    user: *mut std::ffi::c_void,
) -> cs_status {
    guard(|| {
        let store = model_store(models_dir)?;
        let set = str_arg(set, "set")?;
        let mut cb = CallbackProgress::new(|file: &str, done: u64, total: u64| match progress {
            Some(f) => {
                let name = CString::new(file.replace('\0', " ")).unwrap_or_default();
                // SAFETY: the host promised a valid function pointer for the call's duration.
                unsafe { f(user, name.as_ptr(), done, total) == 0 }
            }
            None => true,
        });
        store.fetch(set, &mut cb)?;
        Ok(())
    })
}
