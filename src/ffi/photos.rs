//! Photos: finding faces, encoding a face (FFHQ-aligned) or a box of a photo, and rendering
//! layers that go back onto the photo at its coordinates.

#![allow(clippy::missing_safety_doc)]

use crate::context::photo::{Paste, Subject};
use crate::face::{Face, Layer, Transfer};

use super::editing::image_arg;
use super::*;

// ───────────────────────────── faces ─────────────────────────────

/// A face in a photo, in photo pixels (x right, y down).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cs_face {
    pub struct_size: u32,
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    /// The detector's face probability.
    pub score: f32,
    /// x, y of the left eye, right eye, nose, left and right mouth corners ("left" = on the
    /// image's left): what alignment uses.
    pub landmarks: [f32; 10],
    /// x, y of the FFHQ crop's corners: top-left, bottom-left, bottom-right, top-right.
    pub quad: [f32; 8],
}

/// The faces found in a photo (`cs_faces_detect`).
pub struct cs_faces {
    faces: Vec<Face>,
}

/// How the edit goes back onto the photo: what a layer holds and how its alpha is made.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cs_paste_mode {
    /// The render, only where the edit changes the picture (|G_k − G_0| above a small
    /// threshold, dilated and blurred) inside the region: the rest stays the photo's own.
    Changes = 0,
    /// The whole face region or box, with a feathered border.
    Region = 1,
    /// The generator's whole frame, opaque.
    Frame = 2,
    /// The photo's own pixels moved by the displacement between the unedited and the edited
    /// render (needs `photo`), opaque where that changes them; renders only at the flow's side.
    /// The default.
    Warp = 3,
}

/// Where the edited picture sits in the photo, for `cs_render_layers`.
#[repr(C)]
pub struct cs_paste_params {
    pub struct_size: u32,
    /// A `cs_paste_mode`.
    pub mode: i32,
    /// The face that was encoded (`cs_encode_face`), or NULL for a box.
    pub face: *const cs_face,
    /// The box that was encoded (x1, y1, x2, y2, photo pixels) when `face` is NULL; all zeros =
    /// the whole photo.
    pub bbox: [f32; 4],
    /// The photo's size: layers are clipped to it.
    pub photo_width: u32,
    pub photo_height: u32,
    /// The photo itself, read during the call only; needed by `CS_PASTE_MODE_WARP` (its size
    /// must be photo_width × photo_height), ignored by the other modes.
    pub photo: *const cs_image,
}

fn face_record(f: &Face) -> Result<cs_face> {
    let quad = crate::face::FaceQuad::from_landmarks(&f.landmarks)?;
    let mut landmarks = [0f32; 10];
    for (i, p) in f.landmarks.iter().enumerate() {
        landmarks[2 * i] = p[0];
        landmarks[2 * i + 1] = p[1];
    }
    let mut q = [0f32; 8];
    for (i, p) in quad.quad.iter().enumerate() {
        q[2 * i] = p[0] as f32;
        q[2 * i + 1] = p[1] as f32;
    }
    Ok(cs_face { struct_size: std::mem::size_of::<cs_face>() as u32, bbox: f.bbox, score: f.score, landmarks, quad: q })
}

unsafe fn face_arg(f: *const cs_face) -> Result<Face> {
    let f = ref_arg(f, "face")?;
    if !(f.bbox.iter().chain(&f.landmarks).all(|v| v.is_finite()) && f.score.is_finite()) {
        return Err(Error::arg("face", "holds NaN or infinity"));
    }
    let mut landmarks = [[0f32; 2]; 5];
    for (i, p) in landmarks.iter_mut().enumerate() {
        *p = [f.landmarks[2 * i], f.landmarks[2 * i + 1]];
    }
    Ok(Face { bbox: f.bbox, score: f.score, landmarks })
}

/// Finds every face in `photo` (read during the call only) with MTCNN. On success `*out` owns the
/// list (most probable first; possibly empty), freed with `cs_faces_free`. Statuses: OK;
/// INVALID_ARGUMENT (NULL, bad view, no face detector in this context: use the `ffhq` set or
/// `face_detector_dir`); OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn cs_faces_detect(
    ctx: *const cs_ctx,
    photo: *const cs_image,
    out: *mut *mut cs_faces,
) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            Ok(cs_faces { faces: ctx.detect_faces(&image_arg(photo, "photo")?)? })
        })
    })
}

/// Number of faces (0 for NULL). Never fails.
#[no_mangle]
pub unsafe extern "C" fn cs_faces_count(faces: *const cs_faces) -> usize {
    faces.as_ref().map(|f| f.faces.len()).unwrap_or(0)
}

