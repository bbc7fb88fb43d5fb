//! The workloads, run as a separate process (`xtask bench worker ...`, a
//! hidden subcommand the benchmark re-executes from the release build; the
//! task runner hands it to [`run`]) so that the thing measured shares
//! nothing with the measurer.
//!
//! - `rate`: a tight loopback connect → accept → close loop. Each client
//!   waits for the server's close (EOF) before closing its side, so the
//!   accept queue never overflows (an overflow would drop SYNs and stall a
//!   client for a whole retransmission second). Clients close with
//!   `SO_LINGER {1, 0}`: the close sends a RST and leaves no TIME_WAIT, so a
//!   loop of hundreds of thousands of connections never runs out of
//!   ephemeral ports (widening `ip_local_port_range` would only delay that,
//!   and changes a machine-wide setting).
//! - `getppid`, `pread`: the cheapest syscall there is, and a 4 KiB read of a
//!   tmpfs file, in a loop: what every task pays once syscall tracepoints are
//!   enabled.
//! - `hold`: opens N loopback connections, prints a sample of their
//!   four-tuples, and holds them until its stdin closes (the holding side of
//!   `sockmon_testkit::holder::Connections`).
//! - `churn`: one short-lived process of the soak: N short connections (the
//!   rate loop's client: wait for the server's close, then reset) and M UDP
//!   sends, each from a fresh, unbound socket (the implicit-bind path), then
//!   exit.
//! - `soak-server`: the soak's long-lived side: a loopback listener with
//!   acceptor threads and a UDP receiver, until its stdin closes.
//!
//! Every mode prints one JSON line on stdout (`soak-server` two: its ports
//! once it serves, its totals when it ends).

use std::{
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use sockmon_testkit::holder::{hold_connections, reset_on_close};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(subcommand)]
    pub job: Job,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Job {
    /// Connection loop with `threads` clients and as many acceptors.
    Rate {
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 0.2)]
        warmup: f64,
        /// Listen on this port of 127.0.0.1 (0: any).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Connections per second in all (0: as many as the clients can).
        #[arg(long, default_value_t = 0.0)]
        per_sec: f64,
    },
    /// `getppid()` in a loop.
    Getppid {
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 0.2)]
        warmup: f64,
    },
    /// `pread()` of 4 KiB from a tmpfs file in a loop.
    Pread {
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 0.2)]
        warmup: f64,
    },
    /// `sendto()` of 64-byte datagrams from one unconnected UDP socket to a
    /// loopback receiver, in a loop (the DNS-client shape: the hot path the
    /// implicit-bind hook sits on).
    Sendto {
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 0.2)]
        warmup: f64,
    },
    /// `fork` + `exec` of `/bin/true` and its wait, in a loop (what every
    /// process start costs; the exec hook's record sits on it).
    Spawn {
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 0.2)]
        warmup: f64,
    },
    /// One short-lived soak process: `conns` short TCP connections to
    /// 127.0.0.1:`port` and `udp` sends to 127.0.0.1:`udp_port`, each from a
    /// fresh unbound UDP socket; then exit.
    Churn {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        udp_port: u16,
        #[arg(long)]
        conns: u64,
        #[arg(long)]
        udp: u64,
        /// Take this name (`comm`, at most 15 bytes) first, so that a
        /// stream can be filtered to these processes.
        #[arg(long)]
        comm: Option<String>,
    },
    /// The soak's listener (with `threads` acceptors) on 127.0.0.1:`port`
    /// and UDP receiver on 127.0.0.1:`udp_port` (0: any); serves until
    /// stdin closes.
    SoakServer {
        #[arg(long)]
        threads: usize,
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long, default_value_t = 0)]
        udp_port: u16,
    },
    /// Open `conns` loopback connections and hold them until stdin closes.
    Hold {
        #[arg(long)]
        conns: usize,
        /// Connections per listening port (each destination has its own
        /// ephemeral port space).
        #[arg(long, default_value_t = 10_000)]
        per_listener: usize,
        /// How many four-tuples to print.
        #[arg(long, default_value_t = 1000)]
        sample: usize,
    },
}

