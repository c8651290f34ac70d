use super::clean::{fix_text, ftfy_unescape_html};
use super::html::unescape as html_unescape;
use super::*;

fn golden_dir() -> PathBuf {
    match std::env::var_os("CLIPSHAPE_GOLDEN") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden")),
    }
}

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        Tokenizer::from_gz_file(golden_dir().join("bpe_simple_vocab_16e6.txt.gz")).expect("load the golden vocabulary")
    })
}

fn ids(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().expect("array").iter().map(|x| x.as_i64().expect("integer")).collect()
}

#[test]
fn golden_tokens_match_reference() {
    let path = golden_dir().join("tokens.json");
    let text = std::fs::read_to_string(&path).expect("read tokens.json");
    let cases: serde_json::Value = serde_json::from_str(&text).expect("parse tokens.json");
    let cases = cases.as_array().expect("list");
    assert_eq!(cases.len(), 44);
    let tok = tokenizer();
    for case in cases {
        let prompt = case["text"].as_str().expect("text");
        let bpe = ids(&case["bpe"]);
        let row = ids(&case["ids"]);
        assert_eq!(tok.encode(prompt), bpe, "encode({prompt:?})");
        assert_eq!(
            tok.tokenize_reference(prompt, true).expect("truncate never fails"),
            row,
            "tokenize({prompt:?}, truncate=True)"
        );
        let n = case["n_tokens_with_sot_eot"].as_u64().expect("n") as usize;
        assert_eq!(n, bpe.len() + 2);
        let untruncated = tok.tokenize_reference(prompt, false);
        if case["raises_without_truncate"].as_bool().expect("bool") {
            match untruncated {
                Err(TokenizerError::TooLong { n_tokens, limit }) => {
                    assert_eq!((n_tokens, limit), (n, 77), "{prompt:?}")
                }
                other => panic!("{prompt:?}: expected TooLong, got {other:?}"),
            }
        } else {
            assert_eq!(untruncated.expect("fits"), row, "{prompt:?}");
        }
        // The product-facing call agrees except that it refuses empty prompts.
        match tok.tokenize(prompt, true) {
            Ok(r) => assert_eq!(r, row),
            Err(TokenizerError::EmptyPrompt) => assert!(bpe.is_empty(), "{prompt:?}"),
            Err(e) => panic!("{prompt:?}: {e}"),
        }
    }
}

#[test]
fn empty_prompts_are_refused() {
    let tok = tokenizer();
    for p in ["", "   ", "\t\n\r\n ", "\u{3000}\u{A0}", "\u{FEFF}"] {
        assert!(matches!(tok.tokenize(p, false), Err(TokenizerError::EmptyPrompt)), "{p:?}");
        assert!(matches!(tok.tokenize(p, true), Err(TokenizerError::EmptyPrompt)));
        let row = tok.tokenize_reference(p, false).expect("reference accepts empty");
        assert_eq!(&row[..3], &[SOT, EOT, 0]);
    }
    let err = tok.tokenize("  ", false).unwrap_err().to_string();
    assert!(err.contains("empty prompt"), "{err}");
    assert!(tok.tokenize_batch(&["a cat", " "], false).is_err());
}

#[test]
fn too_long_error_and_truncation() {
    let tok = tokenizer();
    let long = "cat ".repeat(80);
    match tok.tokenize(&long, false) {
        Err(e @ TokenizerError::TooLong { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("82 tokens") && msg.contains("77"), "{msg}");
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    let row = tok.tokenize(&long, true).expect("truncate");
    assert_eq!(row.len(), 77);
    assert_eq!(row[0], SOT);
    assert_eq!(row[76], EOT);
    assert!(row[1..76].iter().all(|&i| i == 2368));
    let exact = "cat ".repeat(75);
    assert_eq!(tok.tokenize(&exact, false).expect("fits")[76], EOT);
    let batch = tok.tokenize_batch(&["a cat", "a dog"], false).expect("batch");
    assert_eq!(batch.len(), 2 * 77);
}

#[test]
fn constants_and_special_tokens() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), VOCAB_SIZE);
    assert_eq!((tok.sot(), tok.eot()), (SOT, EOT));
    assert_eq!(tok.context_length(), 77);
    assert_eq!(tok.token(SOT), Some(START_OF_TEXT));
    assert_eq!(tok.token_id("cat</w>"), Some(2368));
    assert_eq!(tok.token(-1), None);
    assert_eq!(tok.encode("<|startoftext|><|endoftext|>"), vec![SOT, EOT]);
}

