//! The edit: latents, shifts, rendering at strengths, encoding pictures, optimising, CLIP scores.

#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, CString};

use super::*;
use crate::context::EditRequest;

// ───────────────────────────── latents ─────────────────────────────

/// The W+ code of the generator's sample for `seed`; `truncation` in [0, 1] (1 = none, 0.7 is
/// typical). On success `*out` owns a new latent, freed with `cs_latent_free`. Statuses: OK;
/// INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn cs_latent_from_seed(
    ctx: *const cs_ctx,
    seed: u64,
    truncation: f32,
    out: *mut *mut cs_latent,
) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            let t = truncation as f64;
            let mean = if t < 1.0 { Some(ctx.mean_latent()?) } else { None };
            Ok(cs_latent { inner: Latent::from_seed(&ctx.generator, seed as i64, t, mean)? })
        })
    })
}

/// Imports a W+ of `n` = n_latent × style_dim floats, row-major (copied). On success `*out` owns a
/// new latent, freed with `cs_latent_free`. Statuses: OK; INVALID_ARGUMENT (NULL, wrong `n`,
/// NaN or infinity).
#[no_mangle]
pub unsafe extern "C" fn cs_latent_from_floats(
    ctx: *const cs_ctx,
    data: *const f32,
    n: usize,
    out: *mut *mut cs_latent,
) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            Ok(cs_latent { inner: Latent::from_slice(&ctx.generator, slice_arg(data, n, "data")?)? })
        })
    })
}

/// Number of floats in the latent (0 for NULL). Never fails.
#[no_mangle]
pub unsafe extern "C" fn cs_latent_len(latent: *const cs_latent) -> usize {
    latent.as_ref().map(|l| l.inner.wplus.numel()).unwrap_or(0)
}

/// Copies the latent into the caller's `out`, which holds exactly `n` = `cs_latent_len` floats.
/// Statuses: OK; INVALID_ARGUMENT (NULL, wrong `n`).
#[no_mangle]
pub unsafe extern "C" fn cs_latent_to_floats(latent: *const cs_latent, out: *mut f32, n: usize) -> cs_status {
    guard(|| copy_out(ref_arg(latent, "latent")?.inner.to_vec()?, out, n))
}

/// Reads a latent file (safetensors `wplus`) for this context's generator. On success `*out`
/// owns a new latent, freed with `cs_latent_free`. Statuses: OK; INVALID_ARGUMENT; IO;
/// MODEL_FORMAT; MODEL_MISMATCH (a W+ of another shape).
#[no_mangle]
pub unsafe extern "C" fn cs_latent_load(
    ctx: *const cs_ctx,
    path: *const c_char,
    out: *mut *mut cs_latent,
) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            Ok(cs_latent { inner: Latent::load(&ctx.generator, std::path::Path::new(str_arg(path, "path")?))? })
        })
    })
}

/// Writes the latent as safetensors (`wplus`), atomically (a temporary file renamed into place).
/// Statuses: OK; INVALID_ARGUMENT; IO.
#[no_mangle]
pub unsafe extern "C" fn cs_latent_save(latent: *const cs_latent, path: *const c_char) -> cs_status {
    guard(|| ref_arg(latent, "latent")?.inner.save(std::path::Path::new(str_arg(path, "path")?)))
}

/// Releases a latent; NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn cs_latent_free(latent: *mut cs_latent) {
    free_handle(latent)
}

// ───────────────────────────── shifts ─────────────────────────────

/// Imports a shift for `layer` (e.g. "convs.3"; "convs.3,convs.5" for one of several layers,
/// their floats one after the other in that order; "wplus" for a W+ direction) from exactly as
/// many floats as those targets hold (a layer's raw weight, or n_latent × style_dim), copied.
/// On success `*out` owns a new shift, freed with `cs_shift_free`. Statuses: OK;
/// INVALID_ARGUMENT (NULL, unknown layer, wrong `n`, NaN).
#[no_mangle]
pub unsafe extern "C" fn cs_shift_from_floats(
    ctx: *const cs_ctx,
    layer: *const c_char,
    data: *const f32,
    n: usize,
    out: *mut *mut cs_shift,
) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            shift_handle(Shift::from_slice(&ctx.generator, str_arg(layer, "layer")?, slice_arg(data, n, "data")?)?)
        })
    })
}

