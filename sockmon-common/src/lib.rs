//! The ABI shared by sockmon's kernel programs and its user space.
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so every
//! type is `#[repr(C)]`, has explicit padding fields, and holds no `bool`,
//! `Option` or data-carrying enum. Layouts are pinned by compile-time
//! assertions and by unit tests; changing one is an ABI break that must bump
//! [`ABI_VERSION`].
#![no_std]

pub mod counters;
pub mod event;
pub mod flow;
pub mod offsets;

pub use counters::KernelCounter;
pub use event::{EventKind, Header, ProcEvent, SockEvent, TASK_COMM_LEN};
pub use offsets::KernelOffsets;

/// Bumped whenever a type in this crate changes layout.
pub const ABI_VERSION: u32 = 5;

/// Name of the `BPF_MAP_TYPE_RINGBUF` that carries every record to user space.
pub const EVENTS_MAP: &str = "EVENTS";
/// Default size of [`EVENTS_MAP`] in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// Name of the per-CPU array of [`KernelCounter`]s.
pub const COUNTERS_MAP: &str = "COUNTERS";

/// Name of the hash map holding syscall arguments between a syscall's entry and exit.
pub const PENDING_MAP: &str = "PENDING";
/// How many syscalls may be in flight at once (one entry per thread inside bind/listen/connect).
pub const PENDING_CAPACITY: u32 = 16_384;

/// Name of the map of in-flight syscalls per user (uid → how many of its
/// threads hold an entry of [`PENDING_MAP`]), so that one user cannot fill
/// the shared map and blind the monitor to everyone else (hardening).
pub const PENDING_BY_UID_MAP: &str = "PENDING_BY_UID";
/// Users tracked at once in [`PENDING_BY_UID_MAP`] (an LRU: beyond this
/// many users with syscalls in flight, the least recent one's count starts
/// over, which only ever lets it in, never shuts anyone out).
pub const PENDING_UIDS_CAPACITY: u32 = 4_096;
/// Name of the read-only global holding the most [`PENDING_MAP`] entries
/// one uid may hold (`kernel.pending_per_user`).
pub const PENDING_PER_UID_GLOBAL: &str = "PENDING_PER_UID";
/// The default share of one user: a quarter of the map, so that at least
/// four users (and root's daemons) are always served.
pub const DEFAULT_PENDING_PER_UID: u32 = PENDING_CAPACITY / 4;

/// Name of the LRU map of kernel-function calls in flight for their return
/// probes (the kprobe variant of the `kfunc` mode): (thread, function) →
/// the call's first two arguments.
pub const KPROBE_ARGS_MAP: &str = "KPROBE_ARGS";
pub const KPROBE_ARGS_CAPACITY: u32 = 16_384;

/// Name of the LRU map that keeps the four-tuple of a socket whose connect just failed.
pub const FAILED_CONNECT_MAP: &str = "FAILED_CONNECTS";
pub const FAILED_CONNECT_CAPACITY: u32 = 4_096;

/// Name of the LRU map of UDP sockets whose local address was already
/// reported (explicit bind, connect, or an earlier implicit bind).
pub const UDP_REPORTED_MAP: &str = "UDP_REPORTED";
pub const UDP_REPORTED_CAPACITY: u32 = 65_536;

/// Bytes at the start of `struct sock` the programs read in one go (the
/// whole `sock_common`: addresses, ports, family, state, namespace). User
/// space refuses to load on a kernel where those fields lie beyond.
pub const SOCK_HEAD_BYTES: usize = 160;

/// Name of the per-CPU scratch map holding one socket's head.
pub const SOCK_HEAD_MAP: &str = "SOCK_HEAD";

/// Name of the read-only global holding [`KernelOffsets`].
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the read-only global holding the ring-buffer backlog (bytes) above
/// which a submit wakes the reader; below it the reader drains on its own timer.
pub const WAKEUP_BYTES_GLOBAL: &str = "WAKEUP_BYTES";

/// Name of the LRU map of TCP connects in flight (`struct sock *` → the
/// connect's record), for their outcome (`ConnectResult`) in softirq.
pub const CONNECTING_MAP: &str = "CONNECTING";
pub const CONNECTING_CAPACITY: u32 = 65_536;

/// Name of the read-only global that says which hooks report what: non-zero
/// when the syscall tracepoints report bind, listen, connect and accept (the
/// `syscalls` attach mode), so the socket-layer hooks report only what never
/// enters those syscalls (io_uring, TCP Fast Open).
pub const SYSCALLS_MODE_GLOBAL: &str = "SYSCALLS_MODE";

/// Name of the read-only global that turns the flows enrichment on (non-zero,
/// the default): the `CloseStats` record before each `close` and the
/// `ExecInfo` record after each `exec`. Off only to measure what they cost
/// (`sockmon daemon --no-enrichment`, used by `cargo xtask bench`).
pub const ENRICH_GLOBAL: &str = "ENRICH";

/// Name of the read-only global holding the [`kfunc_kinds`] bits: the event
/// kinds that kernel-function hooks (fexit) report in this load, so the
/// socket-layer program shared by several kinds (`sock_ops`: listen and TCP
/// connect) leaves them alone. Zero unless the `kfunc` mode (or `auto` on a
/// kernel with trampolines) loaded.
pub const KFUNC_KINDS_GLOBAL: &str = "KFUNC_KINDS";

/// Bits of [`KFUNC_KINDS_GLOBAL`], one per event kind a kernel-function
/// hook can report.
pub mod kfunc_kinds {
    pub const BIND: u64 = 1 << 0;
    pub const LISTEN: u64 = 1 << 1;
    pub const CONNECT: u64 = 1 << 2;
    pub const ACCEPT: u64 = 1 << 3;
    /// A UDP socket's implicit bind (its first send, unbound).
    pub const UDP_IMPLICIT_BIND: u64 = 1 << 4;
    pub const ALL: u64 = BIND | LISTEN | CONNECT | ACCEPT | UDP_IMPLICIT_BIND;
}

/// Every map of the kernel object, by name. `#[map(name = ...)]` takes a
/// literal only, so the kernel side cannot use these constants; a unit test
/// of the loader (`every_map_and_global_of_the_object_is_named_here`)
/// compares this list, and [`GLOBALS`], with the built object's symbols,
/// so a renamed or added map fails the build's tests, not a load.
pub const MAPS: [&str; 9] = [
    EVENTS_MAP,
    COUNTERS_MAP,
    PENDING_MAP,
    PENDING_BY_UID_MAP,
    FAILED_CONNECT_MAP,
    UDP_REPORTED_MAP,
    SOCK_HEAD_MAP,
    CONNECTING_MAP,
    KPROBE_ARGS_MAP,
];

/// Every load-time global of the kernel object, by name (see [`MAPS`]).
pub const GLOBALS: [&str; 7] = [
    OFFSETS_GLOBAL,
    flow::FLOW_OFFSETS_GLOBAL,
    WAKEUP_BYTES_GLOBAL,
    SYSCALLS_MODE_GLOBAL,
    ENRICH_GLOBAL,
    KFUNC_KINDS_GLOBAL,
    PENDING_PER_UID_GLOBAL,
];

/// Address families as the kernel numbers them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// Protocols as the kernel numbers them.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
