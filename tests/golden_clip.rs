//! Parity of CLIP (ViT) with openai/CLIP on the tiny golden model, loaded from the TorchScript
//! archive and from safetensors; the official preprocessing; the generator → CLIP input path.

mod common;

use clipshape::checkpoint::Checkpoint;
use clipshape::edit::guide::{self, generator_to_clip, ClipGuide, ImageFit};
use clipshape::models::clip::{Clip, HeadCounts};
use clipshape::Error;
use common::{assert_forward_close, assert_grad_close, golden, io};
use tch::{Device, Kind, Tensor};

/// The tiny model's text tower has 2 heads of 16 (not OpenAI's 64-wide rule); the TorchScript
/// archive records that, the safetensors file does not.
const SAFETENSORS_HEADS: HeadCounts = HeadCounts { vision: None, text: Some(2) };

fn models() -> Vec<(&'static str, Clip)> {
    let jit = Checkpoint::open(golden("clip_jit.pt")).unwrap();
    let st = Checkpoint::open(golden("clip.safetensors")).unwrap();
    vec![
        ("clip_jit.pt", Clip::load(&jit, "", HeadCounts::default(), Device::Cpu).unwrap()),
        ("clip.safetensors", Clip::load(&st, "", SAFETENSORS_HEADS, Device::Cpu).unwrap()),
    ]
}

#[test]
fn config_from_shapes_and_archive() {
    for (name, m) in models() {
        let c = &m.config;
        assert_eq!(
            (c.embed_dim, c.image_resolution, c.vision_layers, c.vision_width, c.vision_patch_size),
            (32, 64, 2, 64, 16),
            "{name}"
        );
        assert_eq!(
            (c.vision_heads, c.transformer_heads, c.transformer_width, c.transformer_layers),
            (1, 2, 32, 2),
            "{name}"
        );
        assert_eq!((c.context_length, c.vocab_size), (77, 49408), "{name}");
    }
}

#[test]
fn features_and_logits() {
    let io = io("clip_io.safetensors");
    let images = io.tensor("images").unwrap();
    let tokens = io.tensor("tokens").unwrap();
    for (name, m) in models() {
        let f = tch::no_grad(|| m.encode_image(&images)).unwrap();
        assert_forward_close(&f, &io.tensor("image_features").unwrap(), &format!("{name}: image_features"));
        let t = tch::no_grad(|| m.encode_text(&tokens)).unwrap();
        assert_forward_close(&t, &io.tensor("text_features").unwrap(), &format!("{name}: text_features"));
        let (pi, pt) = tch::no_grad(|| m.logits(&images, &tokens)).unwrap();
        assert_forward_close(&pi, &io.tensor("logits_per_image").unwrap(), &format!("{name}: logits_per_image"));
        assert_forward_close(&pt, &io.tensor("logits_per_text").unwrap(), &format!("{name}: logits_per_text"));
    }
}

#[test]
fn gradient_with_respect_to_the_image() {
    let io = io("clip_io.safetensors");
    for (name, m) in models() {
        let images = io.tensor("images").unwrap().set_requires_grad(true);
        let f = m.encode_image(&images).unwrap();
        (f * io.tensor("grad_G").unwrap()).sum(Kind::Float).backward();
        assert_grad_close(&images.grad(), &io.tensor("grad_img").unwrap(), &format!("{name}: grad_img"));
        assert!(m.vs.variables().values().all(|v| !v.requires_grad()), "CLIP weights must be frozen");
    }
}

#[test]
fn guide_tokenizes_like_clip_tokenize() {
    let io = io("clip_io.safetensors");
    let g = ClipGuide::load(
        &golden("clip_jit.pt"),
        &golden("bpe_simple_vocab_16e6.txt.gz"),
        HeadCounts::default(),
        Device::Cpu,
    )
    .unwrap();
    let prompts = ["a small-wheel car", "face with big nose", "a big-belly horse", "a wide face"];
    assert!(g.tokens(&prompts, false).unwrap().equal(&io.tensor("tokens").unwrap()));
    let t = g.text_features(&prompts, false).unwrap();
    let want = io.tensor("text_features").unwrap();
    let want = &want / want.norm_scalaropt_dim(2, [-1i64].as_slice(), true);
    assert_forward_close(&t, &want, "normalised text features");
    let e = g.tokens(&["   "], false).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { name: "prompt", .. }), "{e:?}");
    let long = "cat ".repeat(100);
    let e = g.tokens(&[long.as_str()], false).unwrap_err().to_string();
    assert!(e.contains("77"), "{e}");
    assert_eq!(g.tokens(&[long.as_str()], true).unwrap().size(), vec![1, 77]);
}

#[test]
fn official_preprocessing_of_a_picture() {
    let want = io("clip_preprocess.safetensors").tensor("pixel_values").unwrap();
    let img = image::open(golden("picture.png")).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (301, 200));
    let got = guide::preprocess_rgb8(img.as_raw(), 301, 200, 224).unwrap();
    assert_eq!(got.size(), vec![1, 3, 224, 224]);
    let diff = (&got - &want).abs();
    let max = diff.max().double_value(&[]);
    // Pillow's fixed-point bicubic is reproduced: equal up to float32 rounding of the normalisation.
    assert!(max <= 1e-5, "max |ours - golden| = {max}");
}

