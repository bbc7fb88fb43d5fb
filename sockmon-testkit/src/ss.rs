//! `ss`, run and parsed: the kernel's own view of the sockets, to hold
//! sockmon's table and owners against.
//!
//! One parser for every user. It reads the lines of `ss -tu…H` (both
//! protocols, so the Netid column is there; no `state` filter, so the State
//! column is too; no header), with or without `-p` (the `users:(…)` field,
//! read for its pids) and `-e` (the `ino:` field): `Netid State Recv-Q
//! Send-Q Local Peer …`. A command whose lines have other columns (`ss
//! -Htn state syn-sent …`) is run with [`lines`] and its lines only
//! counted.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// A socket as both `ss` and sockmon name it: (proto, local, remote), the
/// endpoints as [`endpoint`] writes them.
pub type Key = (String, String, String);

/// One line of `ss -tu…H`, as far as anyone compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    /// `tcp` or `udp`.
    pub proto: String,
    /// As `ss` writes it: `ESTAB`, `LISTEN`, `UNCONN`, `TIME-WAIT`, …
    pub state: String,
    /// The local endpoint as `ss` writes it (`127.0.0.1:40312`, `[::]:*`, `*:*`).
    pub local: String,
    /// The peer endpoint, the same way.
    pub peer: String,
    /// The socket's inode (`ino:`, with `-e`); 0 without `-e` and for
    /// sockets no process holds (TIME-WAIT and other orphans).
    pub inode: u64,
    /// Every pid of `users:(…)` (with `-p`), sorted, each once.
    pub pids: Vec<u32>,
}

impl Socket {
    /// The local port; `None` for `*`.
    pub fn local_port(&self) -> Option<u16> {
        port(&self.local)
    }

    /// The peer's port; `None` for `*` (no peer).
    pub fn peer_port(&self) -> Option<u16> {
        port(&self.peer)
    }

    /// The socket as sockmon names it (see [`Key`]).
    pub fn key(&self) -> Key {
        (
            self.proto.clone(),
            endpoint(&self.local),
            endpoint(&self.peer),
        )
    }

    /// One line for a report: `tcp 127.0.0.1:40312 → 127.0.0.1:8080 ESTAB ino 2218331 pids [1234]`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} → {} {} ino {} pids {:?}",
            self.proto, self.local, self.peer, self.state, self.inode, self.pids
        )
    }
}

fn port(endpoint: &str) -> Option<u16> {
    endpoint
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
}

/// `ss` writes `0.0.0.0:*`, `[::]:*`, `*:*` and `%` before an interface;
/// sockmon writes port 0 and `_`.
pub fn endpoint(ss: &str) -> String {
    let e = ss
        .strip_suffix(":*")
        .map_or_else(|| ss.to_string(), |h| format!("{h}:0"));
    e.replace('%', "_")
}