/// A shift with the C strings its accessors hand out.
fn shift_handle(shift: Shift) -> Result<cs_shift> {
    let c = |v: &str| CString::new(v.replace('\0', " ")).map_err(|e| Error::Internal(e.to_string()));
    let layer_name = c(&shift.layer_names())?;
    let meta = shift.meta.iter().map(|(k, v)| Ok((k.clone(), c(v)?))).collect::<Result<_>>()?;
    Ok(cs_shift { inner: shift, layer_name, meta })
}

/// A metadata value of the shift (`prompt`, `layer`, `clip_sim_before`, `clip_sim_after`,
/// `lambda2`, …), or NULL when absent (or on a NULL argument). Owned by the shift: valid until
/// `cs_shift_free`.
#[no_mangle]
pub unsafe extern "C" fn cs_shift_get_meta(shift: *const cs_shift, key: *const c_char) -> *const c_char {
    let found = catch_unwind(AssertUnwindSafe(|| -> Option<*const c_char> {
        let s = shift.as_ref()?;
        let key = str_arg(key, "key").ok()?;
        s.meta.get(key).map(|v| v.as_ptr())
    }));
    found.ok().flatten().unwrap_or(std::ptr::null())
}

/// Number of floats in the shift, over all its layers (0 for NULL). Never fails.
#[no_mangle]
pub unsafe extern "C" fn cs_shift_len(shift: *const cs_shift) -> usize {
    shift.as_ref().map(|s| s.inner.numel()).unwrap_or(0)
}

/// The layer name ("convs.3", "wplus"; "convs.3,convs.5" for a shift of several layers, the
/// order `cs_shift_to_floats` writes them in), owned by the shift: valid until `cs_shift_free`;
/// NULL for a NULL shift.
#[no_mangle]
pub unsafe extern "C" fn cs_shift_layer(shift: *const cs_shift) -> *const c_char {
    shift.as_ref().map(|s| s.layer_name.as_ptr()).unwrap_or(std::ptr::null())
}

/// Copies the shift into the caller's `out`, which holds exactly `n` = `cs_shift_len` floats.
/// Statuses: OK; INVALID_ARGUMENT (NULL, wrong `n`).
#[no_mangle]
pub unsafe extern "C" fn cs_shift_to_floats(shift: *const cs_shift, out: *mut f32, n: usize) -> cs_status {
    guard(|| copy_out(ref_arg(shift, "shift")?.inner.to_vec()?, out, n))
}

/// Loads a shift file, refusing one that does not fit this context's generator. On success `*out`
/// owns a new shift, freed with `cs_shift_free`. Statuses: OK; INVALID_ARGUMENT; IO;
/// MODEL_FORMAT (not a shift file); MODEL_MISMATCH (learnt on another generator or layer shape).
#[no_mangle]
pub unsafe extern "C" fn cs_shift_load(ctx: *const cs_ctx, path: *const c_char, out: *mut *mut cs_shift) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            shift_handle(Shift::load(&ctx.generator, std::path::Path::new(str_arg(path, "path")?))?)
        })
    })
}

/// Writes the shift as safetensors (`shift` + metadata), atomically. Statuses: OK;
/// INVALID_ARGUMENT; IO.
#[no_mangle]
pub unsafe extern "C" fn cs_shift_save(shift: *const cs_shift, path: *const c_char) -> cs_status {
    guard(|| ref_arg(shift, "shift")?.inner.save(std::path::Path::new(str_arg(path, "path")?)))
}

