use super::*;
use serde_json::Value as Json;

fn golden(name: &str) -> PathBuf {
    let dir = std::env::var_os("CLIPSHAPE_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden")));
    let path = dir.join(name);
    assert!(path.exists(), "golden file {} is missing (set CLIPSHAPE_GOLDEN)", path.display());
    path
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clipshape-pickle-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// name -> (dtype, shape, bytes) from a safetensors file.
fn read_safetensors(path: &Path) -> HashMap<String, (String, Vec<usize>, Vec<u8>)> {
    let data = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    let header: Json = serde_json::from_slice(&data[8..8 + n]).unwrap();
    let body = &data[8 + n..];
    let mut out = HashMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let shape = info["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let offs = info["data_offsets"].as_array().unwrap();
        let (a, b) = (offs[0].as_u64().unwrap() as usize, offs[1].as_u64().unwrap() as usize);
        out.insert(name.clone(), (info["dtype"].as_str().unwrap().to_string(), shape, body[a..b].to_vec()));
    }
    out
}

/// Every safetensors tensor must be found (under `prefix` + its name)
/// with identical dtype, shape and bytes.  Returns the checkpoint
/// tensors that have no safetensors counterpart.
fn assert_matches_safetensors(ckpt: &TorchFile, prefix: &str, st: &Path) -> Vec<String> {
    let expected = read_safetensors(st);
    let found: HashMap<String, TensorRef> =
        ckpt.tensors().into_iter().filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (s.to_string(), t))).collect();
    for (name, (dtype, shape, bytes)) in &expected {
        let t = found.get(name).unwrap_or_else(|| panic!("{name} not found in {}", ckpt.path().display()));
        let data = ckpt.tensor_bytes(t).unwrap();
        assert_eq!(data.dtype.name(), dtype, "{name}");
        assert_eq!(&data.shape, shape, "{name}");
        assert!(data.bytes == *bytes, "{name}: bytes differ");
    }
    let mut extra: Vec<String> = found.keys().filter(|n| !expected.contains_key(*n)).cloned().collect();
    extra.sort();
    extra
}

#[test]
fn stylegan2_zip_matches_safetensors() {
    let ckpt = TorchFile::open(golden("stylegan2.pt")).unwrap();
    assert_eq!(ckpt.format(), Format::Zip);
    let extra = assert_matches_safetensors(&ckpt, "g_ema.", &golden("stylegan2.safetensors"));
    assert_eq!(extra, Vec::<String>::new());
    let latent = ckpt.root().get("latent_avg").and_then(Value::as_tensor).unwrap();
    assert_eq!(latent.shape, vec![64]);
    assert_eq!(ckpt.tensor_bytes(latent).unwrap().to_f32().len(), 64);
    // The state dict keeps its order: the mapping network comes first.
    let names = flatten_tensors(ckpt.root().get("g_ema").unwrap(), "");
    assert!(names[0].0.starts_with("style."), "{}", names[0].0);
}

#[test]
fn e4e_zip_matches_safetensors_and_opts_are_readable() {
    let ckpt = TorchFile::open(golden("e4e.pt")).unwrap();
    assert_eq!(ckpt.format(), Format::Zip);
    let extra = assert_matches_safetensors(&ckpt, "state_dict.encoder.", &golden("e4e_encoder.safetensors"));
    assert!(!extra.is_empty());
    assert!(extra.iter().all(|n| n.ends_with("num_batches_tracked")), "{extra:?}");
    let nbt = ckpt.tensors().into_iter().find(|(n, _)| n.ends_with("num_batches_tracked")).unwrap().1;
    assert_eq!((nbt.dtype, nbt.shape.len()), (DType::I64, 0));
    assert_eq!(ckpt.tensor_bytes(&nbt).unwrap().to_i64().unwrap().len(), 1);

    let opts = ckpt.root().get("opts").unwrap();
    assert_eq!(opts.get("stylegan_size").and_then(Value::as_int), Some(64));
    assert_eq!(opts.get("encoder_type").and_then(Value::as_str), Some("Encoder4Editing"));
    assert_eq!(opts.get("start_from_latent_avg").and_then(Value::as_bool), Some(true));
    assert_eq!(opts.get("learning_rate").and_then(Value::as_f64), Some(0.0001));
    assert!(!opts.get("progressive_steps").and_then(Value::as_seq).unwrap().is_empty());
    let latent = ckpt.root().get("latent_avg").and_then(Value::as_tensor).unwrap();
    assert_eq!(latent.shape, vec![10, 64]);
    // The decoder half of the state dict is there too.
    assert!(ckpt.tensors().iter().any(|(n, _)| n.starts_with("state_dict.decoder.style.")));
}

