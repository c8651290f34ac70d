//! The record of what a run of ours wrote into an output folder (`.clipshape.json`), and why a
//! later run may believe it.
//!
//! A record is a hint, never an authority: anyone can copy a folder with its record, or write
//! one. So a record counts only when it proves itself: it names the folder it was written in
//! (device and inode), every file by our output names alone with its size, SHA-256 and inode,
//! and carries an HMAC-SHA256 of all that under a key kept in the user's state folder
//! (`$XDG_STATE_HOME/clipshape/record.key`). A copied folder has new inodes, a record moved to
//! another folder names the wrong one, and a written one lacks the key: each is ignored, and
//! then the files under our names there are the user's.

use std::path::{Path, PathBuf};

use hmac::Mac as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

pub const RECORD: &str = ".clipshape.json";

/// Where a file or folder lives on its device: what a copy does not keep.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    /// The identity of `path` itself (a link is not followed).
    pub fn of(path: &Path) -> Option<Identity> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::symlink_metadata(path).ok()?;
            Some(Identity { dev: m.dev(), ino: m.ino() })
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Written {
    /// Relative to the folder (`00.png`, `1/shift.safetensors`).
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub id: Option<Identity>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Record {
    #[serde(default)]
    folder: Option<Identity>,
    pub files: Vec<Written>,
    /// HMAC-SHA256 (hex) of the folder and the files under the user's key.
    #[serde(default)]
    proof: String,
}

/// What an output folder's record says, once checked.
pub enum Reading {
    /// No record: a new folder, or one no run of ours wrote into.
    Absent,
    /// Written by a run of ours in this very folder, unchanged since.
    Trusted(Record),
    /// Present but not believed; the reason, for the user.
    Ignored(String),
}

impl Record {
    /// The record of the files `written` (relative paths) that now lie in `dir`.
    pub fn of_files(dir: &Path, written: &[String]) -> std::io::Result<Record> {
        let mut files = Vec::new();
        for rel in written {
            let full = dir.join(rel);
            let bytes = std::fs::read(&full)?;
            files.push(Written {
                path: rel.clone(),
                size: bytes.len() as u64,
                sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                id: Identity::of(&full),
            });
        }
        let mut record = Record { folder: Identity::of(dir), files, proof: String::new() };
        record.proof = key().map(|k| record.mac(&k)).unwrap_or_default();
        Ok(record)
    }

    /// Reads and checks `dir`'s record.
    pub fn read(dir: &Path) -> Reading {
        let path = dir.join(RECORD);
        let bytes = match std::fs::symlink_metadata(&path) {
            Err(_) => return Reading::Absent,
            Ok(m) if !m.is_file() => return Reading::Ignored(format!("{RECORD} is not a plain file")),
            Ok(_) => match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => return Reading::Ignored(format!("{RECORD} cannot be read ({e})")),
            },
        };
        let record: Record = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(_) => return Reading::Ignored(format!("{RECORD} is not a record this version reads")),
        };
        if let Some(w) = record.files.iter().find(|w| !is_output_path(&w.path)) {
            return Reading::Ignored(format!(
                "{RECORD} names {}, which is not a file a run of ours writes",
                shown(&w.path)
            ));
        }
        let proven = key().is_some_and(|k| !record.proof.is_empty() && record.verify(&k));
        if !proven || record.folder.is_none() || record.folder != Identity::of(dir) {
            return Reading::Ignored(format!(
                "{RECORD} was not written by a run of ours in this folder (copied, moved, changed, or from an \
                 older version)"
            ));
        }
        Reading::Trusted(record)
    }

    /// Whether the file `w` names in `dir` is still the one our run wrote: a plain file reached
    /// through no link, of the same inode, size and content.
    pub fn unchanged(dir: &Path, w: &Written) -> bool {
        if !inside_without_links(dir, &w.path) {
            return false;
        }
        let full = dir.join(&w.path);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_file() && m.len() == w.size && Identity::of(&full) == w.id => {
                std::fs::read(&full).is_ok_and(|b| hex::encode(sha2::Sha256::digest(&b)) == w.sha256)
            }
            _ => false,
        }
    }

    fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&(&self.folder, &self.files)).unwrap_or_default()
    }

    fn mac(&self, key: &[u8]) -> String {
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
            Ok(mut m) => {
                m.update(&self.signed_bytes());
                hex::encode(m.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }

    fn verify(&self, key: &[u8]) -> bool {
        let Ok(expected) = hex::decode(&self.proof) else { return false };
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
            Ok(mut m) => {
                m.update(&self.signed_bytes());
                m.verify_slice(&expected).is_ok()
            }
            Err(_) => false,
        }
    }
}

