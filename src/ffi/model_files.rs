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
        // The caller's folder, with the manifest and mirror the environment names (as without one).
        Ok(ModelStore::at(d)?)
    }
}

/// OK when every file of `set` is in the store (`models_dir` NULL = the default directory);
/// otherwise MODELS_MISSING (libclipshape 0.1 answered IO) and `cs_last_error()` says which files, their
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

/// Deprecated (kept for ABI 1 callers; use `cs_models_list`). The model sets that edit pictures
/// (`ffhq`, `car`, `horse`, …), one per line: name, a tab,
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
        write_text(&text, buf, cap, needed)
    })
}

/// `text` into the caller's `buf` of `cap` bytes (cut, NUL-terminated); `*needed` receives the
/// size the whole text needs, so the caller can ask again with a larger buffer.
unsafe fn write_text(text: &str, buf: *mut c_char, cap: usize, needed: *mut usize) -> Result<()> {
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
}

/// The store's folder (`models_dir` NULL = the default: `$CLIPSHAPE_MODELS`, else the user's
/// data folder), written as `cs_models_list_sets` writes text. Statuses: OK; INVALID_ARGUMENT
/// (NULL `needed`; no home folder to put the default store in).
#[no_mangle]
pub unsafe extern "C" fn cs_models_dir(
    models_dir: *const c_char,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> cs_status {
    guard(|| {
        let store = model_store(models_dir)?;
        write_text(&store.root().display().to_string(), buf, cap, needed)
    })
}

/// Registers a model file the user already has as a file of `set` (as `clipshape models add`):
/// its name, else its size, says which manifest file it is; its size and SHA-256 are checked, and
/// it is copied into the store (the user's file is left as it is). The stored path is written as
/// `cs_models_list_sets` writes text (`buf` may be NULL with `cap` 0). Statuses: OK;
/// INVALID_ARGUMENT (unknown set, a file that is none of the set's); INTEGRITY (wrong size or
/// hash); IO.
#[no_mangle]
pub unsafe extern "C" fn cs_models_add(
    models_dir: *const c_char,
    set: *const c_char,
    path: *const c_char,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> cs_status {
    guard(|| {
        // Every argument first: nothing is copied for a call that cannot report its result.
        out_arg(needed, "needed")?;
        if cap > 0 && buf.is_null() {
            return Err(Error::arg("buf", "is NULL but cap is not 0"));
        }
        let (set, src) = (str_arg(set, "set")?, PathBuf::from(str_arg(path, "path")?));
        let store = model_store(models_dir)?;
        let added = store.add(set, None, &src, false, &mut crate::store::NoProgress)?;
        write_text(&added.path.display().to_string(), buf, cap, needed)
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

/// The editing model sets and where each stands, as `cs_models_list` hands them out.
pub struct cs_model_sets {
    sets: Vec<SetRecord>,
}

struct SetRecord {
    name: CString,
    description: CString,
    licences: CString,
    /// Owns the strings `prompt_ptrs` points at.
    #[allow(dead_code)]
    prompts: Vec<CString>,
    /// Pointers into `prompts`, the array `cs_model_set_info.prompts` points at.
    prompt_ptrs: Vec<*const c_char>,
    complete: bool,
    download_bytes: u64,
}

/// One model set (see `cs_model_sets_get`). Every pointer is owned by the `cs_model_sets` it came
/// from and valid until `cs_model_sets_free`.
#[repr(C)]
pub struct cs_model_set_info {
    pub struct_size: u32,
    /// "ffhq", "car", "horse", …
    pub name: *const c_char,
    pub description: *const c_char,
    /// 1 when every file the set needs (its own and those of the sets it requires) is present.
    pub complete: i32,
    /// Bytes `cs_models_fetch` still has to download (0 when complete; partial files count as
    /// what remains of them).
    pub download_bytes: u64,
    /// The licence notes of the files still to download, one per line ("" when none).
    pub licences: *const c_char,
    /// Example prompts of the domain.
    pub n_prompts: usize,
    pub prompts: *const *const c_char,
}

fn c_text(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Lists the model sets that edit pictures (`ffhq`, `car`, `horse`, …) with their status, in
/// the store `models_dir` (NULL = the default directory). On success `*out` owns the list, freed
/// with `cs_model_sets_free`. Statuses: OK; INVALID_ARGUMENT (NULL `out`); MODEL_FORMAT (bad
/// manifest).
#[no_mangle]
pub unsafe extern "C" fn cs_models_list(models_dir: *const c_char, out: *mut *mut cs_model_sets) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let store = model_store(models_dir)?;
            let mut sets = Vec::new();
            for status in store.list() {
                let Ok(entry) = store.manifest().set(&status.set) else { continue };
                let Some(domain) = &entry.domain else { continue };
                let plan = store.plan(&status.set)?;
                let mut licences: Vec<&str> = plan.iter().filter_map(|f| f.licence.as_deref()).collect();
                licences.dedup();
                let prompts: Vec<CString> = domain.prompts.iter().map(|p| c_text(p)).collect();
                let prompt_ptrs = prompts.iter().map(|p| p.as_ptr()).collect();
                sets.push(SetRecord {
                    name: c_text(&status.set),
                    description: c_text(&status.description),
                    licences: c_text(&licences.join("\n")),
                    prompts,
                    prompt_ptrs,
                    complete: status.complete,
                    download_bytes: plan.iter().map(|f| f.size.saturating_sub(f.partial)).sum(),
                });
            }
            Ok(cs_model_sets { sets })
        })
    })
}

/// Number of sets in the list (0 for NULL). Never fails.
#[no_mangle]
pub unsafe extern "C" fn cs_model_sets_count(sets: *const cs_model_sets) -> usize {
    sets.as_ref().map(|s| s.sets.len()).unwrap_or(0)
}

/// Describes set `index` in the caller's `*out` (its `struct_size` set by the caller: sizeof, or
/// 0); the strings stay owned by `sets`. Statuses: OK; INVALID_ARGUMENT (NULL, index out of
/// range).
#[no_mangle]
pub unsafe extern "C" fn cs_model_sets_get(
    sets: *const cs_model_sets,
    index: usize,
    out: *mut cs_model_set_info,
) -> cs_status {
    guard(|| {
        let sets = ref_arg(sets, "sets")?;
        let r = sets
            .sets
            .get(index)
            .ok_or_else(|| Error::arg("index", format!("{index} is not below the {} sets", sets.sets.len())))?;
        write_sized(
            out,
            cs_model_set_info {
                struct_size: std::mem::size_of::<cs_model_set_info>() as u32,
                name: r.name.as_ptr(),
                description: r.description.as_ptr(),
                complete: r.complete as i32,
                download_bytes: r.download_bytes,
                licences: r.licences.as_ptr(),
                n_prompts: r.prompt_ptrs.len(),
                prompts: r.prompt_ptrs.as_ptr(),
            },
            "out",
        )?;
        Ok(())
    })
}

/// Releases a set list and its strings; NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn cs_model_sets_free(sets: *mut cs_model_sets) {
    free_handle(sets)
}
