//! `edit::eval`: the Fréchet distance against its closed forms, and the evaluation of a learnt
//! shift on the tiny golden models, with a tiny random FID Inception network.

mod common;

use clipshape::context::Context;
use clipshape::edit::eval::{self, frechet_distance, EvalParams, Fid, Statistics};
use clipshape::edit::optimize::OptimizeParams;
use clipshape::edit::{Latent, Shift};
use clipshape::models::inception::Inception;
use clipshape::models::stylegan2::LayerId;
use tch::{Device, Kind, Tensor};

fn ctx() -> Context {
    common::edit_context()
}

fn tiny_inception() -> Inception {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inception/tiny_inception.pth");
    Inception::load(&path, Device::Cpu).unwrap()
}

fn gaussian(n: i64, d: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn([n, d], (Kind::Double, Device::Cpu))
}

#[test]
fn the_frechet_distance_meets_its_closed_forms() {
    let a = Statistics::of(&gaussian(400, 6, 1)).unwrap();
    assert!(frechet_distance(&a, &a).unwrap().abs() < 1e-9, "a set is at distance 0 from itself");

    // Same covariance, moved mean: the distance is ‖Δμ‖².
    let x = gaussian(400, 6, 2);
    let shift = Tensor::from_slice(&[1.0f64, -2.0, 0.5, 0.0, 0.0, 3.0]);
    let (p, q) = (Statistics::of(&x).unwrap(), Statistics::of(&(&x + &shift)).unwrap());
    assert!((frechet_distance(&p, &q).unwrap() - (1.0 + 4.0 + 0.25 + 9.0)).abs() < 1e-9);

    // Diagonal covariances: Σ (σ_a − σ_b)² (plus the means' term).
    let scale = |s: &[f64]| Tensor::from_slice(s);
    let sa = [1.0, 2.0, 0.5, 1.0, 3.0, 1.0];
    let sb = [2.0, 2.0, 1.0, 0.1, 1.0, 1.0];
    let (xa, xb) = (gaussian(300, 6, 3), gaussian(300, 6, 4));
    let (mut pa, mut pb) = (Statistics::of(&xa).unwrap(), Statistics::of(&xb).unwrap());
    // Replace the sample statistics by exact ones: the closed form is about the Gaussians.
    pa.cov = Tensor::diag_embed(&scale(&sa).square(), 0, -2, -1);
    pb.cov = Tensor::diag_embed(&scale(&sb).square(), 0, -2, -1);
    pa.mean = Tensor::zeros([6], (Kind::Double, Device::Cpu));
    pb.mean = pa.mean.shallow_clone();
    let want: f64 = sa.iter().zip(&sb).map(|(a, b)| (a - b) * (a - b)).sum();
    assert!((frechet_distance(&pa, &pb).unwrap() - want).abs() < 1e-9);

    // Fewer pictures than features: a singular covariance still gives a finite distance.
    let few = Statistics::of(&gaussian(4, 32, 5)).unwrap();
    let other = Statistics::of(&gaussian(4, 32, 6)).unwrap();
    let d = frechet_distance(&few, &other).unwrap();
    assert!(d.is_finite() && d > 0.0, "{d}");
    assert!(Statistics::of(&gaussian(1, 6, 7)).err().unwrap().to_string().contains("at least 2"));
}

