//! Dense optical flow between two renders of one synthetic scene: the unedited render G_θ(w)
//! and an edited one G_{θ+k·x}(w). Both come from the same generator and the same latent, so
//! they are perfectly aligned, lit alike and free of noise; what differs is a smooth
//! deformation of parts (a bigger nose, a rounder face) and, rarely, new content (teeth).
//!
//! The estimator is Horn and Schunck's ("Determining Optical Flow", Artificial Intelligence 17,
//! 1981) made coarse-to-fine with warping (Brox et al., ECCV 2004, section 3) and a 3×3 median of
//! the flow after each warp (Sun, Roth and Black, "Secrets of Optical Flow Estimation", CVPR
//! 2010), which removes the outliers a quadratic data term leaves at high-contrast edges. Every
//! step is a handful of libtorch ops on (B, C, H, W) tensors, so it runs batched over strengths
//! and on the GPU as well. ARCHITECTURE.md ("Moving the photo's own pixels") gives the
//! measurements behind the choice and the defaults, and OpenCV's estimators on the same cases.
//!
//! The flow is backward, in pixels of the input: `after(p) ≈ before(p + d(p))` with pixel k
//! spanning [k, k + 1).

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// How the flow is estimated; the defaults were tuned on the transfer fixtures (see the module
/// header).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowParams {
    /// Horn–Schunck's α for pictures scaled to [0, 1]: larger is smoother.
    pub smoothness: f64,
    /// Linearisations (warps) per pyramid level.
    pub warps: usize,
    /// Jacobi iterations per warp.
    pub iterations: usize,
    /// The coarsest pyramid level keeps at least this many pixels on its shorter side (a
    /// coarser start misreads high-contrast details such as teeth).
    pub coarsest: i64,
}

impl Default for FlowParams {
    fn default() -> Self {
        FlowParams { smoothness: 0.04, warps: 3, iterations: 40, coarsest: 32 }
    }
}

impl FlowParams {
    fn validate(&self) -> Result<()> {
        if !(self.smoothness.is_finite() && self.smoothness > 0.0) {
            return Err(Error::arg("smoothness", format!("{}; expected a positive number", self.smoothness)));
        }
        if self.warps == 0 || self.iterations == 0 || self.coarsest < 4 {
            return Err(Error::arg(
                "flow",
                format!(
                    "{} warps, {} iterations, coarsest {} px: each must be at least 1 (4 px)",
                    self.warps, self.iterations, self.coarsest
                ),
            ));
        }
        Ok(())
    }
}

/// The smallest side a flow is estimated on.
pub const MIN_SIDE: i64 = 8;

/// The backward flow from each of `after` (B, C, H, W) to `before` ((1 or B), C, H, W), as
/// (B, 2, H, W) float32 pixels (x then y) on their device. Values of both are expected in [0, 1].
/// `cancelled` is asked between warps.
pub fn estimate(before: &Tensor, after: &Tensor, params: &FlowParams, cancelled: &dyn Fn() -> bool) -> Result<Tensor> {
    params.validate()?;
    let (b, c, h, w) =
        after.size4().map_err(|_| Error::arg("after", format!("{:?}: expected (B, C, H, W)", after.size())))?;
    let (b0, c0, h0, w0) =
        before.size4().map_err(|_| Error::arg("before", format!("{:?}: expected (B, C, H, W)", before.size())))?;
    if (c0, h0, w0) != (c, h, w) || !(b0 == 1 || b0 == b) {
        return Err(Error::arg(
            "before",
            format!(
                "{:?} does not match `after` {:?} (same channels and size, batch 1 or the same)",
                before.size(),
                after.size()
            ),
        ));
    }
    if h < MIN_SIDE || w < MIN_SIDE {
        return Err(Error::arg("after", format!("{w}×{h} px; a flow needs at least {MIN_SIDE}×{MIN_SIDE}")));
    }
    let before = before.f_to_kind(Kind::Float)?.f_expand([b, c, h, w], false)?.f_contiguous()?;
    let after = after.f_to_kind(Kind::Float)?;
    for (name, t) in [("before", &before), ("after", &after)] {
        if !bool::try_from(t.f_isfinite()?.f_all()?)? {
            return Err(Error::arg(name, "holds NaN or infinity"));
        }
    }
    tch::no_grad(|| {
        let mut pyramid = vec![(before, after)];
        loop {
            let (pb, pa) = pyramid.last().expect("the pyramid has its finest level");
            let (_, _, ph, pw) = pb.size4()?;
            if ph.min(pw) / 2 < params.coarsest {
                break;
            }
            let half = |t: &Tensor| t.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>);
            let next = (half(pb)?, half(pa)?);
            pyramid.push(next);
        }
        let mut flow: Option<Tensor> = None;
        for (pb, pa) in pyramid.iter().rev() {
            let (_, _, ph, pw) = pb.size4()?;
            let d = match flow {
                None => Tensor::f_zeros([b, 2, ph, pw], (Kind::Float, pb.device()))?,
                Some(coarse) => upsample_flow(&coarse, ph, pw)?,
            };
            flow = Some(refine(pb, pa, d, params, cancelled)?);
        }
        Ok(flow.expect("at least one level"))
    })
}

