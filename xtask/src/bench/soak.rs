//! Part 7: a soak. A bounded run (minutes, loopback only) of continuous
//! churn from many short-lived processes, after which the daemon must have
//! missed nothing, given its memory back and agree with the kernel.
//!
//! A fresh daemon; a long-lived server process (`worker soak-server`: a
//! loopback listener with acceptor threads and a UDP receiver); then, for
//! the planned time, a fixed number of `worker churn` processes at a time,
//! a new one started as each exits. Each makes short TCP connections to the
//! listener (the rate loop's client: wait for the server's close, then
//! reset) and UDP sends to the receiver, each from a fresh unbound socket
//! (`socket`, `sendto`, `close`: the implicit bind), and reports what it did.
//!
//! Two subscriptions count the events by kind while it runs: one filtered to
//! the listener's and receiver's ports (the TCP events carry the listener's
//! port on one side), one to the churn processes' name and UDP (a fresh
//! socket's implicit bind and its close carry only its own ephemeral port:
//! for them the destination is unspecified). Expected per connection: a
//! connect, an accept and two closes; per UDP send: an implicit bind and a
//! close; for the server, two closes when it stops (its binds and listen
//! come before the subscriptions can name its ports, so they are not
//! counted). Drops are the daemon's `status.dropped` (all causes, before vs
//! after) plus any `lost` line; `missing = expected − delivered − dropped`.
//!
//! The daemon's RSS is read after READY, once a second during the churn and
//! after the stream is quiet; its table's size and process count at READY
//! and at the end. At the end, with the server still up, the table is
//! compared with `ss -tunap`: the listener's and receiver's owners, anything
//! left on their ports, and table entries the kernel no longer has.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead, BufReader},
    process::{ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    Plan, Tools,
    api::{Api, SUBSCRIBER_LAGGED},
    complete::{delta, raw_field},
    load::{Churned, Job, Served},
    procs::{ChildGuard, rss_bytes},
    read_all,
    tracers::{Attached, StartOptions, Tracer},
};

/// Pause before reading RSS after a step, so the daemon is done with it.
const SETTLE: Duration = Duration::from_millis(200);
/// A churn process that runs longer than this is stopped (and reported).
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait for the stream to catch up after the churn.
const QUIET_MAX: Duration = Duration::from_secs(60);
/// The stream counts as quiet when nothing moved for this long.
const STILL: Duration = Duration::from_secs(2);
/// Between the listings and `ss` runs of the final comparison: anything a
/// listing shows that `ss` does not (or the reverse) had this long to reach
/// the table.
const GAP: Duration = Duration::from_millis(300);
/// Causes in `status.dropped` that do not lose events.
const NOT_EVENTS: [&str; 1] = ["worker_queue_full"];
/// Errors and examples kept for the report.
const KEEP: usize = 10;

#[derive(Debug, Default, Serialize)]
pub struct SoakResults {
    /// Churn processes running at a time.
    pub concurrency: usize,
    pub conns_per_process: u64,
    pub udp_per_process: u64,
    pub secs_planned: f64,
    /// Churn wall time, first start to last exit.
    pub secs: f64,
    pub processes: u64,
    /// Churn processes that could not be started (tried again at once).
    pub spawn_failed: u64,
    /// Processes that ended without reporting what they did (their events
    /// cannot be expected: `missing` then means nothing).
    pub processes_unreported: u64,
    pub connections: u64,
    pub failed_connects: u64,
    /// Connected, but the server's close never came (counted in `connections`).
    pub unanswered_connects: u64,
    pub udp_sends: u64,
    pub udp_failed: u64,
    pub processes_per_s: f64,
    pub connections_per_s: f64,
    pub udp_sends_per_s: f64,
    /// What the server saw (its final report).
    pub server: Served,
    pub expected: u64,
    pub expected_by_kind: BTreeMap<String, u64>,
    pub delivered: u64,
    pub delivered_by_kind: BTreeMap<String, u64>,
    /// Stream events not counted: the server's own binds and listen (which
    /// may arrive after the subscriptions) and other processes' events on
    /// these ports.
    pub unrelated: u64,
    /// Every cause of `status.dropped` (before vs after) and `lost` lines.
    pub dropped: u64,
    pub dropped_by_cause: BTreeMap<String, u64>,
    /// Those of `dropped` that are lost events (not `worker_queue_full`,
    /// which counts skipped `/proc` lookups).
    pub dropped_events: u64,
    /// `expected − delivered − dropped_events`.
    pub missing: i64,
    /// Expected − delivered, by kind (drops cannot be told apart by kind).
    pub missing_by_kind: BTreeMap<String, i64>,
    /// From the churn's end until the stream was quiet.
    pub quiet_after_s: f64,
    pub rss_ready: u64,
    /// After the subscriptions and the server, right before the churn.
    pub rss_before_churn: u64,
    pub rss_peak: u64,
    pub rss_end: u64,
    /// `rss_end / rss_ready`.
    pub rss_end_over_start: f64,
    /// (seconds since the churn started, RSS), once a second.
    pub rss_samples: Vec<(f64, u64)>,
    pub table_sockets_start: u64,
    pub table_sockets_end: u64,
    pub table_processes_start: Option<u64>,
    pub table_processes_end: Option<u64>,
    pub reconciliations: Option<u64>,
    /// The daemon's CPU use during the churn, in cores.
    pub daemon_cores: f64,
    pub agreement: Option<Agreement>,
    pub errors: Vec<String>,
}