#[test]
fn evaluating_a_learnt_shift_gains_clip_similarity_changes_more_with_strength_and_measures_fid() {
    let ctx = ctx();
    let mean = ctx.mean_latent().unwrap();
    let latents: Vec<Latent> = (0..4).map(|s| Latent::from_seed(&ctx.generator, s, 0.7, Some(mean)).unwrap()).collect();
    let params =
        OptimizeParams { steps: 20, lambda2: 0.05, ..OptimizeParams::new("face with big nose", LayerId::Convs(3)) };
    let refs: Vec<&Latent> = latents.iter().collect();
    // Learnt on the first picture, evaluated on all four.
    let shift: Shift = ctx.optimize(&refs[..1], &params, &mut |_| true).unwrap().remove(0);
    let net = tiny_inception();
    let fid = Fid { net: &net, reference: None };
    let ev = EvalParams {
        prompt: "face with big nose".into(),
        strengths: vec![-10.0, -5.0, -3.0, 3.0, 5.0, 10.0],
        region: Some([16.0, 16.0, 48.0, 48.0]),
        max_batch: 8,
    };
    let rows = ctx.evaluate(&latents, &[(&shift, 1.0)], &ev, Some(&fid)).unwrap();
    eprintln!("{}", eval::table(&rows));
    assert_eq!(rows.iter().map(|r| r.strength).collect::<Vec<_>>(), ev.strengths);
    let at = |k: f64| rows.iter().find(|r| r.strength == k).unwrap();
    assert!(at(3.0).clip_gain > 0.0, "the edit does not reach its prompt: {:?}", at(3.0));
    assert!(at(3.0).clip_gain > at(-3.0).clip_gain, "−3 agrees with the prompt as much as +3");
    for sign in [-1.0, 1.0] {
        let (a, b, c) = (at(3.0 * sign), at(5.0 * sign), at(10.0 * sign));
        assert!(
            a.change_outside < b.change_outside && b.change_outside < c.change_outside,
            "change outside M not monotone in |k|: {a:?} {b:?} {c:?}"
        );
        assert!([a, b, c].iter().all(|r| r.fid.unwrap() > 0.0), "an edited set at FID 0: {a:?} {b:?} {c:?}");
    }
    // FID at k = 5 is the Fréchet distance of the frames' Inception features (as 8-bit
    // pictures) to those of the unedited renders, computed here step by step.
    let features_at = |k: f64| {
        let frames: Vec<Tensor> = latents
            .iter()
            .map(|l| {
                // Rendered in the same batch as `evaluate` renders (0, then the strengths), so
                // the 8-bit rounding below meets the same floats.
                let ks = [0.0, -10.0, -5.0, -3.0, 3.0, 5.0, 10.0];
                let i = ks.iter().position(|&x| x == k).unwrap() as i64;
                let img = clipshape::edit::render(&ctx.generator, l, &[(&shift, 1.0)], &ks, 8).unwrap().narrow(0, i, 1);
                let levels = ((img.clamp(-1.0, 1.0) + 1.0) * 127.5).round();
                ctx.to_frame(&(levels / 127.5 - 1.0), None).unwrap().get(0)
            })
            .collect();
        Statistics::of(&eval::picture_features(&net, &frames, 2).unwrap()).unwrap()
    };
    let want = frechet_distance(&features_at(5.0), &features_at(0.0)).unwrap();
    let got = at(5.0).fid.unwrap();
    // Float32 batches of other sizes round differently: 1e-4 relative.
    assert!((got - want).abs() <= 1e-4 * want.max(1.0), "FID at k = 5: {got}, recomputed {want}");

    // At k = 0 against the unedited renders themselves, FID is zero and nothing changes.
    let zero = EvalParams { strengths: vec![0.0], ..ev.clone() };
    let rows = ctx.evaluate(&latents, &[(&shift, 1.0)], &zero, Some(&fid)).unwrap();
    assert!(rows[0].fid.unwrap() < 1e-6 && rows[0].change_outside == 0.0 && rows[0].clip_gain == 0.0, "{rows:?}");

    // A reference set of other pictures: the unedited renders are at a distance from it.
    let others: Vec<Latent> = (10..14).map(|s| Latent::from_seed(&ctx.generator, s, 1.0, None).unwrap()).collect();
    let pictures: Vec<Tensor> =
        others.iter().map(|l| clipshape::edit::render(&ctx.generator, l, &[], &[0.0], 1).unwrap().get(0)).collect();
    let reference = Statistics::of(&eval::picture_features(&net, &pictures, 3).unwrap()).unwrap();
    let against = Fid { net: &net, reference: Some(reference) };
    let rows = ctx.evaluate(&latents, &[(&shift, 1.0)], &zero, Some(&against)).unwrap();
    assert!(rows[0].fid.unwrap() > 1e-6, "{rows:?}");

    let e = ctx.evaluate(&[], &[(&shift, 1.0)], &ev, None).err().unwrap();
    assert!(e.to_string().contains("latents"), "{e}");
    let whole = EvalParams { region: Some([0.0, 0.0, 64.0, 64.0]), ..ev.clone() };
    let e = ctx.evaluate(&latents, &[(&shift, 1.0)], &whole, None).err().unwrap();
    assert!(e.to_string().contains("holds the whole frame"), "{e}");
    let upside_down = EvalParams { region: Some([50.0, 50.0, 10.0, 10.0]), ..ev.clone() };
    let e = ctx.evaluate(&latents, &[(&shift, 1.0)], &upside_down, None).err().unwrap();
    assert!(e.to_string().contains("region"), "{e}");
    // A strength beyond 32-bit floats (it rendered NaN): refused before any render.
    let beyond = EvalParams { strengths: vec![3.0, 1e300], ..ev.clone() };
    let e = ctx.evaluate(&latents, &[(&shift, 1.0)], &beyond, None).err().unwrap();
    assert!(e.to_string().contains("1e300 is not a finite number"), "{e}");
}