#[test]
fn styleclip_fit_matches_its_reference() {
    let io = io("clip_preprocess.safetensors");
    let out = generator_to_clip(&io.tensor("styleclip_in").unwrap(), 224, ImageFit::StyleClip).unwrap();
    let max = (&out - io.tensor("styleclip_out").unwrap()).abs().max().double_value(&[]);
    assert!(max <= 1e-6, "{max}");
}

#[test]
fn letterbox_fit_keeps_the_whole_frame() {
    // A car frame (W 512 × H 384): marks at the far left and right columns must reach CLIP.
    let img = Tensor::zeros([1, 3, 384, 512], (Kind::Float, Device::Cpu));
    let _ = img.narrow(3, 0, 8).fill_(1.0);
    let _ = img.narrow(3, 504, 8).fill_(1.0);
    let x = generator_to_clip(&img, 224, ImageFit::Letterbox).unwrap();
    assert_eq!(x.size(), vec![1, 3, 224, 224]);
    let mid = x.select(2, 112);
    let (m, s) = (clipshape::models::clip::MEAN[0], clipshape::models::clip::STD[0]);
    let white = (1.0 - m) / s;
    let grey = (0.5 - m) / s;
    assert!((mid.double_value(&[0, 0, 0]) - white).abs() < 0.05, "left edge kept");
    assert!((mid.double_value(&[0, 0, 223]) - white).abs() < 0.05, "right edge kept");
    assert!((mid.double_value(&[0, 0, 112]) - grey).abs() < 1e-4, "centre is the mid-grey input");
    // Letterbox rows are CLIP's mean colour, i.e. zero after normalisation.
    assert!(x.narrow(2, 0, 20).abs().max().double_value(&[]) < 1e-6);
    // Square input of CLIP's size: normalisation only.
    let sq = Tensor::rand([1, 3, 224, 224], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let y = generator_to_clip(&sq, 224, ImageFit::Letterbox).unwrap();
    let (mean, std) = (
        Tensor::from_slice(&clipshape::models::clip::MEAN).to_kind(Kind::Float).view([1, 3, 1, 1]),
        Tensor::from_slice(&clipshape::models::clip::STD).to_kind(Kind::Float).view([1, 3, 1, 1]),
    );
    assert!(y.allclose(&(((&sq + 1.0) * 0.5 - mean) / std), 1e-5, 1e-6, false));
}

#[test]
fn bad_clip_input() {
    let e = Clip::load(&Checkpoint::open(golden("clip.safetensors")).unwrap(), "", HeadCounts::default(), Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, Error::UnknownArchitecture { .. }) && e.to_string().contains("head count"), "{e}");
    let e = Clip::load(&Checkpoint::open(golden("stylegan2.pt")).unwrap(), "", HeadCounts::default(), Device::Cpu)
        .err()
        .unwrap();
    assert!(e.to_string().contains("visual.conv1.weight"), "{e}");
    let e = ClipGuide::load(
        &golden("clip_jit.pt"),
        std::path::Path::new("/missing/vocab.txt.gz"),
        HeadCounts::default(),
        Device::Cpu,
    )
    .err()
    .unwrap();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("/missing/vocab.txt.gz"), "{e}");
    let e = ClipGuide::load(&golden("clip_jit.pt"), &golden("picture.png"), HeadCounts::default(), Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    for (w, h) in [(0, 0), (1, 1), (7, 300)] {
        let e = guide::preprocess_rgb8(&vec![0; w * h * 3], w, h, 224).unwrap_err().to_string();
        assert!(e.contains("too small"), "{e}");
    }
    let m = &models()[0].1;
    let e = m.encode_image(&Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
    assert!(e.contains("[B, 3, 64, 64]"), "{e}");
    let nan = Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu)).fill(f64::NAN);
    assert!(guide::check_image(&nan).unwrap_err().to_string().contains("NaN"));
}

#[test]
fn archives_that_carry_the_attention_mask_still_load() {
    let st = Checkpoint::open(golden("clip.safetensors")).unwrap();
    let mut sd: Vec<(String, Tensor)> = st.keys().map(|k| (k.to_string(), st.tensor(k).unwrap())).collect();
    let mask = Tensor::full([77, 77], f64::NEG_INFINITY, (Kind::Float, Device::Cpu)).triu(1);
    sd.push(("transformer.resblocks.0.attn_mask".into(), mask));
    let m = Clip::load(&Checkpoint::from_tensors("with-mask", sd), "", SAFETENSORS_HEADS, Device::Cpu).unwrap();
    let io = io("clip_io.safetensors");
    let t = tch::no_grad(|| m.encode_text(&io.tensor("tokens").unwrap())).unwrap();
    assert_forward_close(&t, &io.tensor("text_features").unwrap(), "text features");
    // Any other stray tensor is still reported.
    let mut sd: Vec<(String, Tensor)> = st.keys().map(|k| (k.to_string(), st.tensor(k).unwrap())).collect();
    sd.push(("transformer.resblocks.0.extra".into(), Tensor::zeros([1], (Kind::Float, Device::Cpu))));
    let e = Clip::load(&Checkpoint::from_tensors("stray", sd), "", SAFETENSORS_HEADS, Device::Cpu).err().unwrap();
    assert!(e.to_string().contains("transformer.resblocks.0.extra"), "{e}");
}
