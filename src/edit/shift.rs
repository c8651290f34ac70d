//! A learned edit direction plus the facts of how it was made. Usually a shift of one modulated
//! conv's RAW weight (the paper's method); the StyleCLIP latent baseline gives a W+ direction
//! instead, which renders the same way (`w + k·Δw`).
//!
//! File form: safetensors with float32 `shift` and string metadata, at least `layer`
//! (`convs.3`, or `wplus` for a latent direction) and `layer_sha256`, a fingerprint of the
//! generator weight it was learned against, so a shift is refused by another generator even
//! when the shapes agree.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::io::{check_finite, safetensors_bytes, write_atomic};
use crate::models::stylegan2::{Generator, LayerId};

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

pub struct Shift {
    pub target: Target,
    /// Same shape as the target (the layer's raw weight, or W+), on the generator's device.
    pub x: Tensor,
    pub meta: BTreeMap<String, String>,
}

impl Shift {
    /// Validates the target name and the tensor's shape and values against `g`.
    pub fn new(g: &Generator, target: &str, x: Tensor) -> Result<Shift> {
        let target = Target::resolve(g, target)?;
        let shape = target.shape(g)?;
        if x.size() != shape {
            return Err(Error::arg(
                "shift",
                format!("shape {:?} does not match `{target}`, whose shape is {shape:?}", x.size()),
            ));
        }
        check_finite("shift", &x)?;
        let x = x.f_to_kind(Kind::Float)?.f_to_device(g.device())?;
        let meta = BTreeMap::from([
            ("layer".to_string(), target.to_string()),
            ("layer_sha256".to_string(), target_fingerprint(g, target)?),
        ]);
        Ok(Shift { target, x, meta })
    }

    pub fn from_slice(g: &Generator, target: &str, data: &[f32]) -> Result<Shift> {
        let shape = Target::resolve(g, target)?.shape(g)?;
        let n: i64 = shape.iter().product();
        if data.len() as i64 != n {
            return Err(Error::arg("shift", format!("{} floats given, `{target}` has {n} ({shape:?})", data.len())));
        }
        Shift::new(g, target, Tensor::from_slice(data).f_view(shape.as_slice())?)
    }

    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let t = self.x.f_to_device(Device::Cpu)?.f_contiguous()?.f_view([-1])?;
        Ok(Vec::<f32>::try_from(&t)?)
    }

    /// Loads a shift file, refusing one learned on another generator.
    pub fn load(g: &Generator, path: &Path) -> Result<Shift> {
        let ck = Checkpoint::open(path)?;
        let target = ck
            .metadata()
            .get("layer")
            .ok_or_else(|| Error::format(path, "shift file has no `layer` metadata"))?
            .clone();
        let x = ck.tensor("shift")?;
        let mut s = Shift::new(g, &target, x).map_err(|e| match e {
            Error::InvalidArgument { reason, .. } => Error::Mismatch(format!("{}: {reason}", path.display())),
            e => e,
        })?;
        if let Some(recorded) = ck.metadata().get("layer_sha256") {
            if recorded != &s.meta["layer_sha256"] {
                return Err(Error::Mismatch(format!(
                    "{}: learned on another generator (the weights of `{target}` differ from this one's)",
                    path.display()
                )));
            }
        }
        s.meta.extend(ck.metadata().iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(s)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut meta: HashMap<String, String> = self.meta.clone().into_iter().collect();
        meta.insert("layer".into(), self.target.to_string());
        meta.insert("format".into(), "clipshape-shift".into());
        meta.entry("library_version".into()).or_insert_with(|| crate::VERSION.into());
        write_atomic(path, &safetensors_bytes(&[("shift", &self.x)], &meta)?)
    }
}
