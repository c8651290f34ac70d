//! The photo rows of `clipshape bench`: finding and aligning a face in a 4000×3000 photo, the
//! transfer (its accuracy per render size, flows and layers onto a big photo, the live layer),
//! and a whole photo edit from full-size random files in the official formats.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use clipshape::edit::optimize::OptimizeParams;
use clipshape::error::Result;
use clipshape::face::{self, Mtcnn};
use clipshape::models::stylegan2::{config_f_channels, Synthesis};
use clipshape::models::{clip, e4e, init};
use clipshape::pixels::{ImageView, PixelFormat};

use super::{peak, FullEdit, Table};

/// Each tensor's key, shape, mean and std, for the Python writer of the official files.
fn spec_entries(prefix: &str, sd: &[(String, Tensor)]) -> Result<Vec<serde_json::Value>> {
    sd.iter()
        .map(|(k, t)| {
            let (mean, std) = if t.numel() > 1 {
                (t.f_mean(Kind::Float)?.f_double_value(&[])?, t.f_std(false)?.f_double_value(&[])?)
            } else {
                (t.f_double_value(&[])?, 0.0)
            };
            Ok(serde_json::json!([format!("{prefix}{k}"), t.size(), mean, std]))
        })
        .collect()
}

/// The FFHQ files of a released set, with random weights: e4e (with its 1024 px decoder) and
/// ViT-B/32. Written once; later runs reuse them (their load time is then "warm").
fn ensure_full_models(fe: &FullEdit) -> Result<(PathBuf, PathBuf)> {
    let (e4e_path, clip_path) = (fe.dir.join("e4e_ffhq_encode.pt"), fe.dir.join("ViT-B-32.pt"));
    if e4e_path.exists() && clip_path.exists() {
        return Ok((e4e_path, clip_path));
    }
    std::fs::create_dir_all(&fe.dir).map_err(|e| clipshape::error::Error::io(&fe.dir, e))?;
    let mut e4e = spec_entries("encoder.", &init::e4e(&e4e::Config::ffhq(), 0)?)?;
    e4e.extend(spec_entries("decoder.", &init::stylegan2(512, 8, &config_f_channels(1024, 2), 0)?)?);
    e4e.push(serde_json::json!(["latent_avg", [18, 512], 0.0, 0.5]));
    let clip = spec_entries("", &init::clip(&clip::Config::vit_b32(), 0)?)?;
    let spec = fe.dir.join("spec.json");
    std::fs::write(&spec, serde_json::json!({ "e4e": e4e, "clip": clip }).to_string())
        .map_err(|e| clipshape::error::Error::io(&spec, e))?;
    log::info!("writing full-size random FFHQ files into {} (≈ 1.5 GB, a minute)", fe.dir.display());
    let status = std::process::Command::new(&fe.python)
        .arg(&fe.script)
        .arg(&fe.dir)
        .status()
        .map_err(|e| clipshape::error::Error::io(&fe.script, e))?;
    if !status.success() {
        return Err(clipshape::error::Error::Internal(format!("{} {} failed", fe.python, fe.script.display())));
    }
    Ok((e4e_path, clip_path))
}

