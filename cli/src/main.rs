//! `clipshape`: every capability of the library from the command line, for scripting and tests.
//! Output contract (scripts rely on it): PNG files named 00.png, 01.png, … in the order of
//! `--strengths`; latents and shifts as safetensors (`wplus`; `shift` + `layer` metadata).

mod bench;
mod edit;
mod eval;
mod files;
mod generator;
mod models;
mod output;
mod photo;
mod sheet;
mod signals;
mod text;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use clipshape::context::{Context, ContextParams};
use clipshape::device::DeviceRequest;
use clipshape::models::clip::HeadCounts;
use clipshape::store::ModelStore;
use models::ModelsCommand;
use photo::PhotoOptions;

#[derive(Parser)]
#[command(name = "clipshape", version, about = "Text-driven shape editing of photos with StyleGAN2 + CLIP")]
struct Cli {
    /// auto, cpu, cuda or cuda:N
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    /// CPU threads for libtorch (0 = one per physical core)
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

/// Where CLIP comes from when MODEL is a file rather than a model set.
#[derive(Args, Clone, Default)]
struct ClipFiles {
    /// CLIP model (OpenAI TorchScript archive or a state dict)
    #[arg(long)]
    clip: Option<PathBuf>,
    /// CLIP BPE vocab (default: bpe_simple_vocab_16e6.txt.gz in the model store)
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Attention heads of CLIP's text tower, for a CLIP whose width is not a multiple of 64
    /// (state dicts do not record it; released models use width/64)
    #[arg(long)]
    clip_text_heads: Option<i64>,
    /// Attention heads of CLIP's image tower (see --clip-text-heads)
    #[arg(long)]
    clip_vision_heads: Option<i64>,
}

impl ClipFiles {
    fn heads(&self) -> HeadCounts {
        HeadCounts { text: self.clip_text_heads, vision: self.clip_vision_heads }
    }
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print a generator's facts and its editable layers
    Info(generator::InfoArgs),
    /// Render the image of a random seed
    Sample(generator::SampleArgs),
    /// Render a latent with shifts at several strengths: DIR/00.png, 01.png, …
    Render(generator::RenderArgs),
    /// Print the 77 CLIP token ids of a text
    Tokenize(generator::TokenizeArgs),
    /// CLIP similarity of a picture to texts: one line per text, cosine first, then softmax
    Score(generator::ScoreArgs),
    /// Invert a photo into W+ with e4e (MODEL: a model set or an e4e checkpoint)
    Encode(generator::EncodeArgs),
    /// List the faces in a photo, by descending score (MTCNN)
    Faces(photo::FacesArgs),
    /// Write the FFHQ-aligned crop of a face in a photo
    Align(photo::AlignArgs),
    /// Move a photo's own pixels by the displacement between two pictures of its subject's frame
    /// (BEFORE: unedited, AFTER: edited; from any shape-editing tool): OUT.png, the photo edited
    Transfer(photo::TransferArgs),
    /// Learn a shape edit from text and render it: DIR/00.png…, sheet.png, shift.safetensors
    /// (with a photo: 00.png… are the photo with the edit pasted, layer-00.png… the layers)
    Edit(edit::EditArgs),
    /// Apply a saved shift to another photo (or seed): an instant edit
    Apply(edit::ApplyArgs),
    /// Quality figures of a shift over many pictures, per strength: CLIP similarity and its gain,
    /// mean change outside the region, FID (with the Inception network); a markdown table
    Eval(eval::EvalCommand),
    /// Model files: list, fetch, verify, path, add
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Time the models: prints a markdown table (peak memory per row on Linux)
    Bench(bench::BenchArgs),
}

fn parse_list(s: &str, what: &str) -> Result<Vec<f64>> {
    let values = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.trim().parse::<f64>() {
            // Every list reaches the library as 32-bit floats, where 1e39 is infinite.
            Ok(v) if v.is_finite() && (v as f32).is_finite() => Ok(v),
            Ok(v) if v.is_finite() => bail!("{what}: `{p}` is too large (32-bit floats end at ±3.4e38)"),
            _ => bail!("{what}: `{p}` is not a finite number"),
        })
        .collect::<Result<Vec<_>>>()?;
    if values.is_empty() {
        bail!("{what}: the list is empty");
    }
    Ok(values)
}

/// A path on stdout (the output contract: one a line), its control characters escaped: a file
/// name can hold any byte but `/` and NUL.
fn emit_path(p: &Path) {
    emit(&format!("{}\n", text::escaped(&p.display().to_string())));
}

/// Writes to stdout; a closed pipe (`clipshape info … | head`) ends the program quietly.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        crate::text::say(&format!("error: writing to stdout: {e}"));
        std::process::exit(1);
    }
}

