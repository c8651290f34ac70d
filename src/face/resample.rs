//! The image filters FFHQ's alignment script (NVlabs/ffhq-dataset `download_ffhq.py`
//! `recreate_aligned_images`, as e4e's `utils/alignment.py` copies it) calls, reimplemented
//! to give the same 8-bit results:
//! - Pillow's `Image.resize(..., LANCZOS)` (`libImaging/Resample.c`): separable, horizontal pass
//!   first into an 8-bit intermediate, fixed-point weights with 22 fractional bits, support
//!   widened by the downscale factor. Any window of the output can be computed alone with the
//!   same values, so a face crop never resamples the whole photo.
//! - SciPy's `ndimage.gaussian_filter(img, [σ, σ, 0])` on float32: one 1-D pass per axis (rows
//!   first), radius ⌊4σ + 0.5⌋, `mode='reflect'` (half-sample symmetric), float32 between passes.
//!   Exactly so below σ = 12 (faces under 600 px); beyond (bigger faces touching the
//!   photo's edge), the direct sum costs O(σ) a pixel — seconds for a 1500 px face — so the
//!   blur runs on a box-decimated copy and is interpolated back: the result is band-limited,
//!   and `approximate_blur_stays_within_a_fraction_of_a_level` bounds the difference.
//! - NumPy's `np.pad(..., 'reflect')` index rule (whole-sample symmetric).

