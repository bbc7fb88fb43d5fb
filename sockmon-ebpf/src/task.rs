//! The process side of kernel layout: `task_struct` and `signal_struct`,
//! read at offsets user space resolved from BTF (see `sock.rs` for why).
//!
//! A process is named by its leader's pid and `start_boottime`, the pair that
//! survives PID reuse; its name is the leader's `comm`, which can differ from
//! the acting thread's.

use aya_ebpf::helpers::bpf_get_current_task;
use sockmon_common::TASK_COMM_LEN;

use crate::{maps::off, sock::read};

/// The current task (`struct task_struct *`).
#[inline(always)]
pub fn current() -> u64 {
    // SAFETY: returns a pointer we only read through with probe reads.
    unsafe { bpf_get_current_task() }
}

/// The leader's `comm` and `start_boottime` (ns since boot) of `task`'s process.
#[inline(always)]
pub fn process_identity(task: u64) -> Result<([u8; TASK_COMM_LEN], u64), ()> {
    let leader: u64 = read(task, off!(task_group_leader))?;
    let comm = read(leader, off!(task_comm))?;
    let start = read(leader, off!(task_start_boottime))?;
    Ok((comm, start))
}

/// (`tgid`, `pid`) of `task`: equal for a process's first thread.
#[inline(always)]
pub fn ids(task: u64) -> Result<(u32, u32), ()> {
    Ok((read(task, off!(task_tgid))?, read(task, off!(task_pid))?))
}

/// Whether no thread of `task`'s process is left alive
/// (`signal->live`, decremented in `do_exit` before the exit tracepoint).
#[inline(always)]
pub fn group_dead(task: u64) -> Result<bool, ()> {
    let signal: u64 = read(task, off!(task_signal))?;
    let live: i32 = read(signal, off!(signal_live))?;
    Ok(live == 0)
}
