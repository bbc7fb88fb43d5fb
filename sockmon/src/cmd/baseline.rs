//! `sockmon baseline`: a policy that allows what the machine listens on
//! now: the snapshot's listeners plus those that open during `--for`, one
//! allow rule per (exe, unit, proto, address, port).
//!
//! Merging never rewrites what is there: rules are appended to the end of
//! the `--policy` file as text, so its hand-written rules, order and
//! comments stay as they were, and a listener the existing rules already
//! judge (allow or deny) gets no new rule.

use std::{collections::BTreeSet, net::IpAddr, process::ExitCode, time::Duration};

use super::{EXIT_USAGE, fail, fail_chain, print};
use crate::{
    cli::BaselineArgs,
    engine::{Engine, EngineOptions, StreamItem},
    event::{EventKind, Proto, start_ticks},
    filter::Filter,
    policy::{
        self, Candidate, Policy, PolicyConfig, Verdict,
        audit::{self, Listener, ListenerOwner},
        ports::PortFacts,
    },
    snapshot,
};

/// What a baseline rule is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub exe: Option<String>,
    pub unit: Option<String>,
    pub proto: Proto,
    pub ip: IpAddr,
    pub port: u16,
    pub netns: u32,
}

pub fn run(args: &BaselineArgs) -> ExitCode {
    let (existing, text) = match &args.policy {
        Some(p) if p.exists() => match policy::load_file(p) {
            Ok((cfg, pol)) => (
                Some((cfg, pol)),
                std::fs::read_to_string(p).unwrap_or_default(),
            ),
            Err(e) => return fail(&e, EXIT_USAGE),
        },
        _ => (None, String::new()),
    };
    let snap = match snapshot::take() {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot take a snapshot: {e}"), EXIT_USAGE),
    };
    let mut keys: BTreeSet<Key> = BTreeSet::new();
    for l in audit::listeners(&snap, &args.netns) {
        keys.extend(keys_of(&l));
    }
    if args.duration > Duration::ZERO {
        match watch_for(args.duration, &args.netns) {
            Ok(more) => keys.extend(more),
            Err(code) => return code,
        }
    }
    let base = existing
        .as_ref()
        .map(|(c, _)| c.clone())
        .unwrap_or_default();
    let policy = existing.map(|(_, p)| p);
    let new = new_rules(policy.as_ref(), &base, &keys);
    let mut block = String::new();
    if text.is_empty() && args.policy.is_some() || args.policy.is_none() {
        block.push_str("# Policy of allowed listeners, written by `sockmon baseline`.\n");
    }
    if !new.is_empty() {
        block.push_str(&format!(
            "\n# Added by `sockmon baseline` on {}: {} listeners.\n",
            crate::clock::WallTime::now().rfc3339(),
            new.len()
        ));
        for r in &new {
            block.push_str(r);
        }
    }
    match &args.policy {
        None => {
            let _ = print(block.as_bytes());
        }
        Some(path) => {
            let mut all = text.clone();
            if !all.is_empty() && !all.ends_with('\n') {
                all.push('\n');
            }
            all.push_str(&block);
            // Checked before writing: a baseline never leaves a broken policy.
            if let Err(e) = policy::parse_file(path, &all) {
                return fail(&format!("the merged policy would not load: {e}"), 1);
            }
            if let Err(e) = std::fs::write(path, all) {
                return fail(&format!("cannot write {}: {e}", path.display()), 1);
            }
            eprintln!(
                "sockmon: {} rules added to {} ({} listeners seen)",
                new.len(),
                path.display(),
                keys.len()
            );
        }
    }
    ExitCode::SUCCESS
}

fn keys_of(l: &Listener) -> Vec<Key> {
    let key = |o: Option<&ListenerOwner>| Key {
        exe: o.and_then(|o| o.exe.clone()),
        unit: o.and_then(|o| o.unit.clone()),
        proto: l.proto,
        ip: l.ip,
        port: l.port,
        netns: l.netns,
    };
    if l.owners.is_empty() {
        vec![key(None)]
    } else {
        l.owners.iter().map(|o| key(Some(o))).collect()
    }
}

