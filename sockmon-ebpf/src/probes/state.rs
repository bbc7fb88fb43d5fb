//! `sock:inet_sock_set_state`, used for one thing: keeping the four-tuple of a
//! connect that fails.
//!
//! When a SYN is refused the socket goes `SYN_SENT → CLOSE` in softirq; by the
//! time `connect` returns, `tcp_done`/`tcp_disconnect` have released the port
//! and cleared the destination. The tracepoint's own fields still carry the
//! tuple, so it is kept here keyed by `struct sock *` for `sys_exit_connect`.
//! The record layout comes from the tracefs format file (see OFFSETS).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockmon_common::AF_INET;

use crate::{
    maps::{FAILED_CONNECTS, off},
    sock::Tuple,
};

const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

/// Reads a field of the record at an offset from its format file.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, ()> {
    // SAFETY: reads inside the tracepoint record.
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|_| ())
}

fn try_set_state(ctx: &TracePointContext) -> Result<(), ()> {
    let old: i32 = field(ctx, off!(tp_state_oldstate))?;
    let new: i32 = field(ctx, off!(tp_state_newstate))?;
    if old != TCP_SYN_SENT || new != TCP_CLOSE {
        return Ok(());
    }
    let sk: u64 = field(ctx, off!(tp_state_skaddr))?;
    let family: u16 = field(ctx, off!(tp_state_family))?;
    let mut t = Tuple {
        src_addr: [0; 16],
        dst_addr: [0; 16],
        src_port: field(ctx, off!(tp_state_sport))?,
        dst_port: field(ctx, off!(tp_state_dport))?,
        family,
        _pad: 0,
    };
    if family == AF_INET {
        let s: [u8; 4] = field(ctx, off!(tp_state_saddr))?;
        let d: [u8; 4] = field(ctx, off!(tp_state_daddr))?;
        t.src_addr[..4].copy_from_slice(&s);
        t.dst_addr[..4].copy_from_slice(&d);
    } else {
        t.src_addr = field(ctx, off!(tp_state_saddr_v6))?;
        t.dst_addr = field(ctx, off!(tp_state_daddr_v6))?;
    }
    let _ = FAILED_CONNECTS.insert(sk, t, 0);
    Ok(())
}
