//! How the soak reads: its table of measures, the samples and errors under
//! it, and its three targets (nothing missing, memory given back, the table
//! agreeing with `ss`).

use std::fmt::Write as _;

use super::{Agreement, Owners, SoakResults};
use crate::{
    fmt::{bytes, fmt_f, group, one_line},
    parts::TargetRow,
};

pub(super) fn table(s: &mut String, k: &SoakResults) {
    let _ = writeln!(
        s,
        "A fresh daemon; for {} s, {} short-lived processes at a time, a new one started as each exits, each making {} TCP connections to a loopback listener (connect, wait for the server's close, reset) and {} UDP sends to a loopback receiver, each from a fresh unbound socket (`socket`, `sendto`, `close`). Events are read from two subscriptions: the listener's and receiver's ports, and the churn processes' name with UDP.\n",
        fmt_f(k.secs_planned, 0),
        k.concurrency,
        group(k.conns_per_process as f64),
        group(k.udp_per_process as f64),
    );
    let kinds = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {}", group(*v as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mib = |b: u64| bytes(b as f64);
    let opt = |v: Option<u64>| v.map_or("–".into(), |v| group(v as f64));
    let mut rows: Vec<(String, String)> = vec![
        (
            "churn".into(),
            format!(
                "{:.1} s: {} processes ({}/s), {} TCP connections ({}/s; {} failed, {} unanswered), {} UDP sends ({}/s; {} failed)",
                k.secs,
                group(k.processes as f64),
                fmt_f(k.processes_per_s, 0),
                group(k.connections as f64),
                group(k.connections_per_s),
                group(k.failed_connects as f64),
                group(k.unanswered_connects as f64),
                group(k.udp_sends as f64),
                group(k.udp_sends_per_s),
                group(k.udp_failed as f64),
            ),
        ),
        (
            "the server saw".into(),
            format!(
                "{} accepted, {} datagrams received",
                group(k.server.accepted as f64),
                group(k.server.datagrams as f64)
            ),
        ),
        (
            "events expected".into(),
            format!(
                "{} ({})",
                group(k.expected as f64),
                kinds(&k.expected_by_kind)
            ),
        ),
        (
            "delivered".into(),
            format!(
                "{} ({})",
                group(k.delivered as f64),
                kinds(&k.delivered_by_kind)
            ),
        ),
        (
            "dropped (status, all causes, and `lost` lines)".into(),
            if k.dropped_by_cause.values().any(|v| *v > 0) {
                let nonzero = k
                    .dropped_by_cause
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(c, v)| (c.clone(), *v))
                    .collect();
                format!(
                    "{} ({}); of them lost events: {}",
                    group(k.dropped as f64),
                    kinds(&nonzero),
                    group(k.dropped_events as f64)
                )
            } else {
                group(k.dropped as f64)
            },
        ),
        (
            "**missing**".into(),
            format!(
                "**{}**{}",
                k.missing,
                if k.accounted() {
                    String::new()
                } else {
                    format!(
                        " (not meaningful: {} processes gave no report)",
                        k.processes_unreported
                    )
                }
            ),
        ),
        (
            "stream quiet after the churn".into(),
            format!("{:.1} s", k.quiet_after_s),
        ),
        (
            "daemon RSS".into(),
            format!(
                "{} after READY, {} before the churn, peak {}, {} at the end: end/start {:.3}",
                mib(k.rss_ready),
                mib(k.rss_before_churn),
                mib(k.rss_peak),
                mib(k.rss_end),
                k.rss_end_over_start
            ),
        ),
        (
            "daemon table".into(),
            format!(
                "{} sockets, {} processes after READY; {} sockets, {} processes at the end; {} reconciliations",
                group(k.table_sockets_start as f64),
                opt(k.table_processes_start),
                group(k.table_sockets_end as f64),
                opt(k.table_processes_end),
                opt(k.reconciliations),
            ),
        ),
        (
            "daemon CPU during the churn".into(),
            format!("{:.2} cores", k.daemon_cores),
        ),
    ];
    if let Some(a) = &k.agreement {
        rows.push((
            "owners in the table / in `ss -tunap`".into(),
            format!(
                "listener {:?} / {:?}, receiver {:?} / {:?} (the server is pid {})",
                a.listener.table, a.listener.ss, a.receiver.table, a.receiver.ss, a.server_pid
            ),
        ));
        rows.push((
            "left on the listener's and receiver's ports".into(),
            format!(
                "{} in the table, {} in `ss`",
                a.leftover_table.count, a.leftover_ss.count
            ),
        ));
        rows.push((
            "table entries the kernel no longer has / kernel sockets not in the table".into(),
            format!(
                "{} / {} (this network namespace, {} sockets in both; owners differ on {})",
                a.stale.count,
                a.untracked.count,
                group(a.compared as f64),
                a.owners_differ.count
            ),
        ));
    }
    let _ = writeln!(s, "| measure | this run |");
    let _ = writeln!(s, "|---|---|");
    for (m, v) in rows {
        let _ = writeln!(s, "| {m} | {v} |");
    }
    s.push('\n');
    let mut notes = Vec::new();
    if let Some(a) = &k.agreement {
        for (what, f) in [
            ("left in the table", &a.leftover_table),
            ("left in `ss`", &a.leftover_ss),
            ("stale in the table", &a.stale),
            ("not in the table", &a.untracked),
            ("owners differ", &a.owners_differ),
        ] {
            notes.extend(
                f.sample
                    .iter()
                    .map(|x| format!("- {what}: `{}`", one_line(x))),
            );
        }
    }
    notes.extend(
        k.errors
            .iter()
            .map(|e| format!("- error: `{}`", one_line(e))),
    );
    if !notes.is_empty() {
        let _ = writeln!(s, "{}\n", notes.join("\n"));
    }
}

