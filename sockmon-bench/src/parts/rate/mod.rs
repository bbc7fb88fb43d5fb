//! Parts 1 and 2: what attaching costs a workload.
//!
//! - Connection rate: the loopback connect/accept/close loop with one client
//!   thread and with one per core.
//! - Syscall tax: a `getppid` loop and a 4 KiB tmpfs `pread` loop. Syscall
//!   tracepoints put every syscall of every task on the tracing slow path,
//!   whether or not a program cares about that syscall; these loops show
//!   that price on code that never touches a socket.
//!
//! Each round starts each tracer in turn (order rotated per round), runs
//! every workload under it and stops it; ratios pair a tracer's figure with
//! the bare figure of the same round. While a workload runs, the tracer's
//! own CPU use is sampled from `/proc`, and the workload reports its system
//! time: together they say where an overhead comes from (in-kernel probe
//! work is system time of the workload; the consumer competes for a core).

use std::{
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{Options, Part, TargetRow};
use crate::{
    procs::{Foreign, foreign_syscall_tracers},
    stats::{Summary, paired_ratios},
    tools::Tools,
    tracers::{Attached, StartOptions, Tracer},
    worker::{Job, Measured},
};

mod bpfprof;
mod markdown;

pub use bpfprof::BpfProfile;
pub use markdown::guest_sections;

/// Parts 1 and 2 of the report.
#[derive(Debug)]
pub struct Rate;

impl Part for Rate {
    type Plan = RatePlan;
    type Results = RateResults;
    const TITLES: &'static [&'static str] = &["Connection-rate overhead", "Syscall tax"];
    const NEEDS_DAEMON: bool = false;

    fn plan(o: &Options) -> RatePlan {
        let mut p = if o.quick {
            RatePlan {
                guest: o.guest,
                rounds: 5,
                round_tries: 1,
                quiet_wait_s: 0.0,
                warmup_s: 0.1,
                rate_s: 0.3,
                syscall_s: 0.3,
            }
        } else {
            RatePlan {
                guest: o.guest,
                rounds: 7,
                round_tries: 3,
                quiet_wait_s: 120.0,
                warmup_s: 0.3,
                rate_s: 2.0,
                syscall_s: 1.5,
            }
        };
        if let Some(r) = o.rounds {
            p.rounds = usize::from(r);
        }
        p
    }

    fn run(plan: &RatePlan, tools: &Tools) -> anyhow::Result<RateResults> {
        run(plan, tools)
    }

    fn has_numbers(r: &RateResults) -> bool {
        r.has_numbers()
    }

    fn section(i: usize, r: &RateResults, s: &mut String) {
        if let Some(part) = PARTS.get(i) {
            markdown::table(s, r, part);
        }
    }

    fn targets(r: Option<&RateResults>, rows: &mut Vec<TargetRow>) {
        markdown::targets(rows, r);
    }
}

/// The `part` of each row, section by section (of [`Rate::TITLES`]).
const PARTS: [&str; 2] = ["connection rate", "syscall tax"];

/// How long and how often the rate part measures.
#[derive(Clone, Debug, Serialize)]
pub struct RatePlan {
    /// Inside a Debian guest: every attach mode side by side, no BPF profile.
    pub guest: bool,
    pub rounds: usize,
    /// Tries of a rate round while another process has syscall tracepoints
    /// attached, before the round is kept anyway (and flagged).
    pub round_tries: usize,
    /// How long to wait for other processes' syscall tracers to go before
    /// measuring anyway.
    pub quiet_wait_s: f64,
    pub warmup_s: f64,
    pub rate_s: f64,
    pub syscall_s: f64,
}

#[derive(Debug, Serialize)]
pub struct RateResults {
    pub rows: Vec<Row>,
    /// Rounds repeated because another process had syscall tracepoints
    /// attached (its programs tax the bare runs too).
    pub rounds_repeated: usize,
    /// Rounds kept although a foreign syscall tracer was seen in every try.
    pub rounds_with_foreign_tracer: usize,
    /// Foreign syscall tracers present from the start of the part to its
    /// end: every "bare" figure carries their tax.
    pub foreign_throughout: Vec<Foreign>,
    /// Where sockmon's kernel time goes (one extra, unmeasured run).
    pub bpf_profile: Option<BpfProfile>,
    /// The same, for `--no-enrichment` (what the close and exec records cost).
    pub bpf_profile_plain: Option<BpfProfile>,
    /// Tracer start-ups that failed (those rounds have no figure).
    pub errors: Vec<String>,
}

