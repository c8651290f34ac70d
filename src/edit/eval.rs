//! Quality figures of an edit, as the paper reports them: over a set of latents (sampled seeds
//! or encoded photos), at each strength k, the CLIP similarity of `G_{θ+k·x}(w)` to the prompt
//! and its gain over k = 0, the mean change outside a region M, and, given the FID Inception
//! network, the Fréchet Inception Distance of the edited set against a reference set (the
//! unedited renders by default, or a folder of real pictures).
//!
//! FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
//! Equilibrium", NeurIPS 2017) is `‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^{1/2})` over the
//! networks' pool features. The matrix square root is taken as `(Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}`,
//! which has the same trace and is symmetric, so two symmetric eigendecompositions in float64
//! give it exactly where the sets are small and the covariances singular.

use tch::{Device, Kind, Tensor};

use crate::domain::Frame;
use crate::edit::guide::ClipGuide;
use crate::edit::loss::{outside_weight, similarities};
use crate::edit::optimize::check_region;
use crate::edit::{render, Latent, Shift};
use crate::error::{Error, Result};
use crate::models::inception::Inception;
use crate::models::stylegan2::Generator;

#[derive(Debug, Clone)]
pub struct EvalParams {
    /// The text the CLIP similarity is measured against.
    pub prompt: String,
    pub strengths: Vec<f64>,
    /// The region the edit may change, in generator pixels; None = every change counts.
    pub region: Option<[f32; 4]>,
    /// Images per generator pass.
    pub max_batch: usize,
}

/// One strength's figures, each a mean over the latents.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub strength: f64,
    /// Cosine similarity of the render to the prompt.
    pub clip_sim: f64,
    /// `clip_sim` minus that of the unedited render (k = 0).
    pub clip_gain: f64,
    /// Mean |G_k − G_0| outside M, in 8-bit levels (0–255).
    pub change_outside: f64,
    /// Against the reference set, when an Inception network is given.
    pub fid: Option<f64>,
}

/// Mean and covariance of a set's features, float64.
pub struct Statistics {
    pub mean: Tensor,
    pub cov: Tensor,
    pub count: usize,
}

impl Statistics {
    /// Of (N, D) features, N ≥ 2 (the covariance is unbiased, as the reference FID code's).
    pub fn of(features: &Tensor) -> Result<Statistics> {
        let (n, _) = features.size2()?;
        if n < 2 {
            return Err(Error::arg("fid", format!("{n} pictures: FID needs at least 2 on each side")));
        }
        let f = features.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?;
        let mean = f.f_mean_dim([0i64].as_slice(), false, None::<Kind>)?;
        let centred = f.f_sub(&mean)?;
        let cov = centred.f_transpose(0, 1)?.f_matmul(&centred)?.f_div_scalar((n - 1) as f64)?;
        Ok(Statistics { mean, cov, count: n as usize })
    }
}

impl Statistics {
    /// Writes mean, covariance and count (float64 safetensors, atomically): a reference set's
    /// statistics kept for later runs.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let count = Tensor::f_from_slice(&[self.count as f64])?;
        let bytes = double_safetensors(&[("mean", &self.mean), ("cov", &self.cov), ("count", &count)])?;
        crate::io::write_atomic(path, &bytes)
    }

    /// What [`Statistics::save`] wrote, bit for bit (float64 throughout).
    pub fn load(path: &std::path::Path) -> Result<Statistics> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, e.to_string()))?;
        let get = |k: &str| -> Result<Tensor> {
            let t = st.tensor(k).map_err(|e| Error::format(path, format!("`{k}`: {e}")))?;
            if t.dtype() != safetensors::Dtype::F64 {
                return Err(Error::format(path, format!("`{k}` is not float64")));
            }
            let values: Vec<f64> =
                t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
            let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            Ok(Tensor::f_from_slice(&values)?.f_view(shape.as_slice())?)
        };
        let count = get("count")?.f_double_value(&[0])? as usize;
        Ok(Statistics { mean: get("mean")?, cov: get("cov")?, count })
    }
}

