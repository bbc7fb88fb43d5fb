//! `connect(2)`: `syscalls:sys_enter_connect` / `sys_exit_connect`.
//!
//! At exit the socket holds the full four-tuple, including the source port
//! the kernel assigned (`inet_hash_connect`), also when a non-blocking connect
//! returns `EINPROGRESS`. After a refused connect the kernel has already
//! cleared the destination and released the port, so a failed connect takes
//! its tuple from the `SYN_SENT → CLOSE` transition (see `state.rs`) or, when
//! the connect failed before any packet left, from the caller's `sockaddr`.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockmon_common::{AF_INET, AF_INET6, EventKind, SockEvent, event::FLAG_TUPLE_FROM_STATE};

use super::syscall::{arg, enter, ret, sockaddr, take};
use crate::{
    emit::{new_event, submit},
    maps::{FAILED_CONNECTS, Fallible, counted},
    sock::{fill_from_sk, inet_sport},
};

const EINPROGRESS: i64 = 115;

/// `int connect(int fd, const struct sockaddr *addr, socklen_t addrlen)`: save the socket and the destination.
#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    counted(try_enter(&ctx));
    0
}

fn try_enter(ctx: &TracePointContext) -> Fallible<()> {
    enter(arg(ctx, 0)?, arg(ctx, 1)?, arg(ctx, 2)?)
}

/// Report the connection's four-tuple and the result.
#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    counted(try_exit(&ctx));
    0
}

fn try_exit(ctx: &TracePointContext) -> Fallible<()> {
    let Some(pending) = take()? else {
        return Ok(());
    };
    let rc = ret(ctx)?;
    let mut ev = new_event(EventKind::Connect, 0);
    ev.inode = pending.inode;
    fill_from_sk(&mut ev, pending.sk)?;
    super::udp::mark_reported(pending.sk, ev.protocol);
    if rc < 0 {
        ev.error = rc as i32;
    }
    // A failed connect, or a non-blocking one refused before it returned
    // (on loopback the RST is handled inside the connect): the kernel has
    // released the port, so the tuple comes from the state change.
    if (rc < 0 && rc != -EINPROGRESS) || ev.src_port == 0 {
        recover_failed_tuple(&mut ev, pending.sk, &pending.addr)?;
    }
    submit(&ev);
    Ok(())
}

/// Puts back the tuple the kernel cleared when the connect failed.
#[inline(always)]
fn recover_failed_tuple(ev: &mut SockEvent, sk: u64, addr: &[u8; 28]) -> Fallible<()> {
    // SAFETY: the value is copied out before the entry is removed.
    if let Some(t) = unsafe { FAILED_CONNECTS.get(sk) }.copied() {
        let _ = FAILED_CONNECTS.remove(sk);
        ev.src_addr = t.src_addr;
        ev.dst_addr = t.dst_addr;
        ev.src_port = t.src_port;
        ev.dst_port = t.dst_port;
        ev.header.flags |= FLAG_TUPLE_FROM_STATE;
        return Ok(());
    }
    if ev.src_port == 0 {
        ev.src_port = inet_sport(sk)?;
    }
    let (family, dst, port) = sockaddr(addr);
    if family == AF_INET && ev.family == AF_INET6 {
        // An IPv4 destination on an IPv6 socket: store it IPv4-mapped.
        ev.dst_addr = [0; 16];
        ev.dst_addr[10] = 0xff;
        ev.dst_addr[11] = 0xff;
        ev.dst_addr[12..].copy_from_slice(&dst[..4]);
        ev.dst_port = port;
    } else if family == AF_INET || family == AF_INET6 {
        ev.dst_addr = dst;
        ev.dst_port = port;
    }
    Ok(())
}
