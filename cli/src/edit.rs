//! `edit` and `apply`: learn a shape edit from text (or load one) and render it onto a photo or
//! a sampled picture, with the labelled contact sheet.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use clipshape::context::photo::Paste;
use clipshape::context::{Context, EditRequest};
use clipshape::edit::optimize::{Method, Progress};
use clipshape::edit::render::save_png;
use clipshape::edit::{self, Latent, PixelFormat, Shift};

use crate::output::{Folder, OutputDir};
use crate::photo::{PhotoJob, PhotoOptions};
use crate::sheet::{strength_label, write_contact_sheet, Tile};
use crate::signals::{check_interrupted, interrupted};
use crate::{model_context, parse_list, Cli, ClipFiles};

/// Where `edit` and `apply` render, and what.
#[derive(Args, Clone)]
pub struct EditOutput {
    /// Strengths to render, comma-separated (--strengths=-3,0,3)
    #[arg(long, default_value = "-3,-2,-1,0,1,2,3", allow_hyphen_values = true)]
    pub strengths: String,
    /// Output directory: 00.png… (one per strength; with a photo, the photo with the edit, and
    /// layer-00.png…), sheet.png, shift.safetensors
    #[arg(long)]
    pub out: PathBuf,
}

impl EditOutput {
    /// The strengths, and the output directory made ready before any work (see
    /// [`OutputDir::prepare`] for `inputs`).
    fn prepare(&self, inputs: &[&Path]) -> Result<(Vec<f64>, OutputDir)> {
        Ok((parse_list(&self.strengths, "--strengths")?, OutputDir::prepare(&self.out, inputs)?))
    }
}

