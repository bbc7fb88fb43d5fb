//! `sockmon status`: what the running daemon reports about itself.

use std::{fmt::Write as _, path::Path, process::ExitCode};

use super::{Backend, backend, fail, print};
use crate::{cli::StatusArgs, engine::stats::Status};

pub fn run(args: &StatusArgs, socket: &Path) -> ExitCode {
    let mut client = match backend(socket, false) {
        Err(code) => return code,
        Ok(Backend::Daemon(c)) => c,
        Ok(Backend::Alone) => {
            return fail(
                &format!(
                    "no daemon is running at {} (start it with `systemctl start sockmon` or `sockmon daemon`)",
                    socket.display()
                ),
                1,
            );
        }
    };
    let status = match client.status() {
        Ok(s) => s,
        Err(e) => return fail(&e, 1),
    };
    let out = if args.json {
        let mut v = serde_json::to_vec(&status).unwrap_or_default();
        v.push(b'\n');
        v
    } else {
        human(&status).into_bytes()
    };
    match print(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// The status for people.
pub fn human(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sockmon {} — up {:.0} s, probes {}",
        s.version,
        s.uptime_s,
        if s.probes_attached {
            "attached"
        } else {
            "NOT attached"
        }
    );
    let kinds: Vec<String> = s
        .attach
        .kinds
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        o,
        "attach:    {} ({}){}",
        s.attach.mode,
        kinds.join(" "),
        s.attach
            .fallback
            .as_deref()
            .map(|f| format!("; auto fell back: {f}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "table:     {} sockets, {} processes (cap {}, {} evicted)",
        s.table.sockets, s.table.processes, s.table.cap, s.table.evictions
    );
    if let Some(snap) = &s.snapshot {
        let _ = writeln!(
            o,
            "snapshot:  {} sockets in {:.1} ms at {} (from {})",
            snap.sockets, snap.duration_ms, snap.time, snap.source
        );
        if let Some(why) = &snap.fallback {
            let _ = writeln!(o, "           sock_diag not used: {why}");
        }
    }
    let _ = writeln!(
        o,
        "events:    {:<10} {:>12} {:>10}",
        "kind", "total", "per s"
    );
    for (k, total) in &s.events_total {
        let rate = s.events_per_s.get(k).copied().unwrap_or(0.0);
        let _ = writeln!(o, "           {k:<10} {total:>12} {rate:>10.1}");
    }
    let drops: Vec<String> = s
        .dropped
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        o,
        "dropped:   {}",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        }
    );
    let _ = writeln!(
        o,
        "re-checks: {} reconciliations, {} drift (sockets no event reported)",
        s.reconciliations, s.drift
    );
    let _ = writeln!(
        o,
        "clients:   {} connected, {} subscribed",
        s.clients, s.subscribers
    );
    o
}
