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
//!
//! It runs for every socket that ends (Unix ones too), so it filters on its
//! `bpf_sock` context's family and protocol (plain loads the verifier
//! rewrites, no helper call) before touching kernel memory.

use aya_ebpf::{bindings::bpf_sock, macros::cgroup_sock, programs::SockContext};
use sockmon_common::{
    AF_INET, AF_INET6, EventKind, IPPROTO_TCP, IPPROTO_UDP, event::FLAG_SOCKET_LAYER,
};

use crate::{
    emit::{new_event, submit},
    maps::{Fallible, counted, or_counted},
    sock::{fill_from_sk, inode_of_sk},
};

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    counted(try_release(&ctx));
    1
}

fn try_release(ctx: &SockContext) -> Fallible<()> {
    let s: *const bpf_sock = ctx.sock;
    let family = ctx_field!(s, family) as u16;
    let protocol = ctx_field!(s, protocol) as u8;
    if (family != AF_INET && family != AF_INET6)
        || (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
    {
        return Ok(());
    }
    // The context of a cgroup/sock program is the `struct sock` itself.
    // (Its address fields may only be read by post-bind hooks, so the tuple
    // comes from kernel memory like every other event's.)
    let sk = s as u64;
    // First what must happen whatever else fails: the socket's address may
    // be reused by the next socket at once, which must not inherit the mark.
    super::udp::forget(sk, protocol);
    // A cgroup hook in every mode: its record says so (`attach: socket`).
    let mut ev = new_event(EventKind::Close, FLAG_SOCKET_LAYER);
    ev.family = family;
    ev.protocol = protocol;
    // The inode is what removes the socket from the table: a close goes out
    // with it even if the tuple cannot be read (that read failure is counted).
    ev.inode = or_counted(inode_of_sk(sk), 0);
    counted(fill_from_sk(&mut ev, sk));
    if ev.inode != 0 {
        // Flows (issue 13): the socket's counters, written just before its close.
        if crate::maps::enrich() {
            super::flow::close_stats(sk, protocol, ev.state, ev.inode);
        }
        submit(&ev);
    }
    Ok(())
}
