//! `G_{θ + Σ k·c_i·x_i}(w + Σ k·c_j·Δw_j)` for a list of strengths k, batched. Shifts on the
//! same layer add linearly; shifts on different layers each shift their own layer, all in the
//! same pass (a shift of several layers moves each of them); W+ directions (the latent
//! baseline) move the code.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::edit::shift::Target;
use crate::edit::{Latent, Shift};
use crate::error::{Error, Result};
use crate::layer::LayerId;
use crate::models::stylegan2::{Generator, Synthesis};

/// Images per forward pass when rendering many strengths; bounds memory at 1024 px.
pub const DEFAULT_MAX_BATCH: usize = 8;
/// The most strengths one render takes: every image is held in memory at once (a million
/// strengths once reached 17 GB before the kernel stopped the process).
pub const MAX_STRENGTHS: usize = 256;

/// Refuses a strength that is not a finite number, by its value. Strengths reach the generator
/// as 32-bit floats, where anything beyond ±3.4·10³⁸ is infinite (and the picture NaN).
pub fn check_strengths(strengths: &[f64]) -> Result<()> {
    match strengths.iter().find(|k| !(k.is_finite() && (**k as f32).is_finite())) {
        Some(k) => Err(Error::arg(
            "strengths",
            format!("{k:?} is not a finite number (strengths are 32-bit floats, within ±3.4e38)"),
        )),
        None => Ok(()),
    }
}

/// The first strength whose render is not finite everywhere.
fn non_finite_strength(images: &Tensor, ks: &[f64]) -> Result<Option<f64>> {
    let finite = images.f_isfinite()?.f_flatten(1, -1)?.f_all_dim(1, false)?;
    let finite = Vec::<bool>::try_from(finite)?;
    Ok(finite.iter().zip(ks).find(|(ok, _)| !**ok).map(|(_, k)| *k))
}

/// Renders one image per strength: (S, 3, H, W) float32 in about [-1, 1], on the generator's
/// device. Each `(shift, coefficient)` contributes `strength · coefficient · shift` to its layer.
pub fn render(
    g: &Generator,
    latent: &Latent,
    shifts: &[(&Shift, f64)],
    strengths: &[f64],
    max_batch: usize,
) -> Result<Tensor> {
    render_with(g, latent, shifts, strengths, max_batch, &Synthesis::default(), &|| false)
}

/// [`render`] computed as `synthesis` says (e.g. stopped at a smaller side), asking
/// `cancelled` before each batch.
pub fn render_with(
    g: &Generator,
    latent: &Latent,
    shifts: &[(&Shift, f64)],
    strengths: &[f64],
    max_batch: usize,
    synthesis: &Synthesis,
    cancelled: &dyn Fn() -> bool,
) -> Result<Tensor> {
    if strengths.is_empty() {
        return Err(Error::arg("strengths", "the list is empty; give at least one strength (0 = unedited)"));
    }
    if strengths.len() > MAX_STRENGTHS {
        return Err(Error::arg(
            "strengths",
            format!(
                "{} given; one render takes at most {MAX_STRENGTHS} (render the rest in another call)",
                strengths.len()
            ),
        ));
    }
    check_strengths(strengths)?;
    if let Some((_, c)) = shifts.iter().find(|(_, c)| !(c.is_finite() && (*c as f32).is_finite())) {
        return Err(Error::arg("shift strength", format!("{c:?} is not a finite 32-bit number")));
    }
    let mut by_target: BTreeMap<Target, Vec<(&Tensor, f64)>> = BTreeMap::new();
    for (s, c) in shifts {
        for p in &s.parts {
            let want = p.target.shape(g)?;
            if p.x.size() != want {
                return Err(Error::Mismatch(format!(
                    "shift for `{}` has shape {:?}, this generator's is {want:?}",
                    p.target,
                    p.x.size()
                )));
            }
            by_target.entry(p.target).or_default().push((&p.x, *c));
        }
    }
    let device = g.device();
    let max_batch = max_batch.max(1);
    let mut images = Vec::new();
    let _heap = (device == tch::Device::Cpu).then(crate::memory::HeapReuse::new);
    tch::no_grad(|| -> Result<()> {
        for chunk in strengths.chunks(max_batch) {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let b = chunk.len() as i64;
            let k = Tensor::f_from_slice(chunk)?.f_to_kind(Kind::Float)?.f_to_device(device)?;
            let mut w = latent.wplus.f_unsqueeze(0)?.f_expand([b, -1, -1], false)?;
            let mut deltas = Vec::with_capacity(by_target.len());
            for (target, xs) in &by_target {
                // Σ_i k · c_i · x_i, one row per strength.
                let mut delta: Option<Tensor> = None;
                for (x, c) in xs {
                    // Weight shifts carry a batch dim of 1 already; W+ directions get one.
                    let x = match target {
                        Target::WPlus => x.f_unsqueeze(0)?,
                        Target::Layer(_) => x.shallow_clone(),
                    };
                    let coef = k.f_mul_scalar(*c)?;
                    let shape: Vec<i64> = std::iter::once(b).chain(std::iter::repeat_n(1, x.dim() - 1)).collect();
                    let term = x.f_mul(&coef.f_view(shape.as_slice())?)?;
                    delta = Some(match delta {
                        Some(d) => d.f_add(&term)?,
                        None => term,
                    });
                }
                match (target, delta) {
                    (Target::Layer(l), Some(d)) => deltas.push((*l, d)),
                    (Target::WPlus, Some(d)) => w = w.f_add(&d)?,
                    (_, None) => {}
                }
            }
            let refs: Vec<(LayerId, &Tensor)> = deltas.iter().map(|(l, d)| (*l, d)).collect();
            let pictures = g.synthesis_with(&w, &refs, synthesis)?;
            if let Some(k) = non_finite_strength(&pictures, chunk)? {
                return Err(Error::arg(
                    "strengths",
                    format!("at strength {k:?} the render holds NaN or infinite values: the shift is too strong there"),
                ));
            }
            images.push(pictures);
        }
        Ok(())
    })?;
    Ok(Tensor::f_cat(&images, 0)?)
}

