//! A W+ code (n_latent × style_dim): what inversion produces and every render starts from.
//! File form: safetensors with one float32 tensor `wplus`.

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::io::{check_finite, safetensors_bytes, write_atomic};
use crate::models::stylegan2::Generator;
use crate::random::seeded_normal;

pub struct Latent {
    /// (n_latent, style_dim), float32, on the generator's device.
    pub wplus: Tensor,
}

/// The largest |value| a latent may hold.
pub const MAX_ABS: f64 = 1e4;

impl Latent {
    /// Checks shape and values against the generator it will be rendered with.
    pub fn new(g: &Generator, wplus: Tensor) -> Result<Latent> {
        let want = [g.n_latent(), g.style_dim()];
        if wplus.size() != want {
            return Err(Error::arg(
                "latent",
                format!("W+ has shape {:?}, this generator needs {want:?}", wplus.size()),
            ));
        }
        check_finite("latent", &wplus)?;
        // A W+ code lies within a few units of the model's mean; values this far out render
        // finite-looking garbage that turns into NaN further on (CLIP, FID).
        let largest = wplus.f_abs()?.f_max()?.f_double_value(&[])?;
        if largest > MAX_ABS {
            return Err(Error::arg(
                "latent",
                format!("holds values up to {largest:e}; W+ codes lie within ±{MAX_ABS:e} (a few units of the model's mean)"),
            ));
        }
        Ok(Latent { wplus: wplus.f_to_kind(tch::Kind::Float)?.f_to_device(g.device())? })
    }

    /// The image for `seed`: z ~ N(0, I) → mapping → truncation toward the mean latent.
    pub fn from_seed(g: &Generator, seed: i64, truncation: f64, mean: Option<&Tensor>) -> Result<Latent> {
        if !(truncation.is_finite() && (0.0..=1.0).contains(&truncation)) {
            return Err(Error::arg("truncation", format!("{truncation} is not in [0, 1]")));
        }
        let z = seeded_normal(&[1, g.style_dim()], seed, g.device())?;
        let wplus = tch::no_grad(|| -> Result<Tensor> {
            let w = g.style(&z)?;
            g.wplus_from_w(&w, truncation, mean)
        })?;
        Ok(Latent { wplus: wplus.f_squeeze_dim(0)? })
    }

    pub fn from_slice(g: &Generator, data: &[f32]) -> Result<Latent> {
        let n = (g.n_latent() * g.style_dim()) as usize;
        if data.len() != n {
            return Err(Error::arg(
                "latent",
                format!(
                    "{} floats given, this generator's W+ has {}×{} = {n}",
                    data.len(),
                    g.n_latent(),
                    g.style_dim()
                ),
            ));
        }
        Latent::new(g, Tensor::from_slice(data).f_view([g.n_latent(), g.style_dim()])?)
    }

    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let t = self.wplus.f_to_device(Device::Cpu)?.f_contiguous()?.f_view([-1])?;
        Ok(Vec::<f32>::try_from(&t)?)
    }

    pub fn load(g: &Generator, path: &Path) -> Result<Latent> {
        let ck = Checkpoint::open(path)?;
        let wplus = ck.tensor("wplus")?;
        // A single W (style_dim) or a batch of one is accepted and repeated/squeezed.
        let wplus = match wplus.size().as_slice() {
            [d] if *d == g.style_dim() => wplus.f_unsqueeze(0)?.f_repeat([g.n_latent(), 1])?,
            [1, n, d] if *n == g.n_latent() && *d == g.style_dim() => wplus.f_squeeze_dim(0)?,
            _ => wplus,
        };
        Latent::new(g, wplus).map_err(|e| match e {
            Error::InvalidArgument { reason, .. } => Error::format(path, format!("`wplus`: {reason}")),
            e => e,
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = HashMap::from([("format".to_string(), "clipshape-latent".to_string())]);
        write_atomic(path, &safetensors_bytes(&[("wplus", &self.wplus)], &meta)?)
    }
}
