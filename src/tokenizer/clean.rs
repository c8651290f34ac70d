//! The text cleaning CLIP runs before tokenising: the subset of `ftfy.fix_text` (ftfy 6.3.1,
//! default settings) that changes real prompts, `html.unescape` twice, Python's whitespace rules,
//! lower-casing.

use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use super::html::{c1_as_windows_1252, entity, unescape as html_unescape};

/// The reference's cleaning: `whitespace_clean(basic_clean(text)).lower()`, i.e. `ftfy.fix_text`,
/// `html.unescape` twice, whitespace collapsed to single spaces and stripped, lower-cased.
pub fn clean_text(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    let mut collapsed = String::with_capacity(unescaped.len());
    for word in unescaped.split(is_py_space).filter(|w| !w.is_empty()) {
        if !collapsed.is_empty() {
            collapsed.push(' ');
        }
        collapsed.push_str(word);
    }
    collapsed.to_lowercase()
}

/// Python's `str.isspace()` (also what `\s` matches in `re` for str patterns).
pub(super) fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0B}'
            | '\u{0C}'
            | '\r'
            | '\u{1C}'..='\u{1F}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// `ftfy.fix_text(text)` with ftfy 6.3.1's default configuration, minus mojibake repair.
///
/// Ported: per-line segments with `unescape_html="auto"` (ftfy's own entity decoding, skipped from
/// the first line that contains `<` on), C1 controls read as Windows-1252, Latin ligatures
/// (`ﬁ` -> `fi`, `Ǆ` -> `DŽ`...), fullwidth/halfwidth forms and U+3000 (NFKC of U+FF01..U+FFEF),
/// curly quotes (`‘’‚‛ʼ` -> `'`, `“”„‟` -> `"`), line breaks (`\r\n`, `\r`, U+2028/9, U+0085 ->
/// `\n`), ANSI terminal escapes removed, invisible control characters removed, NFC; repeated
/// until nothing changes. Not ported: `fix_encoding` (mojibake such as `cafÃ©` is left as is);
/// surrogate repair (a Rust `str` has none).
pub fn fix_text(text: &str) -> String {
    const MAX_DECODE_LENGTH: usize = 1_000_000;
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    let mut rest = text;
    while !rest.is_empty() {
        // Segment = up to and including the next '\n', at most MAX_DECODE_LENGTH characters.
        let line_end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let seg_end = rest.char_indices().nth(MAX_DECODE_LENGTH).map_or(line_end, |(i, _)| i.min(line_end));
        let (segment, tail) = rest.split_at(seg_end);
        rest = tail;
        // ftfy turns HTML unescaping off for this and every later segment once one has a '<'.
        if segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    // Each changing round shrinks the text, so this bound is never reached; it only guarantees
    // termination.
    let max_rounds = text.chars().count() + 2;
    for _ in 0..max_rounds {
        let orig = text.clone();
        if unescape {
            text = ftfy_unescape_html(&text);
        }
        text = text
            .chars()
            .map(|c| match c {
                '\u{80}'..='\u{9F}' => c1_as_windows_1252(c as u32),
                _ => c,
            })
            .collect();
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = text
            .chars()
            .map(|c| match c {
                '\u{2BC}' | '\u{2018}'..='\u{201B}' => '\'',
                '\u{201C}'..='\u{201F}' => '"',
                _ => c,
            })
            .collect();
        text = text.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
        text = terminal_escape_regex().replace_all(&text, "").into_owned();
        text.retain(|c| !is_removed_control(c));
        text = text.nfc().collect();
        if text == orig {
            break;
        }
    }
    text
}

/// `\x1b[` + digits/semicolons + a letter (`\d` is Unicode in both Python's `re` and `regex`).
fn terminal_escape_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").expect("constant regex"))
}

/// Characters ftfy's `remove_control_chars` deletes.
fn is_removed_control(c: char) -> bool {
    matches!(
        c,
        '\u{00}'..='\u{08}'
            | '\u{0B}'
            | '\u{0E}'..='\u{1F}'
            | '\u{7F}'
            | '\u{206A}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFC}'
    )
}

fn fix_latin_ligatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let rep = match c {
            'Ĳ' => "IJ",
            'ĳ' => "ij",
            'ŉ' => "ʼn",
            'Ǳ' => "DZ",
            'ǲ' => "Dz",
            'ǳ' => "dz",
            'Ǆ' => "DŽ",
            'ǅ' => "Dž",
            'ǆ' => "dž",
            'Ǉ' => "LJ",
            'ǈ' => "Lj",
            'ǉ' => "lj",
            'Ǌ' => "NJ",
            'ǋ' => "Nj",
            'ǌ' => "nj",
            'ﬀ' => "ff",
            'ﬁ' => "fi",
            'ﬂ' => "fl",
            'ﬃ' => "ffi",
            'ﬄ' => "ffl",
            'ﬅ' => "ſt",
            'ﬆ' => "st",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(rep);
    }
    out
}

/// ftfy's WIDTH_MAP: U+3000 -> space, and each of U+FF01..U+FFEF -> its NFKC form.
fn fix_character_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{3000}' => out.push(' '),
            '\u{FF01}'..='\u{FFEF}' => out.extend(std::iter::once(c).nfkc()),
            _ => out.push(c),
        }
    }
    out
}

/// ftfy's `unescape_html`: only `&name;` / `&#...;` forms with a semicolon (1-24 alphanumerics),
/// plus all-caps spellings of lower-case entity names (`&EACUTE;` -> `É`).
pub(super) fn ftfy_unescape_html(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("constant regex"));
    if !text.contains('&') {
        return text.to_string();
    }
    re.replace_all(text, |caps: &regex::Captures<'_>| {
        let m = &caps[0];
        if m.starts_with("&#") {
            let unescaped = html_unescape(m);
            return if unescaped.contains(';') { m.to_string() } else { unescaped };
        }
        let name = &m[1..]; // with its ';'
        if let Some(v) = entity(name) {
            return v.to_string();
        }
        let bare = &name[..name.len() - 1];
        let lower = bare.to_ascii_lowercase();
        let upper = lower.to_ascii_uppercase();
        if bare == upper {
            if let Some(v) = entity(&format!("{lower};")) {
                let entity_upper = format!("&{upper};");
                if html_unescape(&entity_upper) == entity_upper {
                    return v.to_uppercase();
                }
            }
        }
        m.to_string()
    })
    .into_owned()
}
