//! The listener watchdog: port classes, the policy of allowed listeners,
//! and the alerts raised when a listener opens that the policy does not
//! allow.
//!
//! ```text
//! state task ──(listen, explicit UDP bind, close of a listener)──▶ policy thread
//!     ▲                                                        │ read /proc (exe, unit, parent)
//!     └──────────────────── alerts ◀── judge + dedup ◀─────────┘ ─▶ journal
//! ```
//!
//! Why a thread of its own: judging needs the owner's executable and unit,
//! and a rule must never be judged on half-known metadata. The state task
//! hands over what the event and the table already say (an event that
//! carries exe and unit needs no `/proc` read at all); whatever is missing is
//! read here, off the event path, before the rules run. An owner that exits
//! before it could be read is reported as such (`metadata: partial`), never
//! judged by rules it might have passed or failed. Hand-over is `try_send`:
//! a full queue drops the listener and counts it (`status`, metrics).

pub mod alerts;
pub mod audit;
pub mod hidden;
pub mod journal;
pub mod ports;
pub mod rules;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use alerts::{Alert, AlertOwner, Reason};
pub use rules::{Policy, PolicyConfig, Severity, Subject, Verdict};

use crate::{
    event::{Comm, Event, EventKind, Proto},
    filter::Filter,
};

/// A listener that opened, as the state task knows it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub inode: u64,
    pub netns: u32,
    pub proto: Proto,
    pub ip: IpAddr,
    pub port: u16,
    pub pid: u32,
    pub start_ticks: u64,
    pub uid: u32,
    pub comm: Comm,
    /// From the event or the table, when known already.
    pub exe: Option<Arc<str>>,
    pub unit: Option<Arc<str>>,
    /// What the kernel captured at exec time (flows), complete or `None`:
    /// used when the process is gone before `/proc` could be read.
    pub at_event: Option<Identity>,
}

impl Candidate {
    /// The event-time identity of `e`'s process, if it is complete.
    pub fn identity_at_event(e: &Event) -> Option<Identity> {
        let c = e.ctx.as_deref().filter(|c| !c.partial)?;
        let (exe, _) = c.exe.as_ref()?;
        Some(Identity {
            exe: Some(String::from_utf8_lossy(exe).into_owned()),
            unit: c.unit.clone(),
            container: c
                .container
                .as_ref()
                .map(|k| format!("{}:{}", k.runtime, k.id)),
            ppid: c.ppid,
            parent_exe: None,
        })
    }
}

impl Candidate {
    /// Whether `e` opens a listener: a successful `listen`, or an explicit
    /// UDP `bind` to a port (whether the kernel picked that port is decided
    /// by the policy thread, which knows the namespace's ephemeral range).
    pub fn is_listener(e: &Event) -> bool {
        e.error.is_none()
            && e.inode != 0
            && match (e.kind, e.proto) {
                (EventKind::Listen, Proto::Tcp) => true,
                (EventKind::Bind, Proto::Udp) => !e.is_implicit() && e.src.port() != 0,
                _ => false,
            }
    }
}

enum Input {
    Open(Box<Candidate>),
    Close(u64),
    Reload(Option<Arc<Policy>>),
}

/// Counters of the policy, for `status` and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub enabled: AtomicBool,
    pub rules: AtomicU64,
    pub evaluated: AtomicU64,
    /// Listeners not judged because the queue to the policy thread was full.
    pub dropped: AtomicU64,
    /// Listeners whose owner exited before it could be identified.
    pub partial: AtomicU64,
    /// Alerts lost because the stream's queue was full.
    pub alerts_dropped: AtomicU64,
    pub journal_errors: AtomicU64,
    pub reloads: AtomicU64,
    /// Alerts go to the journal (so the stdout sink, if it is the journal's stream, leaves them out).
    pub journal: AtomicBool,
    /// (reason, severity, rule, port class) → alerts raised. Bounded: rules
    /// come from the policy, the rest are fixed lists.
    pub alerts: Mutex<BTreeMap<(String, String, String, String), u64>>,
}

