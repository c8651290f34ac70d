//! The paper's optimisation: learn a shift `x` of ONE generator conv's raw weight so that CLIP
//! finds the edited image closer to the prompt, everything else frozen:
//!
//! `L = λ1·(1 − cos(E_I(G_{θ+k·x}(w)), E_T(T))) + λ2·‖x‖₂`, Adam on `x` only.
//!
//! `k` (the strength used while optimising, default 1) makes the learnt `x` the edit at
//! strength 1, so renders at k = −3..3 read as "less … more". Several prompts or several
//! latents form one batch with one shift per sample (the generator's grouped conv takes
//! per-sample weights); their losses are summed, so each sample's gradient, and Adam's
//! per-element update, is what it would be alone.
//!
//! `Method::Latent` is the StyleCLIP latent-optimisation baseline: W+ is optimised with
//! `λ1·D_clip + λ_l2·‖w − w0‖²` instead, and the result is the W+ direction `w − w0`.
//!
//! With a neutral text the CLIP term is directional (StyleGAN-NADA):
//! `1 − cos(E_I(G_x) − E_I(G_0), E_T(T) − E_T(N))`, which edits only what differs between the
//! two texts.

use std::collections::BTreeMap;

use tch::{nn, nn::OptimizerConfig, Kind, Tensor};

use crate::edit::guide::{clip_distance, ClipGuide};
use crate::edit::shift::{target_fingerprint, Target};
use crate::edit::{Latent, Shift};
use crate::error::{Error, Result};
use crate::models::clip::normalize;
use crate::models::stylegan2::{seeded_normal, Generator, LayerId};

pub const DEFAULT_LAMBDA1: f64 = 10.0;
/// Used when neither the caller nor the model set gives one (the method's range is 0.01–0.1).
pub const DEFAULT_LAMBDA2: f64 = 0.05;
pub const DEFAULT_STEPS: usize = 100;
pub const DEFAULT_LR: f64 = 0.01;
/// StyleCLIP's `l2_lambda` for the latent baseline.
pub const DEFAULT_LATENT_L2: f64 = 0.008;
/// A run longer than this is a typo, not a wish.
pub const MAX_STEPS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// NaviGAN-style weight shift (the paper).
    Shift,
    /// StyleCLIP latent optimisation (the baseline).
    Latent,
}

#[derive(Debug, Clone)]
pub struct OptimizeParams {
    /// One per sample, or one for every latent.
    pub prompts: Vec<String>,
    pub neutral: Option<String>,
    /// Conv whose raw weight is shifted (`convs.3`); ignored by `Method::Latent`.
    pub layer: String,
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
}

impl OptimizeParams {
    pub fn new(prompt: &str, layer: &str) -> Self {
        OptimizeParams {
            prompts: vec![prompt.to_string()],
            neutral: None,
            layer: layer.to_string(),
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
        }
    }

    fn validate(&self) -> Result<()> {
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
        Ok(())
    }
}

/// What the progress callback sees. `loss` and `clip_sim` are means over the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
    pub loss: f32,
    pub clip_sim: f32,
}

