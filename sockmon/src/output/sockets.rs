//! The human table of `sockmon ls` and `lookup`, like `ss -tunap`:
//!
//! ```text
//! PROTO STATE      LOCAL                  REMOTE                 INODE     NETNS       CLASS      AGE      BYTES         OWNERS
//! tcp   listen     0.0.0.0:8080           0.0.0.0:*              123456    4026531840  registered -        -             nginx[412] nginx.service
//! tcp   connected  10.0.0.5:40312         10.0.0.9:443           123470    4026531840  dynamic    3m12s    1.3MB/48.0KB  curl[977]
//! ```
//!
//! AGE is how long ago the connection began (`>` when only the start-up
//! snapshot saw it: it is older); BYTES is sent/received at the latest flow
//! sample (`-` while flow records are off).
//!
//! Owners are `name[pid]`; `name[pid]/tid` when another thread acted;
//! `,inherited` marks an owner known only from a fork; `+N inherited` ends
//! the list when more owners than the daemon lists were counted. Names are untrusted:
//! decoded from the JSON name encoding, escaped for the terminal, and quoted
//! when they contain table punctuation ([`escape::for_table`]), so a process
//! named `x[1], sshd` cannot pass for a second owner.

use std::io::Write as _;

use super::escape;
use crate::view::{OwnerView, SocketView};

/// What `ls --sort` orders by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LsSort {
    /// Bytes moved, most first (needs flow records).
    Bytes,
    /// Age, the oldest connection first.
    Age,
}

/// Orders `rows` by `key`, most first; rows without the figure keep their
/// order, after the others.
pub fn sort(rows: &mut [SocketView], key: LsSort) {
    match key {
        LsSort::Bytes => rows.sort_by_key(|r| {
            std::cmp::Reverse(
                r.bytes_sent
                    .zip(r.bytes_received)
                    .map(|(s, r)| s.saturating_add(r)),
            )
        }),
        // RFC 3339 in UTC with fixed digits orders as time does; oldest
        // first, those without a start last.
        LsSort::Age => {
            rows.sort_by(|a, b| (a.since.is_none(), &a.since).cmp(&(b.since.is_none(), &b.since)))
        }
    }
}

/// How long ago `since` (RFC 3339) was.
fn age(since: Option<&str>, lower_bound: bool, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(t) = since.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()) else {
        return "-".into();
    };
    let d = (now - t.with_timezone(&chrono::Utc))
        .to_std()
        .unwrap_or_default();
    super::units::age(d, lower_bound)
}

fn moved(r: &SocketView) -> String {
    match (r.bytes_sent, r.bytes_received) {
        (Some(s), Some(rcv)) => format!("{}/{}", super::units::bytes(s), super::units::bytes(rcv)),
        _ => "-".into(),
    }
}

/// What `ls` and `lookup` print: the human table, or one JSON object per
/// socket and line.
pub fn render(rows: &[SocketView], json: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if json {
        for r in rows {
            if serde_json::to_writer(&mut out, r).is_ok() {
                out.push(b'\n');
            }
        }
    } else {
        write_table(&mut out, rows);
    }
    out
}

/// Appends the header and one line per socket.
pub fn write_table(out: &mut Vec<u8>, rows: &[SocketView]) {
    write_table_at(out, rows, chrono::Utc::now());
}

fn write_table_at(out: &mut Vec<u8>, rows: &[SocketView], now: chrono::DateTime<chrono::Utc>) {
    let _ = writeln!(
        out,
        "{:<5} {:<10} {:<22} {:<22} {:<9} {:<11} {:<10} {:<8} {:<13} OWNERS",
        "PROTO", "STATE", "LOCAL", "REMOTE", "INODE", "NETNS", "CLASS", "AGE", "BYTES"
    );
    for r in rows {
        let remote = if r.dst_port == 0 && is_unspecified(&r.dst_ip) {
            endpoint(&r.dst_ip, None)
        } else {
            endpoint(&r.dst_ip, Some(r.dst_port))
        };
        let mut owners: Vec<String> = r.owners.iter().map(owner).collect();
        if r.inherited_more > 0 {
            owners.push(format!("+{} inherited", r.inherited_more));
        }
        let owners = if owners.is_empty() {
            "-".to_string()
        } else {
            owners.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<5} {:<10} {:<22} {:<22} {:<9} {:<11} {:<10} {:<8} {:<13} {}",
            r.proto,
            r.state,
            endpoint(&r.src_ip, Some(r.src_port)),
            remote,
            r.inode,
            r.netns,
            r.port_class.as_deref().unwrap_or("-"),
            age(r.since.as_deref(), r.since_is_lower_bound, now),
            moved(r),
            owners
        );
    }
}

fn is_unspecified(ip: &str) -> bool {
    ip == "0.0.0.0" || ip == "::"
}

