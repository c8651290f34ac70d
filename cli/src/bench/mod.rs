//! `clipshape bench`: milliseconds per operation, printed as a markdown table. Speed targets
//! are checked here, never in timed unit tests. Every row runs one warm-up iteration first and
//! reports the median of `iters`.

use std::path::PathBuf;

use clap::Args;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use clipshape::checkpoint::Checkpoint;
use clipshape::edit::guide::ClipGuide;
use clipshape::edit::optimize::{optimize, OptimizeParams};
use clipshape::edit::{render, Latent, Shift};
use clipshape::error::Result;
use clipshape::models::clip::{self, Clip, HeadCounts};
use clipshape::models::e4e::{self, Encoder4Editing};
use clipshape::models::init;
use clipshape::models::stylegan2::{config_f_channels, Generator, LayerId, Synthesis};
use clipshape::random::seeded_normal;
use clipshape::tokenizer::Tokenizer;

mod eval;
mod photo;
use photo::{face_rows, full_edit_rows, transfer_rows};

pub struct Row {
    pub model: String,
    pub device: String,
    pub batch: i64,
    pub op: String,
    pub ms: f64,
    /// Peak resident memory while the row ran (Linux), MB.
    pub peak_mb: Option<f64>,
}

/// Groups of rows, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// The tiny golden models (generator, CLIP, e4e, edit step).
    Tiny,
    /// Random config-f generators: forward, fwd+bwd, render.
    Generator,
    /// Full-size ViT-B/32 and IR-SE50.
    Models,
    /// MTCNN + FFHQ alignment of a large photo.
    Face,
    /// Edit steps with a random config-f generator and ViT-B/32, per variant.
    Edit,
    /// Moving a photo's pixels by an edit's flow: accuracy per render size, a 4000×3000 photo.
    Transfer,
    /// One picture of the paper's table at full size (random generator, ViT-B/32, Inception),
    /// and the merge of 3000 pictures' measures.
    Eval,
}

impl std::str::FromStr for Group {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Group, String> {
        Ok(match s {
            "tiny" => Group::Tiny,
            "generator" => Group::Generator,
            "models" => Group::Models,
            "face" => Group::Face,
            "edit" => Group::Edit,
            "transfer" => Group::Transfer,
            "eval" => Group::Eval,
            _ => return Err(format!("`{s}` is not one of tiny, generator, models, face, edit, transfer, eval")),
        })
    }
}

/// One way of running the optimisation loop, compared side by side in the edit rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    pub synthesis: Synthesis,
}

impl std::str::FromStr for Variant {
    type Err = String;
    /// `fp32` (the parity path), `bf16`, `size256` (optimise at 256 px), `size256+bf16`.
    fn from_str(s: &str) -> std::result::Result<Variant, String> {
        let mut synthesis = Synthesis::default();
        for part in s.split('+') {
            match part {
                "fp32" => {}
                "bf16" => synthesis.bf16_min_channels = Some(Synthesis::BF16_MIN_CHANNELS),
                p if p.starts_with("size") => {
                    let v = p[4..].parse::<i64>().map_err(|_| format!("`{p}`: expected sizeN, e.g. size256"))?;
                    synthesis.stop_at = Some(v);
                }
                p => return Err(format!("`{p}` is not fp32, bf16 or sizeN")),
            }
        }
        Ok(Variant { name: s.to_string(), synthesis })
    }
}

/// The reference PyTorch loop, run as a child process per size.
pub struct Reference {
    pub python: String,
    pub script: PathBuf,
}

pub struct BenchOptions {
    pub device: Device,
    pub iters: usize,
    pub batches: Vec<i64>,
    /// The tiny golden models, when at hand.
    pub golden_dir: Option<PathBuf>,
    /// Sides of the randomly initialised config-f generators.
    pub random_sizes: Vec<i64>,
    /// Full-size CLIP ViT-B/32 and IR-SE50 rows, and edit steps with them.
    pub full: bool,
    /// Only these groups (None = all that the other options enable).
    pub only: Option<Vec<Group>>,
    pub variants: Vec<Variant>,
    pub reference: Option<Reference>,
    /// A complete FFHQ edit from files, per variant (`--full-edit DIR`).
    pub full_edit: Option<FullEdit>,
}

