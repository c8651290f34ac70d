//! `clipshape eval`: the quality figures of a shift (or several, rendered together) over many
//! pictures — CLIP gain per strength, change outside the region, FID — as the paper's table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use clipshape::context::Context;
use clipshape::edit::encode::{to_encoder_input, ImageView};
use clipshape::edit::eval::{self, EvalParams, Statistics};
use clipshape::edit::shard::{file_fingerprint, generator_fingerprint, shift_fingerprint, Shard, ShardStats};
use clipshape::edit::{Latent, PixelFormat, Shift};
use clipshape::models::inception::Inception;
use clipshape::store::ModelStore;

use crate::files::load_rgba;
use crate::output::OutputFiles;

/// The manifest's name of the FID network (`clipshape models fetch clip:inception`).
pub const INCEPTION_FILE: &str = "pt_inception-2015-12-05-6726825d.pth";

#[derive(Args, Clone)]
pub struct EvalArgs {
    /// Shift files, rendered together (same layer: they add)
    #[arg(required_unless_present = "merge")]
    pub shifts: Vec<PathBuf>,
    /// Measure only shard I of N of the pictures (I from 0; picture p is shard p mod N's) and
    /// write the measures to --stats-out; `--merge` puts the shards' files together
    #[arg(long, requires = "stats_out")]
    pub shard: Option<String>,
    /// Where a shard's measures go (a stats file for --merge)
    #[arg(long, requires = "shard")]
    pub stats_out: Option<PathBuf>,
    /// Put shards' stats files together and print the table the whole set gives (with
    /// --reference, --inception, --json)
    #[arg(long, num_args = 1.., value_name = "STATS")]
    pub merge: Vec<PathBuf>,
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

/// The latents of `dir` in name order, and what they are (their names and contents'
/// fingerprint: shards of other latents must not merge).
fn latents_in(dir: &Path, ctx: &Context) -> Result<(Vec<Latent>, String)> {
    use sha2::Digest as _;
    let paths = files_in(dir, "--latents", |p| p.extension().is_some_and(|e| e == "safetensors"))?;
    if paths.is_empty() {
        bail!("--latents {}: no *.safetensors latents there", dir.display());
    }
    let latents = paths.iter().map(|p| Latent::load(&ctx.generator, p)).collect::<clipshape::Result<_>>()?;
    let mut h = sha2::Sha256::new();
    for p in &paths {
        h.update(p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        h.update(file_fingerprint(p)?.as_bytes());
    }
    Ok((latents, format!("{} latents, sha256 {}", paths.len(), hex::encode(h.finalize()))))
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

/// The FID statistics of every PNG or JPEG in `dir`, computed once per content: cached under
/// `$XDG_CACHE_HOME/clipshape/fid-reference/` by the SHA-256 of the Inception network's
/// fingerprint and every picture's name and bytes (a changed, added or removed picture makes a
/// new entry). A run, or each merge, of the same folder reads them back.
fn reference_statistics(net: &Inception, inception_fingerprint: &str, dir: &Path) -> Result<Statistics> {
    use sha2::Digest as _;
    let paths = files_in(dir, "--reference", |p| p.is_file() && clipshape::edit::render::image_file_kind(p).is_ok())?;
    if paths.is_empty() {
        bail!("--reference {}: holds no pictures (PNG or JPEG)", dir.display());
    }
    let mut key = sha2::Sha256::new();
    key.update(inception_fingerprint.as_bytes());
    for p in &paths {
        crate::files::regular_file(p, "--reference picture")?;
        key.update(p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        key.update(clipshape::edit::shard::file_fingerprint(p)?.as_bytes());
    }
    let cache = cache_dir().map(|d| d.join(format!("{}.safetensors", hex::encode(key.finalize()))));
    if let Some(stats) = cache.as_deref().and_then(|c| Statistics::load(c).ok()) {
        return Ok(stats);
    }
    let mut features = Vec::with_capacity(paths.len().div_ceil(REFERENCE_BATCH));
    for chunk in paths.chunks(REFERENCE_BATCH) {
        crate::signals::check_interrupted()?;
        let pictures = chunk.iter().map(|p| picture(p)).collect::<Result<Vec<_>>>()?;
        features.push(eval::picture_features(net, &pictures, REFERENCE_BATCH)?);
    }
    let stats =
        Statistics::of(&tch::Tensor::f_cat(&features, 0)?).with_context(|| format!("--reference {}", dir.display()))?;
    if let Some(c) = &cache {
        // A cache that cannot be written is only slower next time.
        if let Some(parent) = c.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = stats.save(c);
    }
    Ok(stats)
}

/// `$XDG_CACHE_HOME/clipshape/fid-reference` (or `~/.cache/…`); None without a home.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")).filter(|p| p.is_absolute()))?;
    Some(base.join("clipshape").join("fid-reference"))
}

/// The Inception network's file: given, else the model store's when fetched.
fn inception_file(args: &EvalArgs) -> Option<PathBuf> {
    match &args.inception {
        Some(p) => Some(p.clone()),
        // No model store (no home directory) is no Inception network, not an error.
        None => ModelStore::from_env().ok().map(|s| s.file_path(INCEPTION_FILE)).filter(|p| p.is_file()),
    }
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
    let (latents, pictures) = match (&args.latents, &args.seeds) {
        (Some(_), Some(_)) => bail!("give --seeds or --latents, not both"),
        (Some(dir), None) => latents_in(dir, ctx)?,
        (None, seeds) => {
            let seeds = parse_seeds(seeds.as_deref().unwrap_or("0-15"))?;
            let mean = if args.truncation < 1.0 { Some(ctx.mean_latent()?) } else { None };
            let latents = seeds
                .iter()
                .map(|&s| Latent::from_seed(&ctx.generator, s as i64, args.truncation, mean))
                .collect::<clipshape::Result<_>>()?;
            (latents, format!("seeds {seeds:?}, truncation {}", args.truncation))
        }
    };
    let shard = args.shard.as_deref().map(Shard::parse).transpose()?;
    let inception = inception_file(args);
    if args.reference.is_some() && inception.is_none() {
        bail!("--reference is for FID, which needs the Inception network: --inception FILE or `clipshape models fetch clip:inception`");
    }
    let net = inception.as_deref().map(|p| Inception::load(p, ctx.device)).transpose()?;
    let inception_fingerprint = inception.as_deref().map(file_fingerprint).transpose()?;
    let refs: Vec<(&Shift, f64)> = shifts.iter().map(|s| (s, 1.0)).collect();
    let params = EvalParams { prompt, strengths, region, max_batch: clipshape::edit::render::DEFAULT_MAX_BATCH };
    let chosen: Vec<(usize, &Latent)> =
        latents.iter().enumerate().filter(|(p, _)| shard.is_none_or(|s| s.holds(*p))).collect();
    if chosen.is_empty() {
        bail!("--shard {}: holds no picture of the {}", args.shard.as_deref().unwrap_or(""), latents.len());
    }
    let cancelled = crate::signals::interrupted;
    let measured = clipshape::edit::eval::measure(
        &ctx.generator,
        ctx.guide()?,
        ctx.frame,
        &chosen,
        &refs,
        &params,
        net.as_ref(),
        &cancelled,
    )?;
    if let (Some(shard), Some(out)) = (shard, &args.stats_out) {
        let identity = BTreeMap::from([
            (
                "shifts".to_string(),
                shifts.iter().map(shift_fingerprint).collect::<clipshape::Result<Vec<_>>>()?.join(","),
            ),
            ("model".to_string(), generator_fingerprint(&ctx.generator)?),
            ("inception".to_string(), inception_fingerprint.unwrap_or_else(|| "none".into())),
            ("prompt".to_string(), params.prompt.clone()),
            ("region".to_string(), format!("{:?}", params.region)),
            ("pictures".to_string(), pictures),
        ]);
        let stats = ShardStats { shard, total: latents.len(), identity, strengths: params.strengths.clone(), measured };
        let files = OutputFiles::prepare(&[("--stats-out", out)], &[])?;
        stats.save(files.path(0))?;
        let written = files.commit()?;
        return Ok(format!("{}\n", crate::text::escaped(&written[0].display().to_string())));
    }
    let reference = match (&net, &args.reference) {
        (Some(net), Some(dir)) => Some(reference_statistics(net, inception_fingerprint.as_deref().unwrap_or(""), dir)?),
        _ => None,
    };
    let rows = eval::rows(&params.strengths, &measured, net.is_some(), reference.as_ref())?;
    table(args, &params.prompt, latents.len(), region, net.is_some(), &rows)
}

/// What `eval` prints: the rows as JSON, or a line saying what was measured and the table.
fn table(
    args: &EvalArgs,
    prompt: &str,
    pictures: usize,
    region: Option<[f32; 4]>,
    fid: bool,
    rows: &[eval::Row],
) -> Result<String> {
    if args.json {
        return Ok(serde_json::to_string_pretty(rows)? + "\n");
    }
    let against = match (fid, &args.reference) {
        (false, _) => "no FID (no Inception network)".to_string(),
        (true, Some(dir)) => format!("FID against {}", dir.display()),
        (true, None) => "FID against the unedited renders".to_string(),
    };
    Ok(format!(
        "\"{}\" over {pictures} pictures; M = {}; {against}\n\n{}",
        crate::text::escaped(prompt),
        region.map(|r| format!("{},{},{},{}", r[0], r[1], r[2], r[3])).unwrap_or_else(|| "none".into()),
        eval::table(rows)
    ))
}

/// `clipshape eval --merge STATS…`: the shards put together, the table of the whole set.
pub fn merge(cli: &crate::Cli, args: &EvalArgs) -> Result<String> {
    if !args.shifts.is_empty() || args.shard.is_some() || args.seeds.is_some() || args.latents.is_some() {
        bail!("--merge takes the shards' stats files alone (and --reference, --inception, --json)");
    }
    let clipshape::edit::shard::Merged { identity, strengths, measured } = clipshape::edit::shard::merge(&args.merge)?;
    let recorded = identity.get("inception").map(String::as_str).unwrap_or("none");
    let fid = recorded != "none";
    let reference = match &args.reference {
        None => None,
        Some(_) if !fid => {
            bail!("--reference: the shards were measured without the Inception network, so there is no FID")
        }
        Some(dir) => {
            let file = inception_file(args).context(
                "--reference needs the Inception network the shards used: --inception FILE or `clipshape models fetch clip:inception`",
            )?;
            if file_fingerprint(&file)? != recorded {
                bail!("{}: not the Inception network the shards were measured with", file.display());
            }
            let net = Inception::load(&file, crate::device(cli)?.resolve()?)?;
            Some(reference_statistics(&net, recorded, dir)?)
        }
    };
    let rows = eval::rows(&strengths, &measured, fid, reference.as_ref())?;
    let region = identity.get("region").and_then(|r| r.strip_prefix("Some(")).and_then(|r| r.strip_suffix(')'));
    let region = region.map(|r| r.trim_matches(['[', ']'])).map(crate::edit::parse_region).transpose()?;
    let prompt = identity.get("prompt").cloned().unwrap_or_default();
    table(args, &prompt, measured.len(), region, fid, &rows)
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
    if !args.merge.is_empty() {
        emit(&merge(cli, args)?);
        return Ok(());
    }
    // Before any work: what cannot mean anything.
    if let Some(s) = &args.shard {
        Shard::parse(s)?;
        if args.reference.is_some() {
            bail!("--reference goes with --merge: the shards measure the renders, the merge compares them with the reference");
        }
    }
    let strengths = strengths(args)?;
    let model = shift_model(model, &args.shifts[0])?;
    let ctx = model_context(cli, &model, files, true, None)?;
    emit(&run(&ctx, args, strengths)?);
    Ok(())
}
