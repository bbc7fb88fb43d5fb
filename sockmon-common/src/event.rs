//! Records written by the kernel programs into the [`crate::EVENTS_MAP`] ring buffer.
//!
//! Every record starts with a [`Header`]; its `kind` says which struct
//! follows: [`SockEvent`] for socket kinds, [`ProcEvent`] for process kinds.
//! Discriminants of [`EventKind`] are never reused.

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const TASK_COMM_LEN: usize = 16;

/// What happened. `#[repr(u16)]`, explicit, never reused.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `bind(2)` returned (or an unbound UDP socket was bound implicitly, see [`FLAG_IMPLICIT`]).
    Bind = 1,
    /// `listen(2)` returned.
    Listen = 2,
    /// `connect(2)` returned (also `EINPROGRESS` and failures).
    Connect = 3,
    /// `accept(2)`/`accept4(2)` returned a new socket.
    Accept = 4,
    /// The last descriptor of the socket was released: the socket has left every process.
    Close = 5,
    /// The outcome of a TCP connect (established, refused, timed out, reset,
    /// unreachable), for the socket of an earlier [`EventKind::Connect`]; the
    /// identity is the connecting thread's, [`SockEvent::aux`] the time since the attempt.
    ConnectResult = 6,
    /// A new process (not a thread) was forked: [`ProcEvent::pid`] is the child.
    Fork = 16,
    /// A process executed a new program (close-on-exec descriptors are gone by now).
    Exec = 17,
    /// The last thread of a process exited.
    Exit = 18,
    // Flows workstream (20-29): records joined to a socket event by inode.
    /// A socket's counters at release ([`crate::flow::CloseStats`]), written just before its `Close`.
    CloseStats = 20,
    /// What a process became at exec ([`crate::flow::ExecInfo`]), written just after its `Exec`.
    ExecInfo = 21,
    /// A live TCP connection's counters since its previous `Flow` (user space
    /// makes these from sock_diag; the kernel never writes this kind).
    Flow = 22,
}

impl EventKind {
    /// Whether records of this kind are [`ProcEvent`]s.
    pub const fn is_process(self) -> bool {
        matches!(self, Self::Fork | Self::Exec | Self::Exit)
    }

    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Bind,
            2 => Self::Listen,
            3 => Self::Connect,
            4 => Self::Accept,
            5 => Self::Close,
            6 => Self::ConnectResult,
            16 => Self::Fork,
            17 => Self::Exec,
            18 => Self::Exit,
            20 => Self::CloseStats,
            21 => Self::ExecInfo,
            22 => Self::Flow,
            _ => return None,
        })
    }
}

/// [`Header::flags`]: the socket got its local address without a `bind(2)`
/// (a UDP socket's first `sendto`/`sendmsg`).
pub const FLAG_IMPLICIT: u16 = 1 << 0;
/// [`Header::flags`]: the tuple of a failed connect was recovered from the
/// state change that failed it, not read from the (already cleared) socket.
pub const FLAG_TUPLE_FROM_STATE: u16 = 1 << 1;

/// [`Header::flags`]: the record comes from a socket-layer hook (cgroup,
/// `sock_ops`, BTF tracepoint) rather than a syscall tracepoint.
pub const FLAG_SOCKET_LAYER: u16 = 1 << 2;
/// [`Header::flags`]: the local address of this UDP connect was not chosen
/// yet when the record was made (the socket layer sees a UDP connect before
/// the kernel picks it); a later sight of the socket completes it.
pub const FLAG_LOCAL_PENDING: u16 = 1 << 3;
/// [`Header::flags`]: the record comes from a kernel-function hook (fentry/fexit or kprobe).
pub const FLAG_KFUNC: u16 = 1 << 4;

/// First field of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Thread-group id (what user space calls the PID).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// An [`EventKind`] discriminant.
    pub kind: u16,
    /// `FLAG_*` bits.
    pub flags: u16,
    pub _pad: u32,
}

