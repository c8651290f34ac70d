//! `clipshape eval`: the quality figures of a shift (or several, rendered together) over many
//! pictures — CLIP gain per strength, change outside the region, FID — as the paper's table.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use clipshape::context::Context;
use clipshape::edit::encode::{to_encoder_input, ImageView};
use clipshape::edit::eval::{self, EvalParams, Fid, Statistics};
use clipshape::edit::{Latent, PixelFormat, Shift};
use clipshape::models::inception::Inception;
use clipshape::store::ModelStore;

use crate::files::load_rgba;

/// The manifest's name of the FID network (`clipshape models fetch clip:inception`).
pub const INCEPTION_FILE: &str = "pt_inception-2015-12-05-6726825d.pth";

#[derive(Args, Clone)]
pub struct EvalArgs {
    /// Shift files, rendered together (same layer: they add)
    #[arg(required = true)]
    pub shifts: Vec<PathBuf>,
    /// Sampled pictures: a range (0-15) or a list (1,5,9) of seeds; the default without --latents
    #[arg(long)]
    pub seeds: Option<String>,
    /// Truncation of the sampled latents: 1 = none
    #[arg(long, default_value_t = 0.7)]
    pub truncation: f64,
    /// A folder of latents (*.safetensors holding `wplus`, e.g. from `clipshape encode`)
    #[arg(long)]
    pub latents: Option<PathBuf>,
    /// Strengths, comma-separated (the paper's table: ±3, ±5, ±10)
    #[arg(long, default_value = "-10,-5,-3,3,5,10", allow_hyphen_values = true)]
    pub strengths: String,
    /// The text the CLIP similarity is measured against (default: the first shift's prompt)
    #[arg(long)]
    pub prompt: Option<String>,
    /// The region M the edit may change, x1,y1,x2,y2 in generator pixels (default: the first
    /// shift's recorded region, else the whole picture counts as outside)
    #[arg(long)]
    pub region: Option<String>,
    /// The FID Inception network (default: the model store's, when fetched with
    /// `clipshape models fetch clip:inception`); without one, FID is left out
    #[arg(long)]
    pub inception: Option<PathBuf>,
    /// A folder of pictures (PNG, JPEG) FID compares against (default: the unedited renders)
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Print the rows as JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `0-15` or `1,5,9` → seeds.
fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    let bad = || anyhow::anyhow!("--seeds: `{text}` is not a range A-B or a list of seeds");
    let seeds: Vec<u64> = match text.split_once('-') {
        Some((a, b)) => {
            let (a, b): (u64, u64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
            if a > b || b - a >= 100_000 {
                bail!("--seeds: {a}-{b} is empty or longer than 100000");
            }
            (a..=b).collect()
        }
        None => text.split(',').map(|s| s.trim().parse::<u64>().map_err(|_| bad())).collect::<Result<_>>()?,
    };
    Ok(seeds)
}

/// The entries of `dir` (the value of `flag`) that `keep` accepts, sorted by name.
fn files_in(dir: &Path, flag: &str, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{flag} {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| keep(p))
        .collect();
    paths.sort();
    Ok(paths)
}

fn latents_in(dir: &Path, ctx: &Context) -> Result<Vec<Latent>> {
    let paths = files_in(dir, "--latents", |p| p.extension().is_some_and(|e| e == "safetensors"))?;
    if paths.is_empty() {
        bail!("--latents {}: no *.safetensors latents there", dir.display());
    }
    Ok(paths.iter().map(|p| Latent::load(&ctx.generator, p)).collect::<clipshape::Result<_>>()?)
}

/// A picture file as (3, H, W) in [-1, 1], as the encoder reads photos (alpha over mid-grey).
fn picture(path: &Path) -> Result<tch::Tensor> {
    let (rgba, w, h) = load_rgba(path)?;
    let view = ImageView::packed(&rgba, w, h, PixelFormat::Rgba8)?;
    let input = to_encoder_input(&view, h as i64, w as i64, tch::Device::Cpu)
        .with_context(|| format!("--reference picture {}", path.display()))?;
    Ok(input.f_squeeze_dim(0)?)
}

/// Pictures read and passed through Inception per batch, never all held at once.
const REFERENCE_BATCH: usize = 8;

/// The Inception features of every PNG or JPEG in `dir`.
fn reference_features(net: &Inception, dir: &Path) -> Result<tch::Tensor> {
    let paths = files_in(dir, "--reference", |p| p.is_file() && clipshape::edit::render::image_file_kind(p).is_ok())?;
    if paths.is_empty() {
        bail!("--reference {}: holds no pictures (PNG or JPEG)", dir.display());
    }
    let mut features = Vec::with_capacity(paths.len().div_ceil(REFERENCE_BATCH));
    for chunk in paths.chunks(REFERENCE_BATCH) {
        let pictures = chunk.iter().map(|p| picture(p)).collect::<Result<Vec<_>>>()?;
        features.push(eval::picture_features(net, &pictures, REFERENCE_BATCH)?);
    }
    Ok(tch::Tensor::f_cat(&features, 0)?)
}

/// Runs the evaluation and returns what to print.
pub fn run(ctx: &Context, args: &EvalArgs, strengths: Vec<f64>) -> Result<String> {
    let shifts = args.shifts.iter().map(|p| Shift::load(&ctx.generator, p)).collect::<clipshape::Result<Vec<_>>>()?;
    let prompt = match (&args.prompt, shifts[0].meta.get("prompt")) {
        (Some(p), _) | (None, Some(p)) => p.clone(),
        (None, None) => bail!("{}: records no prompt; pass --prompt TEXT", args.shifts[0].display()),
    };
    let region = args
        .region
        .as_deref()
        .or(shifts[0].meta.get("region").map(String::as_str))
        .map(crate::edit::parse_region)
        .transpose()?;
    let latents = match (&args.latents, &args.seeds) {
        (Some(_), Some(_)) => bail!("give --seeds or --latents, not both"),
        (Some(dir), None) => latents_in(dir, ctx)?,
        (None, seeds) => {
            let mean = if args.truncation < 1.0 { Some(ctx.mean_latent()?) } else { None };
            parse_seeds(seeds.as_deref().unwrap_or("0-15"))?
                .into_iter()
                .map(|s| Latent::from_seed(&ctx.generator, s as i64, args.truncation, mean))
                .collect::<clipshape::Result<_>>()?
        }
    };
    let inception = match &args.inception {
        Some(p) => Some(p.clone()),
        // No model store (no home directory) is no Inception network, not an error.
        None => ModelStore::from_env().ok().map(|s| s.file_path(INCEPTION_FILE)).filter(|p| p.is_file()),
    };
    if args.reference.is_some() && inception.is_none() {
        bail!("--reference is for FID, which needs the Inception network: --inception FILE or `clipshape models fetch clip:inception`");
    }
    let net = inception.map(|p| Inception::load(&p, ctx.device)).transpose()?;
    let fid = match &net {
        Some(net) => {
            let reference = match &args.reference {
                Some(dir) => Some(
                    Statistics::of(&reference_features(net, dir)?)
                        .with_context(|| format!("--reference {}", dir.display()))?,
                ),
                None => None,
            };
            Some(Fid { net, reference })
        }
        None => None,
    };
    let refs: Vec<(&Shift, f64)> = shifts.iter().map(|s| (s, 1.0)).collect();
    let params = EvalParams { prompt, strengths, region, max_batch: clipshape::edit::render::DEFAULT_MAX_BATCH };
    let rows = ctx.evaluate(&latents, &refs, &params, fid.as_ref())?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&rows)? + "\n");
    }
    let against = match (&fid, &args.reference) {
        (None, _) => "no FID (no Inception network)".to_string(),
        (Some(_), Some(dir)) => format!("FID against {}", dir.display()),
        (Some(_), None) => "FID against the unedited renders".to_string(),
    };
    Ok(format!(
        "\"{}\" over {} pictures; M = {}; {against}\n\n{}",
        params.prompt.escape_debug(),
        latents.len(),
        region.map(|r| format!("{},{},{},{}", r[0], r[1], r[2], r[3])).unwrap_or_else(|| "none".into()),
        eval::table(&rows)
    ))
}

/// The strengths `eval` renders, `--strengths` parsed (0 is always measured as the baseline).
pub fn strengths(args: &EvalArgs) -> Result<Vec<f64>> {
    let s = crate::parse_list(&args.strengths, "--strengths")?;
    if s.len() > clipshape::edit::render::MAX_STRENGTHS - 1 {
        bail!("--strengths: at most {} values", clipshape::edit::render::MAX_STRENGTHS - 1);
    }
    Ok(s)
}

#[derive(Args, Clone)]
pub struct EvalCommand {
    /// The model set or e4e checkpoint (default: the one recorded in the first shift file)
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub files: crate::ClipFiles,
    #[command(flatten)]
    pub args: EvalArgs,
}

pub fn eval(cli: &crate::Cli, args: &EvalCommand) -> Result<()> {
    use crate::edit::shift_model;
    use crate::{emit, model_context};
    let EvalCommand { model, files, args } = args;
    let strengths = strengths(args)?;
    let model = shift_model(model, &args.shifts[0])?;
    let ctx = model_context(cli, &model, files, true, None)?;
    emit(&run(&ctx, args, strengths)?);
    Ok(())
}
