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

const _: () = assert!(core::mem::size_of::<CloseStats>() == 88);
const _: () = assert!(core::mem::align_of::<CloseStats>() == 8);

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
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<FlowOffsets>() == 12 * 4);

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
            _pad: 0,
        }
    }
}

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
