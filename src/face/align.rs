//! FFHQ face alignment — Karras, Laine, Aila, "A Style-Based Generator Architecture for
//! Generative Adversarial Networks" (CVPR 2019), NVlabs/ffhq-dataset `download_ffhq.py`
//! `recreate_aligned_images`, as omertov/encoder4editing `utils/alignment.py` uses it — driven by
//! MTCNN's five points instead of dlib's 68 (eyes = points 0 and 1, mouth corners 3 and 4).
//!
//! The oriented square ([`FaceQuad`]) comes from the eyes and the mouth; [`align`] then shrinks
//! big photos (Pillow LANCZOS), crops, reflect-pads with blur and median fill where the square
//! leaves the photo, and samples the square with Pillow's QUAD transform (bilinear) straight at
//! the output size. [`FaceQuad::frame_map`] is the same square as an affine map for any frame
//! size, the paste-back's way from a rendered frame to the photo.
//!
//! Conventions: landmarks and quads are pixel indices (pixel k's centre at k, as MTCNN reports
//! them); [`FrameMap`]s use continuous coordinates where pixel k spans [k, k+1). FFHQ passes
//! `quad + 0.5` to Pillow, which is that conversion.

use crate::error::{Error, Result};
use crate::face::resample::{gaussian_blur, lanczos_window, reflect_whole};
use crate::face::{FrameMap, MapSource};

/// Largest aligned output side accepted.
pub const MAX_OUTPUT: usize = 8192;

/// FFHQ's oriented crop square around a face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceQuad {
    /// Top-left, bottom-left, bottom-right, top-right corners, [x, y] pixel indices.
    pub quad: [[f64; 2]; 4],
    /// Side of the square, 2·|x|.
    pub qsize: f64,
    /// Centre `c`, half-side vectors `x` (to the face's right) and `y` (down the face).
    pub center: [f64; 2],
    pub x: [f64; 2],
    pub y: [f64; 2],
}

fn sub(a: [f64; 2], b: [f64; 2]) -> [f64; 2] {
    [a[0] - b[0], a[1] - b[1]]
}

fn add(a: [f64; 2], b: [f64; 2]) -> [f64; 2] {
    [a[0] + b[0], a[1] + b[1]]
}

fn scale(a: [f64; 2], s: f64) -> [f64; 2] {
    [a[0] * s, a[1] * s]
}

fn hypot(a: [f64; 2]) -> f64 {
    a[0].hypot(a[1])
}

/// (−v_y, v_x): `np.flipud(v) * [-1, 1]`.
fn rot(v: [f64; 2]) -> [f64; 2] {
    [-v[1], v[0]]
}

impl FaceQuad {
    /// The square from five landmarks (left eye, right eye, nose, left and right mouth corner),
    /// in double precision as the reference computes it.
    pub fn from_landmarks(landmarks: &[[f32; 2]; 5]) -> Result<FaceQuad> {
        let p = |i: usize| [landmarks[i][0] as f64, landmarks[i][1] as f64];
        let eye_avg = scale(add(p(0), p(1)), 0.5);
        let eye_to_eye = sub(p(1), p(0));
        let mouth_avg = scale(add(p(3), p(4)), 0.5);
        let eye_to_mouth = sub(mouth_avg, eye_avg);
        let x = sub(eye_to_eye, rot(eye_to_mouth));
        let len = hypot(x);
        if !(len.is_finite() && len > 0.0) {
            return Err(Error::arg(
                "landmarks",
                format!("{landmarks:?} give no orientation (eyes and mouth coincide or are not finite)"),
            ));
        }
        let x = scale(scale(x, 1.0 / len), (hypot(eye_to_eye) * 2.0).max(hypot(eye_to_mouth) * 1.8));
        let y = rot(x);
        let c = add(eye_avg, scale(eye_to_mouth, 0.1));
        let quad = [sub(sub(c, x), y), add(sub(c, x), y), add(add(c, x), y), sub(add(c, x), y)];
        Ok(FaceQuad { quad, qsize: hypot(x) * 2.0, center: c, x, y })
    }

