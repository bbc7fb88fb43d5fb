//! Reading TOML files so that every error names a line and a column: the
//! daemon's configuration and the listener policy both say
//! `file:line:column: reason`, with the same counting (from 1, columns in
//! bytes) whichever file it is. A leaf: both `daemon::config` and `policy`
//! import it, and it imports nothing of ours.

use serde::de::DeserializeOwned;

/// Where in the text something is wrong, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

/// Parses `text`, or says where it stops making sense.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, At> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        At {
            line,
            column,
            reason: e.message().trim().to_string(),
        }
    })
}

/// 1-based line and column of byte `offset`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// Where the key of `dotted` (`table.key`) is set, best effort (1:1 if not found).
pub fn locate_key(text: &str, dotted: &str) -> (usize, usize) {
    let (table, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut in_table = table.is_empty();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            in_table = name.trim() == table;
            continue;
        }
        if in_table && t.split('=').next().map(str::trim) == Some(key) {
            return (i + 1, line.len() - line.trim_start().len() + 1);
        }
    }
    (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("abc\ndef", 5), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("abc", 99), (1, 4));
    }

    #[test]
    fn a_bad_value_is_placed_where_it_is() {
        #[derive(serde::Deserialize, Debug)]
        #[expect(dead_code, reason = "only the parse error is checked")]
        struct C {
            a: u32,
        }
        let e = parse::<C>("# x\na = \"no\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 5));
        assert!(e.reason.contains("expected u32"), "{}", e.reason);
    }

    #[test]
    fn keys_are_found_in_their_table() {
        let text = "a = 1\n[t]\n  a = 2\n";
        assert_eq!(locate_key(text, "a"), (1, 1));
        assert_eq!(locate_key(text, "t.a"), (3, 3));
        assert_eq!(locate_key(text, "t.b"), (1, 1));
    }
}
