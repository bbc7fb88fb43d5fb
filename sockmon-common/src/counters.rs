//! Kernel-side failures, counted per CPU in [`crate::COUNTERS_MAP`].
//!
//! The kernel programs never log on their hot path; every way an event can
//! be lost or degraded increments one of these, and user space sums them
//! across CPUs for `status`, metrics and `lost` records.

/// Index into the counters array. `#[repr(u32)]`, explicit, never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelCounter {
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full; the event is lost.
    RingFull = 0,
    /// A kernel pointer read failed while resolving a descriptor to its socket.
    ReadFailed = 1,
    /// A syscall exit found no saved arguments (the entry was missed or evicted).
    PendingMissing = 2,
    /// The in-flight syscall map was full at a syscall's entry; that event is lost.
    PendingFull = 3,
    /// Reading the caller's `sockaddr` from user memory failed.
    ReadUserFailed = 4,
    /// The map of connects in flight refused a connect: its outcome
    /// (`connect_result`) will not be reported.
    ConnectUntracked = 5,
}

/// Number of entries in [`crate::COUNTERS_MAP`].
pub const COUNTER_SLOTS: u32 = 6;

impl KernelCounter {
    pub const ALL: [KernelCounter; COUNTER_SLOTS as usize] = [
        Self::RingFull,
        Self::ReadFailed,
        Self::PendingMissing,
        Self::PendingFull,
        Self::ReadUserFailed,
        Self::ConnectUntracked,
    ];

    /// Stable name used in `status`, metrics and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RingFull => "ring_full",
            Self::ReadFailed => "read_failed",
            Self::PendingMissing => "pending_missing",
            Self::PendingFull => "pending_full",
            Self::ReadUserFailed => "read_user_failed",
            Self::ConnectUntracked => "connect_untracked",
        }
    }

    /// Whether this counter means an event was lost (rather than degraded).
    pub const fn is_loss(self) -> bool {
        matches!(
            self,
            Self::RingFull | Self::PendingFull | Self::PendingMissing | Self::ConnectUntracked
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_covers_every_slot_in_order() {
        for (i, c) in KernelCounter::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32);
        }
    }
}
