//! Parity of the StyleGAN2 generator with rosinality's reference, on the tiny golden model
//! loaded from both the official `.pt` layout and safetensors. Tolerances: golden README.

mod common;

use clipshape::checkpoint::Checkpoint;
use clipshape::edit::{self, Latent, Shift};
use clipshape::models::{load_generator, stylegan2::LayerId};
use common::{assert_forward_close, assert_grad_close, golden, io};
use tch::{Device, Kind, Tensor};

const FILES: [&str; 2] = ["stylegan2.pt", "stylegan2.safetensors"];

fn gen(file: &str) -> clipshape::models::LoadedGenerator {
    load_generator(&golden(file), Device::Cpu).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn config_is_read_from_the_shapes() {
    let g = gen("stylegan2.pt").generator;
    let c = &g.config;
    assert_eq!((c.size, c.style_dim, c.n_mlp, c.blur_taps), (64, 64, 3, 4));
    assert_eq!(c.channels, vec![(4, 48), (8, 32), (16, 32), (32, 24), (64, 16)]);
    assert_eq!((g.n_latent(), c.num_layers()), (10, 9));
    let convs3 = g.layer(LayerId::Convs(3)).unwrap();
    assert_eq!((convs3.resolution, convs3.wplus_index), (16, 4));
    assert_eq!(convs3.weight_shape, vec![1, 32, 32, 3, 3]);
    let rgb1 = g.layer(LayerId::ToRgbs(1)).unwrap();
    assert_eq!((rgb1.resolution, rgb1.wplus_index), (16, 5));
}

#[test]
fn mapping_and_truncation() {
    let io = io("stylegan2_io.safetensors");
    for file in FILES {
        let g = gen(file).generator;
        let w = tch::no_grad(|| g.style(&io.tensor("z").unwrap())).unwrap();
        assert_forward_close(&w, &io.tensor("w").unwrap(), &format!("{file}: mapping"));
        let mean = io.tensor("mean_latent").unwrap();
        let wp = g.wplus_from_w(&io.tensor("w").unwrap(), 0.7, Some(&mean)).unwrap();
        assert_eq!(wp.size(), vec![2, 10, 64]);
        assert_forward_close(&wp.select(1, 3), &io.tensor("trunc_w").unwrap(), &format!("{file}: truncation"));
    }
}

#[test]
fn latent_avg_of_the_pt_is_the_mean_latent() {
    let io = io("stylegan2_io.safetensors");
    let mean = gen("stylegan2.pt").mean_latent.expect("stylegan2.pt carries latent_avg");
    assert_forward_close(&mean, &io.tensor("mean_latent").unwrap(), "latent_avg");
    assert!(gen("stylegan2.safetensors").mean_latent.is_none());
}

#[test]
fn wplus_forward_with_stored_noise() {
    let io = io("stylegan2_io.safetensors");
    for file in FILES {
        let g = gen(file).generator;
        let img = tch::no_grad(|| g.synthesis(&io.tensor("wplus").unwrap(), &[])).unwrap();
        assert_forward_close(&img, &io.tensor("img_wplus").unwrap(), &format!("{file}: img_wplus"));
    }
}

#[test]
fn z_with_truncation() {
    let io = io("stylegan2_io.safetensors");
    let g = gen("stylegan2.pt").generator;
    let mean = io.tensor("mean_latent").unwrap();
    let img = tch::no_grad(|| {
        let w = g.style(&io.tensor("z").unwrap())?;
        let wp = g.wplus_from_w(&w, 0.7, Some(&mean))?;
        g.synthesis(&wp, &[])
    })
    .unwrap();
    assert_forward_close(&img, &io.tensor("img_z_trunc").unwrap(), "img_z_trunc");
}

#[test]
fn shifted_renders_at_every_strength() {
    let io = io("stylegan2_io.safetensors");
    let strengths: Vec<f64> =
        Vec::<f32>::try_from(io.tensor("strengths").unwrap()).unwrap().into_iter().map(f64::from).collect();
    for file in FILES {
        let g = gen(file).generator;
        let latent = Latent::new(&g, io.tensor("wplus").unwrap().get(0)).unwrap();
        let shift = Shift::new(&g, "convs.3", io.tensor("shift_x").unwrap()).unwrap();
        // Batch 2 splits the 5 strengths over three passes: chunking must not change results.
        for max_batch in [8, 2] {
            let imgs = edit::render(&g, &latent, &[(&shift, 1.0)], &strengths, max_batch).unwrap();
            assert_forward_close(
                &imgs,
                &io.tensor("img_shift").unwrap(),
                &format!("{file}: img_shift (batch {max_batch})"),
            );
        }
    }
}

fn grad_of_shift(file: &str, layer: LayerId, shift_key: &str) -> Tensor {
    let io = io("stylegan2_io.safetensors");
    let g = gen(file).generator;
    let x = io.tensor(shift_key).unwrap().set_requires_grad(true);
    let w = io.tensor("wplus").unwrap().narrow(0, 0, 1);
    let img = g.synthesis(&w, &[(layer, &x)]).unwrap();
    (img * io.tensor("grad_R").unwrap()).sum(Kind::Float).backward();
    x.grad()
}

#[test]
fn gradients_flow_to_the_shift_only() {
    let io = io("stylegan2_io.safetensors");
    let cases = [
        (LayerId::Convs(3), "shift_x", "grad_x"),
        (LayerId::Conv1, "shift_x_conv1", "grad_x_conv1"),
        (LayerId::ToRgbs(1), "shift_x_torgb1", "grad_x_torgb1"),
    ];
    for file in FILES {
        for (layer, shift, grad) in cases {
            let g = grad_of_shift(file, layer, shift);
            assert_grad_close(&g, &io.tensor(grad).unwrap(), &format!("{file}: d/dx {layer}"));
        }
    }
    let g = gen("stylegan2.pt").generator;
    assert!(g.vs.trainable_variables().is_empty(), "generator weights must be frozen");
    for (name, t) in g.vs.variables() {
        assert!(!t.requires_grad(), "{name} requires grad");
    }
}

#[test]
fn pt_and_safetensors_hold_the_same_weights() {
    let pt = Checkpoint::open(golden("stylegan2.pt")).unwrap();
    let st = Checkpoint::open(golden("stylegan2.safetensors")).unwrap();
    let keys: Vec<&str> = st.keys().collect();
    assert_eq!(keys.len(), 89);
    for k in keys {
        let a = pt.tensor(&format!("g_ema.{k}")).unwrap();
        let b = st.tensor(k).unwrap();
        assert!(a.equal(&b), "{k} differs");
    }
}

#[test]
fn per_sample_deltas_in_one_batch_agree_with_the_golden_renders() {
    // One delta per sample (as a batch of different edits) through the grouped conv.
    let io = io("stylegan2_io.safetensors");
    let g = gen("stylegan2.pt").generator;
    let ks = io.tensor("strengths").unwrap();
    let x = io.tensor("shift_x").unwrap();
    let deltas = &x * ks.view([5, 1, 1, 1, 1]);
    let w = io.tensor("wplus").unwrap().narrow(0, 0, 1).expand([5, 10, 64], false);
    let img = tch::no_grad(|| g.synthesis(&w, &[(LayerId::Convs(3), &deltas)])).unwrap();
    assert_forward_close(&img, &io.tensor("img_shift").unwrap(), "img_shift via per-sample deltas");
}

/// The speed options of the optimisation loop, against the parity path.
mod synthesis_options {
    use super::*;
    use clipshape::models::stylegan2::Synthesis;

    fn wplus() -> Tensor {
        io("stylegan2_io.safetensors").tensor("wplus").unwrap()
    }

    #[test]
    fn stopping_at_the_full_size_is_the_parity_path_bit_for_bit() {
        let g = gen("stylegan2.pt").generator;
        let full = tch::no_grad(|| g.synthesis(&wplus(), &[])).unwrap();
        for stop in [Some(64), Some(4096)] {
            let opts = Synthesis { stop_at: stop, ..Default::default() };
            let img = tch::no_grad(|| g.synthesis_with(&wplus(), &[], &opts)).unwrap();
            assert!(img.equal(&full), "stop_at {stop:?} differs from the full synthesis");
        }
    }

    #[test]
    fn a_stopped_synthesis_is_the_skip_image_of_that_block() {
        let g = gen("stylegan2.pt").generator;
        let w = wplus();
        let full = tch::no_grad(|| g.synthesis(&w, &[])).unwrap();
        let half =
            tch::no_grad(|| g.synthesis_with(&w, &[], &Synthesis { stop_at: Some(32), ..Default::default() })).unwrap();
        assert_eq!(half.size(), vec![2, 3, 32, 32]);
        // The full image is the 32 px skip image upsampled plus the last block's RGB: the two
        // share their coarse structure, so each image's low-pass agrees far better with its own
        // pair than with the other sample's.
        let low = |t: &Tensor| t.avg_pool2d([t.size()[2] / 8; 2], [t.size()[2] / 8; 2], [0, 0], false, true, None);
        let (lf, lh) = (low(&full), low(&half));
        let own = (&lf - &lh).abs().mean(Kind::Float).double_value(&[]);
        let swapped = (&lf - lh.flip([0])).abs().mean(Kind::Float).double_value(&[]);
        assert!(own < 0.5 * swapped, "32 px output does not look like the 64 px one: {own} vs {swapped}");
    }

    #[test]
    fn bad_stops_and_shifts_above_the_stop_are_refused_by_name() {
        let g = gen("stylegan2.pt").generator;
        for stop in [0, 4, 48, -16] {
            let e = g.synthesis_with(&wplus(), &[], &Synthesis { stop_at: Some(stop), ..Default::default() });
            let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("optimize_size") && msg.contains(&stop.to_string()), "stop {stop}: {msg}");
        }
        let x = Tensor::zeros(g.layer_weight(LayerId::Convs(6)).unwrap().size(), (Kind::Float, Device::Cpu));
        let opts = Synthesis { stop_at: Some(32), ..Default::default() };
        let msg = g.synthesis_with(&wplus(), &[(LayerId::Convs(6), &x)], &opts).err().unwrap().to_string();
        assert!(msg.contains("convs.6") && msg.contains("32 px"), "{msg}");
    }

    #[test]
    fn bf16_layers_stay_close_to_fp32_and_keep_the_gradient() {
        let g = gen("stylegan2.pt").generator;
        let w = wplus();
        let full = tch::no_grad(|| g.synthesis(&w, &[])).unwrap();
        // Every layer in bf16 (the tiny model is narrower than the production threshold).
        let opts = Synthesis { bf16_min_channels: Some(1), ..Default::default() };
        let x = Tensor::zeros(g.layer_weight(LayerId::Convs(3)).unwrap().size(), (Kind::Float, Device::Cpu))
            .set_requires_grad(true);
        let img = g.synthesis_with(&w, &[(LayerId::Convs(3), &x)], &opts).unwrap();
        assert_eq!(img.kind(), Kind::Float);
        let err = (&img.detach() - &full).abs().max().double_value(&[]);
        let scale = full.abs().max().double_value(&[]);
        assert!(err > 0.0, "bf16 gave the fp32 numbers exactly: it did not run in bf16");
        assert!(err < 0.05 * scale, "bf16 output off by {err} (image scale {scale})");
        img.sum(Kind::Float).backward();
        let gx = x.grad();
        assert!(gx.abs().sum(Kind::Float).double_value(&[]) > 0.0, "no gradient reached the shift");
    }
}
