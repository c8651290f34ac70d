//! The paper's table at scale: what one picture costs `clipshape eval` at full size (renders at
//! k = 0 and the six strengths, CLIP, Inception), and what the merge of a 3000-picture table
//! costs, so a cluster's time can be projected from them (BENCHMARKS.md).

use clipshape::checkpoint::Checkpoint;
use clipshape::domain::Frame;
use clipshape::edit::eval::{self, EvalParams, Measured};
use clipshape::edit::guide::ClipGuide;
use clipshape::edit::shift::Target;
use clipshape::edit::{render, Latent, Shift};
use clipshape::error::Result;
use clipshape::models::inception::Inception;
use clipshape::models::init;
use clipshape::models::stylegan2::Generator;
use clipshape::random::seeded_normal;

use super::{peak, time_ms, Table};

/// The paper's strengths, `clipshape eval`'s default.
const STRENGTHS: [f64; 6] = [-10.0, -5.0, -3.0, 3.0, 5.0, 10.0];
/// The pictures of the paper's table, for the merge row.
const TABLE_PICTURES: usize = 3000;

/// Random FID Inception-v3 at full width (pytorch-fid's layout).
pub fn random_inception(device: tch::Device) -> Result<Inception> {
    Inception::load_checkpoint(&Checkpoint::from_tensors("random FID Inception-v3", init::inception(1, 0)?), "", device)
}

/// One picture measured as `eval --inception` measures it, at `g`'s size.
pub fn eval_rows(name: &str, g: &Generator, guide: &ClipGuide, net: &Inception, t: &mut Table) -> Result<()> {
    let device = t.opts.device;
    let latent = Latent::from_seed(g, 0, 0.7, Some(&g.mean_latent(4096, 1)?))?;
    let target = "convs.3";
    let x = seeded_normal(&Target::resolve(g, target)?.shape(g)?, 2, device)?.f_mul_scalar(0.01)?;
    let shift = Shift::new(g, target, x)?;
    let params = EvalParams {
        prompt: "a face with a big nose".into(),
        strengths: STRENGTHS.to_vec(),
        region: None,
        max_batch: render::DEFAULT_MAX_BATCH,
    };
    let frame = Frame::square(g.config.size as u32);
    let renders = STRENGTHS.len() + 1;
    t.time(name, 1, &format!("eval: 1 picture ({renders} renders, CLIP, Inception)"), || {
        eval::measure(g, guide, frame, &[(0, &latent)], &[(&shift, 1.0)], &params, Some(net), &|| false)?;
        Ok(())
    })
}

/// The merge's own work for the paper's table: the rows (means, and a Fréchet distance per
/// strength over `dim`-wide features) from 3000 pictures' measures.
pub fn merge_row(dim: i64, t: &mut Table) -> Result<()> {
    let renders = STRENGTHS.len() + 1;
    let measured = (0..TABLE_PICTURES)
        .map(|i| -> Result<Measured> {
            Ok(Measured {
                index: i,
                clip: vec![0.25; renders],
                change: vec![1.0; renders],
                features: Some(seeded_normal(&[renders as i64, dim], i as i64, tch::Device::Cpu)?.f_abs()?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    peak::reset();
    let ms = time_ms(tch::Device::Cpu, 0, || {
        eval::rows(&STRENGTHS, &measured, true, None)?;
        Ok(())
    })?;
    let op = format!("eval --merge: {TABLE_PICTURES} pictures × {renders}, FID at {dim} features");
    t.push("(no model)", TABLE_PICTURES as i64, &op, ms, peak::read_mb());
    Ok(())
}
