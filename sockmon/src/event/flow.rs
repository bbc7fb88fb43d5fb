//! What a connection was: the counters the kernel kept for a socket, read
//! at its release, and how long it lived.
//!
//! The kernel writes them as a record of their own
//! ([`sockmon_common::flow::CloseStats`]) just before the `close` record of
//! the same socket; the engine joins the two by inode and adds the duration
//! from the connect or accept it saw (see `engine/life.rs`).

use sockmon_common::{
    IPPROTO_TCP,
    flow::{CloseStats as RawCloseStats, STATS_DROPS, STATS_TCP},
};

use std::net::SocketAddr;

use crate::clock::{Clock, WallTime};

/// `struct tcp_sock`'s counters, totals over the socket's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpCounters {
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_in: u32,
    pub segs_out: u32,
    pub total_retrans: u32,
    /// Smoothed round-trip time, µs.
    pub srtt_us: u32,
}

/// A socket's counters at release, as decoded from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseStats {
    pub time: WallTime,
    pub inode: u64,
    /// `sk_state` at release.
    pub state: u8,
    /// TCP's counters; `None` for UDP or when the kernel read failed.
    pub tcp: Option<TcpCounters>,
    /// Packets dropped on the way to the socket; `None` when unread.
    pub drops: Option<u32>,
}

impl CloseStats {
    pub fn from_raw(r: &RawCloseStats, clock: &Clock) -> Self {
        let tcp = (r.protocol == IPPROTO_TCP && r.valid & STATS_TCP != 0).then_some(TcpCounters {
            bytes_sent: r.bytes_sent,
            bytes_acked: r.bytes_acked,
            bytes_received: r.bytes_received,
            segs_in: r.segs_in,
            segs_out: r.segs_out,
            total_retrans: r.total_retrans,
            srtt_us: r.srtt_us_x8 >> 3,
        });
        Self {
            time: clock.wall(r.header.ts_ns),
            inode: r.inode,
            state: r.state,
            tcp,
            drops: (r.valid & STATS_DROPS != 0).then_some(r.drops),
        }
    }
}

/// The life of a connection, carried by its `close` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Life {
    /// From the connect or accept to the release, ns; `None` when neither
    /// was seen and the socket was not in the start-up snapshot.
    pub duration_ns: Option<u64>,
    /// The socket predates sockmon (known from the snapshot): the duration
    /// counts from the snapshot, so the real one is longer.
    pub duration_is_lower_bound: bool,
    /// `sk_state` at release; `None` when the stats record was lost.
    pub final_state: Option<u8>,
    pub tcp: Option<TcpCounters>,
    pub drops: Option<u32>,
    /// `flow` records: the configured polling interval, ms.
    pub interval_ms: Option<u64>,
}

/// The kernel's name of a TCP state (`include/net/tcp_states.h`), lower case.
pub const fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "established",
        2 => "syn_sent",
        3 => "syn_recv",
        4 => "fin_wait1",
        5 => "fin_wait2",
        6 => "time_wait",
        7 => "close",
        8 => "close_wait",
        9 => "last_ack",
        10 => "listen",
        11 => "closing",
        12 => "new_syn_recv",
        13 => "bound_inactive",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockmon_common::{EventKind, Header, IPPROTO_UDP};

    fn raw(protocol: u8, valid: u32) -> RawCloseStats {
        RawCloseStats {
            header: Header {
                ts_ns: 10,
                tgid: 1,
                tid: 1,
                kind: EventKind::CloseStats as u16,
                flags: 0,
                _pad: 0,
            },
            inode: 77,
            bytes_sent: 1000,
            bytes_acked: 1001,
            bytes_received: 2000,
            segs_in: 5,
            segs_out: 6,
            total_retrans: 2,
            srtt_us_x8: 8 * 125,
            drops: 3,
            valid,
            state: 1,
            protocol,
            _pad: [0; 6],
        }
    }

    #[test]
    fn tcp_counters_are_taken_and_srtt_unshifted() {
        let s = CloseStats::from_raw(
            &raw(IPPROTO_TCP, STATS_TCP | STATS_DROPS),
            &Clock::with_offset(5),
        );
        let t = s.tcp.unwrap();
        assert_eq!(
            (t.bytes_sent, t.bytes_acked, t.bytes_received),
            (1000, 1001, 2000)
        );
        assert_eq!(
            (t.segs_in, t.segs_out, t.total_retrans, t.srtt_us),
            (5, 6, 2, 125)
        );
        assert_eq!((s.inode, s.state, s.drops, s.time.0), (77, 1, Some(3), 15));
    }

    #[test]
    fn unread_groups_are_none() {
        let s = CloseStats::from_raw(&raw(IPPROTO_TCP, 0), &Clock::with_offset(0));
        assert_eq!((s.tcp, s.drops), (None, None));
        let u = CloseStats::from_raw(
            &raw(IPPROTO_UDP, STATS_TCP | STATS_DROPS),
            &Clock::with_offset(0),
        );
        assert_eq!((u.tcp, u.drops), (None, Some(3)));
    }

    #[test]
    fn state_names() {
        assert_eq!(tcp_state_name(1), "established");
        assert_eq!(tcp_state_name(8), "close_wait");
        assert_eq!(tcp_state_name(200), "unknown");
    }
}

