//! Paste-back: a rendered frame (the generator's output for an aligned face or a selection
//! box) warped back into photo coordinates as an RGBA layer, so the host can show the edit as
//! a layer over the untouched photo, or [`composite`] it.
//!
//! No upstream: FFHQ-style editing tools (e4e, StyleCLIP demos) return the aligned crop and
//! stop there. The layer's colour is the frame sampled bilinearly through the inverse of the
//! [`FrameMap`] (box-averaged first when the frame is ≥ 2× denser than the photo, so a 1024²
//! render of a 200 px face does not alias). Its alpha, by [`AlphaMode`]:
//! - `Changes` (default): the region mask times a mask of where the render at strength k
//!   differs from the render at k = 0 — soft-thresholded, dilated, box-blurred three times —
//!   so only what the edit moved is replaced, with no seam at the frame's border, and k = 0
//!   gives alpha ≡ 0 (the photo itself).
//! - `Region`: the frame's footprint with a feathered border (smoothstep over
//!   [`PasteParams::feather`]); for a face that is the whole aligned square.
//! - `Frame`: 1 on the footprint, 0 elsewhere (hard edge).
//!
//! Frames are packed RGB8 (what `edit::to_rgba8(.., PixelFormat::Rgb8)` returns for the
//! generator's [-1, 1] output): 8-bit levels are what the change threshold is stated in, and a
//! host already holds them. The layer's alpha is straight (not premultiplied).

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::face::{FrameMap, MapSource};

/// How the layer's alpha is made; see the module header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlphaMode {
    #[default]
    Changes,
    Region,
    Frame,
}

/// Paste-back parameters; widths are fractions of the frame's shorter side so that a 256² and
/// a 1024² render of the same edit give the same layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PasteParams {
    pub mode: AlphaMode,
    /// Change, in 8-bit levels (largest channel of |G_k − G_0|), at which a frame pixel is
    /// fully "changed"; the mask ramps up from half of it. Default 8.
    pub threshold: f32,
    /// Dilation radius of the change mask. Default 0.02 (20 px of a 1024² frame).
    pub dilate: f64,
    /// Width of each of the three box blurs of the change mask. Default 0.04 (41 px of a
    /// 1024² frame: the mask fades over about an eighth of the frame).
    pub blur: f64,
    /// Width of the region mask's feathered border; None: 1/8 for a face square, 1/32 for a
    /// selection box.
    pub feather: Option<f64>,
}

impl Default for PasteParams {
    fn default() -> Self {
        PasteParams { mode: AlphaMode::Changes, threshold: 8.0, dilate: 0.02, blur: 0.04, feather: None }
    }
}

/// Geometry in frame pixels, resolved from [`PasteParams`] for one frame size.
pub(crate) struct Widths {
    pub(crate) feather: f64,
    dilate: usize,
    /// Radius of each box blur (width 2r + 1).
    blur: usize,
}

impl PasteParams {
    pub fn with_mode(mode: AlphaMode) -> Self {
        PasteParams { mode, ..Default::default() }
    }

    pub(crate) fn widths(&self, map: &FrameMap) -> Widths {
        let side = map.frame_width.min(map.frame_height) as f64;
        let feather = self.feather.unwrap_or(match map.source {
            MapSource::Face => 1.0 / 8.0,
            MapSource::Selection => 1.0 / 32.0,
        });
        Widths {
            feather: feather.max(0.0) * side,
            dilate: (self.dilate.max(0.0) * side).round() as usize,
            blur: (self.blur.max(0.0) * side / 2.0).round() as usize,
        }
    }

