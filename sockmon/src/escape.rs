//! Making attacker-controlled bytes (process names, paths) safe to print.
//!
//! Any user can rename a process (`prctl(PR_SET_NAME)`) or name an executable
//! with control characters, terminal escape sequences, invisible format
//! characters or invalid UTF-8, and with the punctuation our own tables use.
//! The human view must never pass such a byte to a terminal nor let a name
//! pose as table structure, and JSON must stay one valid object per line and
//! carry the exact bytes.
//!
//! The name encoding of JSON ([`for_json`], decoded by [`from_json`]):
//! valid UTF-8 passes, except the backslash, written `\\`; each byte of an
//! invalid UTF-8 sequence is written as the four characters `\xNN` (lower-case
//! hex). A backslash in the decoded text thus always starts `\\` or `\xNN`,
//! and the name made of the text `\xff` (`\\xff`) differs from the one made
//! of the byte 0xFF (`\xff`). Names without a backslash that are valid UTF-8
//! (nearly all) read exactly as in schema v1.

use std::{borrow::Cow, fmt::Write as _};

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

/// For a terminal: printable UTF-8 passes; C0/C1 controls, DEL, format
/// characters (Unicode Cf: zero-width, bidirectional overrides...), line and
/// paragraph separators, invalid UTF-8 and the backslash itself are written
/// as `\xNN` / `\u{NN}` / `\\`.
pub fn for_terminal(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.chars().any(needs_escape)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if (c as u32) < 0x80 && needs_escape(c) {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else if needs_escape(c) {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// Characters that separate owners, pids, threads and units in our tables.
const TABLE_PUNCTUATION: &[char] = &[' ', ',', '[', ']', '(', ')', '/', '"', '\''];

/// A name for a table cell: [`for_terminal`], then in double quotes (with
/// `"` written `\"`) when it could be read as table structure: empty, `-`
/// or `?` (our placeholders), or containing a space or one of `,[]()/"'`.
/// So `x[1], sshd` prints as `"x[1], sshd"[412]` and cannot pass for a
/// second owner.
pub fn for_table(bytes: &[u8]) -> Cow<'_, str> {
    let s = for_terminal(bytes);
    let risky = s.is_empty() || s == "-" || s == "?" || s.contains(TABLE_PUNCTUATION);
    if !risky {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Cow::Owned(out)
}

/// For JSON strings, in the name encoding described above (the JSON encoder
/// then escapes control characters as `\u00XX`).
pub fn for_json(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.contains('\\')
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// The bytes a [`for_json`] string stands for. Text that the encoder never
/// writes (a lone backslash, `\x` without two hex digits) is kept as it is.
pub fn from_json(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'x')
                && let Some(hex) = s.get(i + 2..i + 4)
                && let Ok(v) = u8::from_str_radix(hex, 16)
                && hex.bytes().all(|h| h.is_ascii_hexdigit())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_borrowed() {
        assert!(matches!(for_terminal(b"nginx"), Cow::Borrowed("nginx")));
        assert!(matches!(for_json(b"nginx"), Cow::Borrowed("nginx")));
        assert!(matches!(for_table(b"nginx"), Cow::Borrowed("nginx")));
    }

    #[test]
    fn terminal_escapes_are_neutralised() {
        assert_eq!(for_terminal(b"\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(for_terminal(b"\x1b]0;title\x07"), "\\x1b]0;title\\x07");
        assert_eq!(for_terminal(b"a\nb\tc\x7f"), "a\\x0ab\\x09c\\x7f");
        assert_eq!(for_terminal("a\u{9b}b".as_bytes()), "a\\u{9b}b");
        assert_eq!(for_terminal("x\u{202e}y".as_bytes()), "x\\u{202e}y");
    }

    #[test]
    fn every_format_character_is_escaped() {
        // Zero-width space is Zs-like but Cf; so are ZWJ, ZWNJ, word joiner,
        // the BOM, soft hyphen, the Arabic number sign, interlinear
        // annotation, tag characters and the Mongolian vowel separator.
        for (c, text) in [
            ('\u{200b}', "\\u{200b}"),
            ('\u{200c}', "\\u{200c}"),
            ('\u{200d}', "\\u{200d}"),
            ('\u{2060}', "\\u{2060}"),
            ('\u{feff}', "\\u{feff}"),
            ('\u{ad}', "\\u{ad}"),
            ('\u{600}', "\\u{600}"),
            ('\u{fff9}', "\\u{fff9}"),
            ('\u{e0041}', "\\u{e0041}"),
            ('\u{180e}', "\\u{180e}"),
            ('\u{2066}', "\\u{2066}"),
            ('\u{2028}', "\\u{2028}"),
        ] {
            let name = format!("ss{c}hd");
            assert_eq!(for_terminal(name.as_bytes()), format!("ss{text}hd"));
        }
        // Every Cf character of the Basic Multilingual Plane and beyond.
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            if c.general_category() == GeneralCategory::Format {
                let mut b = [0; 4];
                let out = for_terminal(c.encode_utf8(&mut b).as_bytes());
                assert!(!out.contains(c), "{c:?} passed");
            }
        }
    }

    #[test]
    fn invalid_utf8_and_backslash_are_escaped() {
        assert_eq!(for_terminal(b"ab\xffcd"), "ab\\xffcd");
        assert_eq!(for_terminal(b"a\\b"), "a\\\\b");
        assert_eq!(for_json(b"ab\xff\xfecd"), "ab\\xff\\xfecd");
    }

    #[test]
    fn json_tells_the_text_backslash_xff_from_the_byte() {
        let text = for_json(b"a\\xff");
        let byte = for_json(b"a\xff");
        assert_eq!(text, "a\\\\xff");
        assert_eq!(byte, "a\\xff");
        assert_ne!(text, byte);
        for name in [
            &b"a\\xff"[..],
            b"a\xff",
            b"\\",
            b"\\\\x41",
            b"x\\",
            "caf\u{e9}\u{200b}".as_bytes(),
            b"\xc3",
            b"",
        ] {
            assert_eq!(from_json(&for_json(name)), name, "{name:?}");
        }
    }

    #[test]
    fn table_names_that_look_like_structure_are_quoted() {
        assert_eq!(for_table(b"x[1], sshd"), "\"x[1], sshd\"");
        assert_eq!(for_table(b"a\"b c"), "\"a\\\"b c\"");
        assert_eq!(for_table(b"-"), "\"-\"");
        assert_eq!(for_table(b"?"), "\"?\"");
        assert_eq!(for_table(b""), "\"\"");
        assert_eq!(for_table(b"kworker/0:1"), "\"kworker/0:1\"");
        assert_eq!(for_table(b"e\x1b[1m"), "\"e\\x1b[1m\"");
        assert_eq!(for_table(b"nginx.service"), "nginx.service");
    }

    #[test]
    fn unicode_names_pass() {
        assert_eq!(for_terminal("café".as_bytes()), "café");
    }
}