#[test]
fn clip_torchscript_flattens_to_state_dict_names() {
    let ckpt = TorchFile::open(golden("clip_jit.pt")).unwrap();
    assert_eq!(ckpt.format(), Format::TorchScript);
    let extra = assert_matches_safetensors(&ckpt, "", &golden("clip.safetensors"));
    assert_eq!(extra, ["context_length", "input_resolution", "vocab_size"]);
    let scalar = |name: &str| {
        let t = ckpt.root().get(name).and_then(Value::as_tensor).unwrap();
        assert!(t.shape.is_empty());
        ckpt.tensor_bytes(t).unwrap().to_i64().unwrap()
    };
    assert_eq!(scalar("input_resolution"), [64]);
    assert_eq!(scalar("context_length"), [77]);
    assert_eq!(scalar("vocab_size"), [49408]);
    let names: Vec<String> = ckpt.tensors().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n == "visual.conv1.weight"));
    assert!(names.iter().any(|n| n == "transformer.resblocks.0.attn.in_proj_weight"));
    match ckpt.root() {
        Value::Object { class, .. } => {
            assert!(class.starts_with("__torch__.clip.model."), "{class}")
        }
        other => panic!("root is {other:?}"),
    }
    assert_eq!(ckpt.root().get("training").and_then(Value::as_bool), Some(false));
}