/// Load + encode + `steps` optimisation steps + render 7 strengths, from full-size random files
/// in the official formats (made once in `dir` by benches/make_full_models.py).
pub struct FullEdit {
    pub dir: PathBuf,
    pub steps: usize,
    pub python: String,
    pub script: PathBuf,
}

impl BenchOptions {
    fn wants(&self, g: Group) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(&g))
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The process's peak resident set, reset between rows (Linux `clear_refs` 5).
pub mod peak {
    pub fn reset() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }

    /// VmHWM, MB.
    pub fn read_mb() -> Option<f64> {
        field("VmHWM:")
    }

    /// VmRSS, MB.
    pub fn current_mb() -> Option<f64> {
        field("VmRSS:")
    }

    fn field(name: &str) -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }
}

/// Median of `iters` timed runs after one warm-up; `iters` 0 = one run, no warm-up.
fn time_ms(device: Device, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    if iters > 0 {
        f()?;
        sync(device);
    }
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        sync(device);
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok(samples[samples.len() / 2])
}

struct Table<'a> {
    rows: Vec<Row>,
    opts: &'a BenchOptions,
}

impl Table<'_> {
    fn push(&mut self, model: &str, batch: i64, op: &str, ms: f64, peak_mb: Option<f64>) {
        log::info!("{model} b{batch} {op}: {ms:.2} ms");
        self.rows.push(Row {
            model: model.into(),
            device: clipshape::device::describe(self.opts.device),
            batch,
            op: op.into(),
            ms,
            peak_mb,
        });
    }

    fn time(&mut self, model: &str, batch: i64, op: &str, f: impl FnMut() -> Result<()>) -> Result<()> {
        peak::reset();
        let ms = time_ms(self.opts.device, self.opts.iters, f)?;
        self.push(model, batch, op, ms, peak::read_mb());
        Ok(())
    }
}

/// Forward, forward + backward to a 16 px conv's shift, and a render of 7 strengths.
fn generator_rows(name: &str, g: &Generator, t: &mut Table) -> Result<()> {
    let layer = g.layers().into_iter().map(|l| l.id).find(|l| *l == LayerId::Convs(3)).unwrap_or(LayerId::Conv1);
    let weight_shape = g.layer_weight(layer)?.size();
    let device = t.opts.device;
    for b in t.opts.batches.clone() {
        let w = seeded_normal(&[b, g.n_latent(), g.style_dim()], 1, device)?;
        t.time(name, b, "forward", || {
            let _img = tch::no_grad(|| g.synthesis(&w, &[]))?;
            Ok(())
        })?;
        let x = Tensor::f_zeros(weight_shape.as_slice(), (Kind::Float, device))?.f_set_requires_grad(true)?;
        t.time(name, b, &format!("fwd+bwd to {layer} shift"), || {
            let img = g.synthesis(&w, &[(layer, &x)])?;
            img.f_mean(None::<Kind>)?.f_backward()?;
            Ok(())
        })?;
    }
    let latent = Latent::new(g, seeded_normal(&[g.n_latent(), g.style_dim()], 2, device)?)?;
    let shift = Shift::new(g, &layer.to_string(), seeded_normal(&weight_shape, 3, device)?.f_mul_scalar(0.01)?)?;
    let ks = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0];
    t.time(name, 7, "render 7 strengths", || {
        let _imgs = render(g, &latent, &[(&shift, 1.0)], &ks, 8)?;
        Ok(())
    })?;
    Ok(())
}

fn clip_rows(name: &str, m: &Clip, t: &mut Table) -> Result<()> {
    let r = m.image_resolution();
    let device = t.opts.device;
    for b in t.opts.batches.clone() {
        let x = seeded_normal(&[b, 3, r, r], 4, device)?;
        t.time(name, b, "encode_image", || {
            let _f = tch::no_grad(|| m.encode_image(&x))?;
            Ok(())
        })?;
        let xg = x.f_detach()?.f_set_requires_grad(true)?;
        t.time(name, b, "encode_image fwd+bwd", || {
            m.encode_image(&xg)?.f_sum(Kind::Float)?.f_backward()?;
            Ok(())
        })?;
    }
    let tokens = Tensor::f_zeros([1, m.config.context_length], (Kind::Int64, device))?;
    let _ =
        tokens.f_narrow(1, 0, 2)?.f_copy_(&Tensor::from_slice(&[49406i64, 49407]).f_view([1, 2])?.f_to_device(device)?);
    t.time(name, 1, "encode_text", || {
        let _f = tch::no_grad(|| m.encode_text(&tokens))?;
        Ok(())
    })?;
    Ok(())
}

