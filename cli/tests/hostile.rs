//! Defects of the third hostile round (issue #29), each test failing on the tree before it:
//! records and outputs that lost a person's files, signals that crashed or were ignored,
//! pipes that blocked, transparency dropped, words printed raw.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{golden, tmpdir};
use support::*;

/// The tests that time how soon a command stops run one at a time: two of them at once on two
/// cores would measure each other.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn mtcnn() -> PathBuf {
    golden("face/mtcnn")
}

fn astronaut() -> PathBuf {
    golden("face/astronaut.png")
}

fn before_after() -> [PathBuf; 2] {
    ["before", "after"].map(|w| golden(&format!("transfer/astronaut_bignose_{w}.png")))
}

/// `clipshape ARGS` on the CPU, running: stderr piped, stdout dropped.
fn spawn(args: &[&str], store: Option<&Path>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipshape"));
    cmd.args(args).args(["--device", "cpu"]).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.env("CLIPSHAPE_MODELS", store.map(Path::to_path_buf).unwrap_or_else(|| tmpdir().keep()));
    cmd.spawn().expect("run clipshape")
}

/// Sends `sig` (INT, TERM, HUP) through the `kill` program (the tests hold no `unsafe`).
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

/// Waits for `child` at most `limit`; on time its output and how long it took, else it is
/// killed and the test fails.
fn finish(mut child: Child, limit: Duration, what: &str) -> (Output, Duration) {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = Vec::new();
            child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
            return (Output { status, stdout: Vec::new(), stderr }, t.elapsed());
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stage_or_part_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".stage") || n.ends_with(".part"))
        .collect()
}

/// A 12000×9000 JPEG (108 MP, a phone's largest), made once for the tests that need a photo
/// whose reading and processing take long.
fn huge_photo() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let face = image::open(astronaut()).unwrap().to_rgb8();
        let img = image::imageops::resize(&face, 12000, 9000, image::imageops::FilterType::Nearest);
        let path = tmpdir().keep().join("huge.jpg");
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 70).encode_image(&img).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    })
}

/// An earlier edit of ours (tiny models, a seed): its folder, with shift and latent.
fn earlier_edit(dir: &Path) -> PathBuf {
    let out = dir.join("ours");
    ok_owned(&tiny_edit(&["face", "--seed", "1", "--steps", "1", "--strengths=0", "--out", p(&out)]));
    out
}

/// Item 1: a record copied from another folder (or written by hand) that names the person's
/// files with their true sizes and hashes decides nothing: the run is refused, every file kept.
#[test]
fn a_copied_record_removes_none_of_the_users_files() {
    let dir = tmpdir();
    let ours = earlier_edit(dir.path());
    let album = dir.path().join("album");
    std::fs::create_dir_all(album.join("sub")).unwrap();
    std::fs::copy(astronaut(), album.join("photo.png")).unwrap();
    std::fs::write(album.join("mine.txt"), "my notes").unwrap();
    std::fs::write(album.join("sub/holiday.jpg"), "a holiday").unwrap();
    let theirs = ["mine.txt", "photo.png", "sub/holiday.jpg"];
    let kept: Vec<Vec<u8>> = theirs.iter().map(|n| std::fs::read(album.join(n)).unwrap()).collect();
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ours.join(".clipshape.json")).unwrap()).unwrap();
    record["files"] = theirs
        .iter()
        .zip(&kept)
        .map(|(n, b)| {
            use sha2::Digest as _;
            serde_json::json!({"path": n, "size": b.len(), "sha256": hex::encode(sha2::Sha256::digest(b))})
        })
        .collect();
    std::fs::write(album.join(".clipshape.json"), record.to_string()).unwrap();
    let shift = ours.join("shift.safetensors");
    let photo = album.join("photo.png");
    let e4e = golden("e4e.pt");
    let out = clipshape(&[
        "apply",
        p(&shift),
        p(&photo),
        "--model",
        p(&e4e),
        "--mtcnn",
        p(&mtcnn()),
        "--strengths=0",
        "--out",
        p(&album),
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    // Refused: the record names files that are none of ours, and it is no file of ours either.
    assert!(!out.status.success(), "{e}");
    assert!(e.contains(".clipshape.json names mine.txt") && e.contains("not written over"), "{e}");
    for (n, b) in theirs.iter().zip(&kept) {
        assert_eq!(&std::fs::read(album.join(n)).unwrap(), b, "{n} is kept as it was");
    }
}

/// Items 2 and 3: no command writes over what it reads, however the output is named (a link,
/// a path through another folder), and two outputs of one run never name one file.
#[test]
fn no_command_writes_over_its_input_or_its_other_output() {
    let dir = tmpdir();
    let d = dir.path();
    let me = d.join("me.png");
    std::fs::copy(astronaut(), &me).unwrap();
    std::os::unix::fs::symlink(&me, d.join("link.png")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    let photo = std::fs::read(&me).unwrap();
    let (m, e4e) = (mtcnn(), golden("e4e.pt"));
    let (me_, link, around) = (p(&me), d.join("link.png"), d.join("sub/../me.png"));
    let w = d.join("w.safetensors");
    let [b, a] = before_after();
    let x = d.join("x.png");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["align", me_, "--mtcnn", p(&m), "--out", me_], "is the photo"),
        (vec!["align", me_, "--mtcnn", p(&m), "--out", p(&link)], "is the photo"),
        (vec!["align", me_, "--mtcnn", p(&m), "--out", p(&around)], "is the photo"),
        (vec!["encode", p(&e4e), me_, "--out", me_], "is the photo"),
        (vec!["encode", p(&e4e), me_, "--out", p(&w), "--recon", p(&link)], "is the photo"),
        (
            vec!["transfer", me_, p(&b), p(&a), "--mtcnn", p(&m), "--out", p(&x), "--layer-out", p(&x)],
            "name the same file",
        ),
    ];
    for (args, want) in cases {
        let e = fails(&args);
        assert!(e.contains(want), "{args:?}: {e}");
        assert_eq!(std::fs::read(&me).unwrap(), photo, "{args:?}: the photo is as it was");
        assert!(!w.exists() && !x.exists(), "{args:?} wrote an output");
    }
    assert!(stage_or_part_in(d).is_empty() && stage_or_part_in(&d.join("sub")).is_empty());
}

