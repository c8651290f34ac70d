//! Contexts: loading a model set or files on a device, and what a context tells about itself.

#![allow(clippy::missing_safety_doc)]

use std::ffi::c_char;

use super::model_files::model_store;
use super::*;

// ───────────────────────────── context ─────────────────────────────

/// Fills `*params` with the defaults (every path NULL, `CS_DEVICE_KIND_AUTO`, all threads).
/// The struct is the caller's. Statuses: OK; INVALID_ARGUMENT when `params` is NULL.
#[no_mangle]
pub unsafe extern "C" fn cs_context_params_init(params: *mut cs_context_params) -> cs_status {
    guard(|| {
        *out_arg(params, "params")? = cs_context_params {
            struct_size: std::mem::size_of::<cs_context_params>() as u32,
            generator_path: std::ptr::null(),
            encoder_path: std::ptr::null(),
            clip_path: std::ptr::null(),
            vocab_path: std::ptr::null(),
            set_name: std::ptr::null(),
            models_dir: std::ptr::null(),
            device: cs_device_kind::Auto as i32,
            device_index: 0,
            n_threads: 0,
            clip_text_heads: 0,
            face_detector_dir: std::ptr::null(),
        };
        Ok(())
    })
}

/// Loads the models named by `params` (a model set, or files). On success `*out` owns a new
/// context, freed with `cs_context_free`; on failure `*out` is NULL (as for every constructor). Statuses: OK;
/// INVALID_ARGUMENT (NULL, bad field, unknown set); IO (unreadable file); MODEL_FORMAT (not a
/// supported or a corrupt model file, wrong key or shape); MODEL_MISMATCH (files that do not
/// belong together); MODELS_MISSING (a set's files are absent: the message says which, from
/// where, to where); DEVICE; OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn cs_context_create(params: *const cs_context_params, out: *mut *mut cs_ctx) -> cs_status {
    guard(|| hand_out(out, || Ok(cs_ctx { inner: Context::new(&context_params(ref_arg(params, "params")?)?)? })))
}

/// Reads `cs_context_params` into the library's form, checking every field.
unsafe fn context_params(p: &cs_context_params) -> Result<ContextParams> {
    // Callers built against 0.1 pass the struct without `face_detector_dir`.
    let v1 = std::mem::offset_of!(cs_context_params, face_detector_dir);
    check_struct_size(p.struct_size, v1, "params")?;
    let face_dir = if p.struct_size as usize >= std::mem::size_of::<cs_context_params>() {
        p.face_detector_dir
    } else {
        std::ptr::null()
    };
    let device = match p.device {
        d if d == cs_device_kind::Auto as i32 => DeviceRequest::Auto,
        d if d == cs_device_kind::Cpu as i32 => DeviceRequest::Cpu,
        d if d == cs_device_kind::Cuda as i32 && p.device_index >= 0 => DeviceRequest::Cuda(p.device_index as usize),
        d if d == cs_device_kind::Cuda as i32 => {
            return Err(Error::arg("device_index", format!("{} is negative", p.device_index)))
        }
        d => return Err(Error::arg("device", format!("{d} is not a cs_device_kind"))),
    };
    if p.n_threads < 0 {
        return Err(Error::arg("n_threads", format!("{} is negative", p.n_threads)));
    }
    let opt_path = |ptr: *const c_char, name: &'static str| -> Result<Option<PathBuf>> {
        if ptr.is_null() {
            Ok(None)
        } else {
            Ok(Some(PathBuf::from(str_arg(ptr, name)?)))
        }
    };
    let mut params = if p.set_name.is_null() {
        ContextParams::new(PathBuf::from(str_arg(p.generator_path, "generator_path")?))
    } else {
        ContextParams::from_set(&model_store(p.models_dir)?, str_arg(p.set_name, "set_name")?)?
    };
    if let Some(g) = opt_path(p.generator_path, "generator_path")? {
        params.generator = g;
    }
    for (slot, ptr, name) in [
        (&mut params.encoder, p.encoder_path, "encoder_path"),
        (&mut params.clip, p.clip_path, "clip_path"),
        (&mut params.vocab, p.vocab_path, "vocab_path"),
    ] {
        if let Some(v) = opt_path(ptr, name)? {
            *slot = Some(v);
        }
    }
    if p.clip_text_heads < 0 {
        return Err(Error::arg("clip_text_heads", format!("{} is negative", p.clip_text_heads)));
    }
    params.clip_heads.text = (p.clip_text_heads > 0).then_some(p.clip_text_heads as i64);
    if let Some(dir) = opt_path(face_dir, "face_detector_dir")? {
        params.face_detector = Some(crate::face::detector_files_in(&dir).ok_or_else(|| {
            Error::arg(
                "face_detector_dir",
                format!("{}: MTCNN's pnet.pt, rnet.pt and onet.pt are not all there", dir.display()),
            )
        })?);
    } else if params.face_detector.is_none() {
        // Model files given one by one still find faces with the store's detector when the
        // `ffhq` set brought it (a face e4e file is edited as a face).
        params.face_detector = model_store(p.models_dir).ok().and_then(|s| crate::face::detector_files_in(s.root()));
    }
    params.device = device;
    params.threads = p.n_threads as usize;
    Ok(params)
}

/// Releases a context and everything it loaded; NULL is accepted. Latents, shifts and images
/// made with it stay valid (they own their data).
#[no_mangle]
pub unsafe extern "C" fn cs_context_free(ctx: *mut cs_ctx) {
    free_handle(ctx)
}