impl SoakResults {
    pub fn has_numbers(&self) -> bool {
        self.connections > 0 && self.rss_end > 0
    }

    /// Whether `missing` can be trusted (every process said what it did).
    pub fn accounted(&self) -> bool {
        self.processes_unreported == 0 && self.connections > 0
    }
}

/// The end-of-run comparison of the table with `ss -tunap`.
#[derive(Debug, Default, Serialize)]
pub struct Agreement {
    pub server_pid: u32,
    pub listener: Owners,
    pub receiver: Owners,
    /// Table entries on the listener's (TCP) or receiver's (UDP) port
    /// other than those two.
    pub leftover_table: Found,
    /// The same in `ss -tunap`.
    pub leftover_ss: Found,
    /// Table entries (this network namespace) the kernel no longer has: in
    /// two listings, and not in an `ss` taken between them.
    pub stale: Found,
    /// Kernel sockets in two `ss` runs and not in a listing between them.
    pub untracked: Found,
    /// Sockets in both whose owner pids differ (where `ss` names any).
    pub owners_differ: Found,
    /// Sockets in both the table and `ss`.
    pub compared: usize,
}

impl Agreement {
    /// The target: both long-lived sockets owned by the server in both
    /// views, nothing left on their ports, no stale entry.
    pub fn met(&self) -> bool {
        let server = vec![self.server_pid];
        self.listener.table == server
            && self.listener.ss == server
            && self.receiver.table == server
            && self.receiver.ss == server
            && self.leftover_table.count == 0
            && self.leftover_ss.count == 0
            && self.stale.count == 0
    }
}

/// Owner pids of one socket, as the table and as `ss` see them.
#[derive(Debug, Default, Serialize)]
pub struct Owners {
    pub table: Vec<u32>,
    pub ss: Vec<u32>,
}

/// How many, and a few of them described.
#[derive(Debug, Default, Serialize)]
pub struct Found {
    pub count: usize,
    pub sample: Vec<String>,
}

impl Found {
    fn of(items: impl IntoIterator<Item = String>) -> Self {
        let mut f = Self::default();
        for s in items {
            if f.sample.len() < KEEP {
                f.sample.push(s);
            }
            f.count += 1;
        }
        f
    }
}

pub fn run(plan: &Plan, tools: &Tools) -> anyhow::Result<SoakResults> {
    let shape = Shape {
        secs: plan.soak_s,
        procs: plan.soak_procs.max(1),
        conns: plan.soak_conns,
        udp: plan.soak_udp,
    };
    eprintln!(
        "xtask bench: soak: {} s, {} processes at a time, each {} connections and {} UDP sends",
        shape.secs, shape.procs, shape.conns, shape.udp
    );
    let mut errors = Vec::new();
    let mut daemon = Attached::start(Tracer::Sockmon, &tools.sockmon, StartOptions::default())?;
    let api = Api::new(daemon.api_socket.as_deref().context("no API socket")?);
    let pid = daemon.pid().context("no daemon pid")?;
    thread::sleep(SETTLE);
    let rss_ready = rss_bytes(pid)?;
    let ready = api.status()?;

    // The server picks its ports (no race for a free one); the streams are
    // filtered to them.
    let server = Server::start(tools, shape.procs)?;
    let (port, udp_port) = (server.served.port, server.served.udp_port);
    let comm = churn_comm();
    let streams = Streams::open(&api, port, udp_port, &comm)?;
    let base = api.status()?.dropped;
    thread::sleep(SETTLE);
    let rss_before_churn = rss_bytes(pid)?;

    let cpu0 = daemon.cpu_seconds()?;
    let job = Job::Churn {
        port,
        udp_port,
        conns: shape.conns,
        udp: shape.udp,
        comm: Some(comm),
    };
    let churn = churn(tools, &shape, &job, &mut daemon)?;
    let daemon_cores = (daemon.cpu_seconds()? - cpu0) / churn.secs.max(1e-9);
    let churn_end = Instant::now();

    let mut expected = expected_events(&churn);
    wait_quiet(&streams.live, total(&expected), &api, &base, QUIET_MAX)?;
    let quiet_after_s = churn_end.elapsed().as_secs_f64();
    let rss_end = rss_bytes(pid)?;
    let end = api.status()?;
    let agreement = agree(&api, server.served.pid, port, udp_port)
        .map_err(|e| errors.push(format!("comparison with ss: {e:#}")))
        .ok();
    daemon.ensure_running()?;

    // The server's two sockets close when it stops.
    let served = server.stop()?;
    *expected.entry("close".into()).or_default() += 2;
    let kernel = wait_quiet(
        &streams.live,
        total(&expected),
        &api,
        &base,
        Duration::from_secs(10),
    )?;
    daemon.stop()?;
    let tally = streams.join(&mut errors);

    let mut dropped_by_cause = tally.lost.clone();
    for (k, v) in kernel {
        *dropped_by_cause.entry(k).or_default() += v;
    }
    let dropped = dropped_by_cause.values().sum::<u64>();
    let dropped_events = dropped_by_cause
        .iter()
        .filter(|(k, _)| !NOT_EVENTS.contains(&k.as_str()))
        .map(|(_, v)| v)
        .sum::<u64>();
    let delivered = tally.by_kind.values().sum::<u64>();
    let expected_total = total(&expected);
    let missing_by_kind = by_kind_difference(&expected, &tally.by_kind);
    let rate = |n: u64| n as f64 / churn.secs.max(1e-9);
    let rss_peak = churn
        .rss
        .iter()
        .map(|s| s.1)
        .chain([rss_ready, rss_before_churn, rss_end])
        .max()
        .unwrap_or(0);
    if churn.unreported > 0 {
        errors.push(format!(
            "{} churn process(es) ended without a report",
            churn.unreported
        ));
    }
    errors.extend(churn.errors.iter().cloned());
    Ok(SoakResults {
        concurrency: shape.procs,
        conns_per_process: shape.conns,
        udp_per_process: shape.udp,
        secs_planned: shape.secs,
        secs: churn.secs,
        processes: churn.processes,
        spawn_failed: churn.spawn_failed,
        processes_unreported: churn.unreported,
        connections: churn.conns,
        failed_connects: churn.failed,
        unanswered_connects: churn.unanswered,
        udp_sends: churn.udp_sent,
        udp_failed: churn.udp_failed,
        processes_per_s: rate(churn.processes),
        connections_per_s: rate(churn.conns),
        udp_sends_per_s: rate(churn.udp_sent),
        server: served,
        expected: expected_total,
        expected_by_kind: expected,
        delivered,
        delivered_by_kind: tally.by_kind,
        unrelated: tally.unrelated,
        dropped,
        dropped_by_cause,
        dropped_events,
        missing: expected_total as i64 - delivered as i64 - dropped_events as i64,
        missing_by_kind,
        quiet_after_s,
        rss_ready,
        rss_before_churn,
        rss_peak,
        rss_end,
        rss_end_over_start: rss_end as f64 / rss_ready.max(1) as f64,
        rss_samples: churn.rss,
        table_sockets_start: ready.table_sockets,
        table_sockets_end: end.table_sockets,
        table_processes_start: ready.table_processes,
        table_processes_end: end.table_processes,
        reconciliations: end.reconciliations,
        daemon_cores,
        agreement,
        errors,
    })
}