#[derive(Args, Clone)]
pub struct EditOptions {
    /// Generator layer whose raw weight is shifted (default: the model set's, else convs.3);
    /// several, comma-separated (convs.3,convs.5), are learnt jointly into one shift; `auto`
    /// probes every convs.N at 8–64 px for 10 steps and keeps the best (CLIP gain per change
    /// outside --region, else per ‖x‖/‖W‖)
    #[arg(long)]
    pub layer: Option<String>,
    /// With --layer auto: shift this many of the best-ranked layers, jointly
    #[arg(long, default_value_t = 1)]
    pub auto_layers: usize,
    /// Another prompt for the same picture, learnt jointly into its own shift (repeatable);
    /// each is written to DIR/1/, DIR/2/, … and all together to DIR/together/
    #[arg(long = "also", value_name = "PROMPT")]
    pub also: Vec<String>,
    /// Weight λ4 of the term keeping the prompts' image changes apart (with --also; 0 = learn
    /// them independently; default 0.3)
    #[arg(long)]
    pub separate: Option<f64>,
    /// Optimisation steps
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Adam learning rate
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Weight of the CLIP term
    #[arg(long, default_value_t = 10.0)]
    pub lambda1: f64,
    /// Weight of ‖x‖₂ (default: the model set's, 0.01–0.1)
    #[arg(long)]
    pub lambda2: Option<f64>,
    /// Weight of ‖w − w0‖² for --method latent
    #[arg(long, default_value_t = 0.008)]
    pub latent_l2: f64,
    /// Neutral text for a directional CLIP loss (e.g. "face")
    #[arg(long)]
    pub neutral: Option<String>,
    /// shift (the paper: a weight shift) or latent (StyleCLIP baseline)
    #[arg(long, default_value = "shift")]
    pub method: String,
    /// Strength k used while optimising (θ + k·x)
    #[arg(long, default_value_t = 1.0)]
    pub train_strength: f64,
    /// Std of a random initial shift, relative to the layer weight's (0 = start unedited)
    #[arg(long, default_value_t = 0.0)]
    pub init_scale: f64,
    /// Seed of that random initial shift
    #[arg(long, default_value_t = 0)]
    pub optim_seed: i64,
    /// Cut prompts longer than 77 tokens instead of refusing them
    #[arg(long)]
    pub truncate: bool,
    /// Optimise on the generator's output stopped at this side (px, a power of two), e.g. 256:
    /// several times faster on a CPU, an approximate objective; the shift applies at full size.
    /// Default: 256 for a photo edited with --paste warp (what its transfer needs), else the
    /// full size
    #[arg(long)]
    pub optimize_size: Option<i64>,
    /// Optimise at the generator's full size (the paper's objective) even for a photo edited
    /// with --paste warp
    #[arg(long, conflicts_with = "optimize_size")]
    pub full_size: bool,
    /// Run the generator's wide layers in bfloat16 while optimising (CPUs with avx512_bf16/AMX)
    #[arg(long)]
    pub bf16: bool,
    /// Weight λ3 of the preservation term: the mean squared change outside --region joins the loss
    #[arg(long, default_value_t = 0.0)]
    pub preserve: f64,
    /// The region the edit may change, x1,y1,x2,y2 in pixels of the generator's output (with
    /// --preserve; default: of a photo, the detected face's box or the selection mapped into
    /// the frame, else none: every change counts)
    #[arg(long)]
    pub region: Option<String>,
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

/// `--region x1,y1,x2,y2`.
pub fn parse_region(text: &str) -> Result<[f32; 4]> {
    match parse_list(text, "--region")?.as_slice() {
        [a, b, c, d] => Ok([*a as f32, *b as f32, *c as f32, *d as f32]),
        _ => bail!("--region: give x1,y1,x2,y2 (four numbers), got `{text}`"),
    }
}

/// `--model`, else the model the shift file records.
pub fn shift_model(given: &Option<String>, shift: &Path) -> Result<String> {
    let recorded = clipshape::checkpoint::Checkpoint::open(shift)?.metadata().get("model").cloned();
    given
        .clone()
        .or(recorded)
        .with_context(|| format!("{}: the shift does not record its model; pass --model SET_OR_FILE", shift.display()))
}

pub fn rgb_of(images: &tch::Tensor) -> Result<Vec<Vec<u8>>> {
    Ok(edit::to_rgba8(images, PixelFormat::Rgb8)?)
}

pub fn write_images(images: &tch::Tensor, out: &Folder) -> Result<()> {
    let (_, _, h, w) = images.size4()?;
    for (i, px) in rgb_of(images)?.iter().enumerate() {
        save_png(&out.join(&format!("{i:02}.png")), px, w as u32, h as u32, PixelFormat::Rgb8)?;
    }
    Ok(())
}

/// The contact sheet's tiles are at most this tall.
const SHEET_HEIGHT: usize = 256;

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
            let (thumb, w, h) = job.thumbnail(SHEET_HEIGHT);
            Ok((latent, thumb, w, h))
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
    out: &Folder,
) -> Result<()> {
    let refs: Vec<(&Shift, f64)> = shifts.iter().map(|&s| (s, 1.0)).collect();
    let (images, recon) = match job {
        Some(job) if job.paste == Paste::Warp => {
            // Renders at the flow's side only: the photo's own pixels are what the user gets.
            let t = ctx.transfer(&job.view()?, &job.subject, latent, &refs, strengths)?;
            let layers = ctx.transfer_layers(&t.transfer, strengths)?;
            let blended =
                strengths.iter().map(|&k| t.transfer.blended_fraction(k)).collect::<clipshape::Result<Vec<_>>>()?;
            let most = blended.iter().copied().fold(0.0, f64::max);
            crate::text::say(&format!(
                "moved the photo's own pixels; the render was blended in where the displacement could not \
                 explain it: {:.1} % of the {} at most",
                100.0 * most,
                if job.faces.is_some() { "face's square" } else { "selection" }
            ));
            job.write_layers(&layers, out)?;
            (t.renders, t.render_0)
        }
        _ => {
            let images = ctx.to_frame(&ctx.render(latent, &refs, strengths, edit::render::DEFAULT_MAX_BATCH)?, None)?;
            let recon = ctx.to_frame(&ctx.render(latent, &[], &[0.0], 1)?, None)?;
            match job {
                Some(job) if job.paste != Paste::Frame => job.write(ctx, &images, &recon, out)?,
                _ => write_images(&images, out)?,
            }
            (images, recon)
        }
    };
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
    write_contact_sheet(&out.join("sheet.png"), &tiles, (h as usize).min(SHEET_HEIGHT))?;
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

#[derive(Args, Clone)]
pub struct EditArgs {
    /// A model set (ffhq, car, horse) or an e4e checkpoint (with --clip and --vocab)
    pub model: String,
    /// [PHOTO] PROMPT (no photo with --seed)
    #[arg(required = true, num_args = 1..=2)]
    pub inputs: Vec<String>,
    /// Edit the sampled image of this seed instead of a photo
    #[arg(long)]
    pub seed: Option<u64>,
    /// Truncation of the sampled latent (with --seed): 1 = none
    #[arg(long, default_value_t = 0.7)]
    pub truncation: f64,
    #[command(flatten)]
    pub files: ClipFiles,
    #[command(flatten)]
    pub opts: EditOptions,
    #[command(flatten)]
    pub photo_opts: PhotoOptions,
    #[command(flatten)]
    pub output: EditOutput,
}

pub fn edit(cli: &Cli, args: &EditArgs) -> Result<()> {
    let EditArgs { model, inputs, seed, truncation, files, opts, photo_opts, output } = args;
    let (photo, prompt) = match (inputs.as_slice(), seed) {
        ([prompt], Some(_)) => (None, prompt.clone()),
        ([photo, prompt], None) => (Some(PathBuf::from(photo)), prompt.clone()),
        (_, Some(_)) => bail!("with --seed give only the PROMPT (no photo)"),
        _ => bail!("give PHOTO PROMPT, or PROMPT with --seed N"),
    };
    let inputs: Vec<&Path> = photo
        .iter()
        .map(PathBuf::as_path)
        .chain([Path::new(model)].into_iter().filter(|m| m.is_file()))
        .chain(files.clip.as_deref())
        .chain(files.vocab.as_deref())
        .collect();
    let (strengths, out) = output.prepare(&inputs)?;
    let method = match opts.method.as_str() {
        "shift" => Method::Shift,
        "latent" => Method::Latent,
        m => bail!("--method: `{m}` is not shift or latent"),
    };
    let prompts: Vec<String> = std::iter::once(prompt).chain(opts.also.iter().cloned()).collect();
    // Several prompts: DIR/1/, DIR/2/, … and DIR/together/.
    let joint = prompts.len() > 1;
    let dirs: Vec<Folder> = if joint {
        (1..=prompts.len()).map(|i| out.folder(&i.to_string())).chain([out.folder("together")]).collect()
    } else {
        vec![out.root()]
    };
    opts.check_auto_layers()?;
    let separate = match (opts.separate, joint) {
        (Some(_), false) => bail!("--separate keeps several prompts apart: it goes with --also"),
        (Some(s), true) if !(s.is_finite() && s >= 0.0) => bail!("--separate: {s} must be a finite number ≥ 0"),
        (s, _) => s.unwrap_or(clipshape::edit::optimize::DEFAULT_LAMBDA4),
    };
    if opts.region.is_some() && opts.preserve == 0.0 && !clipshape::edit::optimize::is_auto_layer(opts.layer.as_deref())
    {
        bail!("--region is what --preserve λ3 keeps the rest outside of (or what --layer auto measures): give one of them");
    }
    let mut ctx = model_context(cli, model, files, true, photo.as_ref().map(|_| photo_opts))?;
    let job = photo.as_deref().map(|p| PhotoJob::prepare(&ctx, p, photo_opts)).transpose()?;
    let (latent, input_rgb, iw, ih) = input_latent(&ctx, job.as_ref(), *seed, *truncation)?;
    check_interrupted()?;
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
        lambda4: if joint { separate } else { 0.0 },
        preview_every: 0,
    };
    // Of a photo, the face (or the selection) is what the edit may change.
    let params = ctx.optimize_params(&request, job.as_ref().map(|j| &j.subject))?;
    let bar = progress_bar(params.steps);
    let mut on_step = |p: &Progress| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {:.4}  clip {:.4}", p.loss, p.clip_sim));
        !interrupted()
    };
    let shifts = ctx.optimize(&[&latent], &params, &mut on_step);
    bar.finish_and_clear();
    let mut shifts = shifts?;
    for s in &mut shifts {
        if let Some(p) = &photo {
            s.meta.insert("source".into(), p.display().to_string());
        }
    }
    let input = (input_rgb.as_slice(), iw, ih);
    for (shift, dir) in shifts.iter().zip(&dirs) {
        write_edit(&ctx, &latent, &[shift], &strengths, input, job.as_ref(), dir)?;
        shift.save(&dir.join("shift.safetensors"))?;
        latent.save(&dir.join("latent.safetensors"))?;
        crate::text::say(&format!(
            "\"{}\" on {}: CLIP similarity {} → {}",
            crate::text::escaped(shift.meta.get("prompt").map(String::as_str).unwrap_or("?")),
            shift.layer_names(),
            shift.meta.get("clip_sim_before").map(String::as_str).unwrap_or("?"),
            shift.meta.get("clip_sim_after").map(String::as_str).unwrap_or("?")
        ));
    }
    if let (true, Some(together)) = (shifts.len() > 1, dirs.get(shifts.len())) {
        let all: Vec<&Shift> = shifts.iter().collect();
        write_edit(&ctx, &latent, &all, &strengths, input, job.as_ref(), together)?;
    }
    finish(out)
}

