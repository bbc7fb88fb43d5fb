//! The flows workstream's ABI: what a connection was, read from the kernel's
//! socket when it ends, as records of their own.
//!
//! These records do not grow [`crate::SockEvent`]: a [`CloseStats`] record
//! is written by `cgroup/sock_release` immediately *before* the `close`
//! [`crate::SockEvent`] of the same socket, and user space joins the two by
//! socket inode. A stats record whose close never arrives (the ring was full)
//! is dropped by user space and counted there.
//!
//! Offsets of `tcp_sock` and friends are resolved from BTF by user space into
//! [`FlowOffsets`] (a global of its own, so [`crate::KernelOffsets`] keeps its
//! layout).

use crate::event::Header;

/// [`CloseStats::valid`] bits: which groups of fields the kernel could read.
pub const STATS_TCP: u32 = 1 << 0;
/// `drops` was read (`sk_drops`, plus the NUMA drop counters where the kernel has them).
pub const STATS_DROPS: u32 = 1 << 1;

/// Name of the read-only global holding [`FlowOffsets`].
pub const FLOW_OFFSETS_GLOBAL: &str = "FLOW_OFFSETS";

/// An offset that does not exist on this kernel (the field is skipped).
pub const ABSENT: u32 = u32::MAX;

/// A socket's counters at its release ([`crate::EventKind::CloseStats`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseStats {
    pub header: Header,
    /// Inode of the socket: the join key with the `close` record that follows.
    pub inode: u64,
    /// `tcp_sock.bytes_sent`: payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// `tcp_sock.bytes_acked`: payload bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// `tcp_sock.bytes_received`: payload bytes received in sequence.
    pub bytes_received: u64,
    /// `tcp_sock.segs_in`: segments received (pure ACKs included).
    pub segs_in: u32,
    /// `tcp_sock.segs_out`: segments sent (retransmissions included).
    pub segs_out: u32,
    /// `tcp_sock.total_retrans`: segments retransmitted over the socket's life.
    pub total_retrans: u32,
    /// `tcp_sock.srtt_us`: smoothed RTT in µs, shifted left by 3 (as the kernel keeps it).
    pub srtt_us_x8: u32,
    /// Packets dropped on the way to this socket (`sk_drops` + NUMA counters).
    pub drops: u32,
    /// `STATS_*` bits.
    pub valid: u32,
    /// `sk_state` at release (the state the connection ended in).
    pub state: u8,
    /// [`crate::IPPROTO_TCP`] or [`crate::IPPROTO_UDP`].
    pub protocol: u8,
    pub _pad: [u8; 6],
}

const _: () = assert!(size_of::<CloseStats>() == 88);
const _: () = assert!(align_of::<CloseStats>() == 8);

/// Byte offsets in `struct sock` (the `tcp_sock` it starts) for [`CloseStats`].
/// [`ABSENT`] for a field this kernel does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowOffsets {
    pub tcp_bytes_sent: u32,
    pub tcp_bytes_acked: u32,
    pub tcp_bytes_received: u32,
    pub tcp_segs_in: u32,
    pub tcp_segs_out: u32,
    pub tcp_total_retrans: u32,
    pub tcp_srtt_us: u32,
    /// `sock.sk_drops` (`atomic_t`).
    pub sk_drops: u32,
    /// `sock.sk_drop_counters` (6.18+: `struct numa_drop_counters *`), or [`ABSENT`].
    pub sk_drop_counters: u32,
    /// `numa_drop_counters.drops0` / `drops1`.
    pub ndc_drops0: u32,
    pub ndc_drops1: u32,
    // Process context at exec (`ExecInfo`).
    pub task_mm: u32,
    pub task_real_parent: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_exe_file: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    /// tracefs: offset of `filename`'s `__data_loc` in a `sched_process_exec` record.
    pub tp_exec_filename: u32,
}

const _: () = assert!(size_of::<FlowOffsets>() == 19 * 4);