fn device(cli: &Cli) -> Result<DeviceRequest> {
    Ok(DeviceRequest::parse(&cli.device)?)
}

fn generator_context(cli: &Cli, generator: &Path) -> Result<Context> {
    let params = ContextParams { device: device(cli)?, threads: cli.threads, ..ContextParams::new(generator) };
    let ctx = signals::loading(|| Context::new(&params))?;
    signals::cancel_context(&ctx);
    Ok(ctx)
}

/// The vocab: given, else the model store's copy.
fn vocab_path(given: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(v) = given {
        return Ok(v.clone());
    }
    let store = ModelStore::from_env()?;
    let p = store.file_path("bpe_simple_vocab_16e6.txt.gz");
    if p.is_file() {
        Ok(p)
    } else {
        bail!(
            "no CLIP vocab: pass --vocab FILE, or fetch it with `clipshape models fetch clip` (it goes to {})",
            p.display()
        )
    }
}

/// MODEL is a file (an e4e checkpoint holding the generator, CLIP from --clip/--vocab) or a
/// model-set name from the manifest.
fn model_context(
    cli: &Cli,
    model: &str,
    files: &ClipFiles,
    need_clip: bool,
    photo: Option<&PhotoOptions>,
) -> Result<Context> {
    let mut params = if Path::new(model).is_file() {
        ContextParams::new(model)
    } else if Path::new(model).exists() {
        bail!("{model}: not a regular file (a folder, device or pipe): MODEL is a model file or a model-set name");
    } else if model.contains('/') || model.contains('.') {
        bail!("{model}: no such file (MODEL is a model file or a model-set name such as ffhq, car, horse)");
    } else {
        ContextParams::from_set(&ModelStore::from_env()?, model)?
    };
    params.clip_heads = files.heads();
    if let Some(c) = &files.clip {
        params.clip = Some(c.clone());
        params.vocab = Some(vocab_path(&files.vocab)?);
    } else if let Some(v) = &files.vocab {
        params.vocab = Some(v.clone());
    }
    if need_clip && params.clip.is_none() {
        bail!(
            "{model}: this needs CLIP: pass --clip FILE [--vocab FILE], or use a model set (`clipshape models list`)"
        );
    }
    if let Some(p) = photo {
        // A given detector wins; a bare model file asked to align faces uses the store's.
        if p.subject.mtcnn.is_some() || (params.face_detector.is_none() && p.align == "face") {
            params.face_detector = Some(photo::detector_files(p.subject.mtcnn.as_deref())?);
        } else if params.face_detector.is_none() && p.align == "auto" {
            // A face e4e file aligns faces too (its checkpoint says it is one): the store's
            // detector when it is there; without it, finding the face says what to give.
            params.face_detector = photo::detector_files(None).ok();
        }
    }
    params.device = device(cli)?;
    params.threads = cli.threads;
    let ctx = signals::loading(|| Context::new(&params))?;
    signals::cancel_context(&ctx);
    Ok(ctx)
}

fn run(cli: &Cli) -> Result<()> {
    // Before any work: a thread count libtorch would choke on is refused at once.
    clipshape::device::set_threads(cli.threads)?;
    match &cli.command {
        Command::Info(a) => generator::info(cli, a),
        Command::Sample(a) => generator::sample(cli, a),
        Command::Render(a) => generator::render(cli, a),
        Command::Tokenize(a) => generator::tokenize(cli, a),
        Command::Score(a) => generator::score(cli, a),
        Command::Encode(a) => generator::encode(cli, a),
        Command::Faces(a) => photo::faces(cli, a),
        Command::Align(a) => photo::align(cli, a),
        Command::Transfer(a) => photo::transfer(cli, a),
        Command::Edit(a) => edit::edit(cli, a),
        Command::Apply(a) => edit::apply(cli, a),
        Command::Eval(a) => eval::eval(cli, a),
        Command::Models(cmd) => models::run_cli(cmd.clone()),
        Command::Bench(a) => bench::bench(cli, a),
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("CLIPSHAPE_LOG", "warn")).init();
    let cli = Cli::parse();
    signals::install();
    if let Err(e) = run(&cli) {
        let cancelled = matches!(e.downcast_ref::<clipshape::Error>(), Some(clipshape::Error::Cancelled));
        if cancelled || signals::interrupted() {
            signals::remove_in_flight();
            crate::text::say("cancelled");
            std::process::exit(130);
        }
        crate::text::say(&format!("error: {}", report(&e)));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once (the library's messages already include their
/// source's text, which anyhow's `{:#}` would repeat), with any control characters a prompt
/// or a file name brought shown as escapes.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let m = cause.to_string();
        if out.contains(&m) {
            continue;
        }
        if !out.is_empty() {
            out += ": ";
        }
        out += &m;
    }
    text::escaped(&out)
}
