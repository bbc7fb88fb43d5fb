//! Alerts: what the policy says about a listener that opened, once per
//! program and endpoint.
//!
//! [`Tracker`] remembers, per (exe, unit, proto, address, port), whether that
//! program listens there now or stopped less than the grace window ago (then
//! a reopen is a restart and raises nothing); per (netns, proto, address,
//! port), who listened there last (`owner_changed`); and per program and
//! port, the addresses it used (`address_widened`: 127.0.0.1 before, 0.0.0.0
//! now). Keys are programs and endpoints, never PIDs. Memory is bounded:
//! history of closed listeners beyond [`HISTORY_CAP`] is forgotten, oldest
//! first.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    ports::{AddrScope, PortFacts},
    rules::{Severity, Verdict},
};
use crate::{clock::WallTime, event::Proto};

/// Why an alert was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No rule allows the listener.
    NotAllowed,
    /// A deny rule (or a built-in deny) matched.
    Denied,
    /// The same program now listens on a wider address than before.
    AddressWidened,
    /// Another program now listens where a different one did.
    OwnerChanged,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Self::NotAllowed,
        Self::Denied,
        Self::AddressWidened,
        Self::OwnerChanged,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::NotAllowed => "not_allowed",
            Self::Denied => "denied",
            Self::AddressWidened => "address_widened",
            Self::OwnerChanged => "owner_changed",
        }
    }

    /// The journal's `MESSAGE_ID` of alerts of this reason: constant, so
    /// `journalctl MESSAGE_ID=…` finds every one of them.
    pub const fn message_id(self) -> &'static str {
        match self {
            Self::NotAllowed => "6b1f4d0c8e7a4c2f9a3e5d7b1c0f2a41",
            Self::Denied => "2c9e7f3a1b5d4e8f8c6a0b2d4f6e8a12",
            Self::AddressWidened => "9d3b5f7e1a2c4d6e8f0a1b3c5d7e9f23",
            Self::OwnerChanged => "4e6a8c0e2f4b6d8a9c1e3f5a7b9d0c34",
        }
    }
}

/// The process behind an alert, as far as it is known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AlertOwner {
    pub pid: u32,
    pub comm: String,
    pub uid: u32,
    pub exe: Option<String>,
    pub unit: Option<String>,
    pub socket_unit: Option<String>,
    pub container: Option<String>,
    pub ppid: Option<u32>,
    pub parent_exe: Option<String>,
}

/// Who or where listened before (`owner_changed`, `address_widened`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Previous {
    pub exe: Option<String>,
    pub unit: Option<String>,
    pub address: String,
}

/// One alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub time: WallTime,
    pub reason: Reason,
    pub severity: Severity,
    /// The rule that decided (`None` for `not_allowed`).
    pub rule: Option<String>,
    pub proto: Proto,
    pub ip: IpAddr,
    pub port: u16,
    pub netns: u32,
    pub inode: u64,
    pub owner: AlertOwner,
    pub facts: PortFacts,
    /// Whether the owner's executable and unit were read (false: it exited first).
    pub complete: bool,
    pub previous: Option<Previous>,
}

impl Alert {
    /// One line for people (and the journal's MESSAGE).
    pub fn message(&self) -> String {
        let addr = std::net::SocketAddr::new(self.ip, self.port);
        let who = self
            .owner
            .exe
            .as_deref()
            .unwrap_or("an unidentified process");
        let unit = self
            .owner
            .unit
            .as_deref()
            .map(|u| format!(" ({u})"))
            .unwrap_or_default();
        let what = match self.reason {
            Reason::NotAllowed => "listener not allowed by the policy".to_string(),
            Reason::Denied => format!(
                "listener denied by rule {}",
                self.rule.as_deref().unwrap_or("?")
            ),
            Reason::AddressWidened => format!(
                "listener widened from {}",
                self.previous.as_ref().map_or("?", |p| p.address.as_str())
            ),
            Reason::OwnerChanged => format!(
                "listener changed owner (was {})",
                self.previous
                    .as_ref()
                    .and_then(|p| p.exe.as_deref())
                    .unwrap_or("?")
            ),
        };
        format!(
            "{what}: {} {addr} by {who}{unit} pid {}",
            self.proto.name(),
            self.owner.pid
        )
    }
}

/// Most closed-listener records kept for `owner_changed` and `address_widened`.
pub const HISTORY_CAP: usize = 65_536;

