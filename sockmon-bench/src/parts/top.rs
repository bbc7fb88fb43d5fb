//! Part 8: what `sockmon top` costs while the machine makes connections,
//! reading the daemon's per-process sums (its default) against reading
//! every event (what it does with a filter on sockets, here `proto:tcp`,
//! which matches every event of this load, so both show the same rows).
//!
//! `top` runs in a real terminal: a detached tmux of our own (its own
//! server socket, 120×40), redrawing every 250 ms, against one release
//! daemon. Per round and load, the two ways run one after the other, the
//! order rotated each round; CPU is `top`'s and the daemon's
//! utime+stime from `/proc/PID/stat` over the load's window, and the event
//! rate is the daemon's own count over the same window. Loads: idle, a
//! paced connection loop (five events per connection: connect, its result,
//! accept, two closes) at 2,000 and 4,000 connections/s, and an unpaced one.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{Options, Part, TargetRow};
use crate::{
    api::Api,
    fmt::fmt_sum,
    procs::{TempDir, cpu_seconds},
    stats::{Summary, paired_ratios},
    tools::Tools,
    tracers::{Attached, StartOptions, Tracer},
    worker::Job,
};

/// Part 8 of the report.
#[derive(Debug)]
pub struct Top;

impl Part for Top {
    type Plan = TopPlan;
    type Results = TopResults;
    const TITLES: &'static [&'static str] = &["`sockmon top` in a real terminal"];
    const NEEDS_DAEMON: bool = true;

    fn plan(o: &Options) -> TopPlan {
        if o.quick {
            TopPlan {
                top_s: 2.0,
                top_rounds: 1,
            }
        } else {
            TopPlan {
                top_s: 10.0,
                top_rounds: 3,
            }
        }
    }

    fn run(plan: &TopPlan, tools: &Tools) -> anyhow::Result<TopResults> {
        run(plan, tools)
    }

    fn has_numbers(r: &TopResults) -> bool {
        r.has_numbers()
    }

    fn section(_: usize, r: &TopResults, s: &mut String) {
        table(s, r);
    }

    fn targets(r: Option<&TopResults>, rows: &mut Vec<TargetRow>) {
        let top = r.and_then(TopResults::at_10k);
        rows.push((
            format!("`sockmon top` ≤ {TARGET_PCT}% of a core at 10k events/s"),
            top.map_or("–".into(), |t| {
                format!(
                    "{}% at {} events/s ({})",
                    fmt_sum(t.sums_pct, 1),
                    fmt_sum(t.events_per_s, 0),
                    t.load
                )
            }),
            top.and_then(|t| t.sums_pct).map(|p| p.median <= TARGET_PCT),
        ));
    }
}

/// Each window of `sockmon top` under a load, and how many per load and way.
#[derive(Clone, Debug, Serialize)]
pub struct TopPlan {
    pub top_s: f64,
    pub top_rounds: usize,
}

/// The target: at most this share of one core at 10k events/s.
pub const TARGET_PCT: f64 = 5.0;

#[derive(Debug, Serialize)]
pub struct TopResults {
    pub rows: Vec<TopRow>,
}