/// One workload under one tracer, over all rounds.
#[derive(Debug, Serialize)]
pub struct Row {
    pub part: &'static str,
    pub workload: String,
    pub unit: &'static str,
    pub tracer: Tracer,
    pub tracer_label: &'static str,
    pub rate: Option<Summary>,
    pub ratio_to_bare: Option<Summary>,
    /// Workload system CPU time per operation, in microseconds.
    pub sys_us_per_op: Option<Summary>,
    /// Operations per second of the workload's own CPU time (user +
    /// system): the in-task cost, immune to the workload being preempted by
    /// other jobs on a shared machine.
    pub cpu_rate: Option<Summary>,
    pub cpu_ratio_to_bare: Option<Summary>,
    /// Tracer CPU use while the workload ran, in cores.
    pub tracer_cores: Option<Summary>,
    /// Raw figures, one per round (`null`: that round failed).
    pub rounds: Vec<Option<Sample>>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    pub rate: f64,
    pub sys_us_per_op: f64,
    pub cpu_rate: f64,
    pub tracer_cores: f64,
    pub failed: u64,
    /// A process that was not there when the part started had syscall
    /// tracepoints attached around this sample.
    pub foreign_tracer: bool,
}

struct Workload {
    part: &'static str,
    name: String,
    unit: &'static str,
    job: Job,
}

const TRACERS: [Tracer; 5] = [
    Tracer::Bare,
    Tracer::Sockmon,
    Tracer::SockmonPlain,
    Tracer::SockmonSyscalls,
    Tracer::Bpftrace,
];

/// Inside a Debian guest (`bench --kernel`), where trampolines load: every
/// attach mode side by side, instead of the enrichment's cost.
const GUEST_TRACERS: [Tracer; 5] = [
    Tracer::Bare,
    Tracer::SockmonKfunc,
    Tracer::Sockmon,
    Tracer::SockmonSyscalls,
    Tracer::Bpftrace,
];

fn tracers(plan: &RatePlan) -> [Tracer; 5] {
    if plan.guest { GUEST_TRACERS } else { TRACERS }
}

fn workloads(plan: &RatePlan, cores: usize) -> Vec<Workload> {
    let conn = |threads: usize| Workload {
        part: "connection rate",
        name: format!(
            "connect+accept+close, {threads} client thread{}",
            if threads == 1 { "" } else { "s" }
        ),
        unit: "connections/s",
        job: Job::Rate {
            threads,
            secs: plan.rate_s,
            warmup: plan.warmup_s,
            port: 0,
            per_sec: 0.0,
        },
    };
    let mut w = vec![conn(1)];
    if cores > 1 {
        w.push(conn(cores));
    }
    w.push(Workload {
        part: "syscall tax",
        name: "getppid() loop".into(),
        unit: "calls/s",
        job: Job::Getppid {
            secs: plan.syscall_s,
            warmup: plan.warmup_s,
        },
    });
    w.push(Workload {
        part: "syscall tax",
        name: "pread() 4 KiB from tmpfs loop".into(),
        unit: "calls/s",
        job: Job::Pread {
            secs: plan.syscall_s,
            warmup: plan.warmup_s,
        },
    });
    w.push(Workload {
        part: "syscall tax",
        name: "fork+exec+wait of /bin/true".into(),
        unit: "calls/s",
        job: Job::Spawn {
            secs: plan.syscall_s,
            warmup: plan.warmup_s,
        },
    });
    w.push(Workload {
        part: "syscall tax",
        name: "UDP sendto() 64 B, unconnected socket".into(),
        unit: "calls/s",
        job: Job::Sendto {
            secs: plan.syscall_s,
            warmup: plan.warmup_s,
        },
    });
    w
}