/// End RSS over RSS after READY that still counts as "back near start".
const SOAK_RSS_RATIO: f64 = 1.10;

pub(super) fn targets(rows: &mut Vec<TargetRow>, k: Option<&SoakResults>) {
    rows.push((
        "soak: no events missing".into(),
        k.map_or("–".into(), |k| {
            format!(
                "missing {} of {} expected ({} delivered, {} dropped) over {} connections and {} UDP sends from {} processes{}",
                k.missing,
                group(k.expected as f64),
                group(k.delivered as f64),
                group(k.dropped_events as f64),
                group(k.connections as f64),
                group(k.udp_sends as f64),
                group(k.processes as f64),
                if k.accounted() {
                    String::new()
                } else {
                    format!("; {} processes gave no report", k.processes_unreported)
                }
            )
        }),
        k.filter(|k| k.accounted()).map(|k| k.missing == 0),
    ));
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    rows.push((
        format!("soak: RSS back near start (end ≤ {SOAK_RSS_RATIO:.2} × start)"),
        k.map_or("–".into(), |k| {
            format!(
                "{} at the end / {} after READY = {:.3} (peak {})",
                mib(k.rss_end),
                mib(k.rss_ready),
                k.rss_end_over_start,
                mib(k.rss_peak)
            )
        }),
        k.filter(|k| k.rss_ready > 0 && k.rss_end > 0)
            .map(|k| k.rss_end_over_start <= SOAK_RSS_RATIO),
    ));
    let a = k.and_then(|k| k.agreement.as_ref());
    rows.push((
        "soak: table agrees with ss".into(),
        a.map_or("–".into(), |a| {
            let owners = |o: &Owners| {
                if o.table == o.ss {
                    format!("{:?} in both", o.table)
                } else {
                    format!("table {:?}, ss {:?}", o.table, o.ss)
                }
            };
            format!(
                "listener {}, receiver {}; left on their ports: {} in the table, {} in ss; stale entries: {}",
                owners(&a.listener),
                owners(&a.receiver),
                a.leftover_table.count,
                a.leftover_ss.count,
                a.stale.count
            )
        }),
        a.map(Agreement::met),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soak_section_shows_the_figures() {
        let k = SoakResults {
            secs_planned: 5.0,
            secs: 5.2,
            concurrency: 4,
            processes: 120,
            connections: 24_000,
            udp_sends: 6000,
            expected: 102_005,
            delivered: 102_005,
            rss_ready: 40 << 20,
            rss_end: 41 << 20,
            rss_end_over_start: 1.025,
            errors: vec!["one | thing\nand another".into()],
            ..SoakResults::default()
        };
        let mut s = String::new();
        table(&mut s, &k);
        assert!(s.contains("| **missing** | **0** |"), "{s}");
        assert!(s.contains("24,000 TCP connections"), "{s}");
        assert!(s.contains("end/start 1.025"), "{s}");
        assert!(s.contains("- error: `one   thing and another`"), "{s}");
        assert!(!s.contains("owners in the table"), "{s}");
    }

    #[test]
    fn soak_verdicts() {
        let verdicts = |k: &SoakResults| {
            let mut rows = Vec::new();
            targets(&mut rows, Some(k));
            rows.iter().map(|r| r.2).collect::<Vec<_>>()
        };
        let mut k = SoakResults {
            connections: 1000,
            rss_ready: 100,
            rss_end: 105,
            rss_end_over_start: 1.05,
            agreement: Some(Agreement {
                server_pid: 7,
                listener: Owners {
                    table: vec![7],
                    ss: vec![7],
                },
                receiver: Owners {
                    table: vec![7],
                    ss: vec![7],
                },
                ..Default::default()
            }),
            ..SoakResults::default()
        };
        assert_eq!(verdicts(&k), vec![Some(true), Some(true), Some(true)]);
        k.missing = 3;
        k.rss_end_over_start = 1.2;
        k.agreement.as_mut().unwrap().stale.count = 1;
        assert_eq!(verdicts(&k), vec![Some(false), Some(false), Some(false)]);
        // Without every process's report, missing means nothing.
        k.processes_unreported = 1;
        assert_eq!(verdicts(&k)[0], None);
        let mut rows = Vec::new();
        targets(&mut rows, None);
        assert!(rows.iter().all(|r| r.2.is_none() && r.1 == "–"));
    }
}