impl Job {
    /// The command-line arguments that reproduce this job.
    pub fn to_args(&self) -> Vec<String> {
        let f = |x: f64| format!("{x}");
        match self {
            Self::Rate {
                threads,
                secs,
                warmup,
                port,
                per_sec,
            } => vec![
                "rate".into(),
                format!("--threads={threads}"),
                format!("--secs={}", f(*secs)),
                format!("--warmup={}", f(*warmup)),
                format!("--port={port}"),
                format!("--per-sec={}", f(*per_sec)),
            ],
            Self::Getppid { secs, warmup } => vec![
                "getppid".into(),
                format!("--secs={}", f(*secs)),
                format!("--warmup={}", f(*warmup)),
            ],
            Self::Pread { secs, warmup } => vec![
                "pread".into(),
                format!("--secs={}", f(*secs)),
                format!("--warmup={}", f(*warmup)),
            ],
            Self::Sendto { secs, warmup } => vec![
                "sendto".into(),
                format!("--secs={}", f(*secs)),
                format!("--warmup={}", f(*warmup)),
            ],
            Self::Spawn { secs, warmup } => vec![
                "spawn".into(),
                format!("--secs={}", f(*secs)),
                format!("--warmup={}", f(*warmup)),
            ],
            Self::Churn {
                port,
                udp_port,
                conns,
                udp,
                comm,
            } => {
                let mut v = vec![
                    "churn".into(),
                    format!("--port={port}"),
                    format!("--udp-port={udp_port}"),
                    format!("--conns={conns}"),
                    format!("--udp={udp}"),
                ];
                v.extend(comm.iter().map(|c| format!("--comm={c}")));
                v
            }
            Self::SoakServer {
                threads,
                port,
                udp_port,
            } => vec![
                "soak-server".into(),
                format!("--threads={threads}"),
                format!("--port={port}"),
                format!("--udp-port={udp_port}"),
            ],
            Self::Hold {
                conns,
                per_listener,
                sample,
            } => vec![
                "hold".into(),
                format!("--conns={conns}"),
                format!("--per-listener={per_listener}"),
                format!("--sample={sample}"),
            ],
        }
    }

    /// How long the job runs, if it is timed (0 for `churn`, which ends
    /// when its work is done, and for `hold` and `soak-server`, which end
    /// when told).
    pub fn duration_s(&self) -> f64 {
        match self {
            Self::Rate { secs, warmup, .. }
            | Self::Getppid { secs, warmup }
            | Self::Pread { secs, warmup }
            | Self::Sendto { secs, warmup }
            | Self::Spawn { secs, warmup } => secs + warmup,
            Self::Churn { .. } | Self::SoakServer { .. } | Self::Hold { .. } => 0.0,
        }
    }
}

/// What a timed workload reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measured {
    /// Operations completed inside the measured window.
    pub ops: u64,
    /// Length of the window.
    pub secs: f64,
    /// Operations completed over the whole run (warm-up included).
    pub total_ops: u64,
    /// Failed operations over the whole run.
    pub failed: u64,
    /// User and system CPU time of the workload inside the window.
    pub user_s: f64,
    pub sys_s: f64,
    /// The listening port (`rate` only).
    pub port: u16,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// What a `churn` process did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Churned {
    pub pid: u32,
    /// Connections made and closed by the server in turn (EOF seen).
    pub conns: u64,
    /// `connect` failed.
    pub conn_failed: u64,
    /// Connected, but no EOF from the server within the read timeout.
    pub conn_unanswered: u64,
    /// UDP sends (each from a fresh socket) that succeeded.
    pub udp_sent: u64,
    /// UDP sockets that could not be created or whose send failed.
    pub udp_failed: u64,
    pub secs: f64,
}

/// What `soak-server` reports: first its ports, at the end its totals.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Served {
    pub pid: u32,
    pub port: u16,
    pub udp_port: u16,
    pub accepted: u64,
    pub datagrams: u64,
}

