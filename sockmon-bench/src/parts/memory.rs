//! Part 5: the daemon's resident memory per live socket.
//!
//! Each round starts a fresh daemon (freed memory is not returned to the
//! system, so a daemon is never reused across rounds), reads its VmRSS with
//! nothing held, then for each size opens that many sockets in holder
//! processes, waits until the table holds them (filled by events, the path
//! a running daemon lives on), reads VmRSS and the table size, and closes
//! them again. Bytes per socket is the least-squares slope of RSS over the
//! table's size across every reading: the table also holds the machine's
//! other sockets, which other people's jobs open and close meanwhile. The
//! fit leaves the empty daemon out when it can (see [`fit_points`]).

use std::fmt::Write as _;

use anyhow::Context as _;
use serde::Serialize;

use super::{Options, Part, TargetRow};
use crate::{
    api::Api,
    fmt::{fmt_bytes, fmt_f, fmt_sum, group},
    procs::rss_bytes,
    stats::{Summary, slope},
    tools::Tools,
    tracers::{Attached, StartOptions, Tracer},
};

/// Part 5 of the report.
#[derive(Debug)]
pub struct Memory;

impl Part for Memory {
    type Plan = MemoryPlan;
    type Results = MemoryResults;
    const TITLES: &'static [&'static str] = &["Memory"];
    const NEEDS_DAEMON: bool = true;

    fn plan(o: &Options) -> MemoryPlan {
        let mut p = if o.quick {
            MemoryPlan {
                memory_sockets: vec![0, 5000],
                memory_rounds: 1,
            }
        } else {
            MemoryPlan {
                memory_sockets: vec![0, 10_000, 100_000],
                memory_rounds: 5,
            }
        };
        if let Some(r) = o.rounds {
            p.memory_rounds = usize::from(r);
        }
        p
    }

    fn run(plan: &MemoryPlan, tools: &Tools) -> anyhow::Result<MemoryResults> {
        run(plan, tools)
    }

    fn has_numbers(r: &MemoryResults) -> bool {
        r.has_numbers()
    }

    fn section(_: usize, r: &MemoryResults, s: &mut String) {
        table(s, r);
    }

    fn targets(r: Option<&MemoryResults>, rows: &mut Vec<TargetRow>) {
        target(rows, r);
    }
}

/// The sizes memory is read at, and how many fresh daemons read them.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryPlan {
    /// Live sockets at which memory is measured.
    pub memory_sockets: Vec<usize>,
    pub memory_rounds: usize,
}

#[derive(Debug, Serialize)]
pub struct MemoryResults {
    pub steps: Vec<Step>,
    /// Slope of RSS over table size, in bytes per socket.
    pub bytes_per_socket: Option<f64>,
    /// Which readings the slope is fitted to.
    pub slope_basis: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub target_sockets: usize,
    pub held_sockets: usize,
    pub table_sockets: Option<Summary>,
    pub rss_bytes: Option<Summary>,
    /// (median RSS − first step's) / (median table size − first step's).
    pub bytes_per_socket: Option<f64>,
    /// (table size, RSS) of each round.
    pub readings: Vec<(f64, f64)>,
}

fn run(plan: &MemoryPlan, tools: &Tools) -> anyhow::Result<MemoryResults> {
    let sizes = &plan.memory_sockets;
    let mut readings = vec![Vec::new(); sizes.len()];
    let mut held = vec![0; sizes.len()];
    for r in 0..plan.memory_rounds {
        eprintln!("xtask bench: memory round {}/{}", r + 1, plan.memory_rounds);
        let daemon = Attached::start(Tracer::Sockmon, &tools.sockmon, StartOptions::default())?;
        let api = Api::new(daemon.api_socket.as_deref().context("no API socket")?);
        let pid = daemon.pid().context("no daemon pid")?;
        for (i, &n) in sizes.iter().enumerate() {
            let (h, reading) = reading(tools, &api, pid, n)?;
            held[i] = h;
            readings[i].push(reading);
        }
        daemon.stop()?;
    }
    let mut steps: Vec<Step> = sizes
        .iter()
        .zip(held)
        .zip(readings)
        .map(|((&n, h), rs)| step(n, h, rs))
        .collect();
    relative_to_first(&mut steps);
    let (fit, slope_basis) = fit_points(&steps);
    Ok(MemoryResults {
        bytes_per_socket: slope(&fit),
        slope_basis,
        steps,
    })
}