    /// The aligned S×S frame ↔ photo map, for any S (1024 for the generator, 256 for the
    /// encoder): frame point (u, v) ∈ [0, S]² lands at photo point
    /// `c + (½, ½) + (2u/S − 1)·x + (2v/S − 1)·y`. From the photo's own quad: the shrink step of
    /// [`align`] only changes how the photo is sampled (it moves the sampling grid by under a
    /// shrunk pixel, as FFHQ's does).
    pub fn frame_map(&self, size: usize) -> FrameMap {
        let s = size.max(1) as f64;
        let q0 = self.quad[0];
        FrameMap {
            frame_width: size,
            frame_height: size,
            affine: [
                2.0 * self.x[0] / s,
                2.0 * self.y[0] / s,
                q0[0] + 0.5,
                2.0 * self.x[1] / s,
                2.0 * self.y[1] / s,
                q0[1] + 0.5,
            ],
            source: MapSource::Face,
        }
    }
}

/// What [`align`] did besides sampling, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlignInfo {
    /// Integer shrink factor (1 = none).
    pub shrink: usize,
    /// Left, top, right, bottom padding added (all 0 when not padded).
    pub pad: [usize; 4],
}

/// Packed RGB8 working image.
struct Img {
    data: Vec<u8>,
    w: usize,
    h: usize,
}

/// The aligned n×n crop (packed RGB8) of the face `quad` in the packed RGB8 photo.
pub fn align(rgb: &[u8], width: usize, height: usize, quad: &FaceQuad, n: usize) -> Result<Vec<u8>> {
    align_with_info(rgb, width, height, quad, n).map(|(px, _)| px)
}

/// [`align`], also saying whether it shrank and padded.
pub fn align_with_info(
    rgb: &[u8],
    width: usize,
    height: usize,
    quad: &FaceQuad,
    n: usize,
) -> Result<(Vec<u8>, AlignInfo)> {
    if !(1..=MAX_OUTPUT).contains(&n) {
        return Err(Error::arg("size", format!("{n}; the aligned side must be within 1..={MAX_OUTPUT}")));
    }
    if width == 0 || height == 0 || rgb.len() != width * height * 3 {
        return Err(Error::arg(
            "rgb",
            format!("{} bytes for a {width}×{height} RGB8 photo, expected {}", rgb.len(), width * height * 3),
        ));
    }
    if !(quad.quad.iter().flatten().all(|v| v.is_finite()) && quad.qsize.is_finite() && quad.qsize > 0.0) {
        return Err(Error::arg("quad", format!("{:?} is not a finite square", quad.quad)));
    }
    let mut q = quad.quad;
    let mut qsize = quad.qsize;

    // Shrink: only the photo part the crop below keeps is resampled.
    let shrink = (qsize / n as f64 * 0.5).floor() as usize;
    let (src_w, src_h) = if shrink > 1 {
        let rw = ((width as f64 / shrink as f64).round_ties_even() as usize).max(1);
        let rh = ((height as f64 / shrink as f64).round_ties_even() as usize).max(1);
        q.iter_mut().for_each(|p| *p = scale(*p, 1.0 / shrink as f64));
        qsize /= shrink as f64;
        (rw, rh)
    } else {
        (width, height)
    };

    // Crop to the quad's bounding box ± border, clamped to the (shrunk) photo.
    let border = ((qsize * 0.1).round_ties_even() as i64).max(3);
    let bounds = |q: &[[f64; 2]; 4]| {
        let (xs, ys) = (q.map(|p| p[0]), q.map(|p| p[1]));
        let min = |v: [f64; 4]| v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = |v: [f64; 4]| v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        [min(xs).floor() as i64, min(ys).floor() as i64, max(xs).ceil() as i64, max(ys).ceil() as i64]
    };
    let b = bounds(&q);
    let crop = [
        (b[0] - border).max(0),
        (b[1] - border).max(0),
        (b[2] + border).min(src_w as i64),
        (b[3] + border).min(src_h as i64),
    ];
    if crop[2] <= crop[0] || crop[3] <= crop[1] {
        return Err(Error::arg("quad", format!("{:?} lies outside the {width}×{height} photo", quad.quad)));
    }
    let [cx0, cy0, cx1, cy1] = crop.map(|v| v as usize);
    let data = if shrink > 1 {
        lanczos_window(rgb, width, height, src_w, src_h, [cx0, cy0, cx1, cy1])
    } else {
        let mut d = Vec::with_capacity((cx1 - cx0) * (cy1 - cy0) * 3);
        for y in cy0..cy1 {
            d.extend_from_slice(&rgb[(y * width + cx0) * 3..(y * width + cx1) * 3]);
        }
        d
    };
    let mut img = Img { data, w: cx1 - cx0, h: cy1 - cy0 };
    q.iter_mut().for_each(|p| *p = sub(*p, [cx0 as f64, cy0 as f64]));

    // Pad where the quad ± border still leaves the crop by more than border − 4 px.
    let b = bounds(&q);
    let need = [
        (-b[0] + border).max(0),
        (-b[1] + border).max(0),
        (b[2] - img.w as i64 + border).max(0),
        (b[3] - img.h as i64 + border).max(0),
    ];
    let mut pad = [0usize; 4];
    if need.iter().copied().max().unwrap_or(0) > border - 4 {
        let least = (qsize * 0.3).round_ties_even() as i64;
        pad = need.map(|p| p.max(least) as usize);
        img = pad_reflect_blend(&img, pad, qsize);
        q.iter_mut().for_each(|p| *p = add(*p, [pad[0] as f64, pad[1] as f64]));
    }

    Ok((quad_transform(&img, &q, n), AlignInfo { shrink: shrink.max(1), pad }))
}

