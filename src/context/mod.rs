//! A loaded model set on one device: what `cs_ctx` wraps and what the CLI works with.
//!
//! A context always has a generator; the e4e encoder (photos → W+) and the CLIP guide (text)
//! are there when their files are given. An e4e checkpoint carries the generator too, so one
//! e4e file + CLIP + its vocab is a complete set. A context is used by one thread at a time;
//! only [`Context::cancel`] may come from another.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tch::{Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::device::{self, DeviceRequest};
use crate::domain::{Domain, Frame, Size};
use crate::edit::encode::{self, ImageView};
use crate::edit::guide::ClipGuide;
use crate::edit::optimize::{self, OptimizeParams, Progress};
use crate::edit::{Latent, Shift};
use crate::error::{Error, Result};
use crate::face::Mtcnn;
use crate::layer::LayerId;
use crate::models::clip::HeadCounts;
use crate::models::e4e::{self, Encoder4Editing};
use crate::models::{self, stylegan2::Generator};
use crate::store::ModelStore;

pub mod photo;
pub mod request;
pub use photo::{layer_on_canvas, Paste, PhotoTransfer, Subject, FLOW_SIDE};
pub use request::EditRequest;

/// Samples averaged for the mean latent when the file does not carry `latent_avg`
/// (rosinality's `mean_latent(4096)`), from a fixed seed so truncation is reproducible.
pub const MEAN_LATENT_SAMPLES: i64 = 4096;
pub const MEAN_LATENT_SEED: i64 = 0;

/// What a context is made of.
#[derive(Debug, Clone)]
pub struct ContextParams {
    /// A rosinality checkpoint, an e4e checkpoint, or a safetensors state dict.
    pub generator: PathBuf,
    /// An e4e checkpoint; None uses `generator` when that file holds an encoder.
    pub encoder: Option<PathBuf>,
    /// CLIP (TorchScript archive or state dict) and its BPE vocab; both or neither.
    pub clip: Option<PathBuf>,
    pub vocab: Option<PathBuf>,
    pub clip_heads: HeadCounts,
    /// MTCNN's three files (P-, R-, O-Net) for finding faces in photos; None: no detector.
    pub face_detector: Option<[PathBuf; 3]>,
    /// Domain facts (frame, encoder input, defaults); None infers them from the files.
    pub domain: Option<Domain>,
    /// Name recorded in shift files (a model-set name, or the generator's file name).
    pub model_id: Option<String>,
    /// SHA-256 of the generator file when known (a model set's manifest or lock file).
    pub model_sha256: Option<String>,
    pub device: DeviceRequest,
    /// CPU threads for libtorch; 0 keeps its default.
    pub threads: usize,
}

impl ContextParams {
    pub fn new(generator: impl AsRef<Path>) -> Self {
        ContextParams {
            generator: generator.as_ref().to_path_buf(),
            encoder: None,
            clip: None,
            vocab: None,
            clip_heads: HeadCounts::default(),
            face_detector: None,
            domain: None,
            model_id: None,
            model_sha256: None,
            device: DeviceRequest::Auto,
            threads: 0,
        }
    }

    /// Every file of a model set from the store; a missing file is an error that says which,
    /// from where, and where to put it.
    pub fn from_set(store: &ModelStore, set: &str) -> Result<ContextParams> {
        let paths = store.set_paths(set)?;
        let role = |r: &str| paths.get(r).map(Path::to_path_buf);
        let generator = role("e4e").or_else(|| role("generator")).ok_or_else(|| {
            Error::arg("set", format!("model set `{set}` has no generator (an `e4e` or `generator` file)"))
        })?;
        let model_sha256 = match generator.file_name().and_then(|n| n.to_str()) {
            Some(name) => store.expected_hash(name)?,
            None => None,
        };
        Ok(ContextParams {
            model_sha256,
            encoder: role("e4e"),
            clip: role("clip"),
            vocab: role("bpe"),
            face_detector: match (role("mtcnn_pnet"), role("mtcnn_rnet"), role("mtcnn_onet")) {
                (Some(p), Some(r), Some(o)) => Some([p, r, o]),
                _ => None,
            },
            domain: paths.domain.clone(),
            model_id: Some(set.to_string()),
            ..ContextParams::new(generator)
        })
    }
}

