//! The human table of `sockmon ls` and `lookup`, like `ss -tunap`:
//!
//! ```text
//! PROTO STATE      LOCAL                  REMOTE                 INODE     NETNS       OWNERS
//! tcp   listen     0.0.0.0:8080           0.0.0.0:*              123456    4026531840  nginx[412] nginx.service
//! ```
//!
//! Owners are `name[pid]`; `name[pid]/tid` when another thread acted;
//! `,inherited` marks an owner known only from a fork; `+N inherited` ends
//! the list when more owners than the daemon lists were counted. Names are untrusted:
//! decoded from the JSON name encoding, escaped for the terminal, and quoted
//! when they contain table punctuation ([`escape::for_table`]), so a process
//! named `x[1], sshd` cannot pass for a second owner.

use std::io::Write as _;

use super::escape;
use crate::engine::view::{OwnerView, SocketView};

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
    let _ = writeln!(
        out,
        "{:<5} {:<10} {:<22} {:<22} {:<9} {:<11} {:<10} OWNERS",
        "PROTO", "STATE", "LOCAL", "REMOTE", "INODE", "NETNS", "CLASS"
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
            "{:<5} {:<10} {:<22} {:<22} {:<9} {:<11} {:<10} {}",
            r.proto,
            r.state,
            endpoint(&r.src_ip, Some(r.src_port)),
            remote,
            r.inode,
            r.netns,
            r.port_class.as_deref().unwrap_or("-"),
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
