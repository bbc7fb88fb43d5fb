//! Every map and load-time global of the kernel programs.
//!
//! Capacities come from `sockmon-common`. Names are literals (the `map`
//! attribute takes nothing else); `sockmon_common::MAPS` and `GLOBALS` name
//! the same, and a loader unit test compares them with the built object's
//! symbols, so user space and the kernel cannot disagree. Sizes here are
//! defaults; user space may resize the ring buffer before load
//! (`EbpfLoader::set_max_entries`).

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use sockmon_common::{
    CONNECTING_CAPACITY, DEFAULT_PENDING_PER_UID, DEFAULT_RING_BYTES, FAILED_CONNECT_CAPACITY,
    KPROBE_ARGS_CAPACITY, KernelCounter, KernelOffsets, PENDING_CAPACITY, PENDING_UIDS_CAPACITY,
    SOCK_HEAD_BYTES, SockEvent, UDP_REPORTED_CAPACITY, counters::COUNTER_SLOTS,
};

/// Every record for user space.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Per-CPU failure counters, indexed by [`KernelCounter`].
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// What a syscall's entry learned, keyed by `pid_tgid`, for its exit to finish.
#[map(name = "PENDING")]
pub static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(PENDING_CAPACITY, 0);

/// How many [`PENDING`] entries each uid holds (`probes/syscall.rs`): an
/// entry is refused to a uid at its share ([`PENDING_PER_UID`]), so one
/// user's blocked threads cannot take everyone's slots. Updated with atomic
/// adds: threads of one uid enter and leave on every CPU at once.
#[map(name = "PENDING_BY_UID")]
pub static PENDING_BY_UID: LruHashMap<u32, u64> =
    LruHashMap::with_max_entries(PENDING_UIDS_CAPACITY, 0);

/// Kernel-function calls in flight, for their return probes (`kprobe.rs`):
/// (thread id << 8 | function) → the call's first two arguments. LRU, so a
/// return that never came (a probe attached mid-call) cannot fill it.
#[map(name = "KPROBE_ARGS")]
pub static KPROBE_ARGS: LruHashMap<u64, [u64; 2]> =
    LruHashMap::with_max_entries(KPROBE_ARGS_CAPACITY, 0);

/// The four-tuple of a socket whose connect just failed, keyed by `struct sock *`,
/// captured at the `SYN_SENT -> CLOSE` transition before the kernel cleared it.
#[map(name = "FAILED_CONNECTS")]
pub static FAILED_CONNECTS: LruHashMap<u64, Tuple> =
    LruHashMap::with_max_entries(FAILED_CONNECT_CAPACITY, 0);

/// UDP sockets (`struct sock *`) whose local address was already reported,
/// so a send reports an implicit bind only once per socket.
#[map(name = "UDP_REPORTED")]
pub static UDP_REPORTED: LruHashMap<u64, u8> =
    LruHashMap::with_max_entries(UDP_REPORTED_CAPACITY, 0);

/// TCP connects in flight, keyed by `struct sock *`: the connect's record
/// (the connecting thread's identity, the inode, the time of the attempt),
/// kept for its outcome, which the kernel decides in softirq where `current`
/// is nobody in particular. LRU, so a connect whose outcome never comes
/// (the socket released in `SYN_SENT`) cannot fill it.
#[map(name = "CONNECTING")]
pub static CONNECTING: LruHashMap<u64, SockEvent> =
    LruHashMap::with_max_entries(CONNECTING_CAPACITY, 0);

/// Scratch space for one socket's head (read in one probe read), kept off
/// the 512-byte BPF stack. Per CPU: a program runs to completion on one CPU.
#[map(name = "SOCK_HEAD")]
pub static SOCK_HEAD: PerCpuArray<[u8; SOCK_HEAD_BYTES]> = PerCpuArray::with_max_entries(1, 0);

/// Kernel struct offsets, filled by user space from BTF before load.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::zeroed();

/// Ring-buffer backlog in bytes above which a submit wakes the reader.
/// Below it records wait for the reader's own drain timer: waking the reader
/// per event is what costs most on a busy machine.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: u64 = 0;

/// The most [`PENDING`] entries one uid may hold (`kernel.pending_per_user`).
#[unsafe(no_mangle)]
pub static PENDING_PER_UID: u64 = DEFAULT_PENDING_PER_UID as u64;

/// Non-zero in the `syscalls` attach mode: the syscall tracepoints report
/// bind, listen, connect and accept, and the socket-layer hooks only what
/// never enters those syscalls (io_uring, TCP Fast Open).
#[unsafe(no_mangle)]
pub static SYSCALLS_MODE: u64 = 0;