pub struct Context {
    pub device: Device,
    pub generator: Generator,
    pub generator_path: PathBuf,
    pub encoder: Option<Encoder>,
    pub guide: Option<ClipGuide>,
    /// Finds faces in photos (MTCNN); None when the context was made without its files.
    pub detector: Option<Mtcnn>,
    /// The picture inside the generator output.
    pub frame: Frame,
    pub domain: Option<Domain>,
    pub model_id: String,
    pub model_sha256: Option<String>,
    stored_mean: Option<Tensor>,
    computed_mean: OnceCell<Tensor>,
    cancel: Arc<AtomicBool>,
}

/// Cancels the operation running on a context, from any thread.
#[derive(Clone)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The e4e encoder with what inversion needs beside it.
pub struct Encoder {
    pub net: Encoder4Editing,
    /// (n_styles, D), added to the encoder's output (pSp `start_from_latent_avg`).
    pub latent_avg: Option<Tensor>,
    /// Input (H, W) the encoder was trained at.
    pub input_size: Size,
}

impl Context {
    pub fn new(params: &ContextParams) -> Result<Context> {
        let device = params.device.resolve()?;
        device::set_threads(params.threads)?;
        let gen_ck = Checkpoint::open(&params.generator)?;
        let loaded = models::load_generator_from(&gen_ck, device)?;
        let generator = loaded.generator;
        log::info!(
            "loaded {} px generator from {} on {}",
            generator.config.size,
            params.generator.display(),
            device::describe(device)
        );

        let encoder_ck = match &params.encoder {
            Some(p) if p != &params.generator => Some(Checkpoint::open(p)?),
            Some(_) => Some(gen_ck),
            None if e4e::detect_prefix(&gen_ck).is_ok() => Some(gen_ck),
            None => None,
        };
        let size = generator.config.size as u32;
        // Bare files say what they are: e4e records the dataset it was trained on, so a face
        // checkpoint given as a file is edited as a face (found, aligned), like the `ffhq` set.
        let domain = match (&params.domain, &encoder_ck) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(ck)) => domain_of_checkpoint(ck, size)?,
            (None, None) => None,
        };
        let encoder = match encoder_ck {
            Some(ck) => Some(load_encoder(&ck, &generator, domain.as_ref(), device)?),
            None => None,
        };

        let guide = match (&params.clip, &params.vocab) {
            (Some(c), Some(v)) => Some(ClipGuide::load(c, v, params.clip_heads, device)?),
            (None, None) => None,
            (Some(_), None) => return Err(Error::arg("vocab", "a CLIP model was given without its BPE vocab file")),
            (None, Some(_)) => return Err(Error::arg("clip", "a BPE vocab was given without a CLIP model")),
        };

        let detector = match &params.face_detector {
            Some([p, r, o]) => Some(Mtcnn::load(p, r, o, device)?),
            None => None,
        };

        let frame = match &domain {
            Some(d) if d.generator_size != size => {
                return Err(Error::Mismatch(format!(
                    "the `{}` domain expects a {} px generator, {} is {size} px",
                    d.name,
                    d.generator_size,
                    params.generator.display()
                )))
            }
            Some(d) => d.frame,
            None => Frame::infer(size, encoder.as_ref().map(|e| e.input_size)),
        };
        if !frame.fits(size) {
            return Err(Error::arg("frame", format!("{frame:?} does not fit a {size} px generator")));
        }
        let model_id = params.model_id.clone().unwrap_or_else(|| {
            params.generator.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        });
        Ok(Context {
            device,
            generator,
            generator_path: params.generator.clone(),
            encoder,
            guide,
            detector,
            frame,
            domain,
            model_id,
            model_sha256: params.model_sha256.clone(),
            stored_mean: loaded.mean_latent,
            computed_mean: OnceCell::new(),
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The W mean truncation pulls toward: the file's `latent_avg`, else computed once.
    pub fn mean_latent(&self) -> Result<&Tensor> {
        if let Some(m) = &self.stored_mean {
            return Ok(m);
        }
        if let Some(m) = self.computed_mean.get() {
            return Ok(m);
        }
        let m = self.generator.mean_latent(MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED)?;
        Ok(self.computed_mean.get_or_init(|| m))
    }

    /// Asks the running operation to stop at its next check; safe from any thread. With nothing
    /// running, the next long operation (detect, encode, optimise, render, transfer) stops at
    /// once: a cancel is pending until an operation returns [`Error::Cancelled`] for it, or
    /// [`Context::clear_cancel`] drops it. A cancel that comes while an operation runs is used
    /// up by it, even when it finished before its next check.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Drops a pending cancel (a host starting a new job after a late Cancel).
    pub fn clear_cancel(&self) {
        self.cancel.store(false, Ordering::SeqCst);
    }

    /// Runs a long operation with the cancel flag as its `cancelled` check: refused at once
    /// when a cancel is pending; a cancel is used up when the operation returns, for it or not
    /// (one that came too late to stop it must not cancel the host's next call).
    pub(crate) fn cancellable<T>(&self, f: impl FnOnce(&dyn Fn() -> bool) -> Result<T>) -> Result<T> {
        let cancelled = || self.cancel.load(Ordering::SeqCst);
        let result = if cancelled() { Err(Error::Cancelled) } else { f(&cancelled) };
        self.clear_cancel();
        result
    }

    /// A handle another thread can keep to cancel this context's running operation.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle(self.cancel.clone())
    }

    pub fn encoder(&self) -> Result<&Encoder> {
        self.encoder.as_ref().ok_or_else(|| {
            Error::arg("encoder", "this context has no e4e encoder: create it from an e4e checkpoint or a model set")
        })
    }

    /// Drops the encoder (1.1 GB for FFHQ) once a one-shot job has its latent, and hands its
    /// memory back to the system; later `encode` calls then fail with a clear error.
    pub fn release_encoder(&mut self) {
        if self.encoder.take().is_some() {
            crate::memory::release_free();
        }
    }

    pub fn guide(&self) -> Result<&ClipGuide> {
        self.guide.as_ref().ok_or_else(|| {
            Error::arg("clip", "this context has no CLIP model: give a CLIP file and its vocab, or a model set")
        })
    }

    /// The domain's default edit layer, else the 16 px conv the method favours.
    pub fn default_layer(&self) -> LayerId {
        self.domain.as_ref().map(|d| d.default_layer).unwrap_or(LayerId::Convs(3))
    }

    /// What a layer argument (`--layer`, the ABI's `layer`) names: the layers to shift, and
    /// whether a probe is to choose them instead ("auto"). None or "auto" give the default layer.
    pub fn layer_choice(&self, name: Option<&str>) -> Result<(Vec<LayerId>, bool)> {
        let auto = crate::edit::optimize::is_auto_layer(name);
        match name {
            Some(n) if !auto => Ok((crate::edit::optimize::parse_layers(&self.generator, n)?, false)),
            _ => Ok((vec![self.default_layer()], auto)),
        }
    }

    pub fn default_lambda2(&self) -> f64 {
        self.domain.as_ref().map(|d| d.default_lambda2).unwrap_or(optimize::DEFAULT_LAMBDA2)
    }

    /// Photo → W+ with e4e. The whole view is the picture; it is resized to the encoder's
    /// input (whose aspect is the frame's).
    pub fn encode(&self, view: &ImageView) -> Result<Latent> {
        let enc = self.encoder()?;
        self.cancellable(|cancelled| {
            let size = (enc.input_size.height as i64, enc.input_size.width as i64);
            let wplus = encode::invert(&enc.net, enc.latent_avg.as_ref(), view, size, cancelled)?;
            // One forward pass: a cancel during it stops the job here.
            if cancelled() {
                return Err(Error::Cancelled);
            }
            Latent::new(&self.generator, wplus.f_squeeze_dim(0)?)
        })
    }

    /// Renders `latent` at `strengths` with `shifts` (see [`crate::edit::render`]), at the
    /// generator's full size; cancellable between batches.
    pub fn render(
        &self,
        latent: &Latent,
        shifts: &[(&Shift, f64)],
        strengths: &[f64],
        max_batch: usize,
    ) -> Result<Tensor> {
        self.cancellable(|cancelled| {
            crate::edit::render::render_with(
                &self.generator,
                latent,
                shifts,
                strengths,
                max_batch,
                &crate::models::stylegan2::Synthesis::default(),
                cancelled,
            )
        })
    }

    /// Crops (B, 3, S, S) generator output to the frame and, when `size` (w, h) is given,
    /// resizes it there (antialiased) so a host can paste it back over its selection. A render
    /// stopped at a smaller side has the frame scaled to it.
    pub fn to_frame(&self, images: &Tensor, size: Option<(u32, u32)>) -> Result<Tensor> {
        let side = images.size().last().copied().unwrap_or(0) as u32;
        let f = self.frame.scaled(self.generator.config.size as u32, side);
        let cropped = f.crop(images)?;
        match size {
            Some((w, h)) if (w, h) != (f.width, f.height) => {
                if w == 0 || h == 0 || w > encode::MAX_SIDE || h > encode::MAX_SIDE {
                    return Err(Error::arg("size", format!("{w}×{h} is not within 1..={} per side", encode::MAX_SIDE)));
                }
                Ok(cropped.f_internal_upsample_bilinear2d_aa([h as i64, w as i64], false, None, None)?)
            }
            _ => Ok(cropped),
        }
    }

    /// Learns shifts (see [`optimize::optimize`]); cancel through [`Context::cancel`] or the
    /// callback. Records the model's identity in each shift.
    pub fn optimize(
        &self,
        latents: &[&Latent],
        params: &OptimizeParams,
        progress: &mut dyn FnMut(&Progress) -> bool,
    ) -> Result<Vec<Shift>> {
        let guide = self.guide()?;
        let mut shifts = self.cancellable(|cancelled| {
            optimize::optimize(&self.generator, guide, latents, params, cancelled, progress)
        })?;
        for s in &mut shifts {
            s.meta.insert("model".into(), self.model_id.clone());
            if let Some(h) = &self.model_sha256 {
                s.meta.insert("model_sha256".into(), h.clone());
            }
            s.meta.insert("generator_size".into(), self.generator.config.size.to_string());
        }
        Ok(shifts)
    }

    /// Quality figures of `shifts` per strength over `latents` (see [`crate::edit::eval`]).
    pub fn evaluate(
        &self,
        latents: &[Latent],
        shifts: &[(&Shift, f64)],
        params: &crate::edit::eval::EvalParams,
        fid: Option<&crate::edit::eval::Fid>,
    ) -> Result<Vec<crate::edit::eval::Row>> {
        crate::edit::eval::evaluate(&self.generator, self.guide()?, self.frame, latents, shifts, params, fid)
    }

    /// Cosine similarity between a picture (official CLIP preprocessing) and a text.
    pub fn clip_score(&self, view: &ImageView, texts: &[&str]) -> Result<Vec<f32>> {
        self.guide()?.score(view, texts)
    }
}

