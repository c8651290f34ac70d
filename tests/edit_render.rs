//! Rendering semantics the paper relies on: k = 0 is the unedited image, shifts on one layer add
//! linearly, shifts on different layers apply together, files round-trip.

mod common;

use clipshape::edit::{self, Latent, Shift};
use clipshape::models::load_generator;
use common::{golden, io, tmpdir};
use tch::{Device, Tensor};

fn setup() -> (clipshape::models::stylegan2::Generator, Latent, Tensor) {
    let g = load_generator(&golden("stylegan2.pt"), Device::Cpu).unwrap().generator;
    let io = io("stylegan2_io.safetensors");
    let latent = Latent::new(&g, io.tensor("wplus").unwrap().get(1)).unwrap();
    (g, latent, io.tensor("shift_x").unwrap())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn zero_strength_is_exactly_the_unedited_image() {
    let (g, latent, x) = setup();
    let shift = Shift::new(&g, "convs.3", x).unwrap();
    let plain = tch::no_grad(|| g.synthesis(&latent.wplus.unsqueeze(0), &[])).unwrap();
    let imgs = edit::render(&g, &latent, &[(&shift, 1.0)], &[0.0], 8).unwrap();
    assert_eq!(max_abs_diff(&imgs, &plain), 0.0);
    let edited = edit::render(&g, &latent, &[(&shift, 1.0)], &[2.0], 8).unwrap();
    assert!(max_abs_diff(&edited, &plain) > 1e-3, "a shift must change the image");
}

#[test]
fn same_layer_shifts_add_linearly() {
    let (g, latent, x) = setup();
    let x2 = x.flip([3]) * 0.7;
    let a = Shift::new(&g, "convs.3", x.shallow_clone()).unwrap();
    let b = Shift::new(&g, "convs.3", x2.shallow_clone()).unwrap();
    let sum = Shift::new(&g, "convs.3", &x + &x2).unwrap();
    let both = edit::render(&g, &latent, &[(&a, 1.0), (&b, 1.0)], &[-2.0, 1.5], 8).unwrap();
    let summed = edit::render(&g, &latent, &[(&sum, 1.0)], &[-2.0, 1.5], 8).unwrap();
    assert!(max_abs_diff(&both, &summed) < 1e-5);
    // The per-shift coefficient scales like the strength does.
    let half = edit::render(&g, &latent, &[(&a, 0.5)], &[2.0], 8).unwrap();
    let one = edit::render(&g, &latent, &[(&a, 1.0)], &[1.0], 8).unwrap();
    assert!(max_abs_diff(&half, &one) < 1e-5);
}

#[test]
fn shifts_on_different_layers_apply_together() {
    let (g, latent, x) = setup();
    let a = Shift::new(&g, "convs.3", x).unwrap();
    let w1 = g.layer_weight(clipshape::models::stylegan2::LayerId::Conv1).unwrap();
    // Not a multiple of W: demodulation cancels any rescaling of a weight.
    let b = Shift::new(&g, "conv1", w1.flip([3]) * 0.5).unwrap();
    let only_a = edit::render(&g, &latent, &[(&a, 1.0)], &[1.0], 8).unwrap();
    let only_b = edit::render(&g, &latent, &[(&b, 1.0)], &[1.0], 8).unwrap();
    let both = edit::render(&g, &latent, &[(&a, 1.0), (&b, 1.0)], &[1.0], 8).unwrap();
    assert!(max_abs_diff(&both, &only_a) > 1e-3 && max_abs_diff(&both, &only_b) > 1e-3);
    // Reference: both deltas given to the generator by hand.
    let da = &a.parts[0].x * 1.0;
    let db = &b.parts[0].x * 1.0;
    let want = tch::no_grad(|| {
        g.synthesis(
            &latent.wplus.unsqueeze(0),
            &[
                (clipshape::models::stylegan2::LayerId::Convs(3), &da),
                (clipshape::models::stylegan2::LayerId::Conv1, &db),
            ],
        )
    })
    .unwrap();
    let d = max_abs_diff(&both, &want);
    assert!(d < 1e-5, "{d}");
}

#[test]
fn latent_and_shift_files_round_trip() {
    let (g, latent, x) = setup();
    let dir = tmpdir();
    let lp = dir.path().join("w.safetensors");
    latent.save(&lp).unwrap();
    let back = Latent::load(&g, &lp).unwrap();
    assert!(back.wplus.equal(&latent.wplus));

    let mut shift = Shift::new(&g, "convs.3", x).unwrap();
    shift.meta.insert("prompt".into(), "a wide face".into());
    let sp = dir.path().join("s.safetensors");
    shift.save(&sp).unwrap();
    let back = Shift::load(&g, &sp).unwrap();
    assert!(back.parts[0].x.equal(&shift.parts[0].x));
    assert_eq!(back.parts[0].target, shift.parts[0].target);
    assert_eq!(back.meta.get("prompt").map(String::as_str), Some("a wide face"));
    assert_eq!(back.meta.get("layer").map(String::as_str), Some("convs.3"));
    // Atomic writes leave no temporary files behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn seeds_are_deterministic_and_truncation_pulls_to_the_mean() {
    let g = load_generator(&golden("stylegan2.pt"), Device::Cpu).unwrap();
    let mean = g.mean_latent.as_ref().unwrap();
    let a = Latent::from_seed(&g.generator, 5, 1.0, None).unwrap();
    let b = Latent::from_seed(&g.generator, 5, 1.0, None).unwrap();
    let c = Latent::from_seed(&g.generator, 6, 1.0, None).unwrap();
    assert!(a.wplus.equal(&b.wplus) && !a.wplus.equal(&c.wplus));
    let t0 = Latent::from_seed(&g.generator, 5, 0.0, Some(mean)).unwrap();
    assert!((&t0.wplus - mean.expand([10, 64], false)).abs().max().double_value(&[]) < 1e-6);
    let t5 = Latent::from_seed(&g.generator, 5, 0.5, Some(mean)).unwrap();
    let want = (&a.wplus + mean) * 0.5;
    assert!((&t5.wplus - want).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn a_single_layer_file_keeps_the_form_earlier_versions_wrote_and_read() {
    let (g, latent, x) = setup();
    let dir = tmpdir();
    // As earlier versions wrote it: one tensor `shift`, `layer` and `layer_sha256`, no `format`.
    let fingerprint = clipshape::edit::shift::target_fingerprint(
        &g,
        clipshape::edit::shift::Target::Layer(clipshape::models::stylegan2::LayerId::Convs(3)),
    )
    .unwrap();
    let meta = std::collections::HashMap::from([
        ("layer".to_string(), "convs.3".to_string()),
        ("layer_sha256".to_string(), fingerprint),
        ("prompt".to_string(), "a wide face".to_string()),
    ]);
    let old = dir.path().join("old.safetensors");
    std::fs::write(&old, clipshape::io::safetensors_bytes(&[("shift", &x)], &meta).unwrap()).unwrap();
    let loaded = Shift::load(&g, &old).unwrap();
    assert_eq!((loaded.parts.len(), loaded.layer_names().as_str()), (1, "convs.3"));
    let want = edit::render(&g, &latent, &[(&Shift::new(&g, "convs.3", x.shallow_clone()).unwrap(), 1.0)], &[2.0], 1);
    let got = edit::render(&g, &latent, &[(&loaded, 1.0)], &[2.0], 1).unwrap();
    assert_eq!(max_abs_diff(&got, &want.unwrap()), 0.0);
    // Saved again, it is still that form: earlier readers look for `shift`.
    let again = dir.path().join("again.safetensors");
    loaded.save(&again).unwrap();
    let ck = clipshape::checkpoint::Checkpoint::open(&again).unwrap();
    assert_eq!(ck.keys().collect::<Vec<_>>(), ["shift"]);
    assert_eq!(ck.metadata()["layer"], "convs.3");
}

#[test]
fn a_shift_file_loads_whatever_its_header_length() {
    // Safetensors starts with its header's length: 0x280 bytes begin 80 02 like a pickle,
    // 0x4B50 bytes begin "PK" like a zip.
    let (g, _, x) = setup();
    let dir = tmpdir();
    let path = dir.path().join("s.safetensors");
    let save = |pad: usize| {
        let mut s = Shift::new(&g, "convs.3", x.shallow_clone()).unwrap();
        s.meta.insert("prompt".into(), "a".repeat(pad));
        s.save(&path).unwrap();
        let head = std::fs::read(&path).unwrap();
        (u64::from_le_bytes(head[..8].try_into().unwrap()) as usize, [head[0], head[1]])
    };
    let base = save(0).0;
    for first_bytes in [[0x80u8, 0x02], *b"PK"] {
        let want = u16::from_le_bytes(first_bytes) as usize;
        assert!(base < want, "the plain header ({base} bytes) is already longer than {want}");
        let mut found = false;
        // One more prompt byte is one more header byte, up to the header's 8-byte padding.
        for pad in (want - base).saturating_sub(8)..=want - base {
            if save(pad).1 != first_bytes {
                continue;
            }
            let back = Shift::load(&g, &path).unwrap_or_else(|e| panic!("header starting {first_bytes:?}: {e}"));
            assert_eq!(back.meta["prompt"].len(), pad);
            found = true;
            break;
        }
        assert!(found, "no header length starting {first_bytes:?} was tried");
    }
}