#[derive(Debug, Serialize)]
pub struct TopRow {
    pub load: String,
    /// Connections per second asked for (0: idle; `None`: unpaced).
    pub per_sec: Option<f64>,
    pub events_per_s: Option<Summary>,
    /// `top`'s CPU, % of one core, reading sums (`counters`).
    pub sums_pct: Option<Summary>,
    /// `top`'s CPU, % of one core, reading every event (`subscribe`).
    pub events_pct: Option<Summary>,
    /// Round by round, sums over events.
    pub sums_over_events: Option<Summary>,
    pub daemon_sums_pct: Option<Summary>,
    pub daemon_events_pct: Option<Summary>,
    pub rounds: Vec<Round>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Round {
    pub events_per_s_sums: f64,
    pub events_per_s_events: f64,
    pub sums_pct: f64,
    pub events_pct: f64,
    pub daemon_sums_pct: f64,
    pub daemon_events_pct: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Sums,
    Events,
}

fn run(plan: &TopPlan, tools: &Tools) -> anyhow::Result<TopResults> {
    let loads: [(&str, Option<f64>); 4] = [
        ("idle", Some(0.0)),
        ("paced, 2,000 connections/s", Some(2000.0)),
        ("paced, 4,000 connections/s", Some(4000.0)),
        ("unpaced, 1 client thread", None),
    ];
    let daemon = Attached::start(Tracer::Sockmon, &tools.sockmon, StartOptions::default())?;
    let api = Api::new(daemon.api_socket.as_deref().context("no API socket")?);
    let dpid = daemon.pid().context("no daemon pid")?;
    let dir = TempDir::new("top")?;
    let mut rows = Vec::new();
    for (load, per_sec) in loads {
        eprintln!("xtask bench: top, {load}");
        let mut rounds = Vec::new();
        for r in 0..plan.top_rounds {
            let mut round = Round::default();
            let order = if r % 2 == 0 {
                [Way::Sums, Way::Events]
            } else {
                [Way::Events, Way::Sums]
            };
            for way in order {
                let (top, daemon_pct, ev) =
                    measure(plan, tools, &api, dpid, dir.path(), way, per_sec)?;
                match way {
                    Way::Sums => {
                        (
                            round.sums_pct,
                            round.daemon_sums_pct,
                            round.events_per_s_sums,
                        ) = (top, daemon_pct, ev)
                    }
                    Way::Events => {
                        (
                            round.events_pct,
                            round.daemon_events_pct,
                            round.events_per_s_events,
                        ) = (top, daemon_pct, ev)
                    }
                }
            }
            rounds.push(round);
        }
        let col = |f: fn(&Round) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
        let (sums, events) = (col(|r| r.sums_pct), col(|r| r.events_pct));
        let mut rates = col(|r| r.events_per_s_sums);
        rates.extend(col(|r| r.events_per_s_events));
        rows.push(TopRow {
            load: load.into(),
            per_sec,
            events_per_s: Summary::of(&rates),
            sums_over_events: if per_sec == Some(0.0) {
                None // idle: both are the frame rate's cost, a ratio of noise
            } else {
                Summary::of(&paired_ratios(&sums, &events))
            },
            sums_pct: Summary::of(&sums),
            events_pct: Summary::of(&events),
            daemon_sums_pct: Summary::of(&col(|r| r.daemon_sums_pct)),
            daemon_events_pct: Summary::of(&col(|r| r.daemon_events_pct)),
            rounds,
        });
    }
    daemon.stop()?;
    Ok(TopResults { rows })
}

/// One window: `top` started in tmux the `way` asked, the load run, CPU
/// read; returns top's and the daemon's % of a core and the events/s.
fn measure(
    plan: &TopPlan,
    tools: &Tools,
    api: &Api,
    daemon_pid: u32,
    dir: &Path,
    way: Way,
    per_sec: Option<f64>,
) -> anyhow::Result<(f64, f64, f64)> {
    // The previous window's `top` has let go (nothing else subscribes to
    // this daemon), so the next subscriber is this window's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.status()?.subscribers > 0 {
        if Instant::now() > deadline {
            bail!("the previous `sockmon top` still holds its subscription after 20 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let tmux = Tmux::start(dir, tools, api, way)?;
    // Subscribed (and one frame drawn) before the window opens.
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.status()?.subscribers == 0 {
        if Instant::now() > deadline {
            bail!(
                "`sockmon top` did not subscribe within 20 s; its screen:\n{}",
                tmux.screen()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(500));
    let top_pid = tmux.top_pid()?;
    let (t0, d0, e0, w0) = (
        cpu_seconds(top_pid)?,
        cpu_seconds(daemon_pid)?,
        api.status()?.events_total,
        Instant::now(),
    );
    match per_sec {
        Some(0.0) => thread::sleep(Duration::from_secs_f64(plan.top_s)),
        _ => {
            tools.run_worker(&Job::Rate {
                threads: 1,
                secs: plan.top_s,
                warmup: 0.0,
                port: 0,
                per_sec: per_sec.unwrap_or(0.0),
            })?;
        }
    }
    let secs = w0.elapsed().as_secs_f64();
    let (t1, d1, e1) = (
        cpu_seconds(top_pid)?,
        cpu_seconds(daemon_pid)?,
        api.status()?.events_total,
    );
    drop(tmux); // ends its server, and `top` with it
    Ok((
        (t1 - t0) / secs * 100.0,
        (d1 - d0) / secs * 100.0,
        e1.saturating_sub(e0) as f64 / secs,
    ))
}

/// A tmux server of our own running `sockmon top` in its only pane.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn start(dir: &Path, tools: &Tools, api: &Api, way: Way) -> anyhow::Result<Tmux> {
        let socket = dir.join("tmux.sock");
        let filter = match way {
            Way::Sums => "",
            Way::Events => " --filter proto:tcp",
        };
        let cmd = format!(
            "exec '{}' --socket '{}' top --refresh-ms 250{filter}",
            tools.sockmon.bin.display(),
            api.path().display()
        );
        let t = Tmux { socket };
        let ok = t
            .cmd()
            .args(["new-session", "-d", "-x", "120", "-y", "40", &cmd])
            .env("TERM", "xterm-256color")
            .status()
            .context("starting tmux (is it installed? cargo xtask setup installs it)")?;
        if !ok.success() {
            bail!("tmux new-session failed: {ok}");
        }
        Ok(t)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    }

    /// The pane runs `top` itself (`exec`), so its pid is top's.
    fn top_pid(&self) -> anyhow::Result<u32> {
        let out = self
            .cmd()
            .args(["display-message", "-p", "#{pane_pid}"])
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("tmux gave no pane pid")
    }

    fn screen(&self) -> String {
        self.cmd()
            .args(["capture-pane", "-p"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("(tmux capture-pane failed: {e})"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Our own server (its own socket): this ends only it, and `top` with it.
        let _ = self.cmd().arg("kill-server").status();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl TopResults {
    pub fn has_numbers(&self) -> bool {
        self.rows.iter().any(|r| r.sums_pct.is_some())
    }

    /// The row the target is judged on: the paced load nearest 10k events/s.
    pub fn at_10k(&self) -> Option<&TopRow> {
        self.rows
            .iter()
            .filter(|r| r.per_sec.is_some_and(|p| p > 0.0))
            .min_by(|a, b| {
                let d = |r: &TopRow| {
                    r.events_per_s
                        .map_or(f64::MAX, |s| (s.median - 10_000.0).abs())
                };
                d(a).total_cmp(&d(b))
            })
    }
}

fn table(s: &mut String, t: &TopResults) {
    let _ = writeln!(
        s,
        "`sockmon top` against the daemon in a detached tmux (120×40, a frame every 250 ms), reading the daemon's per-process sums (`counters`, its default) or every event (a `proto:tcp` filter, which matches every event here, makes it subscribe to the raw stream); the two ways alternate, order rotated each round. CPU is utime+stime over each window, % of one core; events/s is the daemon's count over the same window (five per connection).\n"
    );
    let _ = writeln!(
        s,
        "| load | events/s | top reading sums, % of a core | top reading every event, % | sums ÷ events | daemon (sums), % | daemon (events), % |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for r in &t.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.load,
            fmt_sum(r.events_per_s, 0),
            fmt_sum(r.sums_pct, 1),
            fmt_sum(r.events_pct, 1),
            fmt_sum(r.sums_over_events, 2),
            fmt_sum(r.daemon_sums_pct, 1),
            fmt_sum(r.daemon_events_pct, 1),
        );
    }
    s.push('\n');
}
