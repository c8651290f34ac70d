//! Real photos in and out of the generator's frame: find a face ([`Mtcnn`], MTCNN as
//! facenet-pytorch 2.6.0 runs it), align it the way FFHQ and so e4e expect ([`align`]), and
//! paste an edited frame back into the photo as a soft layer ([`paste`]).
//!
//! A [`FrameMap`] ties a frame (generator output, encoder input) to the photo: from a face's
//! [`FaceQuad`] or from a selection box (cars, horses, unaligned input). Typical use:
//!
//! ```no_run
//! # fn main() -> clipshape::Result<()> {
//! use clipshape::face::{self, Mtcnn, FaceQuad, PasteParams};
//! # let (rgb, w, h) = (vec![0u8; 3 * 640 * 480], 640, 480);
//! let mtcnn = Mtcnn::load_dir("models/mtcnn".as_ref(), tch::Device::Cpu)?;
//! let faces = mtcnn.detect(&rgb, w, h)?;
//! let i = face::pick_face(&faces, None, None, "photo.jpg")?;
//! let quad = FaceQuad::from_landmarks(&faces[i].landmarks)?;
//! let encoder_input = face::align(&rgb, w, h, &quad, 256)?;
//! # let (frame_k, frame_0) = (vec![0u8; 3 << 20], vec![0u8; 3 << 20]);
//! // … invert, edit, render 1024² frames at strength k and 0 …
//! let layer = face::paste(w, h, &quad.frame_map(1024), &frame_k, Some(&frame_0), &PasteParams::default())?;
//! let edited = face::composite(&rgb, w, h, &layer)?;
//! # Ok(()) }
//! ```

pub mod align;
pub mod detect;
pub mod flow;
pub mod paste;
pub mod resample;
pub mod transfer;

pub use align::{align, align_with_info, AlignInfo, FaceQuad};
pub use detect::{files_in as detector_files_in, Face, Mtcnn, MIN_FACE_SIZE};
pub use paste::{composite, composite_rgba, paste, AlphaMode, Layer, PasteParams};
pub use transfer::{Transfer, TransferParams};

use crate::error::{Error, Result};

/// Where a [`FrameMap`] came from; decides the default feather of the region mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapSource {
    /// An FFHQ-aligned face square.
    Face,
    /// A selection box stretched onto the frame (non-uniform scale).
    Selection,
}

/// An affine map from frame coordinates to photo coordinates, both continuous with pixel k
/// spanning [k, k+1): photo = (a·u + b·v + c, d·u + e·v + f) for `affine = [a, b, c, d, e, f]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameMap {
    pub frame_width: usize,
    pub frame_height: usize,
    pub affine: [f64; 6],
    pub source: MapSource,
}

impl FrameMap {
    /// A selection box [x1, y1, x2, y2] of the photo (continuous coordinates) stretched onto a
    /// `frame_width` × `frame_height` frame, each axis scaled on its own.
    pub fn from_box(selection: [f32; 4], frame_width: usize, frame_height: usize) -> Result<FrameMap> {
        let [x1, y1, x2, y2] = selection.map(|v| v as f64);
        if !(selection.iter().all(|v| v.is_finite()) && x2 > x1 && y2 > y1) {
            return Err(Error::arg(
                "selection",
                format!("{selection:?}; expected finite [x1, y1, x2, y2] with x2 > x1, y2 > y1"),
            ));
        }
        if frame_width == 0 || frame_height == 0 {
            return Err(Error::arg("frame", format!("{frame_width}×{frame_height}; a frame needs pixels")));
        }
        Ok(FrameMap {
            frame_width,
            frame_height,
            affine: [(x2 - x1) / frame_width as f64, 0.0, x1, 0.0, (y2 - y1) / frame_height as f64, y1],
            source: MapSource::Selection,
        })
    }

