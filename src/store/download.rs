//! HTTP downloads: resume from `.part` with Range, hash while streaming, verify, pin unknown
//! hashes, rename into place; one advisory lock per file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::error::{io_err, Result, StoreError};
use super::progress::Progress;
use super::*;

impl ModelStore {
    pub(super) fn ensure_root(&self) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(io_err("create directory", &self.root))
    }

    pub(super) fn lock_file(&self, file: &str) -> Result<FileLock> {
        let dir = self.root.join(".locks");
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let path = dir.join(format!("{file}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        fs4::FileExt::lock(&f).map_err(io_err("lock", &path))?;
        Ok(FileLock { _file: f })
    }

    /// Downloads one file of the manifest unless it is present. Blocks while another process
    /// or thread downloads the same file, then finds it complete.
    pub fn fetch_file(&self, file: &str, progress: &mut dyn Progress) -> Result<FileOutcome> {
        let entry = self.entry(file)?;
        let dest = self.file_path(file);
        let done = |action| FileOutcome {
            file: file.to_string(),
            path: dest.clone(),
            action,
            licence: entry.licence.clone(),
            pinned: None,
        };
        if self.present(file) {
            return Ok(done(FetchAction::AlreadyPresent));
        }
        self.ensure_root()?;
        let _lock = self.lock_file(file)?;
        match self.state_of(file).0 {
            FileState::Present { .. } => return Ok(done(FetchAction::AlreadyPresent)),
            FileState::WrongSize { size } => {
                let bad = self.side_path(file, ".bad");
                progress.note(&format!(
                    "{file}: the file in the store has {size} bytes instead of {}; moved aside to {}",
                    entry.size,
                    bad.display()
                ));
                move_aside(&dest, &bad)?;
            }
            FileState::Missing { .. } => {}
        }
        let urls = self.urls_for(file);
        if urls.is_empty() {
            return Err(StoreError::NoUrl { file: file.to_string() });
        }
        let mut last_err = None;
        // A partial file left by an earlier run can itself be the bad part: when a resumed
        // download fails its hash, it is discarded and fetched once more from the start before
        // the source is blamed.
        let mut restarted = false;
        for url in &urls {
            let mut attempt = 0;
            loop {
                let resumed_from = fs::metadata(self.side_path(file, ".part")).map(|m| m.len()).unwrap_or(0);
                progress.start(file, entry.size, resumed_from.min(entry.size));
                let result = self.download_once(file, entry, url, progress);
                progress.finish(file);
                match result.and_then(|(digest, resumed_from)| {
                    self.install(file, entry, url, &digest).map(|pinned| (pinned, resumed_from))
                }) {
                    Ok((pinned, resumed_from)) => {
                        if let Some(h) = &pinned {
                            progress.note(&format!(
                                "{file}: the manifest has no SHA-256; pinned {h} in {}",
                                self.root.join(PIN_FILE_NAME).display()
                            ));
                        }
                        let mut out = done(FetchAction::Downloaded {
                            bytes: entry.size - resumed_from,
                            resumed_from,
                            url: url.clone(),
                        });
                        out.pinned = pinned;
                        return Ok(out);
                    }
                    Err(StoreError::HashMismatch { .. }) if resumed_from > 0 && !restarted => {
                        restarted = true;
                        let _ = fs::remove_file(self.side_path(file, ".part"));
                        progress.note(&format!(
                            "{file}: the partial download kept from an earlier run ({resumed_from} bytes) was bad; \
                             discarded it, downloading again from the start"
                        ));
                    }
                    Err(e) if e.is_retryable() && attempt < self.options.retries => {
                        attempt += 1;
                        progress.note(&format!("{e}; retrying ({attempt}/{})", self.options.retries));
                        // Waited in ticks, so a cancel is heard while waiting too.
                        let until = std::time::Instant::now() + self.options.retry_delay * attempt;
                        while std::time::Instant::now() < until {
                            if progress.cancelled() {
                                return Err(StoreError::Cancelled { file: file.to_string() });
                            }
                            std::thread::sleep(TICK.min(until.saturating_duration_since(std::time::Instant::now())));
                        }
                    }
                    Err(e) if e.is_source_error() => {
                        // The caller reports the last one; earlier URLs are worth a note only.
                        log::info!("{e}");
                        last_err = Some(e);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last_err.unwrap_or(StoreError::NoUrl { file: file.to_string() }))
    }

    pub(super) fn agent(&self) -> ureq::Agent {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(10)
            .timeout_connect(Some(self.options.connect_timeout))
            .timeout_recv_response(Some(self.options.read_timeout))
            .timeout_per_read(Some(self.options.read_timeout))
            .user_agent(concat!("clipshape/", env!("CARGO_PKG_VERSION")))
            .build();
        ureq::Agent::new_with_config(config)
    }

    /// One HTTP attempt: brings `<file>.part` to the full size and returns its SHA-256 and the
    /// offset it resumed from. Never touches the final file.
    pub(super) fn download_once(
        &self,
        file: &str,
        entry: &FileEntry,
        url: &str,
        progress: &mut dyn Progress,
    ) -> Result<(String, u64)> {
        let part = self.side_path(file, ".part");
        let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if have > entry.size {
            fs::remove_file(&part).map_err(io_err("remove", &part))?;
            have = 0;
        }
        let mut hasher = Sha256::new();
        if have > 0 {
            hash_reader(&mut File::open(&part).map_err(io_err("open", &part))?, &part, &mut hasher, None)?;
        }
        if have == entry.size {
            return Ok((hex::encode(hasher.finalize()), have));
        }
        if self.options.check_disk_space {
            if let Ok(available) = fs4::available_space(&self.root) {
                let needed = entry.size - have;
                if available < needed {
                    return Err(StoreError::DiskFull {
                        file: file.to_string(),
                        path: self.root.clone(),
                        needed,
                        available,
                    });
                }
            }
        }
        let transfer = |bytes: u64, message: String| StoreError::Transfer { url: url.to_string(), bytes, message };
        let mut request = self.agent().get(url).header("Accept-Encoding", "identity");
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let response = request.call().map_err(|e| transfer(0, e.to_string()))?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let size_mismatch = |got: u64| StoreError::SizeMismatch {
            file: file.to_string(),
            origin: url.to_string(),
            expected: entry.size,
            got,
        };
        let resumed_from = match status {
            206 => {
                let (start, total) = header("content-range")
                    .as_deref()
                    .and_then(parse_content_range)
                    .ok_or_else(|| transfer(0, "206 without a usable Content-Range".into()))?;
                if let Some(total) = total {
                    if total != entry.size {
                        remove_if_exists(&part)?;
                        return Err(size_mismatch(total));
                    }
                }
                if start != have {
                    remove_if_exists(&part)?;
                    return Err(transfer(0, format!("server resumed at byte {start} instead of {have}; restarting")));
                }
                have
            }
            200 => {
                if have > 0 {
                    progress.note(&format!("{file}: {url} does not resume downloads; starting again from 0"));
                    progress.start(file, entry.size, 0);
                    hasher = Sha256::new();
                }
                0
            }
            416 => {
                remove_if_exists(&part)?;
                return Err(transfer(0, "server refused the resume range (416); restarting".into()));
            }
            _ => return Err(StoreError::HttpStatus { url: url.to_string(), status }),
        };
        if let Some(len) = header("content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
            if resumed_from + len != entry.size {
                if resumed_from == 0 {
                    remove_if_exists(&part)?;
                }
                return Err(size_mismatch(resumed_from + len));
            }
        }
        let mut out = if resumed_from == 0 {
            File::create(&part).map_err(io_err("create", &part))?
        } else {
            let mut f = OpenOptions::new().write(true).open(&part).map_err(io_err("open", &part))?;
            f.seek(SeekFrom::Start(resumed_from)).map_err(io_err("seek", &part))?;
            f
        };
        let mut have = resumed_from;
        let chunks = read_in_background(response.into_body().into_reader());
        loop {
            if progress.cancelled() {
                out.sync_all().map_err(io_err("write", &part))?;
                return Err(StoreError::Cancelled { file: file.to_string() });
            }
            let buf = match chunks.recv_timeout(TICK) {
                Ok(Ok(b)) if b.is_empty() => break,
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    out.sync_all().map_err(io_err("write", &part))?;
                    return Err(transfer(have, e.to_string()));
                }
                // A silent socket: the host still hears from us (and may stop) every tick.
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    progress.advance(0);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    out.sync_all().map_err(io_err("write", &part))?;
                    return Err(transfer(have, "the download stopped".into()));
                }
            };
            let n = buf.len();
            if have + n as u64 > entry.size {
                drop(out);
                remove_if_exists(&part)?;
                return Err(StoreError::SizeMismatch {
                    file: file.to_string(),
                    origin: format!("{url} (it sent more)"),
                    expected: entry.size,
                    got: have + n as u64,
                });
            }
            let chunk = buf.as_slice();
            out.write_all(chunk).map_err(io_err("write", &part))?;
            hasher.update(chunk);
            have += n as u64;
            progress.advance(n as u64);
        }
        out.sync_all().map_err(io_err("write", &part))?;
        if have != entry.size {
            return Err(transfer(have, format!("connection closed at {have} of {} bytes", entry.size)));
        }
        Ok((hex::encode(hasher.finalize()), resumed_from))
    }

    /// Checks the hash of a complete `.part`, then renames it into place. Returns the hash it
    /// pinned, if the manifest had none.
    pub(super) fn install(&self, file: &str, entry: &FileEntry, origin: &str, digest: &str) -> Result<Option<String>> {
        let part = self.side_path(file, ".part");
        let pinned = match self.expected_hash(file)? {
            Some(expected) if expected != digest => {
                let bad = self.side_path(file, ".bad");
                move_aside(&part, &bad)?;
                return Err(StoreError::HashMismatch {
                    file: file.to_string(),
                    origin: origin.to_string(),
                    expected,
                    got: digest.to_string(),
                    moved_to: Some(bad),
                });
            }
            Some(_) => None,
            None => {
                self.pin(file, digest, entry.size)?;
                Some(digest.to_string())
            }
        };
        let dest = self.file_path(file);
        fs::rename(&part, &dest).map_err(io_err("rename into place", &dest))?;
        Ok(pinned)
    }

    /// The hash a file must have: the manifest's, else the one pinned in [`PIN_FILE_NAME`].
    pub fn expected_hash(&self, file: &str) -> Result<Option<String>> {
        if let Some(h) = self.manifest.file(file).and_then(|f| f.sha256.clone()) {
            return Ok(Some(h));
        }
        Ok(self.read_pins()?.pinned.get(file).map(|p| p.sha256.clone()))
    }

    pub(super) fn read_pins(&self) -> Result<PinFile> {
        let path = self.root.join(PIN_FILE_NAME);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PinFile::default()),
            Err(e) => return Err(StoreError::Io { op: "open", path, source: e }),
        };
        // Shared lock: `pin` rewrites the file in place under an exclusive one.
        fs4::FileExt::lock_shared(&f).map_err(io_err("lock", &path))?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(io_err("read", &path))?;
        parse_pins(&text, &path)
    }

    pub(super) fn pin(&self, file: &str, sha256: &str, size: u64) -> Result<()> {
        self.ensure_root()?;
        let path = self.root.join(PIN_FILE_NAME);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        fs4::FileExt::lock(&f).map_err(io_err("lock", &path))?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(io_err("read", &path))?;
        let mut pins = parse_pins(&text, &path)?;
        pins.pinned.insert(file.to_string(), Pin { sha256: sha256.to_string(), size });
        let body = toml::to_string_pretty(&pins)
            .map_err(|e| StoreError::PinFile { path: path.clone(), message: e.to_string() })?;
        let text = format!(
            "# SHA-256 of model files whose manifest entry has no hash, pinned at their first download\n\
             # by clipshape. Delete an entry to accept a new upstream version of that file.\n\n{body}"
        );
        f.set_len(0).map_err(io_err("truncate", &path))?;
        f.seek(SeekFrom::Start(0)).map_err(io_err("seek", &path))?;
        f.write_all(text.as_bytes()).map_err(io_err("write", &path))?;
        f.sync_all().map_err(io_err("write", &path))
    }
}