/// Item 4: every output's folder is checked before the work, and the outputs land together: a
/// run that cannot write one of them leaves the earlier files as they were.
#[test]
fn transfer_checks_every_output_first_and_writes_them_together() {
    let dir = tmpdir();
    let d = dir.path();
    let [b, a] = before_after();
    let (out, layer) = (d.join("out.png"), d.join("layer.png"));
    std::fs::write(&out, "an earlier result").unwrap();
    let base = |o: &Path, l: &Path| -> Vec<String> {
        ["transfer", p(&astronaut()), p(&b), p(&a), "--mtcnn", p(&mtcnn()), "--out", p(o), "--layer-out", p(l)]
            .map(String::from)
            .to_vec()
    };
    let e = fails_owned(&base(&out, &d.join("nowhere/layer.png")));
    assert!(e.contains("--layer-out") && e.contains("does not exist"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "an earlier result");
    ok_owned(&base(&out, &layer));
    assert!(image::open(&out).is_ok() && image::open(&layer).is_ok());
    assert!(stage_or_part_in(d).is_empty());
}

/// Item 5: a second Ctrl-C leaves at once and never crashes (it ran libtorch's destructors
/// under a running convolution and segfaulted in 1 run of 8 to 4 of 10).
#[test]
fn a_second_ctrl_c_leaves_at_once_and_never_crashes() {
    let _one = heavy();
    let dir = tmpdir();
    for i in 0..10u64 {
        let out = dir.path().join(format!("cut{i}"));
        let args =
            tiny_edit(&[p(&astronaut()), "big nose", "--mtcnn", p(&mtcnn()), "--steps", "100000", "--out", p(&out)]);
        let child = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
        wait_until("the run's folder", Duration::from_secs(30), || out.exists());
        std::thread::sleep(Duration::from_millis(150 + 40 * i));
        signal(&child, "INT");
        std::thread::sleep(Duration::from_millis(50));
        signal(&child, "INT");
        let (done, _) = finish(child, Duration::from_secs(10), "two Ctrl-C");
        assert_eq!(
            done.status.code(),
            Some(130),
            "run {i}: {:?} {}",
            done.status,
            String::from_utf8_lossy(&done.stderr)
        );
        assert!(stage_or_part_in(&out).is_empty(), "run {i} left its staging folder");
    }
}

/// Item 10: every command stops soon after Ctrl-C (a second on a quiet machine; the limit
/// allows for a loaded one), says "cancelled", exits with 130 and leaves no output.
#[test]
fn every_command_stops_soon_after_ctrl_c() {
    let _one = heavy();
    let dir = tmpdir();
    let d = dir.path();
    let huge = p(huge_photo());
    let [b, a] = before_after();
    let (m, e4e) = (mtcnn(), golden("e4e.pt"));
    let clip = clip_args();
    let (al, tr, ed) = (d.join("a.png"), d.join("t.png"), d.join("edit"));
    let mut edit = vec!["edit", p(&e4e), huge, "face", "--align", "none", "--steps", "1", "--out", p(&ed)];
    edit.extend(clip.iter().map(String::as_str));
    let cases: Vec<(Vec<&str>, u64, Vec<&Path>)> = vec![
        (vec!["faces", huge, "--mtcnn", p(&m)], 2500, vec![]),
        (vec!["align", huge, "--mtcnn", p(&m), "--out", p(&al)], 2500, vec![&al]),
        (vec!["transfer", huge, p(&b), p(&a), "--align", "none", "--out", p(&tr)], 4000, vec![&tr]),
        (edit, 6000, vec![&ed]),
    ];
    for (args, after_ms, outputs) in cases {
        let child = spawn(&args, None);
        std::thread::sleep(Duration::from_millis(after_ms));
        assert!(child.id() > 0);
        signal(&child, "INT");
        let (done, took) = finish(child, Duration::from_secs(60), args[0]);
        let e = String::from_utf8_lossy(&done.stderr);
        eprintln!("{}: stopped {took:?} after Ctrl-C", args[0]);
        assert_eq!(done.status.code(), Some(130), "{}: {e}", args[0]);
        assert!(e.contains("cancelled"), "{}: {e}", args[0]);
        assert!(took < Duration::from_secs(3), "{}: {took:?} after Ctrl-C", args[0]);
        for o in outputs {
            assert!(!o.exists(), "{}: {} was written", args[0], o.display());
        }
        assert!(stage_or_part_in(d).is_empty(), "{}", args[0]);
    }
}

/// Item 10: `models add` of a large file stops its copy on Ctrl-C and leaves no partial copy.
#[test]
fn models_add_stops_its_copy_on_ctrl_c() {
    let _one = heavy();
    let dir = tmpdir();
    let store = dir.path().join("store");
    // A sparse file of the e4e encoder's size: it reads as zeros, quickly, without disk.
    let file = dir.path().join("e4e_ffhq_encode.pt");
    std::fs::File::create(&file).unwrap().set_len(1_201_649_680).unwrap();
    let child = spawn(&["models", "add", "ffhq", p(&file)], Some(&store));
    let part = store.join("e4e_ffhq_encode.pt.part");
    wait_until("the copy", Duration::from_secs(30), || part.exists());
    signal(&child, "INT");
    let (done, took) = finish(child, Duration::from_secs(30), "models add");
    let e = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(130), "{e}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(!part.exists() && !store.join("e4e_ffhq_encode.pt").exists(), "{e}");
}

/// Item 10: `models fetch` from a server that sends a trickle stops on Ctrl-C (it downloaded
/// everything, or retried a stalled server for minutes, and exited 0).
#[test]
fn models_fetch_from_a_slow_server_stops_on_ctrl_c() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::Write as _;
                let mut s = stream;
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                // The size the manifest gives the first file fetched (the ffhq e4e encoder).
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1201649680\r\n\r\n");
                for _ in 0..600 {
                    if s.write_all(&[0u8; 16]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
    let dir = tmpdir();
    let store = dir.path().join("store");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipshape"));
    cmd.args(["models", "fetch", "ffhq"])
        .env("CLIPSHAPE_MODELS", &store)
        .env("CLIPSHAPE_MODELS_MIRROR", format!("http://127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_until("the download", Duration::from_secs(30), || {
        std::fs::read_dir(&store)
            .into_iter()
            .flatten()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".part"))
    });
    signal(&child, "INT");
    let (done, took) = finish(child, Duration::from_secs(30), "models fetch");
    assert_eq!(done.status.code(), Some(130), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// Item 11 (and 18): SIGTERM and SIGHUP cancel as Ctrl-C does; the folders the run made for
/// its output go again.
#[test]
fn sigterm_and_sighup_cancel_like_ctrl_c() {
    let _one = heavy();
    let dir = tmpdir();
    for sig in ["TERM", "HUP"] {
        let new = dir.path().join(format!("new-{sig}"));
        let out = new.join("run");
        let args = tiny_edit(&["face", "--seed", "1", "--steps", "100000", "--out", p(&out)]);
        let child = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
        wait_until("the run's folder", Duration::from_secs(30), || out.exists());
        std::thread::sleep(Duration::from_millis(300));
        signal(&child, sig);
        let (done, _) = finish(child, Duration::from_secs(10), sig);
        let e = String::from_utf8_lossy(&done.stderr);
        assert_eq!(done.status.code(), Some(130), "{sig}: {e}");
        assert!(e.contains("cancelled"), "{sig}: {e}");
        assert!(!new.exists(), "SIG{sig}: {} is left behind", new.display());
    }
}

/// Item 12: a pipe (or any file that is not a regular one) given as an input is refused by
/// name at once; reading it would block forever.
#[test]
fn pipes_are_refused_by_name_without_blocking() {
    let dir = tmpdir();
    let d = dir.path();
    let (fifo_png, fifo_st) = (d.join("fifo.png"), d.join("fifo.safetensors"));
    for f in [&fifo_png, &fifo_st] {
        assert!(Command::new("mkfifo").arg(f).status().unwrap().success());
    }
    let [b, a] = before_after();
    let (m, e4e, ast) = (mtcnn(), golden("e4e.pt"), astronaut());
    let (o, w, ap, r) = (d.join("o.png"), d.join("w"), d.join("ap"), d.join("r"));
    let cases: Vec<Vec<&str>> = vec![
        vec!["faces", p(&fifo_png), "--mtcnn", p(&m)],
        vec!["align", p(&fifo_png), "--mtcnn", p(&m), "--out", p(&o)],
        vec!["transfer", p(&fifo_png), p(&b), p(&a), "--mtcnn", p(&m), "--out", p(&o)],
        vec!["transfer", p(&ast), p(&fifo_png), p(&a), "--mtcnn", p(&m), "--out", p(&o)],
        vec!["encode", p(&e4e), p(&fifo_png), "--out", p(&w)],
        vec!["apply", p(&fifo_st), "--seed", "1", "--model", p(&e4e), "--out", p(&ap)],
        vec!["render", p(&e4e), "--latent", p(&fifo_st), "--out", p(&r)],
    ];
    for args in cases {
        let (done, _) = finish(spawn(&args, None), Duration::from_secs(20), args[0]);
        let e = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success(), "{args:?}");
        assert!(e.contains("fifo.") && e.contains("not a regular file"), "{args:?}: {e}");
    }
}

/// Item 13: `transfer` keeps a photo's transparency (its result was RGB, transparent pixels
/// opaque grey), and so do its layer and the edit's layers.
#[test]
fn transfer_keeps_a_photos_transparency() {
    let dir = tmpdir();
    let d = dir.path();
    let mut img = image::open(astronaut()).unwrap().to_rgba8();
    let w = img.width();
    for (x, _, px) in img.enumerate_pixels_mut() {
        if x < w / 3 {
            px.0[3] = 0;
        }
    }
    let photo = d.join("cut-out.png");
    img.save(&photo).unwrap();
    let [b, a] = before_after();
    let (out, layer) = (d.join("t.png"), d.join("l.png"));
    ok(&["transfer", p(&photo), p(&b), p(&a), "--mtcnn", p(&mtcnn()), "--out", p(&out), "--layer-out", p(&layer)]);
    let result = image::open(&out).unwrap();
    assert!(result.color().has_alpha(), "{:?}", result.color());
    let (result, layer) = (result.to_rgba8(), image::open(&layer).unwrap().to_rgba8());
    for (x, y, px) in img.enumerate_pixels() {
        if px.0[3] == 0 && x + 4 < w / 3 {
            assert_eq!(result.get_pixel(x, y).0[3], 0, "({x}, {y}) stays transparent");
            assert_eq!(layer.get_pixel(x, y).0[3], 0, "the layer is clear over ({x}, {y})");
        }
    }
    assert_ne!(result, img, "the transfer moved pixels");
}

/// Item 14: a complete JPEG followed by other data (a phone's motion photo appends its video)
/// is read; a JPEG cut short is still refused.
#[test]
fn a_jpeg_with_data_after_its_end_is_read() {
    let dir = tmpdir();
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(&image::open(astronaut()).unwrap().to_rgb8())
        .unwrap();
    let motion = dir.path().join("motion.jpg");
    let mut with_video = bytes.clone();
    with_video.extend(b"\0\0\0\x18ftypmp42");
    with_video.extend((0..200_000u32).map(|i| (i * 7919 % 251) as u8));
    std::fs::write(&motion, with_video).unwrap();
    let faces = ok(&["faces", p(&motion), "--mtcnn", p(&mtcnn())]);
    assert!(faces.lines().count() == 2, "{faces}");
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = fails(&["faces", p(&cut), "--mtcnn", p(&mtcnn())]);
    assert!(e.contains("truncated"), "{e}");
}

/// Item 15: a strength finite as a 64-bit number but not as the generator's 32-bit one is
/// refused by name (render wrote a black picture and exited 0).
#[test]
fn strengths_beyond_32_bit_floats_are_refused_by_name() {
    let dir = tmpdir();
    let ours = earlier_edit(dir.path());
    let (latent, shift) = (ours.join("latent.safetensors"), ours.join("shift.safetensors"));
    let r = dir.path().join("r");
    let e = fails(&["render", p(&golden("e4e.pt")), "--latent", p(&latent), "--strengths=0,1e39", "--out", p(&r)]);
    assert!(e.contains("1e39") && e.contains("too large"), "{e}");
    let e4e = golden("e4e.pt");
    let e = fails(&["apply", p(&shift), "--seed", "2", "--model", p(&e4e), "--strengths=1e39", "--out", p(&r)]);
    assert!(e.contains("1e39") && e.contains("too large"), "{e}");
    assert!(!r.exists());
}

/// Item 16: a prompt's control characters are shown, not obeyed, by every command.
#[test]
fn prompts_are_shown_with_their_control_characters_escaped() {
    let dir = tmpdir();
    let mut score = vec!["score".to_string()];
    score.extend(clip_args());
    score.extend([p(&astronaut()).to_string(), "a\u{1b}[2Jface".into()]);
    let out = ok_owned(&score);
    assert!(out.contains("a\\u{1b}[2Jface") && !out.contains('\u{1b}'), "{out:?}");
    let e = dir.path().join("e");
    let edit = clipshape(
        &tiny_edit(&["\u{1b}]0;owned\u{7}face", "--seed", "1", "--steps", "1", "--strengths=0", "--out", p(&e)])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let said = String::from_utf8_lossy(&edit.stderr);
    assert!(edit.status.success(), "{said}");
    assert!(
        said.contains("\\u{1b}]0;owned\\u{7}face") && !said.contains('\u{1b}') && !said.contains('\u{7}'),
        "{said:?}"
    );
}

/// Item 18: a failed run leaves no folder it made; a photo too small is named; a record that
/// cannot be read is said to be so.
#[test]
fn small_things_are_said_and_cleaned() {
    let dir = tmpdir();
    let d = dir.path();
    let grey = d.join("grey.png");
    image::RgbImage::from_pixel(200, 150, image::Rgb([128, 128, 128])).save(&grey).unwrap();
    let nested = d.join("a/b");
    let e =
        fails_owned(&tiny_edit(&[p(&grey), "face", "--align", "face", "--mtcnn", p(&mtcnn()), "--out", p(&nested)]));
    assert!(e.contains("no face"), "{e}");
    assert!(!d.join("a").exists(), "the run made a and a/b: both go again");

    let tiny = d.join("tiny.png");
    image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3])).save(&tiny).unwrap();
    let e = fails(&["encode", p(&golden("e4e.pt")), p(&tiny), "--out", p(&d.join("w"))]);
    assert!(e.contains("tiny.png"), "{e}");

    let folder = d.join("f");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("00.png"), "mine").unwrap();
    std::fs::write(folder.join(".clipshape.json"), "{ not json").unwrap();
    let e = fails_owned(&tiny_edit(&["face", "--seed", "1", "--steps", "1", "--out", p(&folder)]));
    assert!(e.contains(".clipshape.json") && e.contains("not a record this version reads"), "{e}");
    assert_eq!(std::fs::read_to_string(folder.join("00.png")).unwrap(), "mine");
}