/// `tcp ESTAB 0 0 127.0.0.1:40312 127.0.0.1:8080 users:(("curl",pid=1234,fd=3)) ino:2218331 sk:…`;
/// `None` for a line with fewer than six columns.
pub fn parse_line(line: &str) -> Option<Socket> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() < 6 {
        return None;
    }
    let inode = t
        .iter()
        .find_map(|x| x.strip_prefix("ino:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut pids: Vec<u32> = line
        .match_indices("pid=")
        .filter_map(|(i, m)| {
            let rest = &line[i + m.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Some(Socket {
        proto: t[0].to_string(),
        state: t[1].to_string(),
        local: t[4].to_string(),
        peer: t[5].to_string(),
        inode,
        pids,
    })
}

/// Every socket line of `text` (lines that are none are left out).
pub fn parse(text: &str) -> Vec<Socket> {
    text.lines().filter_map(parse_line).collect()
}

/// Every TCP and UDP socket of this network namespace, with its processes
/// and inode: `ss -tunapeH`, parsed.
pub fn sockets() -> anyhow::Result<Vec<Socket>> {
    Ok(parse(&run(&["-tunapeH"])?))
}

/// The output lines of `ss ARGS` that are not empty (for a command whose
/// lines are only counted).
pub fn lines(args: &[&str]) -> anyhow::Result<Vec<String>> {
    Ok(run(args)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

fn run(args: &[&str]) -> anyhow::Result<String> {
    let shown = args.join(" ");
    let out = Command::new("ss")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ss {shown}"))?;
    if !out.status.success() {
        bail!("ss {shown} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The owner pids of each socket, by its [`Key`] (a socket no process holds
/// has an empty set; of two lines with one key, the later counts).
pub fn owners(sockets: &[Socket]) -> BTreeMap<Key, BTreeSet<u32>> {
    sockets
        .iter()
        .map(|s| (s.key(), s.pids.iter().copied().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed() {
        let l = r#"tcp   ESTAB  0  0  127.0.0.1:40312  127.0.0.1:8080 users:(("my prog",pid=1234,fd=3),("x",pid=99,fd=4)) timer:(keepalive,1min,0) ino:2218331 sk:1 cgroup:/ <->"#;
        let s = parse_line(l).unwrap();
        assert_eq!((s.proto.as_str(), s.state.as_str()), ("tcp", "ESTAB"));
        assert_eq!((s.local_port(), s.peer_port()), (Some(40312), Some(8080)));
        assert_eq!((s.inode, s.pids.clone()), (2218331, vec![99, 1234]));
        assert_eq!(
            s.describe(),
            "tcp 127.0.0.1:40312 → 127.0.0.1:8080 ESTAB ino 2218331 pids [99, 1234]"
        );
        let u = parse_line(
            "udp UNCONN 0 0 [::ffff:127.0.0.1]:53 *:* users:((\"d\",pid=7,fd=3)) ino:5 sk:2",
        )
        .unwrap();
        assert_eq!(
            (u.local_port(), u.peer_port(), u.inode),
            (Some(53), None, 5)
        );
        let tw = parse_line(
            "tcp TIME-WAIT 0 0 127.0.0.1:35543 127.0.0.1:38080 timer:(timewait,43sec,0) ino:0 sk:1a3789",
        )
        .unwrap();
        assert_eq!((tw.inode, tw.pids.len()), (0, 0));
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn endpoints_and_keys_are_sockmon_s() {
        assert_eq!(endpoint("0.0.0.0:*"), "0.0.0.0:0");
        assert_eq!(endpoint("[::]:*"), "[::]:0");
        assert_eq!(endpoint("*:*"), "*:0");
        assert_eq!(endpoint("[fe80::1%eth0]:546"), "[fe80::1_eth0]:546");
        assert_eq!(endpoint("127.0.0.1:80"), "127.0.0.1:80");
        let text = "tcp LISTEN 0 64 127.0.0.1:8080 0.0.0.0:* users:((\"p\",pid=5,fd=3),(\"p\",pid=6,fd=3))\n\
                    udp UNCONN 0 0 127.0.0.1:53 0.0.0.0:*\n\
                    short line\n";
        let all = parse(text);
        assert_eq!(all.len(), 2);
        let o = owners(&all);
        let listener = ("tcp".into(), "127.0.0.1:8080".into(), "0.0.0.0:0".into());
        assert_eq!(o[&listener], BTreeSet::from([5, 6]));
        let receiver = ("udp".into(), "127.0.0.1:53".into(), "0.0.0.0:0".into());
        assert!(o[&receiver].is_empty());
    }

    #[test]
    fn this_namespace_can_be_listed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let all = sockets().unwrap();
        let me = all
            .iter()
            .find(|s| s.proto == "tcp" && s.state == "LISTEN" && s.local_port() == Some(port))
            .expect("our listener");
        assert_eq!(me.pids, vec![std::process::id()]);
        assert_ne!(me.inode, 0);
        let n = lines(&["-Htln", "sport", "=", &format!(":{port}")]).unwrap();
        assert_eq!(n.len(), 1, "{n:?}");
    }
}
