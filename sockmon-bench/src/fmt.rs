//! How numbers read in BENCHMARKS.md, the same in every part's tables:
//! medians with [min–max], integers grouped by thousands, bytes in MiB,
//! "–" for what was not measured, and free text made safe for a cell.

use crate::stats::Summary;

/// `median [min–max]` with `digits` decimals; "–" without a summary.
pub fn fmt_sum(s: Option<Summary>, digits: usize) -> String {
    s.map_or("–".into(), |s| {
        format!(
            "{} [{}–{}]",
            fmt_f(s.median, digits),
            fmt_f(s.min, digits),
            fmt_f(s.max, digits)
        )
    })
}

/// Fixed decimals; integers grouped by thousands.
pub fn fmt_f(x: f64, digits: usize) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if digits == 0 {
        group(x)
    } else {
        format!("{x:.digits$}")
    }
}

/// A rounded number with thousands separators: 1234567 → "1,234,567".
pub fn group(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `s` on one line of at most 300 characters, safe in a table cell.
pub fn one_line(s: &str) -> String {
    let flat = s.replace(['\n', '`', '|'], " ");
    if flat.chars().count() > 300 {
        format!("{}…", flat.chars().take(300).collect::<String>())
    } else {
        flat
    }
}

/// A summary of byte counts in MiB, `median [min–max]`.
pub fn fmt_bytes(s: Option<Summary>) -> String {
    s.map_or("–".into(), |r| {
        format!("{} [{}–{}]", bytes(r.median), bytes(r.min), bytes(r.max))
    })
}

/// Bytes in MiB, one decimal.
pub fn bytes(b: f64) -> String {
    format!("{:.1} MiB", b / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(1234567.4), "1,234,567");
        assert_eq!(group(999.0), "999");
        assert_eq!(group(-1000.0), "-1,000");
        assert_eq!(fmt_f(0.97312, 3), "0.973");
        assert_eq!(fmt_f(f64::NAN, 1), "–");
    }

    #[test]
    fn cells_stay_on_one_line() {
        assert_eq!(one_line("a|b\n`c`"), "a b  c ");
        assert_eq!(one_line(&"x".repeat(301)).chars().count(), 301);
        assert_eq!(bytes(1024.0 * 1024.0 * 1.5), "1.5 MiB");
    }
}
