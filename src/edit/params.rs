//! What an optimisation is asked to do: its parameters, their defaults and checks, and what it
//! reports while it runs. The loop is [`crate::edit::optimize`]; the layer probe
//! [`crate::edit::probe`].

use crate::edit::shift::Target;
pub use crate::edit::shift::{Method, ShiftMeta};
use crate::error::{Error, Result};
use crate::layer::LayerId;
use crate::models::stylegan2::{Generator, Synthesis};

pub const DEFAULT_LAMBDA1: f64 = 10.0;
/// Used when neither the caller nor the model set gives one (the method's range is 0.01–0.1).
pub const DEFAULT_LAMBDA2: f64 = 0.05;
pub const DEFAULT_STEPS: usize = 100;
pub const DEFAULT_LR: f64 = 0.01;
/// StyleCLIP's `l2_lambda` for the latent baseline.
pub const DEFAULT_LATENT_L2: f64 = 0.008;
/// λ4 of prompts learnt jointly on one picture: enough to keep their changes apart without
/// weakening either (the CLI's `--also`, a plug-in's second prompt).
pub const DEFAULT_LAMBDA4: f64 = 0.3;
/// A run longer than this is a typo, not a wish.
pub const MAX_STEPS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct OptimizeParams {
    /// One per sample, or one for every latent.
    pub prompts: Vec<String>,
    pub neutral: Option<String>,
    /// Convs whose raw weights are shifted, jointly (usually one); ignored by `Method::Latent`.
    pub layers: Vec<LayerId>,
    pub method: Method,
    pub lambda1: f64,
    pub lambda2: f64,
    pub latent_l2: f64,
    pub steps: usize,
    pub lr: f64,
    /// k in θ + k·x while optimising.
    pub strength: f64,
    pub seed: i64,
    /// Std of the random initial shift relative to the weight's std (0 = start at zero).
    pub init_scale: f64,
    /// Cut over-long prompts instead of refusing them.
    pub truncate: bool,
    /// Read the loss back (a device sync) every this many steps for the progress callback.
    pub progress_every: usize,
    /// How the generator runs inside the loop (lower resolution, bf16). The similarities
    /// reported before and after are always of full-resolution fp32 renders.
    pub synthesis: Synthesis,
    /// Weight λ3 of the preservation term (0 = the paper's loss): the mean squared change of
    /// the image outside `region`.
    pub lambda3: f64,
    /// The region the edit may change, [x1, y1, x2, y2] in pixels of the generator's output
    /// (soft-edged); None = the whole picture is preserved (λ3 then weighs every change).
    pub region: Option<[f32; 4]>,
    /// Choose `layers` by a short probe of each candidate first (`--layer auto`).
    pub auto_layer: Option<AutoLayer>,
    /// Weight λ4 of the separation term (several prompts for one picture, learnt jointly): the
    /// squared cosine between each pair of prompts' image changes joins the loss.
    pub lambda4: f64,
    /// Hand the current picture to the progress callback at step 1 and every this many steps
    /// (a host's "picture while it learns"); 0 = never.
    pub preview_every: usize,
}

