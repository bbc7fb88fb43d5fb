//! The end of a socket: `cgroup/sock_release` on the root cgroup v2.
//!
//! Why this hook and not `close(2)`: a socket ends when its last file
//! reference goes, which may be a `close`, a `dup2` over it, `close_range`,
//! an exec with close-on-exec, or the exit of the last process holding it
//! (no syscall at all). `inet_release` runs this hook for every one of those,
//! in the task that dropped the last reference, *before* `tcp_close`/
//! `udp_lib_close` clear the ports, so the full tuple is still there.
//! A `close` of one of several descriptors to a socket ends nothing and is
//! not reported.

use aya_ebpf::{macros::cgroup_sock, programs::SockContext};
use sockmon_common::EventKind;

use crate::{
    emit::{new_event, submit},
    sock::{fill_from_sk, inode_of_sk, is_inet_tcp_udp},
};

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    let _ = try_release(&ctx);
    1
}

fn try_release(ctx: &SockContext) -> Result<(), ()> {
    // The context of a cgroup/sock program is the `struct sock` itself.
    let sk = ctx.sock as u64;
    if !is_inet_tcp_udp(sk)? {
        return Ok(());
    }
    let mut ev = new_event(EventKind::Close, 0);
    fill_from_sk(&mut ev, sk)?;
    ev.inode = inode_of_sk(sk)?;
    super::udp::forget(sk, ev.protocol);
    submit(&ev);
    Ok(())
}