/// A coarse flow brought to (h, w): resampled bilinearly, its vectors scaled with the size.
fn upsample_flow(coarse: &Tensor, h: i64, w: i64) -> Result<Tensor> {
    let (_, _, ch, cw) = coarse.size4()?;
    let up = coarse.f_upsample_bilinear2d([h, w], false, None::<f64>, None::<f64>)?;
    let scale = Tensor::from_slice(&[w as f32 / cw as f32, h as f32 / ch as f32]).f_to_device(coarse.device())?;
    Ok(up.f_mul(&scale.f_view([1, 2, 1, 1])?)?)
}

/// `warps` linearisations of the data term around the current flow `d`, each solved with
/// Jacobi iterations of Horn–Schunck's equations for the whole flow, then median-filtered.
fn refine(
    before: &Tensor,
    after: &Tensor,
    mut d: Tensor,
    p: &FlowParams,
    cancelled: &dyn Fn() -> bool,
) -> Result<Tensor> {
    let (gx, gy) = gradients(before)?;
    let a2 = p.smoothness * p.smoothness;
    let kernel = neighbour_kernel(before.device())?;
    for _ in 0..p.warps {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let bw = warp(before, &d)?;
        let gxw = warp(&gx, &d)?;
        let gyw = warp(&gy, &d)?;
        let dx = d.f_narrow(1, 0, 1)?;
        let dy = d.f_narrow(1, 1, 1)?;
        // Linearised: before(p + u) ≈ bw + ∇bw·(u − d), so each channel's residual is ∇bw·u + r0.
        let r0 = bw.f_sub(after)?.f_sub(&gxw.f_mul(&dx)?)?.f_sub(&gyw.f_mul(&dy)?)?;
        let sum_c = |t: Tensor| t.f_sum_dim_intlist(1, false, Kind::Float);
        let j11 = sum_c(gxw.f_mul(&gxw)?)?.f_add_scalar(a2)?;
        let j12 = sum_c(gxw.f_mul(&gyw)?)?;
        let j22 = sum_c(gyw.f_mul(&gyw)?)?.f_add_scalar(a2)?;
        let b1 = sum_c(gxw.f_mul(&r0)?)?;
        let b2 = sum_c(gyw.f_mul(&r0)?)?;
        let det = j11.f_mul(&j22)?.f_sub(&j12.f_mul(&j12)?)?;
        // (J + α²I) u = α² ū − b, solved per pixel in closed form with M = (J + α²I)⁻¹:
        // u = α²·M·ū − M·b. Written per component as u = P ⊙ ū + Q ⊙ ū_swapped − c, five ops an
        // iteration (the neighbour mean yields ū and ū_swapped in one convolution).
        let (i11, i12, i22) = (j22.f_div(&det)?, j12.f_neg()?.f_div(&det)?, j11.f_div(&det)?);
        let p_ = Tensor::f_stack(&[&i11, &i22], 1)?.f_mul_scalar(a2)?;
        let q_ = Tensor::f_stack(&[&i12, &i12], 1)?.f_mul_scalar(a2)?;
        let c =
            Tensor::f_stack(&[i11.f_mul(&b1)?.f_add(&i12.f_mul(&b2)?)?, i12.f_mul(&b1)?.f_add(&i22.f_mul(&b2)?)?], 1)?;
        let mut u = d;
        for _ in 0..p.iterations {
            let means = neighbour_means(&u, &kernel)?;
            let (mean, swapped) = (means.f_narrow(1, 0, 2)?, means.f_narrow(1, 2, 2)?);
            u = mean.f_mul(&p_)?.f_addcmul(&swapped, &q_)?.f_sub(&c)?;
        }
        d = median3(&u)?;
    }
    Ok(d)
}

