//! Real photos against facenet-pytorch 2.6.0 MTCNN and the FFHQ alignment, at the tolerances
//! of `golden/face/README.md`: per-net outputs ≤ 1e-4; detections: same count, boxes and
//! landmarks within 0.5 px, probabilities within 1e-3; quads within 1e-3 px; aligned crops
//! (from the reference landmarks) mean ≤ 0.75 / max ≤ 2 levels, padded cases mean ≤ 1.5 /
//! max ≤ 24. Run with `--nocapture` to see the measured errors.

mod common;

use std::path::PathBuf;

use clipshape::checkpoint::Checkpoint;
use clipshape::face::{self, AlphaMode, FaceQuad, Mtcnn, PasteParams};
use serde_json::Value;
use tch::{Device, Tensor};

fn dir() -> PathBuf {
    common::golden("face")
}

fn mtcnn() -> Mtcnn {
    Mtcnn::load_dir(&dir().join("mtcnn"), Device::Cpu).unwrap_or_else(|e| panic!("MTCNN weights: {e}"))
}

fn meta() -> Value {
    let text = std::fs::read_to_string(dir().join("face_meta.json")).expect("face_meta.json");
    serde_json::from_str(&text).expect("face_meta.json parses")
}

fn png(name: &str) -> (Vec<u8>, usize, usize) {
    let img = image::open(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}")).to_rgb8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w as usize, h as usize)
}

fn f64s(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(f64s).collect(),
        Value::Number(n) => vec![n.as_f64().expect("a number")],
        other => panic!("expected numbers, got {other}"),
    }
}

