//! How the rate part reads: its two tables (with the BPF profile and the
//! notes on foreign tracers under the first), its targets, and the two
//! sections a Debian guest reports.

use std::fmt::Write as _;

use super::{BpfProfile, PARTS, RateResults, Row};
use crate::{
    fmt::{fmt_f, fmt_sum, group, one_line},
    parts::{Outcome, TargetRow, section},
    tracers::Tracer,
};

/// What a guest of `bench --kernel` reports: the rate part's two sections,
/// titled for the attach modes side by side.
pub fn guest_sections(s: &mut String, o: &Outcome<RateResults>) {
    for (title, part) in [
        "Connection-rate overhead, per attach mode",
        "Syscall tax, per attach mode",
    ]
    .into_iter()
    .zip(PARTS)
    {
        section(s, title, o, |s, v| table(s, v, part));
    }
}

/// The table of one `part` (`connection rate` or `syscall tax`), with its notes.
pub(super) fn table(s: &mut String, r: &RateResults, part: &str) {
    let rows: Vec<&Row> = r.rows.iter().filter(|x| x.part == part).collect();
    let unit = rows.first().map_or("", |x| x.unit);
    let syscalls = part == "syscall tax";
    if syscalls {
        let _ = writeln!(
            s,
            "| workload | attached | {unit} (wall) | ratio to bare (wall) | ns of workload CPU per call | ratio to bare (per CPU-second) | tracer CPU (cores) |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    } else {
        let _ = writeln!(
            s,
            "| workload | attached | {unit} | ratio to bare | workload system CPU µs/conn | ratio to bare (per workload CPU-second) | tracer CPU (cores) |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    }
    for x in rows {
        let bare = x.tracer == Tracer::Bare;
        let ratio = |v| if bare { "1".into() } else { fmt_sum(v, 3) };
        let middle = if syscalls {
            let ns = x.cpu_rate.map_or("–".into(), |c| fmt_f(1e9 / c.median, 1));
            format!(
                "{} | {ns} | {}",
                ratio(x.ratio_to_bare),
                ratio(x.cpu_ratio_to_bare)
            )
        } else {
            format!(
                "{} | {} | {}",
                ratio(x.ratio_to_bare),
                fmt_sum(x.sys_us_per_op, 2),
                ratio(x.cpu_ratio_to_bare)
            )
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {middle} | {} |",
            x.workload,
            x.tracer_label,
            fmt_sum(x.rate, 0),
            fmt_sum(x.tracer_cores, 2)
        );
    }
    if part != "connection rate" {
        if !r.foreign_throughout.is_empty() {
            let _ = writeln!(
                s,
                "\n**Not bare:** see the note under 1; the slow path was on in every run here."
            );
        }
        s.push('\n');
        return;
    }
    if let Some(p) = &r.bpf_profile {
        bpf_profile_table(s, p);
        if let Some(q) = &r.bpf_profile_plain {
            enrichment_cost(s, p, q);
        }
    }
    if !r.foreign_throughout.is_empty() {
        let who: Vec<String> = r
            .foreign_throughout
            .iter()
            .map(|f| format!("pid {} (`{}`)", f.pid, f.cmd.replace('`', "'")))
            .collect();
        let _ = writeln!(
            s,
            "\n**Not bare:** another process kept BPF programs on syscall tracepoints from the start of this part to its end: {}. Every \"nothing attached\" run carried its programs and the syscall slow path, so these ratios understate the overhead (and the syscall tax cannot be seen at all).",
            who.join(", ")
        );
    }
    if r.rounds_repeated + r.rounds_with_foreign_tracer > 0 {
        let _ = writeln!(
            s,
            "\nAnother process had syscall tracepoints attached (its programs tax the bare runs too): {} round(s) repeated, {} round(s) kept with it present.",
            r.rounds_repeated, r.rounds_with_foreign_tracer,
        );
    }
    for e in &r.errors {
        let _ = writeln!(s, "\n- error: `{}`", one_line(e));
    }
    s.push('\n');
}

fn bpf_profile_table(s: &mut String, p: &BpfProfile) {
    let _ = writeln!(
        s,
        "\nWhere sockmon's in-kernel time goes (BPF run-time statistics, one extra run with 1 client thread, {} connections):\n",
        group(p.connections as f64)
    );
    let _ = writeln!(s, "| program | runs/connection | ns/run | ns/connection |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for c in p.programs.iter().filter(|c| c.ns_per_conn >= 1.0) {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} | {} |",
            c.name,
            c.runs_per_conn,
            fmt_f(c.ns_per_run, 0),
            fmt_f(c.ns_per_conn, 0)
        );
    }
    let _ = writeln!(
        s,
        "\nIn all {} ns of BPF per connection, {:.1}% of the workload's {:.1} µs of CPU per connection in that run; {:.2} ns of BPF per `getppid()`.",
        fmt_f(p.total_ns_per_conn, 0),
        p.total_ns_per_conn / (p.workload_cpu_us_per_conn * 1e3) * 100.0,
        p.workload_cpu_us_per_conn,
        p.ns_per_getppid
    );
}

/// What the kernel's close and exec records cost: the enriched profile `p`
/// against the same run shape without them, `q` (`--no-enrichment`).
fn enrichment_cost(s: &mut String, p: &BpfProfile, q: &BpfProfile) {
    let release = |b: &BpfProfile| {
        b.programs
            .iter()
            .find(|c| c.name == "sock_release")
            .map_or(f64::NAN, |c| c.ns_per_run)
    };
    let _ = writeln!(
        s,
        "
The flows records in that profile, against a run without them (`--no-enrichment`, the same shape right after): `sock_release` {} ns a run against {} (the close record's counters), {} ns of BPF per connection against {}, and {} ns of BPF per process start (`fork`+`exec`+`exit` of `/bin/true`) against {} (the exec record).",
        fmt_f(release(p), 0),
        fmt_f(release(q), 0),
        fmt_f(p.total_ns_per_conn, 0),
        fmt_f(q.total_ns_per_conn, 0),
        fmt_f(p.ns_per_spawn, 0),
        fmt_f(q.ns_per_spawn, 0),
    );
}

/// Connection rate against bare and bpftrace, and the syscall tax.
pub(super) fn targets(rows: &mut Vec<TargetRow>, rate: Option<&RateResults>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parts::rate::Sample, stats::Summary};

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
                vec![crate::procs::Foreign {
                    pid: 1,
                    cmd: "x".into(),
                }]
            } else {
                Vec::new()
            },
            errors: Vec::new(),
            bpf_profile: None,
            bpf_profile_plain: None,
        };
        let mut rows = Vec::new();
        targets(&mut rows, Some(&r));
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
