//! Moving the photo's own pixels by an edit's displacement.
//!
//! A shape edit is, to first order, a displacement of parts. The unedited render G_θ(w) and an
//! edited render G_{θ+k·x}(w) are two pictures of one synthetic scene, perfectly aligned, so the
//! [`flow`](super::flow) between them is that displacement, in frame pixels. Mapped through the
//! photo's [`FrameMap`] (an affine map, so a frame displacement d becomes the photo displacement
//! A·d with A its linear part) it moves the photo's own pixels, at the photo's resolution: the
//! person keeps their skin, colours and detail, and what the edit does not move stays bit for
//! bit. Where the flow cannot explain the edited render (new content: teeth, an opened mouth),
//! the residual after warping G_θ(w) is large, and there the render is blended in as the
//! `changes` paste does; [`Transfer::blended_fraction`] says how much of the region needed it.
//!
//! A [`Transfer`] keeps the flows of the rendered strengths and the photo's pixels around the
//! frame, so [`Transfer::layer`] gives the photo at any strength between them (the two nearest
//! flows interpolated) without rendering again: a host's strength slider.

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::face::flow::{self, FlowParams};
use crate::face::paste::{self, Layer, PasteParams};
use crate::face::FrameMap;

/// How flows are estimated and where the render is blended in instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferParams {
    pub flow: FlowParams,
    /// The blend mask, read as the `changes` paste reads its parameters, on the residual
    /// |G_k − G_0 warped by the flow| instead of |G_k − G_0|; `feather` also fades the
    /// displacement out towards the frame's edge, so the moved region has no seam.
    pub mask: PasteParams,
}

impl Default for TransferParams {
    fn default() -> Self {
        // A residual under 8 levels is interpolation and flow error; 16 is new content.
        TransferParams { flow: FlowParams::default(), mask: PasteParams { threshold: 16.0, ..PasteParams::default() } }
    }
}

/// An edit's displacements at its rendered strengths, ready to move one photo's pixels.
pub struct Transfer {
    /// Ascending, 0 included.
    strengths: Vec<f64>,
    /// (S, 2, h, w) backward flows in frame pixels.
    flows: Tensor,
    /// (S, 1, h, w) where the render replaces the moved photo, in [0, 1] (the region's fade is
    /// applied per layer pixel).
    blend: Tensor,
    /// (S, 3, h, w) the renders in 8-bit levels (float).
    renders: Tensor,
    blended: Vec<f64>,
    map: FrameMap,
    /// The photo's pixels around the layer (room for the largest displacement), (1, 3, h, w)
    /// float levels.
    crop: Tensor,
    /// The layer's box in the photo: the frame's footprint clipped to the photo.
    layer_box: [usize; 4],
    /// Per layer pixel: the frame point it shows, as grid_sample's normalised coordinates
    /// (1, h, w, 2); its own centre in the crop, likewise; the displacement fade.
    frame_grid: Tensor,
    crop_grid: Tensor,
    fade: Tensor,
    /// The photo's own pixels of the layer box, (1, 3, h, w) uint8.
    original: Tensor,
}

/// Below this many photo pixels a displacement leaves the pixel as it is (bit for bit).
const STILL: f64 = 1e-3;