struct Shape {
    secs: f64,
    procs: usize,
    conns: u64,
    udp: u64,
}

/// The name every churn process of this run takes (unique to the run, at
/// most 15 bytes): the UDP subscription is filtered to it.
fn churn_comm() -> String {
    format!("smchurn{}", std::process::id() % 10_000_000)
}

/// What the churn did, summed over its processes.
#[derive(Debug, Default)]
struct Churn {
    secs: f64,
    processes: u64,
    unreported: u64,
    spawn_failed: u64,
    conns: u64,
    failed: u64,
    unanswered: u64,
    udp_sent: u64,
    udp_failed: u64,
    rss: Vec<(f64, u64)>,
    errors: Vec<String>,
}

impl Churn {
    fn add(&mut self, c: &Churned) {
        self.conns += c.conns + c.conn_unanswered;
        self.failed += c.conn_failed;
        self.unanswered += c.conn_unanswered;
        self.udp_sent += c.udp_sent;
        self.udp_failed += c.udp_failed;
    }

    fn error(&mut self, e: String) {
        if self.errors.len() < KEEP {
            self.errors.push(e);
        }
    }
}

struct Running {
    guard: ChildGuard,
    stdout: Option<ChildStdout>,
    started: Instant,
}

/// Keeps `shape.procs` churn processes running for `shape.secs`, then waits
/// for the last ones; samples the daemon's RSS once a second meanwhile.
fn churn(tools: &Tools, shape: &Shape, job: &Job, daemon: &mut Attached) -> anyhow::Result<Churn> {
    let pid = daemon.pid().context("no daemon pid")?;
    let mut out = Churn::default();
    let mut running: Vec<Running> = Vec::with_capacity(shape.procs);
    let t0 = Instant::now();
    let stop_starting = t0 + Duration::from_secs_f64(shape.secs);
    let mut next_sample = t0;
    loop {
        let now = Instant::now();
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].guard.try_wait()? {
                let r = running.swap_remove(i);
                match report(r.stdout, status) {
                    Ok(c) => out.add(&c),
                    Err(e) => {
                        out.unreported += 1;
                        out.error(format!("a churn process: {e:#}"));
                    }
                }
            } else if now.duration_since(running[i].started) > PROCESS_TIMEOUT {
                // Dropping the guard stops it.
                drop(running.swap_remove(i));
                out.unreported += 1;
                out.error(format!(
                    "a churn process ran longer than {PROCESS_TIMEOUT:?} and was stopped"
                ));
            } else {
                i += 1;
            }
        }
        if now < stop_starting {
            while running.len() < shape.procs {
                match spawn(tools, job) {
                    Ok(r) => {
                        running.push(r);
                        out.processes += 1;
                    }
                    // Out of processes for a moment (a shared machine):
                    // tried again on the next turn.
                    Err(e) => {
                        out.spawn_failed += 1;
                        out.error(format!("{e:#}"));
                        break;
                    }
                }
            }
        } else if running.is_empty() {
            break;
        }
        if now >= next_sample {
            daemon.ensure_running()?;
            out.rss
                .push((now.duration_since(t0).as_secs_f64(), rss_bytes(pid)?));
            next_sample += Duration::from_secs(1);
        }
        thread::sleep(Duration::from_millis(1));
    }
    out.secs = t0.elapsed().as_secs_f64();
    Ok(out)
}