    /// The largest alpha difference (8-bit levels) two 4-neighbouring layer pixels can have
    /// with these parameters and this map. Per frame pixel, the region ramp (smoothstep over
    /// `feather` px) changes by at most 1.5/feather, and the change mask by at most √2 times
    /// the peak of its blur kernel (three boxes of width w = 2r + 1: (3r² + 3r + 1)/w³ ≈
    /// 0.75/w), as a [0, 1] signal filtered by a unimodal kernel steps by at most its peak and
    /// bilinear sampling adds the √2; a product of [0, 1] masks steps by at most the sum.
    /// Neighbouring photo pixels are at most [`FrameMap::frame_per_photo`] frame pixels apart;
    /// +1 for rounding to 8 bits. 255 in `Frame` mode.
    pub fn max_alpha_step(&self, map: &FrameMap) -> f64 {
        let w = self.widths(map);
        let region = if w.feather > 0.0 { 1.5 / w.feather } else { f64::INFINITY };
        let slope = match self.mode {
            AlphaMode::Frame => return 255.0,
            AlphaMode::Region => region,
            AlphaMode::Changes => {
                let r = w.blur as f64;
                region + std::f64::consts::SQRT_2 * (3.0 * r * r + 3.0 * r + 1.0) / (2.0 * r + 1.0).powi(3)
            }
        };
        (255.0 * slope * map.frame_per_photo() + 1.0).min(255.0)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(Error::arg(
                "threshold",
                format!("{}; expected a positive number of 8-bit levels", self.threshold),
            ));
        }
        for (name, v) in [("dilate", self.dilate), ("blur", self.blur), ("feather", self.feather.unwrap_or(0.0))] {
            if !ok(v) {
                return Err(Error::arg(name, format!("{v}; expected a fraction of the frame side in [0, 1]")));
            }
        }
        Ok(())
    }
}

/// A photo-aligned RGBA8 layer: `width` × `height` pixels placed at (`x`, `y`) of the photo,
/// straight alpha, rows packed.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

fn check_frame(name: &'static str, frame: &[u8], map: &FrameMap) -> Result<()> {
    let want = map.frame_width * map.frame_height * 3;
    if frame.len() != want {
        return Err(Error::arg(
            name,
            format!("{} bytes, expected {want} for a {}×{} RGB8 frame", frame.len(), map.frame_width, map.frame_height),
        ));
    }
    Ok(())
}

