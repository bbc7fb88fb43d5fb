//! `accept(2)` / `accept4(2)`: `syscalls:sys_exit_accept` / `sys_exit_accept4`.
//!
//! The passive side's `TCP_ESTABLISHED` transition runs in softirq, where
//! `current` is whoever was interrupted; the owner of an accepted socket is
//! the task that gets its descriptor back from accept. Only the exit is
//! needed: the returned descriptor is resolved in that task's table. A
//! connection its peer reset before the accept keeps its tuple (the released
//! local port comes from `inet_sport`). Failed
//! accepts (mostly `EAGAIN` of non-blocking loops) are not reported.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockmon_common::EventKind;

use super::syscall::ret;
use crate::{
    emit::{new_event, submit},
    maps::{Fallible, counted},
    sock::{fill_from_sk_keep_port, inet_sock_of_fd},
};

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    counted(try_exit(&ctx));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    counted(try_exit(&ctx));
    0
}

fn try_exit(ctx: &TracePointContext) -> Fallible<()> {
    let fd = ret(ctx)?;
    if fd < 0 {
        return Ok(());
    }
    let Some(sock) = inet_sock_of_fd(fd as u64)? else {
        return Ok(());
    };
    let mut ev = new_event(EventKind::Accept, 0);
    ev.inode = sock.inode;
    // A connection reset before the accept has its port released already.
    fill_from_sk_keep_port(&mut ev, sock.sk)?;
    submit(&ev);
    Ok(())
}
