//! The loss terms beyond the CLIP distance, and the figures the loop and `eval` share: the
//! preservation term's weight map and value, the separation term, per-sample similarities.

use tch::{Kind, Tensor};

use crate::edit::guide::clip_distance;
use crate::error::Result;
use crate::models::stylegan2::Generator;

/// 1 − M for a `side`² synthesis of `g`: M is 1 inside `region` (generator pixels, scaled to
/// `side`), 0 outside, with linear edges 1/16 of the side wide; no region = M is 0 everywhere.
/// Shape (1, 1, side, side).
pub(crate) fn outside_weight(g: &Generator, region: Option<[f32; 4]>, side: i64) -> Result<Tensor> {
    let device = g.device();
    let Some(r) = region else {
        return Ok(Tensor::f_ones([1, 1, side, side], (Kind::Float, device))?);
    };
    let scale = side as f64 / g.config.size as f64;
    let feather = (side as f64 / 16.0).max(1.0);
    let axis = |lo: f32, hi: f32| -> Result<Tensor> {
        let c = Tensor::f_arange(side, (Kind::Float, device))?.f_add_scalar(0.5)?;
        let up = c.f_sub_scalar(lo as f64 * scale)?.f_div_scalar(feather)?.f_add_scalar(0.5)?.f_clamp(0.0, 1.0)?;
        let down =
            c.f_neg()?.f_add_scalar(hi as f64 * scale)?.f_div_scalar(feather)?.f_add_scalar(0.5)?.f_clamp(0.0, 1.0)?;
        Ok(up.f_mul(&down)?)
    };
    let (x, y) = (axis(r[0], r[2])?, axis(r[1], r[3])?);
    let inside = y.f_view([side, 1])?.f_mul(&x.f_view([1, side])?)?.f_view([1, 1, side, side])?;
    Ok(inside.f_neg()?.f_add_scalar(1.0)?)
}

/// The preservation term per sample: Σ (ΔG ⊙ (1 − M))² / (C · Σ(1 − M)), the mean squared change
/// where the edit should leave the picture alone.
pub(crate) fn change_outside(img: &Tensor, unedited: &Tensor, keep: &Tensor) -> Result<Tensor> {
    let change = sum_per_sample(&img.f_sub(unedited)?.f_square()?.f_mul(keep)?)?;
    let area = keep.f_sum(Kind::Float)?.f_mul_scalar(img.size()[1] as f64)?.f_clamp_min(1e-8)?;
    Ok(change.f_div(&area)?)
}

/// The cosines between the samples' image changes ΔG_i = img_i − unedited_i, a (B, B) matrix
/// (1 on the diagonal where a change exists; 0 where one has not moved yet).
pub(crate) fn change_cosines(img: &Tensor, unedited: &Tensor) -> Result<Tensor> {
    let d = img.f_sub(unedited)?.f_flatten(1, -1)?;
    // The epsilon keeps the gradient finite at the start, where every change is zero.
    let n = d.f_square()?.f_sum_dim_intlist([1i64].as_slice(), true, None::<Kind>)?.f_add_scalar(1e-12)?.f_sqrt()?;
    let unit = d.f_div(&n)?;
    Ok(unit.f_matmul(&unit.f_transpose(0, 1)?)?)
}

/// The separation term: Σ_{i<j} cos²(ΔG_i, ΔG_j), zero when every pair of changes is orthogonal.
pub(crate) fn separation(img: &Tensor, unedited: &Tensor) -> Result<Tensor> {
    let c = change_cosines(img, unedited)?;
    let b = c.size()[0];
    let off = Tensor::f_ones([b, b], (Kind::Float, img.device()))?.f_triu(1)?;
    Ok(c.f_square()?.f_mul(&off)?.f_sum(Kind::Float)?)
}

pub(crate) fn sum_per_sample(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_flatten(1, -1)?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?)
}

/// Cosine similarity per sample, as f64.
pub(crate) fn similarities(features: &Tensor, text: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(clip_distance(features, text)?.f_neg()?.f_add_scalar(1.0)?.f_to_kind(Kind::Double)?)?)
}