/// Releases a shift; NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn cs_shift_free(shift: *mut cs_shift) {
    free_handle(shift)
}

fn copy_out(values: Vec<f32>, out: *mut f32, n: usize) -> Result<()> {
    if out.is_null() {
        return Err(Error::arg("out", "is NULL"));
    }
    if n != values.len() {
        return Err(Error::arg("n", format!("is {n}, the object holds {} floats", values.len())));
    }
    // SAFETY: the caller guarantees `out` points to `n` writable floats.
    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out, n) };
    Ok(())
}

// ───────────────────────────── render ─────────────────────────────

/// Fills `*params` with the defaults (no shift, strength 0, generator frame size, RGBA8). The
/// struct is the caller's. Statuses: OK; INVALID_ARGUMENT (NULL).
#[no_mangle]
pub unsafe extern "C" fn cs_render_params_init(params: *mut cs_render_params) -> cs_status {
    guard(|| {
        *out_arg(params, "params")? = cs_render_params {
            struct_size: std::mem::size_of::<cs_render_params>() as u32,
            shifts: std::ptr::null(),
            n_shifts: 0,
            strengths: std::ptr::null(),
            n_strengths: 0,
            format: cs_pixel_format::Rgba8 as i32,
            max_batch: 0,
            target_width: 0,
            target_height: 0,
        };
        Ok(())
    })
}

/// Renders `latent` once per strength, cropped to the domain's frame and optionally resized to a
/// target box. The arrays in `params` are read during the call only. On success `*out` owns the
/// images, freed with `cs_images_free`. Statuses: OK; INVALID_ARGUMENT; MODEL_MISMATCH (a shift
/// of another generator); OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn cs_render(
    ctx: *const cs_ctx,
    latent: *const cs_latent,
    params: *const cs_render_params,
    out: *mut *mut cs_images,
) -> cs_status {
    guard(|| {
        hand_out(out, || render_images(ref_arg(ctx, "ctx")?, ref_arg(latent, "latent")?, ref_arg(params, "params")?))
    })
}

/// What render params ask for, checked.
pub(super) struct RenderRequest<'a> {
    pub(super) shifts: Vec<(&'a Shift, f64)>,
    pub(super) strengths: Vec<f64>,
    pub(super) max_batch: usize,
}

pub(super) unsafe fn render_request(p: &cs_render_params) -> Result<RenderRequest<'_>> {
    check_struct_size(p.struct_size, std::mem::size_of::<cs_render_params>(), "params")?;
    let refs = slice_arg(p.shifts, p.n_shifts, "shifts")?;
    let mut shifts = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let s = r.shift.as_ref().ok_or_else(|| Error::arg("shifts", format!("entry {i} is NULL")))?;
        shifts.push((&s.inner, r.strength as f64));
    }
    let strengths: Vec<f64> = slice_arg(p.strengths, p.n_strengths, "strengths")?.iter().map(|&k| k as f64).collect();
    let max_batch = if p.max_batch == 0 { edit::render::DEFAULT_MAX_BATCH } else { p.max_batch as usize };
    Ok(RenderRequest { shifts, strengths, max_batch })
}

pub(super) unsafe fn render_images(ctx: &cs_ctx, latent: &cs_latent, p: &cs_render_params) -> Result<cs_images> {
    let (ctx, latent) = (&ctx.inner, &latent.inner);
    let RenderRequest { shifts, strengths, max_batch } = render_request(p)?;
    let format = pixel_format(p.format)?;
    let target = match (p.target_width, p.target_height) {
        (0, 0) => None,
        (w, h) => Some((w, h)),
    };
    let images = ctx.render(latent, &shifts, &strengths, max_batch)?;
    images_handle(&ctx.to_frame(&images, target)?, format)
}

