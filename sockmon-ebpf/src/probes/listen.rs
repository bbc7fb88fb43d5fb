//! `listen(2)`: `syscalls:sys_enter_listen` / `sys_exit_listen`.
//!
//! Why not `inet_sock_set_state → TCP_LISTEN`: that fires too, in the caller's
//! context, but carries no inode and no errno; the syscall pair gives both and
//! shares the descriptor walk with bind and connect.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockmon_common::EventKind;

use super::syscall::{arg, enter, ret, take};
use crate::{
    emit::{new_event, submit},
    maps::{Fallible, counted},
    sock::fill_from_sk,
};

/// `int listen(int fd, int backlog)`: save the socket.
#[tracepoint(category = "syscalls", name = "sys_enter_listen")]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    counted(arg(&ctx, 0).and_then(|fd| enter(fd, 0, 0)));
    0
}

/// Report the listening socket (or the errno).
#[tracepoint(category = "syscalls", name = "sys_exit_listen")]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    counted(try_exit(&ctx));
    0
}

fn try_exit(ctx: &TracePointContext) -> Fallible<()> {
    let Some(pending) = take()? else {
        return Ok(());
    };
    let rc = ret(ctx)?;
    let mut ev = new_event(EventKind::Listen, 0);
    ev.inode = pending.inode;
    fill_from_sk(&mut ev, pending.sk)?;
    if rc < 0 {
        ev.error = rc as i32;
    }
    submit(&ev);
    Ok(())
}