pub(super) fn parse_pins(text: &str, path: &Path) -> Result<PinFile> {
    if text.trim().is_empty() {
        return Ok(PinFile::default());
    }
    toml::from_str(text).map_err(|e| StoreError::PinFile { path: path.to_path_buf(), message: e.to_string() })
}

/// `bytes START-END/TOTAL` → (START, TOTAL); TOTAL `*` → None.
pub(super) fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

pub(super) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io { op: "remove", path: path.to_path_buf(), source: e }),
    }
}

/// Renames `from` over `to` (removing `to` first where rename does not replace).
pub(super) fn replace(from: &Path, to: &Path) -> Result<()> {
    if cfg!(windows) {
        remove_if_exists(to)?;
    }
    fs::rename(from, to).map_err(io_err("rename into place", to))
}

pub(super) fn move_aside(from: &Path, bad: &Path) -> Result<()> {
    replace(from, bad)
}

#[cfg(unix)]
pub(super) fn make_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
pub(super) fn make_symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

#[cfg(not(any(unix, windows)))]
pub(super) fn make_symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "symlinks are not supported here; add without --link"))
}

pub(super) fn hash_reader(
    r: &mut dyn Read,
    path: &Path,
    hasher: &mut Sha256,
    mut progress: Option<&mut dyn Progress>,
) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::Io { op: "read", path: path.to_path_buf(), source: e }),
        };
        hasher.update(buf.get(..n).unwrap_or_default());
        total += n as u64;
        if let Some(p) = progress.as_deref_mut() {
            p.advance(n as u64);
            if p.cancelled() {
                return Err(StoreError::Cancelled { file: path.display().to_string() });
            }
        }
    }
}

pub(super) fn hash_file(path: &Path, label: &str, progress: &mut dyn Progress) -> Result<String> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut hasher = Sha256::new();
    progress.start(label, len, 0);
    let r = hash_reader(&mut f, path, &mut hasher, Some(progress));
    progress.finish(label);
    r?;
    Ok(hex::encode(hasher.finalize()))
}

/// How often a download waiting for bytes reports progress (and so hears a cancel).
const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Reads `body` on its own thread, chunk by chunk (an empty chunk = the end): a socket that
/// stalls blocks that thread, never the download's loop, which keeps reporting and can be
/// cancelled. The thread ends at the body's end, its error, or when the loop is gone.
fn read_in_background(mut body: impl Read + Send + 'static) -> mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::sync_channel(4);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; CHUNK];
        match body.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                let end = n == 0;
                if tx.send(Ok(buf)).is_err() || end {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    });
    rx
}