/// Writes face `index` into the caller's `*out` (its `struct_size` set by the caller: sizeof,
/// or 0). Statuses: OK; INVALID_ARGUMENT (NULL, index out of range).
#[no_mangle]
pub unsafe extern "C" fn cs_faces_get(faces: *const cs_faces, index: usize, out: *mut cs_face) -> cs_status {
    guard(|| {
        let faces = &ref_arg(faces, "faces")?.faces;
        let f = faces.get(index).ok_or_else(|| Error::arg("index", format!("{index} is not below {}", faces.len())))?;
        write_sized(out, face_record(f)?, "out")
    })
}

/// The face to edit, written to `*index`: `selection` (x1, y1, x2, y2; NULL = none) picks the
/// face it overlaps most, else the largest face is picked. Statuses: OK; INVALID_ARGUMENT (no
/// face at all: the message says faces under 20 px are not found; a selection holding no face).
#[no_mangle]
pub unsafe extern "C" fn cs_faces_pick(faces: *const cs_faces, selection: *const f32, index: *mut usize) -> cs_status {
    guard(|| {
        let faces = &ref_arg(faces, "faces")?.faces;
        let sel = if selection.is_null() {
            None
        } else {
            let s = std::slice::from_raw_parts(selection, 4);
            Some([s[0], s[1], s[2], s[3]])
        };
        *out_arg(index, "index")? = crate::face::pick_face(faces, sel, None, "the photo")?;
        Ok(())
    })
}

/// Releases a face list; NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn cs_faces_free(faces: *mut cs_faces) {
    free_handle(faces)
}

/// Inverts `face` of `photo` into a W+ latent: the photo is aligned as FFHQ was (from the face's
/// landmarks) at the encoder's input size and encoded. On success `*out` owns a new latent,
/// freed with `cs_latent_free`. Statuses: OK; INVALID_ARGUMENT (NULL, bad view or face);
/// MODEL_FORMAT (no encoder in this context); OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn cs_encode_face(
    ctx: *const cs_ctx,
    photo: *const cs_image,
    face: *const cs_face,
    out: *mut *mut cs_latent,
) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            let subject = Subject::face(face_arg(face)?)?;
            Ok(cs_latent { inner: ctx.encode_subject(&image_arg(photo, "photo")?, &subject)? })
        })
    })
}

// ───────────────────────────── layers ─────────────────────────────

/// Fills `*params` with the defaults (`CS_PASTE_MODE_WARP`, no face, the whole photo, no photo
/// given yet). The struct is the caller's. Statuses: OK; INVALID_ARGUMENT (NULL).
#[no_mangle]
pub unsafe extern "C" fn cs_paste_params_init(params: *mut cs_paste_params) -> cs_status {
    guard(|| {
        *out_arg(params, "params")? = cs_paste_params {
            struct_size: std::mem::size_of::<cs_paste_params>() as u32,
            mode: cs_paste_mode::Warp as i32,
            face: std::ptr::null(),
            bbox: [0.0; 4],
            photo_width: 0,
            photo_height: 0,
            photo: std::ptr::null(),
        };
        Ok(())
    })
}

/// What a paste request says: the mode, where the edited picture sits in the photo, the
/// photo's size, and the photo itself when given.
struct PasteRequest<'a> {
    mode: Paste,
    subject: Subject,
    width: u32,
    height: u32,
    photo: Option<ImageView<'a>>,
}

unsafe fn paste_request<'a>(p: *const cs_paste_params) -> Result<PasteRequest<'a>> {
    let p = ref_arg(p, "paste")?;
    check_struct_size(p.struct_size, std::mem::size_of::<cs_paste_params>(), "paste")?;
    let mode = match p.mode {
        m if m == cs_paste_mode::Changes as i32 => Paste::Changes,
        m if m == cs_paste_mode::Region as i32 => Paste::Region,
        m if m == cs_paste_mode::Frame as i32 => Paste::Frame,
        m if m == cs_paste_mode::Warp as i32 => Paste::Warp,
        m => return Err(Error::arg("mode", format!("{m} is not a cs_paste_mode"))),
    };
    let (width, height) = (p.photo_width, p.photo_height);
    if width == 0 || height == 0 {
        return Err(Error::arg("photo_width, photo_height", format!("{width}×{height} has no pixels")));
    }
    let subject = if p.face.is_null() {
        match p.bbox {
            [0.0, 0.0, 0.0, 0.0] => Subject::whole(width, height),
            b => Subject::selection(b, width, height)?,
        }
    } else {
        Subject::face(face_arg(p.face)?)?
    };
    // Read by the warp alone; the other modes ignore it.
    let photo = if p.photo.is_null() || mode != Paste::Warp { None } else { Some(image_arg(p.photo, "photo")?) };
    Ok(PasteRequest { mode, subject, width, height, photo })
}

