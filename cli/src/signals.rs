//! What Ctrl-C, SIGTERM and SIGHUP do: the first stops the run at its next check (a step, a
//! render, a flow, a file, a chunk of a download or copy), the run removes what it was writing,
//! says "cancelled" and exits with 130 from the main thread; a second leaves at once.
//!
//! The handler thread never runs the process's exit path while the main thread computes:
//! `process::exit` runs libtorch's global destructors under a running oneDNN convolution and
//! crashed (issues #23 and #29). A second signal removes the files in flight and `_exit`s,
//! which runs no destructors at all.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::Result;

/// Set on the first signal.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The loaded context's cancel flag, so a long library call stops too.
static CANCEL: Mutex<Option<clipshape::context::CancelHandle>> = Mutex::new(None);
/// Staging folders of runs in progress, removed if the process leaves at once; and the output
/// folders the run created, removed then while empty (the deepest first).
static STAGES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static CREATED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Installs the handler of SIGINT, SIGTERM and SIGHUP (see the module's documentation).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            remove_in_flight();
            // SAFETY: _exit ends the process without running any destructor or atexit handler,
            // which is the point: another thread may be inside libtorch.
            unsafe { libc::_exit(130) };
        }
        if let Some(h) = CANCEL.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            h.cancel();
        }
        eprintln!("\ncancelling… (Ctrl-C again to leave at once)");
    });
}

/// Lets a signal cancel the library calls of `ctx` (and at once, if one already came).
pub fn cancel_context(ctx: &clipshape::context::Context) {
    *CANCEL.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx.cancel_handle());
    if interrupted() {
        ctx.cancel();
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A check between a run's phases: an error once a signal came.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        return Err(clipshape::Error::Cancelled.into());
    }
    Ok(())
}

pub fn register_stage(p: &Path) {
    STAGES.lock().unwrap_or_else(|e| e.into_inner()).push(p.to_path_buf());
}

pub fn unregister_stage(p: &Path) {
    STAGES.lock().unwrap_or_else(|e| e.into_inner()).retain(|s| s != p);
}

/// Folders a run made for its output (the deepest first), removed if it leaves at once.
pub fn register_created(dirs: &[PathBuf]) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).extend(dirs.iter().cloned());
}

pub fn unregister_created(dirs: &[PathBuf]) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).retain(|d| !dirs.contains(d));
}

/// Removes the temporary files and staging folders of writes in progress, then the folders the
/// run created, while empty.
pub fn remove_in_flight() {
    clipshape::io::remove_in_flight();
    // try_lock: the interrupted thread may hold the lock; a leftover is then cleaned by the
    // next run into the folder.
    if let Ok(stages) = STAGES.try_lock() {
        for s in stages.iter() {
            let _ = std::fs::remove_dir_all(s);
        }
    }
    if let Ok(created) = CREATED.try_lock() {
        for d in created.iter() {
            let _ = std::fs::remove_dir(d);
        }
    }
}
