//! The targets this project set itself, and where a run stands against
//! each. A verdict is given only when the figure can carry it: a ratio
//! against a "bare" run that was not bare (another process's syscall
//! tracers attached throughout) cannot say "met", and a start-up time
//! without the snapshot is no start-up time.

use std::fmt::Write as _;

use super::{
    lookup::{self, LookupResults},
    memory::MemoryResults,
    rate::{RateResults, Row},
    report::{Results, fmt_f, fmt_sum, group},
    startup::StartupResults,
    tracers::Tracer,
};

/// The targets table.
pub fn write(s: &mut String, r: &Results) {
    let _ = writeln!(s, "### Targets\n");
    let _ = writeln!(s, "| target | this run | met? |");
    let _ = writeln!(s, "|---|---|---|");
    for (target, measured, met) in target_rows(r) {
        let verdict = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {target} | {measured} | {verdict} |");
    }
    s.push('\n');
}

type TargetRow = (String, String, Option<bool>);

fn target_rows(r: &Results) -> Vec<TargetRow> {
    let mut rows = Vec::new();
    rate_targets(&mut rows, r.rate.done());
    let c = r.completeness.done();
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
    lookup_targets(&mut rows, r.lookup.done());
    memory_target(&mut rows, r.memory.done());
    startup_target(&mut rows, r.startup.done());
    rows
}

fn rate_targets(rows: &mut Vec<TargetRow>, rate: Option<&RateResults>) {
    let sockmon_row = |w: &str| {
        rate.and_then(|r| {
            r.rows
                .iter()
                .find(|x| x.workload.starts_with(w) && x.tracer == Tracer::Sockmon)
        })
    };
    // With a foreign syscall tracer attached throughout, "bare" carried a
    // tax too: a shortfall is real (the true one is larger), a pass is not.
    let not_bare = rate.is_some_and(|r| !r.foreign_throughout.is_empty());
    let caveat = if not_bare { "; bare was not bare" } else { "" };
    let conn: Vec<&Row> = rate.map_or(Vec::new(), |r| {
        r.rows
            .iter()
            .filter(|x| x.part == "connection rate" && x.tracer == Tracer::Sockmon)
            .collect()
    });
    for x in conn {
        let bpf = rate
            .and_then(|r| {
                r.rows
                    .iter()
                    .find(|b| b.workload == x.workload && b.tracer == Tracer::Bpftrace)
            })
            .and_then(|b| b.ratio_to_bare);
        let ours = x.ratio_to_bare;
        let met = ours.map(|o| o.median >= 0.97 && bpf.is_none_or(|b| o.median > b.median));
        rows.push((
            format!(
                "connection rate ≥ 0.97 of bare and above bpftrace ({})",
                x.workload
            ),
            format!(
                "{} (bpftrace {}){caveat}",
                fmt_sum(ours, 3),
                fmt_sum(bpf, 3)
            ),
            met.filter(|m| !m || !not_bare),
        ));
    }
    for w in ["getppid", "pread", "UDP sendto"] {
        let ours = sockmon_row(w).and_then(|x| x.cpu_ratio_to_bare);
        rows.push((
            format!("syscall tax ≤ 3% ({w}: extra workload CPU per call)"),
            ours.map_or("–".into(), |o| {
                format!(
                    "{:+.1}% [{:+.1}–{:+.1}%]{}",
                    tax(o.median),
                    tax(o.max),
                    tax(o.min),
                    if not_bare {
                        "; the slow path was on in the bare runs too"
                    } else {
                        ""
                    }
                )
            }),
            ours.map(|o| tax(o.median) <= 3.0).filter(|_| !not_bare),
        ));
    }
}

/// Extra cost per call, in percent, from a throughput ratio to bare.
fn tax(ratio: f64) -> f64 {
    (1.0 / ratio - 1.0) * 100.0
}

fn lookup_targets(rows: &mut Vec<TargetRow>, l: Option<&LookupResults>) {
    let lat = |name: &str| l.and_then(|l| l.method(name)).and_then(|m| m.latency_us);
    let (api, ss) = (lat(lookup::API), lat(lookup::SS));
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

fn memory_target(rows: &mut Vec<TargetRow>, m: Option<&MemoryResults>) {
    let slope = m.and_then(|m| m.bytes_per_socket);
    rows.push((
        "< 300 bytes per socket".into(),
        slope.map_or("–".into(), |b| {
            format!("{} bytes/socket (slope)", fmt_f(b, 0))
        }),
        slope.map(|b| b < 300.0),
    ));
}

fn startup_target(rows: &mut Vec<TargetRow>, st: Option<&StartupResults>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{rate::Sample, stats::Summary};

    fn row(tracer: Tracer, ratio: f64) -> Row {
        let s = Summary {
            median: ratio,
            min: ratio,
            max: ratio,
            n: 1,
        };
        Row {
            part: "connection rate",
            workload: "connect".into(),
            unit: "connections/s",
            tracer,
            tracer_label: "",
            rate: None,
            ratio_to_bare: Some(s),
            sys_us_per_op: None,
            cpu_rate: None,
            cpu_ratio_to_bare: Some(s),
            tracer_cores: None,
            rounds: Vec::<Option<Sample>>::new(),
        }
    }

    fn verdict(ours: f64, foreign: bool) -> Option<bool> {
        let r = RateResults {
            rows: vec![row(Tracer::Sockmon, ours), row(Tracer::Bpftrace, 0.5)],
            rounds_repeated: 0,
            rounds_with_foreign_tracer: 0,
            foreign_throughout: if foreign {
                vec![crate::bench::procs::Foreign {
                    pid: 1,
                    cmd: "x".into(),
                }]
            } else {
                Vec::new()
            },
            errors: Vec::new(),
            bpf_profile: None,
        };
        let mut rows = Vec::new();
        rate_targets(&mut rows, Some(&r));
        rows[0].2
    }

    #[test]
    fn a_pass_against_a_taxed_bare_run_is_no_pass() {
        assert_eq!(verdict(0.99, false), Some(true));
        assert_eq!(verdict(0.90, false), Some(false));
        assert_eq!(verdict(0.99, true), None);
        assert_eq!(verdict(0.90, true), Some(false));
    }

    #[test]
    fn tax_is_extra_cost() {
        assert!((tax(0.5) - 100.0).abs() < 1e-9);
        assert!(tax(1.0).abs() < 1e-9);
    }
}
