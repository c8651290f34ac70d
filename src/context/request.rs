//! What an edit asks for, as a user gives it, and the one place its optimisation parameters are
//! worked out from the model set: the CLI's `edit` and the ABI's `cs_optimize` (so Python and
//! both plug-ins) fill an [`EditRequest`] and call [`Context::optimize_params`].

use super::{Context, Subject};
use crate::edit::optimize::{self, AutoLayer, Method, OptimizeParams};
use crate::error::{Error, Result};
use crate::models::stylegan2::Synthesis;

/// The largest random start (`init_scale`, in units of the weight's std) a request may ask for.
pub const MAX_INIT_SCALE: f64 = 10.0;

/// An edit as asked for; `None` and zero mean "the model set's default".
#[derive(Debug, Clone)]
pub struct EditRequest {
    /// One per sample (several for one latent are learnt jointly).
    pub prompts: Vec<String>,
    pub neutral: Option<String>,
    /// `convs.3`, `convs.3,convs.5`, or `auto`; None: the model set's layer.
    pub layer: Option<String>,
    /// With `auto`: how many of the best-ranked layers; 0 counts as 1.
    pub auto_layers: usize,
    pub method: Method,
    pub lambda1: f64,
    /// None: the model set's λ2.
    pub lambda2: Option<f64>,
    pub latent_l2: f64,
    pub steps: usize,
    pub lr: f64,
    pub strength: f64,
    pub seed: i64,
    pub init_scale: f64,
    pub truncate: bool,
    pub progress_every: usize,
    /// Optimise on the output stopped at this side; None: the full size, or the flow's side
    /// for a picture that a warp transfer will move (`warp`).
    pub optimize_size: Option<i64>,
    /// The picture will be moved by a warp transfer (a photo's default): the optimisation then
    /// needs no more than the flow's side, unless `optimize_size` or `full_size` says otherwise.
    pub warp: bool,
    /// The paper's full-size objective whatever `warp` says.
    pub full_size: bool,
    pub bf16: bool,
    pub lambda3: f64,
    /// The region the edit may change (generator pixels); None: of a photo, its subject's.
    pub region: Option<[f32; 4]>,
    pub lambda4: f64,
    /// The current picture to the progress callback every this many steps; 0 = never.
    pub preview_every: usize,
}

impl EditRequest {
    pub fn new(prompt: &str) -> EditRequest {
        EditRequest {
            prompts: vec![prompt.to_string()],
            neutral: None,
            layer: None,
            auto_layers: 0,
            method: Method::Shift,
            lambda1: optimize::DEFAULT_LAMBDA1,
            lambda2: None,
            latent_l2: optimize::DEFAULT_LATENT_L2,
            steps: optimize::DEFAULT_STEPS,
            lr: optimize::DEFAULT_LR,
            strength: 1.0,
            seed: 0,
            init_scale: 0.0,
            truncate: false,
            progress_every: 1,
            optimize_size: None,
            warp: false,
            full_size: false,
            bf16: false,
            lambda3: 0.0,
            region: None,
            lambda4: 0.0,
            preview_every: 0,
        }
    }
}

impl Context {
    /// The optimisation an edit request means on this model set: its layer (or the probe of
    /// `auto`), its λ2, the loop's synthesis, and for a photo's `subject` the region the
    /// preservation term keeps the rest outside of.
    pub fn optimize_params(&self, req: &EditRequest, subject: Option<&Subject>) -> Result<OptimizeParams> {
        let (layers, auto) = self.layer_choice(req.layer.as_deref())?;
        if req.auto_layers > 1 && !auto {
            return Err(Error::arg(
                "auto_layers",
                format!(
                    "{}: more than 1 only with layer \"auto\" (name the layers otherwise, e.g. convs.3,convs.5)",
                    req.auto_layers
                ),
            ));
        }
        let size = self.generator.config.size;
        if let Some(s) = req.optimize_size {
            if s > size {
                return Err(Error::arg(
                    "optimize_size",
                    format!("{s} px is more than this generator's {size} px output: give at most {size}"),
                ));
            }
        }
        if let Some(r) = req.region {
            let (lo, hi) = (0.0, size as f32);
            if r.iter().all(|v| v.is_finite()) && (r[2] <= lo || r[3] <= lo || r[0] >= hi || r[1] >= hi) {
                return Err(Error::arg(
                    "region",
                    format!("{r:?} lies outside the generator's {size}×{size} output (its pixels are the region's)"),
                ));
            }
        }
        if !(req.init_scale.is_finite() && req.init_scale <= MAX_INIT_SCALE) {
            return Err(Error::arg(
                "init_scale",
                format!(
                    "{}: the random start is that many times the weight's spread; give at most {MAX_INIT_SCALE}",
                    req.init_scale
                ),
            ));
        }
        let stop_at = match (req.optimize_size, req.full_size, req.warp) {
            (Some(side), _, _) => Some(side),
            (None, false, true) => Some(self.flow_side()),
            _ => None,
        };
        let region = match (req.region, subject) {
            (Some(r), _) => Some(r),
            (None, Some(s)) if req.lambda3 > 0.0 => self.subject_region(s)?,
            (None, _) => None,
        };
        Ok(OptimizeParams {
            prompts: req.prompts.clone(),
            neutral: req.neutral.clone(),
            layers,
            method: req.method,
            lambda1: req.lambda1,
            lambda2: req.lambda2.unwrap_or_else(|| self.default_lambda2()),
            latent_l2: req.latent_l2,
            steps: req.steps,
            lr: req.lr,
            strength: req.strength,
            seed: req.seed,
            init_scale: req.init_scale,
            truncate: req.truncate,
            progress_every: req.progress_every.max(1),
            synthesis: Synthesis { stop_at, bf16_min_channels: req.bf16.then_some(Synthesis::BF16_MIN_CHANNELS) },
            lambda3: req.lambda3,
            region,
            auto_layer: auto.then(|| AutoLayer { count: req.auto_layers.max(1), ..AutoLayer::default() }),
            lambda4: req.lambda4,
            preview_every: req.preview_every,
        })
    }
}
