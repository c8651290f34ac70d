//! Photos in the CLI: `faces`, `align`, and the photo side of `edit` / `apply` (which face or
//! box is edited, and the photo-sized composites and layers written for it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use clipshape::context::photo::{layer_on_canvas, Paste, Subject};
use clipshape::context::Context;
use clipshape::edit::encode::ImageView;
use clipshape::edit::render::{image_file_kind, save_image, save_png, ImageFileKind};
use clipshape::edit::{Latent, PixelFormat};
use clipshape::face::{self, Face, FaceQuad, Layer, Mtcnn};
use clipshape::store::ModelStore;

use crate::files::load_rgba;
use crate::output::{Folder, OutputFiles};
use crate::{device, emit};

#[derive(Args, Clone, Debug)]
pub struct PhotoOptions {
    /// How the photo is prepared: face (find the face, align it as FFHQ), none (the selection or
    /// the whole photo), auto (face for face model sets, none otherwise)
    #[arg(long, default_value = "auto")]
    pub align: String,
    /// How results go back onto the photo: warp (the photo's own pixels moved by the edit's
    /// displacement), changes (the render, only where the edit changes the picture), region
    /// (the render over the whole face region / selection, feathered), frame (the generator's
    /// frame as is)
    #[arg(long, default_value = "warp")]
    pub paste: String,
    #[command(flatten)]
    pub subject: SubjectOptions,
}

/// Every face found in a photo, and the index of the one edited.
pub type FacesFound = (Vec<Face>, usize);

/// Which part of a photo is edited: a detected face, or a selection (`edit`, `apply`, `transfer`).
#[derive(Args, Clone, Debug)]
pub struct SubjectOptions {
    /// The face to edit, by its index in `clipshape faces` (default: the face inside --select,
    /// else the largest)
    #[arg(long)]
    pub face: Option<usize>,
    /// A selection x1,y1,x2,y2 in photo pixels: the box to edit, or where the face to edit is
    #[arg(long, allow_hyphen_values = true)]
    pub select: Option<String>,
    /// Directory holding MTCNN's pnet.pt, rnet.pt, onet.pt (default: the model store's)
    #[arg(long)]
    pub mtcnn: Option<PathBuf>,
}

impl SubjectOptions {
    /// The subject of a `width` × `height` photo: with `align_face`, the face `detect` finds
    /// there (the one inside the selection, `--face N`, else the largest) with every face found;
    /// else the selection, or the whole photo.
    pub fn choose(
        &self,
        photo: &Path,
        width: u32,
        height: u32,
        align_face: bool,
        detect: impl FnOnce() -> Result<Vec<Face>>,
    ) -> Result<(Subject, Option<FacesFound>)> {
        let selection = self.select.as_deref().map(parse_selection).transpose()?;
        if align_face {
            let faces = detect()?;
            let i = face::pick_face(&faces, selection, self.face, &photo.display().to_string())?;
            return Ok((Subject::face(faces[i])?, Some((faces, i))));
        }
        if self.face.is_some() {
            bail!("--face picks a detected face: it needs --align face (or a face model set)");
        }
        let subject = match selection {
            Some(s) => Subject::selection(s, width, height)?,
            None => Subject::whole(width, height),
        };
        Ok((subject, None))
    }
}

/// The three detector files: from `--mtcnn DIR` (facenet-pytorch's names or the store's), else
/// the model store's.
pub fn detector_files(dir: Option<&Path>) -> Result<[PathBuf; 3]> {
    let pick = clipshape::face::detector_files_in;
    if let Some(d) = dir {
        return pick(d).with_context(|| format!("--mtcnn {}: no pnet.pt, rnet.pt and onet.pt there", d.display()));
    }
    let store = ModelStore::from_env()?;
    pick(store.root()).with_context(|| {
        format!(
            "no face detector: fetch it with `clipshape models fetch ffhq` (MTCNN goes to {}), or give --mtcnn DIR",
            store.root().display()
        )
    })
}

