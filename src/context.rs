//! A loaded model set on one device: what `cs_ctx` wraps, and what the CLI works with.
//! A context is used by one thread at a time; only [`Context::cancel`] may come from another.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Device, Tensor};

use crate::device::{self, DeviceRequest};
use crate::error::Result;
use crate::models::{self, stylegan2::Generator};

/// Samples averaged for the mean latent when the file does not carry `latent_avg`
/// (rosinality's `mean_latent(4096)`), from a fixed seed so truncation is reproducible.
pub const MEAN_LATENT_SAMPLES: i64 = 4096;
pub const MEAN_LATENT_SEED: i64 = 0;

#[derive(Debug, Clone)]
pub struct ContextParams {
    /// A rosinality checkpoint, an e4e checkpoint, or a safetensors state dict.
    pub generator: PathBuf,
    pub device: DeviceRequest,
    /// CPU threads for libtorch; 0 keeps its default.
    pub threads: usize,
}

impl ContextParams {
    pub fn new(generator: impl AsRef<Path>) -> Self {
        ContextParams { generator: generator.as_ref().to_path_buf(), device: DeviceRequest::Auto, threads: 0 }
    }
}

pub struct Context {
    pub device: Device,
    pub generator: Generator,
    pub generator_path: PathBuf,
    stored_mean: Option<Tensor>,
    computed_mean: OnceCell<Tensor>,
    cancel: AtomicBool,
}

impl Context {
    pub fn new(params: &ContextParams) -> Result<Context> {
        let device = params.device.resolve()?;
        device::set_threads(params.threads);
        let loaded = models::load_generator(&params.generator, device)?;
        log::info!(
            "loaded {} px generator from {} on {}",
            loaded.generator.config.size,
            params.generator.display(),
            device::describe(device)
        );
        Ok(Context {
            device,
            generator: loaded.generator,
            generator_path: params.generator.clone(),
            stored_mean: loaded.mean_latent,
            computed_mean: OnceCell::new(),
            cancel: AtomicBool::new(false),
        })
    }

    /// The W mean truncation pulls toward: the file's `latent_avg`, else computed once.
    pub fn mean_latent(&self) -> Result<&Tensor> {
        if let Some(m) = &self.stored_mean {
            return Ok(m);
        }
        if let Some(m) = self.computed_mean.get() {
            return Ok(m);
        }
        let m = self.generator.mean_latent(MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED)?;
        Ok(self.computed_mean.get_or_init(|| m))
    }

    /// Asks the running operation to stop at its next step; safe from any thread.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Clears a pending cancel at the start of an operation and reports one during it.
    pub fn take_cancel(&self) -> bool {
        self.cancel.swap(false, Ordering::SeqCst)
    }
}