impl OptimizeParams {
    pub fn new(prompt: &str, layer: LayerId) -> Self {
        OptimizeParams {
            prompts: vec![prompt.to_string()],
            neutral: None,
            layers: vec![layer],
            method: Method::Shift,
            lambda1: DEFAULT_LAMBDA1,
            lambda2: DEFAULT_LAMBDA2,
            latent_l2: DEFAULT_LATENT_L2,
            steps: DEFAULT_STEPS,
            lr: DEFAULT_LR,
            strength: 1.0,
            seed: 0,
            init_scale: 0.0,
            truncate: false,
            progress_every: 1,
            synthesis: Synthesis::default(),
            lambda3: 0.0,
            region: None,
            auto_layer: None,
            lambda4: 0.0,
            preview_every: 0,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let finite_nonneg = |name: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::arg(name, format!("{v} must be a finite number ≥ 0")))
            }
        };
        finite_nonneg("lambda1", self.lambda1)?;
        finite_nonneg("lambda2", self.lambda2)?;
        finite_nonneg("latent_l2", self.latent_l2)?;
        finite_nonneg("init_scale", self.init_scale)?;
        finite_nonneg("lambda3", self.lambda3)?;
        finite_nonneg("lambda4", self.lambda4)?;
        if self.method == Method::Shift {
            if self.layers.is_empty() {
                return Err(Error::arg("layer", "no layer given"));
            }
            if let Some(twice) = self.layers.iter().enumerate().find(|(i, l)| self.layers[..*i].contains(l)) {
                return Err(Error::arg("layer", format!("`{}` is named twice", twice.1)));
            }
        }
        check_region(self.region)?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::arg("lr", format!("{} must be a finite number > 0", self.lr)));
        }
        if !(self.strength.is_finite() && self.strength != 0.0) {
            return Err(Error::arg("strength", format!("{} must be a finite, nonzero number", self.strength)));
        }
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(Error::arg("steps", format!("{} is not in 1..={MAX_STEPS}", self.steps)));
        }
        if self.prompts.is_empty() {
            return Err(Error::arg("prompt", "no prompt given"));
        }
        if self.neutral.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(Error::arg("neutral", "is empty; leave it out for the plain (non-directional) loss"));
        }
        Ok(())
    }
}

/// A region is a box x1 < x2, y1 < y2 of finite numbers (or none).
pub fn check_region(region: Option<[f32; 4]>) -> Result<()> {
    match region {
        Some(r) if !(r.iter().all(|v| v.is_finite()) && r[0] < r[2] && r[1] < r[3]) => {
            Err(Error::arg("region", format!("{r:?} is not a box x1 < x2, y1 < y2")))
        }
        _ => Ok(()),
    }
}

/// Whether a layer argument asks for the probe (`--layer auto`).
pub fn is_auto_layer(name: Option<&str>) -> bool {
    name.map(str::trim) == Some("auto")
}

/// The layers a `--layer convs.3,convs.5` list names, each checked against `g`, none twice.
pub fn parse_layers(g: &Generator, names: &str) -> Result<Vec<LayerId>> {
    Target::resolve_list(g, names)?
        .into_iter()
        .map(|t| match t {
            Target::Layer(l) => Ok(l),
            Target::WPlus => Err(Error::arg(
                "layer",
                format!(
                    "`{names}`: `{}` is not a layer (the latent method optimises W+ by itself)",
                    crate::edit::shift::WPLUS
                ),
            )),
        })
        .collect()
}

/// What the progress callback sees. `loss` and `clip_sim` are means over the batch.
#[derive(Debug)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
    pub loss: f32,
    pub clip_sim: f32,
    /// With `preview_every`: the picture as it is now, (1, 3, S, S) in [-1, 1], the first
    /// sample's whole output at the loop's side (what CLIP saw this step; no extra render).
    pub picture: Option<tch::Tensor>,
}

impl Clone for Progress {
    /// The picture is shared, not copied (a tensor's shallow clone).
    fn clone(&self) -> Self {
        Progress { picture: self.picture.as_ref().map(tch::Tensor::shallow_clone), ..*self }
    }
}

/// `--layer auto`: every `convs.N` whose side is in `min_res..=max_res` (default 8–64 px, the
/// layers that shape a picture) is optimised for `probe_steps` steps; the `count` with the
/// largest CLIP gain per unit of cost win and are learnt jointly, cost being the mean squared
/// change outside `region` when one is given, else ‖x‖ / ‖W‖ (the shift relative to the weight
/// it moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoLayer {
    pub min_res: i64,
    pub max_res: i64,
    pub probe_steps: usize,
    /// How many of the best-ranked layers the shift moves (`--auto-layers`).
    pub count: usize,
}

impl Default for AutoLayer {
    fn default() -> Self {
        AutoLayer { min_res: 8, max_res: 64, probe_steps: 10, count: 1 }
    }
}