fn spawn(tools: &Tools, job: &Job) -> anyhow::Result<Running> {
    let mut cmd = tools.worker_command(job);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd)?;
    let stdout = guard.child_stdout();
    Ok(Running {
        guard,
        stdout,
        started: Instant::now(),
    })
}

/// What an exited churn process printed (one short line: it fits the pipe).
fn report(stdout: Option<ChildStdout>, status: ExitStatus) -> anyhow::Result<Churned> {
    if !status.success() {
        bail!("exited with {status}");
    }
    let text = read_all(stdout)?;
    let line = text.lines().last().context("it printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("bad churn output {line:?}"))
}

/// Events the churn causes, by kind (the server's two closes are added
/// when it stops). A failed connect is one event: the socket's close no
/// longer carries the port.
fn expected_events(c: &Churn) -> BTreeMap<String, u64> {
    BTreeMap::from([
        ("connect".into(), c.conns + c.failed),
        ("accept".into(), c.conns),
        ("close".into(), 2 * c.conns + c.udp_sent),
        ("bind".into(), c.udp_sent),
    ])
}

fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

/// Expected − delivered for every kind either side has.
fn by_kind_difference(
    expected: &BTreeMap<String, u64>,
    delivered: &BTreeMap<String, u64>,
) -> BTreeMap<String, i64> {
    let kinds: BTreeSet<&String> = expected.keys().chain(delivered.keys()).collect();
    kinds
        .into_iter()
        .map(|k| {
            let get = |m: &BTreeMap<String, u64>| m.get(k).copied().unwrap_or(0) as i64;
            (k.clone(), get(expected) - get(delivered))
        })
        .collect()
}

/// The long-lived server process.
struct Server {
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<anyhow::Result<Served>>,
    served: Served,
}

impl Server {
    /// Starts the server (on ports it picks) with one acceptor per
    /// concurrent client, like the rate loop.
    fn start(tools: &Tools, threads: usize) -> anyhow::Result<Self> {
        let job = Job::SoakServer {
            threads,
            port: 0,
            udp_port: 0,
        };
        let mut cmd = tools.worker_command(&job);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut guard = ChildGuard::spawn(&mut cmd)?;
        let stdin = guard.child()?.stdin.take();
        let stdout = guard
            .child_stdout()
            .context("the soak server has no stdout")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let r = line.map_err(anyhow::Error::from).and_then(|l| {
                    serde_json::from_str::<Served>(&l)
                        .with_context(|| format!("bad soak server output {l:?}"))
                });
                if tx.send(r).is_err() {
                    break;
                }
            }
        });
        let served = lines
            .recv_timeout(Duration::from_secs(30))
            .context("the soak server did not start (its error is above)")??;
        Ok(Self {
            guard,
            stdin,
            lines,
            served,
        })
    }

    /// Ends the server (EOF on its stdin); returns its final report.
    fn stop(mut self) -> anyhow::Result<Served> {
        drop(self.stdin.take());
        let status = self.guard.wait_timeout(Duration::from_secs(30))?;
        if !status.success() {
            bail!("the soak server ended with {status}");
        }
        self.lines
            .recv_timeout(Duration::from_secs(5))
            .context("the soak server gave no final report")?
    }
}

/// Live progress of the stream readers, for deciding when they are done.
#[derive(Default)]
struct Live {
    /// Events counted (the churn's and the server's).
    events: AtomicU64,
    /// Events the stream said it lost.
    lost: AtomicU64,
}

/// What the streams carried.
#[derive(Clone, Debug, Default)]
struct Tally {
    by_kind: BTreeMap<String, u64>,
    lost: BTreeMap<String, u64>,
    unrelated: u64,
    error: Option<String>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        for (k, v) in o.by_kind {
            *self.by_kind.entry(k).or_default() += v;
        }
        for (k, v) in o.lost {
            *self.lost.entry(k).or_default() += v;
        }
        self.unrelated += o.unrelated;
        self.error = self.error.take().or(o.error);
    }
}

/// Which events of a stream are counted.
#[derive(Clone, Copy, Debug)]
enum Select {
    /// TCP events on the listener's port, UDP events on the receiver's,
    /// but no bind or listen (only the server binds these ports, before the
    /// stream was filtered to them).
    Ports { tcp: u16, udp: u16 },
    /// Every UDP event (the stream is filtered to the churn's name).
    ChurnUdp,
}

