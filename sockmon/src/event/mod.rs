//! Socket events as user space sees them: typed, with addresses as
//! `std::net` types, IPv4-mapped IPv6 addresses folded to IPv4, wall-clock
//! time, and the errno as a name-able value.

pub mod decode;
pub mod errno;

use std::net::{IpAddr, SocketAddr};

pub use sockmon_common::EventKind;

use crate::clock::WallTime;

/// Transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// Address family of the reported addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

/// Stable lower-case name of an event kind, as in JSON and the human view.
pub const fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Bind => "bind",
        EventKind::Listen => "listen",
        EventKind::Connect => "connect",
        EventKind::Accept => "accept",
        EventKind::Close => "close",
    }
}

/// Parses a kind name (`--event connect`).
pub fn kind_from_name(name: &str) -> Option<EventKind> {
    [
        EventKind::Bind,
        EventKind::Listen,
        EventKind::Connect,
        EventKind::Accept,
        EventKind::Close,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == name)
}

/// A task's `comm`: up to 16 raw bytes, untrusted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm {
    bytes: [u8; 16],
    len: u8,
}

impl Comm {
    /// From the kernel's NUL-padded buffer.
    pub fn from_kernel(raw: &[u8; 16]) -> Self {
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Self {
            bytes: *raw,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// One socket event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub time: WallTime,
    pub proto: Proto,
    pub family: Family,
    /// Local side.
    pub src: SocketAddr,
    /// Remote side; unspecified address and port 0 for bind and listen.
    pub dst: SocketAddr,
    /// Process (thread-group) id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub comm: Comm,
    /// Network namespace inode.
    pub netns: u32,
    /// Socket inode (`socket:[N]`), 0 if unknown.
    pub inode: u64,
    pub cgroup_id: u64,
    /// `None` on success, else the (positive) errno.
    pub error: Option<i32>,
    /// `sk_state` when the record was made.
    pub state: u8,
    /// `FLAG_*` bits from the kernel record.
    pub flags: u16,
}

impl Event {
    /// Whether either side uses `port`.
    pub fn has_port(&self, port: u16) -> bool {
        self.src.port() == port || self.dst.port() == port
    }
}

/// Folds an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to IPv4.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}
