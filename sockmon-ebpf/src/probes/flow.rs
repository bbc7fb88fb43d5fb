//! What a connection was, read from its socket as it is released.
//!
//! Called from `cgroup/sock_release` (`close.rs`) before the `close` record
//! is written: the `tcp_sock` still holds every counter then (`tcp_close`
//! runs after this hook). The record goes out first so user space has it in
//! hand when the `close` record of the same inode arrives.
//!
//! TCP: `bytes_sent`, `bytes_acked`, `bytes_received`, `segs_in`,
//! `segs_out`, `total_retrans`, `srtt_us` (all of `struct tcp_sock`, see
//! `include/linux/tcp.h`). UDP keeps no per-socket byte counts; both keep
//! `sk_drops` (6.18 adds per-NUMA drop counters behind `sk_drop_counters`).

use sockmon_common::{
    IPPROTO_TCP, KernelCounter,
    flow::{ABSENT, CloseStats, STATS_DROPS, STATS_TCP},
};

use crate::{
    emit::{header, submit},
    maps::{Fallible, count, flow_off},
    sock::read,
};

/// Writes the [`CloseStats`] record of `sk` (inode `inode`, state `state`).
#[inline(always)]
pub fn close_stats(sk: u64, protocol: u8, state: u8, inode: u64) {
    let mut r = CloseStats {
        header: header(sockmon_common::EventKind::CloseStats, 0),
        inode,
        bytes_sent: 0,
        bytes_acked: 0,
        bytes_received: 0,
        segs_in: 0,
        segs_out: 0,
        total_retrans: 0,
        srtt_us_x8: 0,
        drops: 0,
        valid: 0,
        state,
        protocol,
        _pad: [0; 6],
    };
    // A counter that cannot be read leaves its `valid` bit clear (and is
    // counted); the record still goes out for the rest.
    if protocol == IPPROTO_TCP {
        match read_tcp(sk, &mut r) {
            Ok(()) => r.valid |= STATS_TCP,
            Err(c) => count(c),
        }
    }
    match read_drops(sk) {
        Ok(drops) => {
            r.drops = drops;
            r.valid |= STATS_DROPS;
        }
        Err(c) => count(c),
    }
    submit(&r);
}

#[inline(always)]
fn read_tcp(sk: u64, r: &mut CloseStats) -> Fallible<()> {
    r.bytes_sent = read(sk, flow_off!(tcp_bytes_sent))?;
    r.bytes_acked = read(sk, flow_off!(tcp_bytes_acked))?;
    r.bytes_received = read(sk, flow_off!(tcp_bytes_received))?;
    r.segs_in = read(sk, flow_off!(tcp_segs_in))?;
    r.segs_out = read(sk, flow_off!(tcp_segs_out))?;
    r.total_retrans = read(sk, flow_off!(tcp_total_retrans))?;
    r.srtt_us_x8 = read(sk, flow_off!(tcp_srtt_us))?;
    Ok(())
}

#[inline(always)]
fn read_drops(sk: u64) -> Fallible<u32> {
    let mut drops: u32 = read(sk, flow_off!(sk_drops))?;
    let counters_off: u32 = flow_off!(sk_drop_counters);
    if counters_off != ABSENT {
        let counters: u64 = read(sk, counters_off)?;
        if counters != 0 {
            let d0: u32 = read(counters, flow_off!(ndc_drops0))?;
            let d1: u32 = read(counters, flow_off!(ndc_drops1))?;
            drops = drops.wrapping_add(d0).wrapping_add(d1);
        }
    }
    if drops > i32::MAX as u32 {
        // An atomic_t never legitimately goes negative: a misread.
        return Err(KernelCounter::ReadFailed);
    }
    Ok(drops)
}
