//! Reading sockmon's event stream (NDJSON, from `watch --json` or an API
//! subscription) as fast as sockmon writes it: the few fields a part counts
//! are picked out of each line as text, without building a JSON tree, or
//! the reader would fall behind and the count would measure the reader.

/// The value of the first top-level-looking `"key":` in `line`: a string's
/// contents (escapes kept) or a scalar's text.
pub fn raw_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let at = line.find(&pat)? + pat.len();
    let rest = line[at..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        let end = s.find('"')?;
        Some(&s[..end])
    } else {
        let end = rest.find([',', '}', ' ', '\n']).unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_scalars() {
        let l = r#"{"v":1,"event":"lost","cause":"ring_full","count":17}"#;
        assert_eq!(raw_field(l, "event"), Some("lost"));
        assert_eq!(raw_field(l, "count"), Some("17"));
        assert_eq!(raw_field(l, "v"), Some("1"));
        assert_eq!(raw_field(l, "pid"), None);
    }
}
