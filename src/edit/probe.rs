//! `--layer auto`: a short optimisation of each candidate conv with the edit's own loss and
//! seed, ranked by CLIP gain per unit of cost; [`crate::edit::optimize::optimize`] then learns
//! the winners. Nothing in the loop knows about the probe.

use tch::{Kind, Tensor};

use crate::edit::loss::{change_outside, outside_weight};
use crate::edit::params::{AutoLayer, OptimizeParams};
use crate::edit::{Latent, Shift};
use crate::error::{Error, Result};
use crate::layer::LayerId;
use crate::models::stylegan2::Generator;

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

/// The `convs.N` a probe tries: those working at `auto.min_res..=auto.max_res` px (and at most
/// at the loop's side); never empty.
pub(crate) fn probe_candidates(g: &Generator, params: &OptimizeParams, auto: &AutoLayer) -> Result<Vec<LayerId>> {
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

/// The candidates of `auto`, each learnt alone by `learn` (the loop, for `auto.probe_steps`
/// steps) with `params` otherwise, ranked best first (ties: forward order).
pub fn rank_layers(
    g: &Generator,
    latents: &[&Latent],
    params: &OptimizeParams,
    auto: &AutoLayer,
    learn: &dyn Fn(&OptimizeParams) -> Result<Vec<Shift>>,
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
        let shifts = learn(&probe)?;
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
