//! Defects found by probing the CLI as a hostile user would; each test failed before its fix.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::process::Command;

use clipshape::checkpoint::Checkpoint;
use common::{golden, tmpdir};
use support::*;

#[test]
fn absurd_thread_counts_are_refused_at_once() {
    let e = fails(&["--threads", "100000", "info", p(&golden("stylegan2.pt"))]);
    assert!(e.contains("threads") && e.contains("100000") && e.contains("logical CPUs"), "{e}");
}

/// The golden generator with one tensor replaced by NaN, as a safetensors file.
fn with_nan(dir: &Path, source: &str, key: &str) -> std::path::PathBuf {
    let ck = Checkpoint::open(golden(source)).unwrap();
    let tensors: Vec<(String, tch::Tensor)> = ck
        .keys()
        .map(|k| {
            let t = ck.tensor(k).unwrap();
            (k.to_string(), if k == key { t.full_like(f64::NAN) } else { t })
        })
        .collect();
    let path = dir.join(format!("nan-{source}"));
    tch::Tensor::write_safetensors(&tensors, &path).unwrap();
    path
}

#[test]
fn nan_weights_are_named_instead_of_rendering_black() {
    let dir = tmpdir();
    let bad = with_nan(dir.path(), "stylegan2.safetensors", "convs.3.conv.weight");
    let e = fails(&["sample", p(&bad), "--seed", "1", "--out", p(&dir.path().join("x.png"))]);
    assert!(e.contains("convs.3.conv.weight") && e.contains("NaN") && e.contains("nan-stylegan2"), "{e}");
    assert!(!dir.path().join("x.png").exists());
}

#[test]
fn an_output_that_is_a_file_is_refused_before_any_work() {
    let dir = tmpdir();
    let f = dir.path().join("f");
    std::fs::write(&f, "x").unwrap();
    // A run of 100 000 steps would take hours: the refusal must come first.
    let e = fails_owned(&tiny_edit(&["--seed", "1", "face", "--steps", "100000", "--out", p(&f)]));
    assert!(e.contains("exists and is not a directory"), "{e}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "x", "the file is kept");
}

/// A PNG whose header claims `w`×`h` pixels, with no real pixel data behind it.
fn png_header_only(path: &Path, w: u32, h: u32) {
    let mut ihdr = Vec::from(*b"IHDR");
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    for chunk in [&ihdr[..], b"IDAT", b"IEND"] {
        let mut crc = flate2::Crc::new();
        crc.update(chunk);
        bytes.extend((chunk.len() as u32 - 4).to_be_bytes());
        bytes.extend(chunk);
        bytes.extend(crc.sum().to_be_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_huge_picture_is_refused_from_its_header() {
    let dir = tmpdir();
    let huge = dir.path().join("huge.png");
    png_header_only(&huge, 20000, 20000);
    let e = fails(&["encode", p(&golden("e4e.pt")), p(&huge), "--out", p(&dir.path().join("w.safetensors"))]);
    assert!(e.contains("20000×20000") && e.contains("exceeds"), "{e}");
}

#[test]
fn a_jpeg_named_png_is_read_and_jpg_outputs_are_jpeg() {
    let dir = tmpdir();
    let jpg = dir.path().join("s.jpg");
    ok(&["sample", p(&golden("stylegan2.pt")), "--seed", "3", "--out", p(&jpg)]);
    let bytes = std::fs::read(&jpg).unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "a .jpg output is a JPEG");
    let misnamed = dir.path().join("really-a-jpeg.png");
    std::fs::write(&misnamed, &bytes).unwrap();
    ok(&["encode", p(&golden("e4e.pt")), p(&misnamed), "--out", p(&dir.path().join("w.safetensors"))]);
    let e = fails(&["sample", p(&golden("stylegan2.pt")), "--seed", "3", "--out", p(&dir.path().join("s.gif"))]);
    assert!(e.contains("s.gif") && e.contains(".png or .jpg"), "{e}");
}

#[test]
fn a_second_render_leaves_no_images_of_the_first() {
    let dir = tmpdir();
    let latent = dir.path().join("w.safetensors");
    ok(&[
        "sample",
        p(&golden("stylegan2.pt")),
        "--seed",
        "1",
        "--out",
        p(&dir.path().join("s.png")),
        "--latent-out",
        p(&latent),
    ]);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    ok(&[
        "render",
        p(&golden("stylegan2.pt")),
        "--latent",
        p(&latent),
        "--strengths=-3,-2,-1,0,1,2,3",
        "--out",
        p(&out),
    ]);
    ok(&["render", p(&golden("stylegan2.pt")), "--latent", p(&latent), "--strengths=0,1", "--out", p(&out)]);
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    // The record of what the run wrote, its two pictures, and the user's file.
    assert_eq!(names, [".clipshape.json", "00.png", "01.png", "notes.txt"]);
}

#[cfg(unix)]
#[test]
fn outputs_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmpdir();
    // What any file created here gets: 0666 less this process's umask (the same as the CLI's).
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "x").unwrap();
    let want = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
    let png = dir.path().join("s.png");
    let latent = dir.path().join("w.safetensors");
    ok(&["sample", p(&golden("stylegan2.pt")), "--seed", "1", "--out", p(&png), "--latent-out", p(&latent)]);
    for f in [&png, &latent] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{}: mode {mode:o}, a plain file gets {want:o}", f.display());
    }
}

