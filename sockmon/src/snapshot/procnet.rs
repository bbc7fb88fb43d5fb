//! The snapshot's second source: `/proc/net/{tcp,tcp6,udp,udp6}`.
//!
//! Why: sock_diag ([`super::diag`]) is the fast and preferred source, but on
//! most distribution kernels its TCP and UDP handlers are modules
//! (`inet_diag`, `tcp_diag`, `udp_diag`). Where they cannot be loaded (a
//! machine without its module tree, a blacklist, a locked-down module
//! policy) every dump fails with `ENOENT`. The text tables in `/proc/net`
//! are built into every kernel with TCP/IP and carry the same facts that
//! sockmon needs (tuple, state, uid, inode), so the daemon falls back to
//! them instead of refusing to start.
//!
//! The files answer for the network namespace of the *reading thread*
//! (`/proc/thread-self/net`; `/proc/self/net` would follow the process
//! leader's namespace), so they are read from the thread that
//! `snapshot::netns` moved into each namespace, as sock_diag is.
//!
//! Rows are folded exactly as sock_diag rows are (IPv4-mapped IPv6 becomes
//! IPv4, sockets without an inode are dropped), so either source gives the
//! same rows for the same sockets. Parsing is a pure function ([`parse`]).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use sockmon_common::{AF_INET, AF_INET6};

use super::SockRow;
use crate::event::{Proto, decode::reconcile_family, unmap};

/// The four tables of one namespace: file name, protocol, address family.
pub const FILES: [(&str, Proto, u16); 4] = [
    ("tcp", Proto::Tcp, AF_INET),
    ("tcp6", Proto::Tcp, AF_INET6),
    ("udp", Proto::Udp, AF_INET),
    ("udp6", Proto::Udp, AF_INET6),
];

/// Appends every TCP and UDP socket of the calling thread's network
/// namespace to `rows`. A table that does not exist (a kernel without IPv6)
/// is empty, not an error.
pub fn read_all(netns: u32, rows: &mut Vec<SockRow>) -> io::Result<()> {
    for (file, proto, af) in FILES {
        let path = format!("/proc/thread-self/net/{file}");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text, netns, proto, af, rows)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
        }
    }
    Ok(())
}

/// Parses one table (header line first), appending a row per socket with a
/// non-zero inode. A line that does not parse is an error naming it: the
/// format is the kernel's ABI, so a surprise must be loud, not a lost row.
pub fn parse(
    text: &str,
    netns: u32,
    proto: Proto,
    af: u16,
    rows: &mut Vec<SockRow>,
) -> Result<(), String> {
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        match row(line, netns, proto, af) {
            Some(Some(r)) => rows.push(r),
            Some(None) => {}
            None => return Err(format!("line {}: cannot parse {line:?}", n + 1)),
        }
    }
    Ok(())
}

