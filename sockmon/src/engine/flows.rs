//! Periodic flow updates (opt-in): every `interval`, the TCP counters of
//! every live connection, from sock_diag with `INET_DIAG_INFO` (the kernel's
//! `struct tcp_info`), never from per-packet hooks. The state task turns each
//! sample into a `flow` record carrying the *deltas* since the previous
//! record of that socket (the first record of a socket: since it began) and
//! the current smoothed RTT.
//!
//! The dump is the kernel's own: request bytes come from
//! `snapshot::diag::request` (read-only reuse) with the `INET_DIAG_INFO`
//! extension bit set; the attributes are parsed here. Every network
//! namespace is polled (the daemon's own, then each other one a process or
//! an `ip netns` mount is in), each through a socket that reads only the
//! kernel's datagrams, within the snapshot's dump deadline: a namespace's
//! owner can neither forge samples nor stall the rounds.

use std::{collections::HashMap, io};

use sockmon_common::{AF_INET, AF_INET6};

use crate::{
    event::{Proto, flow::TcpCounters},
    snapshot::{self, diag},
};

/// `INET_DIAG_INFO` (`<linux/inet_diag.h>`): the attribute carrying `tcp_info`.
const INET_DIAG_INFO: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const DIAG_MSG_LEN: usize = 72;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// TCP states not worth a flow record: LISTEN (10), TIME_WAIT (6), CLOSE (7).
const SKIP_STATES: [u8; 3] = [10, 6, 7];

/// One live TCP socket's counters, totals since it began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSample {
    pub inode: u64,
    pub state: u8,
    pub counters: TcpCounters,
}

/// Dumps every TCP socket of the calling thread's network namespace,
/// through the snapshot's sock_diag socket: connected to the kernel, only
/// the kernel's datagrams read (forged ones are dropped), each
/// dump within `snapshot.dump_deadline_ms`.
pub fn poll() -> io::Result<Vec<FlowSample>> {
    let mut diag = snapshot::diag_socket().map_err(io::Error::other)?;
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        diag.dump_with(
            family,
            Proto::Tcp,
            |req| req[NLMSG_HDRLEN + 2] = 1 << (INET_DIAG_INFO - 1), // idiag_ext
            |buf, seq| parse(buf, seq, &mut out),
        )
        .map_err(io::Error::other)?;
    }
    Ok(out)
}

/// What one round found: the samples of every namespace that answered, and
/// the namespaces that did not.
#[derive(Debug, Default)]
pub struct Polled {
    pub samples: Vec<FlowSample>,
    /// Namespaces that could not be entered or dumped (inode, why).
    pub skipped: Vec<(u32, String)>,
}

