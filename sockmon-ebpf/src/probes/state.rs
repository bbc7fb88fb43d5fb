//! `tp_btf/inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`:
//! the outcome of every TCP connect.
//!
//! A connect's outcome is decided in softirq (the SYN-ACK, a RST, an ICMP
//! error) or by a timer (the SYN retries running out), where `current` is
//! nobody in particular. The connect's record, kept in `CONNECTING` by
//! `sock_ops` when the SYN was about to leave, carries the connecting
//! thread's identity and the full four-tuple; here it becomes a
//! `ConnectResult` with the error (`sk_err`: ECONNREFUSED, ETIMEDOUT,
//! EHOSTUNREACH, ...; ECONNABORTED when the owner closed the socket first)
//! and the time since the attempt. This works the same for blocking and
//! non-blocking connects, io_uring and TCP Fast Open.
//!
//! In the `syscalls` mode it also keeps the four-tuple of a refused connect
//! for `sys_exit_connect` (by then the kernel released the port and cleared
//! the destination).
//!
//! It runs on every TCP state change (eight per connection), so the BTF
//! variant is used: its arguments are plain loads from the context, and every
//! change but those out of `SYN_SENT` returns after two of them.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use sockmon_common::EventKind;

use crate::{
    emit::submit,
    maps::{CONNECTING, FAILED_CONNECTS, Fallible, counted, syscalls_mode},
    sock::sk_err,
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const ECONNABORTED: i32 = 103;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if old != TCP_SYN_SENT || (new != TCP_CLOSE && new != TCP_ESTABLISHED) {
        return 0;
    }
    let sk = ctx.arg::<u64>(0);
    if new == TCP_CLOSE && syscalls_mode() {
        counted(keep_tuple(sk));
    }
    counted(connect_result(sk, new));
    0
}

fn connect_result(sk: u64, new: i32) -> Fallible<()> {
    // SAFETY: the value is copied out before the entry is removed.
    let Some(mut ev) = (unsafe { CONNECTING.get(sk) }).copied() else {
        return Ok(()); // a connect from before the programs were attached
    };
    let _ = CONNECTING.remove(sk);
    // SAFETY: helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    ev.header.kind = EventKind::ConnectResult as u16;
    ev.aux = now.saturating_sub(ev.header.ts_ns);
    ev.header.ts_ns = now;
    ev.state = new as u8;
    ev.error = if new == TCP_ESTABLISHED {
        0
    } else {
        match sk_err(sk)? {
            0 => -ECONNABORTED,
            e => -e,
        }
    };
    submit(&ev);
    Ok(())
}

fn keep_tuple(sk: u64) -> Fallible<()> {
    let mut t = crate::sock::tuple_of_sk(sk)?;
    // The local port as `inet_sport` holds it if `skc_num` is already cleared.
    if t.src_port == 0 {
        t.src_port = crate::sock::inet_sport(sk)?;
    }
    let _ = FAILED_CONNECTS.insert(sk, t, 0);
    Ok(())
}