/// Fractional bits of Pillow's fixed-point coefficients for 8-bit images (32 − 8 − 2).
const PRECISION_BITS: u32 = 22;
/// Pillow's `lanczos_filter` support (a = 3).
const LANCZOS_SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Pillow's truncated sinc: sinc(x)·sinc(x/3) on [−3, 3).
fn lanczos(x: f64) -> f64 {
    if (-LANCZOS_SUPPORT..LANCZOS_SUPPORT).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// One output sample's taps: first input index and fixed-point weights.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for output indices `range`.
fn taps(in_size: usize, out_size: usize, range: std::ops::Range<usize>) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = LANCZOS_SUPPORT * filterscale;
    let ss = 1.0 / filterscale;
    let one = (1u64 << PRECISION_BITS) as f64;
    range
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero; both ends clamped as Pillow does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax).map(|x| lanczos((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = k.iter().sum();
            if total != 0.0 {
                k.iter_mut().for_each(|w| *w /= total);
            }
            let weights =
                k.iter().map(|&w| if w < 0.0 { (-0.5 + w * one) as i32 } else { (0.5 + w * one) as i32 }).collect();
            Taps { first: xmin, weights }
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The window `[ox0, ox1) × [oy0, oy1)` of Pillow's LANCZOS resize of packed RGB8 `src`
/// (w × h) to out_w × out_h, packed RGB8.
pub fn lanczos_window(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize, win: [usize; 4]) -> Vec<u8> {
    let [ox0, oy0, ox1, oy1] = win;
    let (ww, wh) = (ox1.saturating_sub(ox0), oy1.saturating_sub(oy0));
    if ww == 0 || wh == 0 {
        return Vec::new();
    }
    let half = 1i64 << (PRECISION_BITS - 1);
    let vert = taps(h, out_h, oy0..oy1);
    // The horizontal pass runs on the input rows the vertical pass reads, as Pillow's does.
    let row0 = vert.iter().map(|t| t.first).min().unwrap_or(0);
    let row1 = vert.iter().map(|t| t.first + t.weights.len()).max().unwrap_or(0);
    let rows = row1 - row0;
    let mut tmp = vec![0u8; rows * ww * 3];
    if out_w != w {
        let horiz = taps(w, out_w, ox0..ox1);
        for y in 0..rows {
            let row = &src[(row0 + y) * w * 3..(row0 + y + 1) * w * 3];
            let out = &mut tmp[y * ww * 3..(y + 1) * ww * 3];
            for (o, t) in out.chunks_exact_mut(3).zip(&horiz) {
                let mut s = [half; 3];
                for (i, &k) in t.weights.iter().enumerate() {
                    let p = &row[(t.first + i) * 3..(t.first + i) * 3 + 3];
                    for c in 0..3 {
                        s[c] += p[c] as i64 * k as i64;
                    }
                }
                for c in 0..3 {
                    o[c] = clip8(s[c]);
                }
            }
        }
    } else {
        for y in 0..rows {
            tmp[y * ww * 3..(y + 1) * ww * 3]
                .copy_from_slice(&src[((row0 + y) * w + ox0) * 3..((row0 + y) * w + ox1) * 3]);
        }
    }
    if out_h == h {
        // No vertical pass: the window's rows are the intermediate's.
        let skip = oy0 - row0;
        return tmp[skip * ww * 3..(skip + wh) * ww * 3].to_vec();
    }
    let mut out = vec![0u8; wh * ww * 3];
    for (yy, t) in vert.iter().enumerate() {
        let base = t.first - row0;
        for x in 0..ww * 3 {
            let mut s = half;
            for (i, &k) in t.weights.iter().enumerate() {
                s += tmp[(base + i) * ww * 3 + x] as i64 * k as i64;
            }
            out[yy * ww * 3 + x] = clip8(s);
        }
    }
    out
}

/// SciPy's `reflect` boundary (d c b a | a b c d | d c b a) for any index.
pub fn reflect_half(i: i64, n: usize) -> usize {
    let n = n as i64;
    let m = i.rem_euclid(2 * n);
    (if m >= n { 2 * n - 1 - m } else { m }) as usize
}

/// NumPy's `np.pad(mode='reflect')` (d c b | a b c d | c b a), repeated for wide pads.
pub fn reflect_whole(i: i64, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let p = 2 * (n as i64 - 1);
    let m = i.rem_euclid(p);
    (if m >= n as i64 { p - m } else { m }) as usize
}

/// `scipy.ndimage._gaussian_kernel1d(σ, 0, radius)`: normalised exp(−x²/2σ²).
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let k: Vec<f64> = (-radius..=radius).map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp()).collect();
    let total: f64 = k.iter().sum();
    k.into_iter().map(|v| v / total).collect()
}

/// `gaussian_filter(img, [σ, σ, 0])` of an interleaved float32 image (`channels` per pixel):
/// SciPy's sums for σ < 12, decimated beyond (see the module header).
pub fn gaussian_blur(img: &[f32], w: usize, h: usize, channels: usize, sigma: f64) -> Vec<f32> {
    decimated_blur(img, w, h, channels, sigma)
}

/// Reflect-extends by a margin of 4σ (SciPy's boundary, made explicit), box-averages d×d
/// blocks (d = ⌊σ/6⌋), blurs them with the σ that keeps the total variance (the box adds
/// (d² − 1)/12, the bilinear read-back about (d² − 1)/6), and reads back bilinearly.
fn decimated_blur(img: &[f32], w: usize, h: usize, channels: usize, sigma: f64) -> Vec<f32> {
    let d = ((sigma / 6.0).floor() as usize).max(1);
    if d == 1 {
        return gaussian_blur_exact(img, w, h, channels, sigma);
    }
    let margin = ((4.0 * sigma).ceil() as usize).div_ceil(d) * d;
    let (sw, sh) = ((w + 2 * margin).div_ceil(d), (h + 2 * margin).div_ceil(d));
    let xs: Vec<usize> = (0..sw * d).map(|x| reflect_half(x as i64 - margin as i64, w)).collect();
    let mut small = vec![0f32; sw * sh * channels];
    let n = (d * d) as f64;
    let mut acc = vec![0f64; sw * channels];
    for by in 0..sh {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for y in by * d..(by + 1) * d {
            let row = &img[reflect_half(y as i64 - margin as i64, h) * w * channels..];
            for (x, &sx) in xs.iter().enumerate() {
                for c in 0..channels {
                    acc[(x / d) * channels + c] += row[sx * channels + c] as f64;
                }
            }
        }
        for (o, &a) in small[by * sw * channels..(by + 1) * sw * channels].iter_mut().zip(&acc) {
            *o = (a / n) as f32;
        }
    }
    let df = d as f64;
    let small_sigma = (sigma * sigma - (df * df - 1.0) / 4.0).max(0.0).sqrt() / df;
    let blurred = gaussian_blur_exact(&small, sw, sh, channels, small_sigma);
    // Small pixel k covers extended pixels [k·d, (k+1)·d): its centre is at k·d + (d − 1)/2.
    let taps = |i: usize, n: usize| -> (usize, usize, f64) {
        let u = (((i + margin) as f64 - (df - 1.0) / 2.0) / df).clamp(0.0, (n - 1) as f64);
        let k = (u.floor() as usize).min(n - 1);
        (k, (k + 1).min(n - 1), u - k as f64)
    };
    let xt: Vec<(usize, usize, f64)> = (0..w).map(|x| taps(x, sw)).collect();
    let mut out = vec![0f32; img.len()];
    for y in 0..h {
        let (y0, y1, fy) = taps(y, sh);
        for (x, &(x0, x1, fx)) in xt.iter().enumerate() {
            for c in 0..channels {
                let at = |yy: usize, xx: usize| blurred[(yy * sw + xx) * channels + c] as f64;
                let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
                let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
                out[(y * w + x) * channels + c] = (top + (bottom - top) * fy) as f32;
            }
        }
    }
    out
}

/// SciPy's `gaussian_filter(img, [σ, σ, 0])`: columns (axis 0) first, then rows, each pass in
/// double and stored as float32.
fn gaussian_blur_exact(img: &[f32], w: usize, h: usize, channels: usize, sigma: f64) -> Vec<f32> {
    if sigma <= 1e-15 || w == 0 || h == 0 {
        return img.to_vec();
    }
    let k = gaussian_kernel(sigma);
    let r = (k.len() / 2) as i64;
    let stride = w * channels;
    // Axis 0: each output row mixes input rows y−r..=y+r.
    let mut tmp = vec![0f32; img.len()];
    let mut acc = vec![0f64; stride];
    for y in 0..h {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (t, &kv) in k.iter().enumerate() {
            let sy = reflect_half(y as i64 + t as i64 - r, h);
            for (a, &v) in acc.iter_mut().zip(&img[sy * stride..(sy + 1) * stride]) {
                *a += kv * v as f64;
            }
        }
        for (o, &a) in tmp[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
            *o = a as f32;
        }
    }
    // Axis 1, on a reflect-extended copy of each row.
    let mut out = vec![0f32; img.len()];
    let mut ext = vec![0f64; (w + 2 * r as usize) * channels];
    for y in 0..h {
        let row = &tmp[y * stride..(y + 1) * stride];
        for (e, px) in ext.chunks_exact_mut(channels).enumerate() {
            let sx = reflect_half(e as i64 - r, w);
            for c in 0..channels {
                px[c] = row[sx * channels + c] as f64;
            }
        }
        for x in 0..w {
            for c in 0..channels {
                let mut a = 0.0;
                for (t, &kv) in k.iter().enumerate() {
                    a += kv * ext[(x + t) * channels + c];
                }
                out[y * stride + x * channels + c] = a as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_rules() {
        let half: Vec<usize> = (-4..8).map(|i| reflect_half(i, 4)).collect();
        assert_eq!(half, [3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
        let whole: Vec<usize> = (-4..8).map(|i| reflect_whole(i, 4)).collect();
        assert_eq!(whole, [2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        assert_eq!(reflect_whole(-5, 1), 0);
    }

    #[test]
    fn lanczos_taps_sum_to_one_and_flat_stays_flat() {
        for (i, o) in [(4000, 2000), (3001, 1000), (10, 3)] {
            for t in taps(i, o, 0..o) {
                let s: i64 = t.weights.iter().map(|&k| k as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= t.weights.len() as i64, "{i}->{o}: {s}");
            }
        }
        let src = vec![77u8; 31 * 17 * 3];
        assert!(lanczos_window(&src, 31, 17, 15, 8, [0, 0, 15, 8]).iter().all(|&v| v == 77));
    }

    #[test]
    fn a_window_equals_the_same_part_of_the_full_resize() {
        let (w, h) = (37, 29);
        let src: Vec<u8> = (0..w * h * 3).map(|i| ((i * 37 + i / 7) % 256) as u8).collect();
        let (ow, oh) = (18, 14);
        let full = lanczos_window(&src, w, h, ow, oh, [0, 0, ow, oh]);
        let part = lanczos_window(&src, w, h, ow, oh, [3, 5, 11, 13]);
        for y in 5..13 {
            for x in 3..11 {
                for c in 0..3 {
                    assert_eq!(part[((y - 5) * 8 + x - 3) * 3 + c], full[(y * ow + x) * 3 + c]);
                }
            }
        }
    }

    #[test]
    fn approximate_blur_stays_within_a_fraction_of_a_level() {
        // Hard-edged 8-bit content (what the pad path blurs: reflected photo), σ = 12 and 30.
        for (sigma, w, h) in [(12.0, 301, 257), (30.0, 420, 380)] {
            let img: Vec<f32> = (0..w * h * 3)
                .map(|i| {
                    let (x, y, c) = ((i / 3) % w, (i / 3) / w, i % 3);
                    let block = ((x / 37 + y / 23 + c) % 3) as f32 * 100.0;
                    block + ((x * 7 + y * 13) % 17) as f32
                })
                .collect();
            let exact = gaussian_blur_exact(&img, w, h, 3, sigma);
            let approx = gaussian_blur(&img, w, h, 3, sigma);
            let diffs: Vec<f32> = exact.iter().zip(&approx).map(|(a, b)| (a - b).abs()).collect();
            let max = diffs.iter().cloned().fold(0.0, f32::max);
            let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
            eprintln!("σ {sigma}: approximate vs exact blur: max {max:.3}, mean {mean:.4} levels");
            assert!(max < 0.35 && mean < 0.08, "σ {sigma}: max {max:.3}, mean {mean:.4} levels");
        }
    }

    #[test]
    fn gaussian_keeps_mass_and_constants() {
        let flat = vec![3.5f32; 20 * 9 * 3];
        let b = gaussian_blur(&flat, 20, 9, 3, 2.0);
        assert!(b.iter().all(|v| (v - 3.5).abs() < 1e-5));
        // An impulse spreads but (reflect mode, far from edges) keeps its sum.
        let mut img = vec![0f32; 41 * 41];
        img[20 * 41 + 20] = 1.0;
        let b = gaussian_blur(&img, 41, 41, 1, 1.5);
        let sum: f32 = b.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5 && b[20 * 41 + 20] < 0.1);
        assert!((b[20 * 41 + 19] - b[20 * 41 + 21]).abs() < 1e-7, "symmetric");
    }
}
