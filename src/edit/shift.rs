//! A learned edit direction plus the facts of how it was made. Usually a shift of the RAW
//! weight of one modulated conv (the paper's method), or of several convs learnt together
//! (one part each); the StyleCLIP latent baseline gives a W+ direction instead, which renders
//! the same way (`w + k·Δw`).
//!
//! File form: safetensors with string metadata, at least `layer` and `layer_sha256`. A shift of
//! one target holds the float32 tensor `shift` and `layer` names it (`convs.3`, or `wplus` for a
//! latent direction); a shift of several holds `shift.<layer>` for each and `layer` lists them,
//! comma-separated (`convs.3,convs.5`). `layer_sha256` is a fingerprint of each generator weight
//! the shift was learned against, in the same order, so a shift is refused by another generator
//! even when the shapes agree.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::io::{check_finite, safetensors_bytes, write_atomic};
use crate::layer::LayerId;
use crate::models::stylegan2::{Generator, Synthesis};

/// Name of the W+ target in files and the C ABI.
pub const WPLUS: &str = "wplus";

/// What a shift moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The raw weight of one modulated conv.
    Layer(LayerId),
    /// The W+ code itself (StyleCLIP latent optimisation).
    WPlus,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Layer(l) => write!(f, "{l}"),
            Target::WPlus => f.write_str(WPLUS),
        }
    }
}

impl Target {
    /// `convs.3`, `conv1`, `to_rgbs.1`, … or `wplus`, checked against `g`.
    pub fn resolve(g: &Generator, name: &str) -> Result<Target> {
        if name.trim() == WPLUS {
            Ok(Target::WPlus)
        } else {
            Ok(Target::Layer(g.layer_by_name(name)?.id))
        }
    }

