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
//!
//! Memory stays bounded whatever the photo's size: the transfer keeps the photo's 8-bit pixels
//! around the frame and nothing else photo-sized, and a layer is computed in square tiles
//! ([`TransferParams::tile_pixels`]), each from the pixels of the photo it reads. Coordinates
//! are chosen so that grid_sample's arithmetic is exact (see `source_grid`): a pixel's value
//! does not depend on the tile it falls in, and tiled and whole layers are the same bit for bit
//! (tested).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::face::flow::{self, FlowParams};
use crate::face::paste::{self, Layer, PasteParams};
use crate::face::FrameMap;
use crate::memory;
use crate::pixels::{ImageView, PixelFormat};

/// How flows are estimated, where the render is blended in instead, and how much of a layer is
/// computed at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferParams {
    pub flow: FlowParams,
    /// The blend mask, read as the `changes` paste reads its parameters, on the residual
    /// |G_k − G_0 warped by the flow| instead of |G_k − G_0|; `feather` also fades the
    /// displacement out towards the frame's edge, so the moved region has no seam.
    pub mask: PasteParams,
    /// Layer pixels computed at once, in a square tile (at least one): the default 2^18
    /// (512²) keeps a layer's work near 100 MB at any photo size.
    pub tile_pixels: usize,
}

