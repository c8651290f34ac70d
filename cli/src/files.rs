//! The CLI's files: pictures read once, their size checked from the header before decoding, output directories
//! prepared before any work and cleared of an earlier run's numbered results just before the new
//! ones are written, and temporary files removed on Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clipshape::edit::encode::{MAX_PIXELS, MAX_SIDE};

/// Decodes a picture (format from its bytes, not its name) to RGBA8. The header's dimensions
/// are checked first, so a tiny file that claims 20000² pixels costs nothing.
pub fn load_rgba(path: &Path) -> Result<(Vec<u8>, u32, u32)> {
    let reading = || format!("reading {}", path.display());
    let reader = image::ImageReader::open(path).with_context(reading)?.with_guessed_format().with_context(reading)?;
    if reader.format().is_none() {
        bail!("{}: not a PNG or JPEG picture", path.display());
    }
    let decoder = reader.into_decoder().with_context(reading)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        bail!("{}: {w}×{h} px exceeds the limit ({MAX_SIDE} px a side, {MAX_PIXELS} px in all)", path.display());
    }
    let img =
        image::DynamicImage::from_decoder(decoder).with_context(|| format!("decoding {}", path.display()))?.to_rgba8();
    let (w, h) = img.dimensions();
    Ok((img.into_raw(), w, h))
}

/// Temporary files younger than this may belong to a run still writing into the directory.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// An output directory: it exists and is writable before any work starts.
pub struct OutputDir {
    pub path: PathBuf,
}

impl OutputDir {
    pub fn prepare(path: &Path) -> Result<OutputDir> {
        if path.exists() && !path.is_dir() {
            bail!("--out {}: exists and is not a directory", path.display());
        }
        std::fs::create_dir_all(path).with_context(|| format!("--out {}: cannot create it", path.display()))?;
        let probe = tempfile::Builder::new()
            .prefix(clipshape::io::TEMP_PREFIX)
            .suffix(clipshape::io::TEMP_SUFFIX)
            .tempfile_in(path)
            .with_context(|| format!("--out {}: cannot write there", path.display()))?;
        drop(probe);
        clipshape::io::remove_stale_temps(path, STALE_AFTER)?;
        Ok(OutputDir { path: path.to_path_buf() })
    }

    /// Removes what an earlier run wrote here under the names this run writes (`NN.png`,
    /// `layer-NN.png`, `sheet.png`, `faces.json`, `shift.safetensors`, `latent.safetensors`),
    /// so a run with fewer strengths does not leave the earlier prompt's images beside its own.
    /// Other files are never touched.
    pub fn clear_previous(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.path)?.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_our_output(name) && entry.path().is_file() {
                std::fs::remove_file(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// Clears the subdirectories a joint edit (`--also`) writes, `N/` for N > `keep` and
    /// `together/` when `keep` is 0, as `clear_previous` does, and removes them once empty.
    pub fn clear_joint_runs(&self, keep: usize) -> Result<()> {
        for entry in std::fs::read_dir(&self.path)?.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = match name.parse::<usize>() {
                Ok(n) => n > keep && name == n.to_string(),
                Err(_) => name == "together" && keep == 0,
            };
            if stale && entry.path().is_dir() {
                OutputDir { path: entry.path() }.clear_previous()?;
                // Left in place when it holds files of the user's.
                let _ = std::fs::remove_dir(entry.path());
            }
        }
        Ok(())
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

fn is_our_output(name: &str) -> bool {
    let numbered = |s: &str| s.len() >= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(stem) = name.strip_suffix(".png") {
        return numbered(stem) || stem.strip_prefix("layer-").is_some_and(numbered) || stem == "sheet";
    }
    matches!(name, "faces.json" | "shift.safetensors" | "latent.safetensors")
}

/// On Ctrl-C: remove the temporary files of writes in progress, then exit as interrupted.
pub fn remove_temps_on_interrupt() {
    let _ = ctrlc::set_handler(|| {
        clipshape::io::remove_in_flight();
        std::process::exit(130);
    });
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

    #[test]
    fn clearing_keeps_other_files_and_stale_temps_go() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["00.png", "05.png", "mine.txt", "layer-02.png", ".clipshape-young.part"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        // A killed run's leftover, two minutes old.
        let old = std::fs::File::create(dir.path().join(".clipshape-old.part")).unwrap();
        old.set_modified(std::time::SystemTime::now() - Duration::from_secs(120)).unwrap();
        let out = OutputDir::prepare(dir.path()).unwrap();
        out.clear_previous().unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec![".clipshape-young.part".to_string(), "mine.txt".to_string()]);

        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(OutputDir::prepare(&file).is_err(), "a file is not an output directory");
    }
}
