//! Store tests: a loopback HTTP server on 127.0.0.1:0 (no other traffic) serving files with
//! cuts, stalls, redirects and wrong bytes.

use super::*;
use crate::layer::LayerId;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};

use sha2::{Digest, Sha256};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// What the test server does; changeable while it runs.
#[derive(Default)]
struct Behaviour {
    files: HashMap<String, Vec<u8>>,
    ignore_range: bool,
    /// Body bytes sent before the connection is cut (for the next `cuts_left` responses).
    cut_after: Option<usize>,
    cuts_left: usize,
    /// Answer this many requests with 302 → /moved/<name>.
    redirects_left: usize,
    chunk_delay: Duration,
    /// (path, Range header) of every request.
    requests: Vec<(String, Option<String>)>,
}

struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<Behaviour>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(files: &[(&str, &[u8])]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let mut b = Behaviour::default();
        for (name, data) in files {
            b.files.insert(name.to_string(), data.to_vec());
        }
        let state = Arc::new(Mutex::new(b));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut handlers = Vec::new();
            while !sp.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let st = st.clone();
                        let sp = sp.clone();
                        handlers.push(std::thread::spawn(move || serve(stream, st, addr, sp)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            for h in handlers {
                let _ = h.join();
            }
        });
        Server { addr, state, stop, thread: Some(thread) }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Behaviour) -> R) -> R {
        f(&mut self.state.lock().expect("server state"))
    }

    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.with(|b| b.requests.clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, state: Arc<Mutex<Behaviour>>, addr: SocketAddr, stop: Arc<AtomicBool>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let (head, body, cut, delay) = {
        let mut b = state.lock().expect("server state");
        b.requests.push((path.clone(), range.clone()));
        let name = path.trim_start_matches('/').to_string();
        let delay = b.chunk_delay;
        if b.redirects_left > 0 && !name.starts_with("moved/") {
            b.redirects_left -= 1;
            let head = format!(
                "HTTP/1.1 302 Found\r\nLocation: http://{addr}/moved/{name}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            (head, Vec::new(), None, delay)
        } else {
            let name = name.strip_prefix("moved/").unwrap_or(&name).to_string();
            match b.files.get(&name).cloned() {
                None => {
                    let body = b"not found".to_vec();
                    (
                        format!(
                            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        ),
                        body,
                        None,
                        delay,
                    )
                }
                Some(data) => {
                    let start = if b.ignore_range {
                        None
                    } else {
                        range
                            .as_deref()
                            .and_then(|r| r.strip_prefix("bytes="))
                            .and_then(|r| r.strip_suffix('-'))
                            .and_then(|n| n.parse::<usize>().ok())
                    };
                    let cut = if b.cuts_left > 0 {
                        b.cuts_left -= 1;
                        b.cut_after
                    } else {
                        None
                    };
                    let len = data.len();
                    match start {
                        Some(s) if s >= len => (
                            format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                            Vec::new(),
                            None,
                            delay,
                        ),
                        Some(s) => (
                            format!(
                                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                                len - 1,
                                len - s
                            ),
                            data[s..].to_vec(),
                            cut,
                            delay,
                        ),
                        None => (
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"),
                            data,
                            cut,
                            delay,
                        ),
                    }
                }
            }
        }
    };
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let limit = cut.unwrap_or(body.len()).min(body.len());
    for chunk in body[..limit].chunks(8192) {
        if stop.load(Ordering::SeqCst) || stream.write_all(chunk).is_err() {
            return;
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A manifest with `w.bin` (set `demo`, which requires `tok` = `v.txt`) and an optional
/// `x.bin`; URLs at `base`.
fn manifest(base: &str, w_size: u64, w_hash: Option<String>, v: &[u8], x: &[u8]) -> Manifest {
    let mut t = String::from("schema = 1\n");
    let mut file = |name: &str, size: u64, hash: Option<String>| {
        t += &format!(
            "[files.\"{name}\"]\nurls = [\"{base}/{name}\"]\nsize = {size}\nlicence = \"test licence of {name}\"\n"
        );
        if let Some(h) = hash {
            t += &format!("sha256 = \"{h}\"\n");
        }
    };
    file("w.bin", w_size, w_hash);
    file("v.txt", v.len() as u64, Some(sha(v)));
    file("x.bin", x.len() as u64, Some(sha(x)));
    t += r#"
[sets.tok]
files = { vocab = "v.txt" }
[sets.demo]
description = "test set"
requires = ["tok"]
files = { weights = "w.bin" }
optional = { extra = "x.bin" }
[sets.demo.domain]
name = "face"
generator_size = 256
frame = { top = 0, left = 0, height = 256, width = 256 }
encoder_input = { height = 256, width = 256 }
align = "none"
default_layer = "convs.3"
default_lambda2 = 0.05
"#;
    Manifest::parse(&t, "test manifest").expect("test manifest parses")
}

fn options() -> StoreOptions {
    StoreOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        retries: 0,
        retry_delay: Duration::ZERO,
        check_disk_space: true,
    }
}

struct Fx {
    server: Server,
    dir: tempfile::TempDir,
    store: ModelStore,
    w: Vec<u8>,
    v: Vec<u8>,
}

/// Server serving `served_w` as w.bin (None: the real w), manifest with the real w's size
/// and hash (unless `hash_w` is false).
fn fx(served_w: Option<Vec<u8>>, hash_w: bool) -> Fx {
    let w = bytes(300_000, 1);
    let v = bytes(20_000, 2);
    let x = bytes(7_000, 3);
    let served = served_w.unwrap_or_else(|| w.clone());
    let server = Server::start(&[("w.bin", &served), ("v.txt", &v), ("x.bin", &x)]);
    let m = manifest(&server.base(), w.len() as u64, hash_w.then(|| sha(&w)), &v, &x);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::new(dir.path().join("models"), m).with_options(options());
    Fx { server, dir, store, w, v }
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).expect("read file")
}

fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

#[test]
fn full_download_of_a_set_and_the_set_it_requires() {
    let f = fx(None, true);
    assert!(f.store.missing_files_message("demo").expect("known set").is_some());
    let report = f.store.fetch("demo", &mut NoProgress).expect("fetch");
    let names: Vec<&str> = report.files.iter().map(|o| o.file.as_str()).collect();
    assert_eq!(names, ["w.bin", "v.txt"]);
    for o in &report.files {
        assert!(matches!(o.action, FetchAction::Downloaded { resumed_from: 0, .. }), "{o:?}");
        assert_eq!(o.licence.as_deref(), Some(format!("test licence of {}", o.file).as_str()));
        assert!(o.pinned.is_none());
    }
    assert_eq!(read(&f.store.file_path("w.bin")), f.w);
    assert_eq!(read(&f.store.file_path("v.txt")), f.v);
    assert!(!f.store.root().join("w.bin.part").exists());
    assert_eq!(f.server.requests().len(), 2);
    let paths = f.store.set_paths("demo").expect("complete");
    assert_eq!(paths.get("weights"), Some(f.store.file_path("w.bin").as_path()));
    assert_eq!(paths.get("vocab"), Some(f.store.file_path("v.txt").as_path()));
    assert_eq!(paths.get("extra"), None, "optional file absent");
    assert_eq!(paths.domain.as_ref().map(|d| d.default_layer), Some(LayerId::Convs(3)));
    assert!(f.store.missing_files_message("demo").expect("known set").is_none());
    let st = f.store.status("demo").expect("status");
    assert!(st.complete);
    // The optional file comes with SET:ROLE.
    f.store.fetch("demo:extra", &mut NoProgress).expect("fetch optional");
    assert!(f.store.set_paths("demo").expect("complete").get("extra").is_some());
    let checks = f.store.verify("demo", &mut NoProgress).expect("verify");
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| matches!(c.result, CheckResult::Ok { .. })), "{checks:?}");
}

