//! `models/manifest.toml`: files (URLs, size, SHA-256, licence) and model sets (files by role,
//! required sets, the domain's editing defaults), parsed and validated with located messages.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{io_err, Result, StoreError};
use super::{BUILTIN_MANIFEST, MANIFEST_SCHEMA, PIN_FILE_NAME};
use crate::domain::Domain;
use crate::layer::LayerId;

/// The parsed `models/manifest.toml`: files by name, sets by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    #[serde(default)]
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    pub sets: BTreeMap<String, SetEntry>,
}

/// One downloadable file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    #[serde(default)]
    pub description: Option<String>,
    /// Tried in order; may be empty (the file can only be added by hand then).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Exact size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256; `None`: pinned at first download in [`PIN_FILE_NAME`].
    #[serde(default)]
    pub sha256: Option<String>,
    /// Licence note shown before downloading.
    #[serde(default)]
    pub licence: Option<String>,
}

/// A named model set: files by role, plus the sets it requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEntry {
    #[serde(default)]
    pub description: String,
    /// Sets whose files this set needs too (every domain set requires `clip`).
    #[serde(default)]
    pub requires: Vec<String>,
    /// Role → file name: fetched by `models fetch SET`.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Role → file name: used when present, fetched by `models fetch SET:ROLE`.
    #[serde(default)]
    pub optional: BTreeMap<String, String>,
    /// Editing defaults of an image domain; `None` for helper sets such as `clip`.
    #[serde(default)]
    pub domain: Option<Domain>,
}

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.trim_start().starts_with(needle)).map(|i| i + 1)
}

fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        && ![".part", ".lock", ".bad", ".tmp"].iter().any(|s| name.ends_with(s))
        && name != PIN_FILE_NAME
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Manifest {
    /// The manifest built into the crate (`models/manifest.toml`).
    pub fn builtin() -> Result<Manifest> {
        Manifest::parse(BUILTIN_MANIFEST, "models/manifest.toml (built in)")
    }

    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = fs::read_to_string(path).map_err(io_err("read manifest", path))?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Parses and validates manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        let mut m: Manifest = toml::from_str(text).map_err(|e| StoreError::Manifest {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for f in m.files.values_mut() {
            if let Some(h) = f.sha256.as_mut() {
                *h = h.to_ascii_lowercase();
            }
        }
        let problems = m.problems(text);
        if problems.is_empty() {
            Ok(m)
        } else {
            Err(StoreError::Manifest { origin: origin.to_string(), message: problems.join("; ") })
        }
    }

    fn problems(&self, text: &str) -> Vec<String> {
        let mut p = Vec::new();
        let at = |needle: String| match line_of(text, &needle) {
            Some(l) => format!("line {l}: {needle}"),
            None => needle,
        };
        if self.schema != MANIFEST_SCHEMA {
            p.push(format!("schema {} is not supported (this build reads {MANIFEST_SCHEMA})", self.schema));
        }
        for (name, f) in &self.files {
            let here = at(format!("[files.\"{name}\"]"));
            if !valid_file_name(name) {
                p.push(format!(
                    "{here}: file name must be letters, digits and ._-+ (no path, no .part/.lock/.bad ending)"
                ));
            }
            if f.size == 0 {
                p.push(format!("{here}: size must be > 0"));
            }
            if let Some(h) = &f.sha256 {
                if !is_sha256_hex(h) {
                    p.push(format!("{here}: sha256 must be 64 hex digits, got '{h}'"));
                }
            }
            for u in &f.urls {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    p.push(format!("{here}: URL '{u}' is not http(s)"));
                }
            }
        }
        for (name, s) in &self.sets {
            let here = at(format!("[sets.{name}]"));
            if s.files.is_empty() {
                p.push(format!("{here}: a set needs at least one required file"));
            }
            for (role, file) in s.files.iter().chain(&s.optional) {
                if !self.files.contains_key(file) {
                    p.push(format!("{here}: role '{role}' names file '{file}', which [files] does not list"));
                }
            }
            for r in &s.requires {
                if r == name || !self.sets.contains_key(r) {
                    p.push(format!("{here}: requires unknown set '{r}'"));
                }
            }
            if let Ok(closure) = self.closure(name) {
                let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
                for set_name in &closure {
                    let Some(entry) = self.sets.get(set_name) else {
                        continue;
                    };
                    for role in entry.files.keys().chain(entry.optional.keys()) {
                        if let Some(other) = seen.insert(role.as_str(), set_name.as_str()) {
                            p.push(format!("{here}: role '{role}' is in both set '{other}' and set '{set_name}'"));
                        }
                    }
                }
            }
            if let Some(d) = &s.domain {
                let n = d.generator_size;
                match LayerId::all(n) {
                    None => p.push(format!("{here}: generator_size {n} is not a power of two >= 8")),
                    Some(layers) => {
                        if !d.frame.fits(n) {
                            p.push(format!("{here}: frame {:?} does not fit a {n}x{n} output", d.frame));
                        }
                        let is_conv = matches!(d.default_layer, LayerId::Conv1 | LayerId::Convs(_));
                        if !is_conv || !layers.contains(&d.default_layer) {
                            p.push(format!(
                                "{here}: default_layer '{}' is not conv1 or one of the convs.N of a {n} px generator",
                                d.default_layer
                            ));
                        }
                    }
                }
                if d.encoder_input.height == 0 || d.encoder_input.width == 0 {
                    p.push(format!("{here}: encoder_input must be non-zero"));
                }
                if !(d.default_lambda2.is_finite() && (0.0..=1.0).contains(&d.default_lambda2)) {
                    p.push(format!("{here}: default_lambda2 {} is outside 0..=1", d.default_lambda2));
                }
            }
        }
        p
    }

    /// The set and every set it requires (transitively), the set itself first.
    pub fn closure(&self, set: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let mut stack = vec![set.to_string()];
        while let Some(name) = stack.pop() {
            if out.contains(&name) {
                continue;
            }
            let entry = self.set(&name)?;
            stack.extend(entry.requires.iter().rev().cloned());
            out.push(name);
        }
        Ok(out)
    }

    /// A set by name.
    pub fn set(&self, name: &str) -> Result<&SetEntry> {
        self.sets.get(name).ok_or_else(|| StoreError::UnknownSet {
            set: name.to_string(),
            known: self.sets.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// A file by name.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.get(name)
    }
}