/// The renders of `p` at the domain frame, and the unedited render beside them when `unedited`.
pub(super) unsafe fn render_frames(
    ctx: &Context,
    latent: &Latent,
    p: &cs_render_params,
    unedited: bool,
) -> Result<(tch::Tensor, Option<tch::Tensor>)> {
    let RenderRequest { shifts, strengths, max_batch } = render_request(p)?;
    let images = ctx.render(latent, &shifts, &strengths, max_batch)?;
    let render_0 = match unedited {
        true => Some(ctx.to_frame(&ctx.render(latent, &[], &[0.0], 1)?, None)?),
        false => None,
    };
    Ok((ctx.to_frame(&images, None)?, render_0))
}

pub(super) fn images_handle(images: &tch::Tensor, format: PixelFormat) -> Result<cs_images> {
    let (_, _, h, w) = images.size4()?;
    let pixels = edit::to_rgba8(images, format)?;
    Ok(cs_images { pixels, width: w as u32, height: h as u32, format, origin: (0, 0) })
}

/// Number of images (0 for NULL). Never fails.
#[no_mangle]
pub unsafe extern "C" fn cs_images_count(images: *const cs_images) -> usize {
    images.as_ref().map(|i| i.pixels.len()).unwrap_or(0)
}

/// Describes image `index` in the caller's `*out`; its pixels are owned by `images` and stay
/// valid until `cs_images_free`. Statuses: OK; INVALID_ARGUMENT (NULL, index out of range).
#[no_mangle]
pub unsafe extern "C" fn cs_images_get(images: *const cs_images, index: usize, out: *mut cs_image) -> cs_status {
    guard(|| {
        let imgs = ref_arg(images, "images")?;
        let out = out_arg(out, "out")?;
        let px = imgs
            .pixels
            .get(index)
            .ok_or_else(|| Error::arg("index", format!("{index} is out of range (0..{})", imgs.pixels.len())))?;
        *out = cs_image {
            data: px.as_ptr(),
            width: imgs.width,
            height: imgs.height,
            stride: imgs.width * imgs.format.channels() as u32,
            format: format_code(imgs.format),
        };
        Ok(())
    })
}

/// Releases images and their pixels; NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn cs_images_free(images: *mut cs_images) {
    free_handle(images)
}

// ───────────────────────────── pictures in ─────────────────────────────

/// A host's pixels as a checked view; the byte count is derived from the geometry, so a view
/// whose stride or size is inconsistent is refused before any byte is read.
pub(super) unsafe fn image_arg<'a>(img: *const cs_image, name: &'static str) -> Result<ImageView<'a>> {
    let img = ref_arg(img, name)?;
    let format = pixel_format(img.format)?;
    let bpp = format.channels() as u64;
    if (img.stride as u64) < img.width as u64 * bpp {
        return Err(Error::arg(
            "stride",
            format!("{} bytes is less than width {} × {bpp} bytes per pixel", img.stride, img.width),
        ));
    }
    if img.width == 0 || img.height == 0 {
        return Err(Error::arg("width, height", format!("{}×{} has no pixels", img.width, img.height)));
    }
    if img.width > encode::MAX_SIDE || img.height > encode::MAX_SIDE {
        return Err(Error::arg(
            "width, height",
            format!("{}×{} exceeds {} px per side", img.width, img.height, encode::MAX_SIDE),
        ));
    }
    let len = img.stride as u64 * (img.height as u64 - 1) + img.width as u64 * bpp;
    if img.data.is_null() {
        return Err(Error::arg("data", "is NULL"));
    }
    let data = std::slice::from_raw_parts(img.data, len as usize);
    ImageView::new(data, img.width, img.height, img.stride, format)
}

// ───────────────────────────── encode ─────────────────────────────