    /// A comma-separated list of targets (`convs.3,convs.5`), each checked against `g`, none twice.
    pub fn resolve_list(g: &Generator, names: &str) -> Result<Vec<Target>> {
        let mut out: Vec<Target> = Vec::new();
        for name in names.split(',') {
            if name.trim().is_empty() {
                return Err(Error::arg(
                    "layer",
                    format!("`{names}` has an empty name; list layers as convs.3,convs.5"),
                ));
            }
            let t = Target::resolve(g, name)?;
            if out.contains(&t) {
                return Err(Error::arg("layer", format!("`{names}` names `{t}` twice")));
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The shape a shift of this target has in `g`.
    pub fn shape(self, g: &Generator) -> Result<Vec<i64>> {
        match self {
            Target::Layer(l) => Ok(g.layer_weight(l)?.size()),
            Target::WPlus => Ok(vec![g.n_latent(), g.style_dim()]),
        }
    }
}

/// SHA-256 of what a shift of `target` is added to (the raw weight, as float32 bytes), so a
/// shift learned on one generator is recognised elsewhere; for W+ targets, of the generator's
/// shape facts only (a latent direction is meaningful on any generator of that mapping).
pub fn target_fingerprint(g: &Generator, target: Target) -> Result<String> {
    let mut h = Sha256::new();
    match target {
        Target::Layer(l) => {
            let w = g.layer_weight(l)?.f_to_device(Device::Cpu)?.f_contiguous()?;
            let mut bytes = vec![0u8; w.numel() * 4];
            w.f_copy_data_u8(&mut bytes, w.numel())?;
            h.update(&bytes);
        }
        Target::WPlus => h.update(format!("wplus {}x{} size {}", g.n_latent(), g.style_dim(), g.config.size)),
    }
    Ok(hex::encode(h.finalize()))
}

/// What one target of a shift is moved by.
pub struct Part {
    pub target: Target,
    /// Same shape as the target (the layer's raw weight, or W+), on the generator's device.
    pub x: Tensor,
}

/// An edit: one part per target it moves (usually one), rendered together.
pub struct Shift {
    /// In ascending target order, no target twice, never empty.
    pub parts: Vec<Part>,
    pub meta: BTreeMap<String, String>,
}

impl Shift {
    /// A shift of one target, validated against `g` (name, shape, values).
    pub fn new(g: &Generator, target: &str, x: Tensor) -> Result<Shift> {
        Shift::from_parts(g, vec![(Target::resolve(g, target)?, x)])
    }

    /// A shift of several targets, each validated against `g`; `layer` and `layer_sha256` set.
    pub fn from_parts(g: &Generator, parts: Vec<(Target, Tensor)>) -> Result<Shift> {
        if parts.is_empty() {
            return Err(Error::arg("shift", "has no part: name at least one layer"));
        }
        let mut checked = Vec::with_capacity(parts.len());
        for (target, x) in parts {
            let shape = target.shape(g)?;
            if x.size() != shape {
                return Err(Error::arg(
                    "shift",
                    format!("shape {:?} does not match `{target}`, whose shape is {shape:?}", x.size()),
                ));
            }
            if checked.iter().any(|p: &Part| p.target == target) {
                return Err(Error::arg("shift", format!("`{target}` is given twice")));
            }
            check_finite("shift", &x)?;
            checked.push(Part { target, x: x.f_to_kind(Kind::Float)?.f_to_device(g.device())? });
        }
        checked.sort_by_key(|p| p.target);
        let mut s = Shift { parts: checked, meta: BTreeMap::new() };
        let prints = s.parts.iter().map(|p| target_fingerprint(g, p.target)).collect::<Result<Vec<_>>>()?;
        s.meta.insert("layer".into(), s.layer_names());
        s.meta.insert("layer_sha256".into(), prints.join(","));
        Ok(s)
    }

    /// `names` as `Target::resolve_list` reads them; `data` holds each part's floats in that
    /// order, row-major.
    pub fn from_slice(g: &Generator, names: &str, data: &[f32]) -> Result<Shift> {
        let targets = Target::resolve_list(g, names)?;
        let shapes = targets.iter().map(|t| t.shape(g)).collect::<Result<Vec<_>>>()?;
        let counts: Vec<usize> = shapes.iter().map(|s| s.iter().product::<i64>() as usize).collect();
        let n: usize = counts.iter().sum();
        if data.len() != n {
            return Err(Error::arg("shift", format!("{} floats given, `{names}` has {n} ({shapes:?})", data.len())));
        }
        let mut parts = Vec::with_capacity(targets.len());
        let mut at = 0;
        for ((t, shape), count) in targets.into_iter().zip(shapes).zip(counts) {
            parts.push((t, Tensor::from_slice(&data[at..at + count]).f_view(shape.as_slice())?));
            at += count;
        }
        Shift::from_parts(g, parts)
    }

    /// `convs.3`, or `convs.3,convs.5` for a shift of several layers.
    pub fn layer_names(&self) -> String {
        self.parts.iter().map(|p| p.target.to_string()).collect::<Vec<_>>().join(",")
    }

    /// The part moving `target`, if any.
    pub fn part(&self, target: Target) -> Option<&Tensor> {
        self.parts.iter().find(|p| p.target == target).map(|p| &p.x)
    }

    /// Floats over all parts.
    pub fn numel(&self) -> usize {
        self.parts.iter().map(|p| p.x.numel()).sum()
    }

    /// Every part's floats, in part order.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.numel());
        for p in &self.parts {
            let t = p.x.f_to_device(Device::Cpu)?.f_contiguous()?.f_view([-1])?;
            out.extend(Vec::<f32>::try_from(&t)?);
        }
        Ok(out)
    }

    /// Loads a shift file (one target or several), refusing one learned on another generator.
    pub fn load(g: &Generator, path: &Path) -> Result<Shift> {
        let ck = Checkpoint::open(path)?;
        let names = ck
            .metadata()
            .get("layer")
            .ok_or_else(|| Error::format(path, "shift file has no `layer` metadata"))?
            .clone();
        let mismatch = |e: Error| match e {
            Error::InvalidArgument { reason, .. } => Error::Mismatch(format!("{}: {reason}", path.display())),
            e => e,
        };
        let targets = Target::resolve_list(g, &names).map_err(mismatch)?;
        // One target: `shift` (every version's form) or `shift.<layer>`; several: `shift.<layer>`
        // each. Anything else in the file is refused rather than silently left out.
        let single = targets.len() == 1 && ck.contains("shift");
        let key_of = |t: &Target| if single { "shift".to_string() } else { format!("shift.{t}") };
        let keys: Vec<String> = targets.iter().map(key_of).collect();
        if let Some(stray) = ck.keys().find(|k| !keys.iter().any(|want| want == k)) {
            return Err(Error::format(
                path,
                format!("holds the tensor `{stray}`, which `layer` = `{names}` does not name"),
            ));
        }
        let mut parts = Vec::with_capacity(targets.len());
        for (t, key) in targets.iter().zip(&keys) {
            if !ck.contains(key) {
                return Err(Error::format(path, format!("`layer` names `{t}` but the file has no tensor `{key}`")));
            }
            parts.push((*t, ck.tensor(key)?));
        }
        let mut s = Shift::from_parts(g, parts).map_err(mismatch)?;
        if let Some(recorded) = ck.metadata().get("layer_sha256") {
            let prints: Vec<String> = recorded.split(',').map(|p| p.trim().to_ascii_lowercase()).collect();
            if prints.len() != targets.len() {
                return Err(Error::format(
                    path,
                    format!(
                        "`layer_sha256` lists {} fingerprints for the {} layers of `{names}`",
                        prints.len(),
                        targets.len()
                    ),
                ));
            }
            // `from_parts` fingerprinted this generator's weights, in part order; the file lists
            // its fingerprints in its `layer` order.
            let ours: BTreeMap<Target, &str> =
                s.parts.iter().map(|p| p.target).zip(s.meta["layer_sha256"].split(',')).collect();
            if let Some((t, _)) = targets.iter().zip(&prints).find(|(t, print)| ours.get(*t) != Some(&print.as_str())) {
                return Err(Error::Mismatch(format!(
                    "{}: learned on another generator (the weights of `{t}` differ from this one's)",
                    path.display()
                )));
            }
        }
        // The file's facts, except the two `from_parts` just derived (in part order).
        let derived = |k: &str| k == "layer" || k == "layer_sha256";
        let recorded: Vec<(String, String)> =
            ck.metadata().iter().filter(|(k, _)| !derived(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        s.meta.extend(recorded);
        Ok(s)
    }

    /// One target: tensor `shift` (the form every version reads); several: `shift.<layer>` each.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut meta: HashMap<String, String> = self.meta.clone().into_iter().collect();
        meta.insert("layer".into(), self.layer_names());
        meta.insert("format".into(), "clipshape-shift".into());
        meta.entry("library_version".into()).or_insert_with(|| crate::VERSION.into());
        let names: Vec<String> = match self.parts.as_slice() {
            [_] => vec!["shift".into()],
            parts => parts.iter().map(|p| format!("shift.{}", p.target)).collect(),
        };
        let tensors: Vec<(&str, &Tensor)> =
            names.iter().map(String::as_str).zip(self.parts.iter().map(|p| &p.x)).collect();
        write_atomic(path, &safetensors_bytes(&tensors, &meta)?)
    }
}

/// How a shift was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// NaviGAN-style weight shift (the paper).
    Shift,
    /// StyleCLIP latent optimisation (the baseline).
    Latent,
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