#[test]
fn redirect_is_followed() {
    let f = fx(None, true);
    f.server.with(|b| b.redirects_left = 1);
    f.store.fetch_file("w.bin", &mut NoProgress).expect("fetch through a redirect");
    assert_eq!(read(&f.store.file_path("w.bin")), f.w);
    let paths: Vec<String> = f.server.requests().into_iter().map(|r| r.0).collect();
    assert_eq!(paths, ["/w.bin", "/moved/w.bin"]);
}

#[test]
fn resume_after_a_cut_connection() {
    let f = fx(None, true);
    f.server.with(|b| {
        b.cut_after = Some(100_000);
        b.cuts_left = 1;
    });
    let url = format!("{}/w.bin", f.server.base());
    let err = f.store.fetch_file("w.bin", &mut NoProgress).expect_err("connection cut");
    assert!(matches!(err, StoreError::Transfer { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    let part = f.store.root().join("w.bin.part");
    let have = fs::metadata(&part).expect("partial file kept").len();
    assert!(have > 0 && have <= 100_000, "{have}");
    assert!(!f.store.file_path("w.bin").exists());
    let msg = f.store.missing_files_message("demo").expect("set").expect("incomplete");
    assert!(msg.contains("w.bin.part; a fetch resumes it"), "{msg}");

    // The resume goes through a redirect, as on Hugging Face: the Range header must survive.
    f.server.with(|b| b.redirects_left = 1);
    let out = f.store.fetch_file("w.bin", &mut NoProgress).expect("resumed fetch");
    assert!(matches!(out.action, FetchAction::Downloaded { resumed_from, .. } if resumed_from == have), "{out:?}");
    let last = f.server.requests().pop().expect("a request");
    assert_eq!(last, ("/moved/w.bin".to_string(), Some(format!("bytes={have}-"))));
    assert_eq!(read(&f.store.file_path("w.bin")), f.w);
    assert!(!part.exists());
}

#[test]
fn retries_resume_within_one_fetch() {
    let f = fx(None, true);
    f.server.with(|b| {
        b.cut_after = Some(50_000);
        b.cuts_left = 2;
    });
    let store = f.store.clone().with_options(StoreOptions { retries: 2, ..options() });
    let out = store.fetch_file("w.bin", &mut NoProgress).expect("fetch with retries");
    assert!(matches!(out.action, FetchAction::Downloaded { resumed_from, .. } if resumed_from > 0), "{out:?}");
    assert_eq!(read(&store.file_path("w.bin")), f.w);
    let reqs = f.server.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs[1].1.is_some() && reqs[2].1.is_some(), "{reqs:?}");
}

#[test]
fn a_stalled_transfer_times_out() {
    let f = fx(None, true);
    f.server.with(|b| b.chunk_delay = Duration::from_millis(1500));
    let store = f.store.clone().with_options(StoreOptions { read_timeout: Duration::from_millis(300), ..options() });
    let t0 = Instant::now();
    let err = store.fetch_file("w.bin", &mut NoProgress).expect_err("stalled");
    assert!(matches!(err, StoreError::Transfer { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(!store.file_path("w.bin").exists());
}

#[test]
fn server_without_range_support_restarts_from_zero() {
    let f = fx(None, true);
    f.server.with(|b| b.ignore_range = true);
    fs::create_dir_all(f.store.root()).expect("mkdir");
    // A stale .part that does not even match: the 200 answer must discard it.
    fs::write(f.store.root().join("w.bin.part"), vec![0xAB; 5000]).expect("write part");
    let out = f.store.fetch_file("w.bin", &mut NoProgress).expect("fetch");
    assert!(matches!(out.action, FetchAction::Downloaded { resumed_from: 0, .. }), "{out:?}");
    assert_eq!(read(&f.store.file_path("w.bin")), f.w);
    assert_eq!(f.server.requests()[0].1.as_deref(), Some("bytes=5000-"));
}

#[test]
fn http_404_names_the_url_and_status() {
    let f = fx(None, true);
    f.server.with(|b| b.files.remove("w.bin"));
    let err = f.store.fetch_file("w.bin", &mut NoProgress).expect_err("404");
    assert!(matches!(err, StoreError::HttpStatus { status: 404, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("404") && msg.contains(&format!("{}/w.bin", f.server.base())), "{msg}");
    assert!(!f.store.file_path("w.bin").exists());
    assert!(!f.store.root().join("w.bin.part").exists());
}

#[test]
fn a_wrong_size_is_never_success() {
    for served_len in [299_990usize, 300_010] {
        let f = fx(Some(bytes(served_len, 1)), true);
        let err = f.store.fetch_file("w.bin", &mut NoProgress).expect_err("wrong size");
        match &err {
            StoreError::SizeMismatch { expected, got, .. } => {
                assert_eq!((*expected, *got), (300_000, served_len as u64));
            }
            other => panic!("{other:?}"),
        }
        assert!(!f.store.file_path("w.bin").exists());
        let st = f.store.status("demo").expect("status");
        assert!(!st.complete);
        assert!(matches!(st.files[0].state, FileState::Missing { .. }));
    }
}

#[test]
fn hash_mismatch_moves_the_file_aside() {
    let f = fx(Some(bytes(300_000, 99)), true);
    let err = f.store.fetch_file("w.bin", &mut NoProgress).expect_err("bad hash");
    let msg = err.to_string();
    assert!(msg.contains(&sha(&f.w)) && msg.contains(&sha(&bytes(300_000, 99))), "{msg}");
    match &err {
        StoreError::HashMismatch { moved_to: Some(p), .. } => assert_eq!(read(p), bytes(300_000, 99)),
        other => panic!("{other:?}"),
    }
    assert!(!f.store.file_path("w.bin").exists(), "a bad file is never under its name");
    assert!(matches!(f.store.set_paths("demo"), Err(StoreError::Missing { .. })));
}

#[test]
fn a_present_file_is_not_downloaded_again() {
    let f = fx(None, true);
    f.store.fetch_file("w.bin", &mut NoProgress).expect("first fetch");
    let again = f.store.fetch_file("w.bin", &mut NoProgress).expect("second fetch");
    assert_eq!(again.action, FetchAction::AlreadyPresent);
    assert_eq!(f.server.requests().len(), 1);
    assert!(f.store.plan("w.bin").expect("plan").is_empty());
}

#[test]
fn add_copies_or_links_a_checked_file() {
    let f = fx(None, true);
    let src = f.dir.path().join("my-download.bin");
    fs::write(&src, &f.w).expect("write src");
    // Copy, with the manifest file inferred from the size.
    let out = f.store.add("demo", None, &src, false, &mut NoProgress).expect("add copy");
    assert_eq!(out.file, "w.bin");
    assert!(!out.linked);
    let dest = f.store.file_path("w.bin");
    assert!(!fs::symlink_metadata(&dest).expect("dest").file_type().is_symlink());
    assert_eq!(read(&dest), f.w);
    // Link, naming the file.
    fs::remove_file(&dest).expect("rm");
    let out = f.store.add("demo", Some("w.bin"), &src, true, &mut NoProgress).expect("add link");
    assert!(out.linked);
    #[cfg(unix)]
    assert_eq!(fs::read_link(&dest).expect("symlink"), fs::canonicalize(&src).expect("canon"));
    assert_eq!(read(&dest), f.w);
    assert!(f.store.status("demo").expect("status").files[0].link_target.is_some());
    // A same-size file with other content is refused and left alone.
    fs::remove_file(&dest).expect("rm");
    let wrong = f.dir.path().join("w.bin");
    fs::write(&wrong, bytes(300_000, 7)).expect("write");
    let err = f.store.add("demo", None, &wrong, false, &mut NoProgress).expect_err("wrong content");
    assert!(matches!(err, StoreError::HashMismatch { moved_to: None, .. }), "{err:?}");
    assert!(wrong.exists() && !dest.exists());
    let err = f.store.add("demo", Some("nope.bin"), &src, false, &mut NoProgress).expect_err("unknown file");
    assert!(err.to_string().contains("w.bin"), "{err}");
    assert_eq!(f.server.requests().len(), 0);
}

#[test]
fn concurrent_fetches_of_one_file_end_with_one_correct_file() {
    let f = fx(None, true);
    f.server.with(|b| b.chunk_delay = Duration::from_millis(4));
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let store = f.store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                store.fetch_file("w.bin", &mut NoProgress).map(|o| o.action)
            })
        })
        .collect();
    let actions: Vec<FetchAction> = handles.into_iter().map(|h| h.join().expect("thread").expect("fetch")).collect();
    assert_eq!(actions.iter().filter(|a| matches!(a, FetchAction::Downloaded { .. })).count(), 1, "{actions:?}");
    assert!(actions.contains(&FetchAction::AlreadyPresent));
    assert_eq!(f.server.requests().len(), 1);
    assert_eq!(read(&f.store.file_path("w.bin")), f.w);
    assert!(!f.store.root().join("w.bin.part").exists());
}

#[test]
fn an_unknown_hash_is_pinned_then_enforced() {
    let f = fx(None, false);
    let out = f.store.fetch_file("w.bin", &mut NoProgress).expect("fetch");
    assert_eq!(out.pinned.as_deref(), Some(sha(&f.w).as_str()));
    let lock = fs::read_to_string(f.store.root().join(PIN_FILE_NAME)).expect("lock file");
    assert!(lock.contains("w.bin") && lock.contains(&sha(&f.w)), "{lock}");
    assert_eq!(f.store.expected_hash("w.bin").expect("pins"), Some(sha(&f.w)));
    // Upstream changes: the pinned hash rejects the new bytes.
    fs::remove_file(f.store.file_path("w.bin")).expect("rm");
    f.server.with(|b| b.files.insert("w.bin".into(), bytes(300_000, 5)));
    let err = f.store.fetch_file("w.bin", &mut NoProgress).expect_err("pinned hash");
    match err {
        StoreError::HashMismatch { expected, .. } => assert_eq!(expected, sha(&f.w)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_mirror_replaces_the_manifest_urls() {
    let f = fx(None, true);
    let w = f.w.clone();
    let m = manifest(&dead_url(), w.len() as u64, Some(sha(&w)), &f.v, &bytes(7_000, 3));
    let store = ModelStore::new(f.dir.path().join("m2"), m)
        .with_options(options())
        .with_mirror(Some(format!("{}/", f.server.base())));
    assert_eq!(store.urls_for("w.bin"), [format!("{}/w.bin", f.server.base())]);
    store.fetch("demo", &mut NoProgress).expect("fetch from mirror");
    assert_eq!(read(&store.file_path("w.bin")), w);
    let msg = ModelStore::new(f.dir.path().join("m3"), store.manifest().clone())
        .with_mirror(Some("http://127.0.0.1:9/mirror".into()))
        .missing_files_message("demo")
        .expect("known set")
        .expect("incomplete");
    assert!(msg.contains("http://127.0.0.1:9/mirror/w.bin"), "{msg}");
}

#[test]
fn offline_message_lists_files_urls_and_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = ModelStore::new(&root, Manifest::builtin().expect("builtin manifest"));
    let msg = store.missing_files_message("ffhq").expect("known set").expect("incomplete");
    for needle in [
        "e4e_ffhq_encode.pt",
        "https://huggingface.co/public-data/e4e/resolve/fdd18714fc6b639487adbd901f16f67eb24ba786/e4e_ffhq_encode.pt",
        "ViT-B-32.pt",
        "bpe_simple_vocab_16e6.txt.gz",
        "https://raw.githubusercontent.com/openai/CLIP/d05afc436d78f1c48dc0dbf8e5980a9d471f35f6/clip/bpe_simple_vocab_16e6.txt.gz",
        "clipshape models fetch ffhq",
        "1201649680",
    ] {
        assert!(msg.contains(needle), "missing {needle} in:\n{msg}");
    }
    assert!(msg.contains(&root.display().to_string()), "{msg}");
    match store.set_paths("ffhq") {
        Err(StoreError::Missing { files, message, .. }) => {
            // e4e, the three MTCNN nets, CLIP and its vocab.
            assert_eq!(files.len(), 6, "{files:?}");
            assert!(files.iter().any(|f| f == "mtcnn_onet.pt"), "{files:?}");
            assert_eq!(message, msg);
        }
        other => panic!("{other:?}"),
    }
    let err = store.path("ffhq", "generator").expect_err("optional absent");
    assert!(err.to_string().contains("clipshape models fetch ffhq:generator"), "{err}");
    assert!(matches!(store.path("ffhq", "nope"), Err(StoreError::UnknownRole { .. })));
    assert!(matches!(store.set_paths("nope"), Err(StoreError::UnknownSet { .. })));
    // Unreachable source: the error names the URL.
    let dead = dead_url();
    let store = store.with_mirror(Some(dead.clone())).with_options(options());
    let err = store.fetch_file("bpe_simple_vocab_16e6.txt.gz", &mut NoProgress).expect_err("refused");
    assert!(matches!(err, StoreError::Transfer { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("{dead}/bpe_simple_vocab_16e6.txt.gz")), "{err}");
}

#[test]
fn the_real_manifest_is_consistent() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/manifest.toml");
    let m = Manifest::load(Path::new(path)).expect("models/manifest.toml parses and validates");
    assert_eq!(m, Manifest::builtin().expect("builtin"));
    for set in ["ffhq", "car", "horse", "clip"] {
        assert!(m.sets.contains_key(set), "{set}");
    }
    let clip = m.set("clip").expect("clip");
    assert_eq!(clip.files.get("clip").map(String::as_str), Some("ViT-B-32.pt"));
    assert_eq!(clip.files.get("bpe").map(String::as_str), Some("bpe_simple_vocab_16e6.txt.gz"));
    for (name, f) in &m.files {
        // MTCNN's P-Net is the smallest file, 28 570 bytes.
        assert!(f.size > 20_000, "{name}: implausible size {}", f.size);
        let h = f.sha256.as_deref().unwrap_or_default();
        assert!(
            h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) && h == h.to_ascii_lowercase(),
            "{name}: {h}"
        );
        assert!(!f.urls.is_empty() && f.urls.iter().all(|u| u.starts_with("https://")), "{name}");
        // The store name is the URL's last segment, or that segment under a prefix that keeps
        // generic upstream names (facenet-pytorch's `onet.pt`) apart in one store.
        assert!(
            f.urls.iter().all(|u| {
                let last = u.rsplit('/').next().unwrap_or_default();
                name == last || name.strip_suffix(last).is_some_and(|p| p.ends_with('_'))
            }),
            "{name}"
        );
        assert!(f.licence.as_deref().is_some_and(|l| !l.is_empty()), "{name}");
    }
    let expect = [
        ("ffhq", "e4e_ffhq_encode.pt", 1024u32),
        ("car", "e4e_cars_encode.pt", 512),
        ("horse", "e4e_horse_encode.pt", 256),
    ];
    for (set, e4e, size) in expect {
        let s = m.set(set).expect("set");
        assert_eq!(s.requires, ["clip"], "{set}");
        assert_eq!(s.files.get("e4e").map(String::as_str), Some(e4e));
        assert!(m.files[e4e].size > 500_000_000, "{set}: an e4e file holds encoder + generator");
        let gen = s.optional.get("generator").expect("standalone generator alternative");
        assert!(gen.starts_with("stylegan2-") && gen.ends_with("-config-f.pt"));
        for file in s.files.values().chain(s.optional.values()) {
            assert!(m.files.contains_key(file), "{set}: {file}");
        }
        let d = s.domain.as_ref().expect("domain");
        assert_eq!(d.generator_size, size);
        let res = d.default_layer.resolution();
        assert!((16..=32).contains(&res), "{set}: {} works at {res} px", d.default_layer);
        assert!((0.01..=0.1).contains(&d.default_lambda2), "{set}");
        assert!(!d.prompts.is_empty());
    }
    let car = m.set("car").and_then(|s| s.domain.clone().ok_or(StoreError::NoModelDir)).expect("car domain");
    assert_eq!(car.frame, Frame { top: 64, left: 0, height: 384, width: 512 });
    assert_eq!(car.encoder_input, Size { height: 192, width: 256 });
    let ffhq = m.set("ffhq").and_then(|s| s.domain.clone().ok_or(StoreError::NoModelDir)).expect("ffhq domain");
    assert_eq!(ffhq.align, Align::Ffhq);
    assert_eq!(ffhq.frame, Frame { top: 0, left: 0, height: 1024, width: 1024 });
    assert!(ffhq.prompts.iter().any(|p| p == "face with big nose"));
}

#[test]
fn manifest_errors_are_located() {
    let err = Manifest::parse("schema = 1\n[files.\"a.bin\"]\nsize = = 3\n", "bad.toml").expect_err("syntax");
    let msg = err.to_string();
    assert!(msg.contains("bad.toml") && msg.contains("line 3"), "{msg}");
    let text = "schema = 1\n[files.\"a.bin\"]\nsize = 3\nsha256 = \"abc\"\n\n[sets.s]\nfiles = { w = \"b.bin\" }\n";
    let msg = Manifest::parse(text, "m.toml").expect_err("semantic").to_string();
    assert!(msg.contains("line 2") && msg.contains("64 hex"), "{msg}");
    assert!(msg.contains("line 6") && msg.contains("'b.bin'"), "{msg}");
    let msg = Manifest::parse("schema = 1\nfoo = 2\n", "m.toml").expect_err("unknown key").to_string();
    assert!(msg.contains("foo"), "{msg}");
    // A missing hash is allowed.
    Manifest::parse("schema = 1\n[files.\"a.bin\"]\nsize = 3\n[sets.s]\nfiles = { w = \"a.bin\" }\n", "ok")
        .expect("no hash is fine");
}

#[test]
fn default_root_follows_the_environment() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v))
    };
    let r = |p: &'static [(&'static str, &'static str)]| default_root_with(env(p)).ok();
    assert_eq!(r(&[("CLIPSHAPE_MODELS", "/m"), ("XDG_DATA_HOME", "/x"), ("HOME", "/h")]), Some(PathBuf::from("/m")));
    assert_eq!(
        r(&[("CLIPSHAPE_MODELS", ""), ("XDG_DATA_HOME", "/x"), ("HOME", "/h")]),
        Some(PathBuf::from("/x/clipshape/models"))
    );
    assert_eq!(r(&[("XDG_DATA_HOME", "rel"), ("HOME", "/h")]), Some(PathBuf::from("/h/.local/share/clipshape/models")));
    assert_eq!(r(&[]), None);
    let store =
        ModelStore::from_env_with(env(&[("HOME", "/h"), ("CLIPSHAPE_MODELS_MIRROR", "http://127.0.0.1:1/base/")]))
            .expect("store");
    assert_eq!(store.urls_for("ViT-B-32.pt"), ["http://127.0.0.1:1/base/ViT-B-32.pt"]);
    assert_eq!(store.root(), Path::new("/h/.local/share/clipshape/models"));
    // A folder the user chose keeps the environment's mirror (and manifest).
    let chosen =
        ModelStore::at_with(PathBuf::from("/chosen"), env(&[("CLIPSHAPE_MODELS_MIRROR", "http://127.0.0.1:1/m")]))
            .expect("store");
    assert_eq!(chosen.root(), Path::new("/chosen"));
    assert_eq!(chosen.urls_for("ViT-B-32.pt"), ["http://127.0.0.1:1/m/ViT-B-32.pt"]);
}

