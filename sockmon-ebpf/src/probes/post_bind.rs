//! bind at the socket layer: `cgroup/post_bind4` / `post_bind6` (root cgroup v2).
//!
//! `__inet_bind`/`__inet6_bind` run this hook in the binding task once the
//! address and port are final, the port the kernel chose for a request of
//! port 0 included, so it reports what the syscall tracepoints report
//! without putting every syscall of the machine on the tracing slow path.
//! It also sees binds that never enter `bind(2)` (io_uring's
//! `IORING_OP_BIND`). What it cannot see: a bind that failed (the hook runs
//! only on success, so the errno is unknown in this mode), and
//! `IP_BIND_ADDRESS_NO_PORT` with port 0 (no port is chosen yet; the later
//! connect reports the socket).

use aya_ebpf::{bindings::bpf_sock, macros::cgroup_sock, programs::SockContext};
use sockmon_common::{AF_INET, AF_INET6, EventKind, IPPROTO_TCP, IPPROTO_UDP};

use super::origin::{Op, reported_by_syscalls};
use crate::{
    emit::{new_event_from_task, submit},
    maps::{Fallible, counted},
    sock::{fill_from_sk, inode_of_sk},
};

#[cgroup_sock(post_bind4)]
pub fn post_bind4(ctx: SockContext) -> i32 {
    counted(try_post_bind(&ctx));
    1 // 1 lets the bind stand; 0 would fail it with EPERM
}

#[cgroup_sock(post_bind6)]
pub fn post_bind6(ctx: SockContext) -> i32 {
    counted(try_post_bind(&ctx));
    1
}

fn try_post_bind(ctx: &SockContext) -> Fallible<()> {
    let s: *const bpf_sock = ctx.sock;
    let family = ctx_field!(s, family) as u16;
    let protocol = ctx_field!(s, protocol) as u8;
    if (family != AF_INET && family != AF_INET6)
        || (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
    {
        return Ok(());
    }
    if reported_by_syscalls(Op::Bind)? {
        return Ok(());
    }
    // The context of a cgroup/sock program is the `struct sock` itself.
    let sk = s as u64;
    let mut ev = new_event_from_task(EventKind::Bind, 0);
    ev.inode = inode_of_sk(sk)?;
    fill_from_sk(&mut ev, sk)?;
    super::udp::mark_reported(sk, ev.protocol);
    submit(&ev);
    Ok(())
}