pub use crate::pixels::PixelFormat;

/// (S, 3, H, W) in [-1, 1] → S images of H·W·channels bytes, pixel = round((x+1)·127.5)
/// clamped to 0..=255, opaque alpha.
pub fn to_rgba8(images: &Tensor, format: PixelFormat) -> Result<Vec<Vec<u8>>> {
    let (s, c, h, w) = images.size4()?;
    if c != 3 {
        return Err(Error::arg("images", format!("expected 3 channels, got {c}")));
    }
    let mut u8s = images
        .f_add_scalar(1.0)?
        .f_mul_scalar(127.5)?
        .f_round()?
        .f_clamp(0.0, 255.0)?
        .f_to_kind(Kind::Uint8)?
        .f_to_device(Device::Cpu)?;
    if format == PixelFormat::Bgra8 {
        u8s = u8s.f_flip([1])?;
    }
    if format != PixelFormat::Rgb8 {
        let alpha = Tensor::f_full([s, 1, h, w], 255, (Kind::Uint8, Device::Cpu))?;
        u8s = Tensor::f_cat(&[u8s, alpha], 1)?;
    }
    let hwc = u8s.f_permute([0, 2, 3, 1])?.f_contiguous()?;
    let per = (h * w) as usize * format.channels();
    let mut flat = vec![0u8; per * s as usize];
    let n = flat.len();
    hwc.f_copy_data_u8(&mut flat, n)?;
    Ok(flat.chunks(per).map(<[u8]>::to_vec).collect())
}

/// Writes an RGBA8/RGB8 buffer as PNG, atomically.
pub fn save_png(path: &std::path::Path, pixels: &[u8], width: u32, height: u32, format: PixelFormat) -> Result<()> {
    let color = match format {
        PixelFormat::Rgb8 => image::ExtendedColorType::Rgb8,
        PixelFormat::Rgba8 => image::ExtendedColorType::Rgba8,
        PixelFormat::Bgra8 => return Err(Error::arg("format", "PNG output takes RGB8 or RGBA8")),
    };
    let mut bytes = encoded_buffer(pixels.len(), height)?;
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(pixels, width, height, color)
        .map_err(|e| Error::Internal(format!("PNG encoding of {}: {e}", path.display())))?;
    crate::io::write_atomic(path, &bytes)
}

/// Room for a picture's encoded bytes, asked for before encoding (an encoder growing its
/// buffer would abort the process when memory runs out): the raw bytes and a margin cover
/// PNG's worst case (stored blocks, a filter byte a row) and any JPEG.
fn encoded_buffer(raw: usize, height: u32) -> Result<Vec<u8>> {
    let room = raw + raw / 64 + height as usize + 64 * 1024;
    crate::memory::with_capacity(room, || format!("encoding a picture of {raw} bytes"))
}

/// Writes an 8-bit picture in the format its extension names (`.png`, `.jpg` / `.jpeg`),
/// atomically; any other extension is refused rather than written under a misleading name.
pub fn save_image(path: &std::path::Path, pixels: &[u8], width: u32, height: u32, format: PixelFormat) -> Result<()> {
    match image_file_kind(path)? {
        ImageFileKind::Png => save_png(path, pixels, width, height, format),
        ImageFileKind::Jpeg => {
            let n = width as usize * height as usize;
            let rgb = match format {
                PixelFormat::Rgb8 => std::borrow::Cow::Borrowed(pixels),
                // JPEG has no alpha: drop it (the library's renders are opaque).
                PixelFormat::Rgba8 | PixelFormat::Bgra8 => {
                    let order = if format == PixelFormat::Bgra8 { [2, 1, 0] } else { [0, 1, 2] };
                    let mut rgb = crate::memory::with_capacity(n * 3, || format!("a {width}×{height} px picture"))?;
                    rgb.extend(pixels.chunks_exact(4).flat_map(|p| order.map(|c| p[c])));
                    std::borrow::Cow::Owned(rgb)
                }
            };
            let mut bytes = encoded_buffer(n * 3, height)?;
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
                .write_image(&rgb, width, height, image::ExtendedColorType::Rgb8)
                .map_err(|e| Error::Internal(format!("JPEG encoding of {}: {e}", path.display())))?;
            crate::io::write_atomic(path, &bytes)
        }
    }
}

/// The picture formats [`save_image`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFileKind {
    Png,
    Jpeg,
}

/// What [`save_image`] would write at `path`, by its extension; any other name is refused.
/// Callers check an output name with it before any work.
pub fn image_file_kind(path: &std::path::Path) -> Result<ImageFileKind> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => Ok(ImageFileKind::Png),
        Some("jpg" | "jpeg") => Ok(ImageFileKind::Jpeg),
        _ => Err(Error::arg("out", format!("{}: name a .png or .jpg file", path.display()))),
    }
}

use image::ImageEncoder as _;
