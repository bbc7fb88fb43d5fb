//! Diagnostics through `tracing`, written where the platform keeps them.
//!
//! - Under systemd, when stderr *is* the journal (systemd sets
//!   `JOURNAL_STREAM=DEV:INODE` to the stream it connected, and a child that
//!   inherited the variable with another stderr must not be fooled: the
//!   device and inode are compared, as systemd.exec(5) says to), records go
//!   to journald natively through `tracing-journald`: each field of an event
//!   becomes a journal field `SOCKMON_NAME` (e.g. `SOCKMON_SOCKETS`), the
//!   module path is `TARGET`, the source is `CODE_FILE`/`CODE_LINE`, and the
//!   level is the `PRIORITY` (below). Should journald's socket be unusable,
//!   stderr is used as elsewhere.
//! - Elsewhere, stderr (text, colour on a terminal).
//!
//! Priorities (syslog(3) levels): ERROR → 3 (err), WARN → 4 (warning),
//! INFO → 6 (info), DEBUG and TRACE → 7 (debug).
//!
//! `RUST_LOG` wins; otherwise the level the command or the daemon's
//! configuration asks for, which SIGHUP can change. The kernel programs do
//! not log (no aya-log: a log record on the hot path costs a ring write);
//! their failures are per-CPU counters that `status` and metrics show.

use std::os::{fd::AsFd as _, unix::fs::MetadataExt as _};

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt as _, reload, util::SubscriberInitExt as _,
};

/// Prefix of the journal fields made from an event's fields.
pub const JOURNAL_FIELD_PREFIX: &str = "SOCKMON";

/// Where records go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Journal,
    Stderr,
}

/// Changes the level after start-up.
pub struct LogHandle {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    from_env: bool,
    destination: Destination,
}

/// Installs the subscriber with `default` as the level (unless `RUST_LOG` is set).
pub fn init(default: &str) -> LogHandle {
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = EnvFilter::new(env.as_deref().unwrap_or(default));
    let (layer, handle) = reload::Layer::new(filter);
    let journald = stderr_is_journal()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|l| {
            l.with_field_prefix(Some(JOURNAL_FIELD_PREFIX.to_string()))
                .with_priority_mappings(PriorityMappings {
                    error: Priority::Error,
                    warn: Priority::Warning,
                    info: Priority::Informational,
                    debug: Priority::Debug,
                    trace: Priority::Debug,
                })
        });
    let destination = if journald.is_some() {
        Destination::Journal
    } else {
        Destination::Stderr
    };
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
    });
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(journald)
        .with(stderr)
        .try_init()
        .is_ok();
    LogHandle {
        handle: installed.then_some(handle),
        from_env: env.is_some(),
        destination,
    }
}

impl LogHandle {
    /// Sets the level (ignored when `RUST_LOG` chose it).
    pub fn set_level(&self, level: &str) {
        if let (Some(h), false) = (&self.handle, self.from_env) {
            let _ = h.reload(EnvFilter::new(level));
        }
    }

    /// Where the records go.
    pub fn destination(&self) -> Destination {
        self.destination
    }
}

/// Whether stderr is the stream systemd connected to the journal.
fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// `"DEV:INODE"` (both decimal) → (device, inode).
fn parse_journal_stream(s: &str) -> Option<(u64, u64)> {
    let (dev, ino) = s.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// `err` and every error below it, as `a: b: c` (a source already quoted by
/// the error above it is left out).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_variable() {
        assert_eq!(parse_journal_stream("8:123456"), Some((8, 123_456)));
        assert_eq!(parse_journal_stream("8:"), None);
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
    }
}