/// [`poll`] in the daemon's own namespace and in every other one a process
/// or an `ip netns` mount is in (entered on a thread of their own, as the
/// snapshot does). Socket inodes are unique across namespaces, so the
/// samples of all of them go into one list.
pub fn poll_all() -> io::Result<Polled> {
    let mut p = Polled {
        samples: poll()?,
        skipped: Vec::new(),
    };
    let own = snapshot::netns::current()?;
    let pids = crate::procfs::pids()?;
    let targets = snapshot::netns::enumerate(&pids, own);
    for o in snapshot::netns::in_each(&targets, |_| poll().map_err(|e| e.to_string()))? {
        match o {
            snapshot::netns::Outcome::Done(v) => p.samples.extend(v),
            snapshot::netns::Outcome::Skipped(ino, why) => p.skipped.push((ino, why)),
        }
    }
    Ok(p)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses one datagram; true when the dump is done.
fn parse(buf: &[u8], seq: u32, out: &mut Vec<FlowSample>) -> Result<bool, diag::DiagError> {
    let bad = diag::DiagError::Malformed;
    let mut at = 0;
    while buf.len() - at >= NLMSG_HDRLEN {
        let len = u32_at(buf, at) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - at {
            return Err(bad("netlink message length out of bounds"));
        }
        let kind = u16_at(buf, at + 4);
        let msg_seq = u32_at(buf, at + 8);
        let payload = &buf[at + NLMSG_HDRLEN..at + len];
        at += len.next_multiple_of(4).min(buf.len() - at);
        if msg_seq != seq {
            continue;
        }
        match i32::from(kind) {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                let errno = payload.get(..4).map(|b| -(u32_at(b, 0) as i32));
                match errno {
                    Some(0) => {}
                    Some(e) => return Err(diag::DiagError::Kernel(e)),
                    None => return Err(bad("short NLMSG_ERROR")),
                }
            }
            _ if kind == SOCK_DIAG_BY_FAMILY => {
                if let Some(s) = sample(payload) {
                    out.push(s);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// One `inet_diag_msg` with its `INET_DIAG_INFO` attribute.
fn sample(p: &[u8]) -> Option<FlowSample> {
    if p.len() < DIAG_MSG_LEN {
        return None;
    }
    let state = p[1];
    let inode = u64::from(u32_at(p, 68));
    if inode == 0 || SKIP_STATES.contains(&state) {
        return None;
    }
    let mut at = DIAG_MSG_LEN;
    while p.len() >= at + 4 {
        let len = u16_at(p, at) as usize;
        let kind = u16_at(p, at + 2);
        if len < 4 || at + len > p.len() {
            return None;
        }
        if kind == INET_DIAG_INFO {
            return Some(FlowSample {
                inode,
                state,
                counters: tcp_info(&p[at + 4..at + len])?,
            });
        }
        at += len.next_multiple_of(4);
    }
    None
}

/// The counters of a `struct tcp_info` (as long as the kernel sent it).
fn tcp_info(b: &[u8]) -> Option<TcpCounters> {
    use std::mem::offset_of;
    type I = libc::tcp_info;
    let u32_of = |off: usize| b.get(off..off + 4).map(|_| u32_at(b, off));
    Some(TcpCounters {
        bytes_sent: u64_at(b, offset_of!(I, tcpi_bytes_sent))?,
        bytes_acked: u64_at(b, offset_of!(I, tcpi_bytes_acked))?,
        bytes_received: u64_at(b, offset_of!(I, tcpi_bytes_received))?,
        segs_in: u32_of(offset_of!(I, tcpi_segs_in))?,
        segs_out: u32_of(offset_of!(I, tcpi_segs_out))?,
        total_retrans: u32_of(offset_of!(I, tcpi_total_retrans))?,
        srtt_us: u32_of(offset_of!(I, tcpi_rtt))?,
    })
}

/// Previous totals per socket, to turn samples into deltas.
#[derive(Debug, Default)]
pub struct Deltas {
    last: HashMap<u64, TcpCounters>,
}

impl Deltas {
    /// The deltas of `s` since its previous sample (or since it began), and
    /// forgets sockets absent from this round (`alive` is every inode sampled).
    pub fn delta(&mut self, s: &FlowSample) -> TcpCounters {
        let c = s.counters;
        let prev = self.last.insert(s.inode, c).unwrap_or_default();
        TcpCounters {
            bytes_sent: c.bytes_sent.saturating_sub(prev.bytes_sent),
            bytes_acked: c.bytes_acked.saturating_sub(prev.bytes_acked),
            bytes_received: c.bytes_received.saturating_sub(prev.bytes_received),
            segs_in: c.segs_in.saturating_sub(prev.segs_in),
            segs_out: c.segs_out.saturating_sub(prev.segs_out),
            total_retrans: c.total_retrans.saturating_sub(prev.total_retrans),
            srtt_us: c.srtt_us,
        }
    }

    /// The totals of connection `inode` at its latest sample.
    pub fn totals(&self, inode: u64) -> Option<&TcpCounters> {
        self.last.get(&inode)
    }

    pub fn retain(&mut self, alive: &std::collections::HashSet<u64>) {
        self.last.retain(|i, _| alive.contains(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(sent: u64) -> TcpCounters {
        TcpCounters {
            bytes_sent: sent,
            bytes_acked: sent + 1,
            bytes_received: 7,
            segs_in: 3,
            segs_out: 4,
            total_retrans: 0,
            srtt_us: 40,
        }
    }

    #[test]
    fn deltas_since_previous_sample_and_first_is_since_start() {
        let mut d = Deltas::default();
        let s = |sent| FlowSample {
            inode: 9,
            state: 1,
            counters: counters(sent),
        };
        assert_eq!(d.delta(&s(100)).bytes_sent, 100);
        let second = d.delta(&s(250));
        assert_eq!(
            (second.bytes_sent, second.bytes_received, second.srtt_us),
            (150, 0, 40)
        );
        d.retain(&Default::default());
        assert_eq!(d.delta(&s(300)).bytes_sent, 300);
    }

    /// Cost of one polling round with 10k live loopback sockets (5k
    /// connections, both ends in this namespace; the fd limit here is 20k). A measurement, not a test: `cargo test -p sockmon --lib
    /// flow_poll_cost -- --ignored --nocapture` (figures in BENCHMARKS.md).
    #[test]
    #[ignore = "measurement"]
    fn flow_poll_cost_per_10k_sockets() {
        let rl = libc::rlimit {
            rlim_cur: 20_000,
            rlim_max: 20_000,
        };
        // SAFETY: a valid pointer to a local struct.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut keep = Vec::new();
        for _ in 0..5_000 {
            let c = std::net::TcpStream::connect(addr).unwrap();
            let (a, _) = l.accept().unwrap();
            keep.push((c, a));
        }
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..7 {
            let t = std::time::Instant::now();
            n = poll().unwrap().len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "flow poll: {n} sockets, median {:?}, min {:?}, max {:?}",
            times[3], times[0], times[6]
        );
        assert!(n >= 10_000);
    }

    /// A real dump of this namespace finds a live loopback connection with
    /// the bytes it moved.
    #[test]
    fn poll_finds_a_live_connection_with_its_counters() {
        use std::io::{Read as _, Write as _};
        use std::os::fd::AsRawFd as _;
        use std::os::unix::fs::MetadataExt as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut a, _) = l.accept().unwrap();
        c.write_all(&[5u8; 3000]).unwrap();
        let mut buf = [0u8; 3000];
        a.read_exact(&mut buf).unwrap();
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", c.as_raw_fd()))
            .unwrap()
            .ino();
        let samples = poll().unwrap();
        let mine = samples.iter().find(|s| s.inode == ino).expect("our socket");
        assert_eq!(mine.state, 1);
        assert_eq!(mine.counters.bytes_sent, 3000);
        assert_eq!(mine.counters.bytes_acked, 3001);
    }
}

/// One polling round.
#[derive(Debug)]
pub struct Round {
    pub time: crate::clock::WallTime,
    pub interval: std::time::Duration,
    pub samples: Vec<FlowSample>,
}

/// Polls every `every` on a blocking thread; rounds go to the state task
/// (a full queue skips the round: the next one's deltas cover it).
pub fn spawn_poller(every: std::time::Duration) -> tokio::sync::mpsc::Receiver<Round> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: start one interval in
        loop {
            tick.tick().await;
            let Ok(result) = tokio::task::spawn_blocking(poll_all).await else {
                return;
            };
            match result {
                Ok(Polled { samples, skipped }) => {
                    for (ino, why) in skipped {
                        tracing::debug!("flow polling skipped network namespace {ino}: {why}");
                    }
                    let round = Round {
                        time: crate::clock::WallTime::now(),
                        interval: every,
                        samples,
                    };
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                        tx.try_send(round)
                    {
                        return;
                    }
                }
                Err(e) => tracing::warn!("flow polling (sock_diag) failed: {e}"),
            }
        }
    });
    rx
}

/// The next round, or never when polling is off.
pub async fn next(rx: &mut Option<tokio::sync::mpsc::Receiver<Round>>) -> Option<Round> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The `flow` record of sample `s`: the socket as the table knows it (its
/// first owner as the acting process), with `delta`.
pub fn record(
    table: &crate::table::SocketTable,
    s: &FlowSample,
    delta: TcpCounters,
    round: &Round,
) -> Option<crate::event::Event> {
    use crate::event::{Event, EventKind, flow::Life};
    let entry = table.get(s.inode)?;
    let owner = entry.owners.first();
    let process = owner.and_then(|o| table.process(o.pid));
    Some(Event {
        kind: EventKind::Flow,
        time: round.time,
        proto: entry.key.proto(),
        family: entry.key.family(),
        src: entry.key.src(),
        dst: entry.key.dst(),
        pid: owner.map_or(0, |o| o.pid),
        tid: owner.map_or(0, |o| o.tid),
        uid: process.map_or(0, |p| p.uid),
        comm: owner.map(|o| o.comm).unwrap_or_default(),
        process_comm: process.map(|p| p.comm).unwrap_or_default(),
        start_ns: 0,
        netns: entry.key.netns,
        inode: s.inode,
        cgroup_id: 0,
        error: None,
        state: s.state,
        flags: 0,
        life: Some(Box::new(Life {
            duration_ns: None,
            duration_is_lower_bound: false,
            final_state: Some(s.state),
            tcp: Some(delta),
            drops: None,
            interval_ms: Some(round.interval.as_millis() as u64),
        })),
        ctx: None,
        aux: 0,
    })
}