/// A whole photo edit as `clipshape edit E4E PHOTO "face with big nose" --align face` runs it by
/// default, from the full-size random files: load, find and align the face of the golden
/// astronaut photo, encode, release the encoder, `steps` steps at the flow's side (unless the
/// variant says otherwise), render 7 strengths there and move the photo's pixels by them.
pub(super) fn full_edit_rows(fe: &FullEdit, vocab: &Path, t: &mut Table) -> Result<()> {
    use clipshape::context::photo::Subject;
    use clipshape::context::{Context, ContextParams};
    use clipshape::edit::encode::ImageView;
    use clipshape::edit::PixelFormat;

    let golden = t.opts.golden_dir.clone().ok_or_else(|| {
        clipshape::error::Error::arg("golden", "--full-edit needs the golden face photo and MTCNN weights")
    })?;
    let (e4e_path, clip_path) = ensure_full_models(fe)?;
    let mut params = ContextParams::new(&e4e_path);
    params.clip = Some(clip_path);
    params.vocab = Some(vocab.to_path_buf());
    let mtcnn = golden.join("face/mtcnn");
    params.face_detector = Some(["pnet.pt", "rnet.pt", "onet.pt"].map(|n| mtcnn.join(n)));
    params.device = match t.opts.device {
        Device::Cuda(i) => clipshape::device::DeviceRequest::Cuda(i),
        _ => clipshape::device::DeviceRequest::Cpu,
    };
    let photo_path = golden.join("face/astronaut.png");
    let photo = image::open(&photo_path)
        .map_err(|e| clipshape::error::Error::arg("photo", format!("{}: {e}", photo_path.display())))?;
    let photo = photo.to_rgb8();
    let view = ImageView::packed(photo.as_raw(), photo.width(), photo.height(), PixelFormat::Rgb8)?;
    let model = "FFHQ photo edit from files (e4e + ViT-B/32 random, 512² photo)";
    for variant in t.opts.variants.clone() {
        let v = &variant.name;
        // Each phase's own peak (the counter is reset at its start), and the whole edit's.
        let mut whole_peak: f64 = 0.0;
        let mut phase = |t: &mut Table, op: String, start: Instant| {
            let peak = peak::read_mb();
            log::info!("{op}: peak {peak:?} MB, resident after {:?} MB", peak::current_mb());
            whole_peak = whole_peak.max(peak.unwrap_or(0.0));
            t.push(model, 1, &op, start.elapsed().as_secs_f64() * 1e3, peak);
            peak::reset();
        };
        peak::reset();
        let t0 = Instant::now();
        let mut ctx = Context::new(&params)?;
        phase(t, format!("[{v}] load the files"), t0);
        let t1 = Instant::now();
        let faces = ctx.detect_faces(&view)?;
        let subject = Subject::face(faces[face::pick_face(&faces, None, None, "the benchmark photo")?])?;
        let latent = ctx.encode_subject(&view, &subject)?;
        ctx.release_encoder(); // as `clipshape edit` does
        phase(t, format!("[{v}] find, align and encode the face"), t1);
        let mut op = OptimizeParams::new("face with big nose", ctx.default_layer());
        op.steps = fe.steps;
        op.progress_every = fe.steps;
        op.synthesis = Synthesis { stop_at: variant.synthesis.stop_at.or(Some(ctx.flow_side())), ..variant.synthesis };
        let t2 = Instant::now();
        let shifts = ctx.optimize(&[&latent], &op, &mut |_| true)?;
        let steps_ms = t2.elapsed().as_secs_f64() * 1e3;
        phase(
            t,
            format!("[{v}] {} steps at {} px (setup included)", fe.steps, op.synthesis.stop_at.unwrap_or(1024)),
            t2,
        );
        let t3 = Instant::now();
        let ks = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0];
        let tr = ctx.transfer(&view, &subject, &latent, &[(&shifts[0], 1.0)], &ks)?;
        for &k in &ks {
            tr.transfer.layer(k)?;
        }
        phase(t, format!("[{v}] render 7 strengths at {} px and move the photo", ctx.flow_side()), t3);
        let total = t0.elapsed().as_secs_f64() * 1e3;
        let op =
            format!("[{v}] whole photo edit, {:.1} min ({:.0} ms per step)", total / 60e3, steps_ms / fe.steps as f64);
        t.push(model, 1, &op, total, Some(whole_peak));
    }
    Ok(())
}

/// The photo the face benchmarks time: `face` (RGB) scaled ×5 to 2560² and mirrored into a
/// 4000×3000 canvas, so one ≈ 450 px face sits in a photo-sized picture. Packed RGB rows.
fn big_face_photo(face: &image::RgbImage) -> (Vec<u8>, usize, usize) {
    let big = image::imageops::resize(face, 2560, 2560, image::imageops::FilterType::Triangle);
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
    (rgb, w, h)
}

/// Finding and aligning the face of a 4000×3000 photo (the astronaut scaled ×5 into a mirrored
/// canvas: one ≈ 450 px face), with the real MTCNN weights of the golden set; CPU, as on a
/// user's machine (the detector always runs where the photo is).
pub(super) fn face_rows(golden: &Path, t: &mut Table) -> Result<()> {
    let dir = golden.join("face");
    let (Ok(photo), true) = (image::open(dir.join("astronaut.png")), dir.join("mtcnn/pnet.pt").exists()) else {
        log::warn!("no golden face data: skipping the face rows");
        return Ok(());
    };
    let detector = Mtcnn::load_dir(&dir.join("mtcnn"), tch::Device::Cpu)?;
    let (rgb, w, h) = big_face_photo(&photo.to_rgb8());
    t.time("mtcnn + FFHQ align 4000x3000", 1, "detect + align 256", || {
        let faces = detector.detect(&rgb, w, h)?;
        let i = face::pick_face(&faces, None, None, "the benchmark photo")?;
        let quad = face::FaceQuad::from_landmarks(&faces[i].landmarks)?;
        face::align(&rgb, w, h, &quad, 256)?;
        Ok(())
    })
}

