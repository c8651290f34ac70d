//! What Ctrl-C, SIGTERM and SIGHUP do: the first stops the run at its next check (a step, a
//! render, a flow, a file, a chunk of a download or copy), the run removes what it was writing,
//! says "cancelled" and exits with 130 from the main thread; a second leaves at once.
//!
//! The handler thread never runs the process's exit path while the main thread computes:
//! `process::exit` runs libtorch's global destructors under a running oneDNN convolution and
//! crashed (issues #23 and #29). A second signal removes the files in flight and `_exit`s,
//! which runs no destructors at all. Two phases change that: while models load, nothing is
//! being written, so the first signal leaves at once (a 1.2 GB model takes seconds to read);
//! while the results are swapped into place, signals wait for the swap to end (it takes
//! milliseconds, and one cut short would leave a folder half old, half new).
//! A signal the process inherited as ignored (`nohup`, a script's background job) stays ignored.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
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

/// What the run is doing, for the handler (see the module's documentation).
static PHASE: AtomicU8 = AtomicU8::new(WORKING);
const WORKING: u8 = 0;
const LOADING: u8 = 1;
const SWAPPING: u8 = 2;
/// Signals that came during a swap.
static DURING_SWAP: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler of SIGINT, SIGTERM and SIGHUP (see the module's documentation).
pub fn install() {
    let ignored = inherited_ignored();
    let _ = ctrlc::set_handler(|| match PHASE.load(Ordering::SeqCst) {
        SWAPPING => {
            INTERRUPTED.store(true, Ordering::SeqCst);
            // A swap that never ends (it cannot here) is still left on the third try.
            if DURING_SWAP.fetch_add(1, Ordering::SeqCst) >= 2 {
                leave();
            }
            crate::text::say("\nfinishing the swap of the results into place (a moment)…");
        }
        LOADING => {
            INTERRUPTED.store(true, Ordering::SeqCst);
            crate::text::say("\ncancelled");
            leave();
        }
        _ => {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                leave();
            }
            if let Some(h) = CANCEL.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                h.cancel();
            }
            crate::text::say("\ncancelling… (Ctrl-C again to leave at once)");
        }
    });
    for sig in ignored {
        // SAFETY: signal() with SIG_IGN only changes this process's disposition of `sig`, back
        // to what it inherited.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// The signals of ours the process inherited as ignored.
fn inherited_ignored() -> Vec<libc::c_int> {
    let mut out = Vec::new();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction with a NULL new action only reads the current one into `old`, a
        // zeroed struct of the right type.
        let ignored = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
        };
        if ignored {
            out.push(sig);
        }
    }
    out
}

/// Removes what is in flight and ends the process at once, running no destructor.
fn leave() -> ! {
    remove_in_flight();
    // SAFETY: _exit ends the process without running any destructor or atexit handler, which
    // is the point: another thread may be inside libtorch.
    unsafe { libc::_exit(130) }
}

/// While `f` loads models, a signal ends the process at once (nothing is being written).
pub fn loading<T>(f: impl FnOnce() -> T) -> T {
    PHASE.store(LOADING, Ordering::SeqCst);
    let out = f();
    PHASE.store(WORKING, Ordering::SeqCst);
    out
}

/// While `f` swaps a run's results into place, signals wait for it to end. A signal that came
/// before it began has cancelled the run already (`check_interrupted` first).
pub fn swapping<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    check_interrupted()?;
    PHASE.store(SWAPPING, Ordering::SeqCst);
    // The run is done once its results are in place: a signal during the swap changes nothing.
    f()
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
