//! The `clipshape` command-line contract that scripts rely on.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::process::Command;

use clipshape::edit::{Latent, Shift};
use clipshape::models::load_generator;
use common::{golden, io, tmpdir};
use support::*;
use tch::Device;

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
        let want =
            clipshape::edit::to_rgba8(&io.tensor("img_shift").unwrap(), clipshape::edit::PixelFormat::Rgb8).unwrap();
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
    let e =
        fails(&["render", p(&golden("stylegan2.pt")), "--latent", p(&golden("stylegan2.pt")), "--out", p(dir.path())]);
    assert!(e.contains("wplus"), "{e}");
    let e = fails(&[
        "sample",
        p(&golden("stylegan2.pt")),
        "--seed",
        "1",
        "--truncation",
        "2",
        "--out",
        p(&dir.path().join("x.png")),
    ]);
    assert!(e.contains("truncation"), "{e}");
    let e = fails(&["--device", "cuda:3", "info", p(&golden("stylegan2.pt"))]);
    assert!(e.contains("cuda:3"), "{e}");
}

#[test]
fn tokenize_prints_77_ids_and_refuses_long_text() {
    let vocab = golden("bpe_simple_vocab_16e6.txt.gz");
    let out = ok(&["tokenize", "--vocab", p(&vocab), "a small-wheel car"]);
    let ids: Vec<i64> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(ids.len(), 77);
    assert_eq!((ids[0], ids[ids.iter().position(|&i| i == 49407).unwrap() + 1]), (49406, 0));
    let long = "cat ".repeat(90);
    let e = fails(&["tokenize", "--vocab", p(&vocab), &long]);
    assert!(e.contains("77"), "{e}");
    let out = ok(&["tokenize", "--vocab", p(&vocab), "--truncate", &long]);
    assert_eq!(out.split_whitespace().count(), 77);
    let e = fails(&["tokenize", "--vocab", "/no/vocab.gz", "x"]);
    assert!(e.contains("/no/vocab.gz"), "{e}");
}

