//! `clipshape bench`: milliseconds per operation, printed as a markdown table. Speed targets
//! are checked here, never in timed unit tests. Every row runs one warm-up iteration first and
//! reports the median of `iters`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use clipshape::checkpoint::Checkpoint;
use clipshape::edit::guide::ClipGuide;
use clipshape::edit::optimize::{optimize, OptimizeParams};
use clipshape::edit::{render, Latent, Shift};
use clipshape::error::Result;
use clipshape::face::{self, Mtcnn};
use clipshape::models::clip::{self, Clip, HeadCounts};
use clipshape::models::e4e::{self, Encoder4Editing};
use clipshape::models::init::{self, seeded_normal};
use clipshape::models::stylegan2::{config_f_channels, Generator, LayerId};
use clipshape::tokenizer::Tokenizer;

pub struct Row {
    pub model: String,
    pub device: String,
    pub batch: i64,
    pub op: String,
    pub ms: f64,
}

pub struct BenchOptions {
    pub device: Device,
    pub iters: usize,
    pub batches: Vec<i64>,
    /// The tiny golden models, when at hand.
    pub golden_dir: Option<PathBuf>,
    /// Side of the randomly initialised config-f generator (0 skips it).
    pub random_size: i64,
    /// Full-size CLIP ViT-B/32 and IR-SE50 rows, and edit steps with them.
    pub full: bool,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn time_ms(device: Device, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    sync(device);
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
    fn time(&mut self, model: &str, batch: i64, op: &str, f: impl FnMut() -> Result<()>) -> Result<()> {
        let ms = time_ms(self.opts.device, self.opts.iters, f)?;
        log::info!("{model} b{batch} {op}: {ms:.2} ms");
        self.rows.push(Row {
            model: model.into(),
            device: clipshape::device::describe(self.opts.device),
            batch,
            op: op.into(),
            ms,
        });
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
fn edit_rows(name: &str, g: &Generator, guide: &ClipGuide, t: &mut Table) -> Result<()> {
    let device = t.opts.device;
    for b in t.opts.batches.clone() {
        let latent = Latent::new(g, seeded_normal(&[g.n_latent(), g.style_dim()], 5, device)?)?;
        let mut params = OptimizeParams::new("a wide face", LayerId::Convs(3));
        params.prompts = (0..b).map(|i| format!("a face with a big nose {i}")).collect();
        params.steps = 3;
        params.progress_every = 3;
        let steps = params.steps as f64;
        let ms = time_ms(device, 1, || {
            optimize(g, guide, &[&latent], &params, &|| false, &mut |_| true)?;
            Ok(())
        })?;
        // Setup (text features, the unedited image) is amortised over the 3 steps measured.
        t.rows.push(Row {
            model: name.into(),
            device: clipshape::device::describe(device),
            batch: b,
            op: format!("edit step (gen+CLIP fwd+bwd, Adam), {:.3} steps/s", 1e3 * steps / ms),
            ms: ms / steps,
        });
    }
    Ok(())
}

pub fn run(opts: &BenchOptions) -> Result<Vec<Row>> {
    let mut t = Table { rows: Vec::new(), opts };
    let device = opts.device;
    let golden = opts.golden_dir.as_deref().filter(|d| d.join("stylegan2.pt").exists());
    let vocab = golden.map(|d| d.join("bpe_simple_vocab_16e6.txt.gz"));
    if let Some(dir) = golden {
        let g = clipshape::models::load_generator(&dir.join("stylegan2.pt"), device)?.generator;
        generator_rows("stylegan2 tiny golden 64px", &g, &mut t)?;
        let guide = ClipGuide::load(
            &dir.join("clip_jit.pt"),
            &dir.join("bpe_simple_vocab_16e6.txt.gz"),
            HeadCounts::default(),
            device,
        )?;
        clip_rows("clip tiny golden", &guide.clip, &mut t)?;
        edit_rows("tiny golden generator + CLIP", &g, &guide, &mut t)?;
        let ck = Checkpoint::open(dir.join("e4e.pt"))?;
        let enc = Encoder4Editing::load_from(&ck, device)?;
        encoder_rows("e4e tiny golden", &enc, &mut t)?;
        face_rows(dir, &mut t)?;
    } else {
        log::warn!("golden models not found: skipping the tiny-model rows");
    }
    let random_g = if opts.random_size > 0 {
        let sd = init::stylegan2(512, 8, &config_f_channels(opts.random_size, 2), 0)?;
        let g = Generator::load(&Checkpoint::from_tensors("random config-f", sd), "", device)?;
        generator_rows(&format!("stylegan2 config-f {}px (random)", opts.random_size), &g, &mut t)?;
        Some(g)
    } else {
        None
    };
    if opts.full {
        let sd = init::clip(&clip::Config::vit_b32(), 0)?;
        let m = Clip::load(&Checkpoint::from_tensors("random ViT-B/32", sd), "", HeadCounts::default(), device)?;
        clip_rows("clip ViT-B/32 (random)", &m, &mut t)?;
        let sd = init::e4e(&e4e::Config::ffhq(), 0)?;
        let enc = Encoder4Editing::load(&Checkpoint::from_tensors("random IR-SE50", sd), "", device)?;
        encoder_rows("e4e IR-SE50 full width (random)", &enc, &mut t)?;
        match (&random_g, &vocab) {
            (Some(g), Some(v)) => {
                let guide = ClipGuide { clip: m, tokenizer: Tokenizer::from_gz_file(v)?, fit: Default::default() };
                edit_rows(&format!("config-f {}px + ViT-B/32 (random)", opts.random_size), g, &guide, &mut t)?;
            }
            _ => log::warn!("edit-step rows need --random-size > 0 and the golden vocab"),
        }
    }
    Ok(t.rows)
}

/// Finding and aligning the face of a 4000×3000 photo (the astronaut scaled ×5 into a mirrored
/// canvas: one ≈ 450 px face), with the real MTCNN weights of the golden set; CPU, as on a
/// user's machine (the detector always runs where the photo is).
fn face_rows(golden: &Path, t: &mut Table) -> Result<()> {
    let dir = golden.join("face");
    let (Ok(photo), true) = (image::open(dir.join("astronaut.png")), dir.join("mtcnn/pnet.pt").exists()) else {
        log::warn!("no golden face data: skipping the face rows");
        return Ok(());
    };
    let detector = Mtcnn::load_dir(&dir.join("mtcnn"), tch::Device::Cpu)?;
    let big = image::imageops::resize(&photo.to_rgb8(), 2560, 2560, image::imageops::FilterType::Triangle);
    let (w, h) = (4000usize, 3000usize);
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let sx = (x as i64 - 700).rem_euclid(2 * 2560);
            let sx = if sx >= 2560 { 2 * 2560 - 1 - sx } else { sx } as u32;
            let sy = (y as u32).min(2 * 2559 - y as u32).min(2559);
            rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&big.get_pixel(sx, sy).0);
        }
    }
    t.time("mtcnn + FFHQ align 4000x3000", 1, "detect + align 256", || {
        let faces = detector.detect(&rgb, w, h)?;
        let i = face::pick_face(&faces, None, None, "the benchmark photo")?;
        let quad = face::FaceQuad::from_landmarks(&faces[i].landmarks)?;
        face::align(&rgb, w, h, &quad, 256)?;
        Ok(())
    })
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
    let mut s = String::from("| model | device | batch | op | ms | ms/image |\n|---|---|---:|---|---:|---:|\n");
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} |\n",
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

/// Where the tiny golden files live in a checkout: `../shared/golden`, or `$CLIPSHAPE_GOLDEN`.
pub fn golden_dir() -> PathBuf {
    std::env::var_os("CLIPSHAPE_GOLDEN")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"))
}