pub fn run(args: &WorkerArgs) -> anyhow::Result<()> {
    let line = match args.job.clone() {
        Job::Rate {
            threads,
            secs,
            warmup,
            port,
            per_sec,
        } => serde_json::to_string(&rate(threads, secs, warmup, port, per_sec)?)?,
        Job::Getppid { secs, warmup } => serde_json::to_string(&timed_loop(secs, warmup, || {
            // SAFETY: getppid has no arguments and cannot fail.
            unsafe { libc::getppid() };
            true
        })?)?,
        Job::Pread { secs, warmup } => serde_json::to_string(&pread_loop(secs, warmup)?)?,
        Job::Sendto { secs, warmup } => serde_json::to_string(&sendto_loop(secs, warmup)?)?,
        Job::Spawn { secs, warmup } => serde_json::to_string(&spawn_loop(secs, warmup)?)?,
        Job::Churn {
            port,
            udp_port,
            conns,
            udp,
            comm,
        } => serde_json::to_string(&churn(port, udp_port, conns, udp, comm.as_deref())?)?,
        Job::SoakServer {
            threads,
            port,
            udp_port,
        } => return soak_server(threads, port, udp_port),
        Job::Hold {
            conns,
            per_listener,
            sample,
        } => return hold_connections(conns, per_listener, sample),
    };
    println!("{line}");
    Ok(())
}

