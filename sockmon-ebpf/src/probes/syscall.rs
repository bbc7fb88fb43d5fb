//! Shared plumbing for `syscalls:sys_enter_*` / `sys_exit_*` pairs.
//!
//! The entry resolves the descriptor to an inet socket (skipping everything
//! else, e.g. Unix sockets, before any state is kept) and saves it with the
//! caller's `sockaddr` in [`PENDING`]; the exit takes it back and reads the
//! result. Offsets of the tracepoint record fields come from tracefs via
//! [`crate::maps::OFFSETS`].

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    programs::TracePointContext,
};
use sockmon_common::KernelCounter;

use crate::{
    maps::{Fallible, PENDING, Pending, count, off},
    sock::inet_sock_of_fd,
};

/// Argument `n` of a `sys_enter_*` record (each argument is 8 bytes wide).
#[inline(always)]
pub fn arg(ctx: &TracePointContext, n: u32) -> Fallible<u64> {
    // SAFETY: reads inside the tracepoint record at an offset from its format file.
    unsafe { ctx.read_at::<u64>((off!(tp_sys_enter_args) + 8 * n) as usize) }
        .map_err(|_| KernelCounter::RecordReadFailed)
}

/// `ret` of a `sys_exit_*` record.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> Fallible<i64> {
    // SAFETY: reads inside the tracepoint record at an offset from its format file.
    unsafe { ctx.read_at::<i64>(off!(tp_sys_exit_ret) as usize) }
        .map_err(|_| KernelCounter::RecordReadFailed)
}

/// Entry half: remember the socket behind `fd` (and the caller's sockaddr,
/// when `uaddr` is non-null) if it is an inet TCP/UDP socket.
///
/// Every entry leaves an entry for its exit, also one it skips (any other
/// kind of descriptor) or could not resolve (that failure is returned and
/// counted once, here): a [`Pending`] with `sk == 0`. So an exit that finds
/// nothing knows its entry was missed, and counts `pending_missing`.
#[inline(always)]
pub fn enter(fd: u64, uaddr: u64, addrlen: u64) -> Fallible<()> {
    let resolved = inet_sock_of_fd(fd);
    let Ok(Some(sock)) = resolved else {
        // A full map loses no inet event here; the exit counts the miss.
        let _ = PENDING.insert(bpf_get_current_pid_tgid(), Pending::SKIP, 0);
        return resolved.map(|_| ());
    };
    let mut pending = Pending {
        sk: sock.sk,
        inode: sock.inode,
        addr: [0; 28],
        _pad: 0,
    };
    if uaddr != 0 {
        // Fixed-size reads only (the verifier wants constant sizes): a
        // sockaddr_in6 is 28 bytes, a sockaddr_in 16.
        let read = if addrlen >= 28 {
            // SAFETY: user memory is read through the helper, which checks it.
            unsafe { bpf_probe_read_user(uaddr as *const [u8; 28]) }
        } else if addrlen >= 16 {
            // SAFETY: as above.
            unsafe { bpf_probe_read_user(uaddr as *const [u8; 16]) }.map(|short| {
                let mut a = [0u8; 28];
                a[..16].copy_from_slice(&short);
                a
            })
        } else {
            Ok([0; 28])
        };
        match read {
            Ok(a) => pending.addr = a,
            Err(_) => count(KernelCounter::ReadUserFailed),
        }
    }
    // BPF_ANY: a stale entry of this thread (from a missed exit) is replaced.
    if PENDING
        .insert(bpf_get_current_pid_tgid(), pending, 0)
        .is_err()
    {
        count(KernelCounter::PendingFull);
    }
    Ok(())
}

/// Exit half: the saved entry of this thread, removed from the map.
/// `Ok(None)` when the entry skipped the descriptor (not an inet socket, or
/// one it could not resolve); `pending_missing` when there was no entry.
#[inline(always)]
pub fn take() -> Fallible<Option<Pending>> {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = unsafe { PENDING.get(key) }.copied() else {
        return Err(KernelCounter::PendingMissing);
    };
    let _ = PENDING.remove(key);
    Ok((pending.sk != 0).then_some(pending))
}

/// Decodes the family, address and port of a saved `sockaddr_in`/`sockaddr_in6`
/// into (family, addr, port). Family 0 when the caller passed none.
#[inline(always)]
pub fn sockaddr(a: &[u8; 28]) -> (u16, [u8; 16], u16) {
    let family = u16::from_ne_bytes([a[0], a[1]]);
    let port = u16::from_be_bytes([a[2], a[3]]);
    let mut addr = [0u8; 16];
    if family == sockmon_common::AF_INET {
        addr[..4].copy_from_slice(&a[4..8]);
    } else if family == sockmon_common::AF_INET6 {
        addr.copy_from_slice(&a[8..24]);
    }
    (family, addr, port)
}
