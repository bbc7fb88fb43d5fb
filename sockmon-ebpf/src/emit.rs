//! Building and submitting records.
//!
//! Records are assembled on the stack and copied into the ring buffer with
//! `bpf_ringbuf_output`. The reader is woken only when the backlog passes
//! [`crate::maps::WAKEUP_BYTES`]; otherwise it drains on its own short timer.
//! Waking the consumer per event is the dominant cost of tracing on a busy
//! two-core machine (see the kernel-and-toolchain notes).

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_ns,
    },
};
use sockmon_common::{
    EventKind, Header, KernelCounter, SockEvent, TASK_COMM_LEN, event::FLAG_SOCKET_LAYER,
};

use crate::{
    maps::{EVENTS, count, or_counted, wakeup_bytes},
    task,
};

/// A header for the current task, stamped now.
#[inline(always)]
pub fn header(kind: EventKind, flags: u16) -> Header {
    let pid_tgid = bpf_get_current_pid_tgid();
    Header {
        // SAFETY: helper with no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        kind: kind as u16,
        flags,
        _pad: 0,
    }
}

/// A zeroed event for the current task, stamped now.
#[inline(always)]
pub fn new_event(kind: EventKind, flags: u16) -> SockEvent {
    let (leader_comm, start_ns) = or_counted(
        task::process_identity(task::current()),
        ([0; TASK_COMM_LEN], 0),
    );
    SockEvent {
        header: header(kind, flags),
        // SAFETY: helper with no preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        inode: 0,
        netns: 0,
        uid: bpf_get_current_uid_gid() as u32,
        error: 0,
        family: 0,
        protocol: 0,
        state: 0,
        src_port: 0,
        dst_port: 0,
        _pad: 0,
        src_addr: [0; 16],
        dst_addr: [0; 16],
        comm: bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]),
        leader_comm,
        start_ns,
        aux: 0,
    }
}

/// A zeroed event for the current task, stamped now, with its identity read
/// from the task itself rather than through the current-task helpers: the
/// socket-layer program types (`sock_ops` above all) are refused some of
/// those helpers on some kernels (6.1 refuses `get_current_pid_tgid` there,
/// 6.12 `get_current_uid_gid` and `get_current_comm`), while
/// `bpf_get_current_task` and probe reads work in all of them.
#[inline(always)]
pub fn new_event_from_task(kind: EventKind, flags: u16) -> SockEvent {
    let task = task::current();
    let (tgid, tid) = or_counted(task::ids(task), (0, 0));
    let (leader_comm, start_ns) = or_counted(task::process_identity(task), ([0; TASK_COMM_LEN], 0));
    SockEvent {
        header: Header {
            // SAFETY: helper with no preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            tgid,
            tid,
            kind: kind as u16,
            flags: flags | FLAG_SOCKET_LAYER,
            _pad: 0,
        },
        cgroup_id: or_counted(task::cgroup_id(task), 0),
        inode: 0,
        netns: 0,
        uid: or_counted(task::uid(task), 0),
        error: 0,
        family: 0,
        protocol: 0,
        state: 0,
        src_port: 0,
        dst_port: 0,
        _pad: 0,
        src_addr: [0; 16],
        dst_addr: [0; 16],
        comm: or_counted(task::comm(task), [0; TASK_COMM_LEN]),
        leader_comm,
        start_ns,
        aux: 0,
    }
}

/// Submits `ev`, counting a full ring buffer as a loss.
#[inline(always)]
pub fn submit<T>(ev: &T) {
    let backlog = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if backlog >= wakeup_bytes() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<T>(ev, flags as u64).is_err() {
        count(KernelCounter::RingFull);
    }
}