/// A recorded path, printed safely (it came from a file anyone may write).
fn shown(path: &str) -> String {
    crate::text::escaped(path)
}

/// Our output names (`NN.png`, `layer-NN.png`, `sheet.png`, `faces.json`, `shift.safetensors`,
/// `latent.safetensors`), directly in the folder or in a joint edit's `N/` or `together/`.
pub fn is_output_path(rel: &str) -> bool {
    match rel.split_once('/') {
        None => is_output_name(rel),
        Some((dir, name)) => is_joint_folder(dir) && is_output_name(name),
    }
}

pub fn is_output_name(name: &str) -> bool {
    let numbered = |s: &str| s.len() >= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(stem) = name.strip_suffix(".png") {
        return numbered(stem) || stem.strip_prefix("layer-").is_some_and(numbered) || stem == "sheet";
    }
    matches!(name, "faces.json" | "shift.safetensors" | "latent.safetensors")
}

pub fn is_joint_folder(name: &str) -> bool {
    name == "together" || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) && !name.starts_with('0'))
}

/// Whether `rel` under `dir` passes through no link (a recorded path is never followed out).
pub fn inside_without_links(dir: &Path, rel: &str) -> bool {
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

/// The user's record key, made on first use (32 random bytes, readable by the user alone).
/// None when there is no home to keep it in: records then prove nothing, and a later run
/// refuses files under our names rather than trusting them.
fn key() -> Option<Vec<u8>> {
    let path = key_path()?;
    if let Some(k) = read_key(&path) {
        return Some(k);
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        // Something that is no key of ours: records then prove nothing (and nothing is removed).
        return None;
    }
    let dir = path.parent()?;
    std::fs::create_dir_all(dir).ok()?;
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).ok()?;
    let mut tmp = tempfile::Builder::new().prefix(".record.key").tempfile_in(dir).ok()?;
    std::io::Write::write_all(&mut tmp, hex::encode(bytes).as_bytes()).ok()?;
    tmp.as_file().sync_all().ok()?;
    // Two first runs at once: the one that lands first wins, and both use its key.
    let _ = tmp.persist_noclobber(&path);
    read_key(&path)
}

fn read_key(path: &Path) -> Option<Vec<u8>> {
    // A key is a small regular file (a pipe or a device there would block the run or never end).
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() < 4096) {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    hex::decode(text.trim()).ok().filter(|k| k.len() >= 32)
}

fn key_path() -> Option<PathBuf> {
    let state = match std::env::var_os("XDG_STATE_HOME").filter(|s| Path::new(s).is_absolute()) {
        Some(s) => PathBuf::from(s),
        None => PathBuf::from(std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute())?).join(".local/state"),
    };
    Some(state.join("clipshape").join("record.key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_outputs() {
        for ours in ["00.png", "06.png", "123.png", "layer-03.png", "sheet.png", "faces.json", "1/shift.safetensors"] {
            assert!(is_output_path(ours), "{ours}");
        }
        for theirs in
            ["0.png", "photo.png", "00.jpg", "layer-x.png", "notes.txt", "sheet.png.bak", "sub/00.png", "1/2/00.png"]
        {
            assert!(!is_output_path(theirs), "{theirs}");
        }
    }
}
