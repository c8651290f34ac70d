//! The CLI's files: pictures read once (their size checked from the header before decoding,
//! their EXIF orientation applied, a truncated JPEG refused), output folders a run assembles
//! aside and swaps in whole, and what Ctrl-C does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clipshape::edit::encode::{MAX_PIXELS, MAX_SIDE};

/// Decodes a picture (format from its bytes, not its name) to RGBA8, upright as its EXIF
/// orientation says (a phone's JPEG is often stored sideways). The header's dimensions are
/// checked first, so a tiny file that claims 20000² pixels costs nothing.
pub fn load_rgba(path: &Path) -> Result<(Vec<u8>, u32, u32)> {
    use image::ImageDecoder as _;
    let reading = || format!("reading {}", path.display());
    let reader = image::ImageReader::open(path).with_context(reading)?.with_guessed_format().with_context(reading)?;
    if reader.format().is_none() {
        bail!("{}: not a PNG or JPEG picture", path.display());
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        check_jpeg_end(path)?;
    }
    let mut decoder = reader.into_decoder().with_context(reading)?;
    let (w, h) = decoder.dimensions();
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        bail!("{}: {w}×{h} px exceeds the limit ({MAX_SIDE} px a side, {MAX_PIXELS} px in all)", path.display());
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).with_context(|| format!("decoding {}", path.display()))?;
    img.apply_orientation(orientation);
    let img = img.to_rgba8();
    let (w, h) = img.dimensions();
    Ok((img.into_raw(), w, h))
}

/// A JPEG ends with its end-of-image marker (FF D9), possibly followed by a little padding;
/// a file cut short does not, and a decoder would fill the missing rows with grey.
fn check_jpeg_end(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let tail = len.min(1024);
    f.seek(SeekFrom::Start(len - tail)).with_context(|| format!("reading {}", path.display()))?;
    let mut end = Vec::with_capacity(tail as usize);
    f.read_to_end(&mut end).with_context(|| format!("reading {}", path.display()))?;
    if !end.windows(2).any(|w| w == [0xFF, 0xD9]) {
        bail!("{}: the JPEG ends early (no end-of-image marker): the file is truncated", path.display());
    }
    Ok(())
}

/// Temporary files younger than this may belong to a run still writing into the directory.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// The record of what a run of ours wrote into an output folder: only what it lists (and is
/// still as we wrote it) is ever removed by a later run.
pub const RECORD: &str = ".clipshape.json";
/// A run assembles its files in `.clipshape-XXXXXX.stage` inside the folder, then moves them in.
const STAGE_SUFFIX: &str = ".stage";

#[derive(serde::Serialize, serde::Deserialize, Default, Debug, Clone, PartialEq)]
struct Record {
    /// Paths relative to the folder (`00.png`, `1/shift.safetensors`).
    files: Vec<Written>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Written {
    path: String,
    size: u64,
    sha256: String,
}

/// An output folder. A run writes into a staging folder inside it ([`OutputDir::join`]) and
/// [`OutputDir::commit`] swaps the result in whole: the earlier run's files (those its record
/// lists, unchanged) go, the new ones move in, the record is rewritten. A failure or Ctrl-C
/// before that leaves the folder as it was. Files of the user's are never removed or written
/// over: a folder holding files under our names that no run of ours wrote is refused, and so
/// is a folder where the run would remove or replace one of its own inputs.
pub struct OutputDir {
    pub path: PathBuf,
    staging: PathBuf,
    written: std::cell::RefCell<Vec<String>>,
    /// The folder did not exist before this run: a run that ends without committing removes
    /// it again when it is still empty (no trace of a failed run, nothing of anyone else's).
    created: bool,
    committed: std::cell::Cell<bool>,
}

impl OutputDir {
    /// Makes the folder ready before any work: it exists (created when missing), is writable,
    /// holds nothing of the user's under our names, and none of `inputs` (files the run reads)
    /// lies where the run would remove or replace it.
    pub fn prepare(path: &Path, inputs: &[&Path]) -> Result<OutputDir> {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if m.file_type().is_symlink() && !path.exists() {
                bail!("--out {}: a link to a place that does not exist", path.display());
            }
            if !(m.is_dir() || (m.file_type().is_symlink() && path.is_dir())) {
                bail!("--out {}: exists and is not a directory", path.display());
            }
        }
        let created = std::fs::symlink_metadata(path).is_err();
        std::fs::create_dir_all(path).with_context(|| format!("--out {}: cannot create it", path.display()))?;
        clipshape::io::remove_stale_temps(path, STALE_AFTER)?;
        remove_stale_stages(path);
        let record = read_record(path);
        let inputs: Vec<PathBuf> = inputs.iter().filter_map(|p| std::fs::canonicalize(p).ok()).collect();
        let ours = our_names_in(path);
        for (_, full) in &ours {
            if let Some(i) = inputs.iter().find(|i| std::fs::canonicalize(full).is_ok_and(|f| &f == *i)) {
                bail!(
                    "--out {}: the run would remove or write over its input {}: choose another folder",
                    path.display(),
                    i.display()
                );
            }
        }
        for (rel, full) in ours {
            if !record.files.iter().any(|w| w.path == rel && unchanged(&full, w)) {
                bail!(
                    "--out {}: it holds {rel}, which a run here would write over and which no earlier run of ours \
                     wrote (or it changed since): choose an empty or new folder",
                    path.display()
                );
            }
        }
        let staging = tempfile::Builder::new()
            .prefix(clipshape::io::TEMP_PREFIX)
            .suffix(STAGE_SUFFIX)
            .tempdir_in(path)
            .with_context(|| format!("--out {}: cannot write there", path.display()))?
            .keep();
        register_stage(&staging);
        Ok(OutputDir {
            path: path.to_path_buf(),
            staging,
            written: Default::default(),
            created,
            committed: Default::default(),
        })
    }

