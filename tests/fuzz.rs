//! Bounded, seeded mutation tests of everything that reads untrusted bytes: checkpoint files
//! (torch zip, legacy pickle, TorchScript, safetensors), the tokenizer, pixel views, the model
//! manifest, shift and latent files. Each case must end with a value or a clear error, never a
//! panic, and within a time budget. The case counts keep the whole file to well under a minute;
//! `PROPTEST_CASES=N` runs more.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use clipshape::checkpoint::Checkpoint;
use clipshape::edit::encode::ImageView;
use clipshape::edit::{Latent, PixelFormat, Shift};
use clipshape::models::load_generator;
use clipshape::store::Manifest;
use clipshape::tokenizer::Tokenizer;
use common::golden;
use proptest::prelude::*;
use tch::Device;

/// Slower than this for one case counts as a hang.
const BUDGET: Duration = Duration::from_secs(5);

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// Runs `f`, failing the case on a panic or when it takes longer than [`BUDGET`].
fn survives<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let out = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| panic!("{what}: panicked"));
    assert!(t0.elapsed() < BUDGET, "{what}: took {:?}", t0.elapsed());
    out
}

/// One edit of a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { keep: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
    ]
}

fn apply(bytes: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for m in edits {
        let n = b.len().max(1);
        match m {
            Mutation::Flip { at, xor } if !b.is_empty() => b[at % n] ^= xor,
            Mutation::Truncate { keep } => b.truncate(keep % n),
            Mutation::Insert { at, bytes } => {
                let at = at % (b.len() + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Overwrite { at, bytes } if !b.is_empty() => {
                let at = at % n;
                for (i, v) in bytes.iter().enumerate() {
                    if let Some(slot) = b.get_mut(at + i) {
                        *slot = *v;
                    }
                }
            }
            _ => {}
        }
    }
    b
}

/// Opens a (mutated) model file and reads every tensor, as loading a model would.
fn read_all(path: &Path) {
    if let Ok(ck) = Checkpoint::open(path) {
        let keys: Vec<String> = ck.keys().map(str::to_string).collect();
        for k in keys {
            let _ = ck.tensor(&k);
        }
        let _ = ck.pickle_root();
    }
    let _ = load_generator(path, Device::Cpu);
}

fn checkpoint_case(source: &Path, edits: &[Mutation]) {
    let bytes = std::fs::read(source).unwrap();
    let dir = common::tmpdir();
    let path = dir.path().join(source.file_name().unwrap());
    std::fs::write(&path, apply(&bytes, edits)).unwrap();
    survives(&format!("{} with {edits:?}", source.display()), || read_all(&path));
}

proptest! {
    #![proptest_config(cases(100))]

    #[test]
    fn torch_zip_files(edits in prop::collection::vec(mutation(), 1..4)) {
        checkpoint_case(&golden("stylegan2.pt"), &edits);
    }

    #[test]
    fn legacy_pickles(edits in prop::collection::vec(mutation(), 1..4)) {
        checkpoint_case(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy_format.pt"), &edits);
    }

    #[test]
    fn torchscript_archives(edits in prop::collection::vec(mutation(), 1..4)) {
        checkpoint_case(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jit_tiny.pt"), &edits);
    }

    #[test]
    fn safetensors_files(edits in prop::collection::vec(mutation(), 1..4)) {
        checkpoint_case(&golden("stylegan2.safetensors"), &edits);
    }
}

fn tokenizer() -> &'static Tokenizer {
    static TOK: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_gz_file(golden("bpe_simple_vocab_16e6.txt.gz")).unwrap())
}

proptest! {
    #![proptest_config(cases(200))]

    #[test]
    fn the_tokenizer_takes_any_text(text in any::<String>(), raw in prop::collection::vec(any::<u8>(), 0..300), truncate in any::<bool>()) {
        let tok = tokenizer();
        for t in [text.clone(), String::from_utf8_lossy(&raw).into_owned(), text.repeat(50)] {
            let row = survives(&format!("tokenize {t:?}"), || tok.tokenize(&t, truncate));
            if let Ok(ids) = row {
                prop_assert_eq!(ids.len(), 77);
                prop_assert_eq!(ids[0], clipshape::tokenizer::SOT);
            }
        }
    }

    #[test]
    fn pixel_views_check_their_geometry(
        width in 0u32..70, height in 0u32..70, stride in 0u32..400, len in 0usize..20000, format in 0usize..3,
    ) {
        let format = [PixelFormat::Rgba8, PixelFormat::Bgra8, PixelFormat::Rgb8][format];
        let data = vec![7u8; len];
        let view = survives("ImageView::new", || ImageView::new(&data, width, height, stride, format));
        if let Ok(v) = view {
            // A view that validates can be read whole.
            if v.validate().is_ok() {
                let rgb = survives("rgb8_composited", || v.rgb8_composited()).expect("a valid view converts");
                prop_assert_eq!(rgb.len(), (width * height * 3) as usize);
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn manifests(edits in prop::collection::vec(mutation(), 1..6)) {
        let text = clipshape::store::BUILTIN_MANIFEST.as_bytes();
        let mutated = apply(text, &edits);
        let mutated = String::from_utf8_lossy(&mutated);
        survives("Manifest::parse", || { let _ = Manifest::parse(&mutated, "fuzzed manifest"); });
    }

    #[test]
    fn shift_and_latent_files(edits in prop::collection::vec(mutation(), 1..4)) {
        let g = load_generator(&golden("stylegan2.safetensors"), Device::Cpu).unwrap().generator;
        let dir = common::tmpdir();
        let shift = dir.path().join("shift.safetensors");
        let layer = g.layers()[2].clone();
        let x = tch::Tensor::ones(layer.weight_shape.as_slice(), (tch::Kind::Float, Device::Cpu));
        Shift::new(&g, &layer.id.to_string(), x).unwrap().save(&shift).unwrap();
        let latent = dir.path().join("latent.safetensors");
        Latent::from_seed(&g, 1, 1.0, None).unwrap().save(&latent).unwrap();
        for p in [&shift, &latent] {
            let bytes = std::fs::read(p).unwrap();
            std::fs::write(p, apply(&bytes, &edits)).unwrap();
        }
        survives("Shift::load", || { let _ = Shift::load(&g, &shift); });
        survives("Latent::load", || { let _ = Latent::load(&g, &latent); });
    }
}
