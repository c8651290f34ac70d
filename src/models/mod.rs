//! One file per model, each mirroring its paper and its checkpoint's key names.

pub mod clip;
pub mod e4e;
pub mod inception;
pub mod init;
pub mod mtcnn;
pub mod stylegan2;

use std::path::Path;

use tch::{Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use stylegan2::Generator;

/// Where a generator sits inside the files users have: rosinality (`g_ema.`), e4e
/// (`state_dict.decoder.`), or a bare state dict (safetensors export).
pub const GENERATOR_PREFIXES: [&str; 3] = ["g_ema.", "state_dict.decoder.", ""];

/// A generator and the mean latent its file carries (`latent_avg`), if any.
pub struct LoadedGenerator {
    pub generator: Generator,
    pub mean_latent: Option<Tensor>,
    pub prefix: &'static str,
}

pub fn load_generator(path: &Path, device: Device) -> Result<LoadedGenerator> {
    let ck = Checkpoint::open(path)?;
    load_generator_from(&ck, device)
}

pub fn load_generator_from(ck: &Checkpoint, device: Device) -> Result<LoadedGenerator> {
    let prefix =
        GENERATOR_PREFIXES.into_iter().find(|p| ck.contains(&format!("{p}style.1.weight"))).ok_or_else(|| {
            let sample: Vec<&str> = ck.keys().take(5).collect();
            Error::UnknownArchitecture {
                path: ck.path().to_path_buf(),
                model: "StyleGAN2 generator",
                reason: format!(
                    "no `style.1.weight` under `g_ema.`, `state_dict.decoder.` or the root (first keys: {sample:?})"
                ),
            }
        })?;
    let generator = Generator::load(ck, prefix, device)?;
    // rosinality stores W's mean as (D) or (1, D); e4e repeats it per style (n_styles, D).
    let mean_latent = match ck.shape("latent_avg") {
        Some(shape) if shape.last() == Some(&generator.style_dim()) => {
            let t = ck.tensor("latent_avg")?.f_reshape([-1, generator.style_dim()])?;
            Some(t.f_narrow(0, 0, 1)?.f_to_device(device)?)
        }
        Some(shape) => {
            return Err(Error::Shape {
                path: ck.path().to_path_buf(),
                key: "latent_avg".into(),
                expected: vec![generator.style_dim()],
                got: shape.to_vec(),
            })
        }
        None => None,
    };
    Ok(LoadedGenerator { generator, mean_latent, prefix })
}
