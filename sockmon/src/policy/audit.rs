//! One-shot checks of the machine as it is now: which listeners exist (from
//! a snapshot), and what the policy says of each (`sockmon audit`,
//! `sockmon baseline`).
//!
//! A listener is a TCP socket in `LISTEN`, or an unconnected UDP socket
//! bound to a port outside its namespace's ephemeral range (a port inside
//! it is what the kernel hands a client's `bind(:0)` or first send).

use std::{collections::BTreeSet, net::IpAddr};

use serde::Serialize;

use super::{
    Identity, Policy, Subject, Verdict, identify,
    ports::{PortClass, PortFacts},
};
use crate::{
    event::Proto,
    snapshot::{Snapshot, SockRow},
};

/// One owner of a listener, identified from `/proc`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ListenerOwner {
    pub pid: u32,
    pub comm: String,
    pub uid: u32,
    pub exe: Option<String>,
    pub unit: Option<String>,
    pub container: Option<String>,
    pub parent_exe: Option<String>,
}

/// A listener of the snapshot and its owners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub netns: u32,
    pub inode: u64,
    pub proto: Proto,
    pub ip: IpAddr,
    pub port: u16,
    /// The socket's uid (sock_diag's), for one no process holds.
    pub uid: u32,
    pub owners: Vec<ListenerOwner>,
}

/// Whether a sock_diag row is a listener (UDP: before the ephemeral check).
pub fn is_listening_row(r: &SockRow) -> bool {
    match r.proto {
        Proto::Tcp => r.state == 10,
        Proto::Udp => r.state == 7 && r.dst.port() == 0 && r.src.port() != 0,
    }
}

/// The listeners of `snap` in the namespaces of `scope` (empty: all),
/// with their owners identified.
pub fn listeners(snap: &Snapshot, scope: &[u32]) -> Vec<Listener> {
    let mut out = Vec::new();
    for r in &snap.sockets {
        if !is_listening_row(r) || !(scope.is_empty() || scope.contains(&r.netns)) {
            continue;
        }
        let holders = snap.holders.get(&r.inode).cloned().unwrap_or_default();
        if r.proto == Proto::Udp {
            let facts = PortFacts::of(r.netns, holders.first().copied(), r.src.ip(), r.src.port());
            if facts.ephemeral != Some(false) {
                continue;
            }
        }
        let owners = holders
            .iter()
            .filter_map(|pid| {
                let p = snap.processes.get(pid)?;
                let id: Identity = identify(*pid, p.start_ticks, None, None)?;
                Some(ListenerOwner {
                    pid: *pid,
                    comm: crate::escape::for_json(p.comm.as_bytes()).into_owned(),
                    uid: p.uid,
                    exe: id.exe,
                    unit: id.unit,
                    container: id.container,
                    parent_exe: id.parent_exe,
                })
            })
            .collect();
        out.push(Listener {
            netns: r.netns,
            inode: r.inode,
            proto: r.proto,
            ip: r.src.ip(),
            port: r.src.port(),
            uid: r.uid,
            owners,
        });
    }
    out.sort_by_key(|l| (l.netns, l.proto, l.port, l.inode));
    out
}

/// What a rule sees of listener `l` owned by `o` (`None`: no process holds it).
pub fn subject(l: &Listener, o: Option<&ListenerOwner>) -> Subject {
    Subject {
        exe: o.and_then(|o| o.exe.clone()),
        unit: o.and_then(|o| o.unit.clone()),
        socket_unit: None,
        uid: o.map_or(l.uid, |o| o.uid),
        container: o.and_then(|o| o.container.clone()),
        netns: l.netns,
        proto: Some(l.proto),
        ip: Some(l.ip),
        port: l.port,
        parent_exe: o.and_then(|o| o.parent_exe.clone()),
    }
}

/// A listener the policy does not allow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// `not_allowed` or `denied`.
    pub reason: &'static str,
    pub severity: &'static str,
    pub rule: Option<String>,
    pub proto: &'static str,
    pub address: String,
    pub port: u16,
    pub port_class: &'static str,
    pub netns: u32,
    pub inode: u64,
    /// `None`: no process holds the socket (kernel-owned).
    pub owner: Option<ListenerOwner>,
}

/// Judges every owner of every listener; one violation per (listener, owner program).
pub fn violations(policy: &Policy, listeners: &[Listener]) -> Vec<Violation> {
    let mut out = Vec::new();
    for l in listeners {
        let mut seen = BTreeSet::new();
        let owners: Vec<Option<&ListenerOwner>> = if l.owners.is_empty() {
            vec![None]
        } else {
            l.owners.iter().map(Some).collect()
        };
        for o in owners {
            if !seen.insert((
                o.and_then(|o| o.exe.clone()),
                o.and_then(|o| o.unit.clone()),
            )) {
                continue;
            }
            let (reason, severity, rule) = match policy.judge(&subject(l, o)) {
                Verdict::Allowed { .. } => continue,
                Verdict::Denied { rule, severity } => ("denied", severity, Some(rule)),
                Verdict::NotAllowed { severity } => ("not_allowed", severity, None),
            };
            out.push(Violation {
                reason,
                severity: severity.name(),
                rule,
                proto: l.proto.name(),
                address: l.ip.to_string(),
                port: l.port,
                port_class: PortClass::of(l.port).name(),
                netns: l.netns,
                inode: l.inode,
                owner: o.cloned(),
            });
        }
    }
    out
}
