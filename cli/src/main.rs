//! `clipshape`: every capability of the library from the command line, for scripting and tests.
//! Output contract (scripts rely on it): PNG files named 00.png, 01.png, … in the order of
//! `--strengths`; latents and shifts as safetensors (`wplus`; `shift` + `layer` metadata).

mod bench;
mod eval;
mod files;
mod models;
mod photo;
mod sheet;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};

use clipshape::context::photo::Paste;
use clipshape::context::{Context, ContextParams, EditRequest};
use clipshape::device::DeviceRequest;
use clipshape::edit::encode::ImageView;
use clipshape::edit::optimize::{Method, Progress};
use clipshape::edit::render::{image_file_kind, save_image, save_png};
use clipshape::edit::{self, Latent, PixelFormat, Shift};
use clipshape::models::clip::HeadCounts;
use clipshape::store::ModelStore;
use files::{load_rgba, OutputDir};
use models::ModelsCommand;
use photo::{PhotoJob, PhotoOptions};
use sheet::{strength_label, write_contact_sheet, Tile};

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

/// Where `edit` and `apply` render, and what.
#[derive(Args, Clone)]
struct EditOutput {
    /// Strengths to render, comma-separated (--strengths=-3,0,3)
    #[arg(long, default_value = "-3,-2,-1,0,1,2,3", allow_hyphen_values = true)]
    strengths: String,
    /// Output directory: 00.png… (one per strength; with a photo, the photo with the edit, and
    /// layer-00.png…), sheet.png, shift.safetensors
    #[arg(long)]
    out: PathBuf,
}

impl EditOutput {
    /// The strengths, and the output directory made ready before any work.
    fn prepare(&self) -> Result<(Vec<f64>, OutputDir)> {
        Ok((parse_list(&self.strengths, "--strengths")?, OutputDir::prepare(&self.out)?))
    }
}

#[derive(Args, Clone)]
struct EditOptions {
    /// Generator layer whose raw weight is shifted (default: the model set's, else convs.3);
    /// several, comma-separated (convs.3,convs.5), are learnt jointly into one shift; `auto`
    /// probes every convs.N at 8–64 px for 10 steps and keeps the best (CLIP gain per change
    /// outside --region, else per ‖x‖/‖W‖)
    #[arg(long)]
    layer: Option<String>,
    /// With --layer auto: shift this many of the best-ranked layers, jointly
    #[arg(long, default_value_t = 1)]
    auto_layers: usize,
    /// Another prompt for the same picture, learnt jointly into its own shift (repeatable);
    /// each is written to DIR/1/, DIR/2/, … and all together to DIR/together/
    #[arg(long = "also", value_name = "PROMPT")]
    also: Vec<String>,
    /// Weight λ4 of the term keeping the prompts' image changes apart (with --also; 0 = learn
    /// them independently)
    #[arg(long, default_value_t = 0.3)]
    separate: f64,
    /// Optimisation steps
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Adam learning rate
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Weight of the CLIP term
    #[arg(long, default_value_t = 10.0)]
    lambda1: f64,
    /// Weight of ‖x‖₂ (default: the model set's, 0.01–0.1)
    #[arg(long)]
    lambda2: Option<f64>,
    /// Weight of ‖w − w0‖² for --method latent
    #[arg(long, default_value_t = 0.008)]
    latent_l2: f64,
    /// Neutral text for a directional CLIP loss (e.g. "face")
    #[arg(long)]
    neutral: Option<String>,
    /// shift (the paper: a weight shift) or latent (StyleCLIP baseline)
    #[arg(long, default_value = "shift")]
    method: String,
    /// Strength k used while optimising (θ + k·x)
    #[arg(long, default_value_t = 1.0)]
    train_strength: f64,
    /// Std of a random initial shift, relative to the layer weight's (0 = start unedited)
    #[arg(long, default_value_t = 0.0)]
    init_scale: f64,
    /// Seed of that random initial shift
    #[arg(long, default_value_t = 0)]
    optim_seed: i64,
    /// Cut prompts longer than 77 tokens instead of refusing them
    #[arg(long)]
    truncate: bool,
    /// Optimise on the generator's output stopped at this side (px, a power of two), e.g. 256:
    /// several times faster on a CPU, an approximate objective; the shift applies at full size.
    /// Default: 256 for a photo edited with --paste warp (what its transfer needs), else the
    /// full size
    #[arg(long)]
    optimize_size: Option<i64>,
    /// Optimise at the generator's full size (the paper's objective) even for a photo edited
    /// with --paste warp
    #[arg(long, conflicts_with = "optimize_size")]
    full_size: bool,
    /// Run the generator's wide layers in bfloat16 while optimising (CPUs with avx512_bf16/AMX)
    #[arg(long)]
    bf16: bool,
    /// Weight λ3 of the preservation term: the mean squared change outside --region joins the loss
    #[arg(long, default_value_t = 0.0)]
    preserve: f64,
    /// The region the edit may change, x1,y1,x2,y2 in pixels of the generator's output (with
    /// --preserve; default: of a photo, the detected face's box or the selection mapped into
    /// the frame, else none: every change counts)
    #[arg(long)]
    region: Option<String>,
}

