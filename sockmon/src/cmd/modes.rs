//! `sockmon modes`: which attach modes this kernel allows, found the only
//! reliable way, by loading each (never from the kernel's version). The
//! test runner uses it to run the real-kernel tests once per mode a guest
//! kernel allows; people use it to see what `auto` would pick and why.

use std::{collections::BTreeMap, process::ExitCode};

use serde::Serialize;

use super::{EXIT_USAGE, fail, print};
use crate::{
    cli::ModesArgs,
    kernel::{AttachMode, LoadOptions, Probes},
};

#[derive(Serialize)]
struct ModeReport {
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The hook family (`kfunc`, `socket`, `syscalls`) reporting each event kind.
    kinds: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
struct Report {
    /// What `auto` loads on this kernel.
    auto: Option<&'static str>,
    modes: BTreeMap<&'static str, ModeReport>,
}

pub fn run(args: &ModesArgs) -> ExitCode {
    let mut modes = BTreeMap::new();
    for mode in [AttachMode::Kfunc, AttachMode::Socket, AttachMode::Syscalls] {
        let opts = LoadOptions {
            attach: mode,
            // The smallest ring: nothing is read.
            ring_bytes: 4096,
            wakeup_bytes: 4096,
            enrich: true,
            ..LoadOptions::default()
        };
        let report = match Probes::load(opts) {
            Ok(p) => ModeReport {
                available: true,
                reason: None,
                kinds: p
                    .kind_sources()
                    .into_iter()
                    .map(|k| (k.kind, k.source))
                    .collect(),
            },
            Err(e) if e.is_privileges() => return fail(&e, EXIT_USAGE),
            Err(e) => ModeReport {
                available: false,
                reason: Some(e.to_string()),
                kinds: BTreeMap::new(),
            },
        };
        modes.insert(mode.name(), report);
    }
    let auto = [AttachMode::Kfunc, AttachMode::Socket, AttachMode::Syscalls]
        .into_iter()
        .find(|m| modes.get(m.name()).is_some_and(|r| r.available))
        .map(AttachMode::name);
    let report = Report { auto, modes };
    let out = if args.json {
        let mut v = serde_json::to_vec(&report).unwrap_or_default();
        v.push(b'\n');
        v
    } else {
        human(&report).into_bytes()
    };
    match print(&out) {
        Ok(()) if auto.is_some() => ExitCode::SUCCESS,
        Ok(()) => ExitCode::from(1),
        Err(code) => code,
    }
}

fn human(r: &Report) -> String {
    let mut o = String::new();
    for (name, m) in &r.modes {
        if m.available {
            let kinds: Vec<String> = m.kinds.iter().map(|(k, v)| format!("{k}={v}")).collect();
            o.push_str(&format!("{name:<9} available  {}\n", kinds.join(" ")));
        } else {
            o.push_str(&format!(
                "{name:<9} refused    {}\n",
                m.reason.as_deref().unwrap_or("")
            ));
        }
    }
    o.push_str(&format!(
        "auto      picks {}\n",
        r.auto.unwrap_or("nothing")
    ));
    o
}