    /// The same footprint for a frame of another size (a 256² encoder input ↔ a 1024² render).
    pub fn resized(&self, frame_width: usize, frame_height: usize) -> FrameMap {
        let (sx, sy) = (
            self.frame_width as f64 / frame_width.max(1) as f64,
            self.frame_height as f64 / frame_height.max(1) as f64,
        );
        let [a, b, c, d, e, f] = self.affine;
        FrameMap { frame_width, frame_height, affine: [a * sx, b * sy, c, d * sx, e * sy, f], source: self.source }
    }

    pub fn to_photo(&self, u: f64, v: f64) -> [f64; 2] {
        let [a, b, c, d, e, f] = self.affine;
        [a * u + b * v + c, d * u + e * v + f]
    }

    /// The inverse map, photo → frame; None when the map is singular.
    pub fn to_frame_affine(&self) -> Option<[f64; 6]> {
        let [a, b, c, d, e, f] = self.affine;
        let det = a * e - b * d;
        if !(det.is_finite() && det.abs() > 1e-12) {
            return None;
        }
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Some([ia, ib, -(ia * c + ib * f), id, ie, -(id * c + ie * f)])
    }

    pub fn to_frame(&self, x: f64, y: f64) -> Option<[f64; 2]> {
        let [a, b, c, d, e, f] = self.to_frame_affine()?;
        Some([a * x + b * y + c, d * x + e * y + f])
    }

    /// Bounding box [x1, y1, x2, y2] of the frame's footprint in the photo.
    pub fn footprint(&self) -> [f64; 4] {
        let (w, h) = (self.frame_width as f64, self.frame_height as f64);
        let corners = [self.to_photo(0.0, 0.0), self.to_photo(w, 0.0), self.to_photo(0.0, h), self.to_photo(w, h)];
        let mut b = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
        for p in corners {
            b = [b[0].min(p[0]), b[1].min(p[1]), b[2].max(p[0]), b[3].max(p[1])];
        }
        b
    }

    /// The whole photo pixels the frame covers, clipped to a `width` × `height` photo: [x0, y0,
    /// x1, y1) (what a layer of this frame spans); an error when it covers none.
    pub fn photo_box(&self, width: usize, height: usize) -> Result<[usize; 4]> {
        let fp = self.footprint();
        let x0 = fp[0].floor().max(0.0) as usize;
        let y0 = fp[1].floor().max(0.0) as usize;
        let x1 = (fp[2].ceil().max(0.0) as usize).min(width);
        let y1 = (fp[3].ceil().max(0.0) as usize).min(height);
        if x1 <= x0 || y1 <= y0 {
            return Err(Error::arg(
                "map",
                format!("the frame's footprint {fp:?} lies outside the {width}×{height} photo"),
            ));
        }
        Ok([x0, y0, x1, y1])
    }

    /// Singular values (largest, smallest) of the map's linear part: photo pixels per frame
    /// pixel along the most and the least stretched directions.
    pub fn singular_values(&self) -> (f64, f64) {
        let [a, b, _, d, e, _] = self.affine;
        let (p, q, r) = (a * a + d * d, b * b + e * e, a * b + d * e);
        let mean = (p + q) / 2.0;
        let dev = (((p - q) / 2.0).powi(2) + r * r).sqrt();
        ((mean + dev).sqrt(), (mean - dev).max(0.0).sqrt())
    }

    /// Frame pixels per photo pixel along the most compressed direction: how far apart, in
    /// the frame, two neighbouring photo pixels can be.
    pub fn frame_per_photo(&self) -> f64 {
        let smin = self.singular_values().1;
        if smin > 0.0 {
            1.0 / smin
        } else {
            f64::INFINITY
        }
    }
}