/// Inverts a picture (the whole view: canvas or selection box; read during the call only) into a
/// W+ latent with e4e. On success `*out` owns a new latent (`cs_latent_free`); when `recon_out` is
/// not NULL it receives owned images (`cs_images_free`) holding "what the model sees": the latent
/// rendered back at the picture's size and pixel format. Statuses: OK; INVALID_ARGUMENT (NULL, bad
/// view geometry or format); MODEL_FORMAT (no encoder in this context); OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn cs_encode(
    ctx: *const cs_ctx,
    image: *const cs_image,
    out: *mut *mut cs_latent,
    recon_out: *mut *mut cs_images,
) -> cs_status {
    guard(|| {
        if let Some(r) = recon_out.as_mut() {
            *r = std::ptr::null_mut();
        }
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            let view = image_arg(image, "image")?;
            let latent = ctx.encode(&view)?;
            if !recon_out.is_null() {
                let images = ctx.render(&latent, &[], &[0.0], 1)?;
                let recon = images_handle(&ctx.to_frame(&images, Some((view.width, view.height)))?, view.format)?;
                *recon_out = Box::into_raw(Box::new(recon));
            }
            Ok(cs_latent { inner: latent })
        })
    })
}

// ───────────────────────────── optimise ─────────────────────────────

/// Called every `progress_every` steps; a nonzero return cancels (the call then returns
/// `CS_STATUS_CANCELLED` and no shift).
pub type cs_progress_fn =
    Option<unsafe extern "C" fn(user: *mut std::ffi::c_void, step: i32, total: i32, loss: f32, clip_sim: f32) -> i32>;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cs_method {
    /// Learn a shift of one generator conv's raw weight (the paper).
    Shift = 0,
    /// StyleCLIP latent optimisation (the baseline): the result is a W+ direction.
    Latent = 1,
}

#[repr(C)]
pub struct cs_optimize_params {
    pub struct_size: u32,
    /// What the edit should look like, e.g. "face with big nose". Required.
    pub prompt: *const c_char,
    /// Optional neutral text ("face"): the CLIP term becomes directional. NULL = none.
    pub neutral: *const c_char,
    /// Layer whose raw weight is shifted ("convs.3"), or several learnt jointly into one shift
    /// ("convs.3,convs.5"); NULL = the domain's default; "auto" = the best of a short probe of
    /// every convs.N at 8–64 px (ranking in the shift's `layer_probe`; see `auto_layers`).
    pub layer: *const c_char,
    /// A `cs_method`.
    pub method: i32,
    /// Weight of the CLIP term (default 10).
    pub lambda1: f32,
    /// Weight of ‖x‖₂; negative = the domain's default (0.01–0.1 by edit kind).
    pub lambda2: f32,
    /// Weight of ‖w − w0‖² for the latent method (default 0.008).
    pub latent_l2: f32,
    /// Adam steps (default 100).
    pub steps: i32,
    /// Adam learning rate (default 0.01).
    pub lr: f32,
    /// k in θ + k·x while optimising (default 1): the learnt shift is the edit at strength k.
    pub strength: f32,
    /// Seed of the random initial shift (see `init_scale`).
    pub seed: u64,
    /// Nonzero: cut prompts over 77 tokens instead of refusing them.
    pub truncate_prompt: i32,
    /// Progress every this many steps (each call syncs with the device); 0 = 1.
    pub progress_every: i32,
    pub progress: cs_progress_fn,
    pub progress_user: *mut std::ffi::c_void,
    /// Std of a random initial shift relative to the layer weight's (0 = start unedited);
    /// `seed` picks the draw.
    pub init_scale: f32,
    /// Optimise on the generator's output stopped at this side (a power of two; 0 = the full
    /// size): much faster on a CPU, a different (approximate) objective. Renders stay full size.
    pub optimize_size: u32,
    /// Nonzero: the generator's wide layers run in bfloat16 inside the loop (CPUs with
    /// avx512_bf16 / AMX). 0 = fp32, the parity path.
    pub bf16: i32,
    /// Weight λ3 of the preservation term: the mean squared change of the image outside
    /// `region` is added to the loss (0 = the paper's loss).
    pub lambda3: f32,
    /// The region the edit may change, {x1, y1, x2, y2} in pixels of the generator's output;
    /// all zeros = none (with λ3 > 0 every change then counts).
    pub region: [f32; 4],
    /// Weight λ4 of the separation term for several prompts on one latent (`cs_optimize_batch`):
    /// the squared cosine between each pair of prompts' image changes joins the loss, so each
    /// shift can be applied alone or with the others (0 = the prompts are learnt independently;
    /// negative = the library's default, 0.3).
    pub lambda4: f32,
    /// With layer "auto": how many of the best-ranked layers the shift moves (0 = 1).
    pub auto_layers: i32,
    /// Nonzero: the picture will be moved by a warp transfer (`CS_PASTE_MODE_WARP`, a photo's
    /// default), which needs no more than the flow's side: the loop stops there unless
    /// `optimize_size` says otherwise.
    pub for_warp: i32,
    /// With `preview`: the picture as it is now at step 1 and every this many steps (0 = never).
    pub preview_every: i32,
    /// `preview(progress_user, step, picture)`: the frame of the generator's output at the
    /// loop's side (`CS_PIXEL_FORMAT_RGBA8`, opaque), valid during the call only; a nonzero
    /// return stops the optimisation (CANCELLED), as the progress callback's.
    pub preview: cs_preview_fn,
}

