//! Bad input gets a clear error naming what was wrong, never a panic.

mod common;

use std::path::Path;

use clipshape::checkpoint::torch::CheckpointError;
use clipshape::checkpoint::Checkpoint;
use clipshape::context::{Context, ContextParams};
use clipshape::device::DeviceRequest;
use clipshape::edit::{self, Latent, Shift};
use clipshape::models::{load_generator, load_generator_from, stylegan2::Generator};
use clipshape::Error;
use common::{golden, tmpdir};
use tch::{Device, Kind, Tensor};

fn tiny() -> Generator {
    load_generator(&golden("stylegan2.safetensors"), Device::Cpu).unwrap().generator
}

fn load_err(path: &Path) -> Error {
    match load_generator(path, Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

/// The golden state dict, edited by `f`, as an in-memory checkpoint.
fn edited(f: impl FnOnce(&mut Vec<(String, Tensor)>)) -> Error {
    let ck = Checkpoint::open(golden("stylegan2.safetensors")).unwrap();
    let mut sd: Vec<(String, Tensor)> = ck.keys().map(|k| (k.to_string(), ck.tensor(k).unwrap())).collect();
    f(&mut sd);
    match load_generator_from(&Checkpoint::from_tensors("edited.safetensors", sd), Device::Cpu) {
        Ok(_) => panic!("edited checkpoint loaded"),
        Err(e) => e,
    }
}

#[test]
fn missing_file_names_the_path() {
    let e = load_err(Path::new("/nonexistent/dir/g.pt"));
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/dir/g.pt"), "{e}");
}

#[test]
fn empty_random_and_truncated_files() {
    let dir = tmpdir();
    let empty = dir.path().join("empty.pt");
    std::fs::write(&empty, b"").unwrap();
    let e = load_err(&empty);
    assert!(matches!(e, Error::Format { .. }) && e.to_string().contains("empty"), "{e}");

    let noise = dir.path().join("noise.pt");
    std::fs::write(&noise, (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>()).unwrap();
    let e = load_err(&noise);
    assert!(matches!(e, Error::Format { .. }) && e.to_string().contains("noise.pt"), "{e}");

    for name in ["stylegan2.pt", "stylegan2.safetensors"] {
        let bytes = std::fs::read(golden(name)).unwrap();
        let cut = dir.path().join(format!("cut-{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = load_err(&cut);
        // A torch file keeps the reader's own error kind: corrupt, not an I/O failure.
        assert!(
            matches!(e, Error::Format { .. } | Error::Checkpoint(CheckpointError::Corrupt { .. })),
            "{name}: {e:?}"
        );
        assert!(e.to_string().contains("cut-"), "{e}");
    }
}

#[test]
fn a_file_that_is_not_a_generator() {
    for name in ["e4e_encoder.safetensors", "clip_jit.pt", "stylegan2_io.safetensors"] {
        let e = load_err(&golden(name));
        assert!(matches!(e, Error::UnknownArchitecture { .. }), "{name}: {e:?}");
        assert!(e.to_string().contains("style.1.weight") && e.to_string().contains(name), "{e}");
    }
}

#[test]
fn missing_extra_and_misshapen_keys_are_all_reported() {
    let e = edited(|sd| sd.retain(|(k, _)| k != "convs.3.conv.modulation.bias"));
    assert!(e.to_string().contains("missing `convs.3.conv.modulation.bias`"), "{e}");

    let e = edited(|sd| sd.push(("convs.3.conv.extra".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu)))));
    assert!(e.to_string().contains("unexpected `convs.3.conv.extra`"), "{e}");

    let e = edited(|sd| {
        for (k, t) in sd.iter_mut() {
            if k == "convs.5.activate.bias" {
                *t = Tensor::zeros([7], (Kind::Float, Device::Cpu));
            }
        }
        sd.retain(|(k, _)| k != "noises.noise_2");
    });
    let msg = e.to_string();
    assert!(matches!(e, Error::Keys { .. }), "{e:?}");
    assert!(msg.contains("`convs.5.activate.bias` has shape [7], expected [24]"), "{msg}");
    assert!(msg.contains("missing `noises.noise_2`"), "both problems in one message: {msg}");
}

#[test]
fn layer_names_and_shift_shapes() {
    let g = tiny();
    let e = g.layer_by_name("convs.99").unwrap_err().to_string();
    assert!(e.contains("convs.99") && e.contains("convs.7"), "lists the valid layers: {e}");
    assert!(g.layer_by_name("blocks.1").is_err());
    assert_eq!(g.layer_by_name("convs.3.conv.weight").unwrap().resolution, 16);

    let e = Shift::new(&g, "convs.3", Tensor::zeros([1, 32, 32, 1, 1], (Kind::Float, Device::Cpu)))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("[1, 32, 32, 1, 1]") && e.contains("[1, 32, 32, 3, 3]"), "{e}");
    let e = Shift::from_slice(&g, "convs.3", &[0.0; 10]).err().unwrap().to_string();
    assert!(e.contains("10 floats") && e.contains("9216"), "{e}");
}

#[test]
fn nan_and_inf_are_refused() {
    let g = tiny();
    let mut w = vec![0.1f32; 640];
    w[17] = f32::NAN;
    let e = Latent::from_slice(&g, &w).err().unwrap().to_string();
    assert!(e.contains("latent") && e.contains("NaN"), "{e}");
    let x = Tensor::zeros([1, 32, 32, 3, 3], (Kind::Float, Device::Cpu)).fill(f64::INFINITY);
    let e = Shift::new(&g, "convs.3", x).err().unwrap().to_string();
    assert!(e.contains("shift") && e.contains("infinity"), "{e}");

    let latent = Latent::from_slice(&g, &[0.1; 640]).unwrap();
    let e = edit::render(&g, &latent, &[], &[0.0, f64::NAN], 8).err().unwrap().to_string();
    assert!(e.contains("strengths"), "{e}");
    let e = edit::render(&g, &latent, &[], &[], 8).err().unwrap().to_string();
    assert!(e.contains("strengths") && e.contains("empty"), "{e}");
    let e = Latent::from_seed(&g, 1, f64::NAN, None).err().unwrap().to_string();
    assert!(e.contains("truncation"), "{e}");
}

#[test]
fn files_of_the_wrong_kind_or_generator() {
    let g = tiny();
    let dir = tmpdir();
    // A latent file whose W+ does not fit.
    let wrong = dir.path().join("wrong-latent.safetensors");
    let bytes = clipshape::io::safetensors_bytes(
        &[("wplus", &Tensor::zeros([3, 64], (Kind::Float, Device::Cpu)))],
        &Default::default(),
    )
    .unwrap();
    std::fs::write(&wrong, bytes).unwrap();
    let e = Latent::load(&g, &wrong).err().unwrap().to_string();
    assert!(e.contains("wrong-latent.safetensors") && e.contains("wplus") && e.contains("[3, 64]"), "{e}");

    // A shift learned on another generator (a 256 px config-f) is refused by the tiny one.
    let sd = clipshape::models::init::stylegan2(64, 2, &[(4, 16), (8, 16), (16, 8)], 3).unwrap();
    let other = Generator::load(&Checkpoint::from_tensors("other", sd), "", Device::Cpu).unwrap();
    let foreign = Shift::new(&other, "convs.3", Tensor::ones([1, 8, 8, 3, 3], (Kind::Float, Device::Cpu))).unwrap();
    let path = dir.path().join("foreign.safetensors");
    foreign.save(&path).unwrap();
    let e = Shift::load(&g, &path).err().unwrap();
    assert!(matches!(e, Error::Mismatch(_)), "{e:?}");
    assert!(e.to_string().contains("foreign.safetensors") && e.to_string().contains("[1, 8, 8, 3, 3]"), "{e}");
    let e =
        edit::render(&g, &Latent::from_slice(&g, &[0.0; 640]).unwrap(), &[(&foreign, 1.0)], &[1.0], 8).err().unwrap();
    assert!(matches!(e, Error::Mismatch(_)), "{e:?}");

    // A shift file without its layer.
    let nolayer = dir.path().join("nolayer.safetensors");
    let bytes = clipshape::io::safetensors_bytes(
        &[("shift", &Tensor::zeros([1, 32, 32, 3, 3], (Kind::Float, Device::Cpu)))],
        &Default::default(),
    )
    .unwrap();
    std::fs::write(&nolayer, bytes).unwrap();
    let e = Shift::load(&g, &nolayer).err().unwrap().to_string();
    assert!(e.contains("layer") && e.contains("nolayer.safetensors"), "{e}");
}

#[test]
fn an_absent_gpu_is_a_device_error() {
    let params = ContextParams { device: DeviceRequest::Cuda(5), ..ContextParams::new(golden("stylegan2.pt")) };
    let e = Context::new(&params).err().unwrap();
    assert!(matches!(e, Error::Device(_)) && e.to_string().contains("cuda:5"), "{e:?}");
}

#[test]
fn encoder_and_generator_must_belong_together() {
    let dir = tmpdir();
    // A generator with another W+ size (a 3-block, 32 px one) next to the 64 px e4e encoder.
    let sd = clipshape::models::init::stylegan2(64, 2, &[(4, 16), (8, 16), (16, 8), (32, 8)], 1).unwrap();
    let refs: Vec<(&str, &Tensor)> = sd.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let gen = dir.path().join("g32.safetensors");
    std::fs::write(&gen, clipshape::io::safetensors_bytes(&refs, &Default::default()).unwrap()).unwrap();
    let params =
        ContextParams { encoder: Some(golden("e4e.pt")), device: DeviceRequest::Cpu, ..ContextParams::new(&gen) };
    let e = Context::new(&params).err().unwrap();
    assert!(matches!(e, Error::Mismatch(_)) && e.to_string().contains("e4e.pt"), "{e:?}");

    // An encoder file without latent_avg cannot invert.
    let params = ContextParams {
        encoder: Some(golden("e4e_encoder.safetensors")),
        device: DeviceRequest::Cpu,
        ..ContextParams::new(golden("stylegan2.safetensors"))
    };
    let e = Context::new(&params).err().unwrap();
    assert!(matches!(e, Error::MissingTensor { .. }) && e.to_string().contains("latent_avg"), "{e:?}");

    // A context without an encoder says so when asked to encode.
    let ctx = Context::new(&ContextParams { device: DeviceRequest::Cpu, ..ContextParams::new(golden("stylegan2.pt")) })
        .unwrap();
    let px = vec![128u8; 16 * 16 * 3];
    let view = clipshape::edit::encode::ImageView::packed(&px, 16, 16, clipshape::edit::PixelFormat::Rgb8).unwrap();
    let e = ctx.encode(&view).err().unwrap().to_string();
    assert!(e.contains("encoder"), "{e}");
    let e = ctx.clip_score(&view, &["a face"]).err().unwrap().to_string();
    assert!(e.contains("CLIP"), "{e}");
}

#[test]
fn enormous_and_degenerate_pictures_fail_fast() {
    use clipshape::edit::encode::ImageView;
    use clipshape::edit::PixelFormat;
    let px = vec![0u8; 64];
    let e = ImageView::new(&px, 20_000, 2, 80_000, PixelFormat::Rgba8).err().unwrap().to_string();
    assert!(e.contains("16384"), "{e}");
    let e = ImageView::new(&px, 1, 1, 4, PixelFormat::Rgba8).err().unwrap().to_string();
    assert!(e.contains("width") || e.contains("height"), "{e}");
    let e = ImageView::new(&px, 4, 4, 8, PixelFormat::Rgba8).err().unwrap().to_string();
    assert!(e.contains("stride") || e.contains("width"), "{e}");
}

#[test]
fn tensors_of_the_wrong_rank_are_refused_not_indexed() {
    let e = edited(|sd| {
        for (k, t) in sd.iter_mut() {
            if k == "style.1.weight" {
                *t = Tensor::zeros([64], (Kind::Float, Device::Cpu));
            }
        }
    });
    assert!(matches!(e, Error::UnknownArchitecture { .. }) && e.to_string().contains("style.1.weight"), "{e:?}");
    let st = Checkpoint::open(golden("clip.safetensors")).unwrap();
    let sd: Vec<(String, Tensor)> = st
        .keys()
        .map(|k| {
            let t = st.tensor(k).unwrap();
            (k.to_string(), if k == "ln_final.weight" { Tensor::zeros([], (Kind::Float, Device::Cpu)) } else { t })
        })
        .collect();
    let heads = clipshape::models::clip::HeadCounts { vision: None, text: Some(2) };
    let e = clipshape::models::clip::Clip::load(&Checkpoint::from_tensors("rank", sd), "", heads, Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, Error::UnknownArchitecture { .. }) && e.to_string().contains("ln_final"), "{e:?}");
}

#[test]
fn nan_weights_name_the_file_and_tensor() {
    // Decoder weight, mapping weight, mean latent: each is named, not met later as a NaN loss.
    for key in ["convs.3.conv.weight", "style.1.weight"] {
        let e = edited(|sd| {
            for (k, t) in sd.iter_mut() {
                if k == key {
                    *t = t.full_like(f64::NAN);
                }
            }
        });
        assert!(matches!(&e, Error::NotFinite { key: k, .. } if k == key), "{key}: {e:?}");
    }
    let dir = tmpdir();
    let ck = Checkpoint::open(golden("e4e_encoder.safetensors")).unwrap();
    let key = ck.keys().find(|k| k.ends_with("input_layer.0.weight")).expect("stem conv").to_string();
    let tensors: Vec<(String, Tensor)> = ck
        .keys()
        .map(|k| {
            let t = ck.tensor(k).unwrap();
            (k.to_string(), if k == key { t.full_like(f64::INFINITY) } else { t })
        })
        .collect();
    let bad = dir.path().join("inf-encoder.safetensors");
    Tensor::write_safetensors(&tensors, &bad).unwrap();
    let e = Checkpoint::open(&bad).unwrap().tensor(&key).unwrap_err();
    assert!(e.to_string().contains(&key) && e.to_string().contains("inf-encoder"), "{e}");

    // A shift file full of NaN is a bad file (format), not a shift of another generator.
    let g = tiny();
    let shape = g.layer_weight(clipshape::models::stylegan2::LayerId::Convs(3)).unwrap().size();
    let nan_shift = dir.path().join("nan-shift.safetensors");
    let meta = std::collections::HashMap::from([("layer".to_string(), "convs.3".to_string())]);
    let x = Tensor::full(shape.as_slice(), f64::NAN, (Kind::Float, Device::Cpu));
    std::fs::write(&nan_shift, clipshape::io::safetensors_bytes(&[("shift", &x)], &meta).unwrap()).unwrap();
    let e = Shift::load(&g, &nan_shift).err().expect("refused");
    assert!(matches!(e, Error::NotFinite { .. }), "{e:?}");
}

#[test]
fn thread_counts_and_strength_counts_have_limits() {
    let p =
        ContextParams { threads: 100_000, device: DeviceRequest::Cpu, ..ContextParams::new(golden("stylegan2.pt")) };
    let e = Context::new(&p).err().expect("refused");
    assert!(matches!(&e, Error::InvalidArgument { name: "threads", .. }), "{e:?}");

    let g = tiny();
    let latent = Latent::from_seed(&g, 1, 1.0, None).unwrap();
    let many = vec![0.0; edit::render::MAX_STRENGTHS + 1];
    let e = edit::render(&g, &latent, &[], &many, 8).unwrap_err();
    assert!(e.to_string().contains("257") && e.to_string().contains("strengths"), "{e}");
}

#[test]
fn a_shift_file_whose_tensors_or_fingerprints_disagree_with_its_layers_is_refused() {
    let g = tiny();
    let dir = tmpdir();
    let x3 = Tensor::zeros([1, 32, 32, 3, 3], (Kind::Float, Device::Cpu));
    let x5 = Tensor::zeros(
        g.layer_weight(clipshape::models::stylegan2::LayerId::Convs(5)).unwrap().size(),
        (Kind::Float, Device::Cpu),
    );
    let print = |l: usize| {
        clipshape::edit::shift::target_fingerprint(
            &g,
            clipshape::edit::shift::Target::Layer(clipshape::models::stylegan2::LayerId::Convs(l)),
        )
        .unwrap()
    };
    let write = |name: &str, tensors: &[(&str, &Tensor)], meta: &[(&str, String)]| {
        let path = dir.path().join(name);
        let meta = meta.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        std::fs::write(&path, clipshape::io::safetensors_bytes(tensors, &meta).unwrap()).unwrap();
        path
    };
    let both = format!("{},{}", print(3), print(5));
    let cases = [
        // Both forms of one layer: which one is meant?
        (
            write("two-forms.safetensors", &[("shift", &x3), ("shift.convs.3", &x3)], &[("layer", "convs.3".into())]),
            "shift.convs.3",
        ),
        // A tensor `layer` does not name would be silently left out.
        (
            write(
                "stray.safetensors",
                &[("shift.convs.3", &x3), ("shift.convs.5", &x5)],
                &[("layer", "convs.3".into())],
            ),
            "shift.convs.5",
        ),
        (
            write("missing.safetensors", &[("shift.convs.3", &x3)], &[("layer", "convs.3,convs.5".into())]),
            "no tensor `shift.convs.5`",
        ),
        (
            write(
                "short-prints.safetensors",
                &[("shift.convs.3", &x3), ("shift.convs.5", &x5)],
                &[("layer", "convs.3,convs.5".into()), ("layer_sha256", print(3))],
            ),
            "1 fingerprints for the 2 layers",
        ),
    ];
    for (path, what) in &cases {
        let e = Shift::load(&g, path).err().unwrap_or_else(|| panic!("{} loaded", path.display()));
        assert!(matches!(e, Error::Format { .. }), "{e:?}");
        assert!(e.to_string().contains(what) && e.to_string().contains(&*path.display().to_string()), "{e}");
    }
    // Fingerprints in the file's `layer` order, spaced and in capitals, are the same fingerprints.
    let spaced = write(
        "spaced.safetensors",
        &[("shift.convs.3", &x3), ("shift.convs.5", &x5)],
        &[
            ("layer", "convs.5, convs.3".into()),
            ("layer_sha256", format!("{} , {}", print(5).to_uppercase(), print(3))),
        ],
    );
    let s = Shift::load(&g, &spaced).unwrap();
    assert_eq!((s.layer_names(), s.meta["layer_sha256"].clone()), ("convs.3,convs.5".to_string(), both));
}