type Program = (Option<Arc<str>>, Option<Arc<str>>);
type Key = (Program, Proto, IpAddr, u16);
type Endpoint = (u32, Proto, IpAddr, u16);

#[derive(Debug)]
struct Usage {
    open: u32,
    closed_at: Option<Instant>,
}

impl Usage {
    fn live(&self, grace: Duration) -> bool {
        self.open > 0 || self.closed_at.is_some_and(|t| t.elapsed() < grace)
    }
}

/// A listener that opened, with what the policy said of it.
pub struct Opened<'a> {
    pub inode: u64,
    pub netns: u32,
    pub proto: Proto,
    pub ip: IpAddr,
    pub port: u16,
    pub exe: Option<Arc<str>>,
    pub unit: Option<Arc<str>>,
    pub verdict: &'a Verdict,
}

/// What to raise for an opened listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raise {
    pub reason: Reason,
    pub severity: Severity,
    pub rule: Option<String>,
    pub previous: Option<Previous>,
}

/// Per-program and per-endpoint memory of listeners (see the module docs).
#[derive(Debug, Default)]
pub struct Tracker {
    by_inode: HashMap<u64, (Key, Endpoint)>,
    keys: HashMap<Key, Usage>,
    endpoints: HashMap<Endpoint, (Program, Usage)>,
    /// (program, netns, proto, port) → addresses it listened on.
    addresses: HashMap<(Program, u32, Proto, u16), Vec<IpAddr>>,
}

impl Tracker {
    /// Whether `inode` is a listener being tracked.
    pub fn tracks(&self, inode: u64) -> bool {
        self.by_inode.contains_key(&inode)
    }

    /// Records a listener; returns what to raise, if anything.
    pub fn open(&mut self, o: &Opened<'_>, grace: Duration) -> Option<Raise> {
        if self.by_inode.contains_key(&o.inode) {
            return None; // seen already (listen twice, snapshot then event)
        }
        let program: Program = (o.exe.clone(), o.unit.clone());
        let key: Key = (program.clone(), o.proto, o.ip, o.port);
        let endpoint: Endpoint = (o.netns, o.proto, o.ip, o.port);
        self.by_inode.insert(o.inode, (key.clone(), endpoint));
        let restart = self.keys.get(&key).is_some_and(|u| u.live(grace));
        let usage = self.keys.entry(key).or_insert(Usage {
            open: 0,
            closed_at: None,
        });
        usage.open += 1;
        let previous_owner = match self.endpoints.get_mut(&endpoint) {
            Some((owner, u)) => {
                let prev = (owner != &program).then(|| owner.clone());
                *owner = program.clone();
                u.open += 1;
                prev
            }
            None => {
                self.endpoints.insert(
                    endpoint,
                    (
                        program.clone(),
                        Usage {
                            open: 1,
                            closed_at: None,
                        },
                    ),
                );
                None
            }
        };
        let addrs = self
            .addresses
            .entry((program, o.netns, o.proto, o.port))
            .or_default();
        let narrower = addrs
            .iter()
            .copied()
            .find(|a| AddrScope::of(o.ip).is_wider_than(AddrScope::of(*a)));
        if !addrs.contains(&o.ip) && addrs.len() < 16 {
            addrs.push(o.ip);
        }
        if restart {
            return None;
        }
        let raise = |reason, severity, rule: Option<String>, previous| {
            Some(Raise {
                reason,
                severity,
                rule,
                previous,
            })
        };
        match o.verdict {
            Verdict::Denied { rule, severity } => {
                raise(Reason::Denied, *severity, Some(rule.clone()), None)
            }
            Verdict::NotAllowed { severity } => raise(Reason::NotAllowed, *severity, None, None),
            Verdict::Allowed { rule } => {
                if let Some(a) = narrower {
                    return raise(
                        Reason::AddressWidened,
                        Severity::Warning,
                        Some(rule.clone()),
                        Some(Previous {
                            exe: o.exe.as_deref().map(str::to_string),
                            unit: o.unit.as_deref().map(str::to_string),
                            address: a.to_string(),
                        }),
                    );
                }
                let (exe, unit) = previous_owner?;
                raise(
                    Reason::OwnerChanged,
                    Severity::Warning,
                    Some(rule.clone()),
                    Some(Previous {
                        exe: exe.as_deref().map(str::to_string),
                        unit: unit.as_deref().map(str::to_string),
                        address: o.ip.to_string(),
                    }),
                )
            }
        }
    }

