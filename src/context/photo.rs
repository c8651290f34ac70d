//! Editing an ordinary photo: where the edited picture sits in it (a detected face, FFHQ-aligned,
//! or a box the user selected), what the encoder is fed from it, and how renders go back onto it
//! as photo-aligned layers.
//!
//! The generator's frame and the photo are tied by one affine [`FrameMap`]: for a face, the
//! aligned square's corners are the FFHQ quad in the photo; for a box, the frame is stretched
//! onto the box. Encoding samples the photo through that map at the encoder's input size;
//! the default ([`Paste::Warp`]) moves the photo's own pixels by the displacement between the
//! unedited and the edited render ([`Context::transfer`]); the other modes paste the renders
//! through the map's inverse.

use tch::Tensor;

use super::Context;
use crate::edit::encode::ImageView;
use crate::edit::render::{render_with, DEFAULT_MAX_BATCH};
use crate::edit::{to_rgba8, Latent, PixelFormat, Shift};
use crate::error::{Error, Result};
use crate::face::{self, AlphaMode, Face, FaceQuad, FrameMap, Layer, PasteParams, Transfer, TransferParams};
use crate::models::stylegan2::Synthesis;

/// The side renders are made at for a transfer, and what an edit of a photo optimises at: the
/// flow of a smooth shape edit needs no more (on the transfer fixtures a 256² flow is 0.24 px
/// off the true field in 1024² pixels, and moves the photo as close to the truth as a 1024²
/// one; BENCHMARKS.md "Transfer"), and a 1024 px generator's last two blocks are most of its cost.
pub const FLOW_SIDE: i64 = 256;

/// What of the photo is edited.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// A detected face, aligned as FFHQ was.
    Face { face: Face, quad: FaceQuad },
    /// A box [x1, y1, x2, y2] of the photo (a selection, or the whole photo).
    Box([f32; 4]),
}

impl Subject {
    /// The face with the FFHQ quad of its landmarks.
    pub fn face(face: Face) -> Result<Subject> {
        let quad = FaceQuad::from_landmarks(&face.landmarks)?;
        Ok(Subject::Face { face, quad })
    }

    /// The whole `width` × `height` photo.
    pub fn whole(width: u32, height: u32) -> Subject {
        Subject::Box([0.0, 0.0, width as f32, height as f32])
    }

    /// A selection, clipped to the photo and snapped outward to whole pixels (what a host's
    /// selection is); an empty intersection is an error.
    pub fn selection(b: [f32; 4], width: u32, height: u32) -> Result<Subject> {
        if !b.iter().all(|v| v.is_finite()) {
            return Err(Error::arg("selection", format!("{b:?} is not finite")));
        }
        if !(b[2] > b[0] && b[3] > b[1]) {
            return Err(Error::arg("selection", format!("{b:?} is not a box x1 < x2, y1 < y2")));
        }
        let x1 = b[0].floor().max(0.0);
        let y1 = b[1].floor().max(0.0);
        let x2 = b[2].ceil().min(width as f32);
        let y2 = b[3].ceil().min(height as f32);
        if x2 - x1 < 1.0 || y2 - y1 < 1.0 {
            return Err(Error::arg("selection", format!("{b:?} does not overlap the {width}×{height} photo")));
        }
        Ok(Subject::Box([x1, y1, x2, y2]))
    }

    /// How a `frame_width` × `frame_height` picture maps onto the photo.
    pub fn frame_map(&self, frame_width: usize, frame_height: usize) -> Result<FrameMap> {
        match self {
            Subject::Face { quad, .. } => Ok(quad.frame_map(frame_width).resized(frame_width, frame_height)),
            Subject::Box(b) => FrameMap::from_box(*b, frame_width, frame_height),
        }
    }
}

/// How the edit goes back onto the photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paste {
    /// The photo's own pixels moved by the edit's displacement (the default).
    Warp,
    /// The render, only where the edit changes the picture: the rest stays the photo's own.
    Changes,
    /// The whole face region / selection, feathered.
    Region,
    /// The generator's whole frame (no photo involved: the renders as they are).
    Frame,
}

impl Paste {
    pub fn parse(s: &str) -> Result<Paste> {
        match s {
            "warp" => Ok(Paste::Warp),
            "changes" => Ok(Paste::Changes),
            "region" => Ok(Paste::Region),
            "frame" => Ok(Paste::Frame),
            other => Err(Error::arg("paste", format!("`{other}` is not warp, changes, region or frame"))),
        }
    }

    fn alpha(self) -> Result<AlphaMode> {
        match self {
            Paste::Changes => Ok(AlphaMode::Changes),
            Paste::Region => Ok(AlphaMode::Region),
            Paste::Frame => Ok(AlphaMode::Frame),
            Paste::Warp => Err(Error::arg("paste", "warp moves the photo's pixels: use Context::transfer")),
        }
    }
}

