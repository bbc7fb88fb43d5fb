//! The kernel's socket diagnostics (`NETLINK_SOCK_DIAG`), for TCP and UDP
//! over IPv4 and IPv6.
//!
//! Why netlink rather than `/proc/net/{tcp,udp}*`: the kernel hands over
//! fixed-size binary records (no text to format and re-parse), filtered by
//! family in the kernel, with the socket inode and uid in every record; it is
//! what `ss` uses, and it is several times faster on large tables (see the
//! measurement in `tests/system/snapshot.rs`).
//!
//! A sock_diag socket answers for the network namespace it was *created*
//! in; the caller picks the namespace (see `snapshot::netns`).
//!
//! Building a request and parsing a response buffer are pure functions
//! ([`request`], [`parse`]); only [`DiagSocket`] touches the kernel.
//!
//! Trust: the snapshot enters every namespace, also those an unprivileged
//! user owns (`unshare -Urn`), and there anyone may unicast netlink messages
//! to our socket (its port id is our pid, sequence numbers are predictable).
//! Forged rows could re-key a real socket's entry, flood the table, or keep
//! a dump from ever ending. So the socket is `connect`ed to the kernel (port
//! id 0), which makes the kernel refuse any other sender's unicast to it;
//! every datagram's sender is still checked (`recvfrom`: `nl_pid` must be
//! 0) and anything else is dropped and counted ([`DiagSocket::forged`]); and
//! each dump has a deadline ([`DiagSocket::set_deadline`]), so nothing can
//! stall the snapshot, and with it every later re-snapshot.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use sockmon_common::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};

use super::SockRow;
use crate::event::{Proto, decode::reconcile_family, unmap};

/// `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_V2_LEN: usize = 56;
/// `struct inet_diag_msg`, without attributes.
const DIAG_MSG_LEN: usize = 72;
/// Length of a whole request message.
pub const REQUEST_LEN: usize = NLMSG_HDRLEN + REQ_V2_LEN;
/// `SOCK_DIAG_BY_FAMILY` from `<linux/sock_diag.h>`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// Large enough for the biggest datagram a dump sends (the kernel caps dump
/// messages at 32 KiB), with room to spare.
const RECV_BUF_LEN: usize = 64 * 1024;

/// Default time one dump may take (each of the four of a namespace).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The four dumps that make up one namespace's table.
pub const QUERIES: [(u16, Proto); 4] = [
    (AF_INET, Proto::Tcp),
    (AF_INET6, Proto::Tcp),
    (AF_INET, Proto::Udp),
    (AF_INET6, Proto::Udp),
];

#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the kernel refused the sock_diag dump: {}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    #[error("malformed sock_diag answer: {0}")]
    Malformed(&'static str),
    #[error("the sock_diag dump did not end within {0:?}")]
    Deadline(Duration),
}

/// Whether a response buffer ended the dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` was seen.
    Done,
}