#[test]
fn a_callback_can_cancel_and_the_part_is_kept() {
    let f = fx(None, true);
    let mut calls = 0u32;
    let mut seen_total = 0;
    let mut p = CallbackProgress::new(|file: &str, done: u64, total: u64| {
        assert_eq!(file, "w.bin");
        seen_total = total;
        calls += 1;
        done == 0
    });
    let err = f.store.fetch_file("w.bin", &mut p).expect_err("cancelled");
    assert!(matches!(err, StoreError::Cancelled { .. }), "{err:?}");
    assert!(f.store.root().join("w.bin.part").exists());
    assert!(!f.store.file_path("w.bin").exists());
    drop(p);
    assert!(calls >= 2);
    assert_eq!(seen_total, 300_000);
}

#[test]
fn verify_moves_a_corrupt_file_aside() {
    let f = fx(None, true);
    f.store.fetch("demo", &mut NoProgress).expect("fetch");
    fs::write(f.store.file_path("w.bin"), bytes(300_000, 42)).expect("corrupt");
    let checks = f.store.verify("demo", &mut NoProgress).expect("verify");
    let w = checks.iter().find(|c| c.file == "w.bin").expect("w checked");
    assert!(matches!(&w.result, CheckResult::HashMismatch { moved_to: Some(_), .. }), "{w:?}");
    assert!(!f.store.file_path("w.bin").exists());
    let v = checks.iter().find(|c| c.file == "v.txt").expect("v checked");
    assert!(matches!(v.result, CheckResult::Ok { .. }));
    // fetch replaces it.
    f.store.fetch("demo", &mut NoProgress).expect("refetch");
    assert_eq!(read(&f.store.file_path("w.bin")), f.w);
}

