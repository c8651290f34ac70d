//! Parity of the FID Inception-v3 with pytorch-fid's `InceptionV3([3])` pool3 features, on the
//! narrow random model of `tests/fixtures/inception/` (every width / 16, the official file's
//! layout: a legacy torch.save of a plain dict of parameters, no `num_batches_tracked`), made by
//! `make_tiny.py` there, whose network was checked against pytorch-fid 0.3.0 at full width.
//! Tolerance: golden README (forward outputs: max|ours - golden| <= 1e-4 · max|golden|).

mod common;

use std::path::{Path, PathBuf};

use clipshape::checkpoint::Checkpoint;
use clipshape::models::inception::Inception;
use clipshape::Error;
use common::assert_forward_close;
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inception").join(name)
}

fn io() -> Checkpoint {
    Checkpoint::open(fixture("tiny_inception_io.safetensors")).expect("tiny_inception_io.safetensors")
}

fn tiny() -> Inception {
    Inception::load(&fixture("tiny_inception.pth"), Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

fn tiny_state_dict() -> Vec<(String, Tensor)> {
    let ck = Checkpoint::open(fixture("tiny_inception.pth")).unwrap();
    ck.keys().map(|k| (k.to_string(), ck.tensor(k).unwrap())).collect()
}

fn load_edited(f: impl FnOnce(&mut Vec<(String, Tensor)>)) -> Result<Inception, Error> {
    let mut sd = tiny_state_dict();
    f(&mut sd);
    Inception::load_checkpoint(&Checkpoint::from_tensors("edited.safetensors", sd), "", Device::Cpu)
}

fn load_err(f: impl FnOnce(&mut Vec<(String, Tensor)>)) -> Error {
    match load_edited(f) {
        Ok(_) => panic!("edited checkpoint loaded"),
        Err(e) => e,
    }
}

#[test]
fn the_fixture_has_the_official_key_layout() {
    let sd = tiny_state_dict();
    // 94 BasicConv2d × (conv.weight + 4 BatchNorm tensors) + fc.weight + fc.bias.
    assert_eq!(sd.len(), 94 * 5 + 2);
    assert!(sd.iter().all(|(k, _)| !k.ends_with("num_batches_tracked")));
    let shape = |key: &str| sd.iter().find(|(k, _)| k == key).map(|(_, t)| t.size());
    assert_eq!(shape("Conv2d_1a_3x3.conv.weight"), Some(vec![2, 3, 3, 3]));
    assert_eq!(shape("Mixed_6b.branch7x7_2.conv.weight"), Some(vec![8, 8, 1, 7]));
    assert_eq!(shape("fc.weight"), Some(vec![63, 128]));
}

#[test]
fn pool3_matches_the_reference() {
    let net = tiny();
    assert_eq!(net.pool3_dim(), 128);
    let io = io();
    for (images, pool3) in [("images", "pool3"), ("images_wide", "pool3_wide")] {
        let x = io.tensor(images).unwrap();
        let ours = tch::no_grad(|| net.features(&x)).unwrap();
        assert_forward_close(&ours, &io.tensor(pool3).unwrap(), pool3);
    }
}

#[test]
fn features_do_not_mix_the_batch() {
    let net = tiny();
    let x = io().tensor("images").unwrap();
    let all = tch::no_grad(|| net.features(&x)).unwrap();
    for i in 0..x.size()[0] {
        let one = tch::no_grad(|| net.features(&x.narrow(0, i, 1))).unwrap();
        assert_forward_close(&one, &all.narrow(0, i, 1), &format!("image {i} alone"));
    }
}

#[test]
fn batchnorm_counters_and_a_missing_classifier_are_accepted() {
    let want = io().tensor("pool3").unwrap();
    let x = io().tensor("images").unwrap();
    // `FIDInceptionV3().state_dict()` saved by a current torch: one int64 counter per BatchNorm.
    let with_counters = load_edited(|sd| {
        let bns: Vec<String> = sd
            .iter()
            .filter_map(|(k, _)| k.strip_suffix(".bn.running_var").map(|p| format!("{p}.bn.num_batches_tracked")))
            .collect();
        assert_eq!(bns.len(), 94);
        sd.extend(bns.into_iter().map(|k| (k, Tensor::from(0i64))));
    })
    .unwrap();
    let ours = tch::no_grad(|| with_counters.features(&x)).unwrap();
    assert_forward_close(&ours, &want, "with num_batches_tracked");
    // A features-only export (no fc).
    let no_fc = load_edited(|sd| sd.retain(|(k, _)| !k.starts_with("fc."))).unwrap();
    let ours = tch::no_grad(|| no_fc.features(&x)).unwrap();
    assert_forward_close(&ours, &want, "without fc");
}

#[test]
fn missing_keys_are_named() {
    let key = "Mixed_6c.branch7x7dbl_3.bn.running_var";
    let e = load_err(|sd| sd.retain(|(k, _)| k != key));
    assert!(matches!(e, Error::Keys { .. }), "{e:?}");
    assert!(e.to_string().contains(key), "{e}");
    // A conv weight's width comes from its BatchNorm then: still one key error, not a guess.
    let (a, b) = ("Mixed_7b.branch3x3_2b.conv.weight", "Conv2d_4a_3x3.bn.bias");
    let e = load_err(|sd| sd.retain(|(k, _)| k != a && k != b));
    assert!(matches!(e, Error::Keys { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(a) && msg.contains("[24, 24, 3, 1]") && msg.contains(b), "{msg}");
}

#[test]
fn a_layer_without_any_key_is_unknown_architecture() {
    let e = load_err(|sd| sd.retain(|(k, _)| !k.starts_with("Mixed_5c.branch_pool.")));
    assert!(matches!(e, Error::UnknownArchitecture { .. }), "{e:?}");
    assert!(e.to_string().contains("Mixed_5c.branch_pool.conv.weight"), "{e}");
}

#[test]
fn wrong_shapes_are_named() {
    // A 3×3 where Mixed_5b's second 5×5-branch conv has a 5×5 kernel.
    let key = "Mixed_5b.branch5x5_2.conv.weight";
    let e = load_err(|sd| {
        for (k, t) in sd.iter_mut() {
            if k == key {
                *t = Tensor::zeros([4, 3, 3, 3], (Kind::Float, Device::Cpu));
            }
        }
    });
    assert!(matches!(e, Error::Keys { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(key) && msg.contains("[4, 3, 3, 3]") && msg.contains("[4, 3, 5, 5]"), "{msg}");
    // A wider branch1x1 (5 channels, its BatchNorm still 4) also widens Mixed_5b's output from
    // 16 to 17 channels, which every 1×1 of Mixed_5c then expects.
    let key = "Mixed_5b.branch1x1.conv.weight";
    let e = load_err(|sd| {
        for (k, t) in sd.iter_mut() {
            if k == key {
                *t = Tensor::zeros([5, 12, 1, 1], (Kind::Float, Device::Cpu));
            }
        }
    });
    let msg = e.to_string();
    assert!(msg.contains("`Mixed_5b.branch1x1.bn.weight` has shape [4], expected [5]"), "{msg}");
    assert!(msg.contains("`Mixed_5c.branch1x1.conv.weight` has shape [4, 16, 1, 1], expected [4, 17, 1, 1]"), "{msg}");
}

#[test]
fn unexpected_keys_are_named() {
    let key = "Mixed_7c.branch_pool2.conv.weight";
    let e = load_err(|sd| sd.push((key.into(), Tensor::zeros([12, 128, 1, 1], (Kind::Float, Device::Cpu)))));
    assert!(matches!(e, Error::Keys { .. }) && e.to_string().contains(key), "{e}");
}

#[test]
fn torchvision_imagenet_weights_are_refused() {
    let e = load_err(|sd| {
        sd.push(("AuxLogits.conv0.conv.weight".into(), Tensor::zeros([8, 48, 1, 1], (Kind::Float, Device::Cpu))))
    });
    assert!(matches!(e, Error::UnknownArchitecture { .. }), "{e:?}");
    assert!(e.to_string().contains("torchvision"), "{e}");
}

#[test]
fn wrong_input_is_an_invalid_argument() {
    let net = tiny();
    let opts = (Kind::Float, Device::Cpu);
    for shape in [vec![1, 4, 64, 64], vec![3, 64, 64], vec![0, 3, 64, 64], vec![1, 3, 0, 64]] {
        let err = net.features(&Tensor::zeros(shape.as_slice(), opts)).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "images", .. }), "{shape:?}: {err:?}");
        assert!(err.to_string().contains(&format!("{shape:?}")), "{err}");
    }
    let err = net.features(&Tensor::zeros([1, 3, 64, 64], (Kind::Double, Device::Cpu))).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "images", .. }) && err.to_string().contains("float32"));
    // Any size, square or not, gives one pool3 row per image.
    let f = tch::no_grad(|| net.features(&Tensor::zeros([2, 3, 7, 500], opts))).unwrap();
    assert_eq!(f.size(), vec![2, 128]);
}

