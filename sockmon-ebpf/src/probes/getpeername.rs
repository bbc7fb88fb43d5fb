//! accept at the socket layer: `cgroup/getpeername4` / `getpeername6`.
//!
//! `do_accept()` asks the new socket for its peer's address when the caller
//! passed an address buffer, and `inet_getname` runs this hook then: inside
//! `accept()`/`accept4()`, in the thread that accept returns to, on the new
//! socket (already with its file and inode). That covers Python, Perl, Java,
//! Rust's std, Go, nginx and io_uring accepts with an address. A real
//! `getpeername(2)` runs it too and is told apart by the syscall number.
//! Not reached by `accept(fd, NULL, NULL)` (libuv, Node, some C servers):
//! see README for what this mode knows then.
//!
//! A connection reset by its peer before the accept is still accepted; its
//! local port is already released, so it comes from `inet_sport`.
//! The program returns 1 and never writes the address.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use sockmon_common::{EventKind, IPPROTO_TCP};

use super::origin::{Op, is_getpeername, reported_by_syscalls};
use crate::{
    emit::{new_event_from_task, submit},
    maps::{Fallible, counted},
    sock::{fill_from_sk_keep_port, inode_of_sk, launder},
};

#[cgroup_sock_addr(getpeername4)]
pub fn accept_getpeername4(ctx: SockAddrContext) -> i32 {
    counted(try_accept(&ctx));
    1
}

#[cgroup_sock_addr(getpeername6)]
pub fn accept_getpeername6(ctx: SockAddrContext) -> i32 {
    counted(try_accept(&ctx));
    1
}

fn try_accept(ctx: &SockAddrContext) -> Fallible<()> {
    let sa = ctx.sock_addr;
    if ctx_field!(sa, protocol) as u8 != IPPROTO_TCP {
        return Ok(());
    }
    if is_getpeername()? || reported_by_syscalls(Op::Accept)? {
        return Ok(());
    }
    // SAFETY: `sk` of a sock_addr context is always set.
    let sk = launder(unsafe { (*sa).__bindgen_anon_1.sk } as u64);
    if sk == 0 {
        return Ok(());
    }
    let mut ev = new_event_from_task(EventKind::Accept, 0);
    ev.inode = inode_of_sk(sk)?;
    fill_from_sk_keep_port(&mut ev, sk)?;
    submit(&ev);
    Ok(())
}