pub fn parse_selection(s: &str) -> Result<[f32; 4]> {
    let v: Vec<f32> = s.split(',').map(|p| p.trim().parse::<f32>()).collect::<Result<_, _>>().ok().unwrap_or_default();
    match v.as_slice() {
        [x1, y1, x2, y2] if v.iter().all(|x| x.is_finite()) && x2 > x1 && y2 > y1 => Ok([*x1, *y1, *x2, *y2]),
        _ => bail!("--select {s}: expected x1,y1,x2,y2 in photo pixels with x2 > x1 and y2 > y1"),
    }
}

/// A photo with what of it is edited.
pub struct PhotoJob {
    pub path: PathBuf,
    pub rgba: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub subject: Subject,
    pub paste: Paste,
    /// All faces found (face alignment only) and the index of the one edited.
    pub faces: Option<FacesFound>,
}

impl PhotoJob {
    pub fn view(&self) -> Result<ImageView<'_>> {
        ImageView::packed(&self.rgba, self.width, self.height, PixelFormat::Rgba8)
            .with_context(|| self.path.display().to_string())
    }

    /// Reads the photo and decides the subject (finding the face when aligning).
    pub fn prepare(ctx: &Context, path: &Path, opts: &PhotoOptions) -> Result<PhotoJob> {
        let paste = Paste::parse(&opts.paste)?;
        let (rgba, width, height) = load_rgba(path)?;
        let face_domain = ctx.domain.as_ref().is_some_and(|d| d.align == clipshape::domain::Align::Ffhq);
        let align_face = match opts.align.as_str() {
            "auto" => face_domain,
            "face" => true,
            "none" => false,
            other => bail!("--align: `{other}` is not auto, face or none"),
        };
        let view =
            ImageView::packed(&rgba, width, height, PixelFormat::Rgba8).with_context(|| path.display().to_string())?;
        let (subject, faces) = opts.subject.choose(path, width, height, align_face, || {
            if ctx.detector.is_none() {
                bail!(
                    "no face detector: give MTCNN's folder with --mtcnn DIR, fetch the `ffhq` set \
                     (`clipshape models fetch ffhq`), or --align none to use the photo as it is"
                );
            }
            Ok(ctx.detect_faces(&view)?)
        })?;
        Ok(PhotoJob { path: path.to_path_buf(), rgba, width, height, subject, paste, faces })
    }

    /// The photo as the contact sheet shows it (nearest pixels, over mid-grey), at most
    /// `height` rows: a 100 MP photo is not copied whole for a 256 px tile.
    pub fn thumbnail(&self, height: usize) -> (Vec<u8>, u32, u32) {
        let (w, h) = (self.width as usize, self.height as usize);
        let th = height.min(h).max(1);
        let tw = (w * th).div_ceil(h.max(1)).max(1);
        let mut out = Vec::with_capacity(tw * th * 3);
        for y in 0..th {
            let sy = y * h / th;
            for x in 0..tw {
                let p = &self.rgba[(sy * w + (x * w / tw).min(w - 1)) * 4..][..4];
                let a = p[3] as f32 / 255.0;
                out.extend(p[..3].iter().map(|&c| (c as f32 * a + 127.5 * (1.0 - a)).round() as u8));
            }
        }
        (out, tw as u32, th as u32)
    }

    pub fn encode(&self, ctx: &Context) -> Result<Latent> {
        Ok(ctx.encode_subject(&self.view()?, &self.subject)?)
    }

    /// `NN.png` (the photo with the edit pasted) and `layer-NN.png` (the layer alone, photo-sized
    /// RGBA) per render, and `faces.json` when a face was used.
    pub fn write(&self, ctx: &Context, renders: &tch::Tensor, render_0: &tch::Tensor, out: &Folder) -> Result<()> {
        let layers = ctx.paste_layers(renders, Some(render_0), &self.subject, self.paste, self.width, self.height)?;
        self.write_layers(&layers, out)
    }

    /// [`PhotoJob::write`] of layers already made (a transfer's).
    pub fn write_layers(&self, layers: &[Layer], out: &Folder) -> Result<()> {
        for (i, layer) in layers.iter().enumerate() {
            crate::signals::check_interrupted()?;
            // A photo with transparency keeps it: its composites are RGBA with its own alpha.
            write_composite(&out.join(&format!("{i:02}.png")), &self.rgba, self.width, self.height, layer)?;
            crate::signals::check_interrupted()?;
            let canvas = layer_on_canvas(layer, self.width, self.height)?;
            save_png(&out.join(&format!("layer-{i:02}.png")), &canvas, self.width, self.height, PixelFormat::Rgba8)?;
        }
        if let Some((faces, i)) = &self.faces {
            let json = serde_json::json!({
                "photo": self.path.display().to_string(),
                "used": i,
                "faces": faces.iter().map(face_json).collect::<Result<Vec<_>>>()?,
            });
            clipshape::io::write_atomic(&out.join("faces.json"), format!("{json:#}\n").as_bytes())?;
        }
        Ok(())
    }
}