/// The bytes of a dump request for every socket of `family` × `proto`, in
/// every state (`idiag_states = !0`).
pub fn request(family: u16, proto: Proto, seq: u32) -> [u8; REQUEST_LEN] {
    let mut m = [0u8; REQUEST_LEN];
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    m[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: let the kernel fill in our port id.
    let r = &mut m[NLMSG_HDRLEN..];
    r[0] = family as u8; // sdiag_family
    r[1] = protocol_number(proto); // sdiag_protocol
    // idiag_ext 0 (no attributes), pad 0.
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: all
    // The inet_diag_sockid (48 bytes) stays zero: no filter.
    m
}

fn protocol_number(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => IPPROTO_TCP,
        Proto::Udp => IPPROTO_UDP,
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses one datagram of a dump answer (any number of netlink messages),
/// appending a row per socket with a non-zero inode to `rows`.
///
/// Messages whose sequence number is not `seq` are ignored, as are
/// `NLMSG_NOOP` and unknown types.
pub fn parse(
    buf: &[u8],
    seq: u32,
    netns: u32,
    proto: Proto,
    rows: &mut Vec<SockRow>,
) -> Result<Progress, DiagError> {
    let mut at = 0;
    while buf.len() - at >= NLMSG_HDRLEN {
        let len = u32_at(buf, at) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - at {
            return Err(DiagError::Malformed("netlink message length out of bounds"));
        }
        let kind = u16_at(buf, at + 4);
        let msg_seq = u32_at(buf, at + 8);
        let payload = &buf[at + NLMSG_HDRLEN..at + len];
        at += len.next_multiple_of(4).min(buf.len() - at);
        if msg_seq != seq {
            continue;
        }
        match i32::from(kind) {
            libc::NLMSG_DONE => {
                // A dump that failed midway reports its errno here.
                if payload.len() >= 4 && (u32_at(payload, 0) as i32) < 0 {
                    return Err(DiagError::Kernel(-(u32_at(payload, 0) as i32)));
                }
                return Ok(Progress::Done);
            }
            libc::NLMSG_ERROR => {
                if payload.len() < 4 {
                    return Err(DiagError::Malformed("short NLMSG_ERROR"));
                }
                let errno = -(u32_at(payload, 0) as i32);
                if errno != 0 {
                    return Err(DiagError::Kernel(errno));
                }
                // errno 0 is an acknowledgement: nothing to report.
            }
            _ if kind == SOCK_DIAG_BY_FAMILY => {
                if let Some(row) = row(payload, netns, proto)? {
                    rows.push(row);
                }
            }
            _ => {}
        }
    }
    Ok(Progress::More)
}

/// One `inet_diag_msg` as a row; `None` for sockets without an inode
/// (TIME_WAIT, request sockets).
fn row(p: &[u8], netns: u32, proto: Proto) -> Result<Option<SockRow>, DiagError> {
    if p.len() < DIAG_MSG_LEN {
        return Err(DiagError::Malformed("short inet_diag_msg"));
    }
    let inode = u64::from(u32_at(p, 68));
    if inode == 0 {
        return Ok(None);
    }
    let af = u16::from(p[0]);
    let (src_ip, dst_ip) = match af {
        AF_INET => (ipv4(&p[8..12]), ipv4(&p[24..28])),
        AF_INET6 => (ipv6(&p[8..24]), ipv6(&p[24..40])),
        _ => return Err(DiagError::Malformed("unknown address family")),
    };
    let (src_ip, dst_ip, family) = reconcile_family(src_ip, dst_ip, af);
    // Ports are big-endian in inet_diag_sockid.
    let sport = u16::from_be_bytes([p[4], p[5]]);
    let dport = u16::from_be_bytes([p[6], p[7]]);
    Ok(Some(SockRow {
        netns,
        inode,
        proto,
        family,
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        state: p[1],
        uid: u32_at(p, 64),
    }))
}

fn ipv4(b: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// IPv6, with `::ffff:a.b.c.d` folded to IPv4 as live events do.
fn ipv6(b: &[u8]) -> IpAddr {
    let mut o = [0u8; 16];
    o.copy_from_slice(b);
    unmap(IpAddr::V6(Ipv6Addr::from(o)))
}

/// A sock_diag netlink socket in the namespace of the thread that opened it,
/// connected to the kernel.
pub struct DiagSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    deadline: Duration,
    forged: u64,
}

impl DiagSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, DiagError> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io_error("socket(AF_NETLINK, NETLINK_SOCK_DIAG)"));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let kernel = kernel_addr();
        // Connected to port id 0, the socket takes unicasts from the kernel
        // only: the kernel answers anyone else's send with ECONNREFUSED.
        // SAFETY: `kernel` is a valid sockaddr_nl of the length given.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&raw const kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io_error("connect(sock_diag, kernel)"));
        }
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
            deadline: DEFAULT_DEADLINE,
            forged: 0,
        })
    }

    /// How long one dump may take before it fails with [`DiagError::Deadline`].
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = deadline;
    }

    /// Datagrams received from a sender other than the kernel, and dropped.
    pub fn forged(&self) -> u64 {
        self.forged
    }

    /// Appends every socket of `family` × `proto` to `rows`.
    pub fn dump(
        &mut self,
        family: u16,
        proto: Proto,
        netns: u32,
        rows: &mut Vec<SockRow>,
    ) -> Result<(), DiagError> {
        self.seq = self.seq.wrapping_add(1);
        let end = Instant::now() + self.deadline;
        self.send(&request(family, proto, self.seq))?;
        loop {
            let n = self.recv(end)?;
            if parse(&self.buf[..n], self.seq, netns, proto, rows)? == Progress::Done {
                return Ok(());
            }
        }
    }

    /// Sends the dump request of `family` × `proto` (after `tweak`, e.g. to
    /// ask for an extension) and hands each datagram of the answer, with the
    /// request's sequence number, to `each` until it says the dump is done
    /// (`Ok(true)`). The same checks as [`DiagSocket::dump`]: only the
    /// kernel's datagrams, within the deadline.
    pub fn dump_with(
        &mut self,
        family: u16,
        proto: Proto,
        tweak: impl FnOnce(&mut [u8; REQUEST_LEN]),
        mut each: impl FnMut(&[u8], u32) -> Result<bool, DiagError>,
    ) -> Result<(), DiagError> {
        self.seq = self.seq.wrapping_add(1);
        let end = Instant::now() + self.deadline;
        let mut req = request(family, proto, self.seq);
        tweak(&mut req);
        self.send(&req)?;
        loop {
            let n = self.recv(end)?;
            if each(&self.buf[..n], self.seq)? {
                return Ok(());
            }
        }
    }

    /// Appends every TCP and UDP socket of the namespace to `rows`.
    pub fn dump_all(&mut self, netns: u32, rows: &mut Vec<SockRow>) -> Result<(), DiagError> {
        for (family, proto) in QUERIES {
            self.dump(family, proto, netns, rows)?;
        }
        Ok(())
    }

    fn send(&self, msg: &[u8]) -> Result<(), DiagError> {
        let kernel = kernel_addr();
        loop {
            // SAFETY: `msg` and `kernel` are valid for the lengths given.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&raw const kernel).cast(),
                    size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            if !interrupted() {
                return Err(io_error("sendto(sock_diag)"));
            }
        }
    }

    /// Receives one datagram from the kernel into `self.buf` before `end`;
    /// returns its length. Datagrams from anyone else are dropped.
    fn recv(&mut self, end: Instant) -> Result<usize, DiagError> {
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DiagError::Deadline(self.deadline));
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&raw mut pfd, 1, ms) };
            if ready < 0 {
                if interrupted() {
                    continue;
                }
                return Err(io_error("poll(sock_diag)"));
            }
            if ready == 0 {
                continue; // the deadline check above ends it
            }
            // SAFETY: sockaddr_nl is plain old data; all zeroes is valid.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `buf` is valid for writes of its length, `from` for
            // `from_len` bytes. MSG_TRUNC makes the kernel return the
            // datagram's real length.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if n >= 0 {
                if !from_kernel(&from, from_len) {
                    self.forged += 1;
                    continue;
                }
                let n = n as usize;
                if n > self.buf.len() {
                    return Err(DiagError::Malformed("datagram larger than the buffer"));
                }
                return Ok(n);
            }
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) {
                continue;
            }
            return Err(DiagError::Io {
                op: "recvfrom(sock_diag)",
                source: e,
            });
        }
    }
}

