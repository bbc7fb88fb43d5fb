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
//! connect, its `connect_result`, an accept and two closes; per UDP send: an implicit bind and a
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
//!
//! One file per phase: [`server`] (the long-lived side, started first),
//! [`streams`] (the subscriptions that count while it runs, and the wait
//! for them to go quiet), [`churn`] (the short-lived processes),
//! [`agreement`] (the comparison with `ss` at the end), [`accounting`]
//! (expected, delivered, dropped, missing); [`report`] is how it reads.


mod accounting;
mod agreement;
mod churn;
mod report;
mod server;
mod streams;

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

pub use agreement::{Agreement, Found, Owners};

use super::{Options, Part, TargetRow};
use crate::{
    api::Api,
    procs::rss_bytes,
    tools::Tools,
    tracers::{Attached, StartOptions, Tracer},
    worker::{Job, Served},
};

/// Part 7 of the report.
#[derive(Debug)]
pub struct Soak;

impl Part for Soak {
    type Plan = SoakPlan;
    type Results = SoakResults;
    const TITLES: &'static [&'static str] = &["Soak"];
    const NEEDS_DAEMON: bool = true;

    fn plan(o: &Options) -> SoakPlan {
        SoakPlan {
            soak_s: if o.quick { 5.0 } else { 180.0 },
            soak_procs: 4,
            soak_conns: 200,
            soak_udp: 50,
        }
    }

    fn run(plan: &SoakPlan, tools: &Tools) -> anyhow::Result<SoakResults> {
        run(plan, tools)
    }

    fn has_numbers(r: &SoakResults) -> bool {
        r.has_numbers()
    }

    fn section(_: usize, r: &SoakResults, s: &mut String) {
        report::table(s, r);
    }

    fn targets(r: Option<&SoakResults>, rows: &mut Vec<TargetRow>) {
        report::targets(rows, r);
    }
}

/// How long the soak churns, and how hard.
#[derive(Clone, Debug, Serialize)]
pub struct SoakPlan {
    /// How long the soak keeps starting churn processes.
    pub soak_s: f64,
    /// Churn processes running at a time.
    pub soak_procs: usize,
    /// TCP connections and UDP sends (each from a fresh socket) per churn
    /// process.
    pub soak_conns: u64,
    pub soak_udp: u64,
}

/// Pause before reading RSS after a step, so the daemon is done with it.
const SETTLE: Duration = Duration::from_millis(200);
/// The longest wait for the stream to catch up after the churn.
const QUIET_MAX: Duration = Duration::from_secs(60);
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

/// The churn's shape: for how long, how many processes at a time, and what
/// each does.
struct Shape {
    secs: f64,
    procs: usize,
    conns: u64,
    udp: u64,
}

fn run(plan: &SoakPlan, tools: &Tools) -> anyhow::Result<SoakResults> {
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
    let server = server::Server::start(tools, shape.procs)?;
    let (port, udp_port) = (server.served.port, server.served.udp_port);
    let comm = churn::comm();
    let streams = streams::Streams::open(&api, port, udp_port, &comm)?;
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
    let churn = churn::run(tools, &shape, &job, &mut daemon)?;
    let daemon_cores = (daemon.cpu_seconds()? - cpu0) / churn.secs.max(1e-9);
    let churn_end = Instant::now();

    let mut expected = accounting::expected_events(&churn);
    streams::wait_quiet(
        &streams.live,
        accounting::total(&expected),
        &api,
        &base,
        QUIET_MAX,
    )?;
    let quiet_after_s = churn_end.elapsed().as_secs_f64();
    let rss_end = rss_bytes(pid)?;
    let end = api.status()?;
    let agreement = agreement::agree(&api, server.served.pid, port, udp_port)
        .map_err(|e| errors.push(format!("comparison with ss: {e:#}")))
        .ok();
    daemon.ensure_running()?;

    // The server's two sockets close when it stops.
    let served = server.stop()?;
    *expected.entry("close".into()).or_default() += 2;
    let kernel = streams::wait_quiet(
        &streams.live,
        accounting::total(&expected),
        &api,
        &base,
        Duration::from_secs(10),
    )?;
    daemon.stop()?;
    let tally = streams.join(&mut errors);

    let counts = accounting::Counts::new(expected, &tally, kernel);
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
        expected: counts.expected,
        expected_by_kind: counts.expected_by_kind,
        delivered: counts.delivered,
        delivered_by_kind: tally.by_kind,
        unrelated: tally.unrelated,
        dropped: counts.dropped,
        dropped_by_cause: counts.dropped_by_cause,
        dropped_events: counts.dropped_events,
        missing: counts.missing,
        missing_by_kind: counts.missing_by_kind,
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
