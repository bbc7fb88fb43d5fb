//! `sockmon audit --hidden`: the kernel's views of the listening sockets,
//! compared with each other per network namespace.
//!
//! Three views, each read independently:
//! - `sock_diag`: the netlink socket diagnostics (what `ss` shows);
//! - `proc_net`: `/proc/net/{tcp,tcp6,udp,udp6}` (what `netstat` shows);
//! - `fd`: every process's descriptor table: each socket descriptor is
//!   duplicated with `pidfd_getfd(2)` and asked itself (`SO_ACCEPTCONN`,
//!   `getsockname`, `getpeername`, and `SIOCGSKNS` for its namespace).
//!
//! A rootkit that filters `/proc/net` or the netlink dump hides a listener
//! from one view but not from the others. Sockets that no process holds
//! (kernel-owned: NFS, in-kernel servers) are left out of the comparison
//! with the descriptor tables. Sockets come and go while the views are
//! read, so a difference counts only if a second reading shows it again.
//! (A BPF socket iterator would be a fourth view; not done.)

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    time::Duration,
};

use serde::Serialize;

use super::audit::is_listening_row;
use crate::{event::Proto, snapshot::diag::DiagSocket};

/// What one view says of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seen {
    pub proto: Proto,
    pub ip: IpAddr,
    pub port: u16,
}

type View = BTreeMap<u64, Seen>;

/// The views of one namespace.
#[derive(Debug, Default)]
struct Views {
    diag: View,
    proc_net: View,
    fd: View,
    /// inode → pids holding it.
    holders: BTreeMap<u64, BTreeSet<u32>>,
}

/// A listener one view shows and another hides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    pub inode: u64,
    pub proto: &'static str,
    pub address: String,
    pub port: u16,
    pub shown_by: Vec<&'static str>,
    pub hidden_from: Vec<&'static str>,
    pub holders: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NsReport {
    pub netns: u32,
    pub sock_diag: usize,
    pub proc_net: usize,
    pub fd: usize,
    /// Listeners in the socket tables that no process holds (left out).
    pub unheld: usize,
    pub discrepancies: Vec<Discrepancy>,
    /// Why the namespace could not be read, if it could not.
    pub skipped: Option<String>,
}

/// Parses one `/proc/net/{tcp,udp}[6]` file's listeners.
pub fn parse_proc_net(text: &str, proto: Proto, v6: bool, out: &mut View) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(local), Some(remote)) = (endpoint(f[1], v6), endpoint(f[2], v6)) else {
            continue;
        };
        let Ok(state) = u8::from_str_radix(f[3], 16) else {
            continue;
        };
        let Ok(inode) = f[9].parse::<u64>() else {
            continue;
        };
        let listening = match proto {
            Proto::Tcp => state == 10,
            Proto::Udp => state == 7 && remote.1 == 0 && local.1 != 0,
        };
        if listening && inode != 0 {
            out.insert(
                inode,
                Seen {
                    proto,
                    ip: crate::event::unmap(local.0),
                    port: local.1,
                },
            );
        }
    }
}

/// `0100007F:1F90`: the address as the kernel's words in host order, hex.
fn endpoint(s: &str, v6: bool) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let words: Vec<u32> = (0..a.len() / 8)
        .map(|i| u32::from_str_radix(&a[i * 8..i * 8 + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match (v6, words.as_slice()) {
        (false, [w]) => IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())),
        (true, [a, b, c, d]) => {
            let mut o = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// The socket tables' views, read in the calling thread's namespace.
fn tables_here(netns: u32) -> Result<(View, View), String> {
    let mut rows = Vec::new();
    DiagSocket::open()
        .and_then(|mut d| d.dump_all(netns, &mut rows))
        .map_err(|e| e.to_string())?;
    let diag = rows
        .iter()
        .filter(|r| is_listening_row(r))
        .map(|r| {
            (
                r.inode,
                Seen {
                    proto: r.proto,
                    ip: r.src.ip(),
                    port: r.src.port(),
                },
            )
        })
        .collect();
    let mut proc_net = View::new();
    for (file, proto, v6) in [
        ("tcp", Proto::Tcp, false),
        ("tcp6", Proto::Tcp, true),
        ("udp", Proto::Udp, false),
        ("udp6", Proto::Udp, true),
    ] {
        // thread-self: /proc/self/net would show the namespace of the
        // process's main thread, not of this thread that entered another.
        if let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
            parse_proc_net(&text, proto, v6, &mut proc_net);
        }
    }
    Ok((diag, proc_net))
}

/// Duplicates descriptor `fd` of the process behind `pidfd`.
fn getfd(pidfd: i32, fd: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain syscall; on success it returns a new descriptor we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    // SAFETY: r is a fresh descriptor owned by nobody else.
    (r >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(r as i32) })
}

fn sockopt(fd: i32, opt: i32) -> Option<i32> {
    let mut v: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: valid pointers to a local int and its length.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len) };
    (r == 0).then_some(v)
}

