//! UDP connect at the socket layer: `cgroup/connect4` / `connect6`.
//!
//! `inet_dgram_connect` runs this hook first, in the connecting task, with
//! the caller's destination, for `connect(2)` and io_uring's
//! `IORING_OP_CONNECT`. The kernel picks the local address and port only
//! after it (`inet_autobind`, then the route), so a socket that was not
//! bound yet is reported with local port 0 and `FLAG_LOCAL_PENDING`; the
//! next sight of the socket (its release, or a re-check) completes it.
//! TCP connects are left to `sock_ops` (`TCP_CONNECT_CB`), which sees the
//! chosen source port.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use sockmon_common::{AF_INET, EventKind, IPPROTO_UDP, event::FLAG_LOCAL_PENDING};

use super::origin::{Op, reported_by_syscalls};
use crate::{
    emit::{new_event_from_task, submit},
    maps::{Fallible, counted},
    sock::{fill_from_sk, inode_of_sk, launder},
};

#[cgroup_sock_addr(connect4)]
pub fn udp_connect4(ctx: SockAddrContext) -> i32 {
    counted(try_connect::<false>(&ctx));
    1 // 1 lets the connect go on unchanged
}

#[cgroup_sock_addr(connect6)]
pub fn udp_connect6(ctx: SockAddrContext) -> i32 {
    counted(try_connect::<true>(&ctx));
    1
}

/// `V6`: the hook is `connect6` (only it may read `user_ip6`; the verifier
/// refuses the load of a field the hook's address family lacks, even on a
/// branch never taken, so the branch is chosen at compile time).
#[inline(always)]
fn try_connect<const V6: bool>(ctx: &SockAddrContext) -> Fallible<()> {
    let sa = ctx.sock_addr;
    if ctx_field!(sa, protocol) as u8 != IPPROTO_UDP {
        return Ok(());
    }
    if reported_by_syscalls(Op::Connect)? {
        return Ok(());
    }
    // SAFETY: `sk` of a sock_addr context is always set.
    let sk = launder(unsafe { (*sa).__bindgen_anon_1.sk } as u64);
    if sk == 0 {
        return Ok(());
    }
    let mut ev = new_event_from_task(EventKind::Connect, 0);
    ev.inode = inode_of_sk(sk)?;
    fill_from_sk(&mut ev, sk)?;
    // The destination as the caller gave it (network byte order in the context).
    if !V6 {
        let ip4 = ctx_field!(sa, user_ip4);
        if ev.family == AF_INET {
            ev.dst_addr = [0; 16];
            ev.dst_addr[..4].copy_from_slice(&ip4.to_ne_bytes());
        } else {
            return Ok(()); // connect4 runs for AF_INET sockets only
        }
    } else {
        // SAFETY: four 4-byte context loads, each checked by the verifier.
        let w = unsafe {
            [
                core::ptr::read_volatile(&raw const (*sa).user_ip6[0]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[1]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[2]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[3]),
            ]
        };
        for (i, word) in w.iter().enumerate() {
            ev.dst_addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    }
    ev.dst_port = u16::from_be(ctx_field!(sa, user_port) as u16);
    if ev.src_port == 0 {
        ev.header.flags |= FLAG_LOCAL_PENDING;
    } else {
        super::udp::mark_reported(sk, ev.protocol);
    }
    submit(&ev);
    Ok(())
}