/// Learns one shift per sample. `cancelled` is polled every step (no device sync);
/// `progress` returning false cancels too. Cancelling returns `Error::Cancelled` and no shift.
pub fn optimize(
    g: &Generator,
    guide: &ClipGuide,
    latents: &[&Latent],
    params: &OptimizeParams,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Vec<Shift>> {
    params.validate()?;
    let device = g.device();
    let n = params.prompts.len().max(latents.len());
    if latents.is_empty() || (latents.len() != 1 && latents.len() != n) || (params.prompts.len() != 1 && params.prompts.len() != n) {
        return Err(Error::arg(
            "batch",
            format!("{} prompts and {} latents: give one of each, or N of one and 1 or N of the other", params.prompts.len(), latents.len()),
        ));
    }
    let target = match params.method {
        Method::Shift => Target::resolve(g, &params.layer)?,
        Method::Latent => Target::WPlus,
    };
    let nb = n as i64;
    let w0 = Tensor::f_stack(&latents.iter().map(|l| l.wplus.shallow_clone()).collect::<Vec<_>>(), 0)?
        .f_expand([nb, g.n_latent(), g.style_dim()], false)?
        .f_contiguous()?;

    // Everything that does not depend on x is computed once.
    let prompts: Vec<&str> = params.prompts.iter().map(String::as_str).collect();
    let text = guide.text_features(&prompts, params.truncate)?.f_expand([nb, -1], false)?;
    let original = tch::no_grad(|| guide.image_features(&guide.generator_input(&g.synthesis(&w0, &[])?)?))?;
    let direction = match &params.neutral {
        Some(neutral) => {
            let nf = guide.text_features(&[neutral.as_str()], params.truncate)?;
            Some(normalize(&text.f_sub(&nf)?)?)
        }
        None => None,
    };
    let clip_term = |features: &Tensor| -> Result<Tensor> {
        match &direction {
            Some(d) => clip_distance(&features.f_sub(&original)?.f_add_scalar(1e-8)?, d),
            None => clip_distance(features, &text),
        }
    };
    let sim_before: Vec<f64> = Vec::<f64>::try_from(clip_distance(&original, &text)?.f_neg()?.f_add_scalar(1.0)?.f_to_kind(Kind::Double)?)?;

    let vs = nn::VarStore::new(device);
    let shape = target.shape(g)?;
    let mut var_shape = vec![nb];
    var_shape.extend(match target {
        Target::Layer(_) => &shape[1..],
        Target::WPlus => &shape[..],
    });
    let init = match target {
        Target::Layer(l) if params.init_scale > 0.0 => {
            let std = g.layer_weight(l)?.f_std(false)?.f_double_value(&[])?;
            seeded_normal(&var_shape, params.seed, device)?.f_mul_scalar(std * params.init_scale)?
        }
        Target::WPlus => w0.shallow_clone(),
        Target::Layer(_) => Tensor::f_zeros(var_shape.as_slice(), (Kind::Float, device))?,
    };
    let var = vs.root().f_var_copy("x", &init)?;
    let mut opt = nn::Adam::default().build(&vs, params.lr)?;
    let layer: Option<LayerId> = match target {
        Target::Layer(l) => Some(l),
        Target::WPlus => None,
    };
    let mut last = Progress { step: 0, total: params.steps, loss: f32::NAN, clip_sim: f32::NAN };

    for step in 1..=params.steps {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let (img, reg) = match layer {
            Some(l) => {
                let delta = var.f_mul_scalar(params.strength)?;
                let img = g.synthesis(&w0, &[(l, &delta)])?;
                // ‖x‖₂ per sample; the epsilon keeps the gradient finite at x = 0.
                let norm = var.f_square()?.f_flatten(1, -1)?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?.f_add_scalar(1e-12)?.f_sqrt()?;
                (img, norm.f_mul_scalar(params.lambda2)?)
            }
            None => {
                let img = g.synthesis(&var, &[])?;
                let d2 = var.f_sub(&w0)?.f_square()?.f_flatten(1, -1)?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?;
                (img, d2.f_mul_scalar(params.latent_l2)?)
            }
        };
        let features = guide.image_features(&guide.generator_input(&img)?)?;
        let d = clip_term(&features)?;
        let per_sample = d.f_mul_scalar(params.lambda1)?.f_add(&reg)?;
        let loss = per_sample.f_sum(Kind::Float)?;
        opt.zero_grad();
        loss.f_backward()?;
        opt.step();

        if step % params.progress_every.max(1) == 0 || step == params.steps {
            let l = per_sample.f_mean(Kind::Float)?.f_double_value(&[])? as f32;
            let sim = tch::no_grad(|| clip_distance(&features, &text))?.f_mean(Kind::Float)?.f_double_value(&[])?;
            if !l.is_finite() {
                return Err(Error::Internal(format!(
                    "the loss became {l} at step {step}: lower the learning rate ({}) or the strength ({})",
                    params.lr, params.strength
                )));
            }
            last = Progress { step, total: params.steps, loss: l, clip_sim: (1.0 - sim) as f32 };
            if !progress(&last) {
                return Err(Error::Cancelled);
            }
        }
    }

    // The result: x (or w − w0), checked, with the facts of how it was made.
    let result = match layer {
        Some(_) => var.f_detach_copy()?,
        None => var.f_detach()?.f_sub(&w0)?,
    };
    if result.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
        return Err(Error::Internal("the optimisation produced NaN or infinite values; lower the learning rate".into()));
    }
    let sim_after = tch::no_grad(|| -> Result<Vec<f64>> {
        let img = match layer {
            Some(l) => g.synthesis(&w0, &[(l, &result.f_mul_scalar(params.strength)?)])?,
            None => g.synthesis(&w0.f_add(&result)?, &[])?,
        };
        let f = guide.image_features(&guide.generator_input(&img)?)?;
        Ok(Vec::<f64>::try_from(clip_distance(&f, &text)?.f_neg()?.f_add_scalar(1.0)?.f_to_kind(Kind::Double)?)?)
    })?;

    let fingerprint = target_fingerprint(g, target)?;
    let mut shifts = Vec::with_capacity(n);
    for i in 0..n {
        let x = match target {
            Target::Layer(_) => result.f_narrow(0, i as i64, 1)?,
            Target::WPlus => result.f_get(i as i64)?,
        };
        let prompt = &params.prompts[if params.prompts.len() == 1 { 0 } else { i }];
        let mut meta = BTreeMap::new();
        meta.insert("layer".to_string(), target.to_string());
        meta.insert("layer_sha256".to_string(), fingerprint.clone());
        meta.insert("prompt".to_string(), prompt.clone());
        if let Some(nt) = &params.neutral {
            meta.insert("neutral".to_string(), nt.clone());
        }
        let method = match params.method {
            Method::Shift => "shift",
            Method::Latent => "latent",
        };
        for (k, v) in [
            ("method", method.to_string()),
            ("lambda1", params.lambda1.to_string()),
            ("lambda2", params.lambda2.to_string()),
            ("latent_l2", params.latent_l2.to_string()),
            ("steps", params.steps.to_string()),
            ("lr", params.lr.to_string()),
            ("strength", params.strength.to_string()),
            ("seed", params.seed.to_string()),
            ("final_loss", last.loss.to_string()),
            ("clip_sim_before", format!("{:.6}", sim_before[i])),
            ("clip_sim_after", format!("{:.6}", sim_after[i])),
            ("library_version", crate::VERSION.to_string()),
        ] {
            meta.insert(k.to_string(), v);
        }
        shifts.push(Shift { target, x: x.f_contiguous()?, meta });
    }
    Ok(shifts)
}