/// `np.pad(reflect)`, then blend toward a Gaussian blur by clip(3m + 1) and toward the
/// per-channel median by clip(m), m the ramp from the old edge (0) to the new edge (1);
/// rounded half to even. Mixed precision as NumPy evaluates the reference's expressions:
/// float32 image, float64 mask.
fn pad_reflect_blend(img: &Img, pad: [usize; 4], qsize: f64) -> Img {
    let [pl, pt, pr, pb] = pad;
    let (w, h) = (img.w + pl + pr, img.h + pt + pb);
    let mut f = vec![0f32; w * h * 3];
    for y in 0..h {
        let sy = reflect_whole(y as i64 - pt as i64, img.h);
        for x in 0..w {
            let sx = reflect_whole(x as i64 - pl as i64, img.w);
            for c in 0..3 {
                f[(y * w + x) * 3 + c] = img.data[(sy * img.w + sx) * 3 + c] as f32;
            }
        }
    }
    let mask = |x: usize, y: usize| -> f64 {
        let mx = 1.0 - (x as f64 / pl as f64).min((w - 1 - x) as f64 / pr as f64);
        let my = 1.0 - (y as f64 / pt as f64).min((h - 1 - y) as f64 / pb as f64);
        mx.max(my)
    };
    let blur = gaussian_blur(&f, w, h, 3, qsize * 0.02);
    for y in 0..h {
        for x in 0..w {
            let t = (mask(x, y) * 3.0 + 1.0).clamp(0.0, 1.0);
            for c in 0..3 {
                let i = (y * w + x) * 3 + c;
                f[i] = (f[i] as f64 + (blur[i] - f[i]) as f64 * t) as f32;
            }
        }
    }
    let median: Vec<f32> = (0..3)
        .map(|c| {
            let mut v: Vec<f32> = f.iter().skip(c).step_by(3).copied().collect();
            median_f32(&mut v)
        })
        .collect();
    for y in 0..h {
        for x in 0..w {
            let t = mask(x, y).clamp(0.0, 1.0);
            for (c, &m) in median.iter().enumerate() {
                let i = (y * w + x) * 3 + c;
                f[i] = (f[i] as f64 + (m - f[i]) as f64 * t) as f32;
            }
        }
    }
    let data = f.iter().map(|&v| v.round_ties_even().clamp(0.0, 255.0) as u8).collect();
    Img { data, w, h }
}