/// The readings the slope is fitted to. The daemon's first allocations
/// reuse heap it freed after loading (BTF parsing leaves megabytes free), so
/// RSS understates the first thousands of sockets; with two sizes of held
/// sockets the fit uses those only.
fn fit_points(steps: &[Step]) -> (Vec<(f64, f64)>, &'static str) {
    let held: Vec<&Step> = steps.iter().filter(|s| s.held_sockets > 0).collect();
    if held.len() >= 2 {
        let pts = held.iter().flat_map(|s| s.readings.clone()).collect();
        (pts, "every reading with sockets held")
    } else {
        let pts = steps.iter().flat_map(|s| s.readings.clone()).collect();
        (pts, "every reading")
    }
}

/// Opens `sockets` sockets, waits for the table, reads (table, RSS), closes
/// them and waits for the table to shrink back.
fn reading(
    tools: &Tools,
    api: &Api,
    pid: u32,
    sockets: usize,
) -> anyhow::Result<(usize, (f64, f64))> {
    let base = api.status()?.table_sockets;
    let holder = match sockets {
        0 => None,
        n => Some(tools.hold(n / 2)?),
    };
    let held = holder.as_ref().map_or(0, |h| h.held.sockets);
    let table = match held {
        0 => base,
        h => api.wait_table(|n| n >= base + h as u64)?,
    };
    let rss = rss_bytes(pid)?;
    if let Some(h) = holder {
        h.stop()?;
        api.wait_table(|n| n <= base)?;
    }
    Ok((held, (table as f64, rss as f64)))
}

fn step(target: usize, held: usize, readings: Vec<(f64, f64)>) -> Step {
    let col = |f: fn(&(f64, f64)) -> f64| readings.iter().map(f).collect::<Vec<_>>();
    Step {
        target_sockets: target,
        held_sockets: held,
        table_sockets: Summary::of(&col(|r| r.0)),
        rss_bytes: Summary::of(&col(|r| r.1)),
        bytes_per_socket: None,
        readings,
    }
}

fn relative_to_first(steps: &mut [Step]) {
    let medians = |s: &Step| Some((s.table_sockets?.median, s.rss_bytes?.median));
    let base = steps.first().and_then(medians);
    for s in steps.iter_mut() {
        s.bytes_per_socket = match (base, medians(s)) {
            (Some((t0, r0)), Some((t, r))) if t > t0 => Some((r - r0) / (t - t0)),
            _ => None,
        };
    }
}

impl MemoryResults {
    pub fn has_numbers(&self) -> bool {
        self.steps.iter().any(|s| s.rss_bytes.is_some())
    }
}

fn table(s: &mut String, m: &MemoryResults) {
    let _ = writeln!(
        s,
        "A fresh daemon per round; sockets opened after it is READY (the table fills from events).\n"
    );
    let _ = writeln!(
        s,
        "| sockets held | daemon table | daemon RSS | bytes per table entry (vs first row) |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|");
    for st in &m.steps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            group(st.held_sockets as f64),
            fmt_sum(st.table_sockets, 0),
            fmt_bytes(st.rss_bytes),
            st.bytes_per_socket.map_or("–".into(), |b| fmt_f(b, 0)),
        );
    }
    let _ = writeln!(
        s,
        "\nSlope of RSS over the table's size (least squares over {}; the table also holds the machine's other sockets): {} bytes per socket.\n",
        m.slope_basis,
        m.bytes_per_socket.map_or("–".into(), |b| fmt_f(b, 0))
    );
}

fn target(rows: &mut Vec<TargetRow>, m: Option<&MemoryResults>) {
    let slope = m.and_then(|m| m.bytes_per_socket);
    rows.push((
        "< 300 bytes per socket".into(),
        slope.map_or("–".into(), |b| {
            format!("{} bytes/socket (slope)", fmt_f(b, 0))
        }),
        slope.map(|b| b < 300.0),
    ));
}
