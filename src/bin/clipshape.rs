//! `clipshape`: every capability of the library from the command line, for scripting and tests.
//! Output contract (scripts rely on it): PNG files named 00.png, 01.png, … in the order of
//! `--strengths`; latents and shifts as safetensors (`wplus`; `shift` + `layer` metadata).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use clipshape::context::{Context, ContextParams};
use clipshape::device::DeviceRequest;
use clipshape::edit::{self, render::save_png, Latent, PixelFormat, Shift};

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
        #[arg(long, default_value = "-3,-2,-1,0,1,2,3", allow_hyphen_values = true)]
        strengths: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Time the models: prints a markdown table
    Bench {
        /// Batch sizes, comma-separated
        #[arg(long, default_value = "1,8")]
        batches: String,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Side of the randomly initialised config-f generator (0 = skip)
        #[arg(long, default_value_t = 256)]
        random_size: i64,
        /// The tiny golden generator (default: ../shared/golden/stylegan2.pt in a checkout)
        #[arg(long)]
        golden: Option<PathBuf>,
    },
}

fn parse_list(s: &str, what: &str) -> Result<Vec<f64>> {
    let values = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse::<f64>().with_context(|| format!("{what}: `{p}` is not a number")))
        .collect::<Result<Vec<_>>>()?;
    if values.is_empty() {
        bail!("{what}: the list is empty");
    }
    Ok(values)
}

fn context(cli: &Cli, generator: &Path) -> Result<Context> {
    let params = ContextParams {
        generator: generator.to_path_buf(),
        device: DeviceRequest::parse(&cli.device)?,
        threads: cli.threads,
    };
    Ok(Context::new(&params)?)
}

fn write_images(images: &tch::Tensor, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (_, _, h, w) = images.size4()?;
    let pixels = edit::to_rgba8(images, PixelFormat::Rgb8)?;
    let mut paths = Vec::new();
    for (i, px) in pixels.iter().enumerate() {
        let path = dir.join(format!("{i:02}.png"));
        save_png(&path, px, w as u32, h as u32, PixelFormat::Rgb8)?;
        paths.push(path);
    }
    Ok(paths)
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

fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Info { generator } => {
            let ctx = context(cli, generator)?;
            let g = &ctx.generator;
            let c = &g.config;
            let ch: Vec<String> = c.channels.iter().map(|(r, ch)| format!("{r}:{ch}")).collect();
            let mut text = format!(
                "file: {}\nresolution: {}\nstyle_dim: {}\nn_mlp: {}\nn_latent: {}\nnoise_inputs: {}\nchannels: {}\ndevice: {}\n\n",
                generator.display(),
                c.size,
                c.style_dim,
                c.n_mlp,
                g.n_latent(),
                c.num_layers(),
                ch.join(" "),
                clipshape::device::describe(ctx.device)
            );
            text += &format!("{:<12} {:>6} {:>22} {:>7}\n", "layer", "res", "weight shape", "W+ idx");
            for l in g.layers() {
                let shape = format!("{:?}", l.weight_shape);
                text += &format!("{:<12} {:>6} {:>22} {:>7}\n", l.id.to_string(), l.resolution, shape, l.wplus_index);
            }
            emit(&text);
        }
        Command::Sample { generator, seed, truncation, out, latent_out } => {
            let ctx = context(cli, generator)?;
            let mean = if *truncation < 1.0 { Some(ctx.mean_latent()?) } else { None };
            let latent = Latent::from_seed(&ctx.generator, *seed as i64, *truncation, mean)?;
            let images = edit::render(&ctx.generator, &latent, &[], &[0.0], 1)?;
            let (_, _, h, w) = images.size4()?;
            let px = edit::to_rgba8(&images, PixelFormat::Rgb8)?;
            save_png(out, &px[0], w as u32, h as u32, PixelFormat::Rgb8)?;
            if let Some(p) = latent_out {
                latent.save(p)?;
            }
            emit(&format!("{}\n", out.display()));
        }
        Command::Render { generator, latent, shift, strengths, out } => {
            let strengths = parse_list(strengths, "--strengths")?;
            let ctx = context(cli, generator)?;
            let latent = Latent::load(&ctx.generator, latent)?;
            let shifts = shift.iter().map(|p| Shift::load(&ctx.generator, p)).collect::<clipshape::Result<Vec<_>>>()?;
            let refs: Vec<(&Shift, f64)> = shifts.iter().map(|s| (s, 1.0)).collect();
            let images = edit::render(&ctx.generator, &latent, &refs, &strengths, edit::render::DEFAULT_MAX_BATCH)?;
            for p in write_images(&images, out)? {
                emit(&format!("{}\n", p.display()));
            }
        }
        Command::Bench { batches, iters, random_size, golden } => {
            let batches = parse_list(batches, "--batches")?.into_iter().map(|b| b as i64).collect::<Vec<_>>();
            if batches.iter().any(|&b| b < 1) {
                bail!("--batches: every batch size must be at least 1");
            }
            let device = DeviceRequest::parse(&cli.device)?.resolve()?;
            clipshape::device::set_threads(cli.threads);
            let opts = clipshape::bench::BenchOptions {
                device,
                iters: *iters,
                batches,
                golden_generator: Some(golden.clone().unwrap_or_else(|| clipshape::bench::golden_dir().join("stylegan2.pt"))),
                random_size: *random_size,
            };
            let rows = clipshape::bench::run(&opts)?;
            emit(&clipshape::bench::table(&rows));
        }
    }
    Ok(())
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("CLIPSHAPE_LOG", "warn")).init();
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