/// The layer for `frame` (the render at strength k) over a `photo_width` × `photo_height`
/// photo. `frame_0` (the render at k = 0) is needed in `Changes` mode only.
pub fn paste(
    photo_width: usize,
    photo_height: usize,
    map: &FrameMap,
    frame: &[u8],
    frame_0: Option<&[u8]>,
    params: &PasteParams,
) -> Result<Layer> {
    params.validate()?;
    check_frame("frame", frame, map)?;
    let inv = map.to_frame_affine().ok_or_else(|| Error::arg("map", format!("{:?} is singular", map.affine)))?;
    let [x0, y0, x1, y1] = map.photo_box(photo_width, photo_height)?;
    let (fw, fh) = (map.frame_width, map.frame_height);
    let widths = params.widths(map);
    let changes = match params.mode {
        AlphaMode::Changes => {
            let f0 = frame_0.ok_or_else(|| Error::arg("frame_0", "Changes mode needs the render at strength 0"))?;
            check_frame("frame_0", f0, map)?;
            Some(change_mask(frame, f0, fw, fh, params.threshold, &widths))
        }
        _ => None,
    };
    // Box-average the colour when several frame pixels fall on one photo pixel.
    let reduce = (1.0 / map.singular_values().0).floor().clamp(1.0, 64.0) as usize;
    let (colour, cw, ch) = if reduce > 1 { box_reduce(frame, fw, fh, reduce) } else { (frame.to_vec(), fw, fh) };

    let (w, h) = (x1 - x0, y1 - y0);
    let mut rgba = vec![0u8; w * h * 4];
    for y in 0..h {
        for x in 0..w {
            let (px, py) = ((x0 + x) as f64 + 0.5, (y0 + y) as f64 + 0.5);
            let u = inv[0] * px + inv[1] * py + inv[2];
            let v = inv[3] * px + inv[4] * py + inv[5];
            let o = &mut rgba[(y * w + x) * 4..(y * w + x) * 4 + 4];
            let r = reduce as f64;
            for (c, out) in o[..3].iter_mut().enumerate() {
                *out = sample(&colour, cw, ch, 3, c, u / r - 0.5, v / r - 0.5).round().clamp(0.0, 255.0) as u8;
            }
            let inside = u >= 0.0 && u < fw as f64 && v >= 0.0 && v < fh as f64;
            let alpha = match params.mode {
                AlphaMode::Frame => f64::from(u8::from(inside)),
                AlphaMode::Region => region(u, v, fw, fh, widths.feather),
                AlphaMode::Changes => {
                    let m = changes.as_deref().map_or(0.0, |m| sample(m, fw, fh, 1, 0, u - 0.5, v - 0.5));
                    region(u, v, fw, fh, widths.feather) * m
                }
            };
            o[3] = (alpha * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(Layer { x: x0, y: y0, width: w, height: h, rgba })
}

/// The photo with `layer` blended over it (straight alpha, rounded): packed RGB8, photo-sized.
pub fn composite(photo: &[u8], width: usize, height: usize, layer: &Layer) -> Result<Vec<u8>> {
    composite_channels(photo, 3, width, height, layer)
}

/// [`composite`] of a packed RGBA8 photo: its own alpha is kept (the layer changes colours
/// only), so a transparent photo stays transparent where it was.
pub fn composite_rgba(photo: &[u8], width: usize, height: usize, layer: &Layer) -> Result<Vec<u8>> {
    composite_channels(photo, 4, width, height, layer)
}

fn composite_channels(photo: &[u8], n: usize, width: usize, height: usize, layer: &Layer) -> Result<Vec<u8>> {
    if photo.len() != width * height * n {
        return Err(Error::arg(
            "photo",
            format!(
                "{} bytes for a {width}×{height} photo of {n} channels, expected {}",
                photo.len(),
                width * height * n
            ),
        ));
    }
    if layer.x + layer.width > width
        || layer.y + layer.height > height
        || layer.rgba.len() != layer.width * layer.height * 4
    {
        return Err(Error::arg(
            "layer",
            format!(
                "{}×{} at ({}, {}) with {} bytes does not fit a {width}×{height} photo",
                layer.width,
                layer.height,
                layer.x,
                layer.y,
                layer.rgba.len()
            ),
        ));
    }
    let mut out = crate::memory::with_capacity(photo.len(), || format!("a {width}×{height} px composite"))?;
    out.extend_from_slice(photo);
    for y in 0..layer.height {
        for x in 0..layer.width {
            let l = &layer.rgba[(y * layer.width + x) * 4..(y * layer.width + x) * 4 + 4];
            let a = l[3] as u32;
            let at = ((layer.y + y) * width + layer.x + x) * n;
            let p = &mut out[at..at + 3];
            for c in 0..3 {
                p[c] = ((l[c] as u32 * a + p[c] as u32 * (255 - a) + 127) / 255) as u8;
            }
        }
    }
    Ok(out)
}

/// Region mask at frame point (u, v): 0 outside the frame, smoothstep of the distance to the
/// nearest frame edge over `feather` frame pixels.
pub(crate) fn region(u: f64, v: f64, w: usize, h: usize, feather: f64) -> f64 {
    let d = u.min(w as f64 - u).min(v).min(h as f64 - v);
    if d <= 0.0 {
        return 0.0;
    }
    if feather <= 0.0 {
        return 1.0;
    }
    let t = (d / feather).min(1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Bilinear sample of channel `c` at pixel-index point (x, y), edges clamped.
fn sample<T: Copy + Into<f64>>(img: &[T], w: usize, h: usize, channels: usize, c: usize, x: f64, y: f64) -> f64 {
    let x = x.clamp(0.0, (w - 1) as f64);
    let y = y.clamp(0.0, (h - 1) as f64);
    let (xi, yi) = (x.floor() as usize, y.floor() as usize);
    let (dx, dy) = (x - xi as f64, y - yi as f64);
    let (xj, yj) = ((xi + 1).min(w - 1), (yi + 1).min(h - 1));
    let at = |x: usize, y: usize| -> f64 { img[(y * w + x) * channels + c].into() };
    let top = at(xi, yi) + (at(xj, yi) - at(xi, yi)) * dx;
    let bottom = at(xi, yj) + (at(xj, yj) - at(xi, yj)) * dx;
    top + (bottom - top) * dy
}

/// Mean of each r×r block (partial blocks at the far edges).
fn box_reduce(img: &[u8], w: usize, h: usize, r: usize) -> (Vec<u8>, usize, usize) {
    let (ow, oh) = (w.div_ceil(r), h.div_ceil(r));
    let mut out = vec![0u8; ow * oh * 3];
    for oy in 0..oh {
        for ox in 0..ow {
            let mut s = [0u32; 3];
            let (ys, xs) = (oy * r..((oy + 1) * r).min(h), ox * r..((ox + 1) * r).min(w));
            let n = (ys.len() * xs.len()) as u32;
            for y in ys {
                for x in xs.clone() {
                    for c in 0..3 {
                        s[c] += img[(y * w + x) * 3 + c] as u32;
                    }
                }
            }
            for c in 0..3 {
                out[(oy * ow + ox) * 3 + c] = ((s[c] + n / 2) / n) as u8;
            }
        }
    }
    (out, ow, oh)
}

/// Where `a` differs from `b`: max channel difference soft-thresholded over [t/2, t], dilated
/// (square, radius `dilate`), then three box blurs of width `blur`; values in [0, 1].
pub(crate) fn change_mask(a: &[u8], b: &[u8], w: usize, h: usize, threshold: f32, widths: &Widths) -> Vec<f32> {
    let lo = threshold / 2.0;
    let mut m: Vec<f32> = a
        .chunks_exact(3)
        .zip(b.chunks_exact(3))
        .map(|(p, q)| {
            let d = (0..3).map(|c| (p[c] as f32 - q[c] as f32).abs()).fold(0.0, f32::max);
            ((d - lo) / (threshold - lo)).clamp(0.0, 1.0)
        })
        .collect();
    if m.iter().all(|&v| v == 0.0) {
        return m;
    }
    separable(&mut m, w, h, |src, dst| max_filter(src, dst, widths.dilate));
    for _ in 0..3 {
        separable(&mut m, w, h, |src, dst| box_filter(src, dst, widths.blur));
    }
    m
}

/// Applies a 1-D filter to every row, then every column.
fn separable(m: &mut [f32], w: usize, h: usize, f: impl Fn(&[f32], &mut [f32])) {
    let mut out = vec![0f32; w.max(h)];
    for y in 0..h {
        f(&m[y * w..(y + 1) * w], &mut out[..w]);
        m[y * w..(y + 1) * w].copy_from_slice(&out[..w]);
    }
    let mut col = vec![0f32; h];
    for x in 0..w {
        for y in 0..h {
            col[y] = m[y * w + x];
        }
        f(&col, &mut out[..h]);
        for y in 0..h {
            m[y * w + x] = out[y];
        }
    }
}

/// Running maximum over [i − r, i + r] (monotonic queue: O(n) whatever r).
fn max_filter(src: &[f32], dst: &mut [f32], r: usize) {
    let n = src.len();
    let mut q: VecDeque<usize> = VecDeque::new();
    let mut next = 0;
    for (i, d) in dst.iter_mut().enumerate().take(n) {
        let hi = (i + r).min(n - 1);
        while next <= hi {
            while q.back().is_some_and(|&b| src[b] <= src[next]) {
                q.pop_back();
            }
            q.push_back(next);
            next += 1;
        }
        while q.front().is_some_and(|&f| f + r < i) {
            q.pop_front();
        }
        *d = q.front().map_or(0.0, |&f| src[f]);
    }
}

/// Mean over [i − r, i + r], edges replicated; running sum in double.
fn box_filter(src: &[f32], dst: &mut [f32], r: usize) {
    let n = src.len() as i64;
    let at = |i: i64| src[i.clamp(0, n - 1) as usize] as f64;
    let r = r as i64;
    let mut s: f64 = (-r..=r).map(at).sum();
    let k = (2 * r + 1) as f64;
    for (i, d) in (0..n).zip(dst.iter_mut()) {
        *d = (s / k) as f32;
        s += at(i + r + 1) - at(i - r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::FaceQuad;

    /// A textured photo: smooth waves plus a diagonal ramp, different per channel.
    fn photo(w: usize, h: usize) -> Vec<u8> {
        let mut p = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let (fx, fy) = (x as f64, y as f64);
                    let v = 128.0 + 60.0 * (fx / (9.0 + c as f64)).sin() * (fy / 13.0).cos() + 0.2 * (fx - fy);
                    p.push(v.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        p
    }

    fn face_quad() -> FaceQuad {
        // Tilted face, eyes ~40 px apart, centred near (120, 100) of a 240×200 photo.
        FaceQuad::from_landmarks(&[[100.0, 88.0], [139.0, 94.0], [118.0, 110.0], [101.0, 128.0], [133.0, 133.0]])
            .unwrap()
    }

    /// A frame that is `base` everywhere and `base + 100` inside a disc.
    fn disc_frame(s: usize, base: u8, centre: (f64, f64), radius: f64) -> Vec<u8> {
        let mut f = vec![base; s * s * 3];
        for y in 0..s {
            for x in 0..s {
                if ((x as f64 - centre.0).powi(2) + (y as f64 - centre.1).powi(2)).sqrt() < radius {
                    f[(y * s + x) * 3..(y * s + x) * 3 + 3].fill(base + 100);
                }
            }
        }
        f
    }

    fn layer_alpha(l: &Layer, x: usize, y: usize) -> u8 {
        l.rgba[(y * l.width + x) * 4 + 3]
    }

    #[test]
    fn strength_zero_in_changes_mode_is_the_photo() {
        let (w, h) = (240, 200);
        let p = photo(w, h);
        let map = face_quad().frame_map(256);
        let f0 = disc_frame(256, 90, (128.0, 128.0), 50.0);
        let layer = paste(w, h, &map, &f0, Some(&f0), &PasteParams::default()).unwrap();
        assert!(layer.width > 100 && layer.height > 100, "{}×{}", layer.width, layer.height);
        assert!(layer.rgba.chunks_exact(4).all(|px| px[3] == 0), "alpha ≡ 0 at k = 0");
        assert_eq!(composite(&p, w, h, &layer).unwrap(), p);
    }

    #[test]
    fn alpha_is_zero_outside_the_region_at_every_strength() {
        let (w, h) = (240, 200);
        for map in [face_quad().frame_map(128), FrameMap::from_box([30.0, 20.0, 200.0, 150.0], 128, 96).unwrap()] {
            let (fw, fh) = (map.frame_width, map.frame_height);
            let f0 = vec![0u8; fw * fh * 3];
            let fk = vec![255u8; fw * fh * 3];
            for mode in [AlphaMode::Changes, AlphaMode::Region, AlphaMode::Frame] {
                let l = paste(w, h, &map, &fk, Some(&f0), &PasteParams::with_mode(mode)).unwrap();
                let (mut outside, mut full) = (0, 0);
                for y in 0..l.height {
                    for x in 0..l.width {
                        let f = map.to_frame((l.x + x) as f64 + 0.5, (l.y + y) as f64 + 0.5).unwrap();
                        let a = layer_alpha(&l, x, y);
                        if f[0] < 0.0 || f[1] < 0.0 || f[0] >= fw as f64 || f[1] >= fh as f64 {
                            assert_eq!(a, 0, "{mode:?} at ({x}, {y}) maps to frame {f:?}");
                            outside += 1;
                        }
                        full += usize::from(a == 255);
                    }
                }
                assert!(full > l.width * l.height / 4, "{mode:?}: the frame's interior is replaced ({full})");
                if map.source == MapSource::Face {
                    assert!(outside > 0, "a tilted square leaves corners of its bounding box uncovered");
                }
            }
        }
    }

    #[test]
    fn alpha_steps_stay_within_the_stated_bound() {
        let (w, h) = (240, 200);
        let map = face_quad().frame_map(256);
        let f0 = vec![90u8; 256 * 256 * 3];
        // A change touching the frame's edge, so region and change ramps both show.
        let fk = disc_frame(256, 90, (200.0, 128.0), 70.0);
        for mode in [AlphaMode::Changes, AlphaMode::Region] {
            let params = PasteParams::with_mode(mode);
            let bound = params.max_alpha_step(&map);
            // qsize ≈ 158 px: 1.6 frame px per photo px.
            assert!(bound < 64.0, "{mode:?}: a meaningful bound for this face ({bound:.1})");
            let l = paste(w, h, &map, &fk, Some(&f0), &params).unwrap();
            let mut worst = 0i32;
            for y in 0..l.height {
                for x in 0..l.width {
                    let a = layer_alpha(&l, x, y) as i32;
                    if x + 1 < l.width {
                        worst = worst.max((a - layer_alpha(&l, x + 1, y) as i32).abs());
                    }
                    if y + 1 < l.height {
                        worst = worst.max((a - layer_alpha(&l, x, y + 1) as i32).abs());
                    }
                }
            }
            eprintln!("{mode:?}: largest alpha step {worst}, bound {bound:.1}");
            assert!(worst as f64 <= bound, "{mode:?}: step {worst} > bound {bound:.1}");
            assert!(l.rgba.chunks_exact(4).any(|px| px[3] == 255), "{mode:?} reaches full opacity");
        }
    }

    #[test]
    fn align_then_paste_region_reproduces_the_photo() {
        let (w, h) = (240, 200);
        let p = photo(w, h);
        let q = face_quad();
        for n in [64, 256, 1024] {
            let aligned = crate::face::align(&p, w, h, &q, n).unwrap();
            let map = q.frame_map(n);
            let l = paste(w, h, &map, &aligned, None, &PasteParams::with_mode(AlphaMode::Region)).unwrap();
            let out = composite(&p, w, h, &l).unwrap();
            let (mut sum, mut max, mut count) = (0.0, 0u8, 0usize);
            for y in 0..l.height {
                for x in 0..l.width {
                    if layer_alpha(&l, x, y) == 255 {
                        let i = ((l.y + y) * w + l.x + x) * 3;
                        for c in 0..3 {
                            let d = out[i + c].abs_diff(p[i + c]);
                            sum += d as f64;
                            max = max.max(d);
                            count += 1;
                        }
                    }
                }
            }
            let mean = sum / count as f64;
            assert!(count > 3 * 4000, "n = {n}: opaque pixels {count}");
            // Two bilinear resamplings (and PIL's truncation) of a smooth photo: about a level.
            assert!(mean <= 1.5 && max <= 12, "n = {n}: mean {mean:.2}, max {max}");
        }
    }

    #[test]
    fn filters() {
        let mut out = [0f32; 7];
        max_filter(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5], &mut out, 1);
        assert_eq!(out, [0.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.5]);
        box_filter(&[3.0; 7], &mut out, 2);
        assert!(out.iter().all(|&v| (v - 3.0).abs() < 1e-6));
        box_filter(&[0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0], &mut out, 1);
        assert_eq!(out, [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        let (r, w, h) = box_reduce(&[10, 10, 10, 20, 20, 20, 30, 30, 30], 3, 1, 2);
        assert_eq!((w, h), (2, 1));
        assert_eq!(r, [15, 15, 15, 30, 30, 30]);
    }

    #[test]
    fn bad_inputs_name_themselves() {
        let map = FrameMap::from_box([0.0, 0.0, 10.0, 10.0], 8, 8).unwrap();
        let e = paste(20, 20, &map, &[0u8; 5], None, &PasteParams::default()).unwrap_err().to_string();
        assert!(e.contains("`frame`"), "{e}");
        let f = vec![0u8; 8 * 8 * 3];
        let e = paste(20, 20, &map, &f, None, &PasteParams::default()).unwrap_err().to_string();
        assert!(e.contains("`frame_0`"), "{e}");
        let far = FrameMap::from_box([50.0, 50.0, 60.0, 60.0], 8, 8).unwrap();
        let e = paste(20, 20, &far, &f, None, &PasteParams::with_mode(AlphaMode::Frame)).unwrap_err().to_string();
        assert!(e.contains("outside the 20×20 photo"), "{e}");
        let bad = PasteParams { blur: 2.0, ..Default::default() };
        let e = paste(20, 20, &map, &f, Some(&f), &bad).unwrap_err().to_string();
        assert!(e.contains("`blur`"), "{e}");
    }
}