impl FlowOffsets {
    /// All zeroes: the placeholder compiled into the kernel object.
    pub const fn zeroed() -> Self {
        Self {
            tcp_bytes_sent: 0,
            tcp_bytes_acked: 0,
            tcp_bytes_received: 0,
            tcp_segs_in: 0,
            tcp_segs_out: 0,
            tcp_total_retrans: 0,
            tcp_srtt_us: 0,
            sk_drops: 0,
            sk_drop_counters: 0,
            ndc_drops0: 0,
            ndc_drops1: 0,
            task_mm: 0,
            task_real_parent: 0,
            mm_arg_start: 0,
            mm_arg_end: 0,
            mm_exe_file: 0,
            inode_sb: 0,
            sb_dev: 0,
            tp_exec_filename: 0,
        }
    }
}

/// Bytes of the filename `execve` was given that an [`ExecInfo`] keeps.
pub const EXEC_FILENAME_BYTES: usize = 256;
/// Bytes of the argument block (`mm->arg_start..arg_end`, NUL-separated) kept.
pub const EXEC_ARGS_BYTES: usize = 512;

/// [`ExecInfo::flags`]: the filename was longer than [`EXEC_FILENAME_BYTES`].
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 0;
/// The arguments were longer than [`EXEC_ARGS_BYTES`].
pub const EXEC_ARGS_TRUNCATED: u32 = 1 << 1;
/// The arguments could not be read (no `mm`, or the user read failed).
pub const EXEC_ARGS_UNREAD: u32 = 1 << 2;
/// The executable's device and inode could not be read.
pub const EXEC_FILE_UNREAD: u32 = 1 << 3;

/// What a process became at `exec` ([`crate::EventKind::ExecInfo`]), captured
/// in the kernel so a process that connects and exits at once still has it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecInfo {
    pub header: Header,
    /// The process (thread-group id).
    pub pid: u32,
    /// Its parent's thread-group id (`real_parent->tgid`).
    pub ppid: u32,
    /// Its start (`start_boottime` of its leader, ns since boot).
    pub start_ns: u64,
    /// Inode and device (`s_dev`, kernel encoding) of the executable (`mm->exe_file`).
    pub exe_ino: u64,
    pub exe_dev: u32,
    /// Bytes used in `filename` (without the NUL) and `args`.
    pub filename_len: u16,
    pub args_len: u16,
    /// `EXEC_*` bits.
    pub flags: u32,
    pub _pad: u32,
    /// The filename `execve` was given (relative if it was). Untrusted bytes.
    pub filename: [u8; EXEC_FILENAME_BYTES],
    /// argv, NUL-separated, as the process's memory holds it. Untrusted bytes.
    pub args: [u8; EXEC_ARGS_BYTES],
}

const _: () = assert!(size_of::<ExecInfo>() == 64 + EXEC_FILENAME_BYTES + EXEC_ARGS_BYTES);
const _: () = assert!(EXEC_ARGS_BYTES.is_power_of_two() && EXEC_FILENAME_BYTES.is_power_of_two());

#[cfg(feature = "user")]
// SAFETY: plain old data: `repr(C)`, padding named, every bit pattern valid.
unsafe impl aya::Pod for ExecInfo {}
#[cfg(feature = "user")]
// SAFETY: plain old data: `repr(C)`, padding named, every bit pattern valid.
unsafe impl aya::Pod for CloseStats {}
#[cfg(feature = "user")]
// SAFETY: `repr(C)`, only `u32` fields, every bit pattern valid.
unsafe impl aya::Pod for FlowOffsets {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn close_stats_layout_is_pinned() {
        assert_eq!(offset_of!(CloseStats, header), 0);
        assert_eq!(offset_of!(CloseStats, inode), 24);
        assert_eq!(offset_of!(CloseStats, bytes_sent), 32);
        assert_eq!(offset_of!(CloseStats, bytes_acked), 40);
        assert_eq!(offset_of!(CloseStats, bytes_received), 48);
        assert_eq!(offset_of!(CloseStats, segs_in), 56);
        assert_eq!(offset_of!(CloseStats, segs_out), 60);
        assert_eq!(offset_of!(CloseStats, total_retrans), 64);
        assert_eq!(offset_of!(CloseStats, srtt_us_x8), 68);
        assert_eq!(offset_of!(CloseStats, drops), 72);
        assert_eq!(offset_of!(CloseStats, valid), 76);
        assert_eq!(offset_of!(CloseStats, state), 80);
        assert_eq!(offset_of!(CloseStats, protocol), 81);
    }
}