#[test]
fn an_empty_neutral_text_is_named() {
    let dir = tmpdir();
    let out = dir.path().join("o");
    let e = fails_owned(&tiny_edit(&["--seed", "1", "face", "--steps", "2", "--neutral", "", "--out", p(&out)]));
    assert!(e.contains("`neutral`"), "{e}");
}

#[test]
fn whitespace_tokenizes_as_the_reference_does() {
    let out = ok(&["tokenize", "--vocab", p(&golden("bpe_simple_vocab_16e6.txt.gz")), "   "]);
    let ids: Vec<i64> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(&ids[..3], &[49406, 49407, 0]);
}

#[test]
fn messages_are_not_repeated() {
    // An OS error used to be printed twice ("… (os error 2): … (os error 2)").
    let e = fails(&["info", "/nonexistent/dir/g.pt"]);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 1, "{e}");
    let first = lines[0];
    for piece in first.split(": ").filter(|s| s.len() > 8) {
        assert_eq!(first.matches(piece).count(), 1, "`{piece}` repeated in {first}");
    }
}

#[test]
fn clip_head_counts_can_be_given() {
    // The tiny CLIP's text tower is 32 wide: a state dict does not say how many heads it has.
    let vocab = golden("bpe_simple_vocab_16e6.txt.gz");
    let st = golden("clip.safetensors");
    let picture = golden("picture.png");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> =
            ["score", "--clip", p(&st), "--vocab", p(&vocab)].iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend([p(&picture).to_string(), "a red car".to_string()]);
        a
    };
    let without = args(&[]);
    let e = fails(&without.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("--clip-text-heads"), "{e}");
    let with = args(&["--clip-text-heads", "2"]);
    let from_state_dict = ok(&with.iter().map(String::as_str).collect::<Vec<_>>());
    let jit = ok(&["score", "--clip", p(&golden("clip_jit.pt")), "--vocab", p(&vocab), p(&picture), "a red car"]);
    assert_eq!(from_state_dict, jit, "the same model from either file");
}

/// Whether `path` is a whole file of ours: a PNG that decodes, a safetensors file that parses,
/// a JSON document.
fn complete(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.ends_with(".png") {
        image::open(path).is_ok()
    } else if name.ends_with(".safetensors") {
        Checkpoint::open(path).is_ok()
    } else if name.ends_with(".json") {
        std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()).is_some()
    } else {
        false
    }
}