/// What `status` shows of the policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub enabled: bool,
    pub rules: u64,
    pub evaluated: u64,
    pub dropped: u64,
    pub partial: u64,
    pub alerts_dropped: u64,
    pub journal_errors: u64,
    pub reloads: u64,
    pub alerts: Vec<AlertCount>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertCount {
    pub reason: String,
    pub severity: String,
    pub rule: String,
    pub port_class: String,
    pub count: u64,
}

impl Counters {
    pub fn status(&self) -> PolicyStatus {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let alerts = self
            .alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((reason, severity, rule, port_class), count)| AlertCount {
                reason: reason.clone(),
                severity: severity.clone(),
                rule: rule.clone(),
                port_class: port_class.clone(),
                count: *count,
            })
            .collect();
        PolicyStatus {
            enabled: self.enabled.load(Ordering::Relaxed),
            rules: r(&self.rules),
            evaluated: r(&self.evaluated),
            dropped: r(&self.dropped),
            partial: r(&self.partial),
            alerts_dropped: r(&self.alerts_dropped),
            journal_errors: r(&self.journal_errors),
            reloads: r(&self.reloads),
            alerts,
        }
    }
}

/// The state task's (and the daemon's) end of the policy thread.
#[derive(Clone, Debug)]
pub struct PolicyHandle {
    tx: SyncSender<Input>,
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("policy input")
    }
}

/// Listeners that may wait for the policy thread.
const QUEUE: usize = 4096;
/// Alerts that may wait for the state task.
const ALERT_QUEUE: usize = 1024;

impl PolicyHandle {
    pub fn enabled(&self) -> bool {
        self.counters.enabled.load(Ordering::Relaxed)
    }