/// The Community ID (v1, seed 0, base64) of a connection: the flow hash
/// Zeek, Suricata, Elastic and packet tools compute, so sockmon's records
/// join with theirs (<https://github.com/corelight/community-id-spec>).
/// Endpoints are ordered by the hash itself, so either side's view gives the
/// same id. IPv4-mapped IPv6 addresses are hashed as the IPv4 addresses they
/// are (what a capture of the wire shows). `None` without a remote side.
///
/// Computed by the `community-id` crate, which passes the spec's baselines
/// (tests below).
pub fn community_id(proto: super::Proto, src: SocketAddr, dst: SocketAddr) -> Option<String> {
    community_id_seeded(0, proto, src, dst)
}

fn community_id_seeded(
    seed: u16,
    proto: super::Proto,
    src: SocketAddr,
    dst: SocketAddr,
) -> Option<String> {
    if dst.port() == 0 || dst.ip().is_unspecified() {
        return None;
    }
    let (s, d) = (super::unmap(src.ip()), super::unmap(dst.ip()));
    if s.is_ipv4() != d.is_ipv4() {
        return None;
    }
    let number = match proto {
        super::Proto::Tcp => IPPROTO_TCP,
        super::Proto::Udp => sockmon_common::IPPROTO_UDP,
    };
    community_id::calculate_community_id(
        seed,
        s,
        d,
        Some(src.port()),
        Some(dst.port()),
        number,
        false,
    )
    .ok()
}

#[cfg(test)]
mod community_id_tests {
    use super::*;
    use crate::event::Proto;

    fn id(seed: u16, proto: Proto, src: &str, dst: &str) -> Option<String> {
        community_id_seeded(seed, proto, src.parse().unwrap(), dst.parse().unwrap())
    }

    /// The spec's published baselines (`baseline/baseline_deflt.json` and
    /// `baseline_seed1.json` of corelight/community-id-spec), TCP and UDP
    /// entries, both directions.
    #[test]
    fn matches_the_spec_baselines() {
        let cases = [
            (
                0,
                Proto::Tcp,
                "128.232.110.120:34855",
                "66.35.250.204:80",
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            ),
            (
                1,
                Proto::Tcp,
                "128.232.110.120:34855",
                "66.35.250.204:80",
                "1:3V71V58M3Ksw/yuFALMcW0LAHvc=",
            ),
            (
                0,
                Proto::Tcp,
                "[2001:470:e5bf:dead:4957:2174:e82c:4887]:63943",
                "[2607:f8b0:400c:c03::1a]:25",
                "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
            ),
            (
                1,
                Proto::Tcp,
                "[2001:470:e5bf:dead:4957:2174:e82c:4887]:63943",
                "[2607:f8b0:400c:c03::1a]:25",
                "1:eJYTW6AOzFLlSUoESovMjnu7rMw=",
            ),
            (
                0,
                Proto::Udp,
                "192.168.1.52:54585",
                "8.8.8.8:53",
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            ),
            (
                1,
                Proto::Udp,
                "192.168.1.52:54585",
                "8.8.8.8:53",
                "1:Q9We8WO3piVF8yEQBNJF4uiSVrI=",
            ),
        ];
        for (seed, proto, a, b, want) in cases {
            assert_eq!(id(seed, proto, a, b).as_deref(), Some(want), "{a} -> {b}");
            assert_eq!(id(seed, proto, b, a).as_deref(), Some(want), "{b} -> {a}");
        }
    }