fn expected_fixtures() -> Json {
    serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every tensor listed in `expected` is found under its name with the
/// exact bytes; returns the names in checkpoint order.
fn assert_fixture_tensors(ckpt: &TorchFile, expected: &Json) -> Vec<String> {
    let tensors = ckpt.tensors();
    let expected = expected.as_object().unwrap();
    for (name, want) in expected {
        let t = &tensors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} missing")).1;
        let data = ckpt.tensor_bytes(t).unwrap();
        let shape: Vec<usize> =
            want["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let dtype = want["dtype"].as_str().unwrap().to_uppercase();
        assert_eq!(data.dtype.name(), dtype, "{name}");
        assert_eq!(data.shape, shape, "{name}");
        assert_eq!(hex(&data.bytes), want["hex"].as_str().unwrap(), "{name}");
    }
    assert_eq!(tensors.len(), expected.len(), "{:?}", tensors.iter().map(|t| &t.0).collect::<Vec<_>>());
    tensors.into_iter().map(|(n, _)| n).collect()
}

fn assert_views_fixture(ckpt: &TorchFile) {
    let expected = expected_fixtures();
    assert_fixture_tensors(ckpt, &expected["views"]);
    let root = ckpt.root();
    let t = |name: &str| root.get(name).and_then(Value::as_tensor).unwrap().clone();

    // The views really are views: shared storages, offsets, strides.
    let (base, tr, slice) = (t("base"), t("transposed"), t("slice"));
    assert_eq!(tr.storage, base.storage);
    assert_eq!((tr.shape.as_slice(), tr.stride.as_slice()), (&[6, 4][..], &[1, 6][..]));
    assert_eq!(
        (slice.storage.as_str(), slice.offset, slice.stride.as_slice()),
        (base.storage.as_str(), 8, &[6, 1][..])
    );
    assert_eq!(ckpt.tensor_bytes(&slice).unwrap().to_f32(), [8.0, 9.0, 10.0, 14.0, 15.0, 16.0]);
    assert_eq!(ckpt.tensor_bytes(&tr).unwrap().to_f32()[..5], [0.0, 6.0, 12.0, 18.0, 1.0]);
    let (a, b) = (t("shared_a"), t("shared_b"));
    assert_eq!((a.storage == b.storage, b.offset), (true, 3));
    assert_eq!(ckpt.tensor_bytes(&b).unwrap().to_f32(), [1.5, 2.0, 2.5, 3.0]);
    let expanded = t("expanded");
    assert_eq!(expanded.stride, [0, 1]);
    assert_eq!(ckpt.tensor_bytes(&expanded).unwrap().to_f32(), [0., 1., 2., 0., 1., 2., 0., 1., 2., 0., 1., 2.]);
    assert_eq!(ckpt.tensor_bytes(&t("scalar")).unwrap().to_f32(), [3.5]);
    assert_eq!(ckpt.tensor_bytes(&t("long")).unwrap().to_i64().unwrap(), [-(1i64 << 40), -1, 0, 1, 1 << 33, 7]);
    assert_eq!(ckpt.tensor_bytes(&t("bf16")).unwrap().to_f32()[..2], [1.5, -2.25]);
    let half = ckpt.tensor_bytes(&t("half")).unwrap().to_f32();
    let half_t = ckpt.tensor_bytes(&t("half_t")).unwrap().to_f32();
    assert_eq!(half_t[1], half[5]); // half is 3x5, half_t[0][1] == half[1][0]

    // Plain Python values.
    let meta = root.get("meta").unwrap();
    for key in ["int", "neg", "big"] {
        assert_eq!(meta.get(key).and_then(Value::as_int), expected["meta"][key].as_i64(), "{key}");
    }
    assert_eq!(meta.get("float").and_then(Value::as_f64), Some(2.5));
    assert_eq!(meta.get("str").and_then(Value::as_str), Some("hello"));
    assert_eq!(meta.get("none"), Some(&Value::None));
    assert_eq!(meta.get("true").and_then(Value::as_bool), Some(true));
    let ints: Vec<i64> = meta.get("ints").and_then(Value::as_seq).unwrap().iter().filter_map(Value::as_int).collect();
    assert_eq!(ints, [1, 2, 3]);
    let tuple = root.get("nested").and_then(|n| n.get("tuple")).unwrap();
    assert!(matches!(tuple, Value::Tuple(items) if items.len() == 3 && items[2] == Value::Str("text".into())));
    // OrderedDicts keep insertion order.
    let od: Vec<String> =
        root.get("od").and_then(Value::entries).unwrap().iter().filter_map(|(k, _)| key_string(k)).collect();
    assert_eq!(od, ["first", "second"]);
}

#[test]
fn zip_fixture_views_and_dtypes() {
    let ckpt = TorchFile::open(fixture("views.pt")).unwrap();
    assert_eq!(ckpt.format(), Format::Zip);
    assert_views_fixture(&ckpt);
}

#[test]
fn legacy_fixture_matches() {
    let ckpt = TorchFile::open(fixture("legacy_format.pt")).unwrap();
    assert_eq!(ckpt.format(), Format::Legacy);
    assert_views_fixture(&ckpt);
}

#[test]
fn jit_fixture_flattens_modules() {
    let ckpt = TorchFile::open(fixture("jit_tiny.pt")).unwrap();
    assert_eq!(ckpt.format(), Format::TorchScript);
    let expected = expected_fixtures();
    let names = assert_fixture_tensors(&ckpt, &expected["jit"]);
    // Attribute order reproduces the eager state-dict order.
    let want: Vec<&str> = expected["jit_order"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(names, want);
}

#[test]
fn legacy_storage_views_are_resolved() {
    let ckpt = TorchFile::open(fixture("legacy_views.pt")).unwrap();
    assert_eq!(ckpt.format(), Format::Legacy);
    assert_fixture_tensors(&ckpt, &expected_fixtures()["legacy_views"]);
    let t = ckpt.root().get("in_view").and_then(Value::as_tensor).unwrap();
    assert_eq!((t.storage.as_str(), t.offset), ("root", 3));
    assert_eq!(ckpt.tensor_bytes(t).unwrap().to_f32(), [4.5, 6.0, 7.5, 9.0]);
}

#[test]
fn rejects_empty_random_and_non_torch_files() {
    let dir = scratch_dir("bad");
    let empty = dir.join("empty.pt");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(TorchFile::open(&empty), Err(CheckpointError::NotACheckpoint { .. })));

    // Deterministic pseudo-random bytes.
    let mut x = 0x1234_5678_9abc_def0u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let rnd = dir.join("random.pt");
    std::fs::write(&rnd, &random).unwrap();
    assert!(matches!(TorchFile::open(&rnd), Err(CheckpointError::NotACheckpoint { .. })));

    // A pickle that is not a torch.save stream.
    let plain = dir.join("plain.pkl");
    std::fs::write(&plain, b"\x80\x02K\x05.").unwrap();
    assert!(matches!(TorchFile::open(&plain), Err(CheckpointError::NotACheckpoint { .. })));

    let missing = dir.join("does-not-exist.pt");
    assert!(matches!(TorchFile::open(&missing), Err(CheckpointError::Io { .. })));
    let err = TorchFile::open(&empty).unwrap_err().to_string();
    assert!(err.contains("empty.pt"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// Writes a stored (uncompressed) zip with the given entries.
fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let mut w = zip::ZipWriter::new(File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        io::Write::write_all(&mut w, data).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn rejects_truncated_and_incomplete_zips() {
    let dir = scratch_dir("zips");
    let full = std::fs::read(golden("stylegan2.pt")).unwrap();
    for cut in [full.len() / 2, full.len() - 30, 100] {
        let truncated = dir.join("truncated.pt");
        std::fs::write(&truncated, &full[..cut]).unwrap();
        let err = TorchFile::open(&truncated).unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "cut {cut}: {err}");
    }

    let no_pkl = dir.join("no_pkl.pt");
    write_zip(&no_pkl, &[("archive/data/0", b"1234"), ("archive/byteorder", b"little")]);
    assert!(matches!(TorchFile::open(&no_pkl), Err(CheckpointError::NotACheckpoint { .. })));

    // data.pkl ending before STOP.
    let short = dir.join("short.pt");
    write_zip(&short, &[("a/data.pkl", b"\x80\x02}q\x00(X\x01\x00\x00\x00k")]);
    assert!(matches!(TorchFile::open(&short), Err(CheckpointError::Corrupt { .. })));

    let bad_op = dir.join("bad_op.pt");
    write_zip(&bad_op, &[("a/data.pkl", b"\x80\x02}\xff.")]);
    match TorchFile::open(&bad_op) {
        Err(CheckpointError::UnsupportedOpcode { opcode: 0xff, offset: 3, .. }) => {}
        other => panic!("{other:?}"),
    }

    // A tensor whose storage entry is absent, and one whose view runs
    // past the end of its storage.
    let pkl = tensor_pickle("7", 4, 1, &[2, 2], &[2, 1]);
    let missing = dir.join("missing.pt");
    write_zip(&missing, &[("m/data.pkl", &pkl)]);
    let ckpt = TorchFile::open(&missing).unwrap();
    let t = ckpt.root().as_tensor().unwrap().clone();
    assert!(matches!(ckpt.tensor_bytes(&t), Err(CheckpointError::MissingStorage { ref key, .. }) if key == "7"));

    let oob = dir.join("oob.pt");
    write_zip(&oob, &[("m/data.pkl", &pkl), ("m/data/7", &[0u8; 16])]);
    let ckpt = TorchFile::open(&oob).unwrap();
    let mut t = ckpt.root().as_tensor().unwrap().clone();
    assert!(matches!(ckpt.tensor_bytes(&t), Err(CheckpointError::Corrupt { .. })));
    t.offset = 0;
    assert_eq!(ckpt.tensor_bytes(&t).unwrap().bytes.len(), 16);
    for (shape, stride, offset) in [
        (vec![usize::MAX, 2], vec![1, 1], 0),
        (vec![2, 2], vec![usize::MAX / 2, 1], 0),
        (vec![3], vec![1], usize::MAX),
        (vec![1 << 40, 1 << 40], vec![0, 0], 0),
    ] {
        let t = TensorRef { shape, stride, offset, ..t.clone() };
        assert!(matches!(ckpt.tensor_bytes(&t), Err(CheckpointError::Corrupt { .. })), "{t:?}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn deflated_archives_read_the_same() {
    // torch stores entries uncompressed, but a re-zipped checkpoint may not be.
    let dir = scratch_dir("deflate");
    let mut src = ZipArchive::new(File::open(fixture("views.pt")).unwrap()).unwrap();
    let packed = dir.join("deflated.pt");
    let mut w = zip::ZipWriter::new(File::create(&packed).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for i in 0..src.len() {
        let mut entry = src.by_index(i).unwrap();
        let name = entry.name().replace("views/", "renamed_prefix/");
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        w.start_file(name, opts).unwrap();
        io::Write::write_all(&mut w, &data).unwrap();
    }
    w.finish().unwrap();
    let ckpt = TorchFile::open(&packed).unwrap();
    assert_views_fixture(&ckpt);
    std::fs::remove_dir_all(dir).ok();
}

/// A data.pkl holding one `_rebuild_tensor_v2` float tensor.
fn tensor_pickle(key: &str, numel: u8, offset: u8, shape: &[u8], stride: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
    p.extend(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n");
    p.push(b'X');
    p.extend((key.len() as u32).to_le_bytes());
    p.extend(key.as_bytes());
    p.extend(b"X\x03\x00\x00\x00cpuK");
    p.push(numel);
    p.extend(b"tQK");
    p.push(offset);
    for dims in [shape, stride] {
        p.push(b'(');
        for &d in dims {
            p.extend([b'K', d]);
        }
        p.push(b't');
    }
    p.extend(b"\x89ccollections\nOrderedDict\n)RtR.");
    p
}

#[test]
fn rejects_truncated_legacy_files_without_panicking() {
    let dir = scratch_dir("legacy");
    let full = std::fs::read(fixture("legacy_format.pt")).unwrap();
    let path = dir.join("cut.pt");
    // Every cut inside the small header pickles, then a spread over the
    // main pickle, the key list and the storage data.
    for cut in (1..64).chain((64..full.len()).step_by(13)) {
        std::fs::write(&path, &full[..cut]).unwrap();
        match TorchFile::open(&path) {
            Err(CheckpointError::Corrupt { .. }) => {}
            // Cut inside the magic-number pickle: no longer recognisable.
            Err(CheckpointError::NotACheckpoint { .. }) if cut <= 15 => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn mutated_pickles_never_panic() {
    let mut archive = ZipArchive::new(File::open(fixture("views.pt")).unwrap()).unwrap();
    let mut pkl = Vec::new();
    archive.by_name("views/data.pkl").unwrap().read_to_end(&mut pkl).unwrap();
    assert!(parse_pickle(&pkl).is_ok());
    // Each position gets a bit flip and one of a rotating set of
    // structural opcodes / extreme bytes (all of them everywhere would
    // make this slow in debug builds).
    const SPECIAL: [u8; 8] = [0x00, 0xff, b'(', b'h', b'R', b'b', b'u', b'Q'];
    for i in 0..pkl.len() {
        for v in [pkl[i] ^ 0x01, SPECIAL[i % SPECIAL.len()]] {
            let mut m = pkl.clone();
            m[i] = v;
            let _ = parse_pickle(&m);
        }
        if i % 3 == 0 {
            assert!(parse_pickle(&pkl[..i]).is_err());
        }
    }
}

#[test]
fn pickle_opcodes_and_sharing() {
    // {'a': [1, -2, 2**70, 1.5, 'x', b'yz', None, True], 'b': <same list>}
    // with the list filled after being memoised (Python aliasing).
    let mut p = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94".to_vec();
    p.extend(b"\x8c\x01b\x94h\x02u");
    p.extend(b"h\x02(K\x01J\xfe\xff\xff\xff\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40G?\xf8\x00\x00\x00\x00\x00\x00");
    p.extend(b"\x8c\x01xC\x02yzN\x88e0.");
    let v = parse_pickle(&p).unwrap();
    let a = v.get("a").and_then(Value::as_seq).unwrap();
    assert_eq!(a[0], Value::Int(1));
    assert_eq!(a[1], Value::Int(-2));
    assert_eq!(a[2], Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40]));
    assert_eq!(a[3], Value::Float(1.5));
    assert_eq!(a[4..], [Value::Str("x".into()), Value::Bytes(b"yz".to_vec()), Value::None, Value::Bool(true)]);
    assert_eq!(v.get("b"), v.get("a"));

    // Unknown globals become inert objects with their BUILD state.
    let p = b"\x80\x02cargparse\nNamespace\n)\x81}(X\x01\x00\x00\x00nK\x03ub.";
    match parse_pickle(p).unwrap() {
        Value::Object { class, args, state } => {
            assert_eq!(class, "argparse.Namespace");
            assert!(args.is_empty());
            assert_eq!(state.unwrap().get("n").and_then(Value::as_int), Some(3));
        }
        other => panic!("{other:?}"),
    }
    // A tensor-subclass rebuild whose argument list contains itself.
    let p = b"\x80\x02]q\x00(ctorch._tensor\n_rebuild_from_type_v2\nq\x01Nh\x00Neh\x01(h\x01Nh\x00NtR.";
    let err = parse_pickle(p).unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }) && err.to_string().contains("nest"));
    // A list containing itself does not recurse forever.
    let v = parse_pickle(b"\x80\x02]q\x00h\x00a.").unwrap();
    assert_eq!(v, Value::List(vec![Value::Global("<cycle>".into())]));
}

#[test]
fn checkpoint_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TorchFile>();
    assert_send_sync::<CheckpointError>();
}

#[test]
fn f16_conversion() {
    let data = |bits: &[u16]| TensorData {
        dtype: DType::F16,
        shape: vec![bits.len()],
        bytes: bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
    };
    let v = data(&[0x3c00, 0xc000, 0x0001, 0x8000, 0x7c00, 0x7bff]).to_f32();
    assert_eq!(v[..4], [1.0, -2.0, 5.960_464_5e-8, -0.0]);
    assert_eq!(v[4], f32::INFINITY);
    assert_eq!(v[5], 65504.0);
}

#[test]
fn a_flipped_byte_in_a_zip_storage_fails_its_crc() {
    let src = golden("stylegan2.pt");
    let bytes = std::fs::read(&src).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
    let (start, size) = (0..zip.len())
        .filter_map(|i| {
            let e = zip.by_index(i).ok()?;
            (e.name().contains("/data/") && e.size() > 16).then(|| (e.data_start(), e.size()))
        })
        .next()
        .expect("a storage entry");
    let mut bad = bytes.clone();
    bad[(start + size / 2) as usize] ^= 0x55;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flipped.pt");
    std::fs::write(&path, bad).unwrap();
    let ckpt = TorchFile::open(&path).unwrap();
    let errors: Vec<String> = flatten_tensors(ckpt.root(), "")
        .iter()
        .filter_map(|(_, t)| ckpt.tensor_bytes(t).err())
        .map(|e| e.to_string())
        .collect();
    assert!(!errors.is_empty(), "the damaged storage was read without complaint");
    assert!(errors.iter().all(|e| e.contains("flipped.pt") && e.to_lowercase().contains("checksum")), "{errors:?}");
}
