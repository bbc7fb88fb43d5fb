//! The implicit bind of a UDP socket on its first `sendto`/`sendmsg` (the
//! common DNS-client case: no bind, no connect, just a send).
//!
//! `cgroup/sendmsg4` / `sendmsg6` run for unconnected UDP sends with a
//! destination, after `inet_send_prepare` has autobound the socket, so the
//! local port is known here. UDP sends are a hot path: the work per send is
//! one LRU lookup; only the first send of a socket whose address was not yet
//! reported (by bind, connect or an earlier send) builds an event.
//! Returning 1 lets every send through unchanged.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use sockmon_common::{
    EventKind, IPPROTO_UDP,
    event::{FLAG_IMPLICIT, FLAG_SOCKET_LAYER},
};

use crate::{
    emit::{new_event, submit},
    maps::{Fallible, UDP_REPORTED, counted},
    sock::{fill_from_sk, inode_of_sk, launder},
};

#[cgroup_sock_addr(sendmsg4)]
pub fn udp_sendmsg4(ctx: SockAddrContext) -> i32 {
    counted(try_sendmsg(&ctx));
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn udp_sendmsg6(ctx: SockAddrContext) -> i32 {
    counted(try_sendmsg(&ctx));
    1
}

fn try_sendmsg(ctx: &SockAddrContext) -> Fallible<()> {
    // SAFETY: `sk` of a sock_addr context is always set for sendmsg hooks.
    let sk = launder(unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk } as u64);
    if sk == 0 || UDP_REPORTED.get_ptr(sk).is_some() {
        return Ok(());
    }
    let _ = UDP_REPORTED.insert(sk, 1, 0);
    // A cgroup hook: its record says so (`attach: socket`).
    let mut ev = new_event(EventKind::Bind, FLAG_IMPLICIT | FLAG_SOCKET_LAYER);
    fill_from_sk(&mut ev, sk)?;
    if ev.protocol != IPPROTO_UDP || ev.src_port == 0 {
        return Ok(());
    }
    ev.inode = inode_of_sk(sk)?;
    submit(&ev);
    Ok(())
}

/// Marks a UDP socket's address as reported (by bind or connect).
#[inline(always)]
pub fn mark_reported(sk: u64, protocol: u8) {
    if protocol == IPPROTO_UDP {
        let _ = UDP_REPORTED.insert(sk, 1, 0);
    }
}

/// Forgets a released socket.
#[inline(always)]
pub fn forget(sk: u64, protocol: u8) {
    if protocol == IPPROTO_UDP {
        let _ = UDP_REPORTED.remove(sk);
    }
}