/// Central differences along x and y, edges replicated.
fn gradients(img: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, _, h, w) = img.size4()?;
    let px = img.f_pad([1, 1, 0, 0], "replicate", None::<f64>)?;
    let py = img.f_pad([0, 0, 1, 1], "replicate", None::<f64>)?;
    let gx = px.f_narrow(3, 2, w)?.f_sub(&px.f_narrow(3, 0, w)?)?.f_mul_scalar(0.5)?;
    let gy = py.f_narrow(2, 2, h)?.f_sub(&py.f_narrow(2, 0, h)?)?.f_mul_scalar(0.5)?;
    Ok((gx, gy))
}

/// Horn and Schunck's neighbour average (1/6 on the sides, 1/12 on the corners) of a flow's
/// two components, as four output channels: (ū_x, ū_y, ū_y, ū_x).
fn neighbour_kernel(device: tch::Device) -> Result<Tensor> {
    let (s, c) = (1.0 / 6.0, 1.0 / 12.0);
    let avg = [c, s, c, s, 0.0, s, c, s, c];
    let mut k = vec![0.0f32; 4 * 2 * 9];
    for (out, input) in [(0, 0), (1, 1), (2, 1), (3, 0)] {
        for (i, v) in avg.iter().enumerate() {
            k[(out * 2 + input) * 9 + i] = *v as f32;
        }
    }
    Ok(Tensor::from_slice(&k).f_view([4, 2, 3, 3])?.f_to_device(device)?)
}

fn neighbour_means(u: &Tensor, kernel: &Tensor) -> Result<Tensor> {
    let padded = u.f_pad([1, 1, 1, 1], "replicate", None::<f64>)?;
    Ok(padded.f_conv2d(kernel, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1)?)
}

/// The 3×3 median of each flow component, edges replicated.
fn median3(d: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = d.size4()?;
    let padded = d.f_reshape([b * c, 1, h, w])?.f_pad([1, 1, 1, 1], "replicate", None::<f64>)?;
    let cols = padded.f_im2col([3, 3], [1, 1], [0, 0], [1, 1])?;
    let (median, _) = cols.f_median_dim(1, false)?;
    Ok(median.f_reshape([b, c, h, w])?)
}

/// `img` sampled at p + d(p) (bilinear, edges replicated).
pub fn warp(img: &Tensor, d: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = img.size4()?;
    let grid = sampling_grid(d, w, h)?;
    Ok(img.f_grid_sampler(&grid, 0, 1, false)?)
}

