//! bind, listen, connect and accept at the kernel functions that do them:
//! `fexit` programs (BPF trampolines), the `kfunc` attach mode.
//!
//! Why: where the kernel allows trampolines (Debian, Ubuntu, RHEL, Fedora;
//! not this project's 6.18 build machine), an fexit program runs only when
//! its function returns, in the acting thread, and costs nothing anywhere
//! else. Each function below is the one that gives a socket its identity,
//! whatever called it (a syscall, io_uring, TCP Fast Open's `sendto`, an
//! in-kernel user), and at its exit it has the final tuple and the return
//! code. That is more than the socket layer knows: failed binds and
//! connects with their errno, `accept(fd, NULL, NULL)`, and a UDP connect's
//! local address.
//!
//! - `inet_bind` / `inet6_bind`: the address really bound (the kernel-chosen
//!   port included), or the requested one and the errno.
//! - `inet_listen`: the listening socket, also after a `listen()` without
//!   `bind()` (the port is chosen inside it).
//! - `tcp_v4_connect` / `tcp_v6_connect`: the SYN was handed to the stack
//!   with the chosen source port, or the connect failed before it (errno).
//!   The record is kept in `CONNECTING` for the outcome (`state.rs`), as
//!   `sock_ops` does in the other modes. An IPv4-mapped connect on an IPv6
//!   socket runs `tcp_v4_connect` inside `tcp_v6_connect`; only the outer
//!   one reports it.
//! - `inet_accept`: the new socket, grafted onto its `struct socket` (so
//!   with its inode), in the thread that accept returns to, with or without
//!   an address buffer, and for io_uring (`do_accept`). Its third argument
//!   changed in 6.10 (`flags, kern` became `struct proto_accept_arg *`);
//!   only the first two are read here, and the success is told by
//!   `newsock->sk` rather than by the return code.
//! - `ip4_datagram_connect` / `ip6_datagram_connect`: a UDP connect, after
//!   `inet_autobind` and the route chose the local address and port.
//! - `inet_autobind`: a UDP socket gets a port without `bind()`, on its first
//!   send (`inet_send_prepare`): the implicit bind, seen once per socket
//!   instead of on every unconnected send as the `cgroup/sendmsg` hook must
//!   (about 350 ns of each `sendto` on this project's machine). The
//!   autobind inside `connect(2)` is left to the connect's record, as in the
//!   other modes.
//!
//! The loader checks each function's parameters in the kernel's BTF before
//! it attaches (kernel/kfunc.rs), and leaves an event kind to the socket
//! layer when its function is missing or has another shape.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::fexit, programs::FExitContext};
use sockmon_common::{
    AF_INET6, EventKind, IPPROTO_TCP, IPPROTO_UDP, KernelCounter, SockEvent,
    event::{FLAG_IMPLICIT, FLAG_KFUNC},
};

use super::{origin::in_connect, syscall::sockaddr};
use crate::{
    emit::{new_event, submit},
    maps::{CONNECTING, Fallible, count, counted, off},
    sock::{
        fill_from_sk, fill_from_sk_keep_port, inode_of_sk, inode_of_socket, is_inet_tcp_udp, read,
    },
};

#[fexit(function = "inet_bind")]
pub fn kf_inet_bind(ctx: FExitContext) -> i32 {
    counted(on_bind(ctx.arg(0), ctx.arg(1), rc(&ctx, 3)));
    0
}

#[fexit(function = "inet6_bind")]
pub fn kf_inet6_bind(ctx: FExitContext) -> i32 {
    counted(on_bind(ctx.arg(0), ctx.arg(1), rc(&ctx, 3)));
    0
}

#[fexit(function = "inet_listen")]
pub fn kf_inet_listen(ctx: FExitContext) -> i32 {
    counted(on_listen(ctx.arg(0), rc(&ctx, 2)));
    0
}

#[fexit(function = "tcp_v4_connect")]
pub fn kf_tcp_v4_connect(ctx: FExitContext) -> i32 {
    counted(on_connect::<false>(
        ctx.arg(0),
        ctx.arg(1),
        rc(&ctx, 3),
        IPPROTO_TCP,
    ));
    0
}

