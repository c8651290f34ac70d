//! 8-bit image resampling that reproduces Pillow's `Image.resize(..., BICUBIC)` bit for bit:
//! separable, horizontal pass first into an 8-bit intermediate, fixed-point weights with 22
//! fractional bits, support widened by the downscale factor (antialiasing). CLIP's official
//! preprocessing (`clip._transform`) runs through it, so a picture scores as in Python.

/// Fractional bits of Pillow's fixed-point coefficients (32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// Keys' cubic with a = -0.5, Pillow's `bicubic_filter`.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

const BICUBIC_SUPPORT: f64 = 2.0;

/// For each output sample: the first input index, how many inputs, and their fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    weights: Vec<Vec<i64>>,
}

fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero; both ends are clamped as Pillow does.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..n).map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            k.iter_mut().for_each(|w| *w /= ww);
        }
        let one = (1u64 << PRECISION_BITS) as f64;
        let fixed = k.iter().map(|&w| if w < 0.0 { (-0.5 + w * one) as i64 } else { (0.5 + w * one) as i64 }).collect();
        bounds.push((xmin, n));
        weights.push(fixed);
    }
    Coeffs { bounds, weights }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes interleaved 8-bit pixels (`channels` per pixel, rows packed) like Pillow's BICUBIC.
pub fn resize_bicubic(src: &[u8], width: usize, height: usize, channels: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass, only over the rows the vertical pass reads (as Pillow does).
    let vert = coeffs(height, out_h);
    let first = vert.bounds.first().map(|b| b.0).unwrap_or(0);
    let last = vert.bounds.last().map(|b| b.0 + b.1).unwrap_or(0);
    let (tmp, tmp_w) = if out_w != width {
        let horiz = coeffs(width, out_w);
        let rows = last - first;
        let mut tmp = vec![0u8; rows * out_w * channels];
        for y in 0..rows {
            let row = &src[(y + first) * width * channels..(y + first + 1) * width * channels];
            for (xx, ((xmin, n), k)) in horiz.bounds.iter().zip(&horiz.weights).enumerate() {
                for c in 0..channels {
                    let mut ss = half;
                    for x in 0..*n {
                        ss += row[(xmin + x) * channels + c] as i64 * k[x];
                    }
                    tmp[(y * out_w + xx) * channels + c] = clip8(ss);
                }
            }
        }
        (tmp, out_w)
    } else {
        (src[first * width * channels..last * width * channels].to_vec(), width)
    };
    if out_h == height {
        return tmp;
    }
    let mut out = vec![0u8; out_h * tmp_w * channels];
    for (yy, ((ymin, n), k)) in vert.bounds.iter().zip(&vert.weights).enumerate() {
        let ymin = ymin - first;
        for x in 0..tmp_w {
            for c in 0..channels {
                let mut ss = half;
                for y in 0..*n {
                    ss += tmp[((ymin + y) * tmp_w + x) * channels + c] as i64 * k[y];
                }
                out[(yy * tmp_w + x) * channels + c] = clip8(ss);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_bicubic(&src, 5, 4, 3, 5, 4), src);
    }

    #[test]
    fn flat_images_stay_flat_up_and_down() {
        let src = vec![200u8; 31 * 17];
        for (w, h) in [(7, 5), (64, 40), (31, 3)] {
            assert!(resize_bicubic(&src, 31, 17, 1, w, h).iter().all(|&v| v == 200), "{w}x{h}");
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(301, 337), (1000, 224), (3, 224)] {
            for k in coeffs(i, o).weights {
                let s: i64 = k.iter().sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{i}->{o}: {s}");
            }
        }
    }
}