fn endpoint(ip: &str, port: Option<u16>) -> String {
    let port = port.map_or("*".to_string(), |p| p.to_string());
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn owner(o: &OwnerView) -> String {
    let name = o.comm.as_deref().map_or_else(
        || "?".to_string(),
        |c| escape::for_table(&escape::from_json(c)).into_owned(),
    );
    let mut s = format!("{name}[{}", o.pid);
    if o.source == "inherited" {
        s.push_str(",inherited");
    }
    s.push(']');
    if o.tid != o.pid {
        s.push_str(&format!("/{}", o.tid));
    }
    // Where it runs: its container (short id, for people), else its unit.
    let place = o
        .container
        .as_ref()
        .map(|c| format!("{}:{}", c.runtime, c.short_id))
        .or_else(|| o.unit.clone());
    if let Some(place) = place {
        s.push(' ');
        s.push_str(&escape::for_table(place.as_bytes()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(owners: Vec<OwnerView>) -> SocketView {
        SocketView {
            proto: "tcp".into(),
            family: "ipv4".into(),
            src_ip: "0.0.0.0".into(),
            src_port: 8080,
            dst_ip: "0.0.0.0".into(),
            dst_port: 0,
            state: "listen".into(),
            inode: 123456,
            netns: 4026531840,
            owners,
            inherited_more: 0,
            port_class: Some("registered".into()),
            port_privileged: Some(false),
            port_ephemeral: Some(false),
            addr_scope: Some("wildcard".into()),
            dst_port_class: None,
            since: None,
            since_is_lower_bound: false,
            bytes_sent: None,
            bytes_received: None,
        }
    }

    fn own(pid: u32, tid: u32, comm: &str, source: &str, unit: Option<&str>) -> OwnerView {
        OwnerView {
            pid,
            tid,
            comm: Some(comm.into()),
            thread_comm: Some(comm.into()),
            uid: Some(0),
            exe: None,
            start_time: None,
            source: source.into(),
            unit: unit.map(Into::into),
            container: None,
            args: None,
            args_truncated: false,
            ppid: None,
        }
    }

    #[test]
    fn one_line_per_socket_with_owners() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &[row(vec![
                own(412, 412, "nginx", "snapshot", Some("nginx.service")),
                own(413, 415, "nginx", "inherited", None),
            ])],
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("PROTO STATE"));
        assert!(
            lines[1].starts_with("tcp   listen     0.0.0.0:8080           0.0.0.0:*"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with("nginx[412] nginx.service, nginx[413,inherited]/415"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn age_and_bytes_columns_and_both_sorts() {
        let now: chrono::DateTime<chrono::Utc> = "2026-12-02T06:00:00Z".parse().unwrap();
        let mut a = row(vec![own(1, 1, "a", "event", None)]);
        a.inode = 1;
        a.since = Some("2026-12-02T05:56:48.000000000Z".into());
        a.bytes_sent = Some(1_300_000);
        a.bytes_received = Some(49_152);
        let mut b = row(vec![own(2, 2, "b", "snapshot", None)]);
        b.inode = 2;
        b.since = Some("2026-12-02T03:55:00.000000000Z".into());
        b.since_is_lower_bound = true;
        b.bytes_sent = Some(10);
        b.bytes_received = Some(0);
        let mut c = row(vec![own(3, 3, "c", "event", None)]);
        c.inode = 3;
        let mut out = Vec::new();
        write_table_at(&mut out, &[a.clone(), b.clone(), c.clone()], now);
        let text = String::from_utf8(out).unwrap();
        let cells = |i: usize| -> Vec<String> {
            let l = text.lines().nth(i).unwrap();
            l.split_whitespace()
                .skip(7)
                .take(2)
                .map(String::from)
                .collect()
        };
        assert!(
            text.lines().next().unwrap().contains("AGE      BYTES"),
            "{text}"
        );
        assert_eq!(cells(1), ["3m12s", "1.3MB/49.2KB"]);
        assert_eq!(cells(2), [">2h05m", "10B/0B"]);
        assert_eq!(cells(3), ["-", "-"]);
        let inodes = |mut v: Vec<SocketView>, k| {
            sort(&mut v, k);
            v.iter().map(|r| r.inode).collect::<Vec<_>>()
        };
        let all = vec![c.clone(), a.clone(), b.clone()];
        assert_eq!(inodes(all.clone(), LsSort::Bytes), [1, 2, 3]);
        assert_eq!(inodes(all, LsSort::Age), [2, 1, 3]);
    }

    #[test]
    fn hostile_names_are_escaped_and_ipv6_bracketed() {
        let mut r = row(vec![own(1, 1, "\u{1b}[2Jx", "event", None)]);
        r.src_ip = "::1".into();
        let mut out = Vec::new();
        write_table(&mut out, &[r]);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\u{1b}'));
        assert!(text.contains("\"\\x1b[2Jx\"[1]"), "{text}");
        assert!(text.contains("[::1]:8080"), "{text}");
    }

    #[test]
    fn a_name_with_table_punctuation_cannot_pose_as_another_owner() {
        let mut out = Vec::new();
        let forged = escape::for_json(b"x[1], sshd").into_owned();
        write_table(
            &mut out,
            &[row(vec![
                own(7, 7, &forged, "event", Some("evil unit.service")),
                own(8, 8, &escape::for_json(b"a\\xff\xff"), "event", None),
            ])],
        );
        let text = String::from_utf8(out).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert!(
            line.ends_with(r#""x[1], sshd"[7] "evil unit.service", a\\xff\xff[8]"#),
            "{line}"
        );
    }
}
