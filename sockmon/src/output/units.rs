//! Sizes and ages for people, one way in every view: `watch`'s close lines,
//! `ls`'s columns and `top`'s connections.

use std::time::Duration;

/// Bytes in decimal units: `812B`, `48.0KB`, `1.3MB`, `3.4GB`.
pub fn bytes(b: u64) -> String {
    match b {
        0..1000 => format!("{b}B"),
        1000..1_000_000 => format!("{:.1}KB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}MB", b as f64 / 1e6),
        _ => format!("{:.1}GB", b as f64 / 1e9),
    }
}

/// How long something has lived: `45s`, `3m12s`, `2h05m`, `3d04h`; `>`
/// first when it is a lower bound (it was there before we looked).
pub fn age(d: Duration, at_least: bool) -> String {
    let s = d.as_secs();
    let t = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    };
    if at_least { format!(">{t}") } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(
            [0, 999, 1000, 48_000, 1_300_000, 3_400_000_000].map(bytes),
            ["0B", "999B", "1.0KB", "48.0KB", "1.3MB", "3.4GB"]
        );
        let a = |s| age(Duration::from_secs(s), false);
        assert_eq!(
            [a(45), a(192), a(7500), a(273_600)],
            ["45s", "3m12s", "2h05m", "3d04h"]
        );
        assert_eq!(age(Duration::from_secs(5), true), ">5s");
    }
}