    /// Where the run writes the file `name` (relative, `/`-separated: `1/00.png` for a joint
    /// edit's first prompt); it reaches the folder at [`OutputDir::commit`].
    pub fn join(&self, name: &str) -> PathBuf {
        let p = self.staging.join(name);
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        self.written.borrow_mut().push(name.to_string());
        p
    }

    /// Swaps the run's files in whole: the earlier run's recorded files (still as it wrote
    /// them) go aside, the new files move in, the record is rewritten, then the old files go;
    /// a failure on the way puts everything back as it was. Returns the files' paths in the
    /// order they were joined.
    pub fn commit(self) -> Result<Vec<PathBuf>> {
        let old = read_record(&self.path);
        let mut record = Record::default();
        for name in self.written.borrow().iter() {
            let staged = self.staging.join(name);
            if staged.is_file() && !record.files.iter().any(|w| &w.path == name) {
                record.files.push(written(&staged, name)?);
            }
        }
        let aside = self.staging.join(".earlier");
        let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
        let result = (|| -> Result<()> {
            for w in &old.files {
                let full = self.path.join(&w.path);
                if inside_without_links(&self.path, &w.path) && unchanged(&full, w) {
                    move_file(&full, &aside.join(&w.path), &mut moves)?;
                }
            }
            for w in &record.files {
                let target = self.path.join(&w.path);
                if let Some((dir, _)) = w.path.rsplit_once('/') {
                    let d = self.path.join(dir);
                    if std::fs::symlink_metadata(&d).is_ok_and(|m| m.file_type().is_symlink()) {
                        bail!("{}: a link where this run writes its folder: not followed", d.display());
                    }
                }
                if std::fs::symlink_metadata(&target).is_ok() {
                    bail!("{}: appeared while the run worked; left as it is", target.display());
                }
                move_file(&self.staging.join(&w.path), &target, &mut moves)?;
            }
            clipshape::io::write_atomic(&self.path.join(RECORD), &serde_json::to_vec_pretty(&record)?)?;
            Ok(())
        })();
        if let Err(e) = result {
            for (from, to) in moves.iter().rev() {
                let _ = std::fs::rename(to, from);
            }
            return Err(e);
        }
        // Subfolders the earlier run made and this one left empty.
        for w in &old.files {
            if let Some((dir, _)) = w.path.rsplit_once('/') {
                if inside_without_links(&self.path, dir) {
                    let _ = std::fs::remove_dir(self.path.join(dir));
                }
            }
        }
        self.committed.set(true);
        Ok(record.files.iter().map(|w| self.path.join(&w.path)).collect())
    }
}

/// Renames `from` to `to` (making `to`'s folder), remembering the move for a rollback.
fn move_file(from: &Path, to: &Path, moves: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::rename(from, to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    moves.push((from.to_path_buf(), to.to_path_buf()));
    Ok(())
}

impl OutputDir {
    /// The folder's own files.
    pub fn root(&self) -> Folder<'_> {
        Folder { out: self, prefix: String::new() }
    }

    /// A joint edit's subfolder (`1`, `2`, …, `together`).
    pub fn folder(&self, name: &str) -> Folder<'_> {
        Folder { out: self, prefix: format!("{name}/") }
    }
}

/// Where one set of results goes in an [`OutputDir`]: its root, or one of its subfolders.
pub struct Folder<'a> {
    out: &'a OutputDir,
    prefix: String,
}