/// A counter on its own cache line, so client threads do not share one.
#[repr(align(64))]
#[derive(Default)]
struct Counter {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Starts `/bin/true` and waits for it, again and again, on one thread.
fn spawn_loop(secs: f64, warmup: f64) -> anyhow::Result<Measured> {
    let stop = Arc::new(AtomicBool::new(false));
    let counter: Arc<Counter> = Arc::default();
    let worker = {
        let (c, stop) = (Arc::clone(&counter), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ok = std::process::Command::new("/bin/true")
                    .status()
                    .is_ok_and(|s| s.success());
                let n = if ok { &c.ok } else { &c.failed };
                n.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut m = window(secs, warmup, || counter.ok.load(Ordering::Relaxed))?;
    stop.store(true, Ordering::Relaxed);
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the spawning thread panicked"))?;
    m.total_ops = counter.ok.load(Ordering::Relaxed);
    m.failed = counter.failed.load(Ordering::Relaxed);
    Ok(m)
}

fn rate(
    threads: usize,
    secs: f64,
    warmup: f64,
    port: u16,
    per_sec: f64,
) -> anyhow::Result<Measured> {
    // Each client thread's share of a paced rate: one connection per `gap`.
    let gap = (per_sec > 0.0).then(|| Duration::from_secs_f64(threads as f64 / per_sec));
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).context("binding the listener")?;
    let addr = listener.local_addr()?;
    let listener = Arc::new(listener);
    for _ in 0..threads {
        let l = Arc::clone(&listener);
        // Acceptors block in accept() and die with the process.
        thread::spawn(move || acceptor(&l));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<Counter>> = (0..threads).map(|_| Arc::default()).collect();
    let clients: Vec<_> = counters
        .iter()
        .map(|c| {
            let (c, stop) = (Arc::clone(c), Arc::clone(&stop));
            thread::spawn(move || client(addr, &c, &stop, gap))
        })
        .collect();
    let sum = |cs: &[Arc<Counter>]| cs.iter().map(|c| c.ok.load(Ordering::Relaxed)).sum::<u64>();
    let mut m = window(secs, warmup, || sum(&counters))?;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
    }
    m.total_ops = sum(&counters);
    m.failed = counters
        .iter()
        .map(|c| c.failed.load(Ordering::Relaxed))
        .sum();
    m.port = addr.port();
    Ok(m)
}

/// Sleeps through the warm-up, then measures `count()` and CPU time over `secs`.
fn window(secs: f64, warmup: f64, count: impl Fn() -> u64) -> anyhow::Result<Measured> {
    thread::sleep(Duration::from_secs_f64(warmup));
    let (c0, r0, t0) = (count(), rusage()?, Instant::now());
    thread::sleep(Duration::from_secs_f64(secs));
    let (c1, r1, t1) = (count(), rusage()?, Instant::now());
    Ok(Measured {
        ops: c1 - c0,
        secs: (t1 - t0).as_secs_f64(),
        user_s: r1.0 - r0.0,
        sys_s: r1.1 - r0.1,
        ..Measured::default()
    })
}

fn acceptor(listener: &TcpListener) {
    loop {
        // Dropping the accepted stream closes it: the client sees EOF.
        if listener.accept().is_err() {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

fn client(addr: SocketAddr, counter: &Counter, stop: &AtomicBool, gap: Option<Duration>) {
    let mut byte = [0u8; 1];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(gap) = gap {
            // Paced: on a fixed schedule, catching up after a slow one.
            next += gap;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                // Wait for the server's close, then reset: no TIME_WAIT.
                let _ = s.read(&mut byte);
                let _ = reset_on_close(&s);
                counter.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counter.failed.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// (user, system) CPU seconds of this process so far.
fn rusage() -> anyhow::Result<(f64, f64)> {
    // SAFETY: zeroed rusage is a valid value; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((secs(ru.ru_utime), secs(ru.ru_stime)))
}

/// Runs `op` in batches until the warm-up and then the window have passed,
/// counting successful calls; checks the clock once per batch only.
fn timed_loop(secs: f64, warmup: f64, mut op: impl FnMut() -> bool) -> anyhow::Result<Measured> {
    const BATCH: u64 = 1024;
    let mut batch = |ok: &mut u64, failed: &mut u64| {
        for _ in 0..BATCH {
            if op() {
                *ok += 1;
            } else {
                *failed += 1;
            }
        }
    };
    let (mut ok, mut failed) = (0u64, 0u64);
    let warm_end = Instant::now() + Duration::from_secs_f64(warmup);
    while Instant::now() < warm_end {
        batch(&mut ok, &mut failed);
    }
    let (c0, r0, t0) = (ok, rusage()?, Instant::now());
    let end = t0 + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        batch(&mut ok, &mut failed);
    }
    let (r1, t1) = (rusage()?, Instant::now());
    Ok(Measured {
        ops: ok - c0,
        secs: (t1 - t0).as_secs_f64(),
        total_ops: ok,
        failed,
        user_s: r1.0 - r0.0,
        sys_s: r1.1 - r0.1,
        port: 0,
    })
}

/// Where the pread file goes: a tmpfs, so the loop measures the syscall path
/// and the page cache, not a disk.
const TMPFS_DIRS: [&str; 2] = ["/dev/shm", "/run"];
const TMPFS_MAGIC: i64 = 0x0102_1994;

fn pread_loop(secs: f64, warmup: f64) -> anyhow::Result<Measured> {
    let file = tmpfs_file()?;
    let fd = file.as_raw_fd();
    let mut buf = vec![0u8; 4096];
    timed_loop(secs, warmup, || {
        // SAFETY: buf is a writable 4096-byte buffer; fd stays open (file lives
        // until the loop ends).
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        n == 4096
    })
}

fn sendto_loop(secs: f64, warmup: f64) -> anyhow::Result<Measured> {
    // Nobody reads the receiver: once its buffer is full the kernel drops
    // what arrives, and `sendto` still succeeds; the loop measures the send
    // path. The sender stays unconnected, so every send passes the
    // cgroup/sendmsg4 hook (after the first, one map lookup there).
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let to = receiver.local_addr()?;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let payload = [0u8; 64];
    timed_loop(secs, warmup, || sender.send_to(&payload, to).is_ok())
}

/// How long a churn client waits for the server's close before giving up
/// on that connection (counted as unanswered).
const EOF_TIMEOUT: Duration = Duration::from_secs(10);

/// One soak process: `conns` short connections and `udp` sends from fresh
/// sockets, interleaved evenly, one at a time.
fn churn(
    port: u16,
    udp_port: u16,
    conns: u64,
    udp: u64,
    comm: Option<&str>,
) -> anyhow::Result<Churned> {
    if let Some(name) = comm {
        set_comm(name)?;
    }
    let tcp_to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let udp_to = sockaddr_v4(Ipv4Addr::LOCALHOST, udp_port);
    let payload = [0u8; 32];
    let mut out = Churned {
        pid: std::process::id(),
        ..Churned::default()
    };
    let total = conns.max(udp);
    let t0 = Instant::now();
    for i in 0..total {
        if due(i, conns, total) {
            match short_connection(tcp_to) {
                Ok(true) => out.conns += 1,
                Ok(false) => out.conn_unanswered += 1,
                Err(_) => {
                    out.conn_failed += 1;
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
        if due(i, udp, total) {
            match fresh_udp_send(&udp_to, &payload) {
                Ok(()) => out.udp_sent += 1,
                Err(_) => out.udp_failed += 1,
            }
        }
    }
    out.secs = t0.elapsed().as_secs_f64();
    Ok(out)
}

/// Whether step `i` of `total` is one of `n` steps spread evenly over them.
fn due(i: u64, n: u64, total: u64) -> bool {
    let (i, n, total) = (u128::from(i), u128::from(n), u128::from(total));
    total > 0 && (i + 1) * n / total > i * n / total
}

/// The rate loop's client, once: connect, wait for the server's close (so
/// the accept queue never overflows), reset (no TIME_WAIT). `Ok(false)`:
/// connected, but the server did not close within [`EOF_TIMEOUT`].
fn short_connection(to: SocketAddr) -> io::Result<bool> {
    let mut s = TcpStream::connect(to)?;
    s.set_read_timeout(Some(EOF_TIMEOUT))?;
    let mut byte = [0u8; 1];
    let answered = matches!(s.read(&mut byte), Ok(0));
    let _ = reset_on_close(&s);
    Ok(answered)
}

/// socket(), sendto(), close(): the socket gets its address from the send
/// (the kernel's autobind), the path of a DNS client.
fn fresh_udp_send(to: &libc::sockaddr_in, payload: &[u8]) -> io::Result<()> {
    // SAFETY: socket(2) has no memory arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and belongs to nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: payload and `to` are valid for the lengths passed; fd is open.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            0,
            std::ptr::from_ref(to).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr_v4(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Renames the calling thread (the main thread: the process's name too).
fn set_comm(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 15 {
        bail!("a comm is 1 to 15 bytes, not {name:?}");
    }
    let c = std::ffi::CString::new(name).context("a comm has no NUL byte")?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string (at most 16 bytes
    // with the NUL, checked above).
    if unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error()).context("prctl(PR_SET_NAME)");
    }
    Ok(())
}

/// The soak's long-lived side: accepts (and at once closes) every
/// connection and reads every datagram until stdin closes.
fn soak_server(threads: usize, port: u16, udp_port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("binding the soak listener on port {port}"))?;
    let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, udp_port))
        .with_context(|| format!("binding the soak receiver on port {udp_port}"))?;
    let mut served = Served {
        pid: std::process::id(),
        port: listener.local_addr()?.port(),
        udp_port: udp.local_addr()?.port(),
        ..Served::default()
    };
    let listener = Arc::new(listener);
    let accepted = Arc::new(AtomicU64::new(0));
    let datagrams = Arc::new(AtomicU64::new(0));
    for _ in 0..threads.max(1) {
        let (l, n) = (Arc::clone(&listener), Arc::clone(&accepted));
        // Acceptors block in accept() and die with the process.
        thread::spawn(move || {
            loop {
                match l.accept() {
                    // Dropped at once: the client sees EOF.
                    Ok(_) => {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
    }
    {
        let n = Arc::clone(&datagrams);
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                match udp.recv_from(&mut buf) {
                    Ok(_) => {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
    }
    print_json(&served)?;
    // Serve until the parent closes our stdin (or dies).
    let mut sink = Vec::new();
    io::stdin().read_to_end(&mut sink)?;
    served.accepted = accepted.load(Ordering::Relaxed);
    served.datagrams = datagrams.load(Ordering::Relaxed);
    print_json(&served)
}

/// One JSON line on stdout, flushed.
fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// A 4 KiB file on a tmpfs, already unlinked: nothing is left behind.
fn tmpfs_file() -> anyhow::Result<std::fs::File> {
    let dir = TMPFS_DIRS
        .iter()
        .find(|d| is_tmpfs(d))
        .with_context(|| format!("none of {TMPFS_DIRS:?} is a tmpfs"))?;
    let path = std::path::Path::new(dir).join(format!("sockmon-bench-{}.dat", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::remove_file(&path)?;
    f.write_all(&[0x5a; 4096])?;
    Ok(f)
}

fn is_tmpfs(dir: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(dir) else {
        return false;
    };
    // SAFETY: zeroed statfs is valid; statfs writes into it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path; st is writable.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == TMPFS_MAGIC }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_args_parse_back() {
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(subcommand)]
            job: Job,
        }
        let jobs = [
            Job::Rate {
                threads: 2,
                secs: 0.25,
                warmup: 0.1,
                port: 4242,
                per_sec: 0.0,
            },
            Job::Getppid {
                secs: 1.5,
                warmup: 0.0,
            },
            Job::Pread {
                secs: 3.0,
                warmup: 0.2,
            },
            Job::Sendto {
                secs: 2.0,
                warmup: 0.1,
            },
            Job::Churn {
                port: 4242,
                udp_port: 4343,
                conns: 300,
                udp: 100,
                comm: Some("smchurn12345".into()),
            },
            Job::Churn {
                port: 1,
                udp_port: 2,
                conns: 0,
                udp: 7,
                comm: None,
            },
            Job::SoakServer {
                threads: 4,
                port: 4242,
                udp_port: 0,
            },
            Job::Hold {
                conns: 9744,
                per_listener: 10_000,
                sample: 7,
            },
        ];
        for job in jobs {
            let argv = std::iter::once("w".to_string()).chain(job.to_args());
            let back = W::try_parse_from(argv).unwrap().job;
            assert_eq!(format!("{back:?}"), format!("{job:?}"));
        }
    }

    #[test]
    fn rate_loop_counts_connections() {
        let m = rate(1, 0.1, 0.0, 0, 0.0).unwrap();
        assert!(m.ops > 0 && m.total_ops >= m.ops, "{m:?}");
        assert_eq!(m.failed, 0);
        assert_ne!(m.port, 0);
    }

    #[test]
    fn a_paced_rate_loop_keeps_to_its_schedule() {
        // 200/s over 0.5 s: about 100, never a free-running loop's thousands.
        let m = rate(2, 0.5, 0.0, 0, 200.0).unwrap();
        assert!((60..=140).contains(&m.ops), "{m:?}");
        assert_eq!(m.failed, 0);
    }

    #[test]
    fn due_spreads_n_steps_evenly() {
        let steps = |n, total| (0..total).filter(|&i| due(i, n, total)).collect::<Vec<_>>();
        assert_eq!(steps(3, 9), vec![2, 5, 8]);
        assert_eq!(steps(5, 5), vec![0, 1, 2, 3, 4]);
        assert!(steps(0, 5).is_empty());
        assert!(steps(0, 0).is_empty());
        assert_eq!(steps(100, 300).len(), 100);
    }

    #[test]
    fn churn_makes_its_connections_and_sends() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        let acceptor = thread::spawn(move || {
            for _ in 0..20 {
                drop(listener.accept().unwrap());
            }
        });
        let c = churn(port, udp_port, 20, 5, None).unwrap();
        acceptor.join().unwrap();
        assert_eq!(
            (c.conns, c.conn_failed, c.conn_unanswered),
            (20, 0, 0),
            "{c:?}"
        );
        assert_eq!((c.udp_sent, c.udp_failed), (5, 0), "{c:?}");
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = udp.recv_from(&mut buf).unwrap();
        assert_eq!(n, 32);
        assert_ne!(from.port(), 0);
        assert_eq!(c.pid, std::process::id());
    }

    #[test]
    fn syscall_loops_count() {
        let m = timed_loop(0.02, 0.0, || true).unwrap();
        assert!(m.ops > 0 && m.failed == 0);
        if TMPFS_DIRS.iter().any(|d| is_tmpfs(d)) {
            let m = pread_loop(0.02, 0.0).unwrap();
            assert!(m.ops > 0 && m.failed == 0, "{m:?}");
        }
        let m = sendto_loop(0.02, 0.0).unwrap();
        assert!(m.ops > 0 && m.failed == 0, "{m:?}");
    }
}
