//! Kernel-side failures, counted per CPU in [`crate::COUNTERS_MAP`].
//!
//! The kernel programs never log on their hot path; every way an event can
//! be lost or degraded increments one of these, and user space sums them
//! across CPUs for `status`, metrics and `lost` records.
//!
//! [`KernelCounter`] is also the kernel programs' error type: every fallible
//! step returns `Result<_, KernelCounter>`, and each entry point counts the
//! error it gets back exactly once (`sockmon-ebpf`'s `maps::counted`), so a
//! failure path cannot be forgotten by the count.

/// Index into the counters array. `#[repr(u32)]`, explicit, never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelCounter {
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full; the event is lost.
    RingFull = 0,
    /// A kernel memory read failed: the event went out with fewer details
    /// (a name, a cgroup, a flow's counters), or, when the read was the
    /// socket itself, not at all.
    ReadFailed = 1,
    /// A syscall exit found no saved entry: the entry ran before the probes
    /// were attached (a syscall in flight at start), or found the in-flight
    /// map full. An inet socket's entry refused by a full map has counted
    /// `pending_full` already, so that one loss is counted at both ends:
    /// the count errs on the side of more loss, never less.
    PendingMissing = 2,
    /// The in-flight syscall map was full at a syscall's entry; that event is lost.
    PendingFull = 3,
    /// Reading the caller's `sockaddr` from user memory failed.
    ReadUserFailed = 4,
    /// The map of connects in flight refused a connect: its outcome
    /// (`connect_result`) will not be reported.
    ConnectUntracked = 5,
    /// A field of a tracepoint's record could not be read (a syscall's
    /// argument or result): the event is lost.
    RecordReadFailed = 6,
    /// A per-CPU scratch slot was missing: the event is lost.
    ScratchMissing = 7,
    /// A field's offset lay outside the copied head of `struct sock`: the
    /// event is lost (BTF gave an offset the head does not cover).
    HeadOutOfBounds = 8,
    /// A syscall's entry found its user's share of the in-flight map used
    /// up (`kernel.pending_per_user` threads of one uid inside bind, listen,
    /// connect or accept at once): that event is lost, and the user's other
    /// threads' and every other user's events are not. Its exit counts
    /// `pending_missing` too, as for `pending_full`.
    PendingUserFull = 9,
}

/// Number of entries in [`crate::COUNTERS_MAP`].
pub const COUNTER_SLOTS: u32 = 10;

impl KernelCounter {
    pub const ALL: [KernelCounter; COUNTER_SLOTS as usize] = [
        Self::RingFull,
        Self::ReadFailed,
        Self::PendingMissing,
        Self::PendingFull,
        Self::ReadUserFailed,
        Self::ConnectUntracked,
        Self::RecordReadFailed,
        Self::ScratchMissing,
        Self::HeadOutOfBounds,
        Self::PendingUserFull,
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
            Self::RecordReadFailed => "record_read_failed",
            Self::ScratchMissing => "scratch_missing",
            Self::HeadOutOfBounds => "head_out_of_bounds",
            Self::PendingUserFull => "pending_user_full",
        }
    }

    /// Whether this counter means an event was lost (rather than degraded).
    pub const fn is_loss(self) -> bool {
        matches!(
            self,
            Self::RingFull
                | Self::PendingFull
                | Self::PendingUserFull
                | Self::PendingMissing
                | Self::ConnectUntracked
                | Self::RecordReadFailed
                | Self::ScratchMissing
                | Self::HeadOutOfBounds
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