/// One line as a row; `Some(None)` for a socket without an inode
/// (TIME_WAIT, request sockets); `None` if the line is malformed.
///
/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`
fn row(line: &str, netns: u32, proto: Proto, af: u16) -> Option<Option<SockRow>> {
    let mut f = line.split_ascii_whitespace();
    let _sl = f.next()?;
    let (src_ip, sport) = endpoint(f.next()?, af)?;
    let (dst_ip, dport) = endpoint(f.next()?, af)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    let uid: u32 = f.nth(3)?.parse().ok()?;
    let inode: u64 = f.nth(1)?.parse().ok()?;
    if inode == 0 {
        return Some(None);
    }
    let (src_ip, dst_ip, family) = reconcile_family(src_ip, dst_ip, af);
    Some(Some(SockRow {
        netns,
        inode,
        proto,
        family,
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        state,
        uid,
    }))
}

/// `0100007F:1F90` → 127.0.0.1, 8080. The kernel prints the address as
/// 32-bit words in host byte order (`%08X` of each `__be32` as stored) and
/// the port as a number; IPv4-mapped IPv6 is folded to IPv4.
fn endpoint(s: &str, af: u16) -> Option<(IpAddr, u16)> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let want = if af == AF_INET { 8 } else { 32 };
    if ip.len() != want {
        return None;
    }
    let mut octets = [0u8; 16];
    for (i, chunk) in ip.as_bytes().chunks(8).enumerate() {
        let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        octets[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    let ip = if af == AF_INET {
        IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
    } else {
        unmap(IpAddr::V6(Ipv6Addr::from(octets)))
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Family;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:A0B2 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:A0B4 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
";

    fn words(ip: Ipv6Addr) -> String {
        ip.octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    }

    #[test]
    fn tcp4_rows_are_exact_and_time_wait_is_dropped() {
        let mut rows = Vec::new();
        parse(TCP, 7, Proto::Tcp, AF_INET, &mut rows).unwrap();
        assert_eq!(
            rows,
            [
                SockRow {
                    netns: 7,
                    inode: 4242,
                    proto: Proto::Tcp,
                    family: Family::Ipv4,
                    src: "127.0.0.1:8080".parse().unwrap(),
                    dst: "0.0.0.0:0".parse().unwrap(),
                    state: 10,
                    uid: 0,
                },
                SockRow {
                    netns: 7,
                    inode: 4243,
                    proto: Proto::Tcp,
                    family: Family::Ipv4,
                    src: "127.0.0.1:8080".parse().unwrap(),
                    dst: "127.0.0.1:41138".parse().unwrap(),
                    state: 1,
                    uid: 1000,
                },
            ]
        );
    }

    #[test]
    fn ipv6_words_are_host_order_and_mapped_addresses_fold_to_ipv4() {
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mapped: Ipv6Addr = "::ffff:10.1.2.3".parse().unwrap();
        let text = format!(
            "header\n   0: {}:0050 {}:C001 01 0:0 0:0 0 33 0 900 1\n   1: {}:0035 {}:0000 07 0:0 0:0 0 0 0 901 2\n",
            words(v6),
            words("2001:db8::2".parse().unwrap()),
            words(mapped),
            words(Ipv6Addr::UNSPECIFIED),
        );
        let mut rows = Vec::new();
        parse(&text, 1, Proto::Udp, AF_INET6, &mut rows).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].src, "[2001:db8::1]:80".parse().unwrap());
        assert_eq!(rows[0].dst, "[2001:db8::2]:49153".parse().unwrap());
        assert_eq!(
            (rows[0].family, rows[0].uid, rows[0].inode),
            (Family::Ipv6, 33, 900)
        );
        // A v4-mapped local address with an unspecified peer is an IPv4 row,
        // exactly as sock_diag's rows and live events are folded.
        assert_eq!(rows[1].src, "10.1.2.3:53".parse().unwrap());
        assert_eq!(rows[1].dst, "0.0.0.0:0".parse().unwrap());
        assert_eq!((rows[1].family, rows[1].state), (Family::Ipv4, 7));
    }

    #[test]
    fn a_malformed_line_is_an_error_naming_it() {
        let err = parse(
            "h\n   0: 0100007F 00000000:0000 0A\n",
            1,
            Proto::Tcp,
            AF_INET,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        // A v6 address in the v4 table is malformed too.
        let bad = format!(
            "h\n 0: {}:0050 00000000:0000 0A 0:0 0:0 0 0 0 5 1\n",
            words(Ipv6Addr::LOCALHOST)
        );
        assert!(parse(&bad, 1, Proto::Tcp, AF_INET, &mut Vec::new()).is_err());
    }

    #[test]
    fn this_threads_tables_parse_and_hold_a_listener_we_open() {
        use std::os::unix::fs::MetadataExt as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd as _;
            l.as_raw_fd()
        }))
        .unwrap()
        .ino();
        let mut rows = Vec::new();
        read_all(3, &mut rows).unwrap();
        let mine: Vec<&SockRow> = rows.iter().filter(|r| r.inode == inode).collect();
        assert_eq!(mine.len(), 1, "{rows:?}");
        assert_eq!(mine[0].src, SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(
            (mine[0].state, mine[0].netns, mine[0].proto),
            (10, 3, Proto::Tcp)
        );
    }
}