fn run(plan: &RatePlan, tools: &Tools) -> anyhow::Result<RateResults> {
    let loads = workloads(plan, tools.cores);
    // by_round[round][tracer]: one sample per workload, or None if it failed.
    let mut by_round: Vec<Vec<Option<Vec<Sample>>>> = Vec::with_capacity(plan.rounds);
    let mut errors = Vec::new();
    let (mut repeated, mut foreign_kept) = (0, 0);
    let at_start = wait_quiet(plan);
    let known: Vec<u32> = at_start.iter().map(|f| f.pid).collect();
    for round in 0..plan.rounds {
        for attempt in 1..=plan.round_tries {
            let this = run_round(round, plan, &loads, tools, &known, &mut errors);
            let foreign = this.iter().flatten().flatten().any(|s| s.foreign_tracer);
            if foreign && attempt < plan.round_tries {
                eprintln!(
                    "xtask bench: another process has syscall tracepoints attached; repeating the round"
                );
                repeated += 1;
                thread::sleep(Duration::from_secs(2));
                continue;
            }
            foreign_kept += usize::from(foreign);
            by_round.push(this);
            break;
        }
    }
    let rows = rows(&loads, &by_round, tools, &tracers(plan));
    // Not in a guest: software emulation makes BPF run times meaningless.
    let profile = |t: Tracer, what: &str, errors: &mut Vec<String>| {
        (!plan.guest)
            .then(|| {
                bpfprof::profile(tools, plan.rate_s, t)
                    .map_err(|e| errors.push(format!("{what}: {e:#}")))
                    .ok()
            })
            .flatten()
    };
    let bpf_profile = profile(Tracer::Sockmon, "BPF run-time profile", &mut errors);
    let bpf_profile_plain = profile(
        Tracer::SockmonPlain,
        "BPF run-time profile (--no-enrichment)",
        &mut errors,
    );
    Ok(RateResults {
        bpf_profile,
        bpf_profile_plain,
        rows,
        rounds_repeated: repeated,
        rounds_with_foreign_tracer: foreign_kept,
        foreign_throughout: still_there(at_start),
        errors,
    })
}

/// Waits (at most `plan.quiet_wait_s`) for other processes' syscall
/// tracers to go; returns those still there. Those are not waited for again
/// round by round (it would not help), but reported.
fn wait_quiet(plan: &RatePlan) -> Vec<Foreign> {
    let deadline = Instant::now() + Duration::from_secs_f64(plan.quiet_wait_s);
    loop {
        let foreign = foreign_syscall_tracers(None);
        if foreign.is_empty() || Instant::now() >= deadline {
            return foreign;
        }
        eprintln!(
            "xtask bench: waiting for other processes' syscall tracers to go: {}",
            foreign
                .iter()
                .map(|f| format!("pid {} ({})", f.pid, f.cmd))
                .collect::<Vec<_>>()
                .join(", ")
        );
        thread::sleep(Duration::from_secs(5));
    }
}

/// Those of `before` that still have syscall tracers attached.
fn still_there(before: Vec<Foreign>) -> Vec<Foreign> {
    let now = foreign_syscall_tracers(None);
    before.into_iter().filter(|f| now.contains(f)).collect()
}

/// One round: every tracer in this round's order, every workload under it.
fn run_round(
    round: usize,
    plan: &RatePlan,
    loads: &[Workload],
    tools: &Tools,
    known: &[u32],
    errors: &mut Vec<String>,
) -> Vec<Option<Vec<Sample>>> {
    let rounds = plan.rounds;
    let list = tracers(plan);
    let mut this = vec![None; list.len()];
    for t in rotated(round) {
        let tracer = list[t];
        eprintln!("xtask bench: rate round {}/{rounds}: {tracer:?}", round + 1);
        match run_tracer(tracer, loads, tools, known) {
            Ok(per_load) => this[t] = Some(per_load),
            Err(e) => errors.push(format!("round {}: {tracer:?}: {e:#}", round + 1)),
        }
    }
    this
}

/// Tracer indices in the order of this round (rotated, so no tracer always
/// runs right after another).
fn rotated(round: usize) -> Vec<usize> {
    (0..TRACERS.len())
        .map(|i| (i + round) % TRACERS.len())
        .collect()
}

/// Starts `tracer`, runs every workload under it, stops it.
fn run_tracer(
    tracer: Tracer,
    loads: &[Workload],
    tools: &Tools,
    known: &[u32],
) -> anyhow::Result<Vec<Sample>> {
    let mut attached = Attached::start(tracer, &tools.sockmon, StartOptions::default())?;
    let mut out = Vec::with_capacity(loads.len());
    for w in loads {
        out.push(measure(&mut attached, w, tools, known)?);
    }
    attached.stop()?;
    Ok(out)
}

