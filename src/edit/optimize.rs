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

use tch::{nn, nn::OptimizerConfig, Kind, Tensor};

use crate::edit::guide::{clip_distance, ClipGuide};
use crate::edit::loss::{change_outside, outside_weight, separation, similarities, sum_per_sample};
pub use crate::edit::params::*;
pub use crate::edit::probe::LayerProbe;
use crate::edit::probe::{probe_candidates, rank_layers};
use crate::edit::shift::{target_fingerprint, Part, Target};
pub use crate::edit::shift::{Method, ShiftMeta};
use crate::edit::{Latent, Shift};
use crate::error::{Error, Result};
use crate::layer::LayerId;
use crate::models::clip::normalize;
use crate::models::stylegan2::{Generator, Synthesis};
use crate::random::seeded_normal;

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
                // CLIP reads them after its own cleaning ("Big  Nose" is "big nose").
                .find(|&(i, j)| {
                    crate::tokenizer::clean_text(&params.prompts[i]) == crate::tokenizer::clean_text(&params.prompts[j])
                })
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
    let learn = |probe: &OptimizeParams| optimize_fixed(g, guide, latents, probe, cancelled, &mut |_| true);
    rank_layers(g, latents, params, auto, &learn)
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
    let mut last = Progress { step: 0, total: params.steps, loss: f32::NAN, clip_sim: f32::NAN, picture: None };
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

        let preview = params.preview_every > 0 && (step == 1 || step % params.preview_every == 0);
        if preview || step % params.progress_every.max(1) == 0 || step == params.steps {
            let l = (total.f_double_value(&[])? / batch) as f32;
            if !l.is_finite() {
                return Err(Error::Diverged(format!(
                    "the loss became {l} at step {step}: lower the learning rate ({}) or the strength ({})",
                    params.lr, params.strength
                )));
            }
            let sim =
                tch::no_grad(|| clip_distance(&features, &setup.text))?.f_mean(Kind::Float)?.f_double_value(&[])?;
            let picture = match preview {
                true => Some(img.f_narrow(0, 0, 1)?.f_detach()?),
                false => None,
            };
            last = Progress { step, total: params.steps, loss: l, clip_sim: (1.0 - sim) as f32, picture };
            if !progress(&last) {
                return Err(Error::Cancelled);
            }
        }
    }
    Ok(last)
}