    /// A tracked listener closed.
    pub fn close(&mut self, inode: u64) {
        let Some((key, endpoint)) = self.by_inode.remove(&inode) else {
            return;
        };
        let now = Instant::now();
        if let Some(u) = self.keys.get_mut(&key) {
            u.open = u.open.saturating_sub(1);
            if u.open == 0 {
                u.closed_at = Some(now);
            }
        }
        if let Some((_, u)) = self.endpoints.get_mut(&endpoint) {
            u.open = u.open.saturating_sub(1);
            if u.open == 0 {
                u.closed_at = Some(now);
            }
        }
    }

    /// Forgets what no longer matters: closed keys past the grace window;
    /// history beyond [`HISTORY_CAP`].
    pub fn prune(&mut self, grace: Duration) {
        self.keys.retain(|_, u| u.live(grace));
        if self.endpoints.len() > HISTORY_CAP {
            self.endpoints.retain(|_, (_, u)| u.open > 0);
        }
        if self.addresses.len() > HISTORY_CAP {
            let live: std::collections::HashSet<(Program, u32, Proto, u16)> = self
                .by_inode
                .values()
                .map(|((p, proto, _, port), (netns, ..))| (p.clone(), *netns, *proto, *port))
                .collect();
            self.addresses.retain(|k, _| live.contains(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn opened<'a>(inode: u64, exe: &str, ip: &str, port: u16, verdict: &'a Verdict) -> Opened<'a> {
        Opened {
            inode,
            netns: 1,
            proto: Proto::Tcp,
            ip: ip.parse().unwrap(),
            port,
            exe: Some(Arc::from(exe)),
            unit: Some(Arc::from("a.service")),
            verdict,
        }
    }

    #[test]
    fn one_alert_per_program_and_endpoint_and_restarts_are_quiet() {
        let na = Verdict::NotAllowed {
            severity: Severity::Warning,
        };
        let mut t = Tracker::default();
        let r = t
            .open(&opened(1, "/x", "0.0.0.0", 5000, &na), GRACE)
            .unwrap();
        assert_eq!(r.reason, Reason::NotAllowed);
        // A second socket of the same program (prefork, SO_REUSEPORT): nothing new.
        assert_eq!(t.open(&opened(2, "/x", "0.0.0.0", 5000, &na), GRACE), None);
        t.close(1);
        t.close(2);
        // Restart within the grace window: quiet.
        assert_eq!(t.open(&opened(3, "/x", "0.0.0.0", 5000, &na), GRACE), None);
        t.close(3);
        // After the window: a new alert.
        t.prune(Duration::ZERO);
        let r = t.open(&opened(4, "/x", "0.0.0.0", 5000, &na), Duration::ZERO);
        assert_eq!(r.map(|r| r.reason), Some(Reason::NotAllowed));
    }

    #[test]
    fn widened_and_changed_owner() {
        let ok = Verdict::Allowed { rule: "r".into() };
        let mut t = Tracker::default();
        assert_eq!(t.open(&opened(1, "/x", "127.0.0.1", 80, &ok), GRACE), None);
        t.close(1);
        let r = t.open(&opened(2, "/x", "0.0.0.0", 80, &ok), GRACE).unwrap();
        assert_eq!(r.reason, Reason::AddressWidened);
        assert_eq!(r.previous.unwrap().address, "127.0.0.1");
        t.close(2);
        let r = t.open(&opened(3, "/y", "0.0.0.0", 80, &ok), GRACE).unwrap();
        assert_eq!(r.reason, Reason::OwnerChanged);
        assert_eq!(r.previous.unwrap().exe.as_deref(), Some("/x"));
        let deny = Verdict::Denied {
            rule: "d".into(),
            severity: Severity::Critical,
        };
        let r = t
            .open(&opened(4, "/z", "0.0.0.0", 81, &deny), GRACE)
            .unwrap();
        assert_eq!((r.reason, r.severity), (Reason::Denied, Severity::Critical));
        assert!(t.tracks(4) && !t.tracks(1));
    }

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let ids: std::collections::HashSet<&str> =
            Reason::ALL.iter().map(|r| r.message_id()).collect();
        assert_eq!(ids.len(), 4);
        assert!(
            ids.iter()
                .all(|i| i.len() == 32 && i.chars().all(|c| c.is_ascii_hexdigit()))
        );
    }
}
