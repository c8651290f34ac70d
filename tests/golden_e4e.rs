//! Parity of the e4e encoder with omertov/encoder4editing's `Encoder4Editing(50, 'ir_se')` on
//! the tiny golden model, loaded from the official `.pt` layout and from safetensors, and the
//! pSp pipeline on top (codes + latent_avg → decoder → face pool). Tolerance: golden README
//! (forward outputs: max|ours - golden| <= 1e-4 · max|golden|).

mod common;

use clipshape::checkpoint::Checkpoint;
use clipshape::edit::encode::{invert, to_encoder_input, ImageView};
use clipshape::edit::PixelFormat;
use clipshape::models::e4e::{self, Config, Encoder4Editing};
use clipshape::models::load_generator;
use clipshape::Error;
use common::{assert_forward_close, golden, io};
use tch::{Device, Kind, Tensor};

/// (file, prefix) pairs holding the same encoder.
const FILES: [(&str, &str); 2] = [("e4e.pt", "state_dict.encoder."), ("e4e_encoder.safetensors", "")];

fn encoder(file: &str, prefix: &str) -> Encoder4Editing {
    let ck = Checkpoint::open(golden(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    Encoder4Editing::load(&ck, prefix, Device::Cpu).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn golden_state_dict() -> Vec<(String, Tensor)> {
    let ck = Checkpoint::open(golden("e4e_encoder.safetensors")).unwrap();
    ck.keys().map(|k| (k.to_string(), ck.tensor(k).unwrap())).collect()
}

fn load_edited(f: impl FnOnce(&mut Vec<(String, Tensor)>)) -> Error {
    let mut sd = golden_state_dict();
    f(&mut sd);
    match Encoder4Editing::load(&Checkpoint::from_tensors("edited.safetensors", sd), "", Device::Cpu) {
        Ok(_) => panic!("edited checkpoint loaded"),
        Err(e) => e,
    }
}

#[test]
fn config_is_read_from_the_shapes() {
    for (file, prefix) in FILES {
        let e = encoder(file, prefix);
        let want = Config {
            stem: 8,
            widths: [8, 16, 32, 64],
            units: [3, 4, 14, 3],
            se_reduction: 4,
            n_styles: 10,
            style_dim: 64,
            coarse_ind: 3,
            middle_ind: 7,
        };
        assert_eq!(e.config, want, "{file}");
        assert_eq!((e.n_styles(), e.style_dim()), (10, 64));
        assert_eq!((e.body.len(), e.styles.len()), (24, 10));
        assert_eq!([e.config.stage_end(1), e.config.stage_end(2), e.config.stage_end(3)], [6, 20, 23]);
    }
    let ck = Checkpoint::open(golden("e4e.pt")).unwrap();
    assert_eq!(e4e::detect_prefix(&ck).unwrap(), "state_dict.encoder.");
    let st = Checkpoint::open(golden("e4e_encoder.safetensors")).unwrap();
    assert_eq!(e4e::detect_prefix(&st).unwrap(), "");
}

#[test]
fn opts_are_readable() {
    let ck = Checkpoint::open(golden("e4e.pt")).unwrap();
    assert_eq!(e4e::opts_stylegan_size(&ck), Some(64));
    assert_eq!(e4e::opts_dataset_type(&ck).as_deref(), Some("ffhq_encode"));
    let st = Checkpoint::open(golden("e4e_encoder.safetensors")).unwrap();
    assert_eq!((e4e::opts_stylegan_size(&st), e4e::opts_dataset_type(&st)), (None, None));
}

#[test]
fn codes_match_the_reference() {
    let io = io("e4e_io.safetensors");
    let x = io.tensor("input").unwrap();
    for (file, prefix) in FILES {
        let e = encoder(file, prefix);
        let codes = tch::no_grad(|| e.forward(&x)).unwrap();
        assert_forward_close(&codes, &io.tensor("codes").unwrap(), &format!("{file}: codes"));
    }
}

#[test]
fn wplus_and_reconstruction_through_the_decoder() {
    let io = io("e4e_io.safetensors");
    let ck = Checkpoint::open(golden("e4e.pt")).unwrap();
    let e = Encoder4Editing::load(&ck, "state_dict.encoder.", Device::Cpu).unwrap();
    let avg = e4e::latent_avg(&ck, &e.config, Device::Cpu).unwrap().expect("e4e.pt carries latent_avg");
    assert_forward_close(&avg, &io.tensor("latent_avg").unwrap(), "latent_avg");

    let codes = tch::no_grad(|| e.forward(&io.tensor("input").unwrap())).unwrap();
    let wplus = &codes + avg.unsqueeze(0);
    assert_forward_close(&wplus, &io.tensor("wplus").unwrap(), "wplus");

    let g = load_generator(&golden("e4e.pt"), Device::Cpu).unwrap();
    assert_eq!(g.prefix, "state_dict.decoder.");
    let recon_full = tch::no_grad(|| g.generator.synthesis(&wplus, &[])).unwrap();
    assert_forward_close(&recon_full, &io.tensor("recon_full").unwrap(), "recon_full");
    let recon = recon_full.adaptive_avg_pool2d([16, 16]);
    assert_forward_close(&recon, &io.tensor("recon").unwrap(), "recon");
}

#[test]
fn invert_adds_latent_avg_to_the_codes_of_the_preprocessed_photo() {
    let ck = Checkpoint::open(golden("e4e.pt")).unwrap();
    let e = Encoder4Editing::load(&ck, "state_dict.encoder.", Device::Cpu).unwrap();
    let avg = e4e::latent_avg(&ck, &e.config, Device::Cpu).unwrap().unwrap();
    let (w, h) = (300u32, 200u32);
    let pixels: Vec<u8> = (0..w * h).flat_map(|i| [(i % 251) as u8, (i / 7 % 256) as u8, 90, 255]).collect();
    let view = ImageView::packed(&pixels, w, h, PixelFormat::Rgba8).unwrap();
    let wplus = invert(&e, Some(&avg), &view, (256, 256), &|| false).unwrap();
    assert_eq!(wplus.size(), vec![1, 10, 64]);
    let x = to_encoder_input(&view, 256, 256, Device::Cpu).unwrap();
    let codes = tch::no_grad(|| e.forward(&x)).unwrap();
    assert!(wplus.allclose(&(codes + avg.unsqueeze(0)), 0.0, 0.0, false));
}

#[test]
fn a_generator_is_not_an_encoder() {
    let ck = Checkpoint::open(golden("stylegan2.safetensors")).unwrap();
    let e = Encoder4Editing::load(&ck, "", Device::Cpu).err().expect("stylegan2 loaded as an encoder");
    assert!(matches!(e, Error::UnknownArchitecture { .. }), "{e:?}");
    assert!(e.to_string().contains("input_layer.0.weight"), "{e}");
    let e = e4e::detect_prefix(&ck).unwrap_err();
    assert!(matches!(e, Error::UnknownArchitecture { .. }), "{e:?}");
}

#[test]
fn missing_key_is_named() {
    let key = "body.5.res_layer.5.fc2.weight";
    let e = load_edited(|sd| sd.retain(|(k, _)| k != key));
    assert!(matches!(e, Error::Keys { .. }), "{e:?}");
    assert!(e.to_string().contains(key), "{e}");
    let e = load_edited(|sd| sd.retain(|(k, _)| k != "styles.4.linear.bias" && k != "latlayer2.bias"));
    assert!(e.to_string().contains("styles.4.linear.bias") && e.to_string().contains("latlayer2.bias"), "{e}");
}

#[test]
fn wrong_shape_is_named() {
    let key = "body.12.res_layer.4.running_var";
    let e = load_edited(|sd| {
        for (k, t) in sd.iter_mut() {
            if k == key {
                *t = Tensor::ones([33], (Kind::Float, Device::Cpu));
            }
        }
    });
    assert!(matches!(e, Error::Keys { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(key) && msg.contains("[33]") && msg.contains("[32]"), "{msg}");
}

#[test]
fn unexpected_key_is_named() {
    let e = load_edited(|sd| {
        sd.push(("styles.3.convs.10.weight".into(), Tensor::zeros([64, 64, 3, 3], (Kind::Float, Device::Cpu))))
    });
    assert!(matches!(e, Error::Keys { .. }) && e.to_string().contains("styles.3.convs.10.weight"), "{e}");
}

#[test]
fn wrong_input_is_an_invalid_argument() {
    let e = encoder("e4e_encoder.safetensors", "");
    let opts = (Kind::Float, Device::Cpu);
    for shape in
        [vec![1, 4, 256, 256], vec![1, 3, 512, 512], vec![1, 3, 250, 256], vec![3, 256, 256], vec![0, 3, 256, 256]]
    {
        let err = e.forward(&Tensor::zeros(shape.as_slice(), opts)).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "x", .. }), "{shape:?}: {err:?}");
        assert!(err.to_string().contains(&format!("{shape:?}")), "{err}");
    }
    let err = e.forward(&Tensor::zeros([1, 3, 256, 256], (Kind::Double, Device::Cpu))).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "x", .. }) && err.to_string().contains("float32"), "{err}");
    // Cars: 192×256 runs and gives the same number of entries.
    let codes = tch::no_grad(|| e.forward(&Tensor::zeros([1, 3, 192, 256], opts))).unwrap();
    assert_eq!(codes.size(), vec![1, 10, 64]);
}
