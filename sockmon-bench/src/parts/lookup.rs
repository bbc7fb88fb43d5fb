//! Part 4: "who owns this four-tuple?", with 10,000 live loopback
//! connections, through sockmon and through what a user would type instead.
//!
//! Methods, interleaved sample by sample over the same tuples:
//! - the daemon's API as a raw round trip (connect to the Unix socket, one
//!   `lookup` line, one response line): what a program pays;
//! - the same request on a connection kept open (a long-lived client), which
//!   separates the request's cost from the connection's set-up;
//! - `sockmon lookup SRC DST` as a whole command (spawn to exit);
//! - `ss -tnpH src SRC dst DST` (netlink dump filtered in the kernel, then
//!   `/proc/*/fd` scanned for the owner);
//! - `lsof -nP -iTCP@SRC` (every process's descriptors).
//!
//! The daemon is started first and the connections opened afterwards, so
//! the table is filled by events (the path sockmon exists for); the resident
//! memory before and after gives a second bytes-per-socket figure.

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use sockmon_testkit::holder::Connections;

use super::{Options, Part, TargetRow};
use crate::{
    api::Api,
    fmt::{bytes, fmt_f, group},
    procs::rss_bytes,
    stats::Percentiles,
    tools::Tools,
    tracers::{Attached, StartOptions, Tracer},
};

/// Part 4 of the report.
#[derive(Debug)]
pub struct Lookup;

impl Part for Lookup {
    type Plan = LookupPlan;
    type Results = LookupResults;
    const TITLES: &'static [&'static str] = &["Lookup: who owns this four-tuple?"];
    const NEEDS_DAEMON: bool = true;

    fn plan(o: &Options) -> LookupPlan {
        if o.quick {
            LookupPlan {
                lookup_conns: 1000,
                api_samples: 300,
                cli_samples: 20,
                ss_samples: 20,
                lsof_samples: 3,
            }
        } else {
            LookupPlan {
                lookup_conns: 10_000,
                api_samples: 5000,
                cli_samples: 300,
                ss_samples: 300,
                lsof_samples: 30,
            }
        }
    }

    fn run(plan: &LookupPlan, tools: &Tools) -> anyhow::Result<LookupResults> {
        run(plan, tools)
    }

    fn has_numbers(r: &LookupResults) -> bool {
        r.has_numbers()
    }

    fn section(_: usize, r: &LookupResults, s: &mut String) {
        table(s, r);
    }

    fn targets(r: Option<&LookupResults>, rows: &mut Vec<TargetRow>) {
        targets(rows, r);
    }
}

/// How many connections are held, and how many samples each method takes.
#[derive(Clone, Debug, Serialize)]
pub struct LookupPlan {
    pub lookup_conns: usize,
    pub api_samples: usize,
    pub cli_samples: usize,
    pub ss_samples: usize,
    pub lsof_samples: usize,
}

#[derive(Debug, Serialize)]
pub struct LookupResults {
    pub connections: usize,
    pub sockets_held: usize,
    pub table_sockets_before: u64,
    pub table_sockets_after: u64,
    /// Time from starting the holder until the table had its sockets.
    pub fill_secs: f64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub methods: Vec<Method>,
}

#[derive(Debug, Serialize)]
pub struct Method {
    pub name: &'static str,
    /// Latency in microseconds.
    pub latency_us: Option<Percentiles>,
    pub samples: usize,
    /// Samples that found the socket.
    pub hits: usize,
    pub errors: usize,
    #[serde(skip)]
    raw: Vec<f64>,
}

impl Method {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            latency_us: None,
            samples: 0,
            hits: 0,
            errors: 0,
            raw: Vec::new(),
        }
    }

    fn record(&mut self, r: anyhow::Result<(Duration, bool)>) {
        self.samples += 1;
        match r {
            Ok((d, hit)) => {
                self.raw.push(d.as_secs_f64() * 1e6);
                self.hits += usize::from(hit);
            }
            Err(_) => self.errors += 1,
        }
    }
}

pub const API: &str = "sockmon API round trip";
pub const API_OPEN: &str = "sockmon API, request on an open connection";
pub const CLI: &str = "sockmon lookup (command)";
pub const SS: &str = "ss -tnpH src … dst …";
pub const LSOF: &str = "lsof -nP -iTCP@…";

fn run(plan: &LookupPlan, tools: &Tools) -> anyhow::Result<LookupResults> {
    let daemon = Attached::start(Tracer::Sockmon, &tools.sockmon, StartOptions::default())?;
    let (pid, socket) = (
        daemon.pid().context("no daemon pid")?,
        daemon.api_socket.clone().context("no API socket")?,
    );
    let api = Api::new(&socket);
    thread::sleep(Duration::from_millis(300));
    let before = api.status()?.table_sockets;
    let rss_before = rss_bytes(pid)?;
    let t0 = Instant::now();
    let holder = tools.hold(plan.lookup_conns)?;
    let after = api.wait_table(|n| n >= before + holder.held.sockets as u64)?;
    let fill_secs = t0.elapsed().as_secs_f64();
    let rss_after = rss_bytes(pid)?;
    eprintln!(
        "xtask bench: lookup: {} sockets held, table {before} → {after}",
        holder.held.sockets
    );
    let methods = sample(plan, tools, &api, &socket, &holder)?;
    let sockets_held = holder.held.sockets;
    holder.stop()?;
    daemon.stop()?;
    Ok(LookupResults {
        connections: plan.lookup_conns,
        sockets_held,
        table_sockets_before: before,
        table_sockets_after: after,
        fill_secs,
        rss_before,
        rss_after,
        methods,
    })
}

