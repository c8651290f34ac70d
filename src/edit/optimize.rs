//! The paper's optimisation: learn a shift `x` of ONE generator conv's raw weight so that CLIP
//! finds the edited image closer to the prompt, everything else frozen:
//!
//! `L = λ1·(1 − cos(E_I(G_{θ+k·x}(w)), E_T(T))) + λ2·‖x‖₂`, Adam on `x` only.
//!
//! Beyond the paper, each optional and off by default: several layers shifted jointly (one
//! `x_l` per layer, one optimiser, `λ2·Σ_l ‖x_l‖₂`); a preservation term `λ3·` the mean squared
//! image change outside a region; and for several prompts on one picture a separation term
//! `λ4·Σ_{i<j} cos²(ΔG_i, ΔG_j)` that keeps the prompts' image changes apart, so their shifts
//! can be applied alone or together.
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
use crate::edit::shift::{target_fingerprint, Part, Target};
use crate::edit::{Latent, Shift};
use crate::error::{Error, Result};
use crate::layer::LayerId;
use crate::models::clip::normalize;
use crate::models::stylegan2::{Generator, Synthesis};
use crate::random::seeded_normal;

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

/// One candidate of a layer probe.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerProbe {
    pub layer: LayerId,
    /// Mean CLIP similarity gain over the batch after the probe's steps.
    pub gain: f64,
    pub cost: f64,
    /// gain / cost, the ranking key.
    pub score: f64,
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
    pub loss: f32,
    pub clip_sim: f32,
}

/// What stays fixed during the loop: computed once, before the first step.
struct Setup {
    /// What the variables move, one variable each: the shifted layers, or W+.
    targets: Vec<Target>,
    /// The start codes, one per sample (B, n_latent, style_dim).
    w0: Tensor,
    /// Text features of each sample's prompt (B, D).
    text: Tensor,
    /// Image features of the unedited images (B, D).
    original: Tensor,
    /// `normalize(E_T(T) − E_T(N))` for a directional loss.
    direction: Option<Tensor>,
    sim_before: Vec<f64>,
    /// The unedited images (B, 3, s, s) at the loop's side, when a term compares against them
    /// (λ3 or λ4 > 0).
    unedited: Option<Tensor>,
    /// The preservation term's weight map 1 − M (1, 1, s, s), when λ3 > 0.
    keep: Option<Tensor>,
}

impl Setup {
    fn new(g: &Generator, guide: &ClipGuide, latents: &[&Latent], params: &OptimizeParams) -> Result<Setup> {
        let n = params.prompts.len().max(latents.len());
        if latents.is_empty()
            || (latents.len() != 1 && latents.len() != n)
            || (params.prompts.len() != 1 && params.prompts.len() != n)
        {
            return Err(Error::arg(
                "batch",
                format!(
                    "{} prompts and {} latents: give one of each, or N of one and 1 or N of the other",
                    params.prompts.len(),
                    latents.len()
                ),
            ));
        }
        if params.lambda4 > 0.0 && (latents.len() != 1 || params.prompts.len() < 2) {
            return Err(Error::arg(
                "lambda4",
                format!(
                    "the separation term keeps several prompts' changes of ONE picture apart: give one latent and \
                     two or more prompts ({} latents, {} prompts given)",
                    latents.len(),
                    params.prompts.len()
                ),
            ));
        }
        if params.lambda4 > 0.0 {
            if let Some((i, j)) = (0..params.prompts.len())
                .flat_map(|i| (i + 1..params.prompts.len()).map(move |j| (i, j)))
                .find(|&(i, j)| params.prompts[i].trim() == params.prompts[j].trim())
            {
                return Err(Error::arg(
                    "prompts",
                    format!(
                        "prompts {} and {} are the same (`{}`): their changes cannot be kept apart",
                        i + 1,
                        j + 1,
                        params.prompts[i]
                    ),
                ));
            }
        }
        let targets: Vec<Target> = match params.method {
            Method::Shift => {
                let mut t =
                    params.layers.iter().map(|&l| Ok(Target::Layer(g.layer(l)?.id))).collect::<Result<Vec<_>>>()?;
                // In the order a `Shift` keeps its parts.
                t.sort();
                t
            }
            Method::Latent => vec![Target::WPlus],
        };
        let nb = n as i64;
        let w0 = Tensor::f_stack(&latents.iter().map(|l| l.wplus.shallow_clone()).collect::<Vec<_>>(), 0)?
            .f_expand([nb, g.n_latent(), g.style_dim()], false)?
            .f_contiguous()?;
        let prompts: Vec<&str> = params.prompts.iter().map(String::as_str).collect();
        let text = guide.text_features(&prompts, params.truncate)?.f_expand([nb, -1], false)?;
        let features_of = |img: &Tensor| tch::no_grad(|| guide.image_features(&guide.generator_input(img)?));
        let unedited = tch::no_grad(|| g.synthesis_with(&w0, &[], &params.synthesis))?;
        let original = features_of(&unedited)?;
        let direction = match &params.neutral {
            Some(neutral) => {
                let nf = guide.text_features(&[neutral.as_str()], params.truncate)?;
                Some(normalize(&text.f_sub(&nf)?)?)
            }
            None => None,
        };
        let sim_before = if params.synthesis == Synthesis::default() {
            similarities(&original, &text)?
        } else {
            similarities(&features_of(&tch::no_grad(|| g.synthesis(&w0, &[]))?)?, &text)?
        };
        let keep =
            if params.lambda3 > 0.0 { Some(outside_weight(g, params.region, unedited.size()[2])?) } else { None };
        let unedited = (params.lambda3 > 0.0 || params.lambda4 > 0.0).then_some(unedited);
        Ok(Setup { targets, w0, text, original, direction, sim_before, unedited, keep })
    }

