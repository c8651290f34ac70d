//! `clipshape bench`: milliseconds per operation, printed as a table. Speed targets are checked
//! here, never in timed unit tests. Every row runs warm-up iterations first and reports the median.

use std::path::Path;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::models::stylegan2::{config_f_channels, random_state_dict, seeded_normal, Generator, LayerId};

pub struct Row {
    pub model: String,
    pub device: String,
    pub batch: i64,
    pub op: String,
    pub ms: f64,
}

pub struct BenchOptions {
    pub device: Device,
    pub iters: usize,
    pub batches: Vec<i64>,
    /// The tiny golden generator, when its file is at hand.
    pub golden_generator: Option<std::path::PathBuf>,
    /// Side of the randomly initialised config-f generator (0 skips it).
    pub random_size: i64,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn time_ms(device: Device, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    sync(device);
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        sync(device);
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok(samples[samples.len() / 2])
}

/// Forward, and forward + backward to a shift of a 16–32 px conv (what an edit step does on
/// the generator side).
fn generator_rows(name: &str, g: &Generator, opts: &BenchOptions, rows: &mut Vec<Row>) -> Result<()> {
    let layer = g.layers().into_iter().find(|l| matches!(l.id, LayerId::Convs(3))).map(|l| l.id).unwrap_or(LayerId::Conv1);
    let weight_shape = g.layer_weight(layer)?.size();
    for &b in &opts.batches {
        let w = seeded_normal(&[b, g.n_latent(), g.style_dim()], 1, opts.device)?;
        let fwd = time_ms(opts.device, opts.iters, || {
            let _img = tch::no_grad(|| g.synthesis(&w, &[]))?;
            Ok(())
        })?;
        let x = Tensor::f_zeros(weight_shape.as_slice(), (Kind::Float, opts.device))?.f_set_requires_grad(true)?;
        let bwd = time_ms(opts.device, opts.iters, || {
            let img = g.synthesis(&w, &[(layer, &x)])?;
            img.f_mean(None::<Kind>)?.f_backward()?;
            Ok(())
        })?;
        let dev = crate::device::describe(opts.device);
        rows.push(Row { model: name.into(), device: dev.clone(), batch: b, op: "forward".into(), ms: fwd });
        rows.push(Row { model: name.into(), device: dev, batch: b, op: format!("fwd+bwd to {layer} shift"), ms: bwd });
    }
    Ok(())
}

pub fn run(opts: &BenchOptions) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    if let Some(path) = &opts.golden_generator {
        if path.exists() {
            let g = crate::models::load_generator(path, opts.device)?.generator;
            generator_rows(&format!("stylegan2 tiny golden {}px", g.config.size), &g, opts, &mut rows)?;
        } else {
            log::warn!("{} not found: skipping the tiny golden generator rows", path.display());
        }
    }
    if opts.random_size > 0 {
        let sd = random_state_dict(512, 8, &config_f_channels(opts.random_size, 2), 0)?;
        let ck = Checkpoint::from_tensors("random config-f", sd);
        let g = Generator::load(&ck, "", opts.device)?;
        generator_rows(&format!("stylegan2 config-f {}px (random)", opts.random_size), &g, opts, &mut rows)?;
    }
    Ok(rows)
}

/// A markdown table, ready for BENCHMARKS.md.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from("| model | device | batch | op | ms | ms/image |\n|---|---|---:|---|---:|---:|\n");
    for r in rows {
        s += &format!("| {} | {} | {} | {} | {:.2} | {:.2} |\n", r.model, r.device, r.batch, r.op, r.ms, r.ms / r.batch as f64);
    }
    s
}

/// Where the tiny golden files live in a checkout: `../shared/golden`, or `$CLIPSHAPE_GOLDEN`.
pub fn golden_dir() -> std::path::PathBuf {
    std::env::var_os("CLIPSHAPE_GOLDEN")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden"))
}