/// The domain of an e4e checkpoint from the dataset it was trained on (`opts.dataset_type`:
/// `ffhq_encode`, `cars_encode`, `horse_encode`): the built-in model set's frame, alignment and
/// editing defaults, the frame scaled to a `size` px generator. None for a file without `opts`
/// or a dataset no model set covers.
pub fn domain_of_checkpoint(ck: &Checkpoint, size: u32) -> Result<Option<Domain>> {
    let Some(dataset) = e4e::opts_dataset_type(ck) else { return Ok(None) };
    let set = match dataset.split('_').next().unwrap_or_default() {
        "ffhq" | "celeba" | "celebs" => "ffhq",
        "cars" => "car",
        "horse" | "horses" => "horse",
        _ => return Ok(None),
    };
    let Some(mut d) = crate::store::Manifest::builtin()?.set(set)?.domain.clone() else { return Ok(None) };
    if d.generator_size != size {
        d.frame = d.frame.scaled(d.generator_size, size);
        d.generator_size = size;
    }
    Ok(Some(d))
}

fn load_encoder(ck: &Checkpoint, g: &Generator, domain: Option<&Domain>, device: Device) -> Result<Encoder> {
    let net = Encoder4Editing::load_from(ck, device)?;
    if net.n_styles() != g.n_latent() || net.style_dim() != g.style_dim() {
        return Err(Error::Mismatch(format!(
            "encoder {} predicts {}×{} codes, the generator's W+ is {}×{}",
            ck.path().display(),
            net.n_styles(),
            net.style_dim(),
            g.n_latent(),
            g.style_dim()
        )));
    }
    let latent_avg = e4e::latent_avg(ck, &net.config, device)?;
    if latent_avg.is_none() {
        return Err(Error::MissingTensor { path: ck.path().to_path_buf(), key: "latent_avg".into() });
    }
    let input_size = match domain {
        Some(d) => d.encoder_input,
        None => Size::encoder_input_for(e4e::opts_dataset_type(ck).as_deref()),
    };
    Ok(Encoder { net, latent_avg, input_size })
}