/// Which face to edit: `index` if given; else the face overlapping `selection` most (an error
/// if it overlaps none); else the largest. `photo` names the photo in messages.
pub fn pick_face(faces: &[Face], selection: Option<[f32; 4]>, index: Option<usize>, photo: &str) -> Result<usize> {
    if faces.is_empty() {
        return Err(Error::arg(
            "photo",
            format!("no face found in {photo}; faces smaller than {} px are not detected", MIN_FACE_SIZE as u32),
        ));
    }
    if let Some(i) = index {
        if i >= faces.len() {
            return Err(Error::arg(
                "face index",
                format!("face {i} requested, {} found in {photo} (indices 0..={})", faces.len(), faces.len() - 1),
            ));
        }
        return Ok(i);
    }
    let largest = |scores: &[f32]| {
        scores.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &s)| if s > best.1 { (i, s) } else { best })
    };
    match selection {
        Some(sel) if !(sel.iter().all(|v| v.is_finite()) && sel[2] > sel[0] && sel[3] > sel[1]) => {
            Err(Error::arg("selection", format!("{sel:?} is not a box x1 < x2, y1 < y2 of finite numbers")))
        }
        Some(sel) => {
            let overlaps: Vec<f32> = faces
                .iter()
                .map(|f| {
                    let w = f.bbox[2].min(sel[2]) - f.bbox[0].max(sel[0]);
                    let h = f.bbox[3].min(sel[3]) - f.bbox[1].max(sel[1]);
                    w.max(0.0) * h.max(0.0)
                })
                .collect();
            let (i, best) = largest(&overlaps);
            if best > 0.0 {
                Ok(i)
            } else {
                let boxes: Vec<String> = faces
                    .iter()
                    .map(|f| format!("[{:.0}, {:.0}, {:.0}, {:.0}]", f.bbox[0], f.bbox[1], f.bbox[2], f.bbox[3]))
                    .collect();
                Err(Error::arg(
                    "selection",
                    format!(
                        "the selection [{:.0}, {:.0}, {:.0}, {:.0}] contains no face of {photo} (faces found at {})",
                        sel[0],
                        sel[1],
                        sel[2],
                        sel[3],
                        boxes.join(", ")
                    ),
                ))
            }
        }
        None => Ok(largest(&faces.iter().map(Face::area).collect::<Vec<_>>()).0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(b: [f32; 4]) -> Face {
        Face { bbox: b, score: 0.99, landmarks: [[0.0; 2]; 5] }
    }

    #[test]
    fn pick_face_rules() {
        let faces = [face([0.0, 0.0, 10.0, 10.0]), face([100.0, 100.0, 150.0, 150.0]), face([20.0, 0.0, 40.0, 20.0])];
        assert_eq!(pick_face(&faces, None, None, "p.jpg").unwrap(), 1, "largest");
        assert_eq!(pick_face(&faces, Some([100.0, 100.0, 150.0, 150.0]), Some(2), "p.jpg").unwrap(), 2, "index wins");
        assert_eq!(pick_face(&faces, Some([5.0, 0.0, 30.0, 10.0]), None, "p.jpg").unwrap(), 2, "most overlap");
        let e = pick_face(&faces, Some([300.0, 300.0, 400.0, 400.0]), None, "p.jpg").unwrap_err().to_string();
        assert!(e.contains("contains no face of p.jpg"), "{e}");
        let e = pick_face(&faces, None, Some(3), "p.jpg").unwrap_err().to_string();
        assert!(e.contains("face 3 requested, 3 found in p.jpg"), "{e}");
        let e = pick_face(&[], None, None, "holiday.png").unwrap_err().to_string();
        assert!(e.contains("no face found in holiday.png; faces smaller than 20 px are not detected"), "{e}");
    }

    #[test]
    fn box_map_round_trips_and_resizes() {
        let m = FrameMap::from_box([10.0, 20.0, 110.0, 70.0], 512, 384).unwrap();
        assert_eq!(m.to_photo(0.0, 0.0), [10.0, 20.0]);
        assert_eq!(m.to_photo(512.0, 384.0), [110.0, 70.0]);
        let f = m.to_frame(60.0, 45.0).unwrap();
        assert!((f[0] - 256.0).abs() < 1e-9 && (f[1] - 192.0).abs() < 1e-9);
        let small = m.resized(256, 192);
        assert_eq!(small.footprint(), m.footprint());
        assert!((m.frame_per_photo() - 7.68).abs() < 1e-9, "{}", m.frame_per_photo());
        assert!(FrameMap::from_box([5.0, 5.0, 5.0, 9.0], 8, 8).is_err());
    }
}