pub fn face_json(f: &Face) -> Result<serde_json::Value> {
    let q = FaceQuad::from_landmarks(&f.landmarks)?;
    Ok(serde_json::json!({
        "box": f.bbox,
        "score": f.score,
        "landmarks": f.landmarks,
        "quad": q.quad,
    }))
}

/// MTCNN on a photo, stopped by Ctrl-C between its stages.
fn detect(photo: &Path, mtcnn: Option<&Path>, rgb: &[u8], w: u32, h: u32, device: tch::Device) -> Result<Vec<Face>> {
    let [p, r, o] = detector_files(mtcnn)?;
    let detector = Mtcnn::load(&p, &r, &o, device)?;
    let faces = detector.detect_cancellable(rgb, w as usize, h as usize, &crate::signals::interrupted);
    faces.with_context(|| format!("finding the faces in {}", photo.display()))
}

/// A photo read for `faces`, `align` and `transfer`: RGBA8 and its RGB over mid-grey.
fn read_photo(photo: &Path) -> Result<(Vec<u8>, Vec<u8>, u32, u32)> {
    let (rgba, w, h) = load_rgba(photo)?;
    let view = ImageView::packed(&rgba, w, h, PixelFormat::Rgba8).with_context(|| photo.display().to_string())?;
    let rgb = view.rgb8_composited()?;
    Ok((rgba, rgb, w, h))
}

/// `clipshape faces PHOTO`: every face, by descending score.
pub fn faces_command(photo: &Path, mtcnn: Option<&Path>, json: bool, device: tch::Device) -> Result<String> {
    let (_, rgb, w, h) = read_photo(photo)?;
    let faces = detect(photo, mtcnn, &rgb, w, h, device)?;
    if json {
        let list = faces.iter().map(face_json).collect::<Result<Vec<_>>>()?;
        return Ok(format!("{}\n", serde_json::Value::Array(list)));
    }
    if faces.is_empty() {
        return Ok(format!(
            "no face found in {}; faces smaller than {} px are not detected\n",
            crate::text::escaped(&photo.display().to_string()),
            face::MIN_FACE_SIZE as u32
        ));
    }
    let mut text = String::from("face  score     x1      y1      x2      y2\n");
    for (i, f) in faces.iter().enumerate() {
        let [x1, y1, x2, y2] = f.bbox;
        text += &format!("{i:<5} {:.4}  {x1:>6.1}  {y1:>6.1}  {x2:>6.1}  {y2:>6.1}\n", f.score);
    }
    Ok(text)
}

/// `clipshape align PHOTO --out a.png`: the FFHQ-aligned crop of one face.
pub fn align_command(a: &AlignArgs, device: tch::Device) -> Result<Vec<PathBuf>> {
    if !(16..=face::align::MAX_OUTPUT).contains(&a.size) {
        bail!("--size {}: expected 16..={}", a.size, face::align::MAX_OUTPUT);
    }
    image_file_kind(&a.out)?;
    let out = OutputFiles::prepare(&[("--out", &a.out)], &[("photo", &a.photo)])?;
    let (_, rgb, w, h) = read_photo(&a.photo)?;
    let faces = detect(&a.photo, a.mtcnn.as_deref(), &rgb, w, h, device)?;
    let selection = a.select.as_deref().map(parse_selection).transpose()?;
    let i = face::pick_face(&faces, selection, a.face, &a.photo.display().to_string())?;
    let quad = FaceQuad::from_landmarks(&faces[i].landmarks)?;
    let aligned = face::align(&rgb, w as usize, h as usize, &quad, a.size)?;
    crate::signals::check_interrupted()?;
    save_image(out.path(0), &aligned, a.size as u32, a.size as u32, PixelFormat::Rgb8)?;
    out.commit()
}

