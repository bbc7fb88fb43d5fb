//! Socket events as user space sees them: typed, with addresses as
//! `std::net` types, IPv4-mapped IPv6 addresses folded to IPv4, wall-clock
//! time, and the errno as a name-able value.

pub mod decode;
pub mod errno;
pub mod flow;
pub mod tally;
#[cfg(test)]
pub mod testing;

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
        EventKind::ConnectResult => "connect_result",
        EventKind::Fork => "fork",
        EventKind::Exec => "exec",
        EventKind::Exit => "exit",
        EventKind::CloseStats => "close_stats",
        EventKind::ExecInfo => "exec_info",
        EventKind::Flow => "flow",
    }
}

/// Parses a kind name (`--event connect`).
pub fn kind_from_name(name: &str) -> Option<EventKind> {
    SOCKET_KINDS.into_iter().find(|k| kind_name(*k) == name)
}

/// The kinds of socket events, in lifecycle order.
pub const SOCKET_KINDS: [EventKind; 6] = [
    EventKind::Bind,
    EventKind::Listen,
    EventKind::Connect,
    EventKind::ConnectResult,
    EventKind::Accept,
    EventKind::Close,
];

/// How exactly an event names who acted (JSON `attribution`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribution {
    /// The acting thread is exact.
    Thread,
    /// The process is exact, the thread is not known.
    Process,
    /// A process found holding the descriptor (not seen acting).
    Holder,
    /// The task that released the socket.
    Closer,
}

impl Attribution {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Thread => "thread",
            Self::Process => "process",
            Self::Holder => "holder",
            Self::Closer => "closer",
        }
    }
}

/// Which family of hooks produced an event (JSON `attach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookSource {
    Syscalls,
    Socket,
    Kfunc,
}

impl HookSource {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Syscalls => "syscalls",
            Self::Socket => "socket",
            Self::Kfunc => "kfunc",
        }
    }
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
    /// The process leader's name (differs from `comm` when another thread acted).
    pub process_comm: Comm,
    /// When the process started, ns since boot (with `pid`, its identity).
    pub start_ns: u64,
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
    /// Close events: the connection's life (counters, duration), joined by the engine.
    pub life: Option<Box<flow::Life>>,
    /// The acting process's exe, args, parent, unit and container (engine-filled).
    pub ctx: Option<std::sync::Arc<flow::ProcCtx>>,
    /// `connect_result`: nanoseconds since the connect attempt; else 0.
    pub aux: u64,
}

/// A process lifecycle change (fork, exec, exit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcChange {
    pub kind: EventKind,
    pub time: WallTime,
    /// The process concerned (the child, for a fork).
    pub pid: u32,
    /// The acting process (the parent, for a fork; else `pid`).
    pub actor: u32,
    /// Start of `pid`, ns since boot.
    pub start_ns: u64,
    /// Name of `pid`'s leader.
    pub comm: Comm,
}

/// One record from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Sock(Event),
    Proc(ProcChange),
    /// A socket's counters at release; precedes that socket's `close`.
    CloseStats(flow::CloseStats),
    /// What a process became at exec; follows that process's `Exec`.
    ExecInfo(Box<flow::ExecCtx>),
}

pub use crate::clock::clock_ticks_per_sec;

/// A start time in ns since boot as `/proc/PID/stat` shows it (clock ticks,
/// rounded down like the kernel's `nsec_to_clock_t`).
pub fn start_ticks(start_ns: u64) -> u64 {
    start_ns / (1_000_000_000 / clock_ticks_per_sec())
}

impl Event {
    /// Whether the local address was assigned by a send, without `bind(2)`.
    pub fn is_implicit(&self) -> bool {
        self.flags & sockmon_common::event::FLAG_IMPLICIT != 0
    }

    /// Whether the local address of this UDP connect was still to be chosen.
    pub fn local_pending(&self) -> bool {
        self.flags & sockmon_common::event::FLAG_LOCAL_PENDING != 0
    }

    /// Which hooks produced the record.
    pub fn source(&self) -> HookSource {
        use sockmon_common::event::{FLAG_KFUNC, FLAG_SOCKET_LAYER};
        if self.flags & FLAG_KFUNC != 0 {
            HookSource::Kfunc
        } else if self.flags & FLAG_SOCKET_LAYER != 0 {
            HookSource::Socket
        } else {
            HookSource::Syscalls
        }
    }

    /// How exactly the record names who acted.
    pub fn attribution(&self) -> Attribution {
        match self.kind {
            EventKind::Close => Attribution::Closer,
            _ => Attribution::Thread,
        }
    }

    /// `connect_result`: microseconds since the attempt.
    pub fn duration_us(&self) -> Option<u64> {
        (self.kind == EventKind::ConnectResult).then_some(self.aux / 1000)
    }

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