/// `np.median` of float32 values: the mean of the two middle ones for an even count.
fn median_f32(v: &mut [f32]) -> f32 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let (_, &mut hi, _) = v.select_nth_unstable_by(n / 2, f32::total_cmp);
    if n % 2 == 1 {
        return hi;
    }
    let lo = v[..n / 2].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (lo + hi) / 2.0
}

/// Pillow's `transform(size, QUAD, (quad + 0.5).flatten(), BILINEAR)`: the bilinear quad map's
/// coefficients as `Image.transform` derives them, each output pixel centre mapped through them,
/// Geometry.c's bilinear filter (edge-clamped neighbours, black outside the image, values
/// truncated to 8 bits).
fn quad_transform(img: &Img, q: &[[f64; 2]; 4], n: usize) -> Vec<u8> {
    let [nw, sw, se, ne] = q.map(|p| [p[0] + 0.5, p[1] + 0.5]);
    let (a_s, a_t) = (1.0 / n as f64, 1.0 / n as f64);
    let ax = [nw[0], (ne[0] - nw[0]) * a_s, (sw[0] - nw[0]) * a_t, (se[0] - sw[0] - ne[0] + nw[0]) * a_s * a_t];
    let ay = [nw[1], (ne[1] - nw[1]) * a_s, (sw[1] - nw[1]) * a_t, (se[1] - sw[1] - ne[1] + nw[1]) * a_s * a_t];
    let mut out = vec![0u8; n * n * 3];
    for j in 0..n {
        let yin = j as f64 + 0.5;
        for i in 0..n {
            let xin = i as f64 + 0.5;
            let px = ax[0] + ax[1] * xin + ax[2] * yin + ax[3] * xin * yin;
            let py = ay[0] + ay[1] * xin + ay[2] * yin + ay[3] * xin * yin;
            let o = &mut out[(j * n + i) * 3..(j * n + i) * 3 + 3];
            bilinear_pil(img, px, py, o);
        }
    }
    out
}