#[test]
fn heap_bpe_equals_reference_bpe() {
    let tok = tokenizer();
    let mut words: Vec<Vec<u8>> = vec![
        b"aaaaaaaaaaaaaaaa".to_vec(),
        b"antidisestablishmentarianism".to_vec(),
        b"!!!!????....".to_vec(),
        "東京タワー".as_bytes().to_vec(),
        "🐴🐎👍🏽".as_bytes().to_vec(),
    ];
    // Deterministic pseudo-random words over a small alphabet (many merges apply).
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let alphabet = b"aeiostnrlhdcmpu";
    for len in 1..200 {
        let mut w = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            w.push(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        words.push(w);
    }
    for w in &words {
        let mut a = Vec::new();
        let (Some((&last, init)), true) = (w.split_last(), w.len() > 1) else {
            continue;
        };
        a.extend(init.iter().map(|&b| tok.byte_id[b as usize]));
        a.push(tok.byte_id_final[last as usize]);
        let mut b = a.clone();
        tok.merge_with_heap(&mut a);
        merge_reference(tok, &mut b);
        assert_eq!(a, b, "{:?}", String::from_utf8_lossy(w));
    }
}

#[test]
fn cleaning_follows_python() {
    assert_eq!(html_unescape("&amp;amp; &lt &notit; &#x41;&#66 &#0; &#128;"), "&amp; < ¬it; AB \u{FFFD} €");
    assert_eq!(html_unescape("&#xD800; &#1114112; &#xFFFF; &bogus; &"), "\u{FFFD} \u{FFFD}  &bogus; &");
    assert_eq!(ftfy_unescape_html("P&EACUTE;REZ &notit; &#59; &amp;"), "PÉREZ &notit; &#59; &");
    assert_eq!(fix_text("it’s “fine” ﬁne ＡＢＣ\u{3000}x"), "it's \"fine\" fine ABC x");
    assert_eq!(fix_text("cafe\u{301}"), "café");
    assert_eq!(fix_text("ｶﾞ"), "ガ");
    assert_eq!(fix_text("<b> &amp;\n&amp;"), "<b> &amp;\n&amp;");
    assert_eq!(fix_text("\x1b[31mred\x1b[0m\u{FEFF}\r\n"), "red\n");
    // ftfy deletes U+001C before the whitespace collapse sees it, and reads U+0085 as the
    // Windows-1252 byte 0x85 (an ellipsis) before its line-break fix would.
    assert_eq!(clean_text("  A\u{1C}B\t\u{2003}C\u{85} "), "ab c\u{2026}");
}

#[test]
fn bad_vocab_files_are_reported() {
    let missing = golden_dir().join("no_such_vocab.txt.gz");
    match Tokenizer::from_gz_file(&missing) {
        Err(e @ TokenizerError::Io { .. }) => {
            assert!(e.to_string().contains("no_such_vocab.txt.gz"), "{e}")
        }
        other => panic!("expected Io, got {other:?}"),
    }

    let not_gzip = Tokenizer::from_gz_bytes(b"i n\nt h\n");
    assert!(
        matches!(&not_gzip, Err(TokenizerError::CorruptVocab { reason, .. }) if reason.contains("gzip")),
        "{not_gzip:?}"
    );

    let gz = |text: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, text).expect("gzip");
        enc.finish().expect("gzip")
    };
    let few = Tokenizer::from_gz_bytes(&gz(b"#version: 0.2\ni n\nt h\n"));
    assert!(matches!(&few, Err(TokenizerError::CorruptVocab { reason, .. }) if reason.contains("too few")), "{few:?}");
    let garbage: Vec<u8> = (0..100_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    assert!(matches!(Tokenizer::from_gz_bytes(&gz(&garbage)), Err(TokenizerError::CorruptVocab { .. })));
    let mut bad_line = String::from("#version: 0.2\n");
    for i in 0..N_MERGES {
        bad_line.push_str(if i == 10 { "a b c\n" } else { "x y\n" });
    }
    let bad = Tokenizer::from_gz_bytes(&gz(bad_line.as_bytes()));
    assert!(matches!(&bad, Err(TokenizerError::CorruptVocab { reason, .. }) if reason.contains("line 12")), "{bad:?}");
}

#[test]
fn odd_inputs_do_not_panic() {
    let tok = tokenizer();
    for p in [
        "\u{0}\u{1}\u{7F}",
        "&#99999999999999999999;&#x110000;&",
        "&&&&;;;;&#;&#x;",
        "\u{345}",
        "'s'S'ſ's",
        "\u{10FFFF}\u{E000}",
    ] {
        let _ = tok.encode(p);
        let _ = tok.tokenize(p, false);
        let _ = tok.tokenize_reference(p, true);
    }
    let huge = "x".repeat(20_000);
    assert_eq!(tok.tokenize(&huge, true).expect("truncate")[76], EOT);
}

/// The oracle: the reference algorithm verbatim.
fn merge_reference(tok: &Tokenizer, word: &mut Vec<u32>) {
    while word.len() > 1 {
        let best = word
            .windows(2)
            .filter_map(|w| tok.merge_rank(w[0], w[1]).map(|m| (m.rank, w[0], w[1], m)))
            .min_by_key(|&(rank, ..)| rank);
        let Some((_, first, second, m)) = best else {
            break;
        };
        let mut merged = Vec::with_capacity(word.len());
        let mut i = 0;
        while i < word.len() {
            if word[i] == first && word.get(i + 1) == Some(&second) {
                merged.push(m.merged);
                i += 2;
            } else {
                merged.push(word[i]);
                i += 1;
            }
        }
        *word = merged;
    }
}
