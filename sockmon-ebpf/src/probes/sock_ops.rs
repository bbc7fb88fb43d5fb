//! listen and TCP connect at the socket layer: `sock_ops` (root cgroup v2).
//!
//! - `BPF_SOCK_OPS_TCP_LISTEN_CB` runs in `__inet_listen_sk` once the socket
//!   listens, in the listening task, with the final port: also for a
//!   `listen()` without `bind()` (the kernel picks the port; the state
//!   tracepoint still sees port 0 then), and for io_uring's `IORING_OP_LISTEN`.
//! - `BPF_SOCK_OPS_TCP_CONNECT_CB` runs first thing in `tcp_connect()`, after
//!   the source port is chosen and before the SYN leaves, in the connecting
//!   thread, for `connect(2)`, io_uring's `IORING_OP_CONNECT` and TCP Fast
//!   Open's `sendto(MSG_FASTOPEN)` alike. Its record is also kept in
//!   `CONNECTING` for the outcome (`state.rs`), in every attach mode.
//!
//! Where a kernel-function hook reports one of these kinds (`kfunc.rs`,
//! the `KFUNC_KINDS` global), that op returns at once.
//!
//! Neither needs `bpf_sock_ops_cb_flags_set`: the kernel calls both
//! unconditionally. Every other op returns after one load. Identity is read
//! from the task (`new_event_from_task`): some kernels refuse the
//! current-task helpers in `sock_ops`.

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB},
    macros::sock_ops,
    programs::SockOpsContext,
};
use sockmon_common::{EventKind, KernelCounter, kfunc_kinds};

use super::origin::{Op, reported_by_syscalls};
use crate::{
    emit::{new_event_from_task, submit},
    maps::{CONNECTING, Fallible, count, counted, kfunc_reports},
    sock::{fill_from_sk, inode_of_sk, launder},
};

#[sock_ops]
pub fn sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_LISTEN_CB => {
            counted(try_listen(&ctx));
        }
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            counted(try_connect(&ctx));
        }
        _ => {}
    }
    1
}

/// The context's socket as a plain address (`PTR_TO_SOCKET` forbids arithmetic).
#[inline(always)]
fn sk_of(ctx: &SockOpsContext) -> Fallible<u64> {
    // SAFETY: a load from the context the verifier checks.
    let sk = launder(unsafe { (*ctx.ops).__bindgen_anon_2.sk } as u64);
    if sk == 0 {
        Err(KernelCounter::ReadFailed)
    } else {
        Ok(sk)
    }
}

fn try_listen(ctx: &SockOpsContext) -> Fallible<()> {
    if kfunc_reports(kfunc_kinds::LISTEN) || reported_by_syscalls(Op::Listen)? {
        return Ok(());
    }
    let sk = sk_of(ctx)?;
    let mut ev = new_event_from_task(EventKind::Listen, 0);
    ev.inode = inode_of_sk(sk)?;
    fill_from_sk(&mut ev, sk)?;
    submit(&ev);
    Ok(())
}

fn try_connect(ctx: &SockOpsContext) -> Fallible<()> {
    if kfunc_reports(kfunc_kinds::CONNECT) {
        return Ok(()); // `kfunc.rs` reports it and keeps it for the outcome
    }
    let sk = sk_of(ctx)?;
    let mut ev = new_event_from_task(EventKind::Connect, 0);
    ev.inode = inode_of_sk(sk)?;
    fill_from_sk(&mut ev, sk)?;
    if CONNECTING.insert(sk, ev, 0).is_err() {
        count(KernelCounter::ConnectUntracked);
    }
    if reported_by_syscalls(Op::Connect)? {
        return Ok(());
    }
    submit(&ev);
    Ok(())
}