impl Default for TransferParams {
    fn default() -> Self {
        // A residual under 8 levels is interpolation and flow error; 16 is new content.
        TransferParams {
            flow: FlowParams::default(),
            mask: PasteParams { threshold: 16.0, ..PasteParams::default() },
            tile_pixels: 1 << 18,
        }
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
    feather: f64,
    /// The photo's pixels around the layer (room for the largest displacement): packed rows of
    /// `channels` bytes a pixel, RGB, or RGBA when the photo has transparency there.
    crop: Vec<u8>,
    channels: usize,
    /// The crop's box in the photo: x, y, width, height.
    crop_box: [usize; 4],
    /// The layer's box in the photo: the frame's footprint clipped to the photo.
    layer_box: [usize; 4],
    tile_pixels: usize,
}

/// Below this many photo pixels a displacement leaves the pixel as it is (bit for bit).
const STILL: f64 = 1e-3;

/// What a layer at one strength is made of: the flow, blend mask and render there.
struct Mix {
    flows: Tensor,
    blend: Tensor,
    renders: Tensor,
}

impl Transfer {
    /// Estimates the flows from `before` (1, 3, h, w), the unedited render, to each of
    /// `afters` (S, 3, h, w), the renders at `strengths`, all in the generator's [-1, 1] and of
    /// the size `map` expects, and keeps what the layers need of `photo`.
    pub fn new(
        photo: &ImageView,
        map: &FrameMap,
        before: &Tensor,
        afters: &Tensor,
        strengths: &[f64],
        params: &TransferParams,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Transfer> {
        params.mask.validate()?;
        photo.validate().map_err(|e| match e {
            Error::InvalidArgument { reason, .. } => Error::arg("photo", reason),
            e => e,
        })?;
        if params.tile_pixels == 0 {
            return Err(Error::arg("tile_pixels", "0: a tile holds at least one pixel"));
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
        // As the renderer says it: strengths are 32-bit floats on their way to the layers.
        if let Some(k) = strengths.iter().find(|k| !(k.is_finite() && (**k as f32).is_finite())) {
            return Err(Error::arg("strengths", format!("{k:?} is not a finite number (32-bit, within ±3.4e38)")));
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
                    let idx = Tensor::f_from_slice(&moving)?.f_to_device(device)?;
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
        let blend = Tensor::f_from_slice(&blend)?.f_view([order.len() as i64, 1, fh, fw])?.f_to_device(device)?;

        // The layer's box, and the photo around it with room for the largest displacement.
        let (pw, ph) = (photo.width as usize, photo.height as usize);
        let [lx0, ly0, lx1, ly1] = map.photo_box(pw, ph)?;
        let largest = flows.f_abs()?.f_max()?.double_value(&[]);
        let margin = (largest * map.singular_values().0 * std::f64::consts::SQRT_2).ceil() as usize + 3;
        let (cx0, cy0) = (lx0.saturating_sub(margin), ly0.saturating_sub(margin));
        let (cx1, cy1) = ((lx1 + margin).min(pw), (ly1 + margin).min(ph));
        let (crop, channels) = crop_of(photo, [cx0, cy0, cx1, cy1])?;
        map.to_frame_affine().ok_or_else(|| Error::arg("map", format!("{:?} is singular", map.affine)))?;
        Ok(Transfer {
            strengths: order.iter().map(|(k, _)| *k).collect(),
            flows,
            blend,
            renders: renders01.f_mul_scalar(255.0)?,
            blended,
            map: *map,
            feather,
            crop,
            channels,
            crop_box: [cx0, cy0, cx1 - cx0, cy1 - cy0],
            layer_box: [lx0, ly0, lx1 - lx0, ly1 - ly0],
            tile_pixels: params.tile_pixels,
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
    /// photo (as opaque as the moved photo, where it has transparency), transparent elsewhere,
    /// so the layer over the photo IS the edited photo; at k = 0 it is fully transparent.
    pub fn layer(&self, k: f64) -> Result<Layer> {
        self.layer_cancellable(k, &|| false)
    }

    /// [`Transfer::layer`], asking `cancelled` between tiles.
    pub fn layer_cancellable(&self, k: f64, cancelled: &dyn Fn() -> bool) -> Result<Layer> {
        let (i, t) = self.bracket(k)?;
        let mix = |all: &Tensor| -> Result<Tensor> {
            let a = all.f_narrow(0, i as i64, 1)?;
            if t == 0.0 {
                return Ok(a);
            }
            Ok(a.f_lerp(&all.f_narrow(0, i as i64 + 1, 1)?, t)?)
        };
        let [lx0, ly0, lw, lh] = self.layer_box;
        if lw == 0 || lh == 0 {
            return Ok(Layer { x: lx0, y: ly0, width: lw, height: lh, rgba: Vec::new() });
        }
        let what = || format!("a {lw}×{lh} px layer");
        let mut rgba = memory::zeroed::<u8>(lw * lh * 4, what)?;
        // Square tiles: the photo a tile reads is the tile and the displacement's reach around
        // it, bounded whatever the photo's size.
        let side = (self.tile_pixels as f64).sqrt().max(1.0) as usize;
        tch::no_grad(|| -> Result<()> {
            let mix = Mix { flows: mix(&self.flows)?, blend: mix(&self.blend)?, renders: mix(&self.renders)? };
            for y in (0..lh).step_by(side) {
                for x in (0..lw).step_by(side) {
                    if cancelled() {
                        return Err(Error::Cancelled);
                    }
                    let (w, h) = (side.min(lw - x), side.min(lh - y));
                    let tile = self.tile(&mix, [lx0 + x, ly0 + y, w, h])?;
                    let mut rows = vec![0u8; w * h * 4];
                    tile.f_copy_data_u8(&mut rows, w * h * 4)?;
                    for (r, row) in rows.chunks_exact(w * 4).enumerate() {
                        let at = ((y + r) * lw + x) * 4;
                        rgba[at..at + w * 4].copy_from_slice(row);
                    }
                }
            }
            Ok(())
        })?;
        Ok(Layer { x: lx0, y: ly0, width: lw, height: lh, rgba })
    }

    /// The layer's pixels in the photo box `[x0, y0, w, h]`: (h, w, 4) uint8 RGBA on the CPU.
    fn tile(&self, mix: &Mix, [x0, y0, w, h]: [usize; 4]) -> Result<Tensor> {
        let device = mix.flows.device();
        let [cx0, cy0, cw, ch] = self.crop_box;
        let (fw, fh) = (self.map.frame_width, self.map.frame_height);
        let inv = self.map.to_frame_affine().ok_or_else(|| Error::arg("map", "singular"))?;
        // Per layer pixel: the frame point it shows (grid_sample's normalised coordinates) and
        // the displacement's fade.
        let what = || format!("a tile of {w}×{h} layer pixels");
        let mut frame_grid = memory::with_capacity::<f32>(w * h * 2, what)?;
        let mut fade = memory::with_capacity::<f32>(w * h, what)?;
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let u = inv[0] * px + inv[1] * py + inv[2];
                let v = inv[3] * px + inv[4] * py + inv[5];
                frame_grid.extend([(2.0 * u / fw as f64 - 1.0) as f32, (2.0 * v / fh as f64 - 1.0) as f32]);
                fade.push(paste::region(u, v, fw, fh, self.feather) as f32);
            }
        }
        let (w_, h_) = (w as i64, h as i64);
        let frame_grid = Tensor::f_from_slice(&frame_grid)?.f_view([1, h_, w_, 2])?.f_to_device(device)?;
        let fade = Tensor::f_from_slice(&fade)?.f_view([1, 1, h_, w_])?.f_to_device(device)?;
        let opts = (Kind::Float, device);
        // Each pixel's own place in the crop (pixel k's centre at k) plus its displacement, on a
        // grid of 1/256 px (see `source_grid`).
        let (tx, ty) = ((x0 - cx0) as i64, (y0 - cy0) as i64);
        let xs = Tensor::f_arange_start(tx, tx + w_, opts)?.f_view([1, 1, w_])?;
        let ys = Tensor::f_arange_start(ty, ty + h_, opts)?.f_view([1, h_, 1])?;
        let d = mix.flows.f_grid_sampler(&frame_grid, 0, 1, false)?.f_mul(&fade)?;
        let [a, b, _, c, e, _] = self.map.affine;
        let (dx, dy) = (d.f_select(1, 0)?, d.f_select(1, 1)?);
        let on_grid = |t: Tensor| -> Result<Tensor> { Ok(t.f_mul_scalar(256.0)?.f_round()?.f_div_scalar(256.0)?) };
        let sx = on_grid(dx.f_mul_scalar(a)?.f_add(&dy.f_mul_scalar(b)?)?.f_add(&xs)?)?;
        let sy = on_grid(dx.f_mul_scalar(c)?.f_add(&dy.f_mul_scalar(e)?)?.f_add(&ys)?)?;
        // The crop pixels the tile's bicubic taps reach, and the tile's own (unmoved pixels keep
        // them): [x, y, x, y] inclusive.
        let reach = |t: &Tensor, own: i64, n: i64, size: usize| -> Result<(i64, i64)> {
            let lo = (t.f_min()?.double_value(&[]).floor() as i64 - 1).clamp(0, size as i64 - 1);
            let hi = (t.f_max()?.double_value(&[]).floor() as i64 + 2).clamp(0, size as i64 - 1);
            Ok((lo.min(own), hi.max(own + n - 1)))
        };
        let ((left, right), (top, bottom)) = (reach(&sx, tx, w_, cw)?, reach(&sy, ty, h_, ch)?);
        let k = self.channels;
        let source = self.source([left, top, right, bottom])?.f_to_device(device)?;
        // (h, w, k) uint8: the photo's own pixels of the tile.
        let original = source.f_narrow(0, ty - top + PAD, h_)?.f_narrow(1, tx - left + PAD, w_)?;
        let (rows, width) = (source.size()[0], source.size()[1]);
        let planes = premultiplied(&source.f_permute([2, 0, 1])?.f_to_kind(Kind::Float)?, 0)?.f_unsqueeze(0)?;
        let gx = source_grid(&sx.f_sub_scalar((left - PAD) as f64)?, width)?;
        let gy = source_grid(&sy.f_sub_scalar((top - PAD) as f64)?, rows)?;
        let moved = unpremultiplied(&planes.f_grid_sampler(&Tensor::f_stack(&[gx, gy], 3)?, 2, 1, false)?, 1)?;
        let hwc = |t: Tensor| -> Result<Tensor> { Ok(t.f_squeeze_dim(0)?.f_permute([1, 2, 0])?) };
        let moved = hwc(moved)?;
        // The region at the layer pixel itself, so nothing outside the frame is touched.
        let alpha = hwc(mix.blend.f_grid_sampler(&frame_grid, 0, 1, false)?.f_mul(&fade)?)?;
        let blended = match alpha.f_max()?.double_value(&[]) > 0.0 {
            // Most tiles have no new content: the moved photo alone.
            false => moved,
            true => {
                let mut colour = hwc(mix.renders.f_grid_sampler(&frame_grid, 0, 1, false)?)?;
                if k == 4 {
                    // The render is opaque where it is blended in.
                    colour = Tensor::f_cat(&[colour, Tensor::f_full([h_, w_, 1], 255.0, opts)?], 2)?;
                }
                moved.f_add(&colour.f_sub(&moved)?.f_mul(&alpha)?)?
            }
        };
        let out = blended.f_round()?.f_clamp(0.0, 255.0)?.f_to_kind(Kind::Uint8)?;
        // Bit for bit where nothing moves and nothing is blended.
        let step = hwc(d.f_abs()?.f_amax([1], true)?.f_mul_scalar(self.map.singular_values().0)?)?;
        let still = step.f_lt(STILL)?.f_logical_and(&alpha.f_eq(0.0)?)?;
        let out = original.f_where_self(&still, &out)?;
        let changed = out.f_ne_tensor(&original)?.f_any_dim(2, true)?.f_to_kind(Kind::Uint8)?;
        let seen = match k {
            4 => out.f_narrow(2, 3, 1)?,
            _ => Tensor::f_full([h_, w_, 1], 255, (Kind::Uint8, device))?,
        };
        let rgba = Tensor::f_cat(&[out.f_narrow(2, 0, 3)?, seen.f_mul(&changed)?], 2)?;
        Ok(rgba.f_contiguous()?.f_to_device(Device::Cpu)?)
    }

    /// The crop's pixels `[left, top, right, bottom]` (inclusive) with [`PAD`] more on every
    /// side, then repeated rows and columns up to powers of two (see `source_grid`), the crop's
    /// edge pixels standing in for everything beyond it: (rows, width, channels) uint8.
    fn source(&self, [left, top, right, bottom]: [i64; 4]) -> Result<Tensor> {
        let [_, _, cw, ch] = self.crop_box;
        let k = self.channels;
        let width = ((right - left + 1 + 2 * PAD) as usize).next_power_of_two();
        let rows = ((bottom - top + 1 + 2 * PAD) as usize).next_power_of_two();
        let mut bytes = memory::with_capacity::<u8>(rows * width * k, || format!("{width}×{rows} px of the photo"))?;
        // The columns [first, end): those left of the crop repeat its first column, those right
        // of it its last, the rest are the crop's own.
        let (first, end, cw_) = (left - PAD, left - PAD + width as i64, cw as i64);
        let before = (end.min(0) - first).max(0);
        let after = (end - first.max(cw_)).max(0);
        let (inside_from, inside_to) = (first.clamp(0, cw_) as usize, end.clamp(0, cw_) as usize);
        for r in top - PAD..top - PAD + rows as i64 {
            let row = &self.crop[r.clamp(0, ch as i64 - 1) as usize * cw * k..][..cw * k];
            for _ in 0..before {
                bytes.extend_from_slice(&row[..k]);
            }
            bytes.extend_from_slice(&row[inside_from * k..inside_to * k]);
            for _ in 0..after {
                bytes.extend_from_slice(&row[(cw - 1) * k..]);
            }
        }
        Ok(Tensor::f_from_slice(&bytes)?.f_view([rows as i64, width as i64, k as i64])?)
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

/// The photo's pixels in `[x0, y0, x1, y1)`: packed RGB, or RGBA where any is transparent
/// (straight alpha), and the channel count.
fn crop_of(photo: &ImageView, [x0, y0, x1, y1]: [usize; 4]) -> Result<(Vec<u8>, usize)> {
    let n = photo.format.channels();
    let rows = || (y0..y1).map(|y| &photo.row(y)[x0 * n..x1 * n]);
    let opaque = n == 3 || rows().all(|r| r.chunks_exact(4).all(|p| p[3] == 255));
    let k = if opaque { 3 } else { 4 };
    let what = || format!("the {}×{} px of the photo a transfer keeps", x1 - x0, y1 - y0);
    let mut crop = memory::with_capacity::<u8>((x1 - x0) * (y1 - y0) * k, what)?;
    for row in rows() {
        for p in row.chunks_exact(n) {
            let rgb = match photo.format {
                PixelFormat::Bgra8 => [p[2], p[1], p[0]],
                _ => [p[0], p[1], p[2]],
            };
            crop.extend_from_slice(&rgb);
            if k == 4 {
                crop.push(p[3]);
            }
        }
    }
    Ok((crop, k))
}

/// The columns and rows of the photo repeated around a tile: bicubic taps reach 2 px out.
const PAD: i64 = 3;

/// grid_sample's normalised coordinates (align_corners false) of the points `at` (pixel k's
/// centre at k) in a picture `size` pixels long, which must be a power of two. Such a size
/// and points on a 1/256 px grid make grid_sample's own arithmetic exact: it finds `at` again,
/// bit for bit. A point then samples the same pixels with the same weights whichever tile it
/// is computed in (its coordinates differ between tiles by whole pixels only), so tiled
/// layers equal whole ones.
fn source_grid(at: &Tensor, size: i64) -> Result<Tensor> {
    Ok(at.f_mul_scalar(2.0)?.f_add_scalar(1.0)?.f_div_scalar(size as f64)?.f_sub_scalar(1.0)?)
}

/// Levels with straight alpha as the 4th entry of dimension `dim` (if it has 4) → colours
/// premultiplied by it, so resampling does not bleed the colour of transparent pixels.
fn premultiplied(t: &Tensor, dim: i64) -> Result<Tensor> {
    if t.size()[dim as usize] != 4 {
        return Ok(t.shallow_clone());
    }
    let a = t.f_narrow(dim, 3, 1)?;
    Ok(Tensor::f_cat(&[t.f_narrow(dim, 0, 3)?.f_mul(&a.f_div_scalar(255.0)?)?, a], dim)?)
}

/// The inverse of [`premultiplied`]; colours under no alpha stay 0.
fn unpremultiplied(t: &Tensor, dim: i64) -> Result<Tensor> {
    if t.size()[dim as usize] != 4 {
        return Ok(t.shallow_clone());
    }
    let a = t.f_narrow(dim, 3, 1)?.f_clamp(0.0, 255.0)?;
    let scale = a.f_div_scalar(255.0)?.f_clamp_min(1e-6)?;
    let rgb = t.f_narrow(dim, 0, 3)?.f_div(&scale)?.f_mul(&a.f_gt(0.0)?)?;
    Ok(Tensor::f_cat(&[rgb, a], dim)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The pixels a tile reads: the crop's own, and beyond it on every side its edge pixels
    /// (grid_sample's border padding), padded to powers of two.
    #[test]
    fn a_tiles_source_repeats_the_crops_edges() {
        let (w, h) = (20usize, 16usize);
        let photo: Vec<u8> = (0..w * h).flat_map(|i| [(i % 256) as u8, (i / 256) as u8, 7]).collect();
        let view = ImageView::packed(&photo, w as u32, h as u32, PixelFormat::Rgb8).unwrap();
        let map = FrameMap::from_box([0.0, 0.0, w as f32, h as f32], 8, 8).unwrap();
        let still = Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let t = Transfer::new(&view, &map, &still, &still, &[1.0], &TransferParams::default(), &|| false).unwrap();
        assert_eq!(t.crop_box, [0, 0, w, h]);
        // Columns -2..=22 and rows -1..=17 of the crop: beyond it on all four sides.
        let src = t.source([-2, -1, 22, 17]).unwrap();
        let (rows, width) = (src.size()[0], src.size()[1]);
        assert!(rows.count_ones() == 1 && width.count_ones() == 1 && rows >= 19 + 6 && width >= 25 + 6);
        let at =
            |c: i64, r: i64| -> Vec<u8> { Vec::<u8>::try_from(src.get(r - (-1 - PAD)).get(c - (-2 - PAD))).unwrap() };
        let pixel = |x: usize, y: usize| photo[(y * w + x) * 3..][..3].to_vec();
        for (c, r, x, y) in [
            (-5, -4, 0, 0),
            (0, 0, 0, 0),
            (7, 5, 7, 5),
            (19, 15, 19, 15),
            (25, 20, 19, 15),
            (-3, 9, 0, 9),
            (23, 9, 19, 9),
            (4, -3, 4, 0),
            (4, 19, 4, 15),
        ] {
            assert_eq!(at(c, r), pixel(x, y), "column {c}, row {r}");
        }
    }
}