/// A socket event: which socket (four-tuple, inode, netns) and which task.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockEvent {
    pub header: Header,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// Inode number of the socket (`socket:[N]` in `/proc/PID/fd`); 0 when unknown.
    pub inode: u64,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// Real uid of the task.
    pub uid: u32,
    /// The syscall's result: 0, or a negative errno.
    pub error: i32,
    /// [`crate::AF_INET`] or [`crate::AF_INET6`].
    pub family: u16,
    /// [`crate::IPPROTO_TCP`] or [`crate::IPPROTO_UDP`].
    pub protocol: u8,
    /// The socket's `sk_state` when the record was made (TCP states; UDP uses 7/1).
    pub state: u8,
    /// Local port, host byte order.
    pub src_port: u16,
    /// Remote port, host byte order.
    pub dst_port: u16,
    pub _pad: u32,
    /// Local address: the first 4 bytes for IPv4, all 16 for IPv6 (network order).
    pub src_addr: [u8; 16],
    /// Remote address, as `src_addr`.
    pub dst_addr: [u8; 16],
    /// The acting thread's `comm`, NUL-padded. Untrusted bytes.
    pub comm: [u8; TASK_COMM_LEN],
    /// The process leader's `comm`, NUL-padded. Untrusted bytes.
    pub leader_comm: [u8; TASK_COMM_LEN],
    /// When the process started: the leader's `start_boottime`, ns since boot
    /// (with `pid`, the identity that survives PID reuse).
    pub start_ns: u64,
    /// Kind-specific: for [`EventKind::ConnectResult`], nanoseconds since the
    /// connect attempt; 0 otherwise.
    pub aux: u64,
}

/// A process lifecycle record ([`EventKind::Fork`], `Exec`, `Exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEvent {
    /// `tgid`/`tid`: the acting task (the parent, for a fork).
    pub header: Header,
    /// The process concerned: the child for a fork, else `header.tgid`.
    pub pid: u32,
    pub _pad: u32,
    /// That process's start (`start_boottime` of its leader, ns since boot).
    pub start_ns: u64,
    /// Its leader's `comm`. Untrusted bytes.
    pub comm: [u8; TASK_COMM_LEN],
}

const _: () = assert!(size_of::<Header>() == 24);
const _: () = assert!(size_of::<SockEvent>() == 144);
const _: () = assert!(size_of::<ProcEvent>() == 56);
const _: () = assert!(align_of::<SockEvent>() == 8);

#[cfg(feature = "user")]
// SAFETY: plain old data: `repr(C)`, no padding holes (padding is named), every bit pattern valid.
unsafe impl aya::Pod for SockEvent {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for ProcEvent {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for Header {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn header_layout_is_pinned() {
        assert_eq!(offset_of!(Header, ts_ns), 0);
        assert_eq!(offset_of!(Header, tgid), 8);
        assert_eq!(offset_of!(Header, tid), 12);
        assert_eq!(offset_of!(Header, kind), 16);
        assert_eq!(offset_of!(Header, flags), 18);
    }

    #[test]
    fn sock_event_layout_is_pinned() {
        assert_eq!(offset_of!(SockEvent, header), 0);
        assert_eq!(offset_of!(SockEvent, cgroup_id), 24);
        assert_eq!(offset_of!(SockEvent, inode), 32);
        assert_eq!(offset_of!(SockEvent, netns), 40);
        assert_eq!(offset_of!(SockEvent, uid), 44);
        assert_eq!(offset_of!(SockEvent, error), 48);
        assert_eq!(offset_of!(SockEvent, family), 52);
        assert_eq!(offset_of!(SockEvent, protocol), 54);
        assert_eq!(offset_of!(SockEvent, state), 55);
        assert_eq!(offset_of!(SockEvent, src_port), 56);
        assert_eq!(offset_of!(SockEvent, dst_port), 58);
        assert_eq!(offset_of!(SockEvent, src_addr), 64);
        assert_eq!(offset_of!(SockEvent, dst_addr), 80);
        assert_eq!(offset_of!(SockEvent, comm), 96);
        assert_eq!(offset_of!(SockEvent, leader_comm), 112);
        assert_eq!(offset_of!(SockEvent, start_ns), 128);
        assert_eq!(offset_of!(SockEvent, aux), 136);
        assert_eq!(size_of::<SockEvent>(), 144);
    }

    #[test]
    fn proc_event_layout_is_pinned() {
        assert_eq!(offset_of!(ProcEvent, header), 0);
        assert_eq!(offset_of!(ProcEvent, pid), 24);
        assert_eq!(offset_of!(ProcEvent, start_ns), 32);
        assert_eq!(offset_of!(ProcEvent, comm), 40);
        assert_eq!(size_of::<ProcEvent>(), 56);
    }

    #[test]
    fn kinds_round_trip_and_unknown_is_none() {
        for k in [
            EventKind::Bind,
            EventKind::Listen,
            EventKind::Connect,
            EventKind::Accept,
            EventKind::Close,
            EventKind::ConnectResult,
            EventKind::Fork,
            EventKind::Exec,
            EventKind::Exit,
            EventKind::CloseStats,
            EventKind::ExecInfo,
        ] {
            assert_eq!(EventKind::from_u16(k as u16), Some(k));
        }
        assert_eq!(EventKind::from_u16(0), None);
        assert_eq!(EventKind::from_u16(7), None);
        assert_eq!(EventKind::from_u16(19), None);
    }
}
