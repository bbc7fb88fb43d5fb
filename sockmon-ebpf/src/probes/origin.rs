//! Which syscall a socket-layer hook was reached from.
//!
//! The socket-layer hooks run inside the kernel function that gives a socket
//! its identity, whatever called it: a syscall, io_uring (inline in
//! `io_uring_enter`, or in an io-wq worker thread that never entered a
//! syscall), or TCP Fast Open's `sendto`/`sendmsg`. In the `syscalls` attach
//! mode the syscall tracepoints report the plain syscalls, so these hooks
//! report only what reached them another way; and the `getpeername` hook
//! must tell an `accept` (which runs it for the caller's address buffer)
//! from a real `getpeername`. Both read the task's syscall number
//! (`task_pt_regs(current)`'s `orig_ax`, offset from BTF).

use crate::{
    maps::{Fallible, syscalls_mode},
    task,
};

#[cfg(bpf_target_arch = "aarch64")]
mod nr {
    pub const BIND: u64 = 200;
    pub const LISTEN: u64 = 201;
    pub const ACCEPT: u64 = 202;
    pub const CONNECT: u64 = 203;
    pub const GETPEERNAME: u64 = 205;
    pub const ACCEPT4: u64 = 242;
}

#[cfg(not(bpf_target_arch = "aarch64"))]
mod nr {
    pub const CONNECT: u64 = 42;
    pub const ACCEPT: u64 = 43;
    pub const BIND: u64 = 49;
    pub const LISTEN: u64 = 50;
    pub const GETPEERNAME: u64 = 52;
    pub const ACCEPT4: u64 = 288;
}

/// The operation a socket-layer hook saw, for [`reported_by_syscalls`].
#[derive(Clone, Copy)]
pub enum Op {
    Bind,
    Listen,
    Connect,
    Accept,
}

/// Whether, in this attach mode, a syscall tracepoint reports this
/// operation (so the socket-layer hook must not report it a second time).
#[inline(always)]
pub fn reported_by_syscalls(op: Op) -> Fallible<bool> {
    if !syscalls_mode() {
        return Ok(false);
    }
    let n = task::current_syscall()?;
    Ok(match op {
        Op::Bind => n == nr::BIND,
        Op::Listen => n == nr::LISTEN,
        Op::Connect => n == nr::CONNECT,
        Op::Accept => n == nr::ACCEPT || n == nr::ACCEPT4,
    })
}

/// Whether the current task is inside `connect(2)`.
#[inline(always)]
pub fn in_connect() -> Fallible<bool> {
    Ok(task::current_syscall()? == nr::CONNECT)
}

/// Whether the `getpeername` hook runs for a real `getpeername(2)` rather
/// than inside an accept.
#[inline(always)]
pub fn is_getpeername() -> Fallible<bool> {
    Ok(task::current_syscall()? == nr::GETPEERNAME)
}
