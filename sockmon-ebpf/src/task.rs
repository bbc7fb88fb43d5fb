//! The process side of kernel layout: `task_struct` and `signal_struct`,
//! read at offsets user space resolved from BTF (see `sock.rs` for why).
//!
//! A process is named by its leader's pid and `start_boottime`, the pair that
//! survives PID reuse; its name is the leader's `comm`, which can differ from
//! the acting thread's.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs};
use sockmon_common::TASK_COMM_LEN;

use crate::{
    maps::{Fallible, off},
    sock::{launder, read},
};

/// The current task (`struct task_struct *`).
#[inline(always)]
pub fn current() -> u64 {
    // SAFETY: returns a pointer we only read through with probe reads.
    unsafe { bpf_get_current_task() }
}

/// The leader's `comm` and `start_boottime` (ns since boot) of `task`'s process.
#[inline(always)]
pub fn process_identity(task: u64) -> Fallible<([u8; TASK_COMM_LEN], u64)> {
    let leader: u64 = read(task, off!(task_group_leader))?;
    let comm = read(leader, off!(task_comm))?;
    let start = read(leader, off!(task_start_boottime))?;
    Ok((comm, start))
}

/// (`tgid`, `pid`) of `task`: equal for a process's first thread.
#[inline(always)]
pub fn ids(task: u64) -> Fallible<(u32, u32)> {
    Ok((read(task, off!(task_tgid))?, read(task, off!(task_pid))?))
}

/// Whether no thread of `task`'s process is left alive
/// (`signal->live`, decremented in `do_exit` before the exit tracepoint).
#[inline(always)]
pub fn group_dead(task: u64) -> Fallible<bool> {
    let signal: u64 = read(task, off!(task_signal))?;
    let live: i32 = read(signal, off!(signal_live))?;
    Ok(live == 0)
}

/// `task->comm`: the thread's own name.
#[inline(always)]
pub fn comm(task: u64) -> Fallible<[u8; TASK_COMM_LEN]> {
    read(task, off!(task_comm))
}

/// `task->cred->uid` (as `bpf_get_current_uid_gid` reports it).
#[inline(always)]
pub fn uid(task: u64) -> Fallible<u32> {
    let cred: u64 = read(task, off!(task_cred))?;
    read(cred, off!(cred_uid))
}

/// The task's cgroup v2 id: `task->cgroups->dfl_cgrp->kn->id`, what
/// `bpf_get_current_cgroup_id` returns.
#[inline(always)]
pub fn cgroup_id(task: u64) -> Fallible<u64> {
    let css_set: u64 = read(task, off!(task_cgroups))?;
    let cgroup: u64 = read(css_set, off!(css_set_dfl_cgrp))?;
    let kn: u64 = read(cgroup, off!(cgroup_kn))?;
    read(kn, off!(kernfs_node_id))
}

/// The syscall the current task is in (`task_pt_regs(current)->orig_ax` on
/// x86-64). An io_uring worker thread never entered a syscall: it reads 0.
#[inline(always)]
pub fn current_syscall() -> Fallible<u64> {
    // SAFETY: both helpers have no preconditions beyond a valid task, which
    // `bpf_get_current_task_btf` always returns; the result is only read
    // through probe reads.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    read(launder(regs), off!(pt_regs_syscall_nr))
}