/// A host's "picture while it learns" (see `cs_optimize_params.preview`).
pub type cs_preview_fn =
    Option<unsafe extern "C" fn(user: *mut std::ffi::c_void, step: i32, picture: *const cs_image) -> i32>;

/// Fills `*params` with the defaults (100 steps, lr 0.01, λ1 10, the domain's λ2 and layer,
/// strength 1). The struct is the caller's. Statuses: OK; INVALID_ARGUMENT (NULL).
#[no_mangle]
pub unsafe extern "C" fn cs_optimize_params_init(params: *mut cs_optimize_params) -> cs_status {
    guard(|| {
        *out_arg(params, "params")? = cs_optimize_params {
            struct_size: std::mem::size_of::<cs_optimize_params>() as u32,
            prompt: std::ptr::null(),
            neutral: std::ptr::null(),
            layer: std::ptr::null(),
            method: cs_method::Shift as i32,
            lambda1: optimize::DEFAULT_LAMBDA1 as f32,
            lambda2: -1.0,
            latent_l2: optimize::DEFAULT_LATENT_L2 as f32,
            steps: optimize::DEFAULT_STEPS as i32,
            lr: optimize::DEFAULT_LR as f32,
            strength: 1.0,
            seed: 0,
            truncate_prompt: 0,
            progress_every: 1,
            progress: None,
            progress_user: std::ptr::null_mut(),
            init_scale: 0.0,
            optimize_size: 0,
            bf16: 0,
            lambda3: 0.0,
            region: [0.0; 4],
            lambda4: 0.0,
            auto_layers: 0,
            for_warp: 0,
            preview_every: 0,
            preview: None,
        };
        Ok(())
    })
}

