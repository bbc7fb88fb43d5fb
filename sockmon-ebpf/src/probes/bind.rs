//! `bind(2)`: `syscalls:sys_enter_bind` / `sys_exit_bind`.
//!
//! Why the syscall tracepoints: they run in the binding task (so pid, tid and
//! comm are the caller's), give the errno of a failed bind, and at exit the
//! socket already holds the port the kernel chose for a request of port 0
//! (`inet_bind` → `inet_csk_get_port`). kprobes and fentry are unavailable here.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockmon_common::EventKind;

use super::syscall::{arg, enter, ret, sockaddr, take};
use crate::{
    emit::{new_event, submit},
    maps::{Fallible, counted},
    sock::fill_from_sk,
};

/// `int bind(int fd, const struct sockaddr *addr, socklen_t addrlen)`: save the socket and the request.
#[tracepoint(category = "syscalls", name = "sys_enter_bind")]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    counted(try_enter(&ctx));
    0
}

fn try_enter(ctx: &TracePointContext) -> Fallible<()> {
    enter(arg(ctx, 0)?, arg(ctx, 1)?, arg(ctx, 2)?)
}

/// Report the address actually bound, or the one requested and the errno.
#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    counted(try_exit(&ctx));
    0
}

fn try_exit(ctx: &TracePointContext) -> Fallible<()> {
    let Some(pending) = take()? else {
        return Ok(());
    };
    let rc = ret(ctx)?;
    let mut ev = new_event(EventKind::Bind, 0);
    ev.inode = pending.inode;
    fill_from_sk(&mut ev, pending.sk)?;
    if rc == 0 {
        super::udp::mark_reported(pending.sk, ev.protocol);
    } else {
        // Nothing was bound: report what was asked for.
        ev.error = rc as i32;
        let (family, addr, port) = sockaddr(&pending.addr);
        if family != 0 {
            ev.src_addr = addr;
            ev.src_port = port;
        }
    }
    submit(&ev);
    Ok(())
}