#[test]
fn score_prints_one_line_per_text() {
    let mut args: Vec<String> = vec!["score".into()];
    args.extend(clip_args());
    args.extend([golden("picture.png").display().to_string(), "a red car".into(), "a face".into()]);
    let out = ok_owned(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    let probs: f64 = lines.iter().map(|l| l.split('\t').nth(1).unwrap().parse::<f64>().unwrap()).sum();
    assert!((probs - 1.0).abs() < 1e-3, "softmax sums to 1: {out}");
    let cos: f64 = lines[0].split('\t').next().unwrap().parse().unwrap();
    assert!((-1.0..=1.0).contains(&cos));
    assert!(lines[0].ends_with("a red car"));
}

#[test]
fn encode_writes_a_latent_and_the_reconstruction() {
    let dir = tmpdir();
    let latent = dir.path().join("w.safetensors");
    let recon = dir.path().join("recon.png");
    ok(&["encode", p(&golden("e4e.pt")), p(&golden("picture.png")), "--out", p(&latent), "--recon", p(&recon)]);
    let g = load_generator(&golden("e4e.pt"), Device::Cpu).unwrap().generator;
    assert_eq!(Latent::load(&g, &latent).unwrap().wplus.size(), vec![10, 64]);
    let r = image::open(&recon).unwrap();
    assert_eq!((r.width(), r.height()), (301, 200), "reconstruction at the photo's size");
    let e = fails(&["encode", p(&golden("stylegan2.pt")), p(&golden("picture.png")), "--out", p(&latent)]);
    assert!(e.contains("encoder"), "{e}");
}

#[test]
fn edit_and_apply_follow_the_contract() {
    let dir = tmpdir();
    let out = dir.path().join("edit");
    let mut args: Vec<String> =
        ["edit", p(&golden("e4e.pt")), "face with big nose", "--seed", "3", "--steps", "12", "--strengths=-2,0,2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(clip_args());
    args.extend(["--out".into(), p(&out).into()]);
    ok_owned(&args);
    for f in ["00.png", "01.png", "02.png", "sheet.png", "shift.safetensors", "latent.safetensors"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(!out.join("03.png").exists());
    let ck = clipshape::checkpoint::Checkpoint::open(out.join("shift.safetensors")).unwrap();
    let meta = ck.metadata();
    for key in ["layer", "prompt", "clip_sim_before", "clip_sim_after"] {
        assert!(meta.contains_key(key), "{key} missing from {meta:?}");
    }
    assert_eq!(meta["prompt"], "face with big nose");
    let sheet = image::open(out.join("sheet.png")).unwrap();
    assert!(sheet.width() > 5 * 64, "input, recon and 3 strengths side by side");
    // k = 0 is the unedited render; ±2 differ from it.
    let k0 = image::open(out.join("01.png")).unwrap().to_rgb8();
    let k2 = image::open(out.join("02.png")).unwrap().to_rgb8();
    assert_ne!(k0.as_raw(), k2.as_raw());

    // The edit from a photo, and the saved edit applied to another picture.
    let out2 = dir.path().join("photo");
    let mut args: Vec<String> =
        ["edit", p(&golden("e4e.pt")), p(&golden("picture.png")), "a wide face", "--steps", "3", "--strengths=1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(clip_args());
    args.extend(["--out".into(), p(&out2).into()]);
    // A face e4e file is a face model: it looks for a face, and says what it needs to find one
    // (this store has no detector; `picture.png` is no face anyway).
    let e = fails_owned(&args);
    assert!(e.contains("no face detector") && e.contains("--mtcnn DIR") && e.contains("--align none"), "{e}");
    assert!(!out2.exists(), "a failed edit left {}", out2.display());
    // A folder the user made stays, empty as it was.
    std::fs::create_dir(&out2).unwrap();
    fails_owned(&args);
    assert!(std::fs::read_dir(&out2).unwrap().next().is_none(), "the user's folder was written into");
    args.extend(["--align".into(), "none".into()]);
    ok_owned(&args);
    assert!(out2.join("00.png").exists() && out2.join("sheet.png").exists());
    let applied = dir.path().join("applied");
    ok(&[
        "apply",
        p(&out.join("shift.safetensors")),
        "--model",
        p(&golden("e4e.pt")),
        "--seed",
        "8",
        "--strengths=-1,0,1",
        "--out",
        p(&applied),
    ]);
    assert!(applied.join("02.png").exists());
    // Without --model the shift's recorded model (`e4e.pt`, not a set name) is not found.
    let e = fails(&["apply", p(&out.join("shift.safetensors")), "--seed", "8", "--out", p(&applied)]);
    assert!(e.contains("e4e.pt"), "{e}");
}

#[test]
fn edit_refuses_bad_requests() {
    let dir = tmpdir();
    let out = dir.path().join("x");
    let base = |extra: &[&str]| {
        let mut a: Vec<String> = ["edit", p(&golden("e4e.pt"))].iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(clip_args());
        a.extend(["--out".into(), p(&out).into()]);
        a
    };
    assert!(fails_owned(&base(&["", "--seed", "1", "--steps", "2"])).contains("prompt"));
    assert!(fails_owned(&base(&["a face", "--seed", "1", "--layer", "convs.99"])).contains("convs.99"));
    assert!(fails_owned(&base(&["a face", "--seed", "1", "--steps", "0"])).contains("steps"));
    assert!(fails_owned(&base(&["a face", "--seed", "1", "--lambda2=-1"])).contains("lambda2"));
    assert!(fails_owned(&base(&["a face", "--seed", "1", "--strengths=1,nan"])).contains("strengths"));
    assert!(fails_owned(&base(&["a face", "--seed", "1", "--method", "magic"])).contains("magic"));
    assert!(fails_owned(&base(&["a face"])).contains("--seed"));
    let e = fails(&["edit", p(&golden("e4e.pt")), "a face", "--seed", "1", "--out", p(&out)]);
    assert!(e.contains("--clip"), "{e}");
    // The directory is made before any work (so a bad --out fails at once); nothing is in it.
    let written: Vec<_> = std::fs::read_dir(&out).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(written.is_empty(), "nothing written on failure: {written:?}");
}

#[test]
fn a_missing_model_set_says_what_to_fetch() {
    let dir = tmpdir();
    let out = Command::new(env!("CARGO_BIN_EXE_clipshape"))
        .args(["edit", "car", "a small-wheel car", "--seed", "1", "--out"])
        .arg(dir.path().join("o"))
        .env("CLIPSHAPE_MODELS", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("e4e_cars_encode.pt") && e.contains("ViT-B-32.pt") && e.contains("https://"), "{e}");
    assert!(e.contains(&dir.path().display().to_string()), "names the directory: {e}");
    let list = Command::new(env!("CARGO_BIN_EXE_clipshape"))
        .args(["models", "list"])
        .env("CLIPSHAPE_MODELS", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success() && text.contains("ffhq") && text.contains("missing"), "{text}");
}

#[test]
fn a_failed_fetch_says_why_first_then_what_to_do_once() {
    let dir = tmpdir();
    // Port 9 of loopback: nothing listens, so every attempt is refused at once, as offline.
    let out = Command::new(env!("CARGO_BIN_EXE_clipshape"))
        .args(["models", "fetch", "car"])
        .env("CLIPSHAPE_MODELS", dir.path())
        .env("CLIPSHAPE_MODELS_MIRROR", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    let error = &e[e.find("error: ").expect("an error line")..];
    assert!(error.starts_with("error: could not fetch car: download from http://127.0.0.1:9/"), "cause first: {error}");
    assert_eq!(error.matches("e4e_cars_encode.pt  (").count(), 1, "the missing files are listed once: {error}");
    assert!(error.contains("clipshape models add car /path/to/FILE"), "{error}");
    assert!(error.contains(&dir.path().display().to_string()), "names the directory: {error}");
    assert!(!error.contains("models fetch car`"), "does not advise the fetch that just failed: {error}");
}

#[test]
fn the_optimisation_seed_picks_the_random_start() {
    let dir = tmpdir();
    let run = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let mut args: Vec<String> =
            ["edit", p(&golden("e4e.pt")), "a wide face", "--seed", "2", "--steps", "3", "--strengths=1"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend(clip_args());
        args.extend(["--init-scale", "0.01", "--optim-seed", seed, "--out", p(&out)].iter().map(|s| s.to_string()));
        ok_owned(&args);
        clipshape::checkpoint::Checkpoint::open(out.join("shift.safetensors")).unwrap().tensor("shift").unwrap()
    };
    let (a, b, c) = (run("a", "5"), run("b", "5"), run("c", "6"));
    assert!(a.equal(&b), "same seed, same shift");
    assert!(!a.equal(&c), "another seed, another start");
}

#[test]
fn bench_compares_variants_in_one_table_and_refuses_bad_lists() {
    let golden_dir = golden("");
    let g = p(&golden_dir);
    let args = "--threads 1 bench --only tiny --variants fp32,size256 --batches 1 --iters 1 --golden";
    let mut args: Vec<&str> = args.split(' ').collect();
    args.push(g);
    let table = ok(&args);
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
    assert!(rows[0].contains("peak MB"), "{table}");
    // size256 of a 1024 px model is size16 of the 64 px golden one.
    for op in ["edit step [fp32]", "edit step [size16]", "agreement [size16] vs fp32"] {
        assert!(rows.iter().any(|r| r.contains(op)), "no `{op}` row in\n{table}");
    }
    assert!(!table.contains("config-f"), "--only tiny ran the full-size rows:\n{table}");
    for (args, what) in [
        (vec!["bench", "--variants", "fp16"], "--variants"),
        (vec!["bench", "--only", "everything"], "--only"),
        (vec!["bench", "--random-size", "48"], "--random-size"),
        (vec!["bench", "--reference"], "--full"),
        (vec!["bench", "--full-edit-steps", "0", "--full-edit", "/nonexistent"], "--full-edit-steps"),
    ] {
        let err = fails(&args);
        assert!(err.contains(what), "{args:?}: {err}");
    }
}

#[test]
fn edit_with_the_preservation_term_records_it_and_bad_regions_are_named() {
    let dir = tmpdir();
    let out = dir.path().join("kept");
    ok_owned(&tiny_edit(&[
        "--seed",
        "1",
        "face with big nose",
        "--steps",
        "2",
        "--preserve",
        "1",
        "--region",
        "8,8,56,56",
        "--optimize-size",
        "32",
        "--strengths=0,1",
        "--out",
        p(&out),
    ]));
    let g = load_generator(&golden("e4e.pt"), Device::Cpu).unwrap().generator;
    let shift = Shift::load(&g, &out.join("shift.safetensors")).unwrap();
    assert_eq!(shift.meta["lambda3"], "1");
    assert_eq!(shift.meta["region"], "8,8,56,56");
    assert_eq!(shift.meta["optimize_size"], "32");
    let auto = dir.path().join("auto");
    ok_owned(&tiny_edit(&[
        "--seed",
        "1",
        "face",
        "--steps",
        "2",
        "--layer",
        "auto",
        "--strengths=1",
        "--out",
        p(&auto),
    ]));
    let shift = Shift::load(&g, &auto.join("shift.safetensors")).unwrap();
    assert_eq!(shift.meta["layer_choice"], "auto");
    assert!(shift.meta["layer_probe"].starts_with(&format!("{}:", shift.meta["layer"])), "{:?}", shift.meta);
    for (arg, what) in [
        ("--region=1,2,3", "--region"),
        ("--region=40,8,10,56", "region"),
        ("--preserve=-1", "lambda3"),
        ("--optimize-size=48", "optimize_size"),
    ] {
        let bad = dir.path().join("bad");
        let e = fails_owned(&tiny_edit(&["--seed", "1", "face", "--steps", "1", arg, "--out", p(&bad)]));
        assert!(e.contains(what), "{arg}: {e}");
    }
}

#[test]
fn edit_learns_several_layers_and_several_prompts_and_apply_renders_them_together() {
    let dir = tmpdir();
    let g = load_generator(&golden("e4e.pt"), Device::Cpu).unwrap().generator;
    let multi = dir.path().join("multi");
    let args = ["--seed", "1", "face with big nose", "--steps", "2", "--layer", "convs.5,convs.3", "--strengths=0,2"];
    ok_owned(&tiny_edit(&[&args[..], &["--out", p(&multi)]].concat()));
    let shift = Shift::load(&g, &multi.join("shift.safetensors")).unwrap();
    assert_eq!(shift.layer_names(), "convs.3,convs.5");
    // `apply` renders the file's two parts as the edit rendered them.
    let applied = dir.path().join("applied");
    ok(&[
        "apply",
        p(&multi.join("shift.safetensors")),
        "--model",
        p(&golden("e4e.pt")),
        "--seed",
        "1",
        "--strengths=0,2",
        "--out",
        p(&applied),
    ]);
    let read = |path: &std::path::Path| image::open(path).unwrap().to_rgb8().into_raw();
    assert_eq!(read(&applied.join("01.png")), read(&multi.join("01.png")));
    assert_ne!(read(&applied.join("01.png")), read(&applied.join("00.png")));

    let joint = dir.path().join("joint");
    let stdout = ok_owned(&tiny_edit(&[
        "--seed",
        "1",
        "a wide face",
        "--also",
        "face with big nose",
        "--steps",
        "2",
        "--strengths=0,3",
        "--out",
        p(&joint),
    ]));
    for sub in ["1", "2", "together"] {
        assert!(joint.join(sub).join("01.png").is_file() && joint.join(sub).join("sheet.png").is_file(), "{sub}");
    }
    let (a, b) = (joint.join("1/shift.safetensors"), joint.join("2/shift.safetensors"));
    assert!(stdout.contains(p(&a)) && stdout.contains(p(&b)), "{stdout}");
    let (sa, sb) = (Shift::load(&g, &a).unwrap(), Shift::load(&g, &b).unwrap());
    assert_eq!((sa.meta["prompt"].as_str(), sb.meta["prompt"].as_str()), ("a wide face", "face with big nose"));
    assert_eq!((sa.meta["lambda4"].as_str(), sa.meta["joint_with"].as_str()), ("0.3", "[\"face with big nose\"]"));
    // DIR/together is what `apply --with` renders from the two files.
    let both = dir.path().join("both");
    ok(&[
        "apply",
        p(&a),
        "--with",
        p(&b),
        "--model",
        p(&golden("e4e.pt")),
        "--seed",
        "1",
        "--strengths=0,3",
        "--out",
        p(&both),
    ]);
    assert_eq!(read(&both.join("01.png")), read(&joint.join("together/01.png")));
    assert_ne!(read(&both.join("01.png")), read(&joint.join("1/01.png")));

    // A later run into the same DIR never leaves an earlier run's pictures beside its own.
    let base = ["--seed", "1", "face", "--steps", "1", "--strengths=0"];
    ok_owned(&tiny_edit(&[&base[..], &["--also", "nose", "--also", "chin", "--out", p(&joint)]].concat()));
    assert!(joint.join("3/00.png").is_file() && !joint.join("1/01.png").exists());
    ok_owned(&tiny_edit(&[&base[..], &["--also", "nose", "--out", p(&joint)]].concat()));
    assert!(!joint.join("3").exists() && joint.join("2/00.png").is_file());
    std::fs::write(joint.join("1/notes.txt"), "mine").unwrap();
    ok_owned(&tiny_edit(&[&base[..], &["--out", p(&joint)]].concat()));
    assert!(joint.join("00.png").is_file() && !joint.join("2").exists() && !joint.join("together").exists());
    assert_eq!(std::fs::read_dir(joint.join("1")).unwrap().count(), 1, "the user's file was touched");
    ok_owned(&tiny_edit(&[&base[..], &["--also", "nose", "--out", p(&joint)]].concat()));
    assert!(!joint.join("00.png").exists() && !joint.join("shift.safetensors").exists());

    for (extra, what) in [
        (vec!["--layer", "convs.3,convs.3"], "twice"),
        (vec!["--layer", "convs.3,"], "empty"),
        (vec!["--auto-layers", "2"], "--layer auto"),
        (vec!["--layer", "auto", "--auto-layers", "99"], "auto_layers"),
    ] {
        let bad = dir.path().join("bad");
        let e = fails_owned(&tiny_edit(
            &[&["--seed", "1", "face", "--steps", "1"], &extra[..], &["--out", p(&bad)]].concat(),
        ));
        assert!(e.contains(what), "{extra:?}: {e}");
    }
}

#[test]
fn eval_prints_the_papers_table_with_fid_from_an_inception_file() {
    let dir = tmpdir();
    let out = dir.path().join("edit");
    ok_owned(&tiny_edit(&["--seed", "1", "face with big nose", "--steps", "4", "--strengths=1", "--out", p(&out)]));
    let shift = out.join("shift.safetensors");
    let inception =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/inception/tiny_inception.pth");
    let mut args: Vec<String> =
        ["eval", p(&shift), "--model", p(&golden("e4e.pt")), "--seeds", "0-3"].iter().map(|s| s.to_string()).collect();
    args.extend(clip_args());
    let plain = ok_owned(&args);
    assert!(plain.contains("\"face with big nose\" over 4 pictures") && plain.contains("no FID"), "{plain}");
    for k in ["| -10 |", "| -5 |", "| -3 |", "| +3 |", "| +5 |", "| +10 |"] {
        assert!(plain.contains(k), "{k} missing:\n{plain}");
    }
    args.extend(["--inception".to_string(), p(&inception).to_string(), "--json".to_string()]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&ok_owned(&args)).unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["fid"].as_f64().is_some_and(|f| f > 0.0)), "{rows:?}");

    // A reference folder of pictures.
    let pictures = dir.path().join("pictures");
    std::fs::create_dir_all(&pictures).unwrap();
    for seed in ["5", "6", "7"] {
        ok(&["sample", p(&golden("e4e.pt")), "--seed", seed, "--out", p(&pictures.join(format!("{seed}.png")))]);
    }
    args.extend(["--reference".to_string(), p(&pictures).to_string()]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&ok_owned(&args)).unwrap();
    assert!(rows.iter().all(|r| r["fid"].as_f64().is_some()));

    let e = fails_owned(&[&args[..], &["--latents".to_string(), p(&out).to_string()]].concat());
    assert!(e.contains("--seeds or --latents"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut bad = args.clone();
    let at = bad.iter().position(|a| a == "--reference").unwrap();
    bad[at + 1] = p(&empty).to_string();
    assert!(fails_owned(&bad).contains("no pictures"));
}