fn landmarks(face: &Value) -> [[f32; 2]; 5] {
    let v = f64s(&face["landmarks"]);
    std::array::from_fn(|i| [v[2 * i] as f32, v[2 * i + 1] as f32])
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn each_net_matches_facenet_pytorch() {
    let m = mtcnn();
    let io = common::io("face/mtcnn_io.safetensors");
    let t = |k: &str| io.tensor(k).unwrap();
    let _g = tch::no_grad_guard();
    let (reg, prob) = m.pnet.forward(&t("pnet_in")).unwrap();
    let (rnet_reg, rnet_prob) = m.rnet.forward(&t("rnet_in")).unwrap();
    let (onet_reg, onet_lm, onet_prob) = m.onet.forward(&t("onet_in")).unwrap();
    for (name, ours) in [
        ("pnet_reg", &reg),
        ("pnet_prob", &prob),
        ("rnet_reg", &rnet_reg),
        ("rnet_prob", &rnet_prob),
        ("onet_reg", &onet_reg),
        ("onet_landmarks", &onet_lm),
        ("onet_prob", &onet_prob),
    ] {
        let err = max_abs(ours, &t(name));
        eprintln!("{name}: max |ours − reference| = {err:.2e}");
        assert!(err <= 1e-4, "{name}: {err:.3e} > 1e-4");
    }
}

#[test]
fn pnet_on_padded_tiles_equals_pnet_on_the_whole_input() {
    // What detection relies on: tiles starting on even pixels, zero-padded past the image's
    // edge (odd sizes: the ceil-mode pooling has partial windows there), give the whole
    // image's outputs.
    let m = mtcnn();
    let _g = tch::no_grad_guard();
    tch::manual_seed(7);
    let (th, tw) = (12i64, 24i64);
    let (ih, iw) = (2 * th + 10, 2 * tw + 10);
    for (h, w) in [(61i64, 203i64), (60, 100), (45, 47)] {
        let x = Tensor::rand([1, h, w, 3], (tch::Kind::Float, Device::Cpu)).permute([0, 3, 1, 2]) * 2.0 - 1.0;
        let (reg, prob) = m.pnet.forward(&x).unwrap();
        let (_, _, oh, ow) = prob.size4().unwrap();
        let mut worst = 0f64;
        for i0 in (0..oh).step_by(th as usize) {
            for j0 in (0..ow).step_by(tw as usize) {
                let rows = (2 * i0 + ih).min(h) - 2 * i0;
                let cols = (2 * j0 + iw).min(w) - 2 * j0;
                let tile = Tensor::zeros([1, 3, ih, iw], (tch::Kind::Float, Device::Cpu));
                tile.narrow(2, 0, rows).narrow(3, 0, cols).copy_(&x.narrow(2, 2 * i0, rows).narrow(3, 2 * j0, cols));
                let (treg, tprob) = m.pnet.forward_tile(&tile, rows, cols).unwrap();
                let (vi, vj) = (th.min(oh - i0), tw.min(ow - j0));
                let part = |t: &Tensor, at: bool| {
                    let t =
                        if at { t.narrow(2, i0, vi).narrow(3, j0, vj) } else { t.narrow(2, 0, vi).narrow(3, 0, vj) };
                    t.contiguous()
                };
                let err = max_abs(&part(&tprob, false), &part(&prob, true))
                    .max(max_abs(&part(&treg, false), &part(&reg, true)));
                worst = worst.max(err);
            }
        }
        // All tiles at once, each with its own padding, as detection batches them.
        let mut tiles = Vec::new();
        let mut valid = Vec::new();
        let mut at = Vec::new();
        for i0 in (0..oh).step_by(th as usize) {
            for j0 in (0..ow).step_by(tw as usize) {
                let rows = (2 * i0 + ih).min(h) - 2 * i0;
                let cols = (2 * j0 + iw).min(w) - 2 * j0;
                let tile = Tensor::zeros([1, 3, ih, iw], (tch::Kind::Float, Device::Cpu));
                tile.narrow(2, 0, rows).narrow(3, 0, cols).copy_(&x.narrow(2, 2 * i0, rows).narrow(3, 2 * j0, cols));
                tiles.push(tile);
                valid.push((rows, cols));
                at.push((i0, j0));
            }
        }
        let (breg, bprob) = m.pnet.forward_tiles(&Tensor::cat(&tiles, 0), &valid).unwrap();
        for (b, &(i0, j0)) in at.iter().enumerate() {
            let (vi, vj) = (th.min(oh - i0), tw.min(ow - j0));
            let ours = |t: &Tensor| t.narrow(0, b as i64, 1).narrow(2, 0, vi).narrow(3, 0, vj).contiguous();
            let want = |t: &Tensor| t.narrow(2, i0, vi).narrow(3, j0, vj).contiguous();
            worst = worst.max(max_abs(&ours(&bprob), &want(&prob))).max(max_abs(&ours(&breg), &want(&reg)));
        }
        eprintln!("{h}×{w}: tiles vs whole {worst:.2e}");
        assert!(worst <= 1e-5, "{h}×{w}: {worst:.2e}");
    }
}

#[test]
fn strict_loading_names_the_wrong_file_and_key() {
    // RNet's weights are not PNet's: every mismatch in one message, naming the file.
    let path = dir().join("mtcnn/rnet.pt");
    let e = clipshape::models::mtcnn::PNet::load(&Checkpoint::open(&path).unwrap(), Device::Cpu)
        .err()
        .expect("rnet.pt is not a PNet")
        .to_string();
    assert!(e.contains("rnet.pt") && e.contains("conv4_1.weight") && e.contains("unexpected"), "{e}");
}

#[test]
fn detections_match_facenet_pytorch() {
    let m = mtcnn();
    let meta = meta();
    for (case, want) in meta["cases"].as_object().expect("cases") {
        let (rgb, w, h) = png(&format!("{case}.png"));
        assert_eq!(f64s(&want["size"]), [w as f64, h as f64], "{case}: size");
        let faces = m.detect(&rgb, w, h).unwrap();
        let want = want["faces"].as_array().expect("faces");
        assert_eq!(faces.len(), want.len(), "{case}: number of faces ({faces:?})");
        for (i, (got, want)) in faces.iter().zip(want).enumerate() {
            let box_err =
                got.bbox.iter().zip(f64s(&want["box"])).map(|(&a, b)| (a as f64 - b).abs()).fold(0.0, f64::max);
            let lm_err = got
                .landmarks
                .iter()
                .flatten()
                .zip(f64s(&want["landmarks"]))
                .map(|(&a, b)| (a as f64 - b).abs())
                .fold(0.0, f64::max);
            let prob_err = (got.score as f64 - want["prob"].as_f64().expect("prob")).abs();
            eprintln!("{case} face {i}: box {box_err:.2e} px, landmarks {lm_err:.2e} px, prob {prob_err:.2e}");
            assert!(box_err <= 0.5, "{case} face {i}: box {:?} off by {box_err}", got.bbox);
            assert!(lm_err <= 0.5, "{case} face {i}: landmarks {:?} off by {lm_err}", got.landmarks);
            assert!(prob_err <= 1e-3, "{case} face {i}: prob {} off by {prob_err}", got.score);
        }
    }
}

#[test]
fn quads_match_the_reference() {
    for (case, want) in meta()["cases"].as_object().expect("cases") {
        for (i, f) in want["faces"].as_array().expect("faces").iter().enumerate() {
            let q = FaceQuad::from_landmarks(&landmarks(f)).unwrap();
            let err = q.quad.iter().flatten().zip(f64s(&f["quad"])).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            let qsize_err = (q.qsize - f["qsize"].as_f64().expect("qsize")).abs();
            eprintln!("{case} face {i}: quad {err:.2e} px, qsize {qsize_err:.2e} px");
            assert!(err <= 1e-3 && qsize_err <= 1e-3, "{case} face {i}: quad {:?}", q.quad);
        }
    }
}

#[test]
fn aligned_crops_match_the_reference() {
    for (case, want) in meta()["cases"].as_object().expect("cases") {
        let (rgb, w, h) = png(&format!("{case}.png"));
        for (i, f) in want["faces"].as_array().expect("faces").iter().enumerate() {
            let q = FaceQuad::from_landmarks(&landmarks(f)).unwrap();
            let padded = f["padded"].as_bool().expect("padded");
            let (mean_tol, max_tol) = if padded { (1.5, 24) } else { (0.75, 2) };
            for n in [256, 1024] {
                let (ours, info) = face::align_with_info(&rgb, w, h, &q, n).unwrap();
                assert_eq!(info.pad != [0; 4], padded, "{case} face {i} at {n}: padding {info:?}");
                let (golden, gw, gh) = png(&format!("{case}_face{i}_aligned{n}.png"));
                assert_eq!((gw, gh), (n, n));
                let diffs: Vec<u8> = ours.iter().zip(&golden).map(|(a, b)| a.abs_diff(*b)).collect();
                let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
                let max = diffs.iter().copied().max().unwrap_or(0);
                let exact = diffs.iter().filter(|&&d| d == 0).count() as f64 / diffs.len() as f64;
                eprintln!("{case} face {i} {n}²: mean {mean:.3}, max {max}, identical {:.1}%", 100.0 * exact);
                assert!(mean <= mean_tol && max <= max_tol, "{case} face {i} {n}²: mean {mean:.3} max {max}");
            }
        }
    }
}

#[test]
fn align_then_paste_back_reproduces_the_astronaut() {
    let (rgb, w, h) = png("astronaut.png");
    let f = &meta()["cases"]["astronaut"]["faces"][0];
    let q = FaceQuad::from_landmarks(&landmarks(f)).unwrap();
    for n in [256, 1024] {
        let aligned = face::align(&rgb, w, h, &q, n).unwrap();
        let params = PasteParams::with_mode(AlphaMode::Region);
        let layer = face::paste(w, h, &q.frame_map(n), &aligned, None, &params).unwrap();
        let out = face::composite(&rgb, w, h, &layer).unwrap();
        let mut diffs = Vec::new();
        for y in 0..layer.height {
            for x in 0..layer.width {
                if layer.rgba[(y * layer.width + x) * 4 + 3] == 255 {
                    let i = ((layer.y + y) * w + layer.x + x) * 3;
                    diffs.extend((0..3).map(|c| out[i + c].abs_diff(rgb[i + c]) as f64));
                }
            }
        }
        diffs.sort_by(f64::total_cmp);
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        let p99 = diffs[diffs.len() * 99 / 100];
        eprintln!("astronaut round trip {n}²: mean {mean:.2}, p99 {p99}, over {} values", diffs.len());
        // Bilinear there and back over a detailed photo (hair, suit): a soft copy of it.
        assert!(diffs.len() > 3 * 100 * 100, "{n}: opaque area");
        assert!(mean <= 4.0 && p99 <= 24.0, "{n}: mean {mean:.2}, p99 {p99}");
        // Outside the layer the photo is untouched.
        assert_eq!(out[..layer.y * w * 3], rgb[..layer.y * w * 3]);
    }
}

/// A face e4e checkpoint given as a bare file is a face model (its `opts.dataset_type` is
/// `ffhq_encode`): found and aligned like the `ffhq` set, with that set's editing defaults; a
/// bare generator says nothing of its domain. MTCNN's folder is found under either naming.
#[test]
fn a_face_e4e_file_is_a_face_model() {
    use clipshape::context::{Context, ContextParams};
    use clipshape::device::DeviceRequest;
    use clipshape::domain::{Align, Frame};
    let ffhq = clipshape::store::Manifest::builtin().unwrap().set("ffhq").unwrap().domain.clone().unwrap();
    let ctx =
        Context::new(&ContextParams { device: DeviceRequest::Cpu, ..ContextParams::new(common::golden("e4e.pt")) })
            .unwrap();
    let d = ctx.domain.as_ref().expect("a face e4e file has a domain");
    assert_eq!((d.name.as_str(), d.align, d.generator_size), ("face", Align::Ffhq, 64));
    assert_eq!((d.default_layer, d.default_lambda2), (ffhq.default_layer, ffhq.default_lambda2));
    assert_eq!(ctx.frame, Frame::square(64));
    let generator = Context::new(&ContextParams {
        device: DeviceRequest::Cpu,
        ..ContextParams::new(common::golden("stylegan2.pt"))
    })
    .unwrap();
    assert!(generator.domain.is_none());

    let dir = common::golden_dir().join("face/mtcnn");
    assert_eq!(face::detector_files_in(&dir), Some(["pnet.pt", "rnet.pt", "onet.pt"].map(|n| dir.join(n))));
    let store = tempfile::tempdir().unwrap();
    for n in ["pnet", "rnet", "onet"] {
        std::fs::copy(dir.join(format!("{n}.pt")), store.path().join(format!("mtcnn_{n}.pt"))).unwrap();
    }
    assert!(face::detector_files_in(store.path()).is_some());
    std::fs::remove_file(store.path().join("mtcnn_onet.pt")).unwrap();
    assert_eq!(face::detector_files_in(store.path()), None);
}