    /// Hands a listener over (never blocks; a full queue is counted).
    pub fn offer(&self, c: Candidate) {
        if !self.enabled() {
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Input::Open(Box::new(c))) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A socket that was listening closed.
    pub fn closed(&self, inode: u64) {
        if self.enabled() {
            let _ = self.tx.try_send(Input::Close(inode));
        }
    }

    /// Replaces the policy (`None`: stop judging). Probes are not touched.
    pub fn reload(&self, policy: Option<Arc<Policy>>) {
        self.counters
            .enabled
            .store(policy.is_some(), Ordering::Relaxed);
        self.counters.rules.store(
            policy.as_ref().map_or(0, |p| p.rules.len() as u64),
            Ordering::Relaxed,
        );
        // Blocking send: a reload must not be lost (the queue drains fast).
        let _ = self.tx.send(Input::Reload(policy));
    }
}

/// Starts the policy thread; it ends when every handle is dropped.
pub fn spawn(
    policy: Option<Arc<Policy>>,
) -> std::io::Result<(PolicyHandle, mpsc::Receiver<Alert>)> {
    let (tx, rx) = sync_channel(QUEUE);
    let (alert_tx, alert_rx) = mpsc::channel(ALERT_QUEUE);
    let counters = Arc::new(Counters::default());
    let handle = PolicyHandle {
        tx,
        counters: counters.clone(),
    };
    std::thread::Builder::new()
        .name("sockmon-policy".into())
        .spawn(move || run(rx, alert_tx, counters))?;
    handle.reload(policy);
    Ok((handle, alert_rx))
}

fn run(rx: Receiver<Input>, out: mpsc::Sender<Alert>, counters: Arc<Counters>) {
    let mut policy: Option<Arc<Policy>> = None;
    let mut journal = false;
    let mut tracker = alerts::Tracker::default();
    let mut last_prune = Instant::now();
    while let Ok(input) = rx.recv() {
        match input {
            Input::Reload(p) => {
                if policy.is_some() {
                    counters.reloads.fetch_add(1, Ordering::Relaxed);
                }
                journal = p.as_ref().is_some_and(|p| journal::enabled(p.journal));
                counters.journal.store(journal, Ordering::Relaxed);
                policy = p;
            }
            Input::Close(inode) => tracker.close(inode),
            Input::Open(c) => {
                let Some(p) = &policy else { continue };
                if let Some(alert) = judge(p, &c, &mut tracker, &counters) {
                    count(&counters, &alert);
                    if journal && journal::send(&alert).is_err() {
                        counters.journal_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if out.try_send(alert).is_err() {
                        counters.alerts_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if last_prune.elapsed() > Duration::from_secs(1) {
            last_prune = Instant::now();
            if let Some(p) = &policy {
                tracker.prune(p.grace);
            }
        }
    }
}

fn count(counters: &Counters, a: &Alert) {
    let key = (
        a.reason.name().to_string(),
        a.severity.name().to_string(),
        a.rule.clone().unwrap_or_else(|| "none".into()),
        a.facts.class.name().to_string(),
    );
    *counters
        .alerts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
}

/// What `/proc` says of a process (read once its listener is judged).
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub exe: Option<String>,
    pub unit: Option<String>,
    pub container: Option<String>,
    pub ppid: Option<u32>,
    pub parent_exe: Option<String>,
}

/// Reads the identity of `pid` if it is still the process started at
/// `start_ticks` (`None`: it is gone). `exe`/`unit` already known are kept.
pub fn identify(
    pid: u32,
    start_ticks: u64,
    exe: Option<&str>,
    unit: Option<&str>,
) -> Option<Identity> {
    let read_exe = |pid: u32| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    };
    let exe = exe.map(str::to_string).or_else(|| read_exe(pid));
    let placement = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|t| crate::cgroup_unit::from_proc_cgroup(&t))
        .unwrap_or_default();
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let ppid = ppid_of(&stat);
    if crate::procfs::start_ticks(&stat)? != start_ticks {
        return None;
    }
    // The container as the rules match it: `runtime:` and the full id.
    let container = placement
        .container
        .map(|k| format!("{}:{}", k.runtime, k.id));
    let unit = unit.map(str::to_string).or(placement.unit);
    Some(Identity {
        exe,
        unit,
        container,
        ppid,
        parent_exe: ppid.filter(|p| *p != 0).and_then(read_exe),
    })
}

/// Field 4 of `/proc/PID/stat` (after the parenthesised name, which may hold anything).
fn ppid_of(stat: &[u8]) -> Option<u32> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn judge(
    p: &Policy,
    c: &Candidate,
    tracker: &mut alerts::Tracker,
    counters: &Counters,
) -> Option<Alert> {
    let facts = ports::PortFacts::of(c.netns, Some(c.pid), c.ip, c.port);
    if c.proto == Proto::Udp && facts.ephemeral != Some(false) {
        // A port the kernel hands out for bind(:0): a client's, not a service's.
        return None;
    }
    counters.evaluated.fetch_add(1, Ordering::Relaxed);
    // /proc first (it names a memfd or a deleted file as the kernel sees it
    // now); what the kernel captured at exec when the process is gone.
    let id = identify(c.pid, c.start_ticks, c.exe.as_deref(), c.unit.as_deref())
        .or_else(|| c.at_event.clone());
    let complete = id.is_some();
    let id = id.unwrap_or_default();
    let verdict = if complete {
        p.judge(&Subject {
            exe: id.exe.clone(),
            unit: id.unit.clone(),
            socket_unit: None,
            uid: c.uid,
            container: id.container.clone(),
            netns: c.netns,
            proto: Some(c.proto),
            ip: Some(c.ip),
            port: c.port,
            parent_exe: id.parent_exe.clone(),
        })
    } else {
        counters.partial.fetch_add(1, Ordering::Relaxed);
        Verdict::NotAllowed {
            severity: p.not_allowed_severity,
        }
    };
    let raise = tracker.open(
        &alerts::Opened {
            inode: c.inode,
            netns: c.netns,
            proto: c.proto,
            ip: c.ip,
            port: c.port,
            exe: id.exe.as_deref().map(Arc::from),
            unit: id.unit.as_deref().map(Arc::from),
            verdict: &verdict,
        },
        p.grace,
    )?;
    Some(Alert {
        time: crate::clock::WallTime::now(),
        reason: raise.reason,
        severity: raise.severity,
        rule: raise.rule,
        proto: c.proto,
        ip: c.ip,
        port: c.port,
        netns: c.netns,
        inode: c.inode,
        owner: AlertOwner {
            pid: c.pid,
            comm: crate::escape::for_json(c.comm.as_bytes()).into_owned(),
            uid: c.uid,
            exe: id.exe,
            unit: id.unit,
            socket_unit: None,
            container: id.container,
            ppid: id.ppid,
            parent_exe: id.parent_exe,
        },
        facts,
        complete,
        previous: raise.previous,
    })
}

impl Alert {
    /// Whether a subscriber with `f` wants this alert (its event kinds do not apply).
    pub fn passes(&self, f: &Filter) -> bool {
        (f.pids.is_empty() || f.pids.contains(&self.owner.pid))
            && (f.comms.is_empty() || f.comms.contains(&self.owner.comm))
            && (f.ports.is_empty() || f.ports.contains(&self.port))
            && f.proto.is_none_or(|p| p == self.proto)
    }
}

/// A policy error with where it is: `path:line:column: reason`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
}

/// Where key `key` of rule `rule` (0-based; `None`: a top-level key) is set
/// in `text`, whose rule tables are headed `[[{header}]]`; best effort.
pub fn locate(
    text: &str,
    header: &str,
    top: &str,
    rule: Option<usize>,
    key: &str,
) -> (usize, usize) {
    let rule_header = format!("[[{header}]]");
    let top_header = format!("[{top}]");
    let mut seen = 0usize;
    let mut in_it = top.is_empty() && rule.is_none();
    let mut header_line = (1, 1);
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            if t == rule_header {
                in_it = rule == Some(seen);
                if in_it {
                    header_line = (i + 1, 1);
                }
                seen += 1;
            } else {
                in_it = rule.is_none() && t == top_header;
            }
            continue;
        }
        if in_it && t.split('=').next().map(str::trim) == Some(key) {
            return (i + 1, line.len() - line.trim_start().len() + 1);
        }
    }
    header_line
}

