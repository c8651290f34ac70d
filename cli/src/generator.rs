//! The generator's own commands: `info`, `sample`, `render`, `tokenize`, `score`, `encode`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;

use clipshape::edit::encode::ImageView;
use clipshape::edit::render::{image_file_kind, save_image};
use clipshape::edit::{self, Latent, PixelFormat, Shift};

use crate::edit::{rgb_of, write_images};
use crate::files::load_rgba;
use crate::output::{OutputDir, OutputFiles};
use crate::{device, emit, generator_context, model_context, parse_list, vocab_path, Cli, ClipFiles};

#[derive(Args, Clone)]
pub struct InfoArgs {
    pub generator: PathBuf,
}

pub fn info(cli: &Cli, args: &InfoArgs) -> Result<()> {
    let InfoArgs { generator } = args;
    let ctx = generator_context(cli, generator)?;
    let g = &ctx.generator;
    let c = &g.config;
    let ch: Vec<String> = c.channels.iter().map(|(r, ch)| format!("{r}:{ch}")).collect();
    let mut text = format!(
        "file: {}\nresolution: {}\nstyle_dim: {}\nn_mlp: {}\nn_latent: {}\nnoise_inputs: {}\nchannels: {}\ndevice: {}\n",
        crate::text::escaped(&generator.display().to_string()),
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
    Ok(())
}

#[derive(Args, Clone)]
pub struct SampleArgs {
    pub generator: PathBuf,
    #[arg(long)]
    pub seed: u64,
    /// 1 = no truncation; 0.7 is the usual choice for pleasant samples
    #[arg(long, default_value_t = 1.0)]
    pub truncation: f64,
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the W+ latent (safetensors, `wplus`)
    #[arg(long)]
    pub latent_out: Option<PathBuf>,
}

pub fn sample(cli: &Cli, args: &SampleArgs) -> Result<()> {
    let SampleArgs { generator, seed, truncation, out, latent_out } = args;
    image_file_kind(out)?;
    let mut outputs = vec![("--out", out.as_path())];
    outputs.extend(latent_out.as_deref().map(|l| ("--latent-out", l)));
    let files = OutputFiles::prepare(&outputs, &[("GENERATOR", generator.as_path())])?;
    let ctx = generator_context(cli, generator)?;
    let mean = if *truncation < 1.0 { Some(ctx.mean_latent()?) } else { None };
    let latent = Latent::from_seed(&ctx.generator, *seed as i64, *truncation, mean)?;
    let images = ctx.render(&latent, &[], &[0.0], 1)?;
    let (_, _, h, w) = images.size4()?;
    save_image(files.path(0), &rgb_of(&images)?[0], w as u32, h as u32, PixelFormat::Rgb8)?;
    if latent_out.is_some() {
        latent.save(files.path(1))?;
    }
    for p in files.commit()? {
        crate::emit_path(&p);
    }
    Ok(())
}

#[derive(Args, Clone)]
pub struct RenderArgs {
    pub generator: PathBuf,
    #[arg(long)]
    pub latent: PathBuf,
    /// Shift files; each is scaled by the strength
    #[arg(long)]
    pub shift: Vec<PathBuf>,
    /// Strengths to render, comma-separated (--strengths=-3,0,3)
    #[arg(long, default_value = "-3,-2,-1,0,1,2,3", allow_hyphen_values = true)]
    pub strengths: String,
    /// Output directory: 00.png… (one per strength, the generator's full square)
    #[arg(long)]
    pub out: PathBuf,
}

pub fn render(cli: &Cli, args: &RenderArgs) -> Result<()> {
    let RenderArgs { generator, latent, shift, strengths, out } = args;
    let strengths = parse_list(strengths, "--strengths")?;
    let inputs: Vec<&std::path::Path> =
        [generator.as_path(), latent.as_path()].into_iter().chain(shift.iter().map(PathBuf::as_path)).collect();
    let out = OutputDir::prepare(out, &inputs)?;
    let ctx = generator_context(cli, generator)?;
    let latent = Latent::load(&ctx.generator, latent)?;
    let shifts = shift.iter().map(|p| Shift::load(&ctx.generator, p)).collect::<clipshape::Result<Vec<_>>>()?;
    let refs: Vec<(&Shift, f64)> = shifts.iter().map(|s| (s, 1.0)).collect();
    let images = ctx.render(&latent, &refs, &strengths, edit::render::DEFAULT_MAX_BATCH)?;
    write_images(&images, &out.root())?;
    crate::edit::finish(out)
}

#[derive(Args, Clone)]
pub struct TokenizeArgs {
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// Cut an over-long text instead of failing
    #[arg(long)]
    pub truncate: bool,
    pub text: String,
}

pub fn tokenize(_cli: &Cli, args: &TokenizeArgs) -> Result<()> {
    let TokenizeArgs { vocab, truncate, text } = args;
    let tok = clipshape::tokenizer::Tokenizer::from_gz_file(vocab_path(vocab)?)?;
    // As the reference tokenizes (empty text gives [start, end]); edits refuse empty prompts.
    let ids = tok.tokenize_reference(text, *truncate).map_err(clipshape::Error::from)?;
    let line: Vec<String> = ids.iter().map(i64::to_string).collect();
    emit(&format!("{}\n", line.join(" ")));
    Ok(())
}

#[derive(Args, Clone)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub files: ClipFiles,
    pub image: PathBuf,
    #[arg(required = true)]
    pub texts: Vec<String>,
}

pub fn score(cli: &Cli, args: &ScoreArgs) -> Result<()> {
    let ScoreArgs { files, image, texts } = args;
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
        text += &format!("{c:.6}\t{:.4}\t{}\n", p / z, crate::text::escaped(t));
    }
    emit(&text);
    Ok(())
}

#[derive(Args, Clone)]
pub struct EncodeArgs {
    pub model: String,
    pub image: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the reconstruction ("what the model sees") at the photo's size
    #[arg(long)]
    pub recon: Option<PathBuf>,
}

pub fn encode(cli: &Cli, args: &EncodeArgs) -> Result<()> {
    let EncodeArgs { model, image, out, recon } = args;
    let mut outputs = vec![("--out", out.as_path())];
    if let Some(r) = recon {
        image_file_kind(r)?;
        outputs.push(("--recon", r.as_path()));
    }
    let model_file = Path::new(model);
    let mut inputs = vec![("photo", image.as_path())];
    inputs.extend(model_file.is_file().then_some(("MODEL", model_file)));
    let files = OutputFiles::prepare(&outputs, &inputs)?;
    let ctx = model_context(cli, model, &ClipFiles::default(), false, None)?;
    let (rgba, w, h) = load_rgba(image)?;
    let view = ImageView::packed(&rgba, w, h, PixelFormat::Rgba8).with_context(|| image.display().to_string())?;
    let latent = ctx.encode(&view)?;
    latent.save(files.path(0))?;
    if recon.is_some() {
        let img = ctx.to_frame(&ctx.render(&latent, &[], &[0.0], 1)?, Some((w, h)))?;
        save_image(files.path(1), &rgb_of(&img)?[0], w, h, PixelFormat::Rgb8)?;
    }
    for p in files.commit()? {
        crate::emit_path(&p);
    }
    Ok(())
}
