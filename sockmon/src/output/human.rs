//! The aligned one-line-per-event view for people.
//!
//! `12:04:05.123  connect  tcp  10.0.0.5:40312        → 93.184.216.34:443      pid 1234 (curl) uid 1000`
//!
//! Untrusted names pass through [`super::escape::for_table`]: escaped, and
//! quoted when they hold punctuation (a name `x) uid 0 (y` cannot forge
//! the fields after it).

use std::io::Write as _;

use super::escape;
use crate::event::{Event, EventKind, errno, kind_name};

/// Width of an IPv4 `ip:port` at its longest.
const ADDR_WIDTH: usize = 21;

/// Appends `e` as one line (with newline) to `out`.
pub fn write_event(out: &mut Vec<u8>, e: &Event) {
    let local = e.src.to_string();
    let remote = match e.kind {
        EventKind::Bind | EventKind::Listen => String::new(),
        _ => format!("→ {}", e.dst),
    };
    let _ = write!(
        out,
        "{}  {:<7}  {}  {:<w$} {:<rw$}  pid {}",
        e.time.local_hms_millis(),
        label(e.kind),
        e.proto.name(),
        local,
        remote,
        e.pid,
        w = ADDR_WIDTH,
        rw = ADDR_WIDTH + 2,
    );
    if e.tid != e.pid {
        let _ = write!(out, " tid {}", e.tid);
    }
    let _ = write!(
        out,
        " ({}) uid {}",
        escape::for_table(e.comm.as_bytes()),
        e.uid
    );
    match (e.error, e.duration_us()) {
        (None, Some(us)) => {
            let _ = write!(out, "  established after {}", millis(us));
        }
        (Some(err), Some(us)) => {
            let _ = write!(out, "  {} after {}", errno::name(err), millis(us));
        }
        (Some(err), None) => {
            let _ = write!(out, "  {}", errno::name(err));
        }
        (None, None) => {}
    }
    if let Some(life) = e.life.as_deref() {
        write_life(out, life);
    }
    out.push(b'\n');
}

/// The kind as the human view names it (seven columns at most).
fn label(kind: EventKind) -> &'static str {
    match kind {
        EventKind::ConnectResult => "outcome",
        k => kind_name(k),
    }
}

fn millis(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// Flows (issue 13): a close's (or flow record's) duration and bytes,
/// `  1.25s ↑12.3KB ↓4.0KB retrans 2` (`≥` before a lower-bound duration).
fn write_life(out: &mut Vec<u8>, l: &crate::event::flow::Life) {
    if let Some(ns) = l.duration_ns {
        let bound = if l.duration_is_lower_bound { "≥" } else { "" };
        let _ = write!(out, "  {bound}{}", human_duration(ns));
    }
    if let Some(t) = l.tcp {
        let _ = write!(
            out,
            "  ↑{} ↓{}",
            super::units::bytes(t.bytes_sent),
            super::units::bytes(t.bytes_received)
        );
        if t.total_retrans > 0 {
            let _ = write!(out, " retrans {}", t.total_retrans);
        }
    }
}

fn human_duration(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms < 1.0 {
        format!("{:.0}µs", ns as f64 / 1e3)
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else if ms < 60_000.0 {
        format!("{:.2}s", ms / 1e3)
    } else {
        let s = ns / 1_000_000_000;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::json::tests::sample;

    #[test]
    fn connect_outcome_lines_say_how_long_it_took() {
        let mut e = sample(b"curl");
        e.kind = EventKind::ConnectResult;
        e.aux = 1_234_567;
        let mut out = Vec::new();
        write_event(&mut out, &e);
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains("  outcome  tcp  10.0.0.5:40312"), "{line:?}");
        assert!(
            line.ends_with("uid 1000  ECONNREFUSED after 1.234 ms\n"),
            "{line:?}"
        );
        e.error = None;
        let mut out = Vec::new();
        write_event(&mut out, &e);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.ends_with("uid 1000  established after 1.234 ms\n"),
            "{line:?}"
        );
    }

    #[test]
    fn failed_connect_line() {
        let mut out = Vec::new();
        write_event(&mut out, &sample(b"curl"));
        let line = String::from_utf8(out).unwrap();
        let expected_tail = "connect  tcp  10.0.0.5:40312        → 93.184.216.34:443      pid 1234 tid 1236 (curl) uid 1000  ECONNREFUSED\n";
        assert!(line.ends_with(expected_tail), "{line:?}");
        assert_eq!(line.len() - expected_tail.len(), "12:04:05.123  ".len());
    }

    #[test]
    fn close_line_shows_duration_and_bytes() {
        let mut e = sample(b"curl");
        e.kind = EventKind::Close;
        e.error = None;
        e.life = Some(Box::new(crate::event::flow::Life {
            duration_ns: Some(1_250_000_000),
            duration_is_lower_bound: false,
            final_state: Some(1),
            tcp: Some(crate::event::flow::TcpCounters {
                bytes_sent: 12_345,
                bytes_received: 999,
                total_retrans: 2,
                ..Default::default()
            }),
            drops: Some(0),
            interval_ms: None,
        }));
        let mut out = Vec::new();
        write_event(&mut out, &e);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.ends_with("uid 1000  1.25s  ↑12.3KB ↓999B retrans 2\n"),
            "{line:?}"
        );
        e.life.as_mut().unwrap().duration_is_lower_bound = true;
        e.life.as_mut().unwrap().duration_ns = Some(61_000_000_000);
        let mut out = Vec::new();
        write_event(&mut out, &e);
        assert!(String::from_utf8(out).unwrap().contains("  ≥1m01s  "));
    }

    #[test]
    fn listen_has_no_remote_and_names_are_escaped() {
        let mut e = sample(b"\x1b]0;pwn\x07");
        e.kind = EventKind::Listen;
        e.error = None;
        e.tid = e.pid;
        let mut out = Vec::new();
        write_event(&mut out, &e);
        let line = String::from_utf8(out).unwrap();
        assert!(!line.contains('\x1b') && !line.contains('\x07'), "{line:?}");
        assert!(line.contains("(\"\\x1b]0;pwn\\x07\")"), "{line:?}");
        assert!(!line.contains('→'));
    }

    #[test]
    fn a_name_cannot_forge_the_fields_after_it() {
        let mut e = sample(b"x) uid 0 (y");
        e.error = None;
        let mut out = Vec::new();
        write_event(&mut out, &e);
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with("(\"x) uid 0 (y\") uid 1000\n"), "{line:?}");
    }
}