impl Select {
    fn counts(self, kind: &str, proto: Option<&str>, src: Option<u16>, dst: Option<u16>) -> bool {
        let on = |p: u16| src == Some(p) || dst == Some(p);
        let server_setup = kind == "bind" || kind == "listen";
        match (self, proto) {
            (Self::Ports { tcp, .. }, Some("tcp")) => on(tcp) && !server_setup,
            (Self::Ports { udp, .. }, Some("udp")) => on(udp) && !server_setup,
            (Self::ChurnUdp, Some("udp")) => true,
            _ => false,
        }
    }
}

struct Streams {
    live: Arc<Live>,
    readers: Vec<thread::JoinHandle<Tally>>,
}

impl Streams {
    fn open(api: &Api, port: u16, udp_port: u16, comm: &str) -> anyhow::Result<Self> {
        let live = Arc::new(Live::default());
        let subs = [
            (
                json!({"port": [port, udp_port]}),
                Select::Ports {
                    tcp: port,
                    udp: udp_port,
                },
            ),
            (json!({"comm": [comm], "proto": "udp"}), Select::ChurnUdp),
        ];
        let mut readers = Vec::new();
        for (filter, select) in subs {
            let stream = api.subscribe_filter(&filter)?;
            let live = Arc::clone(&live);
            readers.push(thread::spawn(move || count(stream, select, &live)));
        }
        Ok(Self { live, readers })
    }

    /// Waits for the readers (their streams end when the daemon stops).
    fn join(self, errors: &mut Vec<String>) -> Tally {
        let mut all = Tally::default();
        for r in self.readers {
            match r.join() {
                Ok(t) => all.merge(t),
                Err(_) => errors.push("a stream reader panicked".into()),
            }
        }
        if let Some(e) = all.error.take() {
            errors.push(format!("reading the event stream: {e}"));
        }
        all
    }
}

/// Reads NDJSON events until EOF (or an error, kept in the tally).
fn count(mut r: impl BufRead, select: Select, live: &Live) -> Tally {
    let mut tally = Tally::default();
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return tally,
            Ok(_) => tally_line(&line, select, live, &mut tally),
            Err(e) => {
                tally.error = Some(e.to_string());
                return tally;
            }
        }
    }
}