/// Parses the text of a policy file (rules at top level, `[[rule]]`).
pub fn parse_file(path: &Path, text: &str) -> Result<(PolicyConfig, Policy), PolicyError> {
    let cfg: PolicyConfig = crate::toml_text::parse(text).map_err(|at| PolicyError::Invalid {
        path: path.to_path_buf(),
        line: at.line,
        column: at.column,
        reason: at.reason,
    })?;
    if cfg.file.is_some() {
        let (line, column) = locate(text, "rule", "", None, "file");
        return Err(PolicyError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            reason: "file: a policy file cannot include another".into(),
        });
    }
    let policy = compile_at(path, text, "rule", "", &cfg)?;
    Ok((cfg, policy))
}

fn compile_at(
    path: &Path,
    text: &str,
    header: &str,
    top: &str,
    cfg: &PolicyConfig,
) -> Result<Policy, PolicyError> {
    Policy::compile(cfg).map_err(|e| {
        let (line, column) = locate(text, header, top, e.rule, e.key);
        let which = e
            .rule
            .map(|i| format!("rule {}: ", i + 1))
            .unwrap_or_default();
        PolicyError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            reason: format!("{which}{}: {}", e.key, e.reason),
        }
    })
}

/// Reads and parses a policy file.
pub fn load_file(path: &Path) -> Result<(PolicyConfig, Policy), PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &text)
}