/// grid_sample's normalised grid (B, H, W, 2) for the points p + d(p) of an (H, W) picture.
fn sampling_grid(d: &Tensor, w: i64, h: i64) -> Result<Tensor> {
    let device = d.device();
    let xs = Tensor::f_arange(w, (Kind::Float, device))?.f_add_scalar(0.5)?.f_view([1, 1, w])?;
    let ys = Tensor::f_arange(h, (Kind::Float, device))?.f_add_scalar(0.5)?.f_view([1, h, 1])?;
    let gx = d.f_select(1, 0)?.f_add(&xs)?.f_mul_scalar(2.0 / w as f64)?.f_sub_scalar(1.0)?;
    let gy = d.f_select(1, 1)?.f_add(&ys)?.f_mul_scalar(2.0 / h as f64)?.f_sub_scalar(1.0)?;
    Ok(Tensor::f_stack(&[gx, gy], 3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth textured picture (B = 1, 3 channels) in [0, 1].
    fn texture(h: i64, w: i64) -> Tensor {
        let ys = Tensor::arange(h, (Kind::Float, tch::Device::Cpu)).view([1, 1, h, 1]);
        let xs = Tensor::arange(w, (Kind::Float, tch::Device::Cpu)).view([1, 1, 1, w]);
        let r = ((&xs / 5.0).sin() * (&ys / 7.0).cos() * 0.4 + 0.5).expand([1, 1, h, w], false);
        let g = ((&xs / 9.0 + &ys / 4.0).sin() * 0.3 + 0.5).expand([1, 1, h, w], false);
        let b = ((&xs * &ys / 200.0).cos() * 0.2 + 0.5).expand([1, 1, h, w], false);
        Tensor::cat(&[r, g, b], 1)
    }

    #[test]
    fn a_known_smooth_displacement_is_recovered() {
        let (h, w) = (96, 128);
        let before = texture(h, w);
        // A bump of up to ~3 px around (60, 50).
        let ys = Tensor::arange(h, (Kind::Float, tch::Device::Cpu)).view([h, 1]) + 0.5 - 50.0;
        let xs = Tensor::arange(w, (Kind::Float, tch::Device::Cpu)).view([1, w]) + 0.5 - 60.0;
        let g = (-(&xs * &xs + &ys * &ys) / (2.0 * 15.0 * 15.0)).exp();
        let truth = Tensor::stack(&[&xs * &g * -0.2, (&ys * &g * -0.2).expand([h, w], false)], 0).unsqueeze(0);
        let after = warp(&before, &truth).unwrap();
        let d = estimate(&before, &after, &FlowParams::default(), &|| false).unwrap();
        assert_eq!(d.size(), [1, 2, h, w]);
        let epe = (&d - &truth).square().sum_dim_intlist(1, false, Kind::Float).sqrt();
        let moved = truth.square().sum_dim_intlist(1, false, Kind::Float).sqrt().gt(0.5);
        let mean = epe.masked_select(&moved).mean(Kind::Float).double_value(&[]);
        assert!(mean < 0.25, "mean end-point error where the picture moves: {mean:.3} px");
        // Identical pictures: no motion (beyond the sampling grid's float rounding).
        let still = estimate(&before, &before, &FlowParams::default(), &|| false).unwrap();
        assert!(still.abs().max().double_value(&[]) < 1e-4);
    }

    #[test]
    fn batches_match_single_estimates_and_bad_input_is_named() {
        let before = texture(40, 48);
        let shift = Tensor::from_slice(&[0.7f32, -0.4]).view([1, 2, 1, 1]).expand([1, 2, 40, 48], false);
        let a1 = warp(&before, &shift).unwrap();
        let a2 = warp(&before, &(&shift * -1.5)).unwrap();
        let p = FlowParams::default();
        let both = estimate(&before, &Tensor::cat(&[&a1, &a2], 0), &p, &|| false).unwrap();
        let one = estimate(&before, &a2, &p, &|| false).unwrap();
        assert!((both.narrow(0, 1, 1) - one).abs().max().double_value(&[]) < 1e-5);

        let e = estimate(&before, &texture(40, 40), &p, &|| false).unwrap_err().to_string();
        assert!(e.contains("`before`") && e.contains("does not match"), "{e}");
        let e = estimate(&texture(4, 4), &texture(4, 4), &p, &|| false).unwrap_err().to_string();
        assert!(e.contains("at least 8×8"), "{e}");
        let nan = before.copy().fill_(f64::NAN);
        let e = estimate(&before, &nan, &p, &|| false).unwrap_err().to_string();
        assert!(e.contains("`after`") && e.contains("NaN"), "{e}");
        let e = estimate(&before, &a1, &FlowParams { smoothness: -1.0, ..p }, &|| false).unwrap_err().to_string();
        assert!(e.contains("`smoothness`"), "{e}");
        assert!(matches!(estimate(&before, &a1, &p, &|| true), Err(Error::Cancelled)));
    }
}