/// The review of the fixes (issue #29): a signal the run inherited as ignored (`nohup`, a
/// script's background job) stays ignored.
#[test]
fn an_ignored_hangup_stays_ignored() {
    let dir = tmpdir();
    let out = dir.path().join("kept");
    let mut args =
        tiny_edit(&["face", "--seed", "1", "--steps", "30", "--strengths=0", "--out", p(&out), "--device", "cpu"]);
    args.insert(0, env!("CARGO_BIN_EXE_clipshape").to_string());
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let child = Command::new("sh")
        .args(["-c", &format!("trap '' HUP; exec {}", quoted.join(" "))])
        .env("CLIPSHAPE_MODELS", dir.path().join("store"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the run's folder", Duration::from_secs(30), || out.exists());
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, "HUP");
    let (done, _) = finish(child, Duration::from_secs(120), "nohup'd edit");
    assert!(done.status.success(), "{:?}: {}", done.status, String::from_utf8_lossy(&done.stderr));
    assert!(out.join("shift.safetensors").is_file());
}

/// The review: the leftovers a run cleans up are ours by their exact names, never an input of
/// the run, never a folder of the user's that looks like ours; a file of the user's named like
/// our record is never written over.
#[test]
fn stale_cleanup_and_the_record_name_spare_the_users_files() {
    let dir = tmpdir();
    let ours = earlier_edit(dir.path());
    let (shift, latent) = (ours.join("shift.safetensors"), ours.join("latent.safetensors"));
    let g = dir.path().join("g");
    let lookalike = g.join(".clipshape-mine.stage");
    std::fs::create_dir_all(&lookalike).unwrap();
    std::fs::copy(&shift, lookalike.join("shift.safetensors")).unwrap();
    let part = g.join(".clipshape-abc123.part");
    std::fs::copy(&latent, &part).unwrap();
    let hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for f in [&lookalike.join("shift.safetensors"), &part] {
        std::fs::File::options().write(true).open(f).unwrap().set_modified(hours_ago).unwrap();
    }
    let e4e = golden("e4e.pt");
    ok(&[
        "render",
        p(&e4e),
        "--latent",
        p(&part),
        "--shift",
        p(&lookalike.join("shift.safetensors")),
        "--strengths=0",
        "--out",
        p(&g),
    ]);
    assert!(part.is_file() && lookalike.join("shift.safetensors").is_file(), "inputs and look-alikes are kept");

    let d1 = dir.path().join("d1");
    std::fs::create_dir(&d1).unwrap();
    std::fs::copy(&latent, d1.join(".clipshape.json")).unwrap();
    let before = std::fs::read(d1.join(".clipshape.json")).unwrap();
    let e = fails(&["render", p(&e4e), "--latent", p(&d1.join(".clipshape.json")), "--strengths=0", "--out", p(&d1)]);
    assert!(e.contains(".clipshape.json"), "{e}");
    assert_eq!(std::fs::read(d1.join(".clipshape.json")).unwrap(), before);
}

/// The review: a pipe where the record's key is kept does not hang a run; the key is not
/// used, so the record proves nothing (and nothing is removed later).
#[test]
fn a_pipe_as_the_record_key_does_not_hang_a_run() {
    let dir = tmpdir();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("clipshape")).unwrap();
    assert!(Command::new("mkfifo").arg(state.join("clipshape/record.key")).status().unwrap().success());
    let out = dir.path().join("r");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipshape"));
    cmd.args(tiny_edit(&["face", "--seed", "1", "--steps", "1", "--strengths=0", "--out", p(&out), "--device", "cpu"]))
        .env("XDG_STATE_HOME", &state)
        .env("CLIPSHAPE_MODELS", dir.path().join("store"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (done, _) = finish(cmd.spawn().unwrap(), Duration::from_secs(120), "a run with a pipe as its key");
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
}

/// The review: output paths on stdout carry no raw control characters, and a stderr that
/// cannot be written does not turn an error into a panic.
#[test]
fn output_paths_are_escaped_and_a_full_stderr_is_no_panic() {
    let dir = tmpdir();
    let out = dir.path().join("x\u{1b}[31m\u{7}.png");
    let said = ok(&["align", p(&astronaut()), "--mtcnn", p(&mtcnn()), "--out", p(&out)]);
    assert!(out.is_file() && said.contains("\\u{1b}[31m\\u{7}.png") && !said.contains('\u{1b}'), "{said:?}");
    let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
    let done = Command::new(env!("CARGO_BIN_EXE_clipshape"))
        .args(["--device", "cpu", "faces", p(&dir.path().join("missing.png")), "--mtcnn", p(&mtcnn())])
        .stderr(full)
        .output()
        .unwrap();
    assert_eq!(done.status.code(), Some(1), "{:?}", done.status);
}