/// Swaps a finished run's files into its folder, unless Ctrl-C came first, and lists them.
pub fn finish(out: OutputDir) -> Result<()> {
    check_interrupted()?;
    for p in out.commit()? {
        crate::emit_path(&p);
    }
    Ok(())
}

#[derive(Args, Clone)]
pub struct ApplyArgs {
    pub shift: PathBuf,
    pub photo: Option<PathBuf>,
    /// The model set or e4e checkpoint (default: the one recorded in the shift file)
    #[arg(long)]
    pub model: Option<String>,
    /// Another shift file rendered together with SHIFT (repeatable): same layer, they add
    #[arg(long = "with", value_name = "SHIFT")]
    pub with: Vec<PathBuf>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Truncation of the sampled latent (with --seed): 1 = none
    #[arg(long, default_value_t = 0.7)]
    pub truncation: f64,
    #[command(flatten)]
    pub photo_opts: PhotoOptions,
    #[command(flatten)]
    pub output: EditOutput,
}

pub fn apply(cli: &Cli, args: &ApplyArgs) -> Result<()> {
    let ApplyArgs { shift, photo, model, with, seed, truncation, photo_opts, output } = args;
    let inputs: Vec<&Path> = std::iter::once(shift.as_path())
        .chain(with.iter().map(PathBuf::as_path))
        .chain(photo.as_deref())
        .chain(model.as_deref().map(Path::new).filter(|m| m.is_file()))
        .collect();
    let (strengths, out) = output.prepare(&inputs)?;
    let model = shift_model(model, shift)?;
    let ctx = model_context(cli, &model, &ClipFiles::default(), false, photo.as_ref().map(|_| photo_opts))?;
    let shifts = std::iter::once(shift)
        .chain(with)
        .map(|p| Shift::load(&ctx.generator, p))
        .collect::<clipshape::Result<Vec<_>>>()?;
    let job = photo.as_deref().map(|p| PhotoJob::prepare(&ctx, p, photo_opts)).transpose()?;
    let (latent, input_rgb, iw, ih) = input_latent(&ctx, job.as_ref(), *seed, *truncation)?;
    let refs: Vec<&Shift> = shifts.iter().collect();
    write_edit(&ctx, &latent, &refs, &strengths, (&input_rgb, iw, ih), job.as_ref(), &out.root())?;
    finish(out)
}
