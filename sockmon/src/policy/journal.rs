//! Alerts to the systemd journal over its native protocol (through
//! `libsystemd`), each with a constant `MESSAGE_ID` per reason and
//! structured `SOCKMON_*` fields, so that `journalctl MESSAGE_ID=…
//! SOCKMON_PORT=…` finds them.
//!
//! Sent once, here. The stdout sink leaves alert records out when its
//! stdout is the journal's stream (see [`stdout_is_journal`]), so an alert
//! under systemd is one journal entry, not two.

use libsystemd::logging::{JournalStream, Priority, journal_send};

use super::{alerts::Alert, rules::JournalMode};

/// Whether alerts go to the journal in `mode`: `auto` means "when systemd
/// connected our stderr to the journal" (the protocol's own test).
pub fn enabled(mode: JournalMode) -> bool {
    match mode {
        JournalMode::On => true,
        JournalMode::Off => false,
        JournalMode::Auto => libsystemd::logging::connected_to_journal(),
    }
}

/// Whether our stdout is the journal's stream (`$JOURNAL_STREAM` names it).
pub fn stdout_is_journal() -> bool {
    JournalStream::from_env()
        .is_ok_and(|env| JournalStream::from_fd(std::io::stdout()).is_ok_and(|out| out == env))
}

fn priority(a: &Alert) -> Priority {
    match a.severity.priority() {
        2 => Priority::Critical,
        4 => Priority::Warning,
        _ => Priority::Info,
    }
}

/// The structured fields of `a`.
pub fn fields(a: &Alert) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("MESSAGE_ID", a.reason.message_id().to_string()),
        ("SYSLOG_IDENTIFIER", "sockmon".to_string()),
        ("SOCKMON_REASON", a.reason.name().to_string()),
        ("SOCKMON_SEVERITY", a.severity.name().to_string()),
        ("SOCKMON_PROTO", a.proto.name().to_string()),
        ("SOCKMON_ADDRESS", a.ip.to_string()),
        ("SOCKMON_PORT", a.port.to_string()),
        ("SOCKMON_PORT_CLASS", a.facts.class.name().to_string()),
        ("SOCKMON_ADDR_SCOPE", a.facts.scope.name().to_string()),
        ("SOCKMON_NETNS", a.netns.to_string()),
        ("SOCKMON_INODE", a.inode.to_string()),
        ("SOCKMON_PID", a.owner.pid.to_string()),
        ("SOCKMON_UID", a.owner.uid.to_string()),
        ("SOCKMON_COMM", a.owner.comm.clone()),
        (
            "SOCKMON_METADATA",
            if a.complete { "complete" } else { "partial" }.to_string(),
        ),
    ];
    let opt = [
        ("SOCKMON_RULE", &a.rule),
        ("SOCKMON_EXE", &a.owner.exe),
        ("SOCKMON_UNIT", &a.owner.unit),
        ("SOCKMON_CONTAINER", &a.owner.container),
        ("SOCKMON_PARENT_EXE", &a.owner.parent_exe),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            f.push((k, v.clone()));
        }
    }
    if let Some(p) = &a.previous {
        f.push(("SOCKMON_PREVIOUS_ADDRESS", p.address.clone()));
        if let Some(e) = &p.exe {
            f.push(("SOCKMON_PREVIOUS_EXE", e.clone()));
        }
    }
    f
}

/// Sends `a` to the journal.
pub fn send(a: &Alert) -> Result<(), String> {
    let fields = fields(a);
    journal_send(
        priority(a),
        &a.message(),
        fields.iter().map(|(k, v)| (*k, v.as_str())),
    )
    .map_err(|e| e.to_string())
}