/// BEFORE or AFTER of a transfer as the flow sees them: (1, 3, h, w) in [-1, 1], resized
/// (antialiased, in 8 bits) to at most the side edits render at before anything else is made
/// of them, so a huge pair costs one decoded picture at a time. Returns the picture's own size
/// too.
fn transfer_frame(path: &Path, device: tch::Device) -> Result<(tch::Tensor, u32, u32)> {
    let (px, w, h) = load_rgba(path)?;
    let side = clipshape::context::photo::FLOW_SIDE as f64;
    let scale = (side / w.max(h) as f64).min(1.0);
    let (fw, fh) = (((w as f64 * scale).round() as u32).max(8), ((h as f64 * scale).round() as u32).max(8));
    let img = image::RgbaImage::from_raw(w, h, px).context("picture buffer")?;
    let img = if (fw, fh) == (w, h) {
        img
    } else {
        image::imageops::resize(&img, fw, fh, image::imageops::FilterType::Triangle)
    };
    let rgb = ImageView::packed(img.as_raw(), fw, fh, PixelFormat::Rgba8)
        .with_context(|| path.display().to_string())?
        .rgb8_composited()?;
    let t = tch::Tensor::f_from_slice(&rgb)?
        .f_view([1, fh as i64, fw as i64, 3])?
        .f_permute([0, 3, 1, 2])?
        .f_to_kind(tch::Kind::Float)?
        .f_to_device(device)?;
    Ok((t / 127.5 - 1.0, w, h))
}

/// `clipshape transfer PHOTO BEFORE AFTER --out OUT.png`: the photo's own pixels moved by the
/// displacement from BEFORE to AFTER. Every output is checked before the work and all are
/// swapped in together at the end; no input is ever written over.
pub fn transfer_command(a: &TransferArgs, device: tch::Device) -> Result<Vec<PathBuf>> {
    let mut outputs = vec![("--out", a.out.as_path())];
    image_file_kind(&a.out)?;
    if let Some(l) = &a.layer_out {
        if image_file_kind(l)? != ImageFileKind::Png {
            bail!("--layer-out {}: a layer has transparency: name a .png file", l.display());
        }
        outputs.push(("--layer-out", l.as_path()));
    }
    let inputs = [("PHOTO", a.photo.as_path()), ("BEFORE", a.before.as_path()), ("AFTER", a.after.as_path())];
    let out = OutputFiles::prepare(&outputs, &inputs)?;
    let align_face = match a.align.as_str() {
        "face" => true,
        "none" => false,
        other => bail!("--align: `{other}` is not face or none"),
    };
    let (rgba, rgb, w, h) = read_photo(&a.photo)?;
    let (subject, _) = a
        .subject
        .choose(&a.photo, w, h, align_face, || detect(&a.photo, a.subject.mtcnn.as_deref(), &rgb, w, h, device))?;
    drop(rgb);
    let (before, bw, bh) = transfer_frame(&a.before, device)?;
    let (after, aw, ah) = transfer_frame(&a.after, device)?;
    if (aw, ah) != (bw, bh) {
        bail!(
            "{} is {aw}×{ah} and {} is {bw}×{bh}: they must be the same frame",
            a.after.display(),
            a.before.display()
        );
    }
    if matches!(subject, Subject::Face { .. }) && bw != bh {
        bail!("{} is {bw}×{bh}: a face's frame is its FFHQ-aligned square", a.before.display());
    }
    let (_, _, fh, fw) = before.size4()?;
    let map = subject.frame_map(fw as usize, fh as usize)?;
    let view = ImageView::packed(&rgba, w, h, PixelFormat::Rgba8)?;
    let interrupted = crate::signals::interrupted;
    let params = clipshape::face::TransferParams::default();
    let transfer = clipshape::face::Transfer::new(&view, &map, &before, &after, &[1.0], &params, &interrupted)?;
    let layer = transfer.layer_cancellable(1.0, &interrupted)?;
    crate::text::say(&format!(
        "moved the photo's own pixels; the edited frame was blended in where the displacement could not explain it: {:.1} % of the {}",
        100.0 * transfer.blended_fraction(1.0)?,
        if matches!(subject, Subject::Face { .. }) { "face's square" } else { "selection" }
    ));
    drop(transfer);
    crate::signals::check_interrupted()?;
    write_composite(out.path(0), &rgba, w, h, &layer)?;
    if a.layer_out.is_some() {
        crate::signals::check_interrupted()?;
        save_png(out.path(1), &layer_on_canvas(&layer, w, h)?, w, h, PixelFormat::Rgba8)?;
    }
    out.commit()
}