/// float64 tensors as safetensors bytes.
fn double_safetensors(tensors: &[(&str, &Tensor)]) -> Result<Vec<u8>> {
    let mut owned = Vec::new();
    for (name, t) in tensors {
        let t = t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?;
        let mut data = vec![0u8; t.numel() * 8];
        t.f_copy_data_u8(&mut data, t.numel())?;
        owned.push((name.to_string(), t.size().iter().map(|&d| d as usize).collect::<Vec<_>>(), data));
    }
    let views = owned
        .iter()
        .map(|(n, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F64, shape.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Internal(format!("safetensors view for `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, &None).map_err(|e| Error::Internal(format!("safetensors serialisation: {e}")))
}

/// The symmetric square root of a symmetric positive semi-definite matrix (negative
/// eigenvalues from rounding are taken as 0).
fn sqrt_psd(m: &Tensor) -> Result<Tensor> {
    let (values, vectors) = m.f_linalg_eigh("L")?;
    let root = values.f_clamp_min(0.0)?.f_sqrt()?;
    Ok(vectors.f_mul(&root.f_unsqueeze(0)?)?.f_matmul(&vectors.f_transpose(0, 1)?)?)
}

/// The Fréchet distance between two Gaussians fitted to feature sets.
pub fn frechet_distance(a: &Statistics, b: &Statistics) -> Result<f64> {
    if a.mean.size() != b.mean.size() {
        return Err(Error::arg("fid", format!("feature widths differ: {:?} and {:?}", a.mean.size(), b.mean.size())));
    }
    let d = a.mean.f_sub(&b.mean)?;
    let mean_term = d.f_dot(&d)?.f_double_value(&[])?;
    let s = sqrt_psd(&a.cov)?;
    let inner = s.f_matmul(&b.cov)?.f_matmul(&s)?;
    // Symmetrise against rounding before the eigendecomposition.
    let inner = inner.f_add(&inner.f_transpose(0, 1)?)?.f_mul_scalar(0.5)?;
    let cross = inner.f_linalg_eigvalsh("L")?.f_clamp_min(0.0)?.f_sqrt()?.f_sum(Kind::Double)?.f_double_value(&[])?;
    let traces = a.cov.f_trace()?.f_double_value(&[])? + b.cov.f_trace()?.f_double_value(&[])?;
    // Tiny negative values are rounding of a zero distance.
    Ok((mean_term + traces - 2.0 * cross).max(0.0))
}

/// FID's side of an evaluation: the network and the reference set's statistics (None = the
/// unedited renders of the evaluated latents).
pub struct Fid<'a> {
    pub net: &'a Inception,
    pub reference: Option<Statistics>,
}

/// Renders every latent at every strength with `shifts` (plus k = 0) and measures the rows,
/// in the order of `params.strengths`: [`measure`], then [`rows`].
pub fn evaluate(
    g: &Generator,
    guide: &ClipGuide,
    frame: Frame,
    latents: &[Latent],
    shifts: &[(&Shift, f64)],
    params: &EvalParams,
    fid: Option<&Fid>,
) -> Result<Vec<Row>> {
    let indexed: Vec<(usize, &Latent)> = latents.iter().enumerate().collect();
    let measured = measure(g, guide, frame, &indexed, shifts, params, fid.map(|f| f.net), &|| false)?;
    rows(&params.strengths, &measured, fid.is_some(), fid.and_then(|f| f.reference.as_ref()))
}

/// What was measured of one picture of an evaluated set: its index in the set, and per strength
/// (k = 0 first, then the strengths as given) the CLIP similarity to the prompt, the mean
/// change outside M (8-bit levels) and, when FID is measured, the Inception pool features.
/// Kept per picture, so pictures measured apart (shards) give the table the whole set gives,
/// bit for bit.
#[derive(Debug)]
pub struct Measured {
    pub index: usize,
    pub clip: Vec<f64>,
    pub change: Vec<f64>,
    /// (S, D) float32 on the CPU.
    pub features: Option<Tensor>,
}

/// Measures each `(index, latent)` at k = 0 and `params.strengths` (see [`Measured`]), with
/// `net` for FID's features; `cancelled` is asked between pictures.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    g: &Generator,
    guide: &ClipGuide,
    frame: Frame,
    latents: &[(usize, &Latent)],
    shifts: &[(&Shift, f64)],
    params: &EvalParams,
    net: Option<&Inception>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<Measured>> {
    if latents.is_empty() {
        return Err(Error::arg("latents", "none given: name seeds or a folder of latents"));
    }
    if params.strengths.is_empty() {
        return Err(Error::arg("strengths", "the list is empty"));
    }
    if params.prompt.trim().is_empty() {
        return Err(Error::arg("prompt", "is empty: give the text the edit was learnt for"));
    }
    check_region(params.region)?;
    if let Some(r) = params.region {
        // The change outside M is a mean over what lies outside: a region holding the whole
        // frame leaves only its own soft edge, a figure of nothing.
        let (x2, y2) = ((frame.left + frame.width) as f32, (frame.top + frame.height) as f32);
        if r[0] <= frame.left as f32 && r[1] <= frame.top as f32 && r[2] >= x2 && r[3] >= y2 {
            return Err(Error::arg(
                "region",
                format!("{r:?} holds the whole frame: nothing lies outside it to measure (leave --region out to count every change)"),
            ));
        }
    }
    let text = guide.text_features(&[params.prompt.as_str()], false)?;
    // Index 0 is the unedited render, then the strengths as given.
    let ks: Vec<f64> = std::iter::once(0.0).chain(params.strengths.iter().copied()).collect();
    // Only the domain's frame is the picture (cars: rows 64..448 of the 512² output).
    let f = frame;
    let in_frame = Tensor::f_zeros([1, 1, g.config.size, g.config.size], (Kind::Float, g.device()))?;
    let _ = in_frame
        .f_narrow(2, f.top as i64, f.height as i64)?
        .f_narrow(3, f.left as i64, f.width as i64)?
        .f_fill_(1.0)?;
    let keep = outside_weight(g, params.region, g.config.size)?.f_mul(&in_frame)?;
    let keep_area = keep.f_sum(Kind::Double)?.f_double_value(&[])?.max(1e-8) * 3.0;
    let mut out = Vec::with_capacity(latents.len());
    for &(index, latent) in latents {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let images = render(g, latent, shifts, &ks, params.max_batch)?;
        out.push(tch::no_grad(|| -> Result<Measured> {
            // CLIP sees the renders as the loop did (its figures match the shift's metadata); the
            // change and FID see them as users do, clamped to the picture range.
            let features = guide.image_features(&guide.generator_input(&images)?)?;
            let pictures = images.f_clamp(-1.0, 1.0)?;
            let base = pictures.f_narrow(0, 0, 1)?;
            let weighted = pictures.f_sub(&base)?.f_abs()?.f_mul(&keep)?;
            let outside = weighted.f_flatten(1, -1)?.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?;
            let outside = Vec::<f64>::try_from(outside)?;
            let clip = similarities(&features, &text.f_expand_as(&features)?)?;
            // [-1, 1] → 8-bit levels.
            let change = outside.iter().map(|o| o / keep_area * 127.5).collect();
            let features = match net {
                Some(net) => {
                    // As 8-bit pictures, like the reference set's files: identical content, FID 0.
                    let pictures = pictures.f_add_scalar(1.0)?.f_mul_scalar(127.5)?.f_round()?;
                    let pictures = pictures.f_div_scalar(127.5)?.f_sub_scalar(1.0)?;
                    Some(net.features(&frame.crop(&pictures)?)?.f_to_device(Device::Cpu)?)
                }
                None => None,
            };
            Ok(Measured { index, clip, change, features })
        })?);
    }
    Ok(out)
}

/// The table's rows (the order of `strengths`, k = 0 left out) from every picture's measures,
/// summed in the order of their indices; with `fid`, the Fréchet distance of each strength's
/// features against `reference` (None: the unedited renders).
pub fn rows(strengths: &[f64], measured: &[Measured], fid: bool, reference: Option<&Statistics>) -> Result<Vec<Row>> {
    let n = strengths.len() + 1;
    let mut order: Vec<&Measured> = measured.iter().collect();
    order.sort_by_key(|m| m.index);
    if let Some(m) = order.iter().find(|m| m.clip.len() != n || m.change.len() != n) {
        return Err(Error::arg(
            "measures",
            format!("picture {} has {} values for {n} strengths", m.index, m.clip.len()),
        ));
    }
    let (mut sims, mut changes) = (vec![0.0; n], vec![0.0; n]);
    for m in &order {
        for i in 0..n {
            sims[i] += m.clip[i];
            changes[i] += m.change[i];
        }
    }
    let fids: Vec<Option<f64>> = match fid {
        true => {
            let features = order
                .iter()
                .map(|m| {
                    m.features.as_ref().ok_or_else(|| Error::arg("fid", format!("picture {} has no features", m.index)))
                })
                .collect::<Result<Vec<_>>>()?;
            let stats = (0..n as i64)
                .map(|i| {
                    let rows = features.iter().map(|f| f.f_narrow(0, i, 1)).collect::<Result<Vec<_>, _>>()?;
                    Statistics::of(&Tensor::f_cat(&rows, 0)?)
                })
                .collect::<Result<Vec<_>>>()?;
            let reference = reference.unwrap_or(&stats[0]);
            stats.iter().map(|s| frechet_distance(s, reference).map(Some)).collect::<Result<_>>()?
        }
        false => vec![None; n],
    };
    let count = order.len() as f64;
    Ok((1..n)
        .map(|i| Row {
            strength: strengths[i - 1],
            clip_sim: sims[i] / count,
            clip_gain: (sims[i] - sims[0]) / count,
            change_outside: changes[i] / count,
            fid: fids[i],
        })
        .collect())
}

/// Inception features of pictures of any sizes, each (3, H, W) in [-1, 1], in batches of
/// `batch` pictures of one size.
pub fn picture_features(net: &Inception, pictures: &[Tensor], batch: usize) -> Result<Tensor> {
    let mut out = Vec::with_capacity(pictures.len());
    let mut i = 0;
    while i < pictures.len() {
        let size = pictures[i].size();
        let mut j = i + 1;
        while j < pictures.len() && j - i < batch.max(1) && pictures[j].size() == size {
            j += 1;
        }
        let b = Tensor::f_stack(&pictures[i..j], 0)?;
        out.push(tch::no_grad(|| net.features(&b))?.f_to_device(Device::Cpu)?);
        i = j;
    }
    if out.is_empty() {
        return Err(Error::arg("reference", "holds no pictures"));
    }
    Ok(Tensor::f_cat(&out, 0)?)
}

/// The rows as the paper's table: one line per strength (markdown).
pub fn table(rows: &[Row]) -> String {
    let with_fid = rows.iter().any(|r| r.fid.is_some());
    let mut out = String::from("| k | CLIP sim | CLIP gain | change outside M (levels) |");
    out += if with_fid { " FID |\n|---:|---:|---:|---:|---:|\n" } else { "\n|---:|---:|---:|---:|\n" };
    for r in rows {
        out += &format!("| {:+} | {:.4} | {:+.4} | {:.2} |", r.strength, r.clip_sim, r.clip_gain, r.change_outside);
        if with_fid {
            out += &match r.fid {
                Some(f) => format!(" {f:.3} |"),
                None => " – |".into(),
            };
        }
        out += "\n";
    }
    out
}
