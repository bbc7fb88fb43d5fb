//! Shared plumbing for `syscalls:sys_enter_*` / `sys_exit_*` pairs.
//!
//! The entry resolves the descriptor to an inet socket (skipping everything
//! else, e.g. Unix sockets, before any state is kept) and saves it with the
//! caller's `sockaddr` in [`PENDING`]; the exit takes it back and reads the
//! result. Offsets of the tracepoint record fields come from tracefs via
//! [`crate::maps::OFFSETS`].
//!
//! [`PENDING`] is shared by every user, and a thread blocked in `connect()`
//! holds its entry for as long as it blocks, so each uid gets a share
//! ([`PENDING_PER_UID`], counted in [`PENDING_BY_UID`]): a user with more
//! threads than that in these syscalls loses its own further events
//! (`pending_user_full`), and nobody else's. The count is checked, then
//! added to atomically; threads of one uid entering on several CPUs at the
//! same instant may pass the check together, which overshoots the share by
//! at most one entry per CPU, never more.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_user},
    programs::TracePointContext,
};
use sockmon_common::KernelCounter;

use crate::{
    maps::{Fallible, PENDING, PENDING_BY_UID, PENDING_PER_UID, Pending, count, off, read_global},
    sock::inet_sock_of_fd,
};

/// `BPF_NOEXIST`: insert only if the key is new.
const BPF_NOEXIST: u64 = 1;

/// The share count of `uid`: its map slot, read whole and added to atomically.
#[inline(always)]
fn share_of(uid: u32) -> Option<Share> {
    PENDING_BY_UID.get_ptr_mut(uid).map(Share)
}

/// A uid's slot in [`PENDING_BY_UID`].
struct Share(*mut u64);

impl Share {
    /// An aligned 8-byte load is whole on BPF (the backend has no atomic
    /// load to select; a volatile one is the same instruction).
    #[inline(always)]
    fn load(&self) -> u64 {
        // SAFETY: the pointer is to a u64 value of the map, aligned and live
        // for this program's run (the map outlives it).
        unsafe { core::ptr::read_volatile(self.0) }
    }

    /// Adds `n` (wrapping: `u64::MAX` takes one away); the result is not
    /// read, so the add is the one instruction every kernel has.
    #[inline(always)]
    fn add(&self, n: u64) {
        // SAFETY: as in `load`.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(self.0, n) };
    }
}

/// Takes one of `uid`'s shares of [`PENDING`]; `false` when they are used up.
#[inline(always)]
fn claim(uid: u32) -> bool {
    let limit = read_global(&raw const PENDING_PER_UID);
    if let Some(n) = share_of(uid) {
        if n.load() >= limit {
            return false;
        }
        n.add(1);
        return true;
    }
    if PENDING_BY_UID.insert(uid, 1u64, BPF_NOEXIST).is_ok() {
        return true;
    }
    // Another thread of this uid made the slot meanwhile (or the map could
    // not take it: then the uid goes unbounded rather than unserved).
    if let Some(n) = share_of(uid) {
        n.add(1);
    }
    true
}

/// Gives back one of `uid`'s shares.
#[inline(always)]
fn release(uid: u32) {
    if let Some(n) = share_of(uid) {
        // Zero only when the LRU dropped the uid's slot and made it anew
        // while entries were held: never below zero.
        if n.load() > 0 {
            n.add(u64::MAX);
        }
    }
}

/// Saves `pending` for this thread's exit, within its uid's share.
/// `Err(PendingUserFull)` when the share is used up, `Err(PendingFull)`
/// when the map is full; either way the exit finds nothing (and counts
/// `pending_missing`).
#[inline(always)]
fn save(mut pending: Pending) -> Fallible<()> {
    let key = bpf_get_current_pid_tgid();
    // A stale entry of this thread (from a missed exit) already holds a
    // share; BPF_ANY replaces it in place.
    // SAFETY: the entry's uid is copied out at once; only this thread
    // writes its own key.
    let stale = unsafe { PENDING.get(key) }.map(|p| p.uid);
    let uid = match stale {
        Some(uid) => uid,
        None => {
            let uid = bpf_get_current_uid_gid() as u32;
            if !claim(uid) {
                return Err(KernelCounter::PendingUserFull);
            }
            uid
        }
    };
    pending.uid = uid;
    if PENDING.insert(key, pending, 0).is_err() {
        if stale.is_none() {
            release(uid);
        }
        return Err(KernelCounter::PendingFull);
    }
    Ok(())
}

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
        // A refusal loses no inet event here; the exit counts the miss.
        let _ = save(Pending::SKIP);
        return resolved.map(|_| ());
    };
    let mut pending = Pending {
        sk: sock.sk,
        inode: sock.inode,
        addr: [0; 28],
        uid: 0,
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
    // A refused entry is counted here, while the descriptor's own failure
    // (above) is what this function returns.
    if let Err(e) = save(pending) {
        count(e);
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
    if PENDING.remove(key).is_ok() {
        release(pending.uid);
    }
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