/// The edit's transfer onto the photo a paste request holds.
fn make_transfer(
    ctx: &crate::context::Context,
    latent: &crate::edit::Latent,
    render: &super::editing::RenderRequest,
    paste: &PasteRequest,
) -> Result<Transfer> {
    let photo = paste.photo.as_ref().ok_or_else(|| {
        Error::arg("photo", "is NULL: CS_PASTE_MODE_WARP moves the photo's own pixels, so it needs them")
    })?;
    let (pw, ph) = (paste.width, paste.height);
    if (photo.width, photo.height) != (pw, ph) {
        return Err(Error::arg(
            "photo",
            format!("is {}×{}, photo_width × photo_height say {pw}×{ph}", photo.width, photo.height),
        ));
    }
    Ok(ctx.transfer(photo, &paste.subject, latent, &render.shifts, &render.strengths)?.transfer)
}

/// Layers as images with their origin, in `format` (RGBA8 or BGRA8).
fn layer_images(layers: Vec<Layer>, format: PixelFormat) -> Result<cs_images> {
    if format == PixelFormat::Rgb8 {
        return Err(Error::arg("format", "layers carry alpha: ask for RGBA8 or BGRA8"));
    }
    let first = layers.first().ok_or_else(|| Error::arg("strengths", "the list is empty"))?;
    let (x, y, w, h) = (first.x as i32, first.y as i32, first.width as u32, first.height as u32);
    // In place: a copy of a 100 MP photo's layers could be more than the host has.
    let pixels = layers
        .into_iter()
        .map(|mut l| {
            if format == PixelFormat::Bgra8 {
                l.rgba.chunks_exact_mut(4).for_each(|p| p.swap(0, 2));
            }
            l.rgba
        })
        .collect();
    Ok(cs_images { pixels, width: w, height: h, format, origin: (x, y) })
}

/// Renders `latent` at each strength of `render` (its shifts, strengths and pixel format; its
/// target size is ignored) and puts the edit onto the photo as `paste->mode` says: one layer
/// per strength, all of the same size, covering the edited region's footprint in the photo.
/// In the default `CS_PASTE_MODE_WARP` a layer is the photo's own pixels moved by the edit
/// (`paste->photo` is read during the call), opaque where they changed; the other modes paste
/// the renders. `cs_images_get_origin` tells where they go. On success `*out` owns the layers,
/// freed with `cs_images_free`. `cs_cancel` stops it. Statuses: OK; INVALID_ARGUMENT (NULL,
/// bad mode, a region outside the photo, no photo for warp, a pixel format without alpha);
/// MODEL_MISMATCH; CANCELLED; OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn cs_render_layers(
    ctx: *const cs_ctx,
    latent: *const cs_latent,
    render: *const cs_render_params,
    paste: *const cs_paste_params,
    out: *mut *mut cs_images,
) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            let latent = &ref_arg(latent, "latent")?.inner;
            let r = ref_arg(render, "render")?;
            let format = pixel_format(r.format)?;
            let paste = paste_request(paste)?;
            let layers = if paste.mode == Paste::Warp {
                let request = super::editing::render_request(r)?;
                let t = make_transfer(ctx, latent, &request, &paste)?;
                ctx.transfer_layers(&t, &request.strengths)?
            } else {
                // Only the change mask needs the unedited render: one forward less otherwise.
                let with_0 = paste.mode == Paste::Changes;
                let (renders, render_0) = super::editing::render_frames(ctx, latent, r, with_0)?;
                ctx.paste_layers(&renders, render_0.as_ref(), &paste.subject, paste.mode, paste.width, paste.height)?
            };
            layer_images(layers, format)
        })
    })
}

// ───────────────────────────── transfers ─────────────────────────────

/// An edit's displacement on one photo (`cs_transfer_create`): the photo at any strength between
/// the rendered ones, without rendering again (a host's strength slider).
pub struct cs_transfer {
    inner: Transfer,
}