/// Loads the probes and collects the listeners that open during `d`.
fn watch_for(d: Duration, scope: &[u32]) -> Result<Vec<Key>, ExitCode> {
    let opts = EngineOptions {
        snapshot: false,
        ..EngineOptions::default()
    };
    let mut prepared = Engine::prepare(opts)
        .map_err(|e| fail_chain(&e, if e.is_privileges() { EXIT_USAGE } else { 1 }))?;
    let mut sub = prepared.subscribe(Filter {
        events: vec![EventKind::Listen, EventKind::Bind],
        ..Filter::default()
    });
    let rt = crate::cmd::runtime()?;
    rt.block_on(async move {
        let engine = prepared.run().await.map_err(|e| fail_chain(&e, 1))?;
        eprintln!("sockmon: probes attached; collecting listeners for {d:?}");
        let mut keys = Vec::new();
        let end = tokio::time::sleep(d);
        tokio::pin!(end);
        loop {
            tokio::select! {
                _ = &mut end => break,
                item = sub.rx.recv() => {
                    let Some(item) = item else { break };
                    let StreamItem::Event(e) = &*item else { continue };
                    if !Candidate::is_listener(e) || !(scope.is_empty() || scope.contains(&e.netns)) {
                        continue;
                    }
                    if e.proto == Proto::Udp
                        && PortFacts::of(e.netns, Some(e.pid), e.src.ip(), e.src.port()).ephemeral
                            != Some(false)
                    {
                        continue;
                    }
                    let id = policy::identify(e.pid, start_ticks(e.start_ns), None, None)
                        .unwrap_or_default();
                    keys.push(Key {
                        exe: id.exe,
                        unit: id.unit,
                        proto: e.proto,
                        ip: e.src.ip(),
                        port: e.src.port(),
                        netns: e.netns,
                    });
                }
            }
        }
        engine.shutdown().await;
        Ok(keys)
    })
}

fn quote(s: &str) -> String {
    // A JSON string is a valid TOML basic string (same escapes).
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The rule text for every key the existing policy does not judge already.
pub fn new_rules(
    existing: Option<&Policy>,
    base: &PolicyConfig,
    keys: &BTreeSet<Key>,
) -> Vec<String> {
    let mut names: BTreeSet<String> = base.rule.iter().filter_map(|r| r.name.clone()).collect();
    let mut out = Vec::new();
    for k in keys {
        let subject = policy::Subject {
            exe: k.exe.clone(),
            unit: k.unit.clone(),
            socket_unit: None,
            uid: 0,
            container: None,
            netns: k.netns,
            proto: Some(k.proto),
            ip: Some(k.ip),
            port: k.port,
            parent_exe: None,
        };
        let judged = existing.is_some_and(|p| {
            p.rules.iter().any(|r| r.matches(&subject))
                || matches!(p.judge(&subject), Verdict::Allowed { .. })
        });
        if judged {
            continue;
        }
        let stem = k
            .exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .unwrap_or("kernel")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
            .take(32)
            .collect::<String>();
        let mut name = format!("baseline-{stem}-{}-{}", k.proto.name(), k.port);
        let mut n = 2;
        while names.contains(&name) {
            name = format!("baseline-{stem}-{}-{}-{n}", k.proto.name(), k.port);
            n += 1;
        }
        names.insert(name.clone());
        let mut r = String::from("\n[[rule]]\n");
        r.push_str(&format!("name = {}\n", quote(&name)));
        match &k.exe {
            Some(e) => r.push_str(&format!("exe = {}\n", quote(&globset_escape(e)))),
            None => r.push_str("# no process holds this socket (kernel-owned)\n"),
        }
        if let Some(u) = &k.unit {
            r.push_str(&format!("unit = {}\n", quote(&globset_escape(u))));
        }
        r.push_str(&format!(
            "proto = {}\naddress = {}\nport = {}\n",
            quote(k.proto.name()),
            quote(&k.ip.to_string()),
            k.port
        ));
        out.push(r);
    }
    out
}

/// Escapes glob metacharacters so a literal path matches only itself.
fn globset_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            o.push('[');
            o.push(c);
            o.push(']');
        } else {
            o.push(c);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_added_only_for_what_the_policy_does_not_judge() {
        let (cfg, pol) = policy::parse_file(
            std::path::Path::new("/p"),
            "[[rule]]\nname = \"ssh\"\nexe = \"/usr/sbin/sshd\"\nport = 22\n",
        )
        .unwrap();
        let k = |exe: &str, port| Key {
            exe: Some(exe.into()),
            unit: Some("a.service".into()),
            proto: Proto::Tcp,
            ip: "0.0.0.0".parse().unwrap(),
            port,
            netns: 1,
        };
        let keys = BTreeSet::from([k("/usr/sbin/sshd", 22), k("/opt/we[ir]d*", 8080)]);
        let new = new_rules(Some(&pol), &cfg, &keys);
        assert_eq!(new.len(), 1);
        let text = format!(
            "[[rule]]\nname = \"ssh\"\nexe = \"/usr/sbin/sshd\"\nport = 22\n{}",
            new[0]
        );
        let (_, merged) = policy::parse_file(std::path::Path::new("/p"), &text).unwrap();
        let s = |exe: &str| policy::Subject {
            exe: Some(exe.into()),
            unit: Some("a.service".into()),
            proto: Some(Proto::Tcp),
            ip: Some("0.0.0.0".parse().unwrap()),
            port: 8080,
            netns: 1,
            ..Default::default()
        };
        assert!(
            matches!(merged.judge(&s("/opt/we[ir]d*")), Verdict::Allowed { rule } if rule == "baseline-weird-tcp-8080")
        );
        assert!(matches!(
            merged.judge(&s("/opt/weid")),
            Verdict::NotAllowed { .. }
        ));
    }
}