    fn batch(&self) -> i64 {
        self.w0.size()[0]
    }

    fn clip_term(&self, features: &Tensor) -> Result<Tensor> {
        match &self.direction {
            Some(d) => clip_distance(&features.f_sub(&self.original)?.f_add_scalar(1e-8)?, d),
            None => clip_distance(features, &self.text),
        }
    }

    /// Each variable's start: zero (or a seeded normal scaled to the weight's std) for a layer,
    /// the codes themselves for W+.
    fn initial(&self, g: &Generator, params: &OptimizeParams) -> Result<Vec<Tensor>> {
        let device = g.device();
        self.targets
            .iter()
            .enumerate()
            .map(|(i, &target)| {
                let shape = target.shape(g)?;
                let mut var_shape = vec![self.batch()];
                var_shape.extend(match target {
                    Target::Layer(_) => &shape[1..],
                    Target::WPlus => &shape[..],
                });
                Ok(match target {
                    Target::Layer(l) if params.init_scale > 0.0 => {
                        let std = g.layer_weight(l)?.f_std(false)?.f_double_value(&[])?;
                        // Each layer (by its place in layer order) its own stream, so no two
                        // layers start from the same draw.
                        let seed = params.seed.wrapping_add(i as i64);
                        seeded_normal(&var_shape, seed, device)?.f_mul_scalar(std * params.init_scale)?
                    }
                    Target::WPlus => self.w0.shallow_clone(),
                    Target::Layer(_) => Tensor::f_zeros(var_shape.as_slice(), (Kind::Float, device))?,
                })
            })
            .collect()
    }