/// What a duplicated socket says of itself: its namespace and, if it is a listener, its address.
fn ask_socket(fd: i32) -> Option<(u32, Option<Seen>)> {
    // SIOCGSKNS: a descriptor of the socket's network namespace.
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: the ioctl takes no argument and returns a new descriptor.
    let ns = unsafe { libc::ioctl(fd, SIOCGSKNS as _) };
    if ns < 0 {
        return None;
    }
    // SAFETY: ns is a fresh descriptor we own.
    let ns = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ns) };
    let netns = std::fs::File::from(ns).metadata().ok()?.ino() as u32;
    let domain = sockopt(fd, libc::SO_DOMAIN)?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Some((netns, None));
    }
    let proto = match sockopt(fd, libc::SO_PROTOCOL)? {
        libc::IPPROTO_TCP => Proto::Tcp,
        libc::IPPROTO_UDP => Proto::Udp,
        _ => return Some((netns, None)),
    };
    let mut ss: libc::sockaddr_storage = unsafe_zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: valid pointers to a local sockaddr_storage and its length.
    if unsafe { libc::getsockname(fd, (&raw mut ss).cast(), &mut len) } != 0 {
        return Some((netns, None));
    }
    let (ip, port) = sockaddr(&ss)?;
    let listening = match proto {
        Proto::Tcp => sockopt(fd, libc::SO_ACCEPTCONN) == Some(1),
        Proto::Udp => {
            let mut peer: libc::sockaddr_storage = unsafe_zeroed();
            let mut plen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: as above.
            let r = unsafe { libc::getpeername(fd, (&raw mut peer).cast(), &mut plen) };
            r != 0 && port != 0
        }
    };
    Some((
        netns,
        listening.then_some(Seen {
            proto,
            ip: crate::event::unmap(ip),
            port,
        }),
    ))
}

fn unsafe_zeroed() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn sockaddr(ss: &libc::sockaddr_storage) -> Option<(IpAddr, u16)> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some((
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some((
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                u16::from_be(a.sin6_port),
            ))
        }
        _ => None,
    }
}

/// The descriptor tables' view: netns → listeners, and inode → holders.
fn fd_view() -> (BTreeMap<u32, View>, BTreeMap<u64, BTreeSet<u32>>) {
    let mut views: BTreeMap<u32, View> = BTreeMap::new();
    let mut holders: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    let mut asked: HashSet<u64> = HashSet::new();
    let mut answered: HashSet<u64> = HashSet::new();
    let me = std::process::id();
    for pid in crate::procfs::pids().unwrap_or_default() {
        if pid == me {
            continue;
        }
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        // SAFETY: plain syscall; returns a new descriptor or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if pidfd < 0 {
            continue;
        }
        // SAFETY: pidfd is a fresh descriptor we own.
        let pidfd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd as i32) };
        use std::os::fd::AsRawFd as _;
        for e in dir.flatten() {
            let Ok(link) = std::fs::read_link(e.path()) else {
                continue;
            };
            let Some(inode) = crate::procfs::socket_inode(link.as_os_str().as_encoded_bytes())
            else {
                continue;
            };
            holders.entry(inode).or_default().insert(pid);
            if !asked.insert(inode) {
                continue;
            }
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Some(dup) = getfd(pidfd.as_raw_fd(), fd) else {
                asked.remove(&inode);
                continue;
            };
            match ask_socket(dup.as_raw_fd()) {
                Some((netns, Some(seen))) => {
                    answered.insert(inode);
                    views.entry(netns).or_default().insert(inode, seen);
                }
                Some((_, None)) => {
                    answered.insert(inode);
                }
                None => {
                    asked.remove(&inode);
                }
            }
        }
    }
    // A socket no holder would hand over cannot be compared with the
    // descriptor tables: treated like one no process holds.
    holders.retain(|inode, _| answered.contains(inode));
    (views, holders)
}

/// Every network namespace: ours, those of processes, those of `/run/netns`.
pub fn all_namespaces() -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    if let Ok(m) = std::fs::metadata("/proc/thread-self/ns/net") {
        out.insert(m.ino() as u32);
    }
    for pid in crate::procfs::pids().unwrap_or_default() {
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            out.insert(m.ino() as u32);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            if let Ok(m) = std::fs::metadata(e.path()) {
                out.insert(m.ino() as u32);
            }
        }
    }
    out
}

