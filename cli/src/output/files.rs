//! The named output files of `align`, `encode`, `sample` and `transfer`: each checked before
//! any work (its folder exists and takes files, it is no input of the run and no other output
//! of it, links resolved, also for files that do not exist yet), written aside, and swapped in
//! together at the end, so a failure leaves every earlier file as it was.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

/// One run's output files (see the module's documentation).
pub struct OutputFiles {
    /// (flag, where it goes, where the run writes it)
    files: Vec<(String, PathBuf, PathBuf)>,
    /// One staging folder per output folder.
    stages: Vec<PathBuf>,
}

impl OutputFiles {
    /// `outputs` as (flag, path); `inputs` as (what, path): the files the run reads.
    pub fn prepare(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<OutputFiles> {
        let mut resolved: Vec<(PathBuf, &str)> = Vec::new();
        for (flag, out) in outputs {
            let folder = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if out.file_name().is_none() {
                bail!("{flag} {}: name a file", out.display());
            }
            if !folder.is_dir() {
                bail!("{flag} {}: its folder {} does not exist", out.display(), folder.display());
            }
            match std::fs::metadata(out) {
                Ok(m) if m.is_dir() => bail!("{flag} {}: is a folder; name a file", out.display()),
                Ok(m) if !m.is_file() => bail!("{flag} {}: exists and is not a regular file", out.display()),
                _ => {}
            }
            let at = resolve(out).with_context(|| format!("{flag} {}", out.display()))?;
            for (what, input) in inputs {
                if std::fs::canonicalize(input).is_ok_and(|i| i == at) {
                    bail!(
                        "{flag} {}: is the {what} {} this command reads: choose another output",
                        out.display(),
                        input.display()
                    );
                }
            }
            if let Some((_, other)) = resolved.iter().find(|(p, _)| *p == at) {
                bail!("{flag} and {other} name the same file {}: choose two", out.display());
            }
            resolved.push((at, flag));
        }
        let mut made = OutputFiles { files: Vec::new(), stages: Vec::new() };
        // Written where the person said: a link at an output's place is replaced, never written
        // through (the file it points to stays as it is).
        for (flag, out) in outputs {
            let folder = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let stage = match made.stages.iter().find(|s| s.parent() == Some(folder.as_path())) {
                Some(s) => s.clone(),
                None => {
                    let s = super::new_stage(&folder)
                        .with_context(|| format!("{flag} {}: cannot write in {}", out.display(), folder.display()))?;
                    crate::signals::register_stage(&s);
                    made.stages.push(s.clone());
                    s
                }
            };
            let name = out.file_name().unwrap_or_default();
            made.files.push((flag.to_string(), out.to_path_buf(), stage.join(name)));
        }
        Ok(made)
    }

    /// Where the run writes output `i` (in the order given to [`OutputFiles::prepare`]); it
    /// keeps the output's file name, so its extension still says its format.
    pub fn path(&self, i: usize) -> &Path {
        &self.files[i].2
    }

    /// Moves every output into place together: an earlier file at an output's place goes aside
    /// first and is removed once all have landed; if one cannot land, everything is put back.
    /// Refused after Ctrl-C. Returns the outputs' paths as given.
    pub fn commit(self) -> Result<Vec<PathBuf>> {
        crate::signals::swapping(|| self.swap())
    }

    fn swap(&self) -> Result<Vec<PathBuf>> {
        let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
        let result = (|| -> Result<()> {
            for (i, (flag, target, staged)) in self.files.iter().enumerate() {
                if !staged.is_file() {
                    bail!("{flag} {}: the run wrote nothing there", target.display());
                }
                if std::fs::symlink_metadata(target).is_ok() {
                    let stage = staged.parent().unwrap_or(Path::new("."));
                    let aside = stage.join(format!("{}-{i}", super::ASIDE_PREFIX));
                    rename(target, &aside, &mut moves)?;
                }
                rename(staged, target, &mut moves)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            for (from, to) in moves.iter().rev() {
                let _ = std::fs::rename(to, from);
            }
            return Err(e);
        }
        Ok(self.files.iter().map(|(_, t, _)| t.clone()).collect())
    }
}

impl Drop for OutputFiles {
    fn drop(&mut self) {
        for s in &self.stages {
            let _ = std::fs::remove_dir_all(s);
            crate::signals::unregister_stage(s);
        }
    }
}

fn rename(from: &Path, to: &Path, moves: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
    std::fs::rename(from, to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    moves.push((from.to_path_buf(), to.to_path_buf()));
    Ok(())
}

/// The file `path` names, links resolved (an output that is a link to an input would replace
/// what the person sees as that input); a file that does not exist yet is its resolved folder
/// and its name.
fn resolve(path: &Path) -> Result<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().context("no file name")?;
    Ok(std::fs::canonicalize(folder).context("resolving its folder")?.join(name))
}