/// An edit's transfer onto a photo, with the renders it was measured on.
pub struct PhotoTransfer {
    pub transfer: Transfer,
    /// (S, 3, h, w) the renders at the requested strengths and (1, 3, h, w) the unedited one,
    /// at [`FLOW_SIDE`], cropped to the frame.
    pub renders: Tensor,
    pub render_0: Tensor,
}

impl Context {
    /// The side warp-mode renders are made at: [`FLOW_SIDE`], or the generator's own if smaller.
    pub fn flow_side(&self) -> i64 {
        FLOW_SIDE.min(self.generator.config.size)
    }

    /// The edit's displacement on the photo: `latent` rendered unedited and at `strengths`
    /// (with `shifts`) at [`Context::flow_side`], the flows between them, and what the layers
    /// need of `photo` around `subject`. [`Transfer::layer`] then gives the photo at any
    /// strength between them. Cancellable through [`Context::cancel`].
    pub fn transfer(
        &self,
        photo: &ImageView,
        subject: &Subject,
        latent: &Latent,
        shifts: &[(&Shift, f64)],
        strengths: &[f64],
    ) -> Result<PhotoTransfer> {
        photo.validate()?;
        let synthesis = Synthesis { stop_at: Some(self.flow_side()), ..Synthesis::default() };
        let g = &self.generator;
        // One image a pass on the CPU: a batch of seven 256 px renders of a 1024 px generator
        // took the whole edit's peak from 2.6 to 3.8 GB for no speed (BENCHMARKS.md).
        let batch = if self.device.is_cuda() { DEFAULT_MAX_BATCH } else { 1 };
        self.cancellable(|cancelled| {
            let render_0 = self.to_frame(&render_with(g, latent, &[], &[0.0], 1, &synthesis, cancelled)?, None)?;
            let renders =
                self.to_frame(&render_with(g, latent, shifts, strengths, batch, &synthesis, cancelled)?, None)?;
            let (_, _, fh, fw) = renders.size4()?;
            let map = subject.frame_map(fw as usize, fh as usize)?;
            let transfer =
                Transfer::new(photo, &map, &render_0, &renders, strengths, &TransferParams::default(), cancelled)?;
            Ok(PhotoTransfer { transfer, renders, render_0 })
        })
    }

    /// The layers of `transfer` at `strengths`; cancellable through [`Context::cancel`] (a
    /// 100 MP photo's seven layers take seconds).
    pub fn transfer_layers(&self, transfer: &Transfer, strengths: &[f64]) -> Result<Vec<Layer>> {
        self.cancellable(|cancelled| strengths.iter().map(|&k| transfer.layer_cancellable(k, cancelled)).collect())
    }

    /// Every face MTCNN finds in the picture, by descending score.
    pub fn detect_faces(&self, photo: &ImageView) -> Result<Vec<Face>> {
        let detector = self.detector.as_ref().ok_or_else(|| {
            Error::arg(
                "face detector",
                "this context has no face detector: use the `ffhq` model set, or give the folder of \
                 MTCNN's files (pnet.pt, rnet.pt, onet.pt)",
            )
        })?;
        photo.validate()?;
        let rgb = photo.rgb8_composited()?;
        self.cancellable(|cancelled| {
            detector.detect_cancellable(&rgb, photo.width as usize, photo.height as usize, cancelled)
        })
    }

    /// The region M of the preservation term for an edit of `subject`, in pixels of the
    /// generator's output: the detected face's box, or the selection, mapped into the frame
    /// (clipped to it). None when it covers no pixel of the frame.
    pub fn subject_region(&self, subject: &Subject) -> Result<Option<[f32; 4]>> {
        let f = self.frame;
        let map = subject.frame_map(f.width as usize, f.height as usize)?;
        let b = match subject {
            Subject::Face { face, .. } => face.bbox,
            Subject::Box(b) => *b,
        };
        let corners = [[b[0], b[1]], [b[2], b[1]], [b[0], b[3]], [b[2], b[3]]];
        let mut lo = [f64::INFINITY; 2];
        let mut hi = [f64::NEG_INFINITY; 2];
        for [x, y] in corners {
            let Some(p) = map.to_frame(x as f64, y as f64) else { return Ok(None) };
            for i in 0..2 {
                lo[i] = lo[i].min(p[i]);
                hi[i] = hi[i].max(p[i]);
            }
        }
        let (x1, y1) = (lo[0].max(0.0), lo[1].max(0.0));
        let (x2, y2) = (hi[0].min(f.width as f64), hi[1].min(f.height as f64));
        if x2 - x1 < 1.0 || y2 - y1 < 1.0 {
            return Ok(None);
        }
        let (dx, dy) = (f.left as f64, f.top as f64);
        Ok(Some([(x1 + dx) as f32, (y1 + dy) as f32, (x2 + dx) as f32, (y2 + dy) as f32]))
    }