#[test]
fn random_weights_for_benchmarks_have_the_official_layout() {
    // At the fixture's divisor: the keys and shapes the reference code wrote.
    let shapes = |sd: &[(String, Tensor)]| -> std::collections::BTreeMap<String, Vec<i64>> {
        sd.iter().map(|(k, t)| (k.clone(), t.size())).collect()
    };
    let (got, want) = (shapes(&clipshape::models::init::inception(16, 0).unwrap()), shapes(&tiny_state_dict()));
    let differ: Vec<_> = want.iter().filter(|(k, s)| got.get(*k) != Some(s)).collect();
    assert!(
        differ.is_empty() && got.len() == want.len(),
        "{} keys made, {} differ: {differ:?}",
        got.len(),
        differ.len()
    );
    // Full width: the official file's 472 tensors (its 95,628,359 bytes hold ~23.9 M floats).
    let full = clipshape::models::init::inception(1, 0).unwrap();
    let floats: i64 = full.iter().map(|(_, t)| t.numel() as i64).sum();
    assert_eq!(full.len(), 472);
    assert!((floats * 4 - 95_628_359).abs() < 200_000, "{floats} floats");
    let net = Inception::load_checkpoint(&Checkpoint::from_tensors("random", full), "", Device::Cpu).unwrap();
    assert_eq!(net.pool3_dim(), 2048);
}