unsafe fn optimize_params(ctx: &Context, p: &cs_optimize_params, prompts: Vec<String>) -> Result<OptimizeParams> {
    // Callers built against 0.2 pass the struct without `optimize_size` and what follows it;
    // later ones end at `region`, at `auto_layers`, or hold every field.
    check_struct_size(p.struct_size, std::mem::offset_of!(cs_optimize_params, optimize_size), "params")?;
    let has = |next_field: usize| p.struct_size as usize >= next_field;
    let (optimize_size, bf16, lambda3, region) = if has(std::mem::offset_of!(cs_optimize_params, lambda4)) {
        (p.optimize_size, p.bf16, p.lambda3, p.region)
    } else {
        (0, 0, 0.0, [0.0; 4])
    };
    let (lambda4, auto_layers) =
        if has(std::mem::offset_of!(cs_optimize_params, for_warp)) { (p.lambda4, p.auto_layers) } else { (0.0, 0) };
    let for_warp = has(std::mem::offset_of!(cs_optimize_params, preview_every)) && p.for_warp != 0;
    let preview_every = match has(std::mem::size_of::<cs_optimize_params>()) && p.preview.is_some() {
        true if p.preview_every < 0 => {
            return Err(Error::arg("preview_every", format!("{}: give 0 or more", p.preview_every)))
        }
        true => p.preview_every as usize,
        false => 0,
    };
    let method = match p.method {
        m if m == cs_method::Shift as i32 => Method::Shift,
        m if m == cs_method::Latent as i32 => Method::Latent,
        m => return Err(Error::arg("method", format!("{m} is not a cs_method"))),
    };
    if p.steps < 1 {
        return Err(Error::arg("steps", format!("{} must be at least 1", p.steps)));
    }
    if auto_layers < 0 {
        return Err(Error::arg("auto_layers", format!("{auto_layers}: give 0 or more")));
    }
    let request = EditRequest {
        prompts,
        neutral: if p.neutral.is_null() { None } else { Some(str_arg(p.neutral, "neutral")?.to_string()) },
        layer: if p.layer.is_null() { None } else { Some(str_arg(p.layer, "layer")?.to_string()) },
        auto_layers: auto_layers as usize,
        method,
        lambda1: p.lambda1 as f64,
        // Negative: the model set's.
        lambda2: (!(p.lambda2.is_sign_negative() && p.lambda2.is_finite())).then_some(p.lambda2 as f64),
        latent_l2: p.latent_l2 as f64,
        steps: p.steps as usize,
        lr: p.lr as f64,
        strength: p.strength as f64,
        seed: p.seed as i64,
        init_scale: p.init_scale as f64,
        truncate: p.truncate_prompt != 0,
        progress_every: p.progress_every.max(1) as usize,
        optimize_size: (optimize_size > 0).then_some(optimize_size as i64),
        warp: for_warp,
        full_size: false,
        bf16: bf16 != 0,
        lambda3: lambda3 as f64,
        region: (region != [0.0; 4]).then_some(region),
        lambda4: if lambda4 < 0.0 { optimize::DEFAULT_LAMBDA4 } else { lambda4 as f64 },
        preview_every,
    };
    ctx.optimize_params(&request, None)
}

unsafe fn run_optimize(
    ctx: &Context,
    latents: &[&Latent],
    params: &OptimizeParams,
    p: &cs_optimize_params,
) -> Result<Vec<Shift>> {
    let (callback, user) = (p.progress, p.progress_user);
    let preview = if params.preview_every > 0 { p.preview } else { None };
    let mut failed = None;
    let mut progress = |pr: &optimize::Progress| -> bool {
        if let (Some(f), Some(picture)) = (preview, &pr.picture) {
            match preview_image(ctx, picture) {
                // SAFETY: the host promised a valid function pointer for the call's duration;
                // the image's bytes outlive the call.
                Ok((pixels, w, h)) => {
                    let image = cs_image {
                        data: pixels.as_ptr(),
                        width: w,
                        height: h,
                        stride: w * 4,
                        format: cs_pixel_format::Rgba8 as i32,
                    };
                    if unsafe { f(user, pr.step as i32, &image) } != 0 {
                        return false;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            }
        }
        match callback {
            // SAFETY: the host promised a valid function pointer for the call's duration.
            Some(f) => unsafe { f(user, pr.step as i32, pr.total as i32, pr.loss, pr.clip_sim) == 0 },
            None => true,
        }
    };
    let result = ctx.optimize(latents, params, &mut progress);
    match failed {
        Some(e) => Err(e),
        None => result,
    }
}

/// The frame of a loop's picture (its side may be under the generator's) as RGBA8 rows.
fn preview_image(ctx: &Context, picture: &tch::Tensor) -> Result<(Vec<u8>, u32, u32)> {
    let framed = ctx.to_frame(picture, None)?;
    let (_, _, h, w) = framed.size4()?;
    let mut pixels = edit::to_rgba8(&framed, PixelFormat::Rgba8)?;
    Ok((pixels.pop().unwrap_or_default(), w as u32, h as u32))
}

/// Learns a shift that moves `latent`'s picture toward `params->prompt`. On success `*out` owns
/// the shift (free with `cs_shift_free`); its metadata records how it was made. `cs_cancel(ctx)`
/// from another thread, or a nonzero progress return, stops within one step. Statuses: OK;
/// INVALID_ARGUMENT (NULL, empty or over-long prompt, unknown layer, bad number); CANCELLED;
/// DIVERGED (the loss became NaN or infinite: lower the learning rate); OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn cs_optimize(
    ctx: *const cs_ctx,
    latent: *const cs_latent,
    params: *const cs_optimize_params,
    out: *mut *mut cs_shift,
) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            let latent = &ref_arg(latent, "latent")?.inner;
            let p = ref_arg(params, "params")?;
            let prompt = str_arg(p.prompt, "prompt")?.to_string();
            let params = optimize_params(ctx, p, vec![prompt])?;
            let mut shifts = run_optimize(ctx, &[latent], &params, p)?;
            shift_handle(shifts.pop().ok_or_else(|| Error::Internal("no shift produced".into()))?)
        })
    })
}