impl EditOptions {
    fn region(&self) -> Result<Option<[f32; 4]>> {
        self.region.as_deref().map(parse_region).transpose()
    }

    /// `--auto-layers`, checked before the models load (the request builder checks it again
    /// for every caller).
    fn check_auto_layers(&self) -> Result<()> {
        if self.auto_layers == 0 {
            bail!("--auto-layers: give 1 or more");
        }
        if self.auto_layers != 1 && !clipshape::edit::optimize::is_auto_layer(self.layer.as_deref()) {
            bail!("--auto-layers goes with --layer auto (name the layers with --layer convs.3,convs.5 otherwise)");
        }
        Ok(())
    }
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print a generator's facts and its editable layers
    Info { generator: PathBuf },
    /// Render the image of a random seed
    Sample {
        generator: PathBuf,
        #[arg(long)]
        seed: u64,
        /// 1 = no truncation; 0.7 is the usual choice for pleasant samples
        #[arg(long, default_value_t = 1.0)]
        truncation: f64,
        #[arg(long)]
        out: PathBuf,
        /// Also write the W+ latent (safetensors, `wplus`)
        #[arg(long)]
        latent_out: Option<PathBuf>,
    },
    /// Render a latent with shifts at several strengths: DIR/00.png, 01.png, …
    Render {
        generator: PathBuf,
        #[arg(long)]
        latent: PathBuf,
        /// Shift files; each is scaled by the strength
        #[arg(long)]
        shift: Vec<PathBuf>,
        /// Comma-separated, e.g. --strengths=-3,0,3
        /// Strengths to render, comma-separated (--strengths=-3,0,3)
        #[arg(long, default_value = "-3,-2,-1,0,1,2,3", allow_hyphen_values = true)]
        strengths: String,
        /// Output directory: 00.png… (one per strength), sheet.png, shift.safetensors
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the 77 CLIP token ids of a text
    Tokenize {
        #[arg(long)]
        vocab: Option<PathBuf>,
        /// Cut an over-long text instead of failing
        #[arg(long)]
        truncate: bool,
        text: String,
    },
    /// CLIP similarity of a picture to texts: one line per text, cosine first, then softmax
    Score {
        #[command(flatten)]
        files: ClipFiles,
        image: PathBuf,
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Invert a photo into W+ with e4e (MODEL: a model set or an e4e checkpoint)
    Encode {
        model: String,
        image: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Also write the reconstruction ("what the model sees") at the photo's size
        #[arg(long)]
        recon: Option<PathBuf>,
    },
    /// List the faces in a photo, by descending score (MTCNN)
    Faces {
        photo: PathBuf,
        /// Print JSON: [{"box", "score", "landmarks", "quad"}]
        #[arg(long)]
        json: bool,
        /// Directory holding MTCNN's pnet.pt, rnet.pt, onet.pt (default: the model store's)
        #[arg(long)]
        mtcnn: Option<PathBuf>,
    },
    /// Write the FFHQ-aligned crop of a face in a photo
    Align {
        photo: PathBuf,
        /// The face, by its index in `clipshape faces` (default: inside --select, else the largest)
        #[arg(long)]
        face: Option<usize>,
        /// Where the face is: x1,y1,x2,y2 in photo pixels
        #[arg(long, allow_hyphen_values = true)]
        select: Option<String>,
        /// Side of the aligned square (256: e4e's input; 1024: the FFHQ generator's frame)
        #[arg(long, default_value_t = 256)]
        size: usize,
        #[arg(long)]
        mtcnn: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Move a photo's own pixels by the displacement between two pictures of its subject's frame
    /// (BEFORE: unedited, AFTER: edited; from any shape-editing tool): OUT.png, the photo edited
    Transfer {
        photo: PathBuf,
        /// The frame unedited: for a face, its FFHQ-aligned square (any size, e.g. `clipshape align
        /// --size 1024`); for a selection, the box as `edit` maps it (the frame stretched onto it)
        before: PathBuf,
        /// The same frame edited (the same size)
        after: PathBuf,
        /// face (find the face and align it as FFHQ) or none (the selection, else the whole photo)
        #[arg(long, default_value = "face")]
        align: String,
        /// The face, by its index in `clipshape faces` (default: inside --select, else the largest)
        #[arg(long)]
        face: Option<usize>,
        /// x1,y1,x2,y2 in photo pixels: the box (--align none), or where the face is
        #[arg(long, allow_hyphen_values = true)]
        select: Option<String>,
        #[arg(long)]
        mtcnn: Option<PathBuf>,
        /// Also write the change alone: a photo-sized RGBA layer, opaque where pixels moved
        #[arg(long)]
        layer_out: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Learn a shape edit from text and render it: DIR/00.png…, sheet.png, shift.safetensors
    /// (with a photo: 00.png… are the photo with the edit pasted, layer-00.png… the layers)
    Edit {
        /// A model set (ffhq, car, horse) or an e4e checkpoint (with --clip and --vocab)
        model: String,
        /// [PHOTO] PROMPT (no photo with --seed)
        #[arg(required = true, num_args = 1..=2)]
        inputs: Vec<String>,
        /// Edit the sampled image of this seed instead of a photo
        #[arg(long)]
        seed: Option<u64>,
        /// Truncation of the sampled latent (with --seed): 1 = none
        #[arg(long, default_value_t = 0.7)]
        truncation: f64,
        #[command(flatten)]
        files: ClipFiles,
        #[command(flatten)]
        opts: EditOptions,
        #[command(flatten)]
        photo_opts: PhotoOptions,
        #[command(flatten)]
        output: EditOutput,
    },
    /// Apply a saved shift to another photo (or seed): an instant edit
    Apply {
        shift: PathBuf,
        photo: Option<PathBuf>,
        /// The model set or e4e checkpoint (default: the one recorded in the shift file)
        #[arg(long)]
        model: Option<String>,
        /// Another shift file rendered together with SHIFT (repeatable): same layer, they add
        #[arg(long = "with", value_name = "SHIFT")]
        with: Vec<PathBuf>,
        #[arg(long)]
        seed: Option<u64>,
        /// Truncation of the sampled latent (with --seed): 1 = none
        #[arg(long, default_value_t = 0.7)]
        truncation: f64,
        #[command(flatten)]
        photo_opts: PhotoOptions,
        #[command(flatten)]
        output: EditOutput,
    },
    /// Quality figures of a shift over many pictures, per strength: CLIP similarity and its gain,
    /// mean change outside the region, FID (with the Inception network); a markdown table
    Eval {
        /// The model set or e4e checkpoint (default: the one recorded in the first shift file)
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        files: ClipFiles,
        #[command(flatten)]
        args: eval::EvalArgs,
    },
    /// Model files: list, fetch, verify, path, add
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Time the models: prints a markdown table (peak memory per row on Linux)
    Bench {
        /// Batch sizes, comma-separated
        #[arg(long, default_value = "1,8")]
        batches: String,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Sides of the randomly initialised config-f generators, comma-separated (e.g. 256,1024)
        #[arg(long, default_value = "256")]
        random_size: String,
        /// Also time full-size ViT-B/32 and IR-SE50 (random weights) and edit steps
        #[arg(long)]
        full: bool,
        /// Only these row groups: tiny, generator, models, face, edit (comma-separated)
        #[arg(long)]
        only: Option<String>,
        /// Ways of running the edit step, compared in one run: fp32 (the parity path), bf16,
        /// sizeN (optimise at N px), combined with + (e.g. fp32,size256+bf16)
        #[arg(long, default_value = "fp32")]
        variants: String,
        /// Directory of the tiny golden models (default: tests/fixtures/golden in a checkout)
        #[arg(long)]
        golden: Option<PathBuf>,
        /// Also run the reference PyTorch loop's edit step (benches/reference_loop.py, run by
        /// $CLIPSHAPE_PYTHON or python3 with torch) at each size and batch, and print the
        /// speed-up of each variant over it
        #[arg(long)]
        reference: bool,
        /// Also time a complete FFHQ edit (load, encode, steps, render 7) per variant, from
        /// full-size random files in the official formats, made in DIR when missing (1.5 GB)
        #[arg(long, value_name = "DIR")]
        full_edit: Option<PathBuf>,
        /// Optimisation steps of --full-edit
        #[arg(long, default_value_t = 100)]
        full_edit_steps: usize,
    },
}

/// `--region x1,y1,x2,y2`.
fn parse_region(text: &str) -> Result<[f32; 4]> {
    match parse_list(text, "--region")?.as_slice() {
        [a, b, c, d] => Ok([*a as f32, *b as f32, *c as f32, *d as f32]),
        _ => bail!("--region: give x1,y1,x2,y2 (four numbers), got `{text}`"),
    }
}

/// `--model`, else the model the shift file records.
fn shift_model(given: &Option<String>, shift: &Path) -> Result<String> {
    let recorded = clipshape::checkpoint::Checkpoint::open(shift)?.metadata().get("model").cloned();
    given
        .clone()
        .or(recorded)
        .with_context(|| format!("{}: the shift does not record its model; pass --model SET_OR_FILE", shift.display()))
}

fn parse_list(s: &str, what: &str) -> Result<Vec<f64>> {
    let values = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => bail!("{what}: `{p}` is not a finite number"),
        })
        .collect::<Result<Vec<_>>>()?;
    if values.is_empty() {
        bail!("{what}: the list is empty");
    }
    Ok(values)
}

/// Writes to stdout; a closed pipe (`clipshape info … | head`) ends the program quietly.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

fn device(cli: &Cli) -> Result<DeviceRequest> {
    Ok(DeviceRequest::parse(&cli.device)?)
}

fn generator_context(cli: &Cli, generator: &Path) -> Result<Context> {
    let params = ContextParams { device: device(cli)?, threads: cli.threads, ..ContextParams::new(generator) };
    Ok(Context::new(&params)?)
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
        if p.mtcnn.is_some() || (params.face_detector.is_none() && p.align == "face") {
            params.face_detector = Some(photo::detector_files(p.mtcnn.as_deref())?);
        }
    }
    params.device = device(cli)?;
    params.threads = cli.threads;
    Ok(Context::new(&params)?)
}

fn rgb_of(images: &tch::Tensor) -> Result<Vec<Vec<u8>>> {
    Ok(edit::to_rgba8(images, PixelFormat::Rgb8)?)
}

fn write_images(images: &tch::Tensor, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (_, _, h, w) = images.size4()?;
    let mut paths = Vec::new();
    for (i, px) in rgb_of(images)?.iter().enumerate() {
        let path = dir.join(format!("{i:02}.png"));
        save_png(&path, px, w as u32, h as u32, PixelFormat::Rgb8)?;
        paths.push(path);
    }
    Ok(paths)
}

/// The picture to edit: a photo (its face or box encoded) or a seed (sampled). Returns the
/// latent and the input as RGB8 for the contact sheet.
fn input_latent(
    ctx: &Context,
    job: Option<&PhotoJob>,
    seed: Option<u64>,
    truncation: f64,
) -> Result<(Latent, Vec<u8>, u32, u32)> {
    match (job, seed) {
        (Some(job), None) => {
            let latent = job.encode(ctx)?;
            Ok((latent, job.view()?.rgb8_composited(), job.width, job.height))
        }
        (None, Some(seed)) => {
            let mean = if truncation < 1.0 { Some(ctx.mean_latent()?) } else { None };
            let latent = Latent::from_seed(&ctx.generator, seed as i64, truncation, mean)?;
            let img = ctx.to_frame(&edit::render(&ctx.generator, &latent, &[], &[0.0], 1)?, None)?;
            let (_, _, h, w) = img.size4()?;
            Ok((latent, rgb_of(&img)?.remove(0), w as u32, h as u32))
        }
        (Some(_), Some(_)) => bail!("give a photo or --seed, not both"),
        (None, None) => bail!("give a photo to edit, or --seed N to edit a sampled image"),
    }
}

/// Renders the strengths at the frame and writes 00.png… (with a photo pasted in a mode other
/// than `frame`: the photo with the edit, and layer-00.png…), and the labelled sheet.
fn write_edit(
    ctx: &Context,
    latent: &Latent,
    shifts: &[&Shift],
    strengths: &[f64],
    input: (&[u8], u32, u32),
    job: Option<&PhotoJob>,
    out: &OutputDir,
) -> Result<()> {
    let refs: Vec<(&Shift, f64)> = shifts.iter().map(|&s| (s, 1.0)).collect();
    let (images, recon, written) = match job {
        Some(job) if job.paste == Paste::Warp => {
            // Renders at the flow's side only: the photo's own pixels are what the user gets.
            let t = ctx.transfer(&job.view()?, &job.subject, latent, &refs, strengths)?;
            out.clear_previous()?;
            let layers = strengths.iter().map(|&k| t.transfer.layer(k)).collect::<clipshape::Result<Vec<_>>>()?;
            let blended =
                strengths.iter().map(|&k| t.transfer.blended_fraction(k)).collect::<clipshape::Result<Vec<_>>>()?;
            let most = blended.iter().copied().fold(0.0, f64::max);
            eprintln!(
                "moved the photo's own pixels; the render was blended in where the displacement could not \
                 explain it: {:.1} % of the {} at most",
                100.0 * most,
                if job.faces.is_some() { "face's square" } else { "selection" }
            );
            let written = job.write_layers(&layers, out)?;
            (t.renders, t.render_0, written)
        }
        _ => {
            let images = ctx.to_frame(
                &edit::render(&ctx.generator, latent, &refs, strengths, edit::render::DEFAULT_MAX_BATCH)?,
                None,
            )?;
            let recon = ctx.to_frame(&edit::render(&ctx.generator, latent, &[], &[0.0], 1)?, None)?;
            out.clear_previous()?;
            let written = match job {
                Some(job) if job.paste != Paste::Frame => job.write(ctx, &images, &recon, out)?,
                _ => write_images(&images, &out.path)?,
            };
            (images, recon, written)
        }
    };
    for p in written {
        emit(&format!("{}\n", p.display()));
    }
    let (_, _, h, w) = images.size4()?;
    let rgb = rgb_of(&images)?;
    let recon_rgb = rgb_of(&recon)?.remove(0);
    let mut tiles = vec![
        Tile { rgb: input.0, width: input.1 as usize, height: input.2 as usize, label: "input".into() },
        Tile { rgb: &recon_rgb, width: w as usize, height: h as usize, label: "recon".into() },
    ];
    for (px, k) in rgb.iter().zip(strengths) {
        tiles.push(Tile { rgb: px, width: w as usize, height: h as usize, label: strength_label(*k) });
    }
    let sheet = out.join("sheet.png");
    write_contact_sheet(&sheet, &tiles, (h as usize).min(256))?;
    emit(&format!("{}\n", sheet.display()));
    Ok(())
}

fn progress_bar(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(total as u64), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn run(cli: &Cli) -> Result<()> {
    // Before any work: a thread count libtorch would choke on is refused at once.
    clipshape::device::set_threads(cli.threads)?;
    match &cli.command {
        Command::Info { generator } => {
            let ctx = generator_context(cli, generator)?;
            let g = &ctx.generator;
            let c = &g.config;
            let ch: Vec<String> = c.channels.iter().map(|(r, ch)| format!("{r}:{ch}")).collect();
            let mut text = format!(
                "file: {}\nresolution: {}\nstyle_dim: {}\nn_mlp: {}\nn_latent: {}\nnoise_inputs: {}\nchannels: {}\ndevice: {}\n",
                generator.display(),
                c.size,
                c.style_dim,
                c.n_mlp,
                g.n_latent(),
                c.num_layers(),
                ch.join(" "),
                clipshape::device::describe(ctx.device)
            );
            if let Some(e) = &ctx.encoder {
                text += &format!(
                    "encoder: e4e, {} styles, input {}x{} (HxW)\n",
                    e.net.n_styles(),
                    e.input_size.height,
                    e.input_size.width
                );
            }
            let f = ctx.frame;
            text += &format!("frame: {}x{} at ({}, {})\n\n", f.width, f.height, f.left, f.top);
            text += &format!("{:<12} {:>6} {:>22} {:>7}\n", "layer", "res", "weight shape", "W+ idx");
            for l in g.layers() {
                let shape = format!("{:?}", l.weight_shape);
                text += &format!("{:<12} {:>6} {:>22} {:>7}\n", l.id.to_string(), l.resolution, shape, l.wplus_index);
            }
            emit(&text);
        }
        Command::Sample { generator, seed, truncation, out, latent_out } => {
            image_file_kind(out)?;
            let ctx = generator_context(cli, generator)?;
            let mean = if *truncation < 1.0 { Some(ctx.mean_latent()?) } else { None };
            let latent = Latent::from_seed(&ctx.generator, *seed as i64, *truncation, mean)?;
            let images = edit::render(&ctx.generator, &latent, &[], &[0.0], 1)?;
            let (_, _, h, w) = images.size4()?;
            save_image(out, &rgb_of(&images)?[0], w as u32, h as u32, PixelFormat::Rgb8)?;
            if let Some(p) = latent_out {
                latent.save(p)?;
            }
            emit(&format!("{}\n", out.display()));
        }
        Command::Render { generator, latent, shift, strengths, out } => {
            let strengths = parse_list(strengths, "--strengths")?;
            let out = OutputDir::prepare(out)?;
            let ctx = generator_context(cli, generator)?;
            let latent = Latent::load(&ctx.generator, latent)?;
            let shifts = shift.iter().map(|p| Shift::load(&ctx.generator, p)).collect::<clipshape::Result<Vec<_>>>()?;
            let refs: Vec<(&Shift, f64)> = shifts.iter().map(|s| (s, 1.0)).collect();
            let images = edit::render(&ctx.generator, &latent, &refs, &strengths, edit::render::DEFAULT_MAX_BATCH)?;
            out.clear_previous()?;
            for p in write_images(&images, &out.path)? {
                emit(&format!("{}\n", p.display()));
            }
        }
        Command::Tokenize { vocab, truncate, text } => {
            let tok = clipshape::tokenizer::Tokenizer::from_gz_file(vocab_path(vocab)?)?;
            // As the reference tokenizes (empty text gives [start, end]); edits refuse empty prompts.
            let ids = tok.tokenize_reference(text, *truncate).map_err(clipshape::Error::from)?;
            let line: Vec<String> = ids.iter().map(i64::to_string).collect();
            emit(&format!("{}\n", line.join(" ")));
        }
        Command::Score { files, image, texts } => {
            let clip = files.clip.clone().context("--clip FILE is required")?;
            let dev = device(cli)?.resolve()?;
            clipshape::device::set_threads(cli.threads)?;
            let guide = clipshape::edit::guide::ClipGuide::load(&clip, &vocab_path(&files.vocab)?, files.heads(), dev)?;
            let (rgba, w, h) = load_rgba(image)?;
            let view = ImageView::packed(&rgba, w, h, PixelFormat::Rgba8)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let cos: Vec<f64> = guide.score(&view, &refs)?.into_iter().map(f64::from).collect();
            // Softmax over the prompts with CLIP's logit scale, like a zero-shot classifier.
            let scale = guide.clip.logit_scale()?;
            let max = cos.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = cos.iter().map(|c| ((c - max) * scale).exp()).collect();
            let z: f64 = e.iter().sum();
            let mut text = String::new();
            for ((c, p), t) in cos.iter().zip(&e).zip(texts) {
                text += &format!("{c:.6}\t{:.4}\t{t}\n", p / z);
            }
            emit(&text);
        }
        Command::Encode { model, image, out, recon } => {
            if let Some(r) = recon {
                image_file_kind(r)?;
            }
            let ctx = model_context(cli, model, &ClipFiles::default(), false, None)?;
            let (rgba, w, h) = load_rgba(image)?;
            let view = ImageView::packed(&rgba, w, h, PixelFormat::Rgba8)?;
            let latent = ctx.encode(&view)?;
            latent.save(out)?;
            emit(&format!("{}\n", out.display()));
            if let Some(r) = recon {
                let img = ctx.to_frame(&edit::render(&ctx.generator, &latent, &[], &[0.0], 1)?, Some((w, h)))?;
                save_image(r, &rgb_of(&img)?[0], w, h, PixelFormat::Rgb8)?;
                emit(&format!("{}\n", r.display()));
            }
        }
        Command::Edit { model, inputs, seed, truncation, files, opts, photo_opts, output } => {
            let (strengths, out) = output.prepare()?;
            let (photo, prompt) = match (inputs.as_slice(), seed) {
                ([prompt], Some(_)) => (None, prompt.clone()),
                ([photo, prompt], None) => (Some(PathBuf::from(photo)), prompt.clone()),
                (_, Some(_)) => bail!("with --seed give only the PROMPT (no photo)"),
                _ => bail!("give PHOTO PROMPT, or PROMPT with --seed N"),
            };
            let method = match opts.method.as_str() {
                "shift" => Method::Shift,
                "latent" => Method::Latent,
                m => bail!("--method: `{m}` is not shift or latent"),
            };
            let prompts: Vec<String> = std::iter::once(prompt).chain(opts.also.iter().cloned()).collect();
            // Several prompts: DIR/1/, DIR/2/, … and DIR/together/, each ready before any work.
            let joint = prompts.len() > 1;
            let dirs = if joint {
                let mut d = (1..=prompts.len())
                    .map(|i| OutputDir::prepare(&out.join(&i.to_string())))
                    .collect::<Result<Vec<_>>>()?;
                d.push(OutputDir::prepare(&out.join("together"))?);
                d
            } else {
                vec![OutputDir::prepare(&out.path)?]
            };
            opts.check_auto_layers()?;
            if !(opts.separate.is_finite() && opts.separate >= 0.0) {
                bail!("--separate: {} must be a finite number ≥ 0", opts.separate);
            }
            let mut ctx = model_context(cli, model, files, true, photo.as_ref().map(|_| photo_opts))?;
            let job = photo.as_deref().map(|p| PhotoJob::prepare(&ctx, p, photo_opts)).transpose()?;
            let (latent, input_rgb, iw, ih) = input_latent(&ctx, job.as_ref(), *seed, *truncation)?;
            // The encoder (1.1 GB for FFHQ) has done its part; the steps need the memory.
            ctx.release_encoder();
            let request = EditRequest {
                prompts: prompts.clone(),
                neutral: opts.neutral.clone(),
                layer: opts.layer.clone(),
                auto_layers: opts.auto_layers,
                method,
                lambda1: opts.lambda1,
                lambda2: opts.lambda2,
                latent_l2: opts.latent_l2,
                steps: opts.steps,
                lr: opts.lr,
                strength: opts.train_strength,
                seed: opts.optim_seed,
                init_scale: opts.init_scale,
                truncate: opts.truncate,
                progress_every: 1,
                optimize_size: opts.optimize_size,
                warp: job.as_ref().is_some_and(|j| j.paste == Paste::Warp),
                full_size: opts.full_size,
                bf16: opts.bf16,
                lambda3: opts.preserve,
                region: opts.region()?,
                // --separate's default is for joint runs (--also) only.
                lambda4: if prompts.len() > 1 { opts.separate } else { 0.0 },
            };
            // Of a photo, the face (or the selection) is what the edit may change.
            let params = ctx.optimize_params(&request, job.as_ref().map(|j| &j.subject))?;
            let bar = progress_bar(params.steps);
            let mut on_step = |p: &Progress| {
                bar.set_position(p.step as u64);
                bar.set_message(format!("loss {:.4}  clip {:.4}", p.loss, p.clip_sim));
                true
            };
            let mut shifts = ctx.optimize(&[&latent], &params, &mut on_step)?;
            bar.finish_and_clear();
            // What an earlier run with another number of prompts wrote here goes, so DIR never
            // mixes two runs: its top-level pictures before a joint run, DIR/N and DIR/together
            // beyond this run's.
            if joint {
                out.clear_previous()?;
            }
            out.clear_joint_runs(if joint { prompts.len() } else { 0 })?;
            for s in &mut shifts {
                if let Some(p) = &photo {
                    s.meta.insert("source".into(), p.display().to_string());
                }
            }
            let input = (input_rgb.as_slice(), iw, ih);
            for (shift, dir) in shifts.iter().zip(&dirs) {
                write_edit(&ctx, &latent, &[shift], &strengths, input, job.as_ref(), dir)?;
                let shift_path = dir.join("shift.safetensors");
                shift.save(&shift_path)?;
                latent.save(&dir.join("latent.safetensors"))?;
                emit(&format!("{}\n", shift_path.display()));
                eprintln!(
                    "\"{}\" on {}: CLIP similarity {} → {}",
                    shift.meta.get("prompt").map(String::as_str).unwrap_or("?"),
                    shift.layer_names(),
                    shift.meta.get("clip_sim_before").map(String::as_str).unwrap_or("?"),
                    shift.meta.get("clip_sim_after").map(String::as_str).unwrap_or("?")
                );
            }
            if let (true, Some(together)) = (shifts.len() > 1, dirs.get(shifts.len())) {
                let all: Vec<&Shift> = shifts.iter().collect();
                write_edit(&ctx, &latent, &all, &strengths, input, job.as_ref(), together)?;
            }
        }
        Command::Apply { shift, photo, model, with, seed, truncation, photo_opts, output } => {
            let (strengths, out) = output.prepare()?;
            let model = shift_model(model, shift)?;
            let ctx = model_context(cli, &model, &ClipFiles::default(), false, photo.as_ref().map(|_| photo_opts))?;
            let shifts = std::iter::once(shift)
                .chain(with)
                .map(|p| Shift::load(&ctx.generator, p))
                .collect::<clipshape::Result<Vec<_>>>()?;
            let job = photo.as_deref().map(|p| PhotoJob::prepare(&ctx, p, photo_opts)).transpose()?;
            let (latent, input_rgb, iw, ih) = input_latent(&ctx, job.as_ref(), *seed, *truncation)?;
            let refs: Vec<&Shift> = shifts.iter().collect();
            write_edit(&ctx, &latent, &refs, &strengths, (&input_rgb, iw, ih), job.as_ref(), &out)?;
        }
        Command::Eval { model, files, args } => {
            let strengths = eval::strengths(args)?;
            let model = shift_model(model, &args.shifts[0])?;
            let ctx = model_context(cli, &model, files, true, None)?;
            emit(&eval::run(&ctx, args, strengths)?);
        }
        Command::Faces { photo, json, mtcnn } => {
            emit(&photo::faces_command(photo, mtcnn.as_deref(), *json, device(cli)?.resolve()?)?);
        }
        Command::Align { photo, face, select, size, mtcnn, out } => {
            image_file_kind(out)?;
            let dev = device(cli)?.resolve()?;
            photo::align_command(photo, mtcnn.as_deref(), *face, select.as_deref(), *size, out, dev)?;
            emit(&format!("{}\n", out.display()));
        }
        Command::Transfer { photo, before, after, align, face, select, mtcnn, layer_out, out } => {
            let dev = device(cli)?.resolve()?;
            let args = photo::TransferArgs {
                photo,
                before,
                after,
                align,
                face: *face,
                select: select.as_deref(),
                mtcnn: mtcnn.as_deref(),
                layer_out: layer_out.as_deref(),
                out,
            };
            for p in photo::transfer_command(&args, dev)? {
                emit(&format!("{}\n", p.display()));
            }
        }
        Command::Models(cmd) => models::run_cli(cmd.clone())?,
        Command::Bench {
            batches,
            iters,
            random_size,
            full,
            only,
            variants,
            golden,
            reference,
            full_edit,
            full_edit_steps,
        } => {
            let batches = parse_list(batches, "--batches")?.into_iter().map(|b| b as i64).collect::<Vec<_>>();
            if batches.iter().any(|&b| b < 1) {
                bail!("--batches: every batch size must be at least 1");
            }
            let random_sizes =
                parse_list(random_size, "--random-size")?.into_iter().map(|s| s as i64).collect::<Vec<_>>();
            if let Some(s) = random_sizes.iter().find(|&&s| s < 8 || !(s as u64).is_power_of_two()) {
                bail!("--random-size: {s} is not a power of two ≥ 8");
            }
            let parse_each = |list: &str, flag: &str| -> Result<Vec<String>> {
                let items: Vec<String> =
                    list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect();
                if items.is_empty() {
                    bail!("{flag}: give at least one value");
                }
                Ok(items)
            };
            let only = match only {
                Some(list) => Some(
                    parse_each(list, "--only")?
                        .iter()
                        .map(|g| g.parse::<bench::Group>().map_err(|e| anyhow!("--only: {e}")))
                        .collect::<Result<Vec<_>>>()?,
                ),
                None => None,
            };
            let variants = parse_each(variants, "--variants")?
                .iter()
                .map(|v| v.parse::<bench::Variant>().map_err(|e| anyhow!("--variants: {e}")))
                .collect::<Result<Vec<_>>>()?;
            let python = std::env::var("CLIPSHAPE_PYTHON").unwrap_or_else(|_| "python3".into());
            let benches = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches");
            let reference = reference.then(|| bench::Reference {
                python: python.clone(),
                script: std::env::var_os("CLIPSHAPE_REFERENCE_SCRIPT")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| benches.join("reference_loop.py")),
            });
            if *full_edit_steps == 0 {
                bail!("--full-edit-steps must be at least 1");
            }
            let full_edit = full_edit.as_ref().map(|dir| bench::FullEdit {
                dir: dir.clone(),
                steps: *full_edit_steps,
                python: python.clone(),
                script: benches.join("make_full_models.py"),
            });
            if reference.is_some() && !*full {
                bail!("--reference compares edit steps, which need --full (ViT-B/32)");
            }
            let device = device(cli)?.resolve()?;
            clipshape::device::set_threads(cli.threads)?;
            let opts = bench::BenchOptions {
                device,
                iters: *iters,
                batches,
                golden_dir: Some(golden.clone().unwrap_or_else(bench::golden_dir)),
                random_sizes,
                full: *full,
                only,
                variants,
                reference,
                full_edit,
            };
            let rows = bench::run(&opts)?;
            let mut table = bench::table(&rows);
            if opts.reference.is_some() {
                table += "\n";
                table += &bench::ratios(&rows, &opts.random_sizes);
            }
            emit(&table);
        }
    }
    Ok(())
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("CLIPSHAPE_LOG", "warn")).init();
    let cli = Cli::parse();
    files::remove_temps_on_interrupt();
    if let Err(e) = run(&cli) {
        eprintln!("error: {}", report(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once: the library's messages already include their
/// source's text, which anyhow's `{:#}` would repeat.
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
    out
}