fn tables_of(netns: u32) -> Result<(View, View), String> {
    let own = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| e.to_string())?
        .ino() as u32;
    if own == netns {
        return tables_here(netns);
    }
    let path = super::ports::find_netns_path(netns)
        .ok_or_else(|| "vanished: no process or mount refers to it any more".to_string())?;
    super::ports::in_netns(&path, netns, || tables_here(netns))
        .unwrap_or_else(|| Err("cannot enter the namespace".into()))
}

fn read_all(scope: &BTreeSet<u32>) -> BTreeMap<u32, Result<Views, String>> {
    let (mut fds, holders) = fd_view();
    scope
        .iter()
        .map(|&ns| {
            let v = tables_of(ns).map(|(diag, proc_net)| Views {
                diag,
                proc_net,
                fd: fds.remove(&ns).unwrap_or_default(),
                holders: holders.clone(),
            });
            (ns, v)
        })
        .collect()
}

fn differences(v: &Views) -> (BTreeMap<u64, Discrepancy>, usize) {
    let mut out = BTreeMap::new();
    let mut unheld = 0;
    let all: BTreeSet<u64> = v
        .diag
        .keys()
        .chain(v.proc_net.keys())
        .chain(v.fd.keys())
        .copied()
        .collect();
    for inode in all {
        let held = v.holders.contains_key(&inode);
        let views: [(&'static str, Option<&Seen>); 3] = [
            ("sock_diag", v.diag.get(&inode)),
            ("proc_net", v.proc_net.get(&inode)),
            ("fd", v.fd.get(&inode)),
        ];
        // Kernel-owned sockets: no descriptor table can show them.
        let compared: Vec<_> = views
            .iter()
            .filter(|(name, _)| held || *name != "fd")
            .collect();
        if !held && !v.fd.contains_key(&inode) {
            unheld += 1;
        }
        let shown_by: Vec<&'static str> = compared
            .iter()
            .filter(|(_, s)| s.is_some())
            .map(|(n, _)| *n)
            .collect();
        let hidden_from: Vec<&'static str> = compared
            .iter()
            .filter(|(_, s)| s.is_none())
            .map(|(n, _)| *n)
            .collect();
        if hidden_from.is_empty() {
            continue;
        }
        let Some(seen) = compared.iter().find_map(|(_, s)| *s) else {
            continue;
        };
        out.insert(
            inode,
            Discrepancy {
                inode,
                proto: seen.proto.name(),
                address: seen.ip.to_string(),
                port: seen.port,
                shown_by,
                hidden_from,
                holders: v
                    .holders
                    .get(&inode)
                    .map(|h| h.iter().copied().collect())
                    .unwrap_or_default(),
            },
        );
    }
    (out, unheld)
}

/// Compares the views in each namespace of `scope` (empty: every namespace).
pub fn compare(scope: &[u32]) -> Vec<NsReport> {
    let scope: BTreeSet<u32> = if scope.is_empty() {
        all_namespaces()
    } else {
        scope.iter().copied().collect()
    };
    let first = read_all(&scope);
    let needs_second = first
        .values()
        .any(|v| v.as_ref().is_ok_and(|v| !differences(v).0.is_empty()));
    let second = needs_second.then(|| {
        std::thread::sleep(Duration::from_millis(200));
        read_all(&scope)
    });
    first
        .into_iter()
        .map(|(netns, v)| match v {
            Err(reason) => NsReport {
                netns,
                skipped: Some(reason),
                ..Default::default()
            },
            Ok(v) => {
                let (mut diffs, unheld) = differences(&v);
                if let Some(Some(Ok(again))) = second.as_ref().map(|s| s.get(&netns)) {
                    let (again, _) = differences(again);
                    diffs.retain(|inode, d| again.get(inode) == Some(d));
                }
                NsReport {
                    netns,
                    sock_diag: v.diag.len(),
                    proc_net: v.proc_net.len(),
                    fd: v.fd.len(),
                    unheld,
                    discrepancies: diffs.into_values().collect(),
                    skipped: None,
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 12346 1\n";
        let mut v = View::new();
        parse_proc_net(tcp, Proto::Tcp, false, &mut v);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[&12345],
            Seen {
                proto: Proto::Tcp,
                ip: "127.0.0.1".parse().unwrap(),
                port: 8080
            }
        );
        let tcp6 = "h\n   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 777 1\n";
        let mut v = View::new();
        parse_proc_net(tcp6, Proto::Tcp, true, &mut v);
        assert_eq!(v[&777].ip, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(v[&777].port, 22);
    }

    #[test]
    fn our_own_listener_is_in_every_view() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let own = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino() as u32;
        let (diag, proc_net) = tables_of(own).unwrap();
        let inode = diag
            .iter()
            .find(|(_, s)| s.port == port && s.proto == Proto::Tcp)
            .map(|(i, _)| *i)
            .unwrap();
        assert_eq!(proc_net.get(&inode), diag.get(&inode));
    }
}