/// Several edits in one batch (one shift per sample): `n_prompts` prompts for one latent, one
/// prompt for `n_latents` latents, or N of each. `params->prompt` is ignored; the arrays are read
/// during the call only. On success the caller's array `out` receives max(n_prompts, n_latents)
/// shifts, each owned by the caller and freed with `cs_shift_free`. Statuses: as `cs_optimize`.
#[no_mangle]
pub unsafe extern "C" fn cs_optimize_batch(
    ctx: *const cs_ctx,
    latents: *const *const cs_latent,
    n_latents: usize,
    prompts: *const *const c_char,
    n_prompts: usize,
    params: *const cs_optimize_params,
    out: *mut *mut cs_shift,
) -> cs_status {
    guard(|| {
        let ctx = &ref_arg(ctx, "ctx")?.inner;
        let p = ref_arg(params, "params")?;
        let lat = slice_arg(latents, n_latents, "latents")?
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.as_ref().map(|l| &l.inner).ok_or_else(|| Error::arg("latents", format!("entry {i} is NULL")))
            })
            .collect::<Result<Vec<_>>>()?;
        let texts = slice_arg(prompts, n_prompts, "prompts")?
            .iter()
            .map(|&t| str_arg(t, "prompts").map(str::to_string))
            .collect::<Result<Vec<_>>>()?;
        if out.is_null() {
            return Err(Error::arg("out", "is NULL"));
        }
        let params = optimize_params(ctx, p, texts)?;
        let shifts = run_optimize(ctx, &lat, &params, p)?;
        let handles = shifts.into_iter().map(shift_handle).collect::<Result<Vec<_>>>()?;
        for (i, h) in handles.into_iter().enumerate() {
            *out.add(i) = Box::into_raw(Box::new(h));
        }
        Ok(())
    })
}

// ───────────────────────────── CLIP ─────────────────────────────

/// Cosine similarity between a picture (CLIP's official preprocessing; read during the call only)
/// and a text, written to the caller's `*out`. Statuses: OK; INVALID_ARGUMENT; MODEL_FORMAT (no
/// CLIP in this context).
#[no_mangle]
pub unsafe extern "C" fn cs_clip_score(
    ctx: *const cs_ctx,
    image: *const cs_image,
    text: *const c_char,
    out: *mut f32,
) -> cs_status {
    guard(|| {
        let out = out_arg(out, "out")?;
        let ctx = &ref_arg(ctx, "ctx")?.inner;
        let view = image_arg(image, "image")?;
        let text = str_arg(text, "text")?;
        *out = ctx.clip_score(&view, &[text])?[0];
        Ok(())
    })
}