    /// The edited images and each sample's regulariser for the variables' current values.
    fn forward(&self, g: &Generator, vars: &[Tensor], params: &OptimizeParams) -> Result<(Tensor, Tensor)> {
        if self.targets == [Target::WPlus] {
            let img = g.synthesis_with(&vars[0], &[], &params.synthesis)?;
            let d2 = sum_per_sample(&vars[0].f_sub(&self.w0)?.f_square()?)?;
            return Ok((img, d2.f_mul_scalar(params.latent_l2)?));
        }
        let mut deltas = Vec::with_capacity(vars.len());
        let mut norm: Option<Tensor> = None;
        for (target, var) in self.targets.iter().zip(vars) {
            let Target::Layer(l) = *target else {
                return Err(Error::Internal("a W+ variable among layer shifts".into()));
            };
            deltas.push((l, var.f_mul_scalar(params.strength)?));
            // ‖x_l‖₂ per sample; the epsilon keeps the gradient finite at x = 0.
            let n = sum_per_sample(&var.f_square()?)?.f_add_scalar(1e-12)?.f_sqrt()?;
            norm = Some(match norm {
                Some(total) => total.f_add(&n)?,
                None => n,
            });
        }
        let refs: Vec<(LayerId, &Tensor)> = deltas.iter().map(|(l, d)| (*l, d)).collect();
        let img = g.synthesis_with(&self.w0, &refs, &params.synthesis)?;
        let norm = norm.ok_or_else(|| Error::Internal("no variable to optimise".into()))?;
        Ok((img, norm.f_mul_scalar(params.lambda2)?))
    }
}

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
fn separation(img: &Tensor, unedited: &Tensor) -> Result<Tensor> {
    let c = change_cosines(img, unedited)?;
    let b = c.size()[0];
    let off = Tensor::f_ones([b, b], (Kind::Float, img.device()))?.f_triu(1)?;
    Ok(c.f_square()?.f_mul(&off)?.f_sum(Kind::Float)?)
}

fn sum_per_sample(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_flatten(1, -1)?.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?)
}

/// Cosine similarity per sample, as f64.
pub(crate) fn similarities(features: &Tensor, text: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(clip_distance(features, text)?.f_neg()?.f_add_scalar(1.0)?.f_to_kind(Kind::Double)?)?)
}