#[cfg(unix)]
#[test]
fn a_killed_edit_leaves_only_complete_files() {
    let dir = tmpdir();
    let out = dir.path().join("out");
    let args = |out: &Path| tiny_edit(&["face", "--seed", "1", "--steps", "3", "--device", "cpu", "--out", p(out)]);
    // How long a whole run takes here, then kills spread over it (and a little past).
    let t0 = std::time::Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_clipshape")).args(args(&out)).output().unwrap().status;
    assert!(status.success());
    let whole = t0.elapsed();
    for i in 0..8u32 {
        let at = whole * i / 7 + std::time::Duration::from_millis(5);
        let mut child = Command::new(env!("CARGO_BIN_EXE_clipshape"))
            .args(args(&out))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL: no chance to clean up
        let _ = child.wait();
        for entry in std::fs::read_dir(&out).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(clipshape::io::TEMP_PREFIX) || name == ".clipshape.json" {
                continue; // a write cut short, under its temporary name (or staging folder) only
            }
            assert!(complete(&path), "killed after {at:?}: {} is not a complete file", path.display());
        }
    }
    // The leftovers of killed runs are removed by the next run once they are stale.
    let mut leftovers = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with(clipshape::io::TEMP_PREFIX) {
            // A file, or a run's staging folder.
            let f = std::fs::File::open(&path).unwrap();
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(120)).unwrap();
            leftovers += 1;
        }
    }
    let status = Command::new(env!("CARGO_BIN_EXE_clipshape")).args(args(&out)).output().unwrap().status;
    assert!(status.success());
    let left = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(clipshape::io::TEMP_PREFIX))
        .count();
    assert_eq!(left, 0, "{leftovers} stale temporary files, {left} left after the next run");
}

/// Ctrl-C at twenty points of a real edit: never a crash, always "cancelled" and 130, and
/// nothing half-written left in the output folder. The edit asks for more steps than it will
/// ever reach, so every interrupt lands inside it, whatever else the machine is doing: from
/// the model load through the face, the encoding and the first steps.
#[cfg(unix)]
#[test]
fn ctrl_c_cancels_an_edit_cleanly_wherever_it_lands() {
    let dir = tmpdir();
    let photo = golden("face/astronaut.png");
    let mtcnn = golden("face/mtcnn");
    let args = |out: &Path| {
        tiny_edit(&[
            p(&photo),
            "face with big nose",
            "--align",
            "face",
            "--mtcnn",
            p(&mtcnn),
            "--steps",
            "100000",
            "--device",
            "cpu",
            "--out",
            p(out),
        ])
    };
    for i in 0..20u64 {
        let out = dir.path().join(format!("cut{i}"));
        let child = Command::new(env!("CARGO_BIN_EXE_clipshape"))
            .args(args(&out))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The program runs once its output folder exists (before that the loader is still
        // mapping libtorch and SIGINT's default action applies).
        let t = std::time::Instant::now();
        while !out.exists() && t.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::thread::sleep(std::time::Duration::from_millis(25 * i));
        unsafe_free_sigint(child.id());
        let done = child.wait_with_output().unwrap();
        let e = String::from_utf8_lossy(&done.stderr);
        assert_eq!(done.status.code(), Some(130), "interrupt {i}: {:?}, stderr: {e}", done.status);
        assert!(e.contains("cancelled"), "interrupt {i}: {e}");
        // The run made the folder; cancelled, it removes it again (or leaves nothing partial in it).
        for entry in std::fs::read_dir(&out).into_iter().flatten() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".part") && !name.ends_with(".stage"), "interrupt {i}: {name} left behind");
        }
    }
}

