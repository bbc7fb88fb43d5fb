//! The `kfunc` mode's hooks where BPF trampolines do not load but kprobes
//! do: a kprobe at each function's entry keeps its first two arguments in
//! `KPROBE_ARGS`, and a kretprobe at its return hands them, with the return
//! code, to the same code as the fexit programs (`kfunc.rs`). The loader
//! tries these per event kind when that kind's fexit programs fail (or
//! when `SOCKMON_KFUNC_VIA=kprobe` asks for them), so both variants report
//! exactly the same records.
//!
//! Accept is different: `inet_accept` can block for as long as no client
//! comes, and a kretprobe holds one of its few return instances for every
//! call in flight, so a server with many idle acceptors would make returns
//! go missing. The kprobe sits instead at the entry of `__inet_accept`
//! (`sock, newsock, newsk`; 6.8 and later), which runs once the connection
//! is taken, just before the new socket is grafted. A kernel without that
//! function leaves accept to the socket layer in this variant.
//!
//! A return whose entry is not in the map (the probes were attached while
//! the call ran, or the entry was evicted) counts as `pending_missing`.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use sockmon_common::{IPPROTO_TCP, IPPROTO_UDP, KernelCounter};

use super::kfunc::{on_accept_graft, on_autobind, on_bind, on_connect, on_listen};
use crate::maps::{Fallible, KPROBE_ARGS, counted};

/// The map key of the current thread's call of function `fid`.
#[inline(always)]
fn key(fid: u64) -> u64 {
    ((bpf_get_current_pid_tgid() as u32 as u64) << 8) | fid
}

#[inline(always)]
fn save(ctx: &ProbeContext, fid: u64) -> Fallible<()> {
    let a0: u64 = ctx.arg(0).ok_or(KernelCounter::ReadFailed)?;
    let a1: u64 = ctx.arg(1).ok_or(KernelCounter::ReadFailed)?;
    KPROBE_ARGS
        .insert(key(fid), [a0, a1], 0)
        .map_err(|_| KernelCounter::PendingFull)
}

#[inline(always)]
fn take(fid: u64) -> Fallible<[u64; 2]> {
    let k = key(fid);
    // SAFETY: the value is copied out before the entry is removed.
    let args = unsafe { KPROBE_ARGS.get(k) }
        .copied()
        .ok_or(KernelCounter::PendingMissing)?;
    let _ = KPROBE_ARGS.remove(k);
    Ok(args)
}

/// An entry/return pair on one kernel function: `$fid` tells its calls apart
/// in the map (a `tcp_v6_connect` runs `tcp_v4_connect` inside it).
macro_rules! pair {
    ($entry:ident, $ret:ident, $fid:expr, |$a:ident, $rc:ident| $body:expr) => {
        #[kprobe]
        pub fn $entry(ctx: ProbeContext) -> u32 {
            counted(save(&ctx, $fid));
            0
        }

        #[kretprobe]
        pub fn $ret(ctx: RetProbeContext) -> u32 {
            let $rc = ctx.ret::<u64>() as i32;
            counted(take($fid).and_then(|$a| $body));
            0
        }
    };
}

pair!(kp_inet_bind, kr_inet_bind, 1, |a, rc| on_bind(
    a[0], a[1], rc
));
pair!(kp_inet6_bind, kr_inet6_bind, 2, |a, rc| on_bind(
    a[0], a[1], rc
));
pair!(kp_inet_listen, kr_inet_listen, 3, |a, rc| on_listen(
    a[0], rc
));
pair!(kp_tcp_v4_connect, kr_tcp_v4_connect, 4, |a, rc| {
    on_connect::<false>(a[0], a[1], rc, IPPROTO_TCP)
});
pair!(kp_tcp_v6_connect, kr_tcp_v6_connect, 5, |a, rc| {
    on_connect::<true>(a[0], a[1], rc, IPPROTO_TCP)
});
pair!(
    kp_ip4_datagram_connect,
    kr_ip4_datagram_connect,
    6,
    |a, rc| { on_connect::<false>(a[0], a[1], rc, IPPROTO_UDP) }
);
pair!(
    kp_ip6_datagram_connect,
    kr_ip6_datagram_connect,
    7,
    |a, rc| { on_connect::<true>(a[0], a[1], rc, IPPROTO_UDP) }
);
pair!(kp_inet_autobind, kr_inet_autobind, 8, |a, rc| on_autobind(
    a[0], rc
));

/// `__inet_accept(sock, newsock, newsk)`, at its entry.
#[kprobe]
pub fn kp_inet_accept_graft(ctx: ProbeContext) -> u32 {
    let args = (ctx.arg::<u64>(1), ctx.arg::<u64>(2));
    counted(match args {
        (Some(newsock), Some(newsk)) => on_accept_graft(newsock, newsk),
        _ => Err(KernelCounter::ReadFailed),
    });
    0
}
