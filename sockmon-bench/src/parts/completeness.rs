//! Part 3: does sockmon miss anything at full speed?
//!
//! The connection loop runs flat out (one client per core) while sockmon is
//! attached and its event stream is read: `watch --json`'s stdout, or a
//! daemon `subscribe` filtered to the workload's port. Events for that port
//! are counted against what the workload did: per connection a connect, its
//! `connect_result`, an accept and two closes (a failed connect: its connect
//! and its result), plus the listener's bind, listen and close. Drops
//! are sockmon's own kernel-side counters (`lost` records from `watch`, the
//! daemon's `status.dropped`); they are machine-wide, so they bound the
//! workload's drops from above. `missing = expected − delivered − dropped`:
//! anything neither delivered nor counted as dropped. The run is repeated
//! for each ring-buffer size to find the one at which nothing drops.

use std::{
    fmt::Write as _,
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::{Ipv4Addr, TcpListener, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use super::{Options, Part, TargetRow};
use crate::{
    api::{self, Api, delta},
    events::raw_field,
    fmt::{group, one_line},
    tools::Tools,
    tracers::{Attached, StartOptions, Tracer},
    worker::{Job, Measured},
};

/// Part 3 of the report.
#[derive(Debug)]
pub struct Completeness;

impl Part for Completeness {
    type Plan = CompletenessPlan;
    type Results = CompletenessResults;
    const TITLES: &'static [&'static str] = &["Completeness at full speed"];
    const NEEDS_DAEMON: bool = false;

    fn plan(o: &Options) -> CompletenessPlan {
        if o.quick {
            CompletenessPlan {
                flood_s: 3.0,
                rings_kib: vec![4096, 65536],
            }
        } else {
            CompletenessPlan {
                flood_s: 10.0,
                rings_kib: vec![1024, 4096, 16384, 65536],
            }
        }
    }

    fn run(plan: &CompletenessPlan, tools: &Tools) -> anyhow::Result<CompletenessResults> {
        run(plan, tools)
    }

    fn has_numbers(r: &CompletenessResults) -> bool {
        r.has_numbers()
    }

    fn section(_: usize, r: &CompletenessResults, s: &mut String) {
        table(s, r);
    }

    fn targets(c: Option<&CompletenessResults>, rows: &mut Vec<TargetRow>) {
        rows.push((
            "zero events missing at full rate".into(),
            c.map_or("–".into(), |c| {
                let missing: i64 = c.runs.iter().map(|x| x.missing).sum();
                let dropped: u64 = c.runs.iter().map(|x| x.dropped).sum();
                format!(
                    "missing {missing} and dropped {} over {} runs; zero-loss ring: {}",
                    group(dropped as f64),
                    c.runs.len(),
                    c.zero_loss_ring_kib
                        .map_or("none".into(), |k| format!("{k} KiB"))
                )
            }),
            c.filter(|c| !c.runs.is_empty())
                .map(|c| c.runs.iter().all(|x| x.missing == 0)),
        ));
    }
}

/// How long the flood runs, and the ring sizes it is run with.
#[derive(Clone, Debug, Serialize)]
pub struct CompletenessPlan {
    pub flood_s: f64,
    pub rings_kib: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct CompletenessResults {
    pub runs: Vec<FloodRun>,
    /// The smallest ring (KiB) at which no run dropped or missed anything.
    pub zero_loss_ring_kib: Option<u32>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FloodRun {
    pub ring_kib: u32,
    pub secs: f64,
    pub connections: u64,
    pub connections_per_s: f64,
    pub failed_connects: u64,
    pub expected: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub missing: i64,
    pub delivered_by_kind: BTreeMap<String, u64>,
    pub dropped_by_cause: BTreeMap<String, u64>,
    /// sockmon's CPU use during the run, in cores.
    pub sockmon_cores: f64,
}

fn run(plan: &CompletenessPlan, tools: &Tools) -> anyhow::Result<CompletenessResults> {
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for &ring in &plan.rings_kib {
        eprintln!(
            "xtask bench: completeness: ring {ring} KiB, {} s flat out",
            plan.flood_s
        );
        match flood(plan, tools, ring) {
            Ok(r) => runs.push(r),
            Err(e) => errors.push(format!("ring {ring} KiB: {e:#}")),
        }
    }
    let zero_loss_ring_kib = runs
        .iter()
        .filter(|r| r.dropped == 0 && r.missing == 0 && r.connections > 0)
        .map(|r| r.ring_kib)
        .min();
    Ok(CompletenessResults {
        runs,
        zero_loss_ring_kib,
        errors,
    })
}

impl CompletenessResults {
    pub fn has_numbers(&self) -> bool {
        self.runs.iter().any(|r| r.connections > 0)
    }
}

/// Live progress of the stream reader, for deciding when the stream is done.
#[derive(Default)]
struct Live {
    delivered: AtomicU64,
    lost: AtomicU64,
}

/// What the stream carried.
#[derive(Clone, Debug, Default)]
struct Tally {
    by_kind: BTreeMap<String, u64>,
    lost: BTreeMap<String, u64>,
}

type Stream = Box<dyn BufRead + Send>;

fn flood(plan: &CompletenessPlan, tools: &Tools, ring: u32) -> anyhow::Result<FloodRun> {
    let port = free_port()?;
    let opts = StartOptions {
        ring_kib: Some(ring),
        keep_stdout: true,
    };
    let mut attached = Attached::start(Tracer::Sockmon, &tools.sockmon, opts)?;
    let api = attached.api_socket.as_deref().map(Api::new);
    let (stream, base): (Stream, BTreeMap<String, u64>) = match (&api, attached.stdout.take()) {
        (Some(api), _) => (Box::new(api.subscribe(port)?), api.status()?.dropped),
        (None, Some(out)) => (
            Box::new(BufReader::with_capacity(1 << 20, out)),
            BTreeMap::new(),
        ),
        (None, None) => anyhow::bail!("sockmon gave no event stream"),
    };
    let live = Arc::new(Live::default());
    let reader = {
        let live = Arc::clone(&live);
        thread::spawn(move || count_stream(stream, port, &live))
    };
    let cpu0 = attached.cpu_seconds()?;
    let job = Job::Rate {
        threads: tools.cores,
        secs: plan.flood_s,
        warmup: 0.0,
        port,
        per_sec: 0.0,
    };
    let t0 = Instant::now();
    let m = tools.run_worker(&job)?;
    let cores = (attached.cpu_seconds()? - cpu0) / t0.elapsed().as_secs_f64();
    attached.ensure_running()?;
    // Each connection: connect, its connect_result, accept, two closes (a
    // failed one: connect and result); the listener: bind, listen, close.
    let expected = 5 * m.total_ops + 2 * m.failed + 3;
    let kernel_dropped = settle(&live, expected, api.as_ref(), &base)?;
    attached.stop()?;
    let tally = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stream reader panicked"))??;
    Ok(summarise(ring, &m, expected, tally, kernel_dropped, cores))
}

fn summarise(
    ring: u32,
    m: &Measured,
    expected: u64,
    tally: Tally,
    kernel_dropped: BTreeMap<String, u64>,
    cores: f64,
) -> FloodRun {
    let mut dropped_by_cause = tally.lost;
    for (k, v) in kernel_dropped {
        *dropped_by_cause.entry(k).or_default() += v;
    }
    let delivered: u64 = tally.by_kind.values().sum();
    let dropped: u64 = dropped_by_cause.values().sum();
    FloodRun {
        ring_kib: ring,
        secs: m.secs,
        connections: m.total_ops,
        connections_per_s: m.rate(),
        failed_connects: m.failed,
        expected,
        delivered,
        dropped,
        missing: expected as i64 - delivered as i64 - dropped as i64,
        delivered_by_kind: tally.by_kind,
        dropped_by_cause,
        sockmon_cores: cores,
    }
}

/// A port nothing listens on now (the workload binds it next).
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until the stream has carried (or sockmon has counted as dropped)
/// everything expected, or has stopped moving. Returns the kernel-side drops
/// seen through the daemon's status (empty for `watch`, whose drops arrive
/// in the stream).
///
/// `watch` reports drops in the stream only when it reads a batch at least a
/// second after its last check, so while waiting this makes a harmless
/// event every 200 ms (a UDP bind on another port) to give it batches.
fn settle(
    live: &Live,
    expected: u64,
    api: Option<&Api>,
    base: &BTreeMap<String, u64>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    const STILL: Duration = Duration::from_millis(1500);
    const MAX: Duration = Duration::from_secs(20);
    let start = Instant::now();
    let (mut last, mut moved) = (u64::MAX, Instant::now());
    loop {
        let kernel = match api {
            Some(api) => delta(&api.status()?.dropped, base),
            None => BTreeMap::new(),
        };
        let kernel_sum = api::kernel_drops(&kernel);
        let seen =
            live.delivered.load(Ordering::Relaxed) + live.lost.load(Ordering::Relaxed) + kernel_sum;
        if seen != last {
            (last, moved) = (seen, Instant::now());
        }
        let waited_a_check = start.elapsed() > Duration::from_millis(1200);
        if (seen >= expected && waited_a_check) || moved.elapsed() > STILL || start.elapsed() > MAX
        {
            // subscriber_lagged is counted from the stream's own `lost` line.
            return Ok(kernel
                .into_iter()
                .filter(|(k, _)| k != api::SUBSCRIBER_LAGGED)
                .collect());
        }
        tick()?;
        thread::sleep(Duration::from_millis(200));
    }
}

fn tick() -> anyhow::Result<()> {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(())
}

/// Reads NDJSON events until EOF, counting those on `port` by kind and all
/// `lost` records by cause.
fn count_stream(mut r: Stream, port: u16, live: &Live) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(tally);
        }
        match scan(&line) {
            Line::Event {
                kind,
                src_port,
                dst_port,
            } if src_port == Some(port) || dst_port == Some(port) => {
                *tally.by_kind.entry(kind.to_string()).or_default() += 1;
                live.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Line::Lost { cause, count } => {
                *tally.lost.entry(cause.to_string()).or_default() += count;
                live.lost.fetch_add(count, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

#[derive(Debug, PartialEq)]
enum Line<'a> {
    Event {
        kind: &'a str,
        src_port: Option<u16>,
        dst_port: Option<u16>,
    },
    Lost {
        cause: &'a str,
        count: u64,
    },
    Other,
}

/// Picks the few fields this part needs out of an event line without
/// building a JSON tree (the reader must keep up with sockmon at full speed).
fn scan(line: &str) -> Line<'_> {
    match raw_field(line, "event") {
        Some("lost") => Line::Lost {
            cause: raw_field(line, "cause").unwrap_or("unknown"),
            count: raw_field(line, "count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
        },
        Some(kind) => Line::Event {
            kind,
            src_port: raw_field(line, "src_port").and_then(|p| p.parse().ok()),
            dst_port: raw_field(line, "dst_port").and_then(|p| p.parse().ok()),
        },
        None => Line::Other,
    }
}

fn table(s: &mut String, c: &CompletenessResults) {
    let _ = writeln!(
        s,
        "| ring KiB | s | connections | conn/s | expected events | delivered | dropped (counted) | missing | sockmon CPU (cores) |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &c.runs {
        let causes: Vec<String> = r
            .dropped_by_cause
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {}", group(*v as f64)))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {:.1} | {} | {} | {} | {} | {}{} | {} | {:.2} |",
            r.ring_kib,
            r.secs,
            group(r.connections as f64),
            group(r.connections_per_s),
            group(r.expected as f64),
            group(r.delivered as f64),
            group(r.dropped as f64),
            if causes.is_empty() {
                String::new()
            } else {
                format!(" ({})", causes.join(", "))
            },
            r.missing,
            r.sockmon_cores
        );
    }
    let _ = writeln!(
        s,
        "\nSmallest ring with nothing dropped or missing: {}.\n",
        c.zero_loss_ring_kib
            .map_or("none of those tried".into(), |k| format!("{k} KiB"))
    );
    for e in &c.errors {
        let _ = writeln!(s, "- error: `{}`", one_line(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"v":1,"time":"2026-11-26T12:00:00.000000001Z","event":"connect","proto":"tcp","family":"ipv4","src_ip":"127.0.0.1","src_port":40312,"dst_ip":"127.0.0.1","dst_port":8080,"pid":1,"tid":1,"comm":"a\"src_port\":1","uid":0,"error":null}"#;

    #[test]
    fn scans_events_and_losses() {
        assert_eq!(
            scan(EVENT),
            Line::Event {
                kind: "connect",
                src_port: Some(40312),
                dst_port: Some(8080)
            }
        );
        let lost = r#"{"v":1,"time":"t","event":"lost","cause":"ring_full","count":17}"#;
        assert_eq!(
            scan(lost),
            Line::Lost {
                cause: "ring_full",
                count: 17
            }
        );
        assert_eq!(scan("{\"ok\":true}"), Line::Other);
    }

    #[test]
    fn counts_only_the_port() {
        let other = EVENT.replace("8080", "9090");
        let lost = r#"{"event":"lost","cause":"ring_full","count":5}"#;
        let text = format!("{EVENT}\n{other}\n{lost}\n{EVENT}\n");
        let live = Live::default();
        let tally = count_stream(Box::new(std::io::Cursor::new(text)), 8080, &live).unwrap();
        assert_eq!(tally.by_kind["connect"], 2);
        assert_eq!(tally.lost["ring_full"], 5);
        assert_eq!(live.delivered.load(Ordering::Relaxed), 2);
    }
}