/// The ABI this object was built against: user space reads it from the
/// object's symbol table before load and refuses an object of another ABI
/// (a stale build artefact), instead of misreading its records. In a
/// section of its own that the loader ignores, so it costs no map.
#[unsafe(no_mangle)]
#[unsafe(link_section = "sockmon_abi")]
#[used]
pub static ABI_VERSION: u32 = sockmon_common::ABI_VERSION;

/// Non-zero (the default): write the flows records, `CloseStats` before a
/// `close` and `ExecInfo` after an `exec` (see `sockmon_common::ENRICH_GLOBAL`).
#[unsafe(no_mangle)]
pub static ENRICH: u64 = 1;

/// The event kinds kernel-function hooks report in this load
/// (`sockmon_common::kfunc_kinds` bits): `sock_ops`, which serves listen and
/// TCP connect at once, leaves those kinds to them. Patched before load, so
/// the verifier folds the test away.
#[unsafe(no_mangle)]
pub static KFUNC_KINDS: u64 = 0;

/// Reads one field of [`OFFSETS`]. Volatile so the compiler keeps the load
/// (the value is patched into the object after compilation).
macro_rules! off {
    ($field:ident) => {
        $crate::maps::read_global(&raw const $crate::maps::OFFSETS.$field)
    };
}
pub(crate) use off;

/// Reads a load-time global. Volatile, so the compiler cannot fold in the
/// value it saw at build time: user space patches the real one before load.
#[inline(always)]
pub fn read_global<T: Copy>(global: *const T) -> T {
    // SAFETY: `global` points into an immutable static of this program.
    unsafe { core::ptr::read_volatile(global) }
}

pub fn wakeup_bytes() -> u64 {
    read_global(&raw const WAKEUP_BYTES)
}

pub fn syscalls_mode() -> bool {
    read_global(&raw const SYSCALLS_MODE) != 0
}

/// Whether a kernel-function hook reports `kind` (a `kfunc_kinds` bit).
pub fn kfunc_reports(kind: u64) -> bool {
    read_global(&raw const KFUNC_KINDS) & kind != 0
}

pub fn enrich() -> bool {
    read_global(&raw const ENRICH) != 0
}

/// What a fallible step of a kernel program returns: its failure is the
/// counter it goes to.
pub type Fallible<T> = Result<T, KernelCounter>;

/// Counts one kernel-side failure.
#[inline(always)]
pub fn count(counter: KernelCounter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot: no other program writes it concurrently.
        unsafe { *slot += 1 };
    }
}

/// Counts the failure a step returned: each entry point's work ends here,
/// so no failure path goes uncounted (also a step whose failure only
/// leaves a detail out, such as a close's tuple).
#[inline(always)]
pub fn counted(r: Fallible<()>) {
    if let Err(c) = r {
        count(c);
    }
}

/// The value, or `default` with its failure counted: for a detail an event
/// goes out without (a name, a cgroup), where the event itself is not lost.
#[inline(always)]
pub fn or_counted<T>(r: Fallible<T>, default: T) -> T {
    match r {
        Ok(v) => v,
        Err(c) => {
            count(c);
            default
        }
    }
}

/// Saved at a syscall's entry for its exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// `struct sock *` of the descriptor, resolved at entry.
    pub sk: u64,
    /// Inode number of the socket.
    pub inode: u64,
    /// The caller's `sockaddr` (bind/connect), first 28 bytes; family 0 when none.
    pub addr: [u8; 28],
    /// The uid whose share in [`PENDING_BY_UID`] this entry takes, given
    /// back by the exit (the uid at entry, whatever happens meanwhile).
    pub uid: u32,
}

impl Pending {
    /// Left by an entry that skipped its descriptor, so that its exit can
    /// tell "skipped" from "missed" (`probes/syscall.rs`).
    pub const SKIP: Pending = Pending {
        sk: 0,
        inode: 0,
        addr: [0; 28],
        uid: 0,
    };
}

// ---- Flows workstream (issue 13): connection life at close ----------------

/// `tcp_sock`/`sock` offsets for [`sockmon_common::flow::CloseStats`],
/// filled by user space from BTF before load (a global of its own so
/// [`OFFSETS`] keeps its layout).
#[unsafe(no_mangle)]
pub static FLOW_OFFSETS: sockmon_common::flow::FlowOffsets =
    sockmon_common::flow::FlowOffsets::zeroed();

/// Reads one field of [`FLOW_OFFSETS`] (volatile, like [`off!`]).
macro_rules! flow_off {
    ($field:ident) => {
        $crate::maps::read_global(&raw const $crate::maps::FLOW_OFFSETS.$field)
    };
}
pub(crate) use flow_off;

// ---- end of the flows section ----

/// A four-tuple as the kernel held it at some moment (the value of
/// [`FAILED_CONNECTS`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Tuple {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub family: u16,
    pub _pad: u16,
}