    #[test]
    fn ipv4_mapped_hashes_as_ipv4_and_no_peer_has_none() {
        assert_eq!(
            id(
                0,
                Proto::Tcp,
                "[::ffff:128.232.110.120]:34855",
                "[::ffff:66.35.250.204]:80"
            )
            .as_deref(),
            Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=")
        );
        assert_eq!(
            id(
                0,
                Proto::Tcp,
                "[::ffff:128.232.110.120]:34855",
                "66.35.250.204:80"
            )
            .as_deref(),
            Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=")
        );
        assert_eq!(id(0, Proto::Tcp, "10.0.0.1:80", "0.0.0.0:0"), None);
        assert_eq!(id(0, Proto::Udp, "[::]:53", "[::]:0"), None);
    }
}

/// What a process became at exec, as the kernel captured it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecCtx {
    pub pid: u32,
    pub ppid: u32,
    pub start_ns: u64,
    /// The filename exec was given (made absolute against the process's
    /// working directory by the engine when it was relative and still can be).
    pub filename: Vec<u8>,
    pub filename_truncated: bool,
    /// argv; `None` when it could not be read.
    pub args: Option<Vec<Vec<u8>>>,
    pub args_truncated: bool,
    /// Device (kernel `s_dev` encoding) and inode of the executable; `None` if unread.
    pub exe_file: Option<(u32, u64)>,
}

impl ExecCtx {
    pub fn from_raw(r: &sockmon_common::flow::ExecInfo) -> Self {
        use sockmon_common::flow::{
            EXEC_ARGS_TRUNCATED, EXEC_ARGS_UNREAD, EXEC_FILE_UNREAD, EXEC_FILENAME_TRUNCATED,
        };
        let name_len = (r.filename_len as usize).min(r.filename.len());
        let args_len = (r.args_len as usize).min(r.args.len());
        let args = (r.flags & EXEC_ARGS_UNREAD == 0).then(|| {
            let block = &r.args[..args_len];
            let block = block.strip_suffix(&[0]).unwrap_or(block);
            block.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
        });
        Self {
            pid: r.pid,
            ppid: r.ppid,
            start_ns: r.start_ns,
            filename: r.filename[..name_len].to_vec(),
            filename_truncated: r.flags & EXEC_FILENAME_TRUNCATED != 0,
            args,
            args_truncated: r.flags & EXEC_ARGS_TRUNCATED != 0,
            exe_file: (r.flags & EXEC_FILE_UNREAD == 0).then_some((r.exe_dev, r.exe_ino)),
        }
    }
}

/// Where an event's `exe` came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExeSource {
    /// `/proc/PID/exe`, read while the process lived: canonical.
    ProcExe,
    /// The filename exec was given (absolute against the working directory
    /// when it was relative): what the kernel saw, not resolved through links.
    ExecFilename,
}

impl ExeSource {
    pub const fn name(self) -> &'static str {
        match self {
            Self::ProcExe => "proc_exe",
            Self::ExecFilename => "exec_filename",
        }
    }
}

/// A container a cgroup belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// `docker`, `containerd`, `crio` or `podman`.
    pub runtime: &'static str,
    /// The full 64-hex id.
    pub id: String,
    /// Podman run by a user (under `user@UID.service`).
    pub rootless: bool,
}

impl Container {
    /// The short form for people: 12 hex digits.
    pub fn short(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// Who the acting process was, at the time of the event.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProcCtx {
    pub exe: Option<(Vec<u8>, ExeSource)>,
    pub args: Option<Vec<Vec<u8>>>,
    pub args_truncated: bool,
    pub ppid: Option<u32>,
    /// The systemd unit (user-manager units as `user@UID:name`).
    pub unit: Option<String>,
    pub container: Option<Container>,
    /// Something could not be read (`metadata: partial`).
    pub partial: bool,
}