/// Learns one shift per sample. `cancelled` is polled every step (no device sync);
/// `progress` returning false cancels too. Cancelling returns `Error::Cancelled` and no shift.
/// With `auto_layer` the layers are chosen by [`probe_layers`] first, and the ranking is stored
/// in the shifts' metadata (`layer_choice` = auto, `layer_probe`).
pub fn optimize(
    g: &Generator,
    guide: &ClipGuide,
    latents: &[&Latent],
    params: &OptimizeParams,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Vec<Shift>> {
    let (Some(auto), Method::Shift) = (params.auto_layer, params.method) else {
        return optimize_fixed(g, guide, latents, params, cancelled, progress);
    };
    let n = probe_candidates(g, params, &auto)?.len();
    if auto.count == 0 || auto.count > n {
        return Err(Error::arg(
            "auto_layers",
            format!("{} asked for, {n} candidate layers at {}–{} px", auto.count, auto.min_res, auto.max_res),
        ));
    }
    let ranking = probe_layers(g, guide, latents, params, &auto, cancelled)?;
    let text: Vec<String> = ranking.iter().map(|r| format!("{}:{:.6}", r.layer, r.score)).collect();
    log::info!("layer probe ({} steps each), best first: {}", auto.probe_steps, text.join(" "));
    let layers = ranking[..auto.count].iter().map(|r| r.layer).collect();
    let chosen = OptimizeParams { layers, auto_layer: None, ..params.clone() };
    let mut shifts = optimize_fixed(g, guide, latents, &chosen, cancelled, progress)?;
    for s in &mut shifts {
        s.meta.insert("layer_choice".into(), "auto".into());
        s.meta.insert("layer_probe".into(), text.join(","));
    }
    Ok(shifts)
}

/// The `convs.N` a probe tries: those working at `auto.min_res..=auto.max_res` px (and at most
/// at the loop's side); never empty.
fn probe_candidates(g: &Generator, params: &OptimizeParams, auto: &AutoLayer) -> Result<Vec<LayerId>> {
    if auto.probe_steps == 0 || auto.min_res > auto.max_res {
        return Err(Error::arg("auto_layer", format!("{auto:?}: give probe steps ≥ 1 and min_res ≤ max_res")));
    }
    let stop = g.output_size(params.synthesis.stop_at)?;
    let candidates: Vec<LayerId> = g
        .layers()
        .into_iter()
        .map(|l| l.id)
        .filter(|id| matches!(id, LayerId::Convs(_)))
        .filter(|id| (auto.min_res..=auto.max_res.min(stop)).contains(&id.resolution()))
        .collect();
    if candidates.is_empty() {
        return Err(Error::arg(
            "auto_layer",
            format!("no convs.N of this {} px generator works at {}–{} px", g.config.size, auto.min_res, auto.max_res),
        ));
    }
    Ok(candidates)
}

/// The candidates of `auto`, each optimised alone for `auto.probe_steps` steps with `params`
/// otherwise, ranked best first (ties: forward order). Deterministic for a seed.
pub fn probe_layers(
    g: &Generator,
    guide: &ClipGuide,
    latents: &[&Latent],
    params: &OptimizeParams,
    auto: &AutoLayer,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<LayerProbe>> {
    let candidates = probe_candidates(g, params, auto)?;
    // With a region the cost is the preservation term of the probe's shift: the unedited images
    // and 1 − M are the same for every candidate.
    let outside = match params.region {
        Some(_) => {
            let w0 = Tensor::f_stack(&latents.iter().map(|l| l.wplus.shallow_clone()).collect::<Vec<_>>(), 0)?;
            let unedited = tch::no_grad(|| g.synthesis_with(&w0, &[], &params.synthesis))?;
            let keep = outside_weight(g, params.region, unedited.size()[2])?;
            Some((w0, unedited, keep))
        }
        None => None,
    };
    let mut ranking = Vec::with_capacity(candidates.len());
    for layer in candidates {
        let probe = OptimizeParams {
            layers: vec![layer],
            steps: auto.probe_steps,
            progress_every: auto.probe_steps,
            auto_layer: None,
            ..params.clone()
        };
        let shifts = optimize_fixed(g, guide, latents, &probe, cancelled, &mut |_| true)?;
        let meta = |s: &Shift, k: &str| s.meta.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let gain = shifts.iter().map(|s| meta(s, "clip_sim_after") - meta(s, "clip_sim_before")).sum::<f64>()
            / shifts.len() as f64;
        let x = Tensor::f_cat(&shifts.iter().map(|s| s.parts[0].x.shallow_clone()).collect::<Vec<_>>(), 0)?;
        let cost = match &outside {
            Some((w0, unedited, keep)) => tch::no_grad(|| -> Result<f64> {
                let w = w0.f_expand([x.size()[0], -1, -1], false)?;
                let unedited = unedited.f_expand([x.size()[0], -1, -1, -1], false)?;
                let edited = g.synthesis_with(&w, &[(layer, &x.f_mul_scalar(params.strength)?)], &params.synthesis)?;
                Ok(change_outside(&edited, &unedited, keep)?.f_mean(Kind::Float)?.f_double_value(&[])?)
            })?,
            None => {
                let w = g.layer_weight(layer)?;
                let per_sample = x.f_norm()?.f_double_value(&[])? / (shifts.len() as f64).sqrt();
                per_sample / w.f_norm()?.f_double_value(&[])?.max(1e-12)
            }
        };
        let score = gain / cost.max(1e-12);
        log::debug!("probe {layer}: gain {gain:.5}, cost {cost:.5}, score {score:.5}");
        ranking.push(LayerProbe { layer, gain, cost, score });
    }
    // A stable sort keeps forward order among equal scores.
    ranking.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(ranking)
}

fn optimize_fixed(
    g: &Generator,
    guide: &ClipGuide,
    latents: &[&Latent],
    params: &OptimizeParams,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Vec<Shift>> {
    params.validate()?;
    let stop = g.output_size(params.synthesis.stop_at)?;
    if params.method == Method::Shift {
        if let Some(l) = params.layers.iter().find(|l| l.resolution() > stop) {
            return Err(Error::arg(
                "optimize_size",
                format!("{stop} px is below the {} px that `{l}` works at", l.resolution()),
            ));
        }
    }
    // Each step frees and reallocates the same large activations: keep them on the heap.
    let _heap = (g.device() == tch::Device::Cpu).then(crate::memory::HeapReuse::new);
    let setup = Setup::new(g, guide, latents, params)?;
    // The setup's full-size forwards fragmented the heap for sizes the steps may not use
    // (an optimisation at 256 px): start the steps from a trimmed heap.
    crate::memory::release_free();
    let vs = nn::VarStore::new(g.device());
    let vars = setup
        .initial(g, params)?
        .iter()
        .enumerate()
        .map(|(i, init)| Ok(vs.root().f_var_copy(&format!("x{i}"), init)?))
        .collect::<Result<Vec<_>>>()?;
    let last = run_loop(g, guide, &setup, &vs, &vars, params, cancelled, progress)?;

    // The result: each x (or w − w0), checked.
    let results = setup
        .targets
        .iter()
        .zip(&vars)
        .map(|(t, var)| -> Result<Tensor> {
            let r = match t {
                Target::Layer(_) => var.f_detach_copy()?,
                Target::WPlus => var.f_detach()?.f_sub(&setup.w0)?,
            };
            if r.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
                return Err(Error::Diverged(format!(
                    "the optimisation produced NaN or infinite values; lower the learning rate ({})",
                    params.lr
                )));
            }
            Ok(r)
        })
        .collect::<Result<Vec<_>>>()?;
    let sim_after = tch::no_grad(|| -> Result<Vec<f64>> {
        let img = if setup.targets == [Target::WPlus] {
            g.synthesis(&setup.w0.f_add(&results[0])?, &[])?
        } else {
            let deltas = layer_deltas(&setup.targets, &results, params.strength)?;
            let refs: Vec<(LayerId, &Tensor)> = deltas.iter().map(|(l, d)| (*l, d)).collect();
            g.synthesis(&setup.w0, &refs)?
        };
        similarities(&guide.image_features(&guide.generator_input(&img)?)?, &setup.text)
    })?;

    let prints = setup.targets.iter().map(|&t| target_fingerprint(g, t)).collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = setup.targets.iter().map(Target::to_string).collect();
    let mut shifts = Vec::with_capacity(setup.batch() as usize);
    let prompt_of = |i: usize| params.prompts[if params.prompts.len() == 1 { 0 } else { i }].clone();
    for (i, (&clip_sim_before, &clip_sim_after)) in setup.sim_before.iter().zip(&sim_after).enumerate() {
        let mut parts = Vec::with_capacity(results.len());
        for (&target, r) in setup.targets.iter().zip(&results) {
            let x = match target {
                Target::Layer(_) => r.f_narrow(0, i as i64, 1)?,
                Target::WPlus => r.f_get(i as i64)?,
            };
            parts.push(Part { target, x: x.f_contiguous()? });
        }
        let meta = ShiftMeta {
            prompt: prompt_of(i),
            neutral: params.neutral.clone(),
            method: params.method,
            lambda1: params.lambda1,
            lambda2: params.lambda2,
            latent_l2: params.latent_l2,
            steps: params.steps,
            lr: params.lr,
            strength: params.strength,
            seed: params.seed,
            final_loss: last.loss,
            clip_sim_before,
            clip_sim_after,
            synthesis: params.synthesis,
            lambda3: params.lambda3,
            region: params.region,
            lambda4: params.lambda4,
            joint_with: if params.lambda4 > 0.0 {
                (0..params.prompts.len()).filter(|&j| j != i).map(prompt_of).collect()
            } else {
                Vec::new()
            },
        };
        shifts.push(Shift { parts, meta: meta.to_map(&names.join(","), &prints.join(",")) });
    }
    Ok(shifts)
}

/// `(layer, k·x_l)` for each layer target.
fn layer_deltas(targets: &[Target], xs: &[Tensor], strength: f64) -> Result<Vec<(LayerId, Tensor)>> {
    targets
        .iter()
        .zip(xs)
        .filter_map(|(t, x)| match t {
            Target::Layer(l) => Some(x.f_mul_scalar(strength).map(|d| (*l, d)).map_err(Error::from)),
            Target::WPlus => None,
        })
        .collect()
}

/// Adam on the variables for `params.steps` steps; returns the last progress report.
#[allow(clippy::too_many_arguments)]
fn run_loop(
    g: &Generator,
    guide: &ClipGuide,
    setup: &Setup,
    vs: &nn::VarStore,
    vars: &[Tensor],
    params: &OptimizeParams,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Progress> {
    let mut opt = nn::Adam::default().build(vs, params.lr)?;
    let mut last = Progress { step: 0, total: params.steps, loss: f32::NAN, clip_sim: f32::NAN };
    let batch = setup.batch() as f64;
    for step in 1..=params.steps {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let (img, reg) = setup.forward(g, vars, params)?;
        let features = guide.image_features(&guide.generator_input(&img)?)?;
        let mut per_sample = setup.clip_term(&features)?.f_mul_scalar(params.lambda1)?.f_add(&reg)?;
        if let (Some(unedited), Some(keep)) = (&setup.unedited, &setup.keep) {
            per_sample = per_sample.f_add(&change_outside(&img, unedited, keep)?.f_mul_scalar(params.lambda3)?)?;
        }
        let mut total = per_sample.f_sum(Kind::Float)?;
        if let (Some(unedited), true) = (&setup.unedited, params.lambda4 > 0.0) {
            total = total.f_add(&separation(&img, unedited)?.f_mul_scalar(params.lambda4)?)?;
        }
        opt.zero_grad();
        total.f_backward()?;
        opt.step();

        if step % params.progress_every.max(1) == 0 || step == params.steps {
            let l = (total.f_double_value(&[])? / batch) as f32;
            if !l.is_finite() {
                return Err(Error::Diverged(format!(
                    "the loss became {l} at step {step}: lower the learning rate ({}) or the strength ({})",
                    params.lr, params.strength
                )));
            }
            let sim =
                tch::no_grad(|| clip_distance(&features, &setup.text))?.f_mean(Kind::Float)?.f_double_value(&[])?;
            last = Progress { step, total: params.steps, loss: l, clip_sim: (1.0 - sim) as f32 };
            if !progress(&last) {
                return Err(Error::Cancelled);
            }
        }
    }
    Ok(last)
}

/// How a shift was made, as its file records it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftMeta {
    pub prompt: String,
    pub neutral: Option<String>,
    pub method: Method,
    pub lambda1: f64,
    pub lambda2: f64,
    pub latent_l2: f64,
    pub steps: usize,
    pub lr: f64,
    pub strength: f64,
    pub seed: i64,
    pub final_loss: f32,
    pub clip_sim_before: f64,
    pub clip_sim_after: f64,
    pub synthesis: Synthesis,
    pub lambda3: f64,
    pub region: Option<[f32; 4]>,
    pub lambda4: f64,
    /// The other prompts learnt jointly with this one (with λ4 > 0).
    pub joint_with: Vec<String>,
}

impl ShiftMeta {
    /// The file's string metadata, with the targets (`layer`: `convs.3` or `convs.3,convs.5`) and
    /// their fingerprints in the same order.
    pub fn to_map(&self, layer: &str, fingerprint: &str) -> BTreeMap<String, String> {
        let method = match self.method {
            Method::Shift => "shift",
            Method::Latent => "latent",
        };
        let mut meta: BTreeMap<String, String> = [
            ("layer", layer.to_string()),
            ("layer_sha256", fingerprint.to_string()),
            ("prompt", self.prompt.clone()),
            ("method", method.to_string()),
            ("lambda1", self.lambda1.to_string()),
            ("lambda2", self.lambda2.to_string()),
            ("latent_l2", self.latent_l2.to_string()),
            ("steps", self.steps.to_string()),
            ("lr", self.lr.to_string()),
            ("strength", self.strength.to_string()),
            ("seed", self.seed.to_string()),
            ("final_loss", self.final_loss.to_string()),
            ("clip_sim_before", format!("{:.6}", self.clip_sim_before)),
            ("clip_sim_after", format!("{:.6}", self.clip_sim_after)),
            ("library_version", crate::VERSION.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(n) = &self.neutral {
            meta.insert("neutral".into(), n.clone());
        }
        if let Some(s) = self.synthesis.stop_at {
            meta.insert("optimize_size".into(), s.to_string());
        }
        if let Some(c) = self.synthesis.bf16_min_channels {
            meta.insert("bf16_min_channels".into(), c.to_string());
        }
        if self.lambda3 > 0.0 {
            meta.insert("lambda3".into(), self.lambda3.to_string());
            if let Some(r) = self.region {
                meta.insert("region".into(), format!("{},{},{},{}", r[0], r[1], r[2], r[3]));
            }
        }
        if self.lambda4 > 0.0 {
            meta.insert("lambda4".into(), self.lambda4.to_string());
            // A JSON list: prompts may hold commas.
            meta.insert("joint_with".into(), serde_json::to_string(&self.joint_with).unwrap_or_default());
        }
        meta
    }
}