#[test]
fn content_ranges() {
    assert_eq!(parse_content_range("bytes 10-99/100"), Some((10, Some(100))));
    assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
    assert_eq!(parse_content_range("items 1-2/3"), None);
}

/// Keeps the notes a fetch tells the user.
#[derive(Default)]
struct Notes(Vec<String>);

impl Progress for Notes {
    fn start(&mut self, _: &str, _: u64, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self, _: &str) {}
    fn note(&mut self, message: &str) {
        self.0.push(message.to_string());
    }
}

#[test]
fn a_garbage_partial_file_is_blamed_and_discarded_not_the_source() {
    let f = fx(None, true);
    let part = f.store.root().join("w.bin.part");
    fs::create_dir_all(f.store.root()).unwrap();
    fs::write(&part, vec![0xAA; 1000]).unwrap();
    let mut notes = Notes::default();
    let out = f.store.fetch_file("w.bin", &mut notes).expect("the good source succeeds");
    assert!(matches!(out.action, FetchAction::Downloaded { resumed_from: 0, .. }), "{out:?}");
    assert_eq!(read(&f.store.file_path("w.bin")), f.w);
    assert!(notes.0.iter().any(|n| n.contains("partial download") && n.contains("1000 bytes")), "{:?}", notes.0);
    let ranges: Vec<Option<String>> = f.server.requests().into_iter().map(|(_, r)| r).collect();
    assert_eq!(ranges, [Some("bytes=1000-".to_string()), None], "resumed once, then from the start");
}

#[test]
fn a_cancel_is_heard_within_a_second_while_the_socket_is_silent() {
    let f = fx(None, true);
    // Each chunk comes after 5 s of silence; the read timeout is a minute.
    f.server.with(|b| b.chunk_delay = Duration::from_secs(5));
    let store = f.store.clone().with_options(StoreOptions { read_timeout: Duration::from_secs(60), ..options() });
    let t0 = Instant::now();
    let mut p = CallbackProgress::new(|_: &str, _: u64, _: u64| t0.elapsed() < Duration::from_millis(300));
    let err = store.fetch_file("w.bin", &mut p).expect_err("cancelled");
    assert!(matches!(err, StoreError::Cancelled { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(1), "cancelled after {:?}", t0.elapsed());
}