/// Renders `latent` unedited and at each strength of `render` (at the flow's side only),
/// estimates the displacements between them and keeps the part of the photo they move
/// (`paste->photo`, read during the call; `paste->mode` is ignored: this is the warp). Then
/// `cs_transfer_layer` gives the layer at any strength between the smallest and the largest of
/// them (and 0), interpolating the two nearest displacements. On success `*out` owns it, freed
/// with `cs_transfer_free`. `cs_cancel` stops it. Statuses: as `cs_render_layers`.
#[no_mangle]
pub unsafe extern "C" fn cs_transfer_create(
    ctx: *const cs_ctx,
    latent: *const cs_latent,
    render: *const cs_render_params,
    paste: *const cs_paste_params,
    out: *mut *mut cs_transfer,
) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let ctx = &ref_arg(ctx, "ctx")?.inner;
            let latent = &ref_arg(latent, "latent")?.inner;
            let request = super::editing::render_request(ref_arg(render, "render")?)?;
            Ok(cs_transfer { inner: make_transfer(ctx, latent, &request, &paste_request(paste)?)? })
        })
    })
}

/// The layer at `strength` (within `cs_transfer_get_range`) in `format` (RGBA8 or BGRA8): the
/// photo's own pixels moved, opaque where they changed, at the origin `cs_images_get_origin`
/// gives. A 1000² px face region takes tens of milliseconds on a CPU. On success `*out` owns
/// one image, freed with `cs_images_free`. Statuses: OK; INVALID_ARGUMENT (NULL, a strength
/// outside the range, a format without alpha); OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn cs_transfer_layer(
    transfer: *const cs_transfer,
    strength: f32,
    format: i32,
    out: *mut *mut cs_images,
) -> cs_status {
    guard(|| {
        hand_out(out, || {
            let t = &ref_arg(transfer, "transfer")?.inner;
            layer_images(vec![t.layer(strength as f64)?], pixel_format(format)?)
        })
    })
}

/// The strengths `cs_transfer_layer` takes: from `*lo` to `*hi` (0 always lies between).
/// Statuses: OK; INVALID_ARGUMENT (NULL).
#[no_mangle]
pub unsafe extern "C" fn cs_transfer_get_range(transfer: *const cs_transfer, lo: *mut f32, hi: *mut f32) -> cs_status {
    guard(|| {
        let k = ref_arg(transfer, "transfer")?.inner.strengths();
        *out_arg(lo, "lo")? = k[0] as f32;
        *out_arg(hi, "hi")? = k[k.len() - 1] as f32;
        Ok(())
    })
}

/// Of the edited region (the face square or the selection), the fraction where the render at
/// `strength` was blended in because the displacement could not explain it (new content such
/// as teeth), in [0, 1]. Statuses: OK; INVALID_ARGUMENT (NULL, a strength outside the range).
#[no_mangle]
pub unsafe extern "C" fn cs_transfer_get_blended(
    transfer: *const cs_transfer,
    strength: f32,
    fraction: *mut f32,
) -> cs_status {
    guard(|| {
        let t = &ref_arg(transfer, "transfer")?.inner;
        *out_arg(fraction, "fraction")? = t.blended_fraction(strength as f64)? as f32;
        Ok(())
    })
}

/// Releases a transfer; NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn cs_transfer_free(transfer: *mut cs_transfer) {
    free_handle(transfer)
}

/// Where `images` go in the photo: the top-left pixel of layers from `cs_render_layers`; (0, 0)
/// for other images. Statuses: OK; INVALID_ARGUMENT (NULL).
#[no_mangle]
pub unsafe extern "C" fn cs_images_get_origin(images: *const cs_images, x: *mut i32, y: *mut i32) -> cs_status {
    guard(|| {
        let images = ref_arg(images, "images")?;
        *out_arg(x, "x")? = images.origin.0;
        *out_arg(y, "y")? = images.origin.1;
        Ok(())
    })
}

/// The region of a photo's subject (the face `paste->face`, else the box `paste->bbox`, else the
/// whole photo) in pixels of the generator's output, {x1, y1, x2, y2}: the
/// `cs_optimize_params.region` that keeps the rest of the picture (with `lambda3` > 0).
/// `paste->mode` and `paste->photo` are not read. Statuses: OK; INVALID_ARGUMENT (NULL, a bad
/// face or box, a subject that covers no pixel of the frame).
#[no_mangle]
pub unsafe extern "C" fn cs_subject_region(
    ctx: *const cs_ctx,
    paste: *const cs_paste_params,
    out: *mut [f32; 4],
) -> cs_status {
    guard(|| {
        let ctx = &ref_arg(ctx, "ctx")?.inner;
        let request = paste_request(paste)?;
        let region = ctx.subject_region(&request.subject)?.ok_or_else(|| {
            Error::arg("paste", "the face or box covers no pixel of the model's frame: nothing to keep around it")
        })?;
        *out_arg(out, "out")? = region;
        Ok(())
    })
}