/// The transfer: how close to the truth the fixture case `astronaut_bignose` comes from renders
/// of 256, 512 and 1024 px (what warp mode's render size rests on), then the flows and layers
/// of 7 strengths onto a 4000×3000 photo and one layer at a strength between rendered ones
/// (the live slider), on the CPU where a host's photo is.
pub(super) fn transfer_rows(golden: &Path, t: &mut Table) -> Result<()> {
    let png = |p: &str| -> Option<image::RgbImage> { image::open(golden.join(p)).ok().map(|i| i.to_rgb8()) };
    let tag = "transfer/astronaut_bignose";
    let (Some(photo), Some(before), Some(after), Some(truth), Some(moved)) = (
        png("face/astronaut.png"),
        png(&format!("{tag}_before.png")),
        png(&format!("{tag}_after.png")),
        png(&format!("{tag}_truth.png")),
        png(&format!("{tag}_moved.png")),
    ) else {
        log::warn!("no transfer fixtures: skipping the transfer rows");
        return Ok(());
    };
    let detector = Mtcnn::load_dir(&golden.join("face/mtcnn"), tch::Device::Cpu)?;
    let quad_of = |rgb: &[u8], w: usize, h: usize| -> Result<face::FaceQuad> {
        let faces = detector.detect(rgb, w, h)?;
        let i = face::pick_face(&faces, None, None, "the benchmark photo")?;
        face::FaceQuad::from_landmarks(&faces[i].landmarks)
    };
    // A 1024² frame as a render of `side` px: area-reduced, in [-1, 1].
    let frame = |img: &image::RgbImage, side: i64| -> Result<Tensor> {
        let t = Tensor::from_slice(img.as_raw()).f_view([1, 1024, 1024, 3])?.f_permute([0, 3, 1, 2])?;
        let k = 1024 / side;
        Ok(t.f_to_kind(Kind::Float)?.f_avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>)? / 127.5 - 1.0)
    };
    let (pw, ph) = (photo.width() as usize, photo.height() as usize);
    let quad = quad_of(photo.as_raw(), pw, ph)?;
    let inside: Vec<bool> = moved.pixels().map(|p| p.0[0] > 127).collect();
    let off_truth = |img: &[u8]| -> f64 {
        let (mut sum, mut n) = (0.0, 0.0);
        for (i, _) in inside.iter().enumerate().filter(|(_, m)| **m) {
            for c in 0..3 {
                sum += (img[i * 3 + c] as f64 - truth.as_raw()[i * 3 + c] as f64).abs();
                n += 1.0;
            }
        }
        sum / n
    };
    let pasted = face::paste(
        pw,
        ph,
        &quad.frame_map(1024),
        after.as_raw(),
        None,
        &face::PasteParams::with_mode(face::AlphaMode::Region),
    )?;
    let paste_err = off_truth(&face::composite(photo.as_raw(), pw, ph, &pasted)?);
    let params = face::TransferParams::default();
    for side in [256i64, 512, 1024] {
        let (b, a) = (frame(&before, side)?, frame(&after, side)?);
        peak::reset();
        let start = Instant::now();
        let view = ImageView::packed(photo.as_raw(), pw as u32, ph as u32, PixelFormat::Rgb8)?;
        let tr = face::Transfer::new(&view, &quad.frame_map(side as usize), &b, &a, &[1.0], &params, &|| false)?;
        let layer = tr.layer(1.0)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let err = off_truth(&face::composite(photo.as_raw(), pw, ph, &layer)?);
        let op = format!("flow + layer from {side}² renders: {err:.2} levels off the truth where it moves (pasting AFTER: {paste_err:.2})");
        t.push("transfer fixture astronaut_bignose (512² photo)", 1, &op, ms, peak::read_mb());
    }
    // Seven strengths of the fixture's field (k = 3 is the fixture's) onto the 4000×3000 photo.
    let (rgb, w, h) = big_face_photo(&photo);
    let quad = quad_of(&rgb, w, h)?;
    let side = clipshape::context::photo::FLOW_SIDE;
    let b = frame(&before, side)?;
    let ks = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0];
    let field = {
        let path = golden.join(format!("{tag}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| clipshape::error::Error::io(&path, e))?;
        let meta: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| clipshape::error::Error::arg("fixture", format!("{}: {e}", path.display())))?;
        let (s, sigma) = (meta["strength"].as_f64().unwrap_or(0.3), meta["sigma"].as_f64().unwrap_or(72.0));
        let c = [meta["center"][0].as_f64().unwrap_or(512.0), meta["center"][1].as_f64().unwrap_or(640.0)];
        let px = 1024.0 / side as f64;
        let at = Tensor::f_arange(side, (Kind::Float, tch::Device::Cpu))?.f_add_scalar(0.5)?.f_mul_scalar(px)?;
        let dx = at.f_sub_scalar(c[0])?.f_view([1, side])?;
        let dy = at.f_sub_scalar(c[1])?.f_view([side, 1])?;
        let g = dx
            .f_square()?
            .f_add(&dy.f_square()?)?
            .f_div_scalar(-2.0 * sigma * sigma)?
            .f_exp()?
            .f_mul_scalar(-s / 3.0)?;
        Tensor::f_stack(&[dx.f_mul(&g)?, dy.f_mul(&g)?.f_expand([side, side], false)?], 0)?.f_unsqueeze(0)?
    };
    let afters = ks.iter().map(|&k| face::flow::warp(&b, &field.f_mul_scalar(k)?)).collect::<Result<Vec<_>>>()?;
    let afters = Tensor::f_cat(&afters, 0)?;
    let map = quad.frame_map(side as usize);
    let view = ImageView::packed(&rgb, w as u32, h as u32, PixelFormat::Rgb8)?;
    let [.., lw, lh] = face::Transfer::new(&view, &map, &b, &afters, &ks, &params, &|| false)?.layer_box();
    let model = format!("transfer onto 4000x3000 ({lw}x{lh} px face region)");
    t.time(&model, 7, &format!("flows + 7 layers from {side}² renders"), || {
        let tr = face::Transfer::new(&view, &map, &b, &afters, &ks, &params, &|| false)?;
        for &k in &ks {
            tr.layer(k)?;
        }
        Ok(())
    })?;
    let tr = face::Transfer::new(&view, &map, &b, &afters, &ks, &params, &|| false)?;
    t.time(&model, 1, "one layer at k = 1.7 (live strength)", || {
        tr.layer(1.7)?;
        Ok(())
    })?;
    drop((tr, rgb));
    // The worst case for memory: the whole photo as the selection, so the region is every pixel.
    let (k1, f1) = (&afters.f_narrow(0, 4, 1)?, &[1.0]);
    for (w, h) in [(4000u32, 3000u32), (8000, 6000), (12000, 9000)] {
        let mut rgb = clipshape::memory::zeroed::<u8>(w as usize * h as usize * 3, String::new)?;
        for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
            let (x, y) = (i % w as usize, i / w as usize);
            px.copy_from_slice(&[(x / 7) as u8, (y / 5) as u8, ((x + y) / 11) as u8]);
        }
        let view = ImageView::packed(&rgb, w, h, PixelFormat::Rgb8)?;
        let map = face::FrameMap::from_box([0.0, 0.0, w as f32, h as f32], side as usize, side as usize)?;
        // What earlier rows freed goes back first, so the baseline is the photo and the models.
        clipshape::memory::release_free();
        let before = peak::current_mb();
        peak::reset();
        let start = Instant::now();
        let layer = face::Transfer::new(&view, &map, &b, k1, f1, &params, &|| false)?.layer(1.0)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let (peak, base) = (peak::read_mb(), before.unwrap_or(0.0));
        let above = peak.map(|p| p - base).unwrap_or(0.0);
        let own = (w as f64 * h as f64 * 7.0) / 1e6 / 1.048576;
        let op = format!(
            "flow + one layer, the whole photo selected: {above:.0} MB above the photo = {own:.0} MB of its \
             copy of the region (3 B/px) and the layer (4 B/px) + {:.0} MB of work",
            above - own
        );
        t.push(&format!("transfer onto {w}x{h} ({} MP)", (w * h) as f64 / 1e6), 1, &op, ms, peak);
        drop(layer);
    }
    Ok(())
}
