//! Process lifecycle: fork, exec, exit. They keep the table's owners true
//! when descriptors are shared without any socket syscall:
//!
//! - a forked child holds its parent's sockets (inherited owners);
//! - exec closes close-on-exec descriptors (user space re-checks the holder);
//! - the exit of a process's last thread removes it from every owner list.
//!
//! Threads are not processes: a clone that shares the thread group is skipped.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use sockmon_common::{EventKind, ProcEvent};

use crate::{
    emit::{header, submit},
    maps::{Fallible, count, counted},
    task,
};

/// `tp_btf/sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
/// The BTF variant is used because it hands over the child's task pointer:
/// the classic record has only thread ids and cannot tell a thread from a process.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    counted(try_fork(&ctx));
    0
}

fn try_fork(ctx: &BtfTracePointContext) -> Fallible<()> {
    let child: u64 = ctx.arg::<u64>(1);
    let (tgid, pid) = task::ids(child)?;
    if tgid != pid {
        return Ok(()); // a new thread, not a new process
    }
    let (comm, start_ns) = task::process_identity(child)?;
    submit(&ProcEvent {
        header: header(EventKind::Fork, 0),
        pid: tgid,
        _pad: 0,
        start_ns,
        comm,
    });
    Ok(())
}

/// `sched:sched_process_exec`: fires after the new program is in place and
/// close-on-exec descriptors are closed.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    counted(current_process(EventKind::Exec));
    if crate::maps::enrich() {
        super::exec::exec_info(&ctx); // flows (issue 13): exe, argv, parent
    }
    0
}

/// `sched:sched_process_exit`: fires per thread; only the last one is reported.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    match task::group_dead(task::current()) {
        Ok(true) => counted(current_process(EventKind::Exit)),
        Ok(false) => {}
        Err(c) => count(c),
    }
    0
}

fn current_process(kind: EventKind) -> Fallible<()> {
    let (comm, start_ns) = task::process_identity(task::current())?;
    let header = header(kind, 0);
    submit(&ProcEvent {
        pid: header.tgid,
        header,
        _pad: 0,
        start_ns,
        comm,
    });
    Ok(())
}
