//! Python's `html.unescape`, which CLIP's cleaning applies twice.

use std::sync::OnceLock;

use regex::Regex;

use super::html5_entities::HTML5_ENTITIES;

/// Python's `html.unescape`: named references (HTML5 list, longest prefix without `;` for the
/// legacy names), decimal and hex references with the HTML5 replacements for invalid numbers.
pub fn unescape(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)").expect("constant regex")
    });
    if !text.contains('&') {
        return text.to_string();
    }
    re.replace_all(text, |caps: &regex::Captures<'_>| replace_charref(&caps[1])).into_owned()
}

fn replace_charref(s: &str) -> String {
    if let Some(num) = s.strip_prefix('#') {
        let num = num.trim_end_matches(';');
        let value = if let Some(hex) = num.strip_prefix(['x', 'X']) {
            parse_saturating(hex, 16)
        } else {
            parse_saturating(num, 10)
        };
        return numeric_charref(value);
    }
    if let Some(v) = entity(s) {
        return v.to_string();
    }
    // Longest prefix (at least 2 characters, shorter than s) that is an entity.
    let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).skip(2).collect();
    for &x in bounds.iter().rev() {
        if let Some(v) = entity(&s[..x]) {
            return format!("{v}{}", &s[x..]);
        }
    }
    format!("&{s}")
}

/// Parse ASCII digits; anything above U+10FFFF saturates to 0x110000.
fn parse_saturating(digits: &str, radix: u32) -> u32 {
    let mut v: u32 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix).unwrap_or(0);
        v = v.saturating_mul(radix).saturating_add(d).min(0x11_0000);
    }
    v
}

fn numeric_charref(num: u32) -> String {
    match num {
        0x00 => return "\u{FFFD}".into(),
        0x0D => return "\r".into(),
        0x80..=0x9F => return c1_as_windows_1252(num).to_string(),
        0xD800..=0xDFFF | 0x11_0000.. => return "\u{FFFD}".into(),
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => return String::new(),
        _ => {}
    }
    if num & 0xFFFE == 0xFFFE {
        return String::new();
    }
    char::from_u32(num).map_or_else(|| "\u{FFFD}".into(), |c| c.to_string())
}

/// The value of one named reference (with or without its `;`, as the list spells it).
pub fn entity(name: &str) -> Option<&'static str> {
    HTML5_ENTITIES.binary_search_by(|(k, _)| (*k).cmp(name)).ok().and_then(|i| HTML5_ENTITIES.get(i)).map(|&(_, v)| v)
}

/// Byte 0x80..=0x9F decoded as (sloppy) Windows-1252; undefined bytes stay the C1 control.
pub(super) fn c1_as_windows_1252(b: u32) -> char {
    const TABLE: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{2C6}',
        '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}',
        '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}',
        '\u{153}', '\u{9D}', '\u{17E}', '\u{178}',
    ];
    b.checked_sub(0x80).and_then(|i| TABLE.get(i as usize).copied()).unwrap_or(char::REPLACEMENT_CHARACTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_table_is_sorted_and_complete() {
        assert!(HTML5_ENTITIES.windows(2).all(|w| w[0].0 < w[1].0), "binary search needs sorted names");
        // Python 3's html.entities.html5 holds 2231 names.
        assert_eq!(HTML5_ENTITIES.len(), 2231);
        assert_eq!(entity("amp;"), Some("&"));
        assert_eq!(entity("amp"), Some("&"));
        assert_eq!(entity("nosuch;"), None);
        assert_eq!(unescape("&lt;a&gt; &#x263a; &notit;"), "<a> \u{263a} \u{ac}it;");
    }
}
