//! `clipshape models …`: list, fetch (with a terminal progress bar), verify, path and add, on the
//! library's [`ModelStore`].

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::PathBuf;

use clipshape::store::*;

/// `clipshape models …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModelsCommand {
    /// List model sets, their files, and whether each is present
    List,
    /// Download model sets (SET, SET:ROLE for an optional file, or a file name)
    Fetch {
        /// What to fetch, e.g. `ffhq` or `ffhq:generator`
        sets: Vec<String>,
    },
    /// Check sizes and SHA-256 of the files present (every set when none is named)
    Verify { set: Option<String> },
    /// Print the directory holding a set's files (fails, listing them, when files are missing)
    Path { set: String },
    /// Register a file you already have: check it, then copy it into the store
    Add {
        set: String,
        file: PathBuf,
        /// Symlink instead of copying
        #[arg(long)]
        link: bool,
    },
}

/// Runs a `models` subcommand against the store from the environment (see [`ModelStore::from_env`]).
pub fn run_cli(cmd: ModelsCommand) -> anyhow::Result<()> {
    let store = ModelStore::from_env()?;
    let stdout = io::stdout();
    run_cli_with(&store, cmd, &mut stdout.lock(), &mut TerminalProgress::new())
}

/// [`run_cli`] with an explicit store, output and progress (tests, embedders).
pub fn run_cli_with(
    store: &ModelStore,
    cmd: ModelsCommand,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match cmd {
        ModelsCommand::List => {
            let mut rows = vec![["SET".to_string(), "FILE".into(), "STATE".into(), "SIZE".into(), "PATH".into()]];
            for s in store.list() {
                for f in &s.files {
                    let state = match (&f.state, f.required) {
                        (FileState::Present { .. }, _) => "present".to_string(),
                        (FileState::Missing { partial }, req) if *partial > 0 => {
                            format!("{} ({} partial)", if req { "missing" } else { "optional" }, human_size(*partial))
                        }
                        (FileState::Missing { .. }, true) => "missing".into(),
                        (FileState::Missing { .. }, false) => "optional, absent".into(),
                        (FileState::WrongSize { size }, _) => format!("wrong size ({size} B)"),
                    };
                    let path = match &f.link_target {
                        Some(t) => format!("{} -> {}", f.path.display(), t.display()),
                        None => f.path.display().to_string(),
                    };
                    rows.push([
                        format!("{}{}", s.set, if s.complete { "" } else { "*" }),
                        f.file.clone(),
                        state,
                        human_size(f.expected_size),
                        path,
                    ]);
                }
            }
            let widths: Vec<usize> =
                (0..4).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
            for r in &rows {
                writeln!(
                    out,
                    "{:w0$}  {:w1$}  {:w2$}  {:>w3$}  {}",
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2],
                    w3 = widths[3]
                )?;
            }
            writeln!(out, "(* = set incomplete; directory {})", store.root().display())?;
        }
        ModelsCommand::Fetch { sets } => {
            if sets.is_empty() {
                anyhow::bail!(
                    "name what to fetch: {} (SET:ROLE for an optional file)",
                    store.manifest().sets.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            for target in &sets {
                let plan = store.plan(target)?;
                if !plan.is_empty() {
                    let total: u64 = plan.iter().map(|p| p.size - p.partial.min(p.size)).sum();
                    writeln!(
                        out,
                        "{target}: {} file(s), {} to download into {}",
                        plan.len(),
                        human_size(total),
                        store.root().display()
                    )?;
                    for p in &plan {
                        writeln!(
                            out,
                            "  {} ({}): {}",
                            p.file,
                            human_size(p.size),
                            p.licence.as_deref().unwrap_or("no licence note")
                        )?;
                    }
                }
                let report = store.fetch(target, progress).map_err(|e| {
                    // The cause first, then what is still missing and where it goes.
                    let set = target.split(':').next().unwrap_or(target);
                    let hint = store.after_failed_fetch_message(set).ok().flatten();
                    match hint {
                        Some(h) if matches!(e, StoreError::Transfer { .. } | StoreError::HttpStatus { .. }) => {
                            anyhow::anyhow!("could not fetch {target}: {e}\n{h}")
                        }
                        _ => anyhow::Error::new(e).context(format!("fetching {target} failed")),
                    }
                })?;
                for f in &report.files {
                    match &f.action {
                        FetchAction::AlreadyPresent => writeln!(out, "{}: present", f.file)?,
                        FetchAction::Downloaded { bytes, resumed_from, url } => writeln!(
                            out,
                            "{}: downloaded {}{} from {url}, SHA-256 ok",
                            f.file,
                            human_size(*bytes),
                            if *resumed_from > 0 {
                                format!(" (resumed at {})", human_size(*resumed_from))
                            } else {
                                String::new()
                            }
                        )?,
                    }
                    if let Some(h) = &f.pinned {
                        writeln!(
                            out,
                            "{}: no SHA-256 in the manifest; pinned {h} in {}",
                            f.file,
                            store.root().join(PIN_FILE_NAME).display()
                        )?;
                    }
                }
            }
        }
        ModelsCommand::Verify { set } => {
            let sets: Vec<String> = match set {
                Some(s) => vec![s],
                None => store.manifest().sets.keys().cloned().collect(),
            };
            let mut bad = 0usize;
            let mut seen = BTreeSet::new();
            for s in &sets {
                for c in store.verify(s, progress)? {
                    if !seen.insert(c.file.clone()) {
                        continue;
                    }
                    let line = match &c.result {
                        CheckResult::Ok { .. } => "ok".to_string(),
                        CheckResult::Pinned { sha256 } => {
                            format!("ok, SHA-256 {sha256} pinned in {PIN_FILE_NAME}")
                        }
                        CheckResult::Missing => "missing".to_string(),
                        CheckResult::WrongSize { expected, got } => {
                            bad += 1;
                            format!("WRONG SIZE: expected {expected} bytes, got {got}")
                        }
                        CheckResult::HashMismatch { expected, got, moved_to } => {
                            bad += 1;
                            format!("BAD SHA-256: expected {expected}, got {got}{}", moved_note(moved_to))
                        }
                    };
                    writeln!(out, "{:8} {:32} {line}", c.set, c.file)?;
                }
            }
            if bad > 0 {
                anyhow::bail!("{bad} file(s) failed verification; `clipshape models fetch SET` downloads them again");
            }
        }
        ModelsCommand::Path { set } => {
            let paths = store.set_paths(&set)?;
            writeln!(out, "{}", paths.dir.display())?;
        }
        ModelsCommand::Add { set, file, link } => {
            let r = store
                .add(&set, None, &file, link, progress)
                .with_context(|| format!("adding {} to set {set}", file.display()))?;
            writeln!(
                out,
                "{}: {} {} ({})",
                r.file,
                if r.linked { "linked at" } else { "copied to" },
                r.path.display(),
                r.licence.as_deref().unwrap_or("no licence note")
            )?;
            if let Some(h) = &r.pinned {
                writeln!(
                    out,
                    "{}: no SHA-256 in the manifest; pinned {h} in {}",
                    r.file,
                    store.root().join(PIN_FILE_NAME).display()
                )?;
            }
        }
    }
    Ok(())
}

/// A terminal progress bar (indicatif, on stderr): bytes, MB/s and ETA. Hidden when stderr is
/// not a terminal; notes are then printed as plain lines.
#[derive(Default)]
pub struct TerminalProgress {
    bar: Option<indicatif::ProgressBar>,
}

impl TerminalProgress {
    pub fn new() -> Self {
        TerminalProgress { bar: None }
    }
}

impl Progress for TerminalProgress {
    fn start(&mut self, file: &str, total: u64, done: u64) {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {decimal_bytes_per_sec} ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(file.to_string());
        bar.set_position(done);
        bar.reset_eta();
        bar.reset_elapsed();
        self.bar = Some(bar);
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
    fn finish(&mut self, _file: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
    fn cancelled(&self) -> bool {
        crate::signals::interrupted()
    }
    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(message),
            _ => crate::text::say(message),
        }
    }
}