/// One optimisation step = generator fwd+bwd + CLIP fwd+bwd + Adam, timed over a short run.
fn edit_rows(name: &str, g: &Generator, guide: &ClipGuide, variant: &Variant, t: &mut Table) -> Result<()> {
    let device = t.opts.device;
    for b in t.opts.batches.clone() {
        let latent = Latent::new(g, seeded_normal(&[g.n_latent(), g.style_dim()], 5, device)?)?;
        let mut params = OptimizeParams::new("a wide face", LayerId::Convs(3));
        params.prompts = (0..b).map(|i| format!("a face with a big nose {i}")).collect();
        params.synthesis = variant.synthesis;
        peak::reset();
        // Setup (text features, the unedited image at full size) and the final full-size
        // similarity are the same for any number of steps: runs of 1 and 4 steps differ by 3
        // steps exactly.
        let mut run_ms = |steps: usize| -> Result<f64> {
            params.steps = steps;
            params.progress_every = steps;
            time_ms(device, 0, || {
                optimize(g, guide, &[&latent], &params, &|| false, &mut |_| true)?;
                Ok(())
            })
        };
        run_ms(1)?; // warm-up
        let one = run_ms(1)?;
        let four = run_ms(4)?;
        let ms = ((four - one) / 3.0).max(0.0);
        let op = format!("edit step [{}] (gen+CLIP fwd+bwd, Adam), {:.3} steps/s", variant.name, 1e3 / ms);
        t.push(name, b, &op, ms, peak::read_mb());
    }
    Ok(())
}

/// A variant scaled to a small generator: `size256` of a 1024 px model is a quarter of the
/// side, so on the 64 px golden model it becomes `size16`.
fn tiny_variant(v: &Variant, size: i64) -> Variant {
    let mut v = v.clone();
    if let Some(s) = v.synthesis.stop_at {
        let scaled = (s * size / 1024).max(16);
        v.synthesis.stop_at = Some(scaled);
        v.name = v.name.replace(&format!("size{s}"), &format!("size{scaled}"));
    }
    v
}

/// How far a variant's learnt shift is from the parity path's: the same edit learnt both ways
/// (20 steps), the cosine between the two shifts, and the CLIP similarity of the full-size fp32
/// render with each. Meaningful with real weights; on random ones it only shows the mechanics.
fn agreement_row(name: &str, g: &Generator, guide: &ClipGuide, v: &Variant, t: &mut Table) -> Result<()> {
    let latent = Latent::new(g, seeded_normal(&[g.n_latent(), g.style_dim()], 5, t.opts.device)?)?;
    let mut params = OptimizeParams::new("a face with a big nose", LayerId::Convs(3));
    params.steps = 20;
    params.progress_every = 20;
    let start = Instant::now();
    let parity = optimize(g, guide, &[&latent], &params, &|| false, &mut |_| true)?.remove(0);
    params.synthesis = v.synthesis;
    let other = optimize(g, guide, &[&latent], &params, &|| false, &mut |_| true)?.remove(0);
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let cos = clipshape::models::clip::cosine(
        &parity.parts[0].x.f_flatten(0, -1)?.f_unsqueeze(0)?,
        &other.parts[0].x.f_flatten(0, -1)?.f_unsqueeze(0)?,
    )?
    .f_double_value(&[0])?;
    let sim = |s: &Shift| s.meta.get("clip_sim_after").cloned().unwrap_or_default();
    let before = parity.meta.get("clip_sim_before").cloned().unwrap_or_default();
    let op = format!(
        "agreement [{}] vs fp32, 20 steps: cos(shifts) {cos:.3}, CLIP sim {before} → fp32 {} / {} {}",
        v.name,
        sim(&parity),
        v.name,
        sim(&other)
    );
    t.push(name, 1, &op, ms, None);
    Ok(())
}

