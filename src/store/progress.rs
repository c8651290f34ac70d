//! How downloads and verification report progress: a trait the CLI's terminal bar and the C
//! ABI's callback implement.

/// Download/verification progress. One file at a time: `start`, any number of `advance`,
/// `finish` (also after a failure).
pub trait Progress {
    /// A file begins; `done` bytes are already there (a resumed `.part`).
    fn start(&mut self, file: &str, total: u64, done: u64);
    /// `bytes` more bytes arrived (or were hashed).
    fn advance(&mut self, bytes: u64);
    /// The current file ended (successfully or not).
    fn finish(&mut self, file: &str);
    /// A line for the user (licence notes, pinned hashes, restarts).
    fn note(&mut self, _message: &str) {}
    /// Polled between chunks; `true` stops the download with [`StoreError::Cancelled`](super::StoreError::Cancelled).
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: u64, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self, _: &str) {}
}

/// Calls `f(file, done, total)` on start, each chunk and finish; `f` returning `false` cancels.
/// The shape the C ABI wraps (`user_data` lives in the closure).
pub struct CallbackProgress<F: FnMut(&str, u64, u64) -> bool> {
    f: F,
    file: String,
    done: u64,
    total: u64,
    stop: bool,
}

impl<F: FnMut(&str, u64, u64) -> bool> CallbackProgress<F> {
    pub fn new(f: F) -> Self {
        CallbackProgress { f, file: String::new(), done: 0, total: 0, stop: false }
    }

    fn call(&mut self) {
        if !(self.f)(&self.file, self.done, self.total) {
            self.stop = true;
        }
    }
}

impl<F: FnMut(&str, u64, u64) -> bool> Progress for CallbackProgress<F> {
    fn start(&mut self, file: &str, total: u64, done: u64) {
        self.file = file.to_string();
        self.total = total;
        self.done = done;
        self.call();
    }
    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        self.call();
    }
    fn finish(&mut self, _file: &str) {
        self.call();
    }
    fn cancelled(&self) -> bool {
        self.stop
    }
}