/// SIGINT to a child, through the `kill` program (the tests hold no `unsafe`).
fn unsafe_free_sigint(pid: u32) {
    let status = Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn a_run_never_removes_or_writes_over_the_users_files_or_its_inputs() {
    let dir = tmpdir();
    let album = dir.path().join("album");
    std::fs::create_dir(&album).unwrap();
    let photo = std::fs::read(golden("face/astronaut.png")).unwrap();
    let names = ["01.png", "02.png", "03.png", "04.png", "05.png", "2024.png", "sheet.png"];
    for n in names {
        std::fs::write(album.join(n), &photo).unwrap();
    }
    let before: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(album.join(n)).unwrap()).collect();
    let mtcnn = golden("face/mtcnn");
    let edit = |input: &Path, out: &Path| {
        let args = tiny_edit(&[
            p(input),
            "big nose",
            "--align",
            "face",
            "--mtcnn",
            p(&mtcnn),
            "--steps",
            "2",
            "--strengths=0",
            "--device",
            "cpu",
            "--out",
            p(out),
        ]);
        Command::new(env!("CARGO_BIN_EXE_clipshape")).args(args).output().unwrap()
    };
    // `cd album && clipshape edit … 05.png … --out .`
    let done = edit(&album.join("05.png"), &album);
    assert!(!done.status.success());
    let e = String::from_utf8_lossy(&done.stderr);
    assert!(e.contains("its input") && e.contains("05.png"), "{e}");
    let after: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(album.join(n)).unwrap()).collect();
    assert!(before == after, "every photo of the album is as it was");
    let mut left: Vec<String> =
        std::fs::read_dir(&album).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["01.png", "02.png", "03.png", "04.png", "05.png", "2024.png", "sheet.png"]);

    // A folder of our results, then each command pointed at its own inputs there.
    let ee = dir.path().join("ee");
    assert!(edit(&golden("face/astronaut.png"), &ee).status.success());
    let shift = ee.join("shift.safetensors");
    let latent = ee.join("latent.safetensors");
    let (shift_bytes, latent_bytes) = (std::fs::read(&shift).unwrap(), std::fs::read(&latent).unwrap());
    let e = fails(&["apply", p(&shift), p(&golden("face/astronaut.png")), "--mtcnn", p(&mtcnn), "--out", p(&ee)]);
    assert!(e.contains("its input") && e.contains("shift.safetensors"), "{e}");
    let e = fails(&[
        "render",
        p(&golden("e4e.pt")),
        "--latent",
        p(&latent),
        "--shift",
        p(&shift),
        "--strengths=0,1",
        "--out",
        p(&ee),
    ]);
    assert!(e.contains("its input"), "{e}");
    assert_eq!(std::fs::read(&shift).unwrap(), shift_bytes);
    assert_eq!(std::fs::read(&latent).unwrap(), latent_bytes);
    let dd = dir.path().join("dd");
    std::fs::create_dir(&dd).unwrap();
    std::fs::write(dd.join("00.png"), &photo).unwrap();
    let done = edit(&dd.join("00.png"), &dd);
    assert!(!done.status.success() && String::from_utf8_lossy(&done.stderr).contains("its input"));
    assert_eq!(std::fs::read(dd.join("00.png")).unwrap(), photo);
}