/// The reference loop's edit step at `size`, one row per batch.
fn reference_rows(r: &Reference, size: i64, t: &mut Table) -> Result<()> {
    let device = match t.opts.device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    let batches: Vec<String> = t.opts.batches.iter().map(i64::to_string).collect();
    let out = std::process::Command::new(&r.python)
        .arg(&r.script)
        .args(["--size", &size.to_string(), "--batches", &batches.join(","), "--device", &device])
        .output()
        .map_err(|e| clipshape::error::Error::io(&r.script, e))?;
    if !out.status.success() {
        return Err(clipshape::error::Error::Internal(format!(
            "reference loop {} {} failed: {}",
            r.python,
            r.script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // Machine-readable lines: ROW <batch> <ms per step> <peak MB>.
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["ROW", b, ms, mb] = f.as_slice() {
            let (b, ms, mb) = (b.parse().unwrap_or(0), ms.parse().unwrap_or(f64::NAN), mb.parse().ok());
            let op = format!("edit step [reference] (gen+CLIP fwd+bwd, Adam), {:.3} steps/s", 1e3 / ms);
            t.push(&reference_model(size), b, &op, ms, mb);
        }
    }
    Ok(())
}

fn edit_model(size: i64) -> String {
    format!("config-f {size}px + ViT-B/32 (random)")
}

fn reference_model(size: i64) -> String {
    format!("reference loop (PyTorch eager), {}", edit_model(size))
}

/// Speed-up of each variant over the reference loop, from the edit rows of one run.
pub fn ratios(rows: &[Row], sizes: &[i64]) -> String {
    let mut s = String::from(
        "| size | batch | variant | ms/step | reference ms/step | speed-up |\n|---:|---:|---|---:|---:|---:|\n",
    );
    let variant = |op: &str| op.split_once('[').and_then(|(_, r)| r.split_once(']')).map(|(v, _)| v.to_string());
    for &size in sizes {
        for r in rows.iter().filter(|r| r.model == edit_model(size)) {
            let reference = rows.iter().find(|q| q.model == reference_model(size) && q.batch == r.batch);
            if let (Some(q), Some(v)) = (reference, variant(&r.op)) {
                s += &format!("| {size} | {} | {v} | {:.0} | {:.0} | {:.2}× |\n", r.batch, r.ms, q.ms, q.ms / r.ms);
            }
        }
    }
    s
}

pub fn run(opts: &BenchOptions) -> Result<Vec<Row>> {
    let mut t = Table { rows: Vec::new(), opts };
    let device = opts.device;
    let golden = opts.golden_dir.as_deref().filter(|d| d.join("stylegan2.pt").exists());
    let vocab = golden.map(|d| d.join("bpe_simple_vocab_16e6.txt.gz"));
    match golden {
        Some(dir) if opts.wants(Group::Tiny) => {
            let g = clipshape::models::load_generator(&dir.join("stylegan2.pt"), device)?.generator;
            generator_rows("stylegan2 tiny golden 64px", &g, &mut t)?;
            let guide = ClipGuide::load(
                &dir.join("clip_jit.pt"),
                &dir.join("bpe_simple_vocab_16e6.txt.gz"),
                HeadCounts::default(),
                device,
            )?;
            clip_rows("clip tiny golden", &guide.clip, &mut t)?;
            for v in &opts.variants {
                let v = tiny_variant(v, g.config.size);
                edit_rows("tiny golden generator + CLIP", &g, &guide, &v, &mut t)?;
                if v.synthesis != Synthesis::default() {
                    agreement_row("tiny golden generator + CLIP", &g, &guide, &v, &mut t)?;
                }
            }
            let ck = Checkpoint::open(dir.join("e4e.pt"))?;
            let enc = Encoder4Editing::load_from(&ck, device)?;
            encoder_rows("e4e tiny golden", &enc, &mut t)?;
        }
        Some(_) => {}
        None => log::warn!("golden models not found: skipping the tiny-model rows"),
    }
    if let (Some(dir), true) = (golden, opts.wants(Group::Face)) {
        face_rows(dir, &mut t)?;
    }
    if let (Some(dir), true) = (golden, opts.wants(Group::Transfer)) {
        transfer_rows(dir, &mut t)?;
    }
    let full_clip = if opts.full && (opts.wants(Group::Models) || opts.wants(Group::Edit) || opts.wants(Group::Eval)) {
        let sd = init::clip(&clip::Config::vit_b32(), 0)?;
        Some(Clip::load(&Checkpoint::from_tensors("random ViT-B/32", sd), "", HeadCounts::default(), device)?)
    } else {
        None
    };
    if let (Some(m), true) = (&full_clip, opts.wants(Group::Models)) {
        clip_rows("clip ViT-B/32 (random)", m, &mut t)?;
        let sd = init::e4e(&e4e::Config::ffhq(), 0)?;
        let enc = Encoder4Editing::load(&Checkpoint::from_tensors("random IR-SE50", sd), "", device)?;
        encoder_rows("e4e IR-SE50 full width (random)", &enc, &mut t)?;
    }
    let guide = match (full_clip, &vocab) {
        (Some(clip), Some(v)) => {
            Some(ClipGuide { clip, tokenizer: Tokenizer::from_gz_file(v)?, fit: Default::default() })
        }
        _ => None,
    };
    let inception = match (&guide, opts.wants(Group::Eval)) {
        (Some(_), true) => Some(eval::random_inception(device)?),
        (None, true) if opts.only.is_some() => {
            log::warn!("eval rows need --full (ViT-B/32) and the golden vocab");
            None
        }
        _ => None,
    };
    for &size in &opts.random_sizes {
        if !(opts.wants(Group::Generator) || (opts.wants(Group::Edit) || opts.wants(Group::Eval)) && guide.is_some()) {
            break;
        }
        let sd = init::stylegan2(512, 8, &config_f_channels(size, 2), 0)?;
        let g = Generator::load(&Checkpoint::from_tensors("random config-f", sd), "", device)?;
        if opts.wants(Group::Generator) {
            generator_rows(&format!("stylegan2 config-f {size}px (random)"), &g, &mut t)?;
        }
        if let (Some(guide), Some(net)) = (&guide, &inception) {
            eval::eval_rows(&format!("{} + Inception", edit_model(size)), &g, guide, net, &mut t)?;
        }
        if !opts.wants(Group::Edit) {
            continue;
        }
        match &guide {
            Some(guide) => {
                for v in &opts.variants {
                    edit_rows(&edit_model(size), &g, guide, v, &mut t)?;
                }
                drop(g);
                if let Some(r) = &opts.reference {
                    reference_rows(r, size, &mut t)?;
                }
            }
            None => log::warn!("edit-step rows need --full and the golden vocab"),
        }
    }
    if let Some(net) = &inception {
        eval::merge_row(net.pool3_dim(), &mut t)?;
    }
    if let Some(fe) = &opts.full_edit {
        let vocab =
            vocab.ok_or_else(|| clipshape::error::Error::arg("golden", "--full-edit needs the golden vocab"))?;
        full_edit_rows(fe, &vocab, &mut t)?;
    }
    Ok(t.rows)
}

fn encoder_rows(name: &str, enc: &Encoder4Editing, t: &mut Table) -> Result<()> {
    let x = seeded_normal(&[1, 3, 256, 256], 6, t.opts.device)?;
    t.time(name, 1, "encode 256x256", || {
        let _c = tch::no_grad(|| enc.forward(&x))?;
        Ok(())
    })
}

/// A markdown table, ready for BENCHMARKS.md.
pub fn table(rows: &[Row]) -> String {
    let mut s =
        String::from("| model | device | batch | op | ms | ms/image | peak MB |\n|---|---|---:|---|---:|---:|---:|\n");
    for r in rows {
        let peak = r.peak_mb.map_or_else(|| "–".to_string(), |m| format!("{m:.0}"));
        s += &format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {peak} |\n",
            r.model,
            r.device,
            r.batch,
            r.op,
            r.ms,
            r.ms / r.batch as f64
        );
    }
    s
}

/// Where the tiny golden files live: `$CLIPSHAPE_GOLDEN`, else `tests/fixtures/golden` of the
/// checkout the bench is run from (a released binary holds no path of its build machine).
pub fn golden_dir() -> PathBuf {
    std::env::var_os("CLIPSHAPE_GOLDEN").map(Into::into).unwrap_or_else(|| PathBuf::from("tests/fixtures/golden"))
}

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Batch sizes, comma-separated
    #[arg(long, default_value = "1,8")]
    pub batches: String,
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Sides of the randomly initialised config-f generators, comma-separated (e.g. 256,1024)
    #[arg(long, default_value = "256")]
    pub random_size: String,
    /// Also time full-size ViT-B/32 and IR-SE50 (random weights) and edit steps
    #[arg(long)]
    pub full: bool,
    /// Only these row groups: tiny, generator, models, face, edit, transfer, eval (comma-separated)
    #[arg(long)]
    pub only: Option<String>,
    /// Ways of running the edit step, compared in one run: fp32 (the parity path), bf16,
    /// sizeN (optimise at N px), combined with + (e.g. fp32,size256+bf16)
    #[arg(long, default_value = "fp32")]
    pub variants: String,
    /// Directory of the tiny golden models (default: tests/fixtures/golden in a checkout)
    #[arg(long)]
    pub golden: Option<PathBuf>,
    /// Also run the reference PyTorch loop's edit step (benches/reference_loop.py, run by
    /// $CLIPSHAPE_PYTHON or python3 with torch) at each size and batch, and print the
    /// speed-up of each variant over it
    #[arg(long)]
    pub reference: bool,
    /// Also time a complete FFHQ edit (load, encode, steps, render 7) per variant, from
    /// full-size random files in the official formats, made in DIR when missing (1.5 GB)
    #[arg(long, value_name = "DIR")]
    pub full_edit: Option<PathBuf>,
    /// Optimisation steps of --full-edit
    #[arg(long, default_value_t = 100)]
    pub full_edit_steps: usize,
}

pub fn bench(cli: &crate::Cli, args: &BenchArgs) -> anyhow::Result<()> {
    use crate::{device, emit, parse_list};
    use anyhow::{anyhow, bail};
    let BenchArgs { batches, iters, random_size, full, only, variants, golden, reference, full_edit, full_edit_steps } =
        args;
    let batches = parse_list(batches, "--batches")?.into_iter().map(|b| b as i64).collect::<Vec<_>>();
    if batches.iter().any(|&b| b < 1) {
        bail!("--batches: every batch size must be at least 1");
    }
    let random_sizes = parse_list(random_size, "--random-size")?.into_iter().map(|s| s as i64).collect::<Vec<_>>();
    if let Some(s) = random_sizes.iter().find(|&&s| s < 8 || !(s as u64).is_power_of_two()) {
        bail!("--random-size: {s} is not a power of two ≥ 8");
    }
    let parse_each = |list: &str, flag: &str| -> anyhow::Result<Vec<String>> {
        let items: Vec<String> = list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect();
        if items.is_empty() {
            bail!("{flag}: give at least one value");
        }
        Ok(items)
    };
    let only = match only {
        Some(list) => Some(
            parse_each(list, "--only")?
                .iter()
                .map(|g| g.parse::<Group>().map_err(|e| anyhow!("--only: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let variants = parse_each(variants, "--variants")?
        .iter()
        .map(|v| v.parse::<Variant>().map_err(|e| anyhow!("--variants: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let python = std::env::var("CLIPSHAPE_PYTHON").unwrap_or_else(|_| "python3".into());
    // The benches' scripts of a checkout: the bench is run from its root (as BENCHMARKS.md
    // says), and a released binary holds no path of the machine that built it.
    let benches = std::env::var_os("CLIPSHAPE_BENCHES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("benches"));
    let reference = reference.then(|| Reference {
        python: python.clone(),
        script: std::env::var_os("CLIPSHAPE_REFERENCE_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| benches.join("reference_loop.py")),
    });
    if *full_edit_steps == 0 {
        bail!("--full-edit-steps must be at least 1");
    }
    let full_edit = full_edit.as_ref().map(|dir| FullEdit {
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
    let opts = BenchOptions {
        device,
        iters: *iters,
        batches,
        golden_dir: Some(golden.clone().unwrap_or_else(golden_dir)),
        random_sizes,
        full: *full,
        only,
        variants,
        reference,
        full_edit,
    };
    let rows = run(&opts)?;
    let mut table = table(&rows);
    if opts.reference.is_some() {
        table += "\n";
        table += &ratios(&rows, &opts.random_sizes);
    }
    emit(&table);
    Ok(())
}