/// Geometry.c `bilinear_filter32RGB` at continuous point (x, y).
fn bilinear_pil(img: &Img, x: f64, y: f64, out: &mut [u8]) {
    if x < 0.0 || x >= img.w as f64 || y < 0.0 || y >= img.h as f64 {
        return;
    }
    let (x, y) = (x - 0.5, y - 0.5);
    let (xf, yf) = (x.floor(), y.floor());
    let (dx, dy) = (x - xf, y - yf);
    let (xi, yi) = (xf as i64, yf as i64);
    let clip = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let (x0, x1) = (clip(xi, img.w), clip(xi + 1, img.w));
    let row0 = clip(yi, img.h);
    let row1 = (yi + 1 >= 0 && yi + 1 < img.h as i64).then_some((yi + 1) as usize);
    for (c, o) in out.iter_mut().enumerate().take(3) {
        let at = |r: usize, x: usize| img.data[(r * img.w + x) * 3 + c] as f64;
        let lerp = |a: f64, b: f64, d: f64| a + (b - a) * d;
        let v1 = lerp(at(row0, x0), at(row0, x1), dx);
        let v2 = match row1 {
            Some(r) => lerp(at(r, x0), at(r, x1), dx),
            None => v1,
        };
        *o = lerp(v1, v2, dy) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontal() -> [[f32; 2]; 5] {
        // Eyes level 40 px apart, mouth 50 px below: an upright face centred at x = 100.
        [[80.0, 100.0], [120.0, 100.0], [100.0, 125.0], [85.0, 150.0], [115.0, 150.0]]
    }

    #[test]
    fn upright_face_gives_an_axis_aligned_square() {
        let q = FaceQuad::from_landmarks(&frontal()).unwrap();
        // x = (40, 0) − rot((0, 50)) = (40 + 50, 0) → normalised, times max(80, 90) = 90.
        assert!((q.x[0] - 90.0).abs() < 1e-12 && q.x[1].abs() < 1e-12);
        assert!((q.y[1] - 90.0).abs() < 1e-12 && q.y[0].abs() < 1e-12);
        assert_eq!(q.center, [100.0, 105.0]);
        assert_eq!(q.quad[0], [10.0, 15.0]);
        assert_eq!(q.quad[2], [190.0, 195.0]);
        assert_eq!(q.qsize, 180.0);
    }

    #[test]
    fn frame_map_corners_are_the_quad_plus_half() {
        let q = FaceQuad::from_landmarks(&frontal()).unwrap();
        for s in [256, 1024] {
            let m = q.frame_map(s);
            let tl = m.to_photo(0.0, 0.0);
            let br = m.to_photo(s as f64, s as f64);
            assert!((tl[0] - 10.5).abs() < 1e-9 && (tl[1] - 15.5).abs() < 1e-9, "{tl:?}");
            assert!((br[0] - 190.5).abs() < 1e-9 && (br[1] - 195.5).abs() < 1e-9, "{br:?}");
        }
    }

    #[test]
    fn degenerate_landmarks_are_an_error() {
        let e = FaceQuad::from_landmarks(&[[5.0, 5.0]; 5]).unwrap_err().to_string();
        assert!(e.contains("landmarks"), "{e}");
    }

    #[test]
    fn aligning_a_gradient_samples_it_where_the_map_says() {
        // A horizontal ramp: value = x. The upright quad's frame pixel i samples photo x =
        // 10.5 + (i + 0.5)·180/n − 0.5 in index space.
        let (w, h) = (220, 220);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| [(i % w) as u8; 3]).collect();
        let q = FaceQuad::from_landmarks(&frontal()).unwrap();
        let (out, info) = align_with_info(&rgb, w, h, &q, 90).unwrap();
        assert_eq!(info, AlignInfo { shrink: 1, pad: [0; 4] });
        for i in [0usize, 17, 45, 89] {
            let want = 10.0 + (i as f64 + 0.5) * 2.0;
            let got = out[(40 * 90 + i) * 3] as f64;
            assert!((got - want).abs() <= 1.0, "pixel {i}: {got} vs {want}");
        }
    }

    #[test]
    fn shrinks_big_faces_and_pads_faces_at_the_edge() {
        let (w, h) = (400, 300);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let q = FaceQuad::from_landmarks(&frontal()).unwrap();
        // qsize 180 at n = 40: shrink ⌊180/40·0.5⌋ = 2.
        let (_, info) = align_with_info(&rgb, w, h, &q, 40).unwrap();
        assert_eq!(info.shrink, 2);
        // Move the face to the top-left corner: the quad leaves the photo.
        let lm = frontal().map(|p| [p[0] - 60.0, p[1] - 80.0]);
        let q = FaceQuad::from_landmarks(&lm).unwrap();
        let (out, info) = align_with_info(&rgb, w, h, &q, 64).unwrap();
        assert!(info.pad[0] >= 54 && info.pad[1] >= 54, "{info:?}");
        assert_eq!(out.len(), 64 * 64 * 3);
    }

    #[test]
    fn bad_arguments_name_themselves() {
        let q = FaceQuad::from_landmarks(&frontal()).unwrap();
        let e = align(&[0u8; 10], 2, 2, &q, 64).unwrap_err().to_string();
        assert!(e.contains("`rgb`"), "{e}");
        let e = align(&[0u8; 12], 2, 2, &q, 0).unwrap_err().to_string();
        assert!(e.contains("`size`"), "{e}");
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median_f32(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_f32(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