/// A second edit that runs out of disk (a 3 MB tmpfs in a private mount namespace) fails and
/// leaves the first edit's results whole.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_leaves_the_earlier_results_whole() {
    let dir = tmpdir();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let exe = env!("CARGO_BIN_EXE_clipshape");
    let out = mnt.join("out");
    let run = |extra: &str| {
        let args: Vec<String> =
            tiny_edit(&["face", "--seed", "1", "--steps", "2", "--device", "cpu", "--out", p(&out)])
                .into_iter()
                .map(|a| format!("'{a}'"))
                .collect();
        format!("{exe} {} {extra}", args.join(" "))
    };
    // First a whole edit, then one that needs more room than is left (256 strengths).
    let many: Vec<String> = (0..256).map(|k| format!("{}", k as f64 / 100.0)).collect();
    let script = format!(
        "mount -t tmpfs -o size=3m tmpfs '{m}' && {first} >/dev/null 2>&1 && \
         cp -r '{m}/out' '{m}/../before' && ({second} >/dev/null 2>&1; echo second=$?) && \
         diff -r '{m}/../before' '{m}/out' && echo same && ls -a '{m}/out'",
        m = mnt.display(),
        first = run(""),
        second = run(&format!("--strengths={}", many.join(","))),
    );
    let done = Command::new("unshare").args(["-rm", "sh", "-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{stdout}{}", String::from_utf8_lossy(&done.stderr));
    assert!(stdout.contains("second=1"), "the second edit fails: {stdout}");
    assert!(stdout.contains("same"), "the first edit's results are whole: {stdout}");
    assert!(!stdout.contains(".stage") && !stdout.contains(".part"), "nothing of the failed run is left: {stdout}");
}

/// A JPEG of `img` with an EXIF orientation tag (an APP1 segment right after SOI).
fn jpeg_with_orientation(img: &image::RgbImage, orientation: u16) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(img).unwrap();
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(8u32.to_le_bytes());
    tiff.extend(1u16.to_le_bytes());
    tiff.extend(0x0112u16.to_le_bytes()); // Orientation
    tiff.extend(3u16.to_le_bytes()); // SHORT
    tiff.extend(1u32.to_le_bytes());
    tiff.extend(orientation.to_le_bytes());
    tiff.extend([0, 0]);
    tiff.extend(0u32.to_le_bytes());
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

#[test]
fn photos_are_read_upright_whole_and_with_their_transparency() {
    let dir = tmpdir();
    let photo = image::open(golden("face/astronaut.png")).unwrap().to_rgb8();
    let mtcnn = golden("face/mtcnn");
    // Stored sideways, tagged "rotate 90° clockwise to show": the face is found upright.
    let sideways = dir.path().join("sideways.jpg");
    std::fs::write(&sideways, jpeg_with_orientation(&image::imageops::rotate270(&photo), 6)).unwrap();
    let out = ok(&["faces", p(&sideways), "--json", "--mtcnn", p(&mtcnn)]);
    let faces: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(faces.as_array().unwrap().len(), 1, "{out}");
    let aligned = dir.path().join("a.png");
    ok(&["align", p(&sideways), "--mtcnn", p(&mtcnn), "--out", p(&aligned)]);
    assert_eq!(image::open(&aligned).unwrap().to_rgb8().dimensions(), (256, 256));
    // Cut short: refused, not decoded with a grey lower part.
    let whole = jpeg_with_orientation(&photo, 1);
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &whole[..whole.len() * 6 / 10]).unwrap();
    let e = fails(&["faces", p(&cut), "--mtcnn", p(&mtcnn)]);
    assert!(e.contains("cut.jpg") && e.contains("truncated"), "{e}");
    // Transparent corners stay transparent, and strength 0 is the photo exactly.
    let mut rgba = image::DynamicImage::ImageRgb8(photo).to_rgba8();
    for (x, y, px) in rgba.enumerate_pixels_mut() {
        if x < 100 && y < 100 {
            px.0 = [x as u8, y as u8, 7, 0];
        }
    }
    let clear = dir.path().join("clear.png");
    rgba.save(&clear).unwrap();
    let out = dir.path().join("edit");
    ok_owned(&tiny_edit(&[
        p(&clear),
        "big nose",
        "--align",
        "face",
        "--mtcnn",
        p(&mtcnn),
        "--steps",
        "2",
        "--strengths=0,1",
        "--out",
        p(&out),
    ]));
    let zero = image::open(out.join("00.png")).unwrap();
    assert!(zero.color().has_alpha(), "the composite keeps the photo's transparency");
    assert!(zero.to_rgba8() == rgba, "strength 0 is the photo, transparency and all");
    let one = image::open(out.join("01.png")).unwrap().to_rgba8();
    assert_eq!(one.get_pixel(10, 10).0[3], 0, "still transparent at strength 1");
}