#[fexit(function = "tcp_v6_connect")]
pub fn kf_tcp_v6_connect(ctx: FExitContext) -> i32 {
    counted(on_connect::<true>(
        ctx.arg(0),
        ctx.arg(1),
        rc(&ctx, 3),
        IPPROTO_TCP,
    ));
    0
}

#[fexit(function = "ip4_datagram_connect")]
pub fn kf_ip4_datagram_connect(ctx: FExitContext) -> i32 {
    counted(on_connect::<false>(
        ctx.arg(0),
        ctx.arg(1),
        rc(&ctx, 3),
        IPPROTO_UDP,
    ));
    0
}

#[fexit(function = "ip6_datagram_connect")]
pub fn kf_ip6_datagram_connect(ctx: FExitContext) -> i32 {
    counted(on_connect::<true>(
        ctx.arg(0),
        ctx.arg(1),
        rc(&ctx, 3),
        IPPROTO_UDP,
    ));
    0
}

#[fexit(function = "inet_autobind")]
pub fn kf_inet_autobind(ctx: FExitContext) -> i32 {
    counted(on_autobind(ctx.arg(0), rc(&ctx, 1)));
    0
}

#[fexit(function = "inet_accept")]
pub fn kf_inet_accept(ctx: FExitContext) -> i32 {
    counted(on_accept(ctx.arg(1)));
    0
}

/// The return code of the traced function (an `int`; `-errno` or 0).
#[inline(always)]
fn rc(ctx: &FExitContext, nargs: usize) -> i32 {
    // The return value follows the arguments in an fexit context.
    ctx.arg::<u64>(nargs) as i32
}

/// `sock->sk` of a `struct socket *`, if it is an inet TCP/UDP socket.
#[inline(always)]
fn inet_sk_of_socket(socket: u64) -> Fallible<Option<u64>> {
    if socket == 0 {
        return Ok(None);
    }
    let sk: u64 = read(socket, off!(socket_sk))?;
    if sk == 0 || !is_inet_tcp_udp(sk)? {
        return Ok(None);
    }
    Ok(Some(sk))
}

/// The family, address and port of a `struct sockaddr *` in kernel memory
/// (the caller's address, already copied in by the syscall or io_uring).
#[inline(always)]
fn kernel_sockaddr(addr: u64) -> Fallible<(u16, [u8; 16], u16)> {
    if addr == 0 {
        return Ok((0, [0; 16], 0));
    }
    // SAFETY: bpf_probe_read_kernel validates the address.
    let raw: [u8; 28] = unsafe { bpf_probe_read_kernel(addr as *const [u8; 28]) }
        .map_err(|_| KernelCounter::ReadFailed)?;
    Ok(sockaddr(&raw))
}

/// `int inet_bind(struct socket *sock, struct sockaddr *uaddr, int addr_len)`
/// (and `inet6_bind`, the same shape) returned `rc`. Shared with the kprobe
/// variant (`kprobe.rs`), as are the other `on_*`.
#[inline(always)]
pub fn on_bind(socket: u64, uaddr: u64, rc: i32) -> Fallible<()> {
    let Some(sk) = inet_sk_of_socket(socket)? else {
        return Ok(());
    };
    let mut ev = new_event(EventKind::Bind, FLAG_KFUNC);
    ev.inode = inode_of_sk(sk)?;
    fill_from_sk(&mut ev, sk)?;
    if rc == 0 {
        super::udp::mark_reported(sk, ev.protocol);
    } else {
        // Nothing was bound: report what was asked for.
        ev.error = rc;
        let (family, addr, port) = kernel_sockaddr(uaddr)?;
        if family != 0 {
            ev.src_addr = addr;
            ev.src_port = port;
        }
    }
    submit(&ev);
    Ok(())
}

/// `int inet_listen(struct socket *sock, int backlog)` returned `rc`.
#[inline(always)]
pub fn on_listen(socket: u64, rc: i32) -> Fallible<()> {
    let Some(sk) = inet_sk_of_socket(socket)? else {
        return Ok(());
    };
    let mut ev = new_event(EventKind::Listen, FLAG_KFUNC);
    ev.inode = inode_of_sk(sk)?;
    fill_from_sk(&mut ev, sk)?;
    if rc < 0 {
        ev.error = rc;
    }
    submit(&ev);
    Ok(())
}

