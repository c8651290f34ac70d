//! The `clipshape` command-line contract that scripts rely on.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use clipshape::edit::{Latent, Shift};
use clipshape::models::load_generator;
use common::{golden, io, tmpdir};
use tch::Device;

fn clipshape(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipshape"));
    cmd.args(args);
    if !args.contains(&"--device") {
        cmd.args(["--device", "cpu"]);
    }
    cmd.output().expect("run clipshape")
}

fn ok(args: &[&str]) -> String {
    let out = clipshape(args);
    assert!(out.status.success(), "clipshape {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = clipshape(args);
    assert!(!out.status.success(), "clipshape {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn info_lists_the_layers() {
    for file in ["stylegan2.pt", "stylegan2.safetensors", "e4e.pt"] {
        let out = ok(&["info", p(&golden(file))]);
        assert!(out.contains("resolution: 64") && out.contains("n_latent: 10"), "{file}: {out}");
        let row = out.lines().find(|l| l.starts_with("convs.3 ")).expect("convs.3 row");
        assert!(row.contains("16") && row.contains("[1, 32, 32, 3, 3]") && row.trim_end().ends_with('4'), "{row}");
    }
}

#[test]
fn sample_is_deterministic_per_seed() {
    let dir = tmpdir();
    let g = golden("stylegan2.pt");
    let a = dir.path().join("a.png");
    let b = dir.path().join("b.png");
    let c = dir.path().join("c.png");
    let l = dir.path().join("a.safetensors");
    ok(&["sample", p(&g), "--seed", "4", "--truncation", "0.7", "--out", p(&a), "--latent-out", p(&l)]);
    ok(&["sample", p(&g), "--seed", "4", "--truncation", "0.7", "--out", p(&b)]);
    ok(&["sample", p(&g), "--seed", "5", "--truncation", "0.7", "--out", p(&c)]);
    let img = image::open(&a).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    // The latent written beside it renders the same picture.
    let out = dir.path().join("r");
    ok(&["render", p(&g), "--latent", p(&l), "--strengths=0", "--out", p(&out)]);
    assert_eq!(image::open(out.join("00.png")).unwrap().to_rgb8(), img.to_rgb8());
}

#[test]
fn render_matches_the_golden_edit() {
    let dir = tmpdir();
    let io = io("stylegan2_io.safetensors");
    let g = load_generator(&golden("stylegan2.pt"), Device::Cpu).unwrap().generator;
    let latent = dir.path().join("latent.safetensors");
    Latent::new(&g, io.tensor("wplus").unwrap().get(0)).unwrap().save(&latent).unwrap();
    let shift = dir.path().join("shift.safetensors");
    Shift::new(&g, "convs.3", io.tensor("shift_x").unwrap()).unwrap().save(&shift).unwrap();
    let out = dir.path().join("out");
    for file in ["stylegan2.pt", "e4e.pt", "stylegan2.safetensors"] {
        let listed = ok(&[
            "render",
            p(&golden(file)),
            "--latent",
            p(&latent),
            "--shift",
            p(&shift),
            "--strengths=-3,-1.5,0,1.5,3",
            "--out",
            p(&out),
        ]);
        assert_eq!(listed.lines().count(), 5, "{listed}");
        let want = clipshape::edit::to_rgba8(&io.tensor("img_shift").unwrap(), clipshape::edit::PixelFormat::Rgb8).unwrap();
        for (i, want) in want.iter().enumerate() {
            let got = image::open(out.join(format!("{i:02}.png"))).unwrap().to_rgb8();
            assert_eq!((got.width(), got.height()), (64, 64));
            let max = got.as_raw().iter().zip(want).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
            assert!(max <= 1, "{file} image {i}: max pixel difference {max}");
        }
    }
}

#[test]
fn errors_name_what_was_wrong() {
    let dir = tmpdir();
    let e = fails(&["info", "/no/such/gen.pt"]);
    assert!(e.contains("/no/such/gen.pt"), "{e}");
    let e = fails(&["render", p(&golden("stylegan2.pt")), "--latent", "x", "--strengths=1,zz", "--out", p(dir.path())]);
    assert!(e.contains("--strengths") && e.contains("zz"), "{e}");
    let e = fails(&["render", p(&golden("stylegan2.pt")), "--latent", p(&golden("stylegan2.pt")), "--out", p(dir.path())]);
    assert!(e.contains("wplus"), "{e}");
    let e = fails(&["sample", p(&golden("stylegan2.pt")), "--seed", "1", "--truncation", "2", "--out", p(&dir.path().join("x.png"))]);
    assert!(e.contains("truncation"), "{e}");
    let e = fails(&["--device", "cuda:3", "info", p(&golden("stylegan2.pt"))]);
    assert!(e.contains("cuda:3"), "{e}");
}