/// The kernel's netlink address: port id 0, no groups.
fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain old data; all zeroes is valid.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    kernel
}

/// Whether a datagram's source address is the kernel (port id 0, unicast).
fn from_kernel(from: &libc::sockaddr_nl, len: libc::socklen_t) -> bool {
    len as usize >= size_of::<libc::sockaddr_nl>()
        && i32::from(from.nl_family) == libc::AF_NETLINK
        && from.nl_pid == 0
        && from.nl_groups == 0
}

fn interrupted() -> bool {
    io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
}

fn io_error(op: &'static str) -> DiagError {
    DiagError::Io {
        op,
        source: io::Error::last_os_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Family;

    const SEQ: u32 = 7;

    fn header(buf: &mut Vec<u8>, len: usize, kind: u16, seq: u32) {
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(libc::NLM_F_MULTI as u16).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&4242u32.to_ne_bytes());
    }

    struct Msg {
        family: u8,
        state: u8,
        sport: u16,
        dport: u16,
        src: [u8; 16],
        dst: [u8; 16],
        uid: u32,
        inode: u32,
    }

    fn diag_msg(buf: &mut Vec<u8>, m: &Msg) {
        header(buf, NLMSG_HDRLEN + DIAG_MSG_LEN, SOCK_DIAG_BY_FAMILY, SEQ);
        buf.extend_from_slice(&[m.family, m.state, 0, 0]);
        buf.extend_from_slice(&m.sport.to_be_bytes());
        buf.extend_from_slice(&m.dport.to_be_bytes());
        buf.extend_from_slice(&m.src);
        buf.extend_from_slice(&m.dst);
        buf.extend_from_slice(&[0; 4 + 8]); // idiag_if, idiag_cookie
        buf.extend_from_slice(&[0; 12]); // expires, rqueue, wqueue
        buf.extend_from_slice(&m.uid.to_ne_bytes());
        buf.extend_from_slice(&m.inode.to_ne_bytes());
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut o = [0; 16];
        o[..4].copy_from_slice(&a);
        o
    }

    fn done(buf: &mut Vec<u8>, seq: u32) {
        header(buf, NLMSG_HDRLEN + 4, libc::NLMSG_DONE as u16, seq);
        buf.extend_from_slice(&0i32.to_ne_bytes());
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_kernel_is_a_sender() {
        // SAFETY: sockaddr_nl is plain old data; all zeroes is valid.
        let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        assert!(from_kernel(&a, len));
        assert!(!from_kernel(&a, 2));
        a.nl_pid = 4242;
        assert!(!from_kernel(&a, len));
        a.nl_pid = 0;
        a.nl_groups = 1;
        assert!(!from_kernel(&a, len));
    }

    /// Our port id, as the kernel bound it.
    fn port_id(fd: i32) -> u32 {
        // SAFETY: sockaddr_nl is plain old data; getsockname fills it.
        unsafe {
            let mut a: libc::sockaddr_nl = std::mem::zeroed();
            let mut len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            assert_eq!(libc::getsockname(fd, (&raw mut a).cast(), &mut len), 0);
            a.nl_pid
        }
    }

    #[test]
    fn another_socket_cannot_send_to_ours_and_a_silent_dump_ends_at_its_deadline() {
        let mut ours = DiagSocket::open().unwrap();
        let portid = port_id(ours.fd.as_raw_fd());
        assert_ne!(portid, 0);
        // SAFETY: plain syscalls on our own descriptors with valid buffers.
        let (rc, errno) = unsafe {
            let other = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            );
            assert!(other >= 0);
            let mut to: libc::sockaddr_nl = std::mem::zeroed();
            to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            to.nl_pid = portid;
            let mut msg = Vec::new();
            done(&mut msg, 1);
            let rc = libc::sendto(
                other,
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_DONTWAIT,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            );
            let errno = io::Error::last_os_error().raw_os_error();
            libc::close(other);
            (rc, errno)
        };
        assert_eq!((rc, errno), (-1, Some(libc::ECONNREFUSED)));
        // Nothing was asked, so nothing comes: the deadline ends the wait.
        ours.set_deadline(Duration::from_millis(50));
        let err = ours
            .recv(Instant::now() + Duration::from_millis(50))
            .unwrap_err();
        assert!(matches!(err, DiagError::Deadline(_)), "{err:?}");
        assert_eq!(ours.forged(), 0);
        // And a real dump still works on it.
        let mut rows = Vec::new();
        ours.dump(AF_INET, Proto::Tcp, 1, &mut rows).unwrap();
    }

    #[test]
    fn request_is_a_dump_of_all_states() {
        let r = request(AF_INET6, Proto::Udp, 9);
        assert_eq!(&r[0..4], &72u32.to_ne_bytes());
        assert_eq!(&r[4..6], &20u16.to_ne_bytes());
        assert_eq!(&r[6..8], &0x301u16.to_ne_bytes());
        assert_eq!(&r[8..12], &9u32.to_ne_bytes());
        assert_eq!(&r[16..20], &[10, 17, 0, 0]);
        assert_eq!(&r[20..24], &[0xff; 4]);
        assert!(r[24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn parses_listener_established_mapped_and_done() {
        let mut buf = Vec::new();
        // IPv4 listener on 127.0.0.1:8080.
        let listener = Msg {
            family: 2,
            state: 10,
            sport: 8080,
            dport: 0,
            src: v4([127, 0, 0, 1]),
            dst: [0; 16],
            uid: 1000,
            inode: 123_456,
        };
        diag_msg(&mut buf, &listener);
        // IPv6 established [2001:db8::1]:443 ← [2001:db8::2]:50000.
        let est = Msg {
            family: 10,
            state: 1,
            sport: 443,
            dport: 50000,
            src: "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            dst: "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets(),
            uid: 0,
            inode: 0xfedc_ba98,
        };
        diag_msg(&mut buf, &est);
        // A dual-stack socket talking IPv4: ::ffff:10.0.0.1 → ::ffff:10.0.0.2.
        let mapped = Msg {
            family: 10,
            state: 1,
            sport: 40000,
            dport: 22,
            src: Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets(),
            dst: Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets(),
            uid: 33,
            inode: 77,
        };
        diag_msg(&mut buf, &mapped);
        // TIME_WAIT: no inode, dropped.
        diag_msg(
            &mut buf,
            &Msg {
                state: 6,
                inode: 0,
                ..listener
            },
        );
        done(&mut buf, SEQ);

        let mut rows = Vec::new();
        let p = parse(&buf, SEQ, 4026531840, Proto::Tcp, &mut rows).unwrap();
        assert_eq!(p, Progress::Done);
        let expect = |inode, family, src: &str, dst: &str, state, uid| SockRow {
            netns: 4026531840,
            inode,
            proto: Proto::Tcp,
            family,
            src: addr(src),
            dst: addr(dst),
            state,
            uid,
        };
        assert_eq!(
            rows,
            vec![
                expect(
                    123_456,
                    Family::Ipv4,
                    "127.0.0.1:8080",
                    "0.0.0.0:0",
                    10,
                    1000
                ),
                expect(
                    0xfedc_ba98,
                    Family::Ipv6,
                    "[2001:db8::1]:443",
                    "[2001:db8::2]:50000",
                    1,
                    0
                ),
                expect(77, Family::Ipv4, "10.0.0.1:40000", "10.0.0.2:22", 1, 33),
            ]
        );
    }

    #[test]
    fn a_mapped_listener_on_an_ipv6_socket_is_ipv4_with_an_ipv4_peer() {
        let mut buf = Vec::new();
        let m = Msg {
            family: 10,
            state: 10,
            sport: 53,
            dport: 0,
            src: Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets(),
            dst: [0; 16],
            uid: 5,
            inode: 9,
        };
        diag_msg(&mut buf, &m);
        let mut rows = Vec::new();
        let p = parse(&buf, SEQ, 1, Proto::Udp, &mut rows).unwrap();
        assert_eq!(p, Progress::More);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].family, Family::Ipv4);
        assert_eq!(rows[0].src, addr("127.0.0.1:53"));
        assert_eq!(rows[0].dst, addr("0.0.0.0:0"));
        assert_eq!(rows[0].proto, Proto::Udp);
    }

    #[test]
    fn nlmsg_error_is_reported_with_its_errno() {
        let mut buf = Vec::new();
        header(
            &mut buf,
            NLMSG_HDRLEN + 4 + NLMSG_HDRLEN,
            libc::NLMSG_ERROR as u16,
            SEQ,
        );
        buf.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        header(&mut buf, REQUEST_LEN, SOCK_DIAG_BY_FAMILY, SEQ); // the echoed request
        let mut rows = Vec::new();
        let err = parse(&buf, SEQ, 1, Proto::Tcp, &mut rows).unwrap_err();
        assert!(
            matches!(err, DiagError::Kernel(e) if e == libc::EPERM),
            "{err:?}"
        );
        assert!(err.to_string().contains("Operation not permitted"), "{err}");
        assert!(rows.is_empty());
    }

    #[test]
    fn an_error_in_nlmsg_done_fails_the_dump() {
        let mut buf = Vec::new();
        header(&mut buf, NLMSG_HDRLEN + 4, libc::NLMSG_DONE as u16, SEQ);
        buf.extend_from_slice(&(-libc::ENOBUFS).to_ne_bytes());
        let err = parse(&buf, SEQ, 1, Proto::Tcp, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, DiagError::Kernel(e) if e == libc::ENOBUFS),
            "{err:?}"
        );
    }

    #[test]
    fn multi_part_dumps_continue_until_done_and_ignore_other_sequences() {
        let m = Msg {
            family: 2,
            state: 7,
            sport: 5353,
            dport: 0,
            src: [0; 16],
            dst: [0; 16],
            uid: 0,
            inode: 1,
        };
        let mut first = Vec::new();
        diag_msg(&mut first, &m);
        diag_msg(&mut first, &Msg { inode: 2, ..m });
        let mut second = Vec::new();
        done(&mut second, SEQ + 1); // a stale answer: ignored
        diag_msg(&mut second, &Msg { inode: 3, ..m });
        done(&mut second, SEQ);
        let mut rows = Vec::new();
        assert_eq!(
            parse(&first, SEQ, 1, Proto::Udp, &mut rows).unwrap(),
            Progress::More
        );
        assert_eq!(
            parse(&second, SEQ, 1, Proto::Udp, &mut rows).unwrap(),
            Progress::Done
        );
        let inodes: Vec<u64> = rows.iter().map(|r| r.inode).collect();
        assert_eq!(inodes, [1, 2, 3]);
        assert_eq!(rows[2].src, addr("0.0.0.0:5353"));
        assert_eq!(rows[2].state, 7);
    }

    #[test]
    fn rejects_truncated_messages() {
        let mut buf = Vec::new();
        header(
            &mut buf,
            NLMSG_HDRLEN + DIAG_MSG_LEN,
            SOCK_DIAG_BY_FAMILY,
            SEQ,
        );
        buf.extend_from_slice(&[2, 10, 0, 0]);
        let err = parse(&buf, SEQ, 1, Proto::Tcp, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, DiagError::Malformed(_)), "{err:?}");

        let mut buf = Vec::new();
        header(&mut buf, NLMSG_HDRLEN + 8, SOCK_DIAG_BY_FAMILY, SEQ);
        buf.extend_from_slice(&[0; 8]);
        let err = parse(&buf, SEQ, 1, Proto::Tcp, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, DiagError::Malformed("short inet_diag_msg")),
            "{err:?}"
        );

        let mut buf = Vec::new();
        header(&mut buf, 8, SOCK_DIAG_BY_FAMILY, SEQ);
        let err = parse(&buf, SEQ, 1, Proto::Tcp, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, DiagError::Malformed(_)), "{err:?}");
    }
}