/// `int tcp_v4_connect(struct sock *sk, struct sockaddr *uaddr, int addr_len)`
/// (`tcp_v6_connect`, `ip4_datagram_connect`, `ip6_datagram_connect`: the
/// same shape) returned `rc`. `V6`: the IPv6 function of the pair.
#[inline(always)]
pub fn on_connect<const V6: bool>(sk: u64, uaddr: u64, rc: i32, protocol: u8) -> Fallible<()> {
    if sk == 0 || !is_inet_tcp_udp(sk)? {
        return Ok(());
    }
    let proto: u16 = read(sk, off!(sk_protocol))?;
    if proto != protocol as u16 {
        return Ok(()); // ip4_datagram_connect also serves raw and ping sockets
    }
    if !V6 && protocol == IPPROTO_TCP {
        // An IPv4-mapped connect of an IPv6 socket: tcp_v6_connect reports it.
        let family: u16 = read(sk, off!(sk_family))?;
        if family == AF_INET6 {
            return Ok(());
        }
    }
    let mut ev = new_event(EventKind::Connect, FLAG_KFUNC);
    ev.inode = inode_of_sk(sk)?;
    fill_from_sk(&mut ev, sk)?;
    if rc != 0 {
        connect_failed(uaddr, &mut ev, rc)?;
    } else if protocol == IPPROTO_TCP {
        if CONNECTING.insert(sk, ev, 0).is_err() {
            count(KernelCounter::ConnectUntracked);
        }
    } else {
        super::udp::mark_reported(sk, ev.protocol);
    }
    submit(&ev);
    Ok(())
}

/// A connect refused before anything left (no route, no free port, a bad
/// address): the socket may hold nothing yet, so the destination is the
/// caller's.
#[inline(always)]
fn connect_failed(uaddr: u64, ev: &mut SockEvent, rc: i32) -> Fallible<()> {
    ev.error = rc;
    let (family, addr, port) = kernel_sockaddr(uaddr)?;
    if family != 0 && ev.dst_port == 0 {
        ev.dst_addr = addr;
        ev.dst_port = port;
    }
    Ok(())
}

/// `int inet_autobind(struct sock *sk)` returned `rc`.
#[inline(always)]
pub fn on_autobind(sk: u64, rc: i32) -> Fallible<()> {
    if rc != 0 || sk == 0 || !is_inet_tcp_udp(sk)? {
        return Ok(());
    }
    let proto: u16 = read(sk, off!(sk_protocol))?;
    if proto != IPPROTO_UDP as u16 || in_connect()? {
        return Ok(());
    }
    let mut ev = new_event(EventKind::Bind, FLAG_KFUNC | FLAG_IMPLICIT);
    ev.inode = inode_of_sk(sk)?;
    fill_from_sk(&mut ev, sk)?;
    super::udp::mark_reported(sk, ev.protocol);
    submit(&ev);
    Ok(())
}

/// `void __inet_accept(struct socket *sock, struct socket *newsock, struct
/// sock *newsk)` is about to graft `newsk` onto `newsock` (the kprobe
/// variant's accept: a kprobe at entry, since a return probe on a function
/// that blocks in accept could run out of instances).
#[inline(always)]
pub fn on_accept_graft(newsock: u64, newsk: u64) -> Fallible<()> {
    if newsk == 0 || !is_inet_tcp_udp(newsk)? {
        return Ok(());
    }
    let mut ev = new_event(EventKind::Accept, FLAG_KFUNC);
    ev.inode = inode_of_socket(newsock)?;
    fill_from_sk_keep_port(&mut ev, newsk)?;
    submit(&ev);
    Ok(())
}

/// `int inet_accept(struct socket *sock, struct socket *newsock, ...)`
/// returned, with `newsock`.
#[inline(always)]
fn on_accept(newsock: u64) -> Fallible<()> {
    let Some(sk) = inet_sk_of_socket(newsock)? else {
        return Ok(()); // the accept failed: no socket was grafted
    };
    let mut ev = new_event(EventKind::Accept, FLAG_KFUNC);
    ev.inode = inode_of_sk(sk)?;
    // A connection reset before the accept has its local port released.
    fill_from_sk_keep_port(&mut ev, sk)?;
    submit(&ev);
    Ok(())
}