fn measure(
    attached: &mut Attached,
    w: &Workload,
    tools: &Tools,
    known: &[u32],
) -> anyhow::Result<Sample> {
    let ours = attached.pid();
    let new_foreign = || {
        foreign_syscall_tracers(ours)
            .iter()
            .any(|f| !known.contains(&f.pid))
    };
    let foreign_before = new_foreign();
    let (cpu0, t0) = (attached.cpu_seconds()?, Instant::now());
    let m: Measured = tools.run_worker(&w.job)?;
    let (cpu1, wall) = (attached.cpu_seconds()?, t0.elapsed().as_secs_f64());
    // A tracer that died would make its figures look like bare ones.
    attached.ensure_running()?;
    Ok(Sample {
        rate: m.rate(),
        sys_us_per_op: if m.ops > 0 {
            m.sys_s * 1e6 / m.ops as f64
        } else {
            f64::NAN
        },
        cpu_rate: per_cpu_second(&m),
        tracer_cores: if wall > 0.0 {
            (cpu1 - cpu0) / wall
        } else {
            f64::NAN
        },
        failed: m.failed,
        foreign_tracer: foreign_before || new_foreign(),
    })
}

/// Operations per CPU-second of the workload (NaN without CPU time).
fn per_cpu_second(m: &Measured) -> f64 {
    let cpu = m.user_s + m.sys_s;
    if cpu > 0.0 {
        m.ops as f64 / cpu
    } else {
        f64::NAN
    }
}

fn rows(
    loads: &[Workload],
    by_round: &[Vec<Option<Vec<Sample>>>],
    tools: &Tools,
    tracers: &[Tracer],
) -> Vec<Row> {
    let column = |t: usize, w: usize| -> Vec<Option<Sample>> {
        by_round
            .iter()
            .map(|r| r[t].as_ref().map(|per_load| per_load[w]))
            .collect()
    };
    let mut rows = Vec::new();
    for (w, load) in loads.iter().enumerate() {
        let bare = field(&column(0, w), |s| s.rate);
        let bare_cpu = field(&column(0, w), |s| s.cpu_rate);
        for (t, tracer) in tracers.iter().enumerate() {
            let rounds = column(t, w);
            let rate = field(&rounds, |s| s.rate);
            let cpu_rate = field(&rounds, |s| s.cpu_rate);
            rows.push(Row {
                part: load.part,
                workload: load.name.clone(),
                unit: load.unit,
                tracer: *tracer,
                tracer_label: tracer.label(tools.sockmon.mode),
                rate: Summary::of(&rate),
                ratio_to_bare: Summary::of(&paired_ratios(&rate, &bare)),
                sys_us_per_op: Summary::of(&field(&rounds, |s| s.sys_us_per_op)),
                cpu_rate: Summary::of(&cpu_rate),
                cpu_ratio_to_bare: Summary::of(&paired_ratios(&cpu_rate, &bare_cpu)),
                tracer_cores: Summary::of(&field(&rounds, |s| s.tracer_cores)),
                rounds,
            });
        }
    }
    rows
}

/// One field per round, NaN where the round failed (pairing stays aligned;
/// the summaries skip NaN).
fn field(rounds: &[Option<Sample>], f: impl Fn(&Sample) -> f64) -> Vec<f64> {
    rounds
        .iter()
        .map(|s| s.as_ref().map_or(f64::NAN, &f))
        .collect()
}

impl RateResults {
    /// Whether sockmon has a ratio for every workload.
    pub fn has_numbers(&self) -> bool {
        let sockmon: Vec<_> = self
            .rows
            .iter()
            .filter(|r| r.tracer == Tracer::Sockmon)
            .collect();
        !sockmon.is_empty() && sockmon.iter().all(|r| r.ratio_to_bare.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_covers_every_tracer_each_round() {
        for r in 0..5 {
            let mut o = rotated(r);
            assert_eq!(o[0], r % TRACERS.len());
            o.sort_unstable();
            assert_eq!(o, (0..TRACERS.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn failed_rounds_stay_aligned() {
        let s = |rate| {
            Some(Sample {
                rate,
                sys_us_per_op: 1.0,
                cpu_rate: 1.0,
                tracer_cores: 0.0,
                failed: 0,
                foreign_tracer: false,
            })
        };
        let traced = field(&[s(90.0), None, s(80.0)], |s| s.rate);
        let bare = field(&[s(100.0), s(100.0), s(100.0)], |s| s.rate);
        assert_eq!(paired_ratios(&traced, &bare).len(), 2);
        let sum = Summary::of(&paired_ratios(&traced, &bare)).unwrap();
        assert!((sum.median - 0.85).abs() < 1e-9);
    }
}
