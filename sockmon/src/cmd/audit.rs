//! `sockmon audit`: this moment's listeners judged against the policy, in
//! one shot (from a snapshot of its own, so it works with or without a
//! daemon), for cron, CI and configuration management: exit 0 when clean,
//! 1 on violations (or, with `--hidden`, a listener one kernel view hides),
//! 2 on errors.

use std::{io::Write as _, process::ExitCode};

use serde_json::json;

use super::{EXIT_USAGE, fail, policy::from_source, print};
use crate::{
    cli::AuditArgs,
    output::escape,
    policy::{audit, hidden},
    snapshot,
};

pub fn run(args: &AuditArgs) -> ExitCode {
    let policy = match from_source(&args.source) {
        Ok(p) => p,
        Err(e) => return fail(&e, EXIT_USAGE),
    };
    let snap = match snapshot::take() {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot take a snapshot: {e}"), EXIT_USAGE),
    };
    let listeners = audit::listeners(&snap, &args.netns);
    let violations = audit::violations(&policy, &listeners);
    let hidden = args.hidden.then(|| hidden::compare(&args.netns));
    let discrepancies: usize = hidden.iter().flatten().map(|n| n.discrepancies.len()).sum();
    let clean = violations.is_empty() && discrepancies == 0;
    let mut out = Vec::new();
    if args.json {
        let v = json!({
            "clean": clean,
            "listeners": listeners.len(),
            "violations": violations,
            "hidden": hidden,
        });
        let _ = serde_json::to_writer(&mut out, &v);
        out.push(b'\n');
    } else {
        table(&mut out, listeners.len(), &violations, hidden.as_deref());
    }
    if let Err(code) = print(&out) {
        return code;
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn table(
    out: &mut Vec<u8>,
    listeners: usize,
    violations: &[audit::Violation],
    hidden: Option<&[hidden::NsReport]>,
) {
    let t = |s: &str| escape::for_terminal(s.as_bytes()).into_owned();
    if !violations.is_empty() {
        let _ = writeln!(
            out,
            "{:<9} {:<12} {:<26} {:<5} {:<28} {:<11} {:<7} EXE UNIT",
            "SEVERITY", "REASON", "RULE", "PROTO", "LOCAL", "CLASS", "PID"
        );
    }
    for v in violations {
        let local = if v.address.contains(':') {
            format!("[{}]:{}", v.address, v.port)
        } else {
            format!("{}:{}", v.address, v.port)
        };
        let (pid, exe, unit) = match &v.owner {
            Some(o) => (
                o.pid.to_string(),
                o.exe.as_deref().map_or("?".into(), t),
                o.unit.as_deref().map_or("-".into(), t),
            ),
            None => ("-".into(), "(no process holds it)".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:<9} {:<12} {:<26} {:<5} {:<28} {:<11} {:<7} {exe} {unit}",
            v.severity,
            v.reason,
            v.rule.as_deref().map_or("-".into(), t),
            v.proto,
            local,
            v.port_class,
            pid
        );
    }
    let _ = writeln!(
        out,
        "{listeners} listeners, {} not allowed",
        violations.len()
    );
    for ns in hidden.unwrap_or_default() {
        if let Some(why) = &ns.skipped {
            let _ = writeln!(out, "netns {}: not compared: {why}", ns.netns);
            continue;
        }
        let _ = writeln!(
            out,
            "netns {}: sock_diag {}, /proc/net {}, descriptor tables {} ({} held by no process, left out)",
            ns.netns, ns.sock_diag, ns.proc_net, ns.fd, ns.unheld
        );
        for d in &ns.discrepancies {
            let _ = writeln!(
                out,
                "  HIDDEN {} {}:{} inode {} shown by {} but not by {} (holders {:?})",
                d.proto,
                d.address,
                d.port,
                d.inode,
                d.shown_by.join(", "),
                d.hidden_from.join(", "),
                d.holders
            );
        }
    }
}