impl Folder<'_> {
    /// Where the run writes `name` here (staged until the folder is committed).
    pub fn join(&self, name: &str) -> PathBuf {
        self.out.join(&format!("{}{name}", self.prefix))
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
        unregister_stage(&self.staging);
        if self.created && !self.committed.get() {
            // remove_dir removes an empty folder only.
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// Files and folders under the names our runs write (`NN.png`, `layer-NN.png`, `sheet.png`,
/// `faces.json`, `shift.safetensors`, `latent.safetensors`, and those inside a joint edit's
/// `N/` and `together/`), as (relative path, path).
fn our_names_in(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(name) = entry.file_name().into_string() else { continue };
        let path = entry.path();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if is_our_output(&name) {
            out.push((name, path));
        } else if is_joint_folder(&name) && path.is_dir() {
            if is_link {
                // Never followed, never touched.
                continue;
            }
            for inner in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let Ok(n) = inner.file_name().into_string() else { continue };
                if is_our_output(&n) {
                    out.push((format!("{name}/{n}"), inner.path()));
                }
            }
        }
    }
    out.sort();
    out
}

fn is_joint_folder(name: &str) -> bool {
    name == "together" || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) && !name.starts_with('0'))
}

/// Whether `rel` under `dir` passes through no link (a recorded path is never followed out).
fn inside_without_links(dir: &Path, rel: &str) -> bool {
    let mut p = dir.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return false;
        }
        p.push(part);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return false;
        }
    }
    true
}

fn read_record(dir: &Path) -> Record {
    std::fs::read(dir.join(RECORD)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn written(path: &Path, rel: &str) -> Result<Written> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Written { path: rel.to_string(), size: bytes.len() as u64, sha256: sha256_hex(&bytes) })
}

/// Whether the file at `path` is a plain file still as `w` records it.
fn unchanged(path: &Path, w: &Written) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == w.size => std::fs::read(path).is_ok_and(|b| sha256_hex(&b) == w.sha256),
        _ => false,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Staging folders of runs in progress, removed if the process is interrupted.
static STAGES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn register_stage(p: &Path) {
    STAGES.lock().unwrap_or_else(|e| e.into_inner()).push(p.to_path_buf());
}

fn unregister_stage(p: &Path) {
    STAGES.lock().unwrap_or_else(|e| e.into_inner()).retain(|s| s != p);
}

/// A killed run's staging folders (older than [`STALE_AFTER`]): ours by name, so removed.
fn remove_stale_stages(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let old = entry.metadata().and_then(|m| m.modified()).map(|t| t.elapsed().unwrap_or_default() >= STALE_AFTER);
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir
            && name.starts_with(clipshape::io::TEMP_PREFIX)
            && name.ends_with(STAGE_SUFFIX)
            && old.unwrap_or(false)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn is_our_output(name: &str) -> bool {
    let numbered = |s: &str| s.len() >= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(stem) = name.strip_suffix(".png") {
        return numbered(stem) || stem.strip_prefix("layer-").is_some_and(numbered) || stem == "sheet";
    }
    matches!(name, "faces.json" | "shift.safetensors" | "latent.safetensors")
}

/// Set on the first Ctrl-C: the run stops at its next check, removes what it was writing,
/// says "cancelled" and exits with 130 from the main thread (a process::exit from the signal
/// thread while libtorch runs crashed, issue #23).
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The loaded context's cancel flag, so a long library call stops too.
static CANCEL: std::sync::Mutex<Option<clipshape::context::CancelHandle>> = std::sync::Mutex::new(None);

/// On the first Ctrl-C: cancel (see [`INTERRUPTED`]); on a second: leave at once.
pub fn cancel_on_interrupt() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            remove_in_flight();
            std::process::exit(130);
        }
        if let Some(h) = CANCEL.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            h.cancel();
        }
        eprintln!("\ncancelling… (Ctrl-C again to leave at once)");
    });
}

/// Lets Ctrl-C cancel the library calls of `ctx` (and at once, if it already came).
pub fn cancel_context_on_interrupt(ctx: &clipshape::context::Context) {
    *CANCEL.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx.cancel_handle());
    if interrupted() {
        ctx.cancel();
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// An error when Ctrl-C came: a check between a run's phases.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        return Err(clipshape::Error::Cancelled.into());
    }
    Ok(())
}