    /// The W+ code of the subject: the photo sampled through the subject's map at the encoder's
    /// input size (an FFHQ-aligned crop for a face, the box resized for a selection).
    pub fn encode_subject(&self, photo: &ImageView, subject: &Subject) -> Result<Latent> {
        photo.validate()?;
        let input = self.encoder()?.input_size;
        let (w, h) = (photo.width as usize, photo.height as usize);
        match subject {
            Subject::Face { quad, .. } => {
                if input.height != input.width {
                    return Err(Error::arg(
                        "align",
                        format!("face alignment gives a square, this encoder takes {}×{}", input.width, input.height),
                    ));
                }
                let side = input.width as usize;
                let aligned = face::align(&photo.rgb8_composited()?, w, h, quad, side)?;
                self.encode(&ImageView::packed(&aligned, side as u32, side as u32, PixelFormat::Rgb8)?)
            }
            // The box of the photo itself (a view, no copy): a 100 MP photo is read in strips.
            Subject::Box(b) => self.encode(&photo.crop(box_pixels(*b, w, h)?)?),
        }
    }

    /// One photo-aligned layer per image of `renders` ((S, 3, h, w) at the domain frame, as
    /// `to_frame` gives them); `render_0` is the unedited render, which only `Paste::Changes`
    /// needs.
    pub fn paste_layers(
        &self,
        renders: &Tensor,
        render_0: Option<&Tensor>,
        subject: &Subject,
        paste: Paste,
        photo_width: u32,
        photo_height: u32,
    ) -> Result<Vec<Layer>> {
        let (_, _, fh, fw) = renders.size4()?;
        let map = subject.frame_map(fw as usize, fh as usize)?;
        let frames = to_rgba8(renders, PixelFormat::Rgb8)?;
        let frame_0 = match render_0 {
            Some(r) => to_rgba8(r, PixelFormat::Rgb8)?.into_iter().next(),
            None => None,
        };
        let params = PasteParams::with_mode(paste.alpha()?);
        frames
            .iter()
            .map(|f| face::paste(photo_width as usize, photo_height as usize, &map, f, frame_0.as_deref(), &params))
            .collect()
    }
}

/// The whole pixels of box `b` inside a `w` × `h` photo: [x1, y1, x2, y2), non-empty.
fn box_pixels(b: [f32; 4], w: usize, h: usize) -> Result<[usize; 4]> {
    let x1 = (b[0].max(0.0) as usize).min(w);
    let y1 = (b[1].max(0.0) as usize).min(h);
    let x2 = (b[2].ceil().max(0.0) as usize).min(w);
    let y2 = (b[3].ceil().max(0.0) as usize).min(h);
    if x2 <= x1 || y2 <= y1 {
        return Err(Error::arg("selection", format!("{b:?} holds no pixel of the {w}×{h} photo")));
    }
    Ok([x1, y1, x2, y2])
}

/// A layer placed on a transparent photo-sized canvas: RGBA8, `width` × `height`.
pub fn layer_on_canvas(layer: &Layer, width: u32, height: u32) -> Result<Vec<u8>> {
    let (w, h) = (width as usize, height as usize);
    let mut out = crate::memory::zeroed(w * h * 4, || format!("a {w}×{h} px layer"))?;
    for y in 0..layer.height.min(h.saturating_sub(layer.y)) {
        let src = &layer.rgba[y * layer.width * 4..(y + 1) * layer.width * 4];
        let n = layer.width.min(w.saturating_sub(layer.x)) * 4;
        let at = ((layer.y + y) * w + layer.x) * 4;
        out[at..at + n].copy_from_slice(&src[..n]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_snap_to_pixels_and_clip_to_the_photo() {
        assert_eq!(
            Subject::selection([10.4, -5.0, 50.2, 30.0], 40, 40).unwrap(),
            Subject::Box([10.0, 0.0, 40.0, 30.0])
        );
        assert!(Subject::selection([50.0, 0.0, 60.0, 10.0], 40, 40).is_err());
        assert!(Subject::selection([0.0, 0.0, f32::NAN, 10.0], 40, 40).is_err());
    }

    #[test]
    fn boxes_crop_exactly_and_layers_land_where_they_belong() {
        let (w, h) = (5usize, 4usize);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| i as u8).collect();
        let b = box_pixels([1.0, 2.0, 3.0, 4.0], w, h).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        // A view of the box reads the photo's own rows (the encoder's minimum side aside).
        let view = ImageView { data: &rgb, width: w as u32, height: h as u32, stride: 15, format: PixelFormat::Rgb8 };
        let crop = view.crop(b).unwrap();
        assert_eq!((crop.width, crop.height, crop.row(0)[..3].to_vec()), (2, 2, rgb[(2 * w + 1) * 3..][..3].to_vec()));
        assert!(box_pixels([7.0, 0.0, 9.0, 3.0], w, h).is_err());
        let layer = Layer { x: 3, y: 1, width: 2, height: 2, rgba: vec![200; 16] };
        let canvas = layer_on_canvas(&layer, w as u32, h as u32).unwrap();
        let alpha = |x: usize, y: usize| canvas[(y * w + x) * 4 + 3];
        assert_eq!((alpha(3, 1), alpha(4, 2), alpha(2, 1), alpha(3, 3)), (200, 200, 0, 0));
    }
}