/// The photo with `layer` over it at `path`: RGBA when the photo has transparency and the file
/// can hold it (its own alpha kept, as `edit`'s composites), else RGB.
fn write_composite(path: &Path, rgba: &[u8], w: u32, h: u32, layer: &Layer) -> Result<()> {
    let view = ImageView::packed(rgba, w, h, PixelFormat::Rgba8)?;
    if !view.is_opaque() && image_file_kind(path)? == ImageFileKind::Png {
        let composite = face::composite_rgba(rgba, w as usize, h as usize, layer)?;
        save_png(path, &composite, w, h, PixelFormat::Rgba8)?;
    } else {
        let composite = face::composite(&view.rgb8_composited()?, w as usize, h as usize, layer)?;
        save_image(path, &composite, w, h, PixelFormat::Rgb8)?;
    }
    Ok(())
}

#[derive(Args, Clone)]
pub struct FacesArgs {
    pub photo: PathBuf,
    /// Print JSON: [{"box", "score", "landmarks", "quad"}]
    #[arg(long)]
    pub json: bool,
    /// Directory holding MTCNN's pnet.pt, rnet.pt, onet.pt (default: the model store's)
    #[arg(long)]
    pub mtcnn: Option<PathBuf>,
}

pub fn faces(cli: &crate::Cli, args: &FacesArgs) -> Result<()> {
    let FacesArgs { photo, json, mtcnn } = args;
    emit(&faces_command(photo, mtcnn.as_deref(), *json, device(cli)?.resolve()?)?);
    Ok(())
}

#[derive(Args, Clone)]
pub struct AlignArgs {
    pub photo: PathBuf,
    /// The face, by its index in `clipshape faces` (default: inside --select, else the largest)
    #[arg(long)]
    pub face: Option<usize>,
    /// Where the face is: x1,y1,x2,y2 in photo pixels
    #[arg(long, allow_hyphen_values = true)]
    pub select: Option<String>,
    /// Side of the aligned square (256: e4e's input; 1024: the FFHQ generator's frame)
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    #[arg(long)]
    pub mtcnn: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn align(cli: &crate::Cli, args: &AlignArgs) -> Result<()> {
    for p in align_command(args, device(cli)?.resolve()?)? {
        crate::emit_path(&p);
    }
    Ok(())
}

#[derive(Args, Clone)]
pub struct TransferArgs {
    pub photo: PathBuf,
    /// The frame unedited: for a face, its FFHQ-aligned square (any size, e.g. `clipshape align
    /// --size 1024`); for a selection, the box as `edit` maps it (the frame stretched onto it)
    pub before: PathBuf,
    /// The same frame edited (the same size)
    pub after: PathBuf,
    /// face (find the face and align it as FFHQ) or none (the selection, else the whole photo)
    #[arg(long, default_value = "face")]
    pub align: String,
    #[command(flatten)]
    pub subject: SubjectOptions,
    /// Also write the change alone: a photo-sized RGBA layer, opaque where pixels moved
    #[arg(long)]
    pub layer_out: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn transfer(cli: &crate::Cli, args: &TransferArgs) -> Result<()> {
    let dev = device(cli)?.resolve()?;
    for p in transfer_command(args, dev)? {
        crate::emit_path(&p);
    }
    Ok(())
}