/// Removes the temporary files and staging folders of writes in progress.
pub fn remove_in_flight() {
    clipshape::io::remove_in_flight();
    if let Ok(stages) = STAGES.try_lock() {
        for s in stages.iter() {
            let _ = std::fs::remove_dir_all(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_outputs() {
        for ours in ["00.png", "06.png", "123.png", "layer-03.png", "sheet.png", "faces.json", "shift.safetensors"] {
            assert!(is_our_output(ours), "{ours}");
        }
        for theirs in ["0.png", "photo.png", "00.jpg", "layer-x.png", "notes.txt", "sheet.png.bak"] {
            assert!(!is_our_output(theirs), "{theirs}");
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    /// One run: `files` written (name, bytes), committed.
    fn run(dir: &Path, inputs: &[&Path], files: &[(&str, &[u8])]) -> Result<Vec<PathBuf>> {
        let out = OutputDir::prepare(dir, inputs)?;
        for (name, bytes) in files {
            std::fs::write(out.root().join(name), bytes).unwrap();
        }
        out.commit()
    }

    #[test]
    fn a_later_run_replaces_only_what_an_earlier_run_of_ours_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("mine.txt"), b"x").unwrap();
        std::fs::write(d.join(".clipshape-young.part"), b"x").unwrap();
        let old = std::fs::File::create(d.join(".clipshape-old.part")).unwrap();
        old.set_modified(std::time::SystemTime::now() - Duration::from_secs(120)).unwrap();
        let paths = run(d, &[], &[("00.png", b"a"), ("01.png", b"b"), ("sheet.png", b"s")]).unwrap();
        assert_eq!(paths, vec![d.join("00.png"), d.join("01.png"), d.join("sheet.png")]);
        run(d, &[], &[("00.png", b"c")]).unwrap();
        assert_eq!(names(d), [".clipshape-young.part", ".clipshape.json", "00.png", "mine.txt"]);
        assert_eq!(std::fs::read(d.join("00.png")).unwrap(), b"c");

        let file = d.join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(OutputDir::prepare(&file, &[]).is_err(), "a file is not an output directory");
    }

    #[test]
    fn files_of_the_users_under_our_names_and_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["01.png", "2024.png", "sheet.png"] {
            std::fs::write(d.join(f), b"photo").unwrap();
        }
        let e = run(d, &[], &[("00.png", b"a")]).unwrap_err().to_string();
        assert!(e.contains("which no earlier run of ours wrote") && e.contains("01.png"), "{e}");
        let e = run(d, &[&d.join("2024.png")], &[("00.png", b"a")]).unwrap_err().to_string();
        assert!(e.contains("its input") && e.contains("2024.png"), "{e}");
        assert_eq!(names(d), ["01.png", "2024.png", "sheet.png"], "nothing touched, nothing left behind");

        // A file of ours the user changed since is theirs now.
        let other = tempfile::tempdir().unwrap();
        run(other.path(), &[], &[("00.png", b"a")]).unwrap();
        std::fs::write(other.path().join("00.png"), b"edited by hand").unwrap();
        let e = run(other.path(), &[], &[("00.png", b"b")]).unwrap_err().to_string();
        assert!(e.contains("changed since"), "{e}");
        // Our own earlier output as this run's input: it would be removed.
        let third = tempfile::tempdir().unwrap();
        run(third.path(), &[], &[("shift.safetensors", b"s")]).unwrap();
        let e = run(third.path(), &[&third.path().join("shift.safetensors")], &[("00.png", b"a")]).unwrap_err();
        assert!(e.to_string().contains("its input"), "{e}");
    }

    #[test]
    fn a_run_that_fails_leaves_the_earlier_results_and_no_staging() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run(d, &[], &[("00.png", b"a"), ("01.png", b"b")]).unwrap();
        {
            let out = OutputDir::prepare(d, &[]).unwrap();
            std::fs::write(out.root().join("00.png"), b"new").unwrap();
            // Dropped without commit: the run failed or was cancelled.
        }
        assert_eq!(names(d), [".clipshape.json", "00.png", "01.png"]);
        assert_eq!(std::fs::read(d.join("01.png")).unwrap(), b"b");
        // A commit that cannot finish puts everything back.
        let out = OutputDir::prepare(d, &[]).unwrap();
        std::fs::write(out.root().join("00.png"), b"new").unwrap();
        std::fs::write(out.root().join("02.png"), b"new").unwrap();
        std::fs::write(d.join("02.png"), b"appeared meanwhile").unwrap();
        assert!(out.commit().unwrap_err().to_string().contains("appeared while the run worked"));
        assert_eq!(names(d), [".clipshape.json", "00.png", "01.png", "02.png"]);
        assert_eq!(std::fs::read(d.join("00.png")).unwrap(), b"a");
        assert_eq!(std::fs::read(d.join("02.png")).unwrap(), b"appeared meanwhile");
    }

    #[cfg(unix)]
    #[test]
    fn links_are_never_followed_out_of_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(elsewhere.path().join("00.png"), b"someone else's").unwrap();
        let out = OutputDir::prepare(d, &[]).unwrap();
        std::fs::write(out.folder("3").join("00.png"), b"a").unwrap();
        out.commit().unwrap();
        // The folder 3 replaced by a link to another place; the record still names 3/00.png.
        std::fs::remove_dir_all(d.join("3")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), d.join("3")).unwrap();
        let out = OutputDir::prepare(d, &[]).unwrap();
        std::fs::write(out.root().join("00.png"), b"b").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(elsewhere.path().join("00.png")).unwrap(), b"someone else's");
    }
}