/// Interleaves the methods over the sampled tuples: in each slot one
/// command of each kind and a share of the API round trips.
fn sample(
    plan: &LookupPlan,
    tools: &Tools,
    api: &Api,
    socket: &std::path::Path,
    holder: &Connections,
) -> anyhow::Result<Vec<Method>> {
    let tuples = &holder.held.sample;
    anyhow::ensure!(!tuples.is_empty(), "the holder reported no connections");
    let mut m = [
        Method::new(API),
        Method::new(API_OPEN),
        Method::new(CLI),
        Method::new(SS),
        Method::new(LSOF),
    ];
    // What a long-lived client pays: no connection set-up per request.
    let mut open = api.open()?;
    let slots = plan.cli_samples.max(plan.ss_samples).max(1);
    let api_per_slot = plan.api_samples.div_ceil(slots);
    let lsof_every = (slots / plan.lsof_samples.max(1)).max(1);
    let mut k = 0usize;
    let mut next = || {
        k += 1;
        let (c, s) = tuples[k % tuples.len()];
        (format!("127.0.0.1:{c}"), format!("127.0.0.1:{s}"))
    };
    for slot in 0..slots {
        for _ in 0..api_per_slot.min(plan.api_samples - m[0].samples) {
            let (src, dst) = next();
            m[0].record(api.lookup(&src, &dst));
            m[1].record(open.lookup(&src, &dst));
        }
        let (src, dst) = next();
        if slot < plan.cli_samples {
            m[2].record(run_cmd(
                Command::new(&tools.sockmon.bin)
                    .args(["lookup", &src, &dst, "--proto", "tcp", "--socket"])
                    .arg(socket),
            ));
        }
        if slot < plan.ss_samples {
            m[3].record(run_cmd(
                Command::new("ss").args(["-tnpH", "src", &src, "dst", &dst]),
            ));
        }
        if slot % lsof_every == 0 && m[4].samples < plan.lsof_samples {
            m[4].record(run_cmd(
                Command::new("lsof").args(["-nP", &format!("-iTCP@{src}")]),
            ));
        }
    }
    for x in &mut m {
        x.latency_us = Percentiles::of(&x.raw);
    }
    Ok(m.into())
}

/// Runs a command to completion, reading its output as a script would;
/// returns its wall time and whether it found something (exit 0 and some
/// output).
fn run_cmd(cmd: &mut Command) -> anyhow::Result<(Duration, bool)> {
    cmd.stdin(Stdio::null()).stderr(Stdio::null());
    let t0 = Instant::now();
    let out = cmd.output()?;
    let d = t0.elapsed();
    Ok((d, out.status.success() && !out.stdout.is_empty()))
}

impl LookupResults {
    pub fn has_numbers(&self) -> bool {
        self.methods
            .iter()
            .filter(|m| m.name == API || m.name == CLI)
            .all(|m| m.latency_us.is_some())
    }

    pub fn method(&self, name: &str) -> Option<&Method> {
        self.methods.iter().find(|m| m.name == name)
    }
}

fn table(s: &mut String, l: &LookupResults) {
    let _ = writeln!(
        s,
        "{} connections ({} sockets) held by helper processes; the daemon's table went from {} to {} sockets in {:.1} s (filled by events); its RSS from {} to {} ({} bytes per table entry).\n",
        group(l.connections as f64),
        group(l.sockets_held as f64),
        group(l.table_sockets_before as f64),
        group(l.table_sockets_after as f64),
        l.fill_secs,
        bytes(l.rss_before as f64),
        bytes(l.rss_after as f64),
        fmt_f(
            (l.rss_after as f64 - l.rss_before as f64)
                / (l.table_sockets_after as f64 - l.table_sockets_before as f64),
            0
        )
    );
    let api = l.method(API).and_then(|m| m.latency_us);
    let _ = writeln!(
        s,
        "| method | p50 µs | p99 µs | [min–max] µs | samples | found | p50 / API p50 | p99 / API p99 |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for m in &l.methods {
        let (p50, p99, range, r50, r99) = match (m.latency_us, api) {
            (Some(p), a) => (
                fmt_f(p.p50, 1),
                fmt_f(p.p99, 1),
                format!("[{}–{}]", fmt_f(p.min, 1), fmt_f(p.max, 1)),
                a.map_or("–".into(), |a| format!("{}×", fmt_f(p.p50 / a.p50, 1))),
                a.map_or("–".into(), |a| format!("{}×", fmt_f(p.p99 / a.p99, 1))),
            ),
            (None, _) => ("–".into(), "–".into(), "–".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {p50} | {p99} | {range} | {} | {} | {r50} | {r99} |",
            m.name, m.samples, m.hits
        );
    }
    s.push('\n');
}

fn targets(rows: &mut Vec<TargetRow>, l: Option<&LookupResults>) {
    let lat = |name: &str| l.and_then(|l| l.method(name)).and_then(|m| m.latency_us);
    let (api, ss) = (lat(API), lat(SS));
    rows.push((
        "lookup p99 < 100 µs on the API path".into(),
        api.map_or("–".into(), |a| {
            format!("p99 {} µs (p50 {} µs)", fmt_f(a.p99, 1), fmt_f(a.p50, 1))
        }),
        api.map(|a| a.p99 < 100.0),
    ));
    rows.push((
        "lookup ≥ 100× faster than `ss -tnp` (API path)".into(),
        match (api, ss) {
            (Some(a), Some(s)) => format!(
                "{}× at p50, {}× at p99",
                fmt_f(s.p50 / a.p50, 0),
                fmt_f(s.p99 / a.p99, 0)
            ),
            _ => "–".into(),
        },
        api.zip(ss).map(|(a, s)| s.p50 / a.p50 >= 100.0),
    ));
}
