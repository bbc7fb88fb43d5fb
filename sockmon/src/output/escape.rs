//! Making attacker-controlled bytes (process names, paths) safe to print.
//!
//! Any user can rename a process (`prctl(PR_SET_NAME)`) or name an executable
//! with control characters, terminal escape sequences or invalid UTF-8.
//! The human view must never pass such a byte to a terminal, and JSON must
//! stay one valid object per line.

use std::{borrow::Cow, fmt::Write as _};

/// For a terminal: printable UTF-8 passes; C0/C1 controls, DEL, invalid
/// UTF-8 and the backslash itself are written as `\xNN` / `\u{NN}` / `\\`.
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
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// For JSON strings: valid UTF-8 passes unchanged (the JSON encoder escapes
/// control characters as `\u00XX`); each byte of an invalid sequence becomes
/// the text `\xNN`, so nothing is silently replaced.
pub fn for_json(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_borrowed() {
        assert!(matches!(for_terminal(b"nginx"), Cow::Borrowed("nginx")));
        assert!(matches!(for_json(b"nginx"), Cow::Borrowed("nginx")));
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
    fn invalid_utf8_and_backslash_are_escaped() {
        assert_eq!(for_terminal(b"ab\xffcd"), "ab\\xffcd");
        assert_eq!(for_terminal(b"a\\b"), "a\\\\b");
        assert_eq!(for_json(b"ab\xff\xfecd"), "ab\\xff\\xfecd");
    }

    #[test]
    fn unicode_names_pass() {
        assert_eq!(for_terminal("café".as_bytes()), "café");
    }
}