impl Transfer {
    /// Estimates the flows from `before` (1, 3, h, w), the unedited render, to each of
    /// `afters` (S, 3, h, w), the renders at `strengths`, all in the generator's [-1, 1] and of
    /// the size `map` expects, and keeps what the layers need of the packed RGB8 `photo`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        photo: &[u8],
        photo_width: usize,
        photo_height: usize,
        map: &FrameMap,
        before: &Tensor,
        afters: &Tensor,
        strengths: &[f64],
        params: &TransferParams,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Transfer> {
        params.mask.validate()?;
        if photo.len() != photo_width * photo_height * 3 || photo.is_empty() {
            return Err(Error::arg(
                "photo",
                format!("{} bytes for a {photo_width}×{photo_height} RGB8 photo", photo.len()),
            ));
        }
        let (fw, fh) = (map.frame_width as i64, map.frame_height as i64);
        let (s, c, h, w) = afters
            .size4()
            .map_err(|_| Error::arg("after", format!("{:?}: expected (S, 3, H, W) renders", afters.size())))?;
        if (c, h, w) != (3, fh, fw) || before.size() != [1, 3, fh, fw] {
            return Err(Error::arg(
                "after",
                format!(
                    "before {:?} and after {:?} must both be {fw}×{fh} RGB pictures, the frame this photo's map expects",
                    before.size(),
                    afters.size()
                ),
            ));
        }
        if strengths.len() != s as usize {
            return Err(Error::arg("strengths", format!("{} strengths for {s} renders", strengths.len())));
        }
        if let Some(k) = strengths.iter().find(|k| !k.is_finite()) {
            return Err(Error::arg("strengths", format!("{k} is not a finite number")));
        }
        let device = afters.device();
        // As 8-bit pictures, the way every other output sees the renders: a render's float
        // noise differs with the batch it was made in, its 8-bit levels do not.
        let to01 = |t: &Tensor| -> Result<Tensor> {
            let levels = t.f_to_kind(Kind::Float)?.f_to_device(device)?.f_add_scalar(1.0)?.f_mul_scalar(127.5)?;
            Ok(levels.f_round()?.f_clamp(0.0, 255.0)?.f_div_scalar(255.0)?)
        };
        let before = to01(before)?;
        let afters = to01(afters)?;

        // Strength 0 is the unedited render by definition; the others get a flow each.
        let mut order: Vec<(f64, Option<i64>)> =
            strengths.iter().enumerate().map(|(i, &k)| (k, Some(i as i64))).collect();
        order.retain(|(k, _)| *k != 0.0);
        order.push((0.0, None));
        order.sort_by(|a, b| a.0.total_cmp(&b.0));
        order.dedup_by(|a, b| a.0 == b.0);
        let moving: Vec<i64> = order.iter().filter_map(|(_, i)| *i).collect();
        let (flows, renders01) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
            let zero = Tensor::f_zeros([1, 2, fh, fw], (Kind::Float, device))?;
            let moved = match moving.is_empty() {
                true => None,
                false => {
                    let idx = Tensor::from_slice(&moving).f_to_device(device)?;
                    let a = afters.f_index_select(0, &idx)?;
                    // One strength at a time: a batch may round differently, and a layer must
                    // not depend on which other strengths were rendered with it.
                    let flows = (0..moving.len() as i64)
                        .map(|i| flow::estimate(&before, &a.f_narrow(0, i, 1)?, &params.flow, cancelled))
                        .collect::<Result<Vec<_>>>()?;
                    Some((Tensor::f_cat(&flows, 0)?, a))
                }
            };
            let (mut fl, mut rd) = (Vec::new(), Vec::new());
            let mut next = 0;
            for (_, i) in &order {
                match (i, &moved) {
                    (Some(_), Some((f, a))) => {
                        fl.push(f.f_narrow(0, next, 1)?);
                        rd.push(a.f_narrow(0, next, 1)?);
                        next += 1;
                    }
                    _ => {
                        fl.push(zero.shallow_clone());
                        rd.push(before.shallow_clone());
                    }
                }
            }
            Ok((Tensor::f_cat(&fl, 0)?, Tensor::f_cat(&rd, 0)?))
        })?;

        // Where the flow does not explain the render: the residual after warping G_0.
        let widths = params.mask.widths(map);
        let feather = widths.feather;
        let region: Vec<f32> = (0..fh as usize)
            .flat_map(|v| {
                (0..fw as usize).map(move |u| {
                    paste::region(u as f64 + 0.5, v as f64 + 0.5, fw as usize, fh as usize, feather) as f32
                })
            })
            .collect();
        let region_sum: f64 = region.iter().map(|&r| r as f64).sum::<f64>().max(1e-9);
        let warped = tch::no_grad(|| flow::warp(&before.f_expand([order.len() as i64, 3, fh, fw], false)?, &flows))?;
        let after_u8 = frames_u8(&renders01)?;
        let warped_u8 = frames_u8(&warped)?;
        let mut blend = Vec::with_capacity(order.len() * region.len());
        let mut blended = Vec::with_capacity(order.len());
        for (a, b) in after_u8.iter().zip(&warped_u8) {
            let m = paste::change_mask(a, b, fw as usize, fh as usize, params.mask.threshold, &widths);
            blended.push(m.iter().zip(&region).map(|(&m, &r)| (m * r) as f64).sum::<f64>() / region_sum);
            blend.extend(m);
        }
        let blend = Tensor::from_slice(&blend).f_view([order.len() as i64, 1, fh, fw])?.f_to_device(device)?;

        // The layer's box, and the photo around it with room for the largest displacement.
        let [lx0, ly0, lx1, ly1] = map.photo_box(photo_width, photo_height)?;
        let largest = flows.f_abs()?.f_max()?.double_value(&[]);
        let margin = (largest * map.singular_values().0 * std::f64::consts::SQRT_2).ceil() as usize + 3;
        let (cx0, cy0) = (lx0.saturating_sub(margin), ly0.saturating_sub(margin));
        let (cx1, cy1) = ((lx1 + margin).min(photo_width), (ly1 + margin).min(photo_height));
        let (cw, ch) = (cx1 - cx0, cy1 - cy0);
        let mut crop = Vec::with_capacity(cw * ch * 3);
        for y in cy0..cy1 {
            crop.extend_from_slice(&photo[(y * photo_width + cx0) * 3..(y * photo_width + cx1) * 3]);
        }
        let crop = Tensor::from_slice(&crop).f_view([1, ch as i64, cw as i64, 3])?.f_permute([0, 3, 1, 2])?;
        let (lw, lh) = (lx1 - lx0, ly1 - ly0);
        let original = crop.f_narrow(2, (ly0 - cy0) as i64, lh as i64)?.f_narrow(3, (lx0 - cx0) as i64, lw as i64)?;
        let original = original.f_contiguous()?.f_to_device(device)?;
        let crop = crop.f_to_kind(Kind::Float)?.f_to_device(device)?;

        // Per layer pixel: the frame point it shows, its place in the crop, and the fade.
        let inv = map.to_frame_affine().ok_or_else(|| Error::arg("map", format!("{:?} is singular", map.affine)))?;
        let mut frame_grid = Vec::with_capacity(lw * lh * 2);
        let mut crop_grid = Vec::with_capacity(lw * lh * 2);
        let mut fade = Vec::with_capacity(lw * lh);
        for y in 0..lh {
            for x in 0..lw {
                let (px, py) = ((lx0 + x) as f64 + 0.5, (ly0 + y) as f64 + 0.5);
                let u = inv[0] * px + inv[1] * py + inv[2];
                let v = inv[3] * px + inv[4] * py + inv[5];
                frame_grid.extend([(2.0 * u / fw as f64 - 1.0) as f32, (2.0 * v / fh as f64 - 1.0) as f32]);
                crop_grid.extend([(px - cx0 as f64) as f32, (py - cy0 as f64) as f32]);
                fade.push(paste::region(u, v, fw as usize, fh as usize, feather) as f32);
            }
        }
        let grid = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_slice(&v).f_view([1, lh as i64, lw as i64, 2])?.f_to_device(device)?)
        };
        Ok(Transfer {
            strengths: order.iter().map(|(k, _)| *k).collect(),
            flows,
            blend,
            renders: renders01.f_mul_scalar(255.0)?,
            blended,
            map: *map,
            crop,
            layer_box: [lx0, ly0, lw, lh],
            frame_grid: grid(frame_grid)?,
            crop_grid: grid(crop_grid)?,
            fade: Tensor::from_slice(&fade).f_view([1, 1, lh as i64, lw as i64])?.f_to_device(device)?,
            original,
        })
    }

    /// The strengths a layer can be asked for lie between the first and the last (ascending;
    /// 0 is always among them).
    pub fn strengths(&self) -> &[f64] {
        &self.strengths
    }

    /// Of the region (the face square or the selection, feathered), the fraction where the
    /// render at strength `k` had to be blended in because the flow could not explain it.
    pub fn blended_fraction(&self, k: f64) -> Result<f64> {
        let (i, t) = self.bracket(k)?;
        Ok(self.blended[i] * (1.0 - t) + self.blended.get(i + 1).map_or(0.0, |b| b * t))
    }

    /// The photo-aligned layer at strength `k`: the photo's own pixels moved by the flow at `k`
    /// (and the render where the flow could not explain it), opaque where that changes the
    /// photo, transparent elsewhere, so the layer over the photo IS the edited photo; at k = 0
    /// it is fully transparent.
    pub fn layer(&self, k: f64) -> Result<Layer> {
        let (i, t) = self.bracket(k)?;
        let mix = |all: &Tensor| -> Result<Tensor> {
            let a = all.f_narrow(0, i as i64, 1)?;
            if t == 0.0 {
                return Ok(a);
            }
            Ok(a.f_lerp(&all.f_narrow(0, i as i64 + 1, 1)?, t)?)
        };
        let [lx0, ly0, lw, lh] = self.layer_box;
        let rgba = tch::no_grad(|| -> Result<Vec<u8>> {
            let d = mix(&self.flows)?.f_grid_sampler(&self.frame_grid, 0, 1, false)?.f_mul(&self.fade)?;
            let [a, b, _, c, e, _] = self.map.affine;
            let (dx, dy) = (d.f_select(1, 0)?, d.f_select(1, 1)?);
            let px = dx.f_mul_scalar(a)?.f_add(&dy.f_mul_scalar(b)?)?;
            let py = dx.f_mul_scalar(c)?.f_add(&dy.f_mul_scalar(e)?)?;
            let (_, _, ch, cw) = self.crop.size4()?;
            let src = Tensor::f_stack(&[px, py], 3)?.f_add(&self.crop_grid)?;
            let norm = Tensor::from_slice(&[2.0 / cw as f32, 2.0 / ch as f32]).f_to_device(self.crop.device())?;
            let src = src.f_mul(&norm)?.f_sub_scalar(1.0)?;
            let moved = self.crop.f_grid_sampler(&src, 2, 1, false)?;
            // The region at the layer pixel itself, so nothing outside the frame is touched.
            let alpha = mix(&self.blend)?.f_grid_sampler(&self.frame_grid, 0, 1, false)?.f_mul(&self.fade)?;
            let colour = mix(&self.renders)?.f_grid_sampler(&self.frame_grid, 0, 1, false)?;
            let out = moved
                .f_add(&colour.f_sub(&moved)?.f_mul(&alpha)?)?
                .f_round()?
                .f_clamp(0.0, 255.0)?
                .f_to_kind(Kind::Uint8)?;
            // Bit for bit where nothing moves and nothing is blended.
            let step = d.f_abs()?.f_amax([1], true)?.f_mul_scalar(self.map.singular_values().0)?;
            let still = step.f_lt(STILL)?.f_logical_and(&alpha.f_eq(0.0)?)?;
            let out = self.original.f_where_self(&still, &out)?;
            let changed = out.f_ne_tensor(&self.original)?.f_any_dim(1, true)?;
            let a8 = changed.f_to_kind(Kind::Uint8)?.f_mul_scalar(255)?.f_to_kind(Kind::Uint8)?;
            let hwc =
                Tensor::f_cat(&[out, a8], 1)?.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_to_device(Device::Cpu)?;
            let mut px = vec![0u8; lw * lh * 4];
            let n = px.len();
            hwc.f_copy_data_u8(&mut px, n)?;
            Ok(px)
        })?;
        Ok(Layer { x: lx0, y: ly0, width: lw, height: lh, rgba })
    }

    /// The two rendered strengths around `k` and how far along from the first: (index, t).
    fn bracket(&self, k: f64) -> Result<(usize, f64)> {
        let (lo, hi) = (self.strengths[0], self.strengths[self.strengths.len() - 1]);
        if !(k.is_finite() && k >= lo && k <= hi) {
            return Err(Error::arg(
                "strength",
                format!("{k} lies outside the rendered strengths {lo}..={hi}; render a wider range"),
            ));
        }
        let i = self.strengths.iter().rposition(|&s| s <= k).unwrap_or(0);
        if i + 1 == self.strengths.len() {
            return Ok((i, 0.0));
        }
        Ok((i, (k - self.strengths[i]) / (self.strengths[i + 1] - self.strengths[i])))
    }

    /// The layers' box in the photo: x, y, width, height.
    pub fn layer_box(&self) -> [usize; 4] {
        self.layer_box
    }
}

/// (S, 3, h, w) pictures in [0, 1] as packed RGB8 frames, one per picture.
fn frames_u8(t: &Tensor) -> Result<Vec<Vec<u8>>> {
    let (s, _, h, w) = t.size4()?;
    let u8s = t.f_mul_scalar(255.0)?.f_round()?.f_clamp(0.0, 255.0)?.f_to_kind(Kind::Uint8)?;
    let hwc = u8s.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_to_device(Device::Cpu)?;
    let mut flat = vec![0u8; (s * h * w * 3) as usize];
    let n = flat.len();
    hwc.f_copy_data_u8(&mut flat, n)?;
    Ok(flat.chunks((h * w * 3) as usize).map(<[u8]>::to_vec).collect())
}
