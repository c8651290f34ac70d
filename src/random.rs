//! Seeded random numbers: the same face for a seed on every device, reproducible optimiser
//! starts. torch's default CPU generator is process-wide, so every draw from it goes through
//! [`seeded`], which serialises them.

use tch::{Device, Kind, Tensor};

use crate::error::Result;

static SEED_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` with torch's CPU generator seeded with `seed`, no other seeded draw in between.
pub fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    let _guard = SEED_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    f()
}

/// Standard-normal samples that depend only on `seed`, on any device: drawn on the CPU with a
/// private generator state and moved, so CPU and CUDA users see the same face for a seed.
pub fn seeded_normal(shape: &[i64], seed: i64, device: Device) -> Result<Tensor> {
    let t = seeded(seed, || Tensor::f_randn(shape, (Kind::Float, Device::Cpu)))?;
    Ok(t.f_to_device(device)?)
}
