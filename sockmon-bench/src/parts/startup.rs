//! Part 6: time from starting `sockmon daemon` to READY with sockets already
//! open (the daemon must snapshot them before it can answer for them),
//! against `ss -tunap` listing the same sockets.
//!
//! For each size, holder processes open the sockets first; then, per round
//! and in alternating order, `ss -tunap` runs (spawn to exit, output
//! discarded) and the daemon is started and stopped. READY is detected
//! exactly: the daemon's sd_notify `READY=1` datagram on a NOTIFY_SOCKET of
//! ours. Right after READY the table size and resident memory are read too,
//! which shows whether the snapshot really holds the open sockets.

use std::{fmt::Write as _, process::Command, thread, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use super::{Options, Part, TargetRow};
use crate::{
    api::Api,
    fmt::{fmt_bytes, fmt_f, fmt_sum, group},
    procs::rss_bytes,
    stats::{Summary, paired_ratios},
    tools::{Tools, time_command},
    tracers::{Attached, StartOptions, Tracer},
};

/// Part 6 of the report.
#[derive(Debug)]
pub struct Startup;

impl Part for Startup {
    type Plan = StartupPlan;
    type Results = StartupResults;
    const TITLES: &'static [&'static str] = &["Start-up with sockets already open"];
    const NEEDS_DAEMON: bool = true;

    fn plan(o: &Options) -> StartupPlan {
        let mut p = if o.quick {
            StartupPlan {
                startup_sockets: vec![0, 5000],
                startup_rounds: 3,
            }
        } else {
            StartupPlan {
                startup_sockets: vec![0, 10_000, 100_000],
                startup_rounds: 5,
            }
        };
        if let Some(r) = o.rounds {
            p.startup_rounds = usize::from(r);
        }
        p
    }

    fn run(plan: &StartupPlan, tools: &Tools) -> anyhow::Result<StartupResults> {
        run(plan, tools)
    }

    fn has_numbers(r: &StartupResults) -> bool {
        r.has_numbers()
    }

    fn section(_: usize, r: &StartupResults, s: &mut String) {
        table(s, r);
    }

    fn targets(r: Option<&StartupResults>, rows: &mut Vec<TargetRow>) {
        target(rows, r);
    }
}

/// The sockets open when the daemon starts, and how many starts each.
#[derive(Clone, Debug, Serialize)]
pub struct StartupPlan {
    /// Sockets open when the daemon starts.
    pub startup_sockets: Vec<usize>,
    pub startup_rounds: usize,
}