/// Asks the operation running on `ctx` to stop; callable from any thread while another runs
/// the operation. Every long call (detect, encode, optimise, render, layers, transfer) checks
/// it and then returns CANCELLED. Sent while nothing runs, it stays pending and the next long
/// call returns CANCELLED at once (a host's Cancel between two calls of a job stops the job);
/// a call returning CANCELLED consumes it. Statuses: OK; INVALID_ARGUMENT (NULL).
#[no_mangle]
pub unsafe extern "C" fn cs_cancel(ctx: *const cs_ctx) -> cs_status {
    guard(|| {
        ref_arg(ctx, "ctx")?.inner.cancel();
        Ok(())
    })
}

/// Drops a pending cancel: a host starting a new job, whose user pressed Cancel after the last
/// job's last call had returned. Statuses: OK; INVALID_ARGUMENT (NULL).
#[no_mangle]
pub unsafe extern "C" fn cs_cancel_clear(ctx: *const cs_ctx) -> cs_status {
    guard(|| {
        ref_arg(ctx, "ctx")?.inner.clear_cancel();
        Ok(())
    })
}

/// The picture domain of a context: where the picture sits in the generator output and the
/// editing defaults (from the model set, or inferred from the files).
#[repr(C)]
pub struct cs_domain_info {
    pub struct_size: u32,
    /// "face", "car", "horse", or "" when not known.
    pub name: [c_char; 32],
    /// The frame inside the generator output, px (cars: 512×384 at top 64).
    pub frame_left: u32,
    pub frame_top: u32,
    pub frame_width: u32,
    pub frame_height: u32,
    /// Whether the context can invert photos (has an e4e encoder) and edit (has CLIP).
    pub has_encoder: i32,
    pub has_clip: i32,
    /// The layer `cs_optimize` shifts when `layer` is NULL, and the default λ2.
    pub default_layer: [c_char; 32],
    pub default_lambda2: f32,
}

fn c_name(s: &str) -> [c_char; 32] {
    let mut out = [0 as c_char; 32];
    for (dst, src) in out.iter_mut().zip(s.bytes().take(31)) {
        *dst = src as c_char;
    }
    out
}

/// Writes the context's domain facts (name, frame, encoder input, defaults) into the caller's
/// `*out`, whose `struct_size` the caller sets (sizeof, or 0 for this header's size; an older,
/// smaller struct gets only its bytes). Statuses: OK; INVALID_ARGUMENT (NULL).
#[no_mangle]
pub unsafe extern "C" fn cs_context_get_domain(ctx: *const cs_ctx, out: *mut cs_domain_info) -> cs_status {
    guard(|| {
        let ctx = &ref_arg(ctx, "ctx")?.inner;
        let f = ctx.frame;
        write_sized(
            out,
            cs_domain_info {
                struct_size: std::mem::size_of::<cs_domain_info>() as u32,
                name: c_name(ctx.domain.as_ref().map(|d| d.name.as_str()).unwrap_or("")),
                frame_left: f.left,
                frame_top: f.top,
                frame_width: f.width,
                frame_height: f.height,
                has_encoder: ctx.encoder.is_some() as i32,
                has_clip: ctx.guide.is_some() as i32,
                default_layer: c_name(&ctx.default_layer().to_string()),
                default_lambda2: ctx.default_lambda2() as f32,
            },
            "out",
        )?;
        Ok(())
    })
}

/// Writes the generator's facts (size, W+ shape, number of editable layers) into the caller's
/// `*out`, whose `struct_size` the caller sets (sizeof, or 0). Statuses: OK; INVALID_ARGUMENT
/// (NULL).
#[no_mangle]
pub unsafe extern "C" fn cs_generator_get_info(ctx: *const cs_ctx, out: *mut cs_generator_info) -> cs_status {
    guard(|| {
        let g = &ref_arg(ctx, "ctx")?.inner.generator;
        write_sized(
            out,
            cs_generator_info {
                struct_size: std::mem::size_of::<cs_generator_info>() as u32,
                resolution: g.config.size as u32,
                n_latent: g.n_latent() as u32,
                style_dim: g.style_dim() as u32,
                n_layers: g.layers().len() as u32,
            },
            "out",
        )?;
        Ok(())
    })
}

/// Writes the facts of layer `index` (0 ≤ index < n_layers, in forward order) into the caller's
/// `*out`. Statuses: OK; INVALID_ARGUMENT (NULL, index out of range).
#[no_mangle]
pub unsafe extern "C" fn cs_generator_get_layer(ctx: *const cs_ctx, index: u32, out: *mut cs_layer_info) -> cs_status {
    guard(|| {
        let layers = ref_arg(ctx, "ctx")?.inner.generator.layers();
        let out = out_arg(out, "out")?;
        let l = layers
            .get(index as usize)
            .ok_or_else(|| Error::arg("index", format!("{index} is out of range (0..{})", layers.len())))?;
        let name = c_name(&l.id.to_string());
        let mut shape = [0i64; 5];
        for (dst, src) in shape.iter_mut().zip(&l.weight_shape) {
            *dst = *src;
        }
        *out = cs_layer_info {
            name,
            resolution: l.resolution as u32,
            wplus_index: l.wplus_index as u32,
            weight_shape: shape,
            weight_numel: l.weight_shape.iter().product::<i64>() as u64,
        };
        Ok(())
    })
}