#[test]
fn requests_that_cannot_mean_anything_are_named() {
    let dir = tmpdir();
    let d = dir.path();
    let seed_edit = |extra: &[&str]| {
        let mut a = vec!["face", "--seed", "1", "--steps", "1", "--strengths=0", "--out"];
        let out = d.join("o");
        let out = out.to_str().unwrap().to_string();
        a.push(&out);
        a.extend(extra);
        let args = tiny_edit(&a);
        let done =
            Command::new(env!("CARGO_BIN_EXE_clipshape")).args(&args).arg("--device").arg("cpu").output().unwrap();
        assert!(!done.status.success(), "{extra:?} should fail");
        String::from_utf8_lossy(&done.stderr).into_owned()
    };
    for (extra, want) in [
        (vec!["--also", "Big  Nose", "--also", "big nose"], "are the same"),
        (vec!["--region", "0,0,10,10"], "--region is what --preserve"),
        (vec!["--separate", "0.5"], "--separate keeps several prompts apart"),
        (vec!["--optimize-size", "128"], "more than this generator's 64 px"),
        (vec!["--init-scale", "1e30"], "init_scale"),
        (vec!["--preserve", "1", "--region", "100,100,200,200"], "lies outside the generator's 64×64 output"),
    ] {
        let e = seed_edit(&extra);
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    assert!(!d.join("o").join("1").exists(), "a refused joint edit leaves no folders");

    // A latent far outside any W+ code is refused by name, by render and by eval.
    let w = tch::Tensor::full([10, 64], 1e30, (tch::Kind::Float, tch::Device::Cpu));
    let lat_dir = d.join("lat");
    std::fs::create_dir(&lat_dir).unwrap();
    let big = lat_dir.join("big.safetensors");
    tch::Tensor::write_safetensors(&[("wplus", &w)], &big).unwrap();
    let e =
        fails(&["render", p(&golden("stylegan2.pt")), "--latent", p(&big), "--strengths=0", "--out", p(&d.join("r"))]);
    assert!(e.contains("big.safetensors") && e.contains("W+ codes lie within"), "{e}");
    assert!(!d.join("r").join("00.png").exists());

    // A prompt holding terminal escapes is printed escaped by eval.
    let edited = d.join("esc");
    ok_owned(&tiny_edit(&["\u{1b}[2Jboom", "--seed", "1", "--steps", "1", "--strengths=0", "--out", p(&edited)]));
    let shift = edited.join("shift.safetensors");
    let mut args = vec!["eval".to_string(), p(&shift).to_string(), "--strengths=1".into()];
    args.extend(["--model".to_string(), p(&golden("e4e.pt")).to_string()]);
    args.extend(clip_args());
    let out = ok_owned(&[args.clone(), vec!["--seeds".into(), "0-1".into()]].concat());
    assert!(!out.contains('\u{1b}') && out.contains("\\u{1b}[2Jboom"), "{out}");
    let e = fails_owned(&[args.clone(), vec!["--latents".into(), p(&lat_dir).into()]].concat());
    assert!(e.contains("big.safetensors"), "{e}");

    // Paths that are no model file, and an output folder that is a dangling link.
    let e = fails(&["edit", "/dev/zero", "face", "--seed", "1", "--out", p(&d.join("z"))]);
    assert!(e.contains("/dev/zero") && e.contains("not a regular file"), "{e}");
    #[cfg(unix)]
    {
        let link = d.join("dangling");
        std::os::unix::fs::symlink(d.join("nowhere"), &link).unwrap();
        let e = fails(&["render", p(&golden("stylegan2.pt")), "--latent", p(&big), "--out", p(&link)]);
        assert!(e.contains("a link to a place that does not exist"), "{e}");
    }
}
