//! Heap reuse while a heavy job runs on the CPU.
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh `mmap`
//! and returns it with `munmap` when freed. Most activations of a 1024 px generator are larger
//! (a 32-channel 1024² map is 134 MB), so every optimisation step page-faulted and zeroed
//! gigabytes: 58 s of the 85 s of an edit-step bench were system time (BENCHMARKS.md, "The
//! allocator"). While a [`HeapReuse`] guard lives, large blocks come from the heap instead and
//! freed ones are kept for the next step; when the last guard drops, the defaults come back and
//! the free pages are returned to the system (`malloc_trim`), so a host process (Krita) keeps
//! no more memory after an edit than before it.
//!
//! Only glibc has these knobs; elsewhere the guard does nothing. `CLIPSHAPE_HEAP_REUSE=0`
//! turns it off (a host that tunes its own allocator, or a measurement of the difference).

use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("CLIPSHAPE_HEAP_REUSE").map_or(true, |v| v.trim() != "0"))
}

/// How many guards are alive (the settings are process-wide; nested and concurrent jobs share
/// one change).
static ACTIVE: Mutex<usize> = Mutex::new(0);

/// glibc's defaults (malloc/malloc.c: DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const DEFAULT_MMAP_MAX: i32 = 65536;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const DEFAULT_TRIM_THRESHOLD: i32 = 128 * 1024;

/// Keeps large allocations on the heap until dropped. Cheap: two `mallopt` calls at each end.
#[must_use = "the heap is reused only while the guard lives"]
pub struct HeapReuse(());

impl HeapReuse {
    pub fn new() -> HeapReuse {
        let mut n = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        if *n == 0 && enabled() {
            set(0, i32::MAX);
        }
        *n += 1;
        HeapReuse(())
    }

    /// Whether large allocations are kept on the heap right now.
    #[cfg(test)]
    fn active() -> bool {
        *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) > 0
    }
}

impl Default for HeapReuse {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HeapReuse {
    fn drop(&mut self) {
        let mut n = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 && enabled() {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            set(DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD);
            release_free();
        }
    }
}

/// Hands the allocator's free pages back to the system (after a large model is dropped, whose
/// memory glibc would otherwise keep for later allocations it rarely fits).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Photo-sized buffers are asked for with these instead of `vec!`: Rust aborts the process
/// when an allocation fails, and the process may be GIMP or Krita. A failure is
/// [`Error::OutOfMemory`] naming what was too big, and the host lives on.
pub fn zeroed<T: Copy + Default>(n: usize, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let mut v = with_capacity(n, what)?;
    v.resize(n, T::default());
    Ok(v)
}

/// An empty vector with room for `n` elements (see [`zeroed`]).
pub fn with_capacity<T>(n: usize, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| too_big(n.saturating_mul(std::mem::size_of::<T>()), what))?;
    Ok(v)
}

/// Whether `bytes` more can be had now: asked for and given back at once, before work whose
/// buffers are made by code that would abort on a failure (a picture decoder).
pub fn ensure_available(bytes: usize, what: impl FnOnce() -> String) -> Result<()> {
    with_capacity::<u8>(bytes, what).map(drop)
}

fn too_big(bytes: usize, what: impl FnOnce() -> String) -> Error {
    Error::OutOfMemory(format!("{}: {:.0} MB could not be allocated", what(), bytes as f64 / 1e6))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set(mmap_max: i32, trim_threshold: i32) {
    // SAFETY: mallopt takes the allocator's locks; changing these parameters only affects
    // how later allocations are served. Blocks mmapped before are still freed with munmap.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, mmap_max);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_mmap_max: i32, _trim_threshold: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_nest_and_the_last_one_restores() {
        let a = HeapReuse::new();
        let b = HeapReuse::new();
        assert!(HeapReuse::active());
        drop(a);
        assert!(HeapReuse::active(), "an inner guard's end must not end the outer job's reuse");
        drop(b);
        assert!(!HeapReuse::active());
    }

    #[test]
    fn an_impossible_buffer_is_an_error_naming_it() {
        let e = zeroed::<u8>(usize::MAX / 2, || "the layer of a 9×9 px photo".into()).unwrap_err();
        assert!(matches!(&e, Error::OutOfMemory(m) if m.contains("the layer of a 9×9 px photo")), "{e}");
        assert_eq!(zeroed::<u16>(3, String::new).unwrap(), [0, 0, 0]);
    }
}