/// The policy of a configuration's `[policy]` section (`text` is the
/// configuration file's, to point at lines): its inline rules, then those of
/// its `file`. `None` when there is none or it is turned off.
pub fn from_config(
    path: &Path,
    text: &str,
    cfg: Option<&PolicyConfig>,
) -> Result<Option<Policy>, PolicyError> {
    let Some(cfg) = cfg else { return Ok(None) };
    let inline = compile_at(path, text, "policy.rule", "policy", cfg)?;
    if cfg.enabled == Some(false) {
        return Ok(None);
    }
    let Some(file) = &cfg.file else {
        return Ok(Some(inline));
    };
    let (more, _) = load_file(file)?;
    let mut merged = cfg.clone();
    merged.file = None;
    merged.rule.extend(more.rule);
    // Checked separately above; only a name clash across the two can fail here.
    Policy::compile(&merged)
        .map(Some)
        .map_err(|e| PolicyError::Invalid {
            path: file.clone(),
            line: 1,
            column: 1,
            reason: format!("{}: {}", e.key, e.reason),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_point_at_the_rule_key() {
        let text =
            "grace_s = 5\n\n[[rule]]\nname = \"a\"\n\n[[rule]]\nname = \"b\"\n  port = \"x\"\n";
        let e = parse_file(Path::new("/p.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/p.toml:8:3: rule 2: port: "), "{e}");
        let e = parse_file(Path::new("/p.toml"), "[[rule]]\nexe = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/p.toml:2:"), "{e}");
        let e = parse_file(Path::new("/p.toml"), "[[rule]]\nexee = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `exee`"), "{e}");
    }

    #[test]
    fn config_sections_locate_and_merge_a_file() {
        let dir = std::env::temp_dir().join(format!("sockmon-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        std::fs::write(&file, "[[rule]]\nname = \"from-file\"\nport = 22\n").unwrap();
        let text = format!(
            "[policy]\nfile = \"{}\"\n[[policy.rule]]\nname = \"inline\"\nport = 80\n",
            file.display()
        );
        let cfg: toml::Value = toml::from_str(&text).unwrap();
        let pc: PolicyConfig = cfg["policy"].clone().try_into().unwrap();
        let p = from_config(Path::new("/c.toml"), &text, Some(&pc))
            .unwrap()
            .unwrap();
        let names: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["inline", "from-file"]);
        let bad = "[policy]\n[[policy.rule]]\nport = 99999\n";
        let pc: PolicyConfig = toml::from_str::<toml::Value>(bad).unwrap()["policy"]
            .clone()
            .try_into()
            .unwrap();
        let e = from_config(Path::new("/c.toml"), bad, Some(&pc))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/c.toml:3:1: rule 1: port"), "{e}");
        assert!(from_config(Path::new("/c"), "", None).unwrap().is_none());
        let off = PolicyConfig {
            enabled: Some(false),
            ..Default::default()
        };
        assert!(
            from_config(Path::new("/c"), "", Some(&off))
                .unwrap()
                .is_none()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_packaged_example_policy_parses_with_the_documented_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let block: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("##"))
            .filter(|l| !l.starts_with(' ') && !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        let cfg: toml::Table = toml::from_str(&block).unwrap();
        let mut pc: PolicyConfig = cfg["policy"].clone().try_into().unwrap();
        assert_eq!(pc.builtin, Some(rules::BuiltinConfig::default()));
        assert_eq!(
            (
                pc.default.as_deref(),
                pc.severity.as_deref(),
                pc.grace_s,
                pc.journal.as_deref()
            ),
            (Some("alert"), Some("warning"), Some(10.0), Some("auto"))
        );
        pc.file = None;
        let p = Policy::compile(&pc).unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.grace, Duration::from_secs(10));
        assert_eq!(p.journal, rules::JournalMode::Auto);
    }

    #[test]
    fn ppid_survives_hostile_names() {
        assert_eq!(ppid_of(b"12 (a) b) S 34 12 12 0"), Some(34));
        assert_eq!(ppid_of(b"garbage"), None);
    }

    #[test]
    fn our_own_identity() {
        let me = std::process::id();
        let stat = std::fs::read(format!("/proc/{me}/stat")).unwrap();
        let start = crate::procfs::start_ticks(&stat).unwrap();
        let id = identify(me, start, None, None).unwrap();
        assert_eq!(
            id.exe.as_deref(),
            std::env::current_exe()
                .ok()
                .as_deref()
                .and_then(Path::to_str)
        );
        assert_eq!(id.ppid, ppid_of(&stat));
        assert!(identify(me, start + 1, None, None).is_none());
    }
}