fn tally_line(line: &str, select: Select, live: &Live, tally: &mut Tally) {
    let port = |k| raw_field(line, k).and_then(|p| p.parse::<u16>().ok());
    match raw_field(line, "event") {
        Some("lost") => {
            let n = raw_field(line, "count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let cause = raw_field(line, "cause").unwrap_or("unknown");
            *tally.lost.entry(cause.to_string()).or_default() += n;
            live.lost.fetch_add(n, Ordering::Relaxed);
        }
        Some(kind) => {
            if select.counts(
                kind,
                raw_field(line, "proto"),
                port("src_port"),
                port("dst_port"),
            ) {
                *tally.by_kind.entry(kind.to_string()).or_default() += 1;
                live.events.fetch_add(1, Ordering::Relaxed);
            } else {
                tally.unrelated += 1;
            }
        }
        None => {}
    }
}

/// Waits until the streams carried (or the daemon counted as dropped)
/// `expected` events, or stopped moving, or `max` passed. Returns the
/// daemon's drops since `base` other than a slow subscriber's (those arrive
/// in the stream as `lost` lines).
fn wait_quiet(
    live: &Live,
    expected: u64,
    api: &Api,
    base: &BTreeMap<String, u64>,
    max: Duration,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let start = Instant::now();
    let (mut last, mut moved) = (u64::MAX, Instant::now());
    loop {
        let kernel: BTreeMap<String, u64> = delta(&api.status()?.dropped, base)
            .into_iter()
            .filter(|(k, _)| k != SUBSCRIBER_LAGGED)
            .collect();
        let seen = live.events.load(Ordering::Relaxed)
            + live.lost.load(Ordering::Relaxed)
            + total(&kernel);
        if seen != last {
            (last, moved) = (seen, Instant::now());
        }
        // A second at least, so the daemon's drop counters are current.
        let counted = seen >= expected && start.elapsed() > Duration::from_millis(1200);
        if counted || moved.elapsed() > STILL || start.elapsed() > max {
            return Ok(kernel);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A table entry, as far as the comparison needs it.
#[derive(Clone, Debug, PartialEq)]
struct TableSock {
    proto: String,
    src_port: u16,
    dst_port: u16,
    state: String,
    inode: u64,
    netns: u64,
    pids: Vec<u32>,
    desc: String,
}

fn table_sock(v: &Value) -> Option<TableSock> {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let port = |k: &str| v[k].as_u64().and_then(|p| u16::try_from(p).ok());
    let mut pids: Vec<u32> = v["owners"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|o| u32::try_from(o["pid"].as_u64()?).ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids.dedup();
    let (src_port, dst_port) = (port("src_port")?, port("dst_port")?);
    let inode = v["inode"].as_u64()?;
    Some(TableSock {
        desc: format!(
            "{} {}:{src_port} → {}:{dst_port} {} inode {inode} owners {pids:?}",
            s("proto"),
            s("src_ip"),
            s("dst_ip"),
            s("state")
        ),
        proto: s("proto"),
        state: s("state"),
        netns: v["netns"].as_u64()?,
        src_port,
        dst_port,
        inode,
        pids,
    })
}

/// A line of `ss -tunapeH`, as far as the comparison needs it.
#[derive(Clone, Debug, PartialEq)]
struct SsSock {
    proto: String,
    state: String,
    local_port: Option<u16>,
    peer_port: Option<u16>,
    /// 0 for sockets no process holds (TIME-WAIT and other orphans).
    inode: u64,
    pids: Vec<u32>,
    desc: String,
}

/// `tcp ESTAB 0 0 127.0.0.1:40312 127.0.0.1:8080 users:(("curl",pid=1234,fd=3)) ino:2218331 sk:…`
fn parse_ss_line(line: &str) -> Option<SsSock> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() < 6 {
        return None;
    }
    let port = |a: &str| a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
    let inode = t
        .iter()
        .find_map(|x| x.strip_prefix("ino:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut pids: Vec<u32> = line
        .match_indices("pid=")
        .filter_map(|(i, m)| {
            let rest = &line[i + m.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Some(SsSock {
        desc: format!(
            "{} {} → {} {} ino {inode} pids {pids:?}",
            t[0], t[4], t[5], t[1]
        ),
        proto: t[0].to_string(),
        state: t[1].to_string(),
        local_port: port(t[4]),
        peer_port: port(t[5]),
        inode,
        pids,
    })
}

fn ss() -> anyhow::Result<Vec<SsSock>> {
    let out = Command::new("ss")
        .arg("-tunapeH")
        .stdin(Stdio::null())
        .output()
        .context("running ss -tunapeH")?;
    if !out.status.success() {
        bail!("ss -tunapeH failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_ss_line)
        .collect())
}

/// The table's sockets in this network namespace (the one `ss` shows).
fn table(api: &Api, netns: u64) -> anyhow::Result<Vec<TableSock>> {
    Ok(api
        .list()?
        .iter()
        .filter_map(table_sock)
        .filter(|s| s.netns == netns)
        .collect())
}

/// The inode of this process's network namespace.
fn own_netns() -> anyhow::Result<u64> {
    let link = fs::read_link("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
    let s = link.to_string_lossy();
    s.strip_prefix("net:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected network namespace link {s:?}"))
}

/// Compares the table with the kernel (`ss -tunap`), the server still up.
fn agree(api: &Api, server_pid: u32, port: u16, udp_port: u16) -> anyhow::Result<Agreement> {
    let netns = own_netns()?;
    let list1 = table(api, netns)?;
    thread::sleep(GAP);
    let ss1 = ss()?;
    thread::sleep(GAP);
    let list2 = table(api, netns)?;
    let ss2 = ss()?;
    Ok(compare(
        server_pid, port, udp_port, &list1, &ss1, &list2, &ss2,
    ))
}

/// The comparison itself (pure). `list1`, `ss1`, `list2`, `ss2` were taken
/// in that order, [`GAP`] apart.
fn compare(
    server_pid: u32,
    port: u16,
    udp_port: u16,
    list1: &[TableSock],
    ss1: &[SsSock],
    list2: &[TableSock],
    ss2: &[SsSock],
) -> Agreement {
    let on = |p: u16, a: u16, b: u16| a == p || b == p;
    let is_listener = |s: &TableSock| s.proto == "tcp" && s.state == "listen" && s.src_port == port;
    let is_receiver = |s: &TableSock| s.proto == "udp" && s.src_port == udp_port && s.dst_port == 0;
    let ss_listener =
        |s: &SsSock| s.proto == "tcp" && s.state == "LISTEN" && s.local_port == Some(port);
    let ss_receiver =
        |s: &SsSock| s.proto == "udp" && s.local_port == Some(udp_port) && s.peer_port.is_none();
    let table_pids = |f: &dyn Fn(&TableSock) -> bool| -> Vec<u32> {
        let set: BTreeSet<u32> = list2
            .iter()
            .filter(|s| f(s))
            .flat_map(|s| s.pids.clone())
            .collect();
        set.into_iter().collect()
    };
    let ss_pids = |f: &dyn Fn(&SsSock) -> bool| -> Vec<u32> {
        let set: BTreeSet<u32> = ss2
            .iter()
            .filter(|s| f(s))
            .flat_map(|s| s.pids.clone())
            .collect();
        set.into_iter().collect()
    };
    let leftover_table = Found::of(
        list2
            .iter()
            .filter(|s| {
                let tcp = s.proto == "tcp" && on(port, s.src_port, s.dst_port) && !is_listener(s);
                let udp =
                    s.proto == "udp" && on(udp_port, s.src_port, s.dst_port) && !is_receiver(s);
                tcp || udp
            })
            .map(|s| s.desc.clone()),
    );
    // Sockets the kernel keeps after the last descriptor went (FIN-WAIT-2,
    // TIME-WAIT: inode 0, no process) belong to nobody: sockmon rightly has
    // no owner to show for them, so they are not leftovers.
    let leftover_ss = Found::of(
        ss2.iter()
            .filter(|s| s.inode != 0)
            .filter(|s| {
                let at = |p| s.local_port == Some(p) || s.peer_port == Some(p);
                let tcp = s.proto == "tcp" && at(port) && !ss_listener(s);
                let udp = s.proto == "udp" && at(udp_port) && !ss_receiver(s);
                tcp || udp
            })
            .map(|s| s.desc.clone()),
    );
    let inodes_ss =
        |v: &[SsSock]| -> BTreeSet<u64> { v.iter().map(|s| s.inode).filter(|i| *i != 0).collect() };
    let (in_ss1, in_ss2) = (inodes_ss(ss1), inodes_ss(ss2));
    let in_list1: BTreeSet<u64> = list1.iter().map(|s| s.inode).collect();
    let in_list2: BTreeSet<u64> = list2.iter().map(|s| s.inode).collect();
    let stale = Found::of(
        list2
            .iter()
            .filter(|s| in_list1.contains(&s.inode) && !in_ss1.contains(&s.inode))
            .map(|s| s.desc.clone()),
    );
    let untracked = Found::of(
        ss1.iter()
            .filter(|s| s.inode != 0 && in_ss2.contains(&s.inode) && !in_list2.contains(&s.inode))
            .map(|s| s.desc.clone()),
    );
    let by_inode: BTreeMap<u64, &SsSock> = ss2
        .iter()
        .filter(|s| s.inode != 0)
        .map(|s| (s.inode, s))
        .collect();
    let both: Vec<(&TableSock, &SsSock)> = list2
        .iter()
        .filter_map(|t| Some((t, *by_inode.get(&t.inode)?)))
        .collect();
    let owners_differ = Found::of(
        both.iter()
            .filter(|(t, s)| !s.pids.is_empty() && t.pids != s.pids)
            .map(|(t, s)| format!("{} (ss: pids {:?})", t.desc, s.pids)),
    );
    Agreement {
        server_pid,
        listener: Owners {
            table: table_pids(&is_listener),
            ss: ss_pids(&ss_listener),
        },
        receiver: Owners {
            table: table_pids(&is_receiver),
            ss: ss_pids(&ss_receiver),
        },
        leftover_table,
        leftover_ss,
        stale,
        untracked,
        owners_differ,
        compared: both.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = r#"{"v":1,"time":"t","event":"connect","proto":"tcp","family":"ipv4","src_ip":"127.0.0.1","src_port":40312,"dst_ip":"127.0.0.1","dst_port":8080,"pid":1,"tid":1,"comm":"smchurn1","uid":0,"error":null}"#;
    const UDP_BIND: &str = r#"{"v":1,"time":"t","event":"bind","proto":"udp","family":"ipv4","src_ip":"0.0.0.0","src_port":8080,"dst_ip":"0.0.0.0","dst_port":0,"pid":1,"tid":1,"comm":"smchurn1","uid":0,"error":null,"implicit":true}"#;

    #[test]
    fn streams_count_only_their_own_events() {
        let ports = Select::Ports {
            tcp: 8080,
            udp: 9090,
        };
        let live = Live::default();
        // A UDP socket whose ephemeral port is numerically the listener's
        // belongs to the UDP stream, not the port stream.
        let other_tcp = TCP.replace("8080", "7070");
        let lost = r#"{"v":1,"event":"lost","cause":"subscriber_lagged","count":3}"#;
        let text = format!("{TCP}\n{UDP_BIND}\n{other_tcp}\n{lost}\n{TCP}\n");
        let t = count(std::io::Cursor::new(text.clone()), ports, &live);
        assert_eq!(t.by_kind, BTreeMap::from([("connect".into(), 2)]));
        assert_eq!((t.unrelated, t.lost["subscriber_lagged"]), (2, 3));
        let u = count(std::io::Cursor::new(text), Select::ChurnUdp, &live);
        assert_eq!(u.by_kind, BTreeMap::from([("bind".into(), 1)]));
        assert_eq!(live.events.load(Ordering::Relaxed), 3);
        assert_eq!(live.lost.load(Ordering::Relaxed), 6);
        // The server's own bind is not counted, its close is.
        let receiver = UDP_BIND.replace("8080", "9090");
        let close = receiver.replace("\"bind\"", "\"close\"");
        let r = count(
            std::io::Cursor::new(format!("{receiver}\n{close}\n")),
            ports,
            &Live::default(),
        );
        assert_eq!(r.by_kind, BTreeMap::from([("close".into(), 1)]));
        assert_eq!(r.unrelated, 1);
    }

    #[test]
    fn expected_events_per_connection_and_send() {
        let c = Churn {
            conns: 10,
            failed: 1,
            udp_sent: 5,
            ..Churn::default()
        };
        let e = expected_events(&c);
        assert_eq!(e["connect"], 11);
        assert_eq!(e["accept"], 10);
        assert_eq!(e["close"], 25);
        assert_eq!(e["bind"], 5);
        assert_eq!(total(&e), 51);
        let delivered = BTreeMap::from([("connect".into(), 11), ("close".into(), 26)]);
        let d = by_kind_difference(&e, &delivered);
        assert_eq!((d["close"], d["accept"], d["connect"]), (-1, 10, 0));
    }

    #[test]
    fn ss_lines_are_parsed() {
        let l = r#"tcp   ESTAB  0  0  127.0.0.1:40312  127.0.0.1:8080 users:(("my prog",pid=1234,fd=3),("x",pid=99,fd=4)) timer:(keepalive,1min,0) ino:2218331 sk:1 cgroup:/ <->"#;
        let s = parse_ss_line(l).unwrap();
        assert_eq!((s.proto.as_str(), s.state.as_str()), ("tcp", "ESTAB"));
        assert_eq!((s.local_port, s.peer_port), (Some(40312), Some(8080)));
        assert_eq!((s.inode, s.pids.clone()), (2218331, vec![99, 1234]));
        let u = parse_ss_line(
            "udp UNCONN 0 0 [::ffff:127.0.0.1]:53 *:* users:((\"d\",pid=7,fd=3)) ino:5 sk:2",
        )
        .unwrap();
        assert_eq!((u.local_port, u.peer_port, u.inode), (Some(53), None, 5));
        let tw = parse_ss_line(
            "tcp TIME-WAIT 0 0 127.0.0.1:35543 127.0.0.1:38080 timer:(timewait,43sec,0) ino:0 sk:1a3789",
        )
        .unwrap();
        assert_eq!((tw.inode, tw.pids.len()), (0, 0));
        assert!(parse_ss_line("garbage").is_none());
    }

    #[test]
    fn table_entries_are_parsed() {
        let v: Value = serde_json::from_str(
            r#"{"proto":"tcp","family":"ipv4","src_ip":"0.0.0.0","src_port":8080,"dst_ip":"0.0.0.0","dst_port":0,
            "state":"listen","inode":123456,"netns":4026531840,
            "owners":[{"pid":412,"tid":412},{"pid":12,"tid":13},{"pid":412,"tid":414}]}"#,
        )
        .unwrap();
        let t = table_sock(&v).unwrap();
        assert_eq!((t.src_port, t.dst_port, t.inode), (8080, 0, 123456));
        assert_eq!(t.pids, vec![12, 412]);
        assert_eq!((t.state.as_str(), t.netns), ("listen", 4026531840));
        assert!(table_sock(&serde_json::json!({"proto":"tcp"})).is_none());
    }

    fn tsock(proto: &str, src: u16, dst: u16, state: &str, inode: u64, pids: &[u32]) -> TableSock {
        TableSock {
            proto: proto.into(),
            src_port: src,
            dst_port: dst,
            state: state.into(),
            inode,
            netns: 1,
            pids: pids.to_vec(),
            desc: format!("{proto} {src}->{dst} {inode}"),
        }
    }

    fn ssock(
        proto: &str,
        state: &str,
        local: u16,
        peer: Option<u16>,
        inode: u64,
        pids: &[u32],
    ) -> SsSock {
        SsSock {
            proto: proto.into(),
            state: state.into(),
            local_port: Some(local),
            peer_port: peer,
            inode,
            pids: pids.to_vec(),
            desc: format!("{proto} {local} {inode}"),
        }
    }

    #[test]
    fn comparison_finds_leftovers_and_stale_entries() {
        let listener = tsock("tcp", 8080, 0, "listen", 1, &[10]);
        let receiver = tsock("udp", 9090, 0, "bound", 2, &[10]);
        let ss_l = ssock("tcp", "LISTEN", 8080, None, 1, &[10]);
        let ss_r = ssock("udp", "UNCONN", 9090, None, 2, &[10]);
        let clean = compare(
            10,
            8080,
            9090,
            &[listener.clone(), receiver.clone()],
            &[ss_l.clone(), ss_r.clone()],
            &[listener.clone(), receiver.clone()],
            &[ss_l.clone(), ss_r.clone()],
        );
        assert!(clean.met(), "{clean:?}");
        assert_eq!(clean.compared, 2);

        // A churn connection left in the table, a stale UDP socket (closed
        // in the kernel, still listed twice), a kernel socket the table
        // lacks, and a TIME-WAIT on the listener's port (nobody's: inode 0,
        // no process, so not a leftover).
        let left = tsock("tcp", 40000, 8080, "connected", 3, &[]);
        let stale_udp = tsock("udp", 45000, 0, "bound", 4, &[]);
        let mine = ssock("tcp", "ESTAB", 5000, Some(6000), 5, &[77]);
        let tw = ssock("tcp", "TIME-WAIT", 40001, Some(8080), 0, &[]);
        let list = [listener, receiver, left, stale_udp];
        let kernel = [ss_l, ss_r, mine, tw];
        let a = compare(10, 8080, 9090, &list, &kernel, &list, &kernel);
        assert!(!a.met());
        assert_eq!(a.leftover_table.count, 1);
        assert_eq!(a.leftover_ss.count, 0);
        assert_eq!(a.stale.count, 2, "{a:?}");
        assert_eq!(a.untracked.count, 1);
        assert_eq!(a.listener.table, vec![10]);

        // Owners that differ.
        let t = [tsock("tcp", 8080, 0, "listen", 1, &[10, 11])];
        let s = [ssock("tcp", "LISTEN", 8080, None, 1, &[10])];
        let o = compare(10, 8080, 9090, &t, &s, &t, &s);
        assert_eq!(o.owners_differ.count, 1);
        assert!(!o.met());
    }
}