#[derive(Debug, Serialize)]
pub struct StartupResults {
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub target_sockets: usize,
    pub held_sockets: usize,
    /// The daemon's table right after READY.
    pub table_sockets: Option<Summary>,
    pub rss_bytes: Option<Summary>,
    pub ready_ms: Option<Summary>,
    pub ss_ms: Option<Summary>,
    pub ready_over_ss: Option<Summary>,
    pub rounds: Vec<Round>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Round {
    pub ready_ms: f64,
    pub ss_ms: f64,
    pub rss_bytes: f64,
    pub table_sockets: f64,
}

fn run(plan: &StartupPlan, tools: &Tools) -> anyhow::Result<StartupResults> {
    let mut steps = Vec::new();
    for &n in &plan.startup_sockets {
        eprintln!("xtask bench: start-up with {n} sockets open");
        steps.push(step(plan, tools, n)?);
    }
    Ok(StartupResults { steps })
}

/// Holds `sockets` sockets (as connections: two sockets each) and measures
/// every round against them.
fn step(plan: &StartupPlan, tools: &Tools, sockets: usize) -> anyhow::Result<Step> {
    let holder = match sockets {
        0 => None,
        n => Some(tools.hold(n / 2)?),
    };
    let held = holder.as_ref().map_or(0, |h| h.held.sockets);
    let mut rounds = Vec::with_capacity(plan.startup_rounds);
    for r in 0..plan.startup_rounds {
        let mut round = Round::default();
        if r % 2 == 0 {
            round.ss_ms = time_ss()?;
            daemon_round(tools, &mut round)?;
        } else {
            daemon_round(tools, &mut round)?;
            round.ss_ms = time_ss()?;
        }
        rounds.push(round);
    }
    if let Some(h) = holder {
        h.stop()?;
    }
    let col = |f: fn(&Round) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
    let (ready, ss) = (col(|r| r.ready_ms), col(|r| r.ss_ms));
    Ok(Step {
        target_sockets: sockets,
        held_sockets: held,
        table_sockets: Summary::of(&col(|r| r.table_sockets)),
        rss_bytes: Summary::of(&col(|r| r.rss_bytes)),
        ready_ms: Summary::of(&ready),
        ss_ms: Summary::of(&ss),
        ready_over_ss: Summary::of(&paired_ratios(&ready, &ss)),
        rounds,
    })
}

fn time_ss() -> anyhow::Result<f64> {
    let (d, ok) = time_command(Command::new("ss").arg("-tunap"))?;
    anyhow::ensure!(ok, "ss -tunap failed");
    Ok(d.as_secs_f64() * 1e3)
}

/// Starts the daemon, takes READY time, table size and RSS, stops it.
fn daemon_round(tools: &Tools, round: &mut Round) -> anyhow::Result<()> {
    let daemon = Attached::start(Tracer::Sockmon, &tools.sockmon, StartOptions::default())?;
    round.ready_ms = daemon.attach_time.as_secs_f64() * 1e3;
    let api = Api::new(daemon.api_socket.as_deref().context("no API socket")?);
    round.table_sockets = api.status()?.table_sockets as f64;
    // Let anything the daemon does right after READY settle before reading RSS.
    thread::sleep(Duration::from_millis(200));
    round.rss_bytes = rss_bytes(daemon.pid().context("no daemon pid")?)? as f64;
    daemon.stop()
}

impl StartupResults {
    pub fn has_numbers(&self) -> bool {
        self.steps.iter().any(|s| s.ready_ms.is_some())
    }
}

fn table(s: &mut String, st: &StartupResults) {
    let _ = writeln!(
        s,
        "| sockets open | READY ms | `ss -tunap` ms | READY / ss | table at READY | RSS at READY |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
    for x in &st.steps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            group(x.held_sockets as f64),
            fmt_sum(x.ready_ms, 1),
            fmt_sum(x.ss_ms, 1),
            fmt_sum(x.ready_over_ss, 2),
            fmt_sum(x.table_sockets, 0),
            fmt_bytes(x.rss_bytes),
        );
    }
    s.push('\n');
    for x in st.steps.iter().filter(|x| x.held_sockets > 0) {
        if x.table_sockets
            .is_some_and(|t| t.median < x.held_sockets as f64)
        {
            let _ = writeln!(
                s,
                "**With {} sockets open the daemon's table held fewer entries at READY than sockets were open: its start-up snapshot missed them**, so that READY time is not the time to a complete table.\n",
                group(x.held_sockets as f64)
            );
        }
    }
}

fn target(rows: &mut Vec<TargetRow>, st: Option<&StartupResults>) {
    let last = st.and_then(|st| st.steps.iter().rev().find(|s| s.ready_ms.is_some()));
    let ready = last.and_then(|s| s.ready_ms);
    let complete = last.is_some_and(|s| {
        s.table_sockets
            .is_some_and(|t| t.median >= s.held_sockets as f64)
    });
    rows.push((
        "READY within 1 s with 100,000 sockets open".into(),
        match (last, ready) {
            (Some(x), Some(r)) => format!(
                "{} ms at {} sockets{}",
                fmt_f(r.median, 0),
                group(x.held_sockets as f64),
                if complete {
                    ""
                } else {
                    ", but the snapshot missed them"
                }
            ),
            _ => "–".into(),
        },
        match (last, ready) {
            // Without the sockets in the table, READY is not "ready".
            (Some(x), Some(r)) if x.target_sockets >= 100_000 && complete => {
                Some(r.median < 1000.0)
            }
            _ => None,
        },
    ));
}
