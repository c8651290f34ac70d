//! Text that came from a person or a file, printed safely: a prompt, a recorded name or an
//! error quoting either may hold control characters (ESC[2J clears a terminal, OSC sequences
//! set its title) or bidirectional overrides that reorder what is shown. Every command prints
//! such text through [`escaped`].

/// `s` with control characters and bidirectional overrides written as escapes (`\n`, `\t`,
/// `\u{1b}`); everything else, quotes and backslashes included, as it is.
pub fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_bidi_control(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Writes `text` and a newline to stderr, each line's control characters escaped. A stderr that
/// cannot be written (closed, `2>/dev/full`) is no reason to stop, nor to panic.
pub fn say(text: &str) {
    use std::io::Write as _;
    let lines: Vec<String> = text.split('\n').map(escaped).collect();
    let _ = writeln!(std::io::stderr().lock(), "{}", lines.join("\n"));
}

/// The characters that reorder the text around them (Unicode's explicit embeddings,
/// overrides and isolates, and the marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}')
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(escaped("face with \"big\" nose's tip"), "face with \"big\" nose's tip");
        assert_eq!(escaped("a\u{1b}[2Jb\u{7}\u{9b}"), "a\\u{1b}[2Jb\\u{7}\\u{9b}");
        assert_eq!(escaped("x\ny\tz\u{202e}"), "x\\ny\\tz\\u{202e}");
        assert_eq!(escaped("grüße 顔"), "grüße 顔");
    }
}
