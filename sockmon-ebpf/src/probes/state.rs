//! `tp_btf/inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`,
//! used for one thing: keeping the four-tuple of a connect that fails.
//!
//! When a SYN is refused the socket goes `SYN_SENT → CLOSE` in softirq; by the
//! time `connect` returns, `tcp_done`/`tcp_disconnect` have released the port
//! and cleared the destination, so the tuple is kept here keyed by
//! `struct sock *` for `sys_exit_connect`.
//!
//! It runs on every TCP state change (eight per connection), so the BTF
//! variant is used: its arguments are plain loads from the context, and every
//! change but `SYN_SENT → CLOSE` returns after two of them.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::maps::FAILED_CONNECTS;

const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if old == TCP_SYN_SENT && new == TCP_CLOSE {
        let _ = keep_tuple(ctx.arg::<u64>(0));
    }
    0
}

fn keep_tuple(sk: u64) -> Result<(), ()> {
    let mut t = crate::sock::tuple_of_sk(sk)?;
    // The local port as `inet_sport` holds it if `skc_num` is already cleared.
    if t.src_port == 0 {
        t.src_port = crate::sock::inet_sport(sk)?;
    }
    let _ = FAILED_CONNECTS.insert(sk, t, 0);
    Ok(())
}
