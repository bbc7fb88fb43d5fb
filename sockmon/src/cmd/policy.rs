//! `sockmon policy check FILE`: lints a policy file, or the `[policy]` of a
//! configuration file, with the same file:line errors the daemon gives.

use std::{path::Path, process::ExitCode};

use super::fail;
use crate::{
    cli::{PolicyArgs, PolicyCommand, PolicySource},
    daemon::config::{Config, DEFAULT_CONFIG},
    policy::{self, Policy},
};

pub fn run(args: &PolicyArgs) -> ExitCode {
    match &args.command {
        PolicyCommand::Check { file } => match load_any(file) {
            Ok(Some(p)) => {
                println!(
                    "{}: valid: {} rules, built-in denies: world-writable {}, memfd {}, deleted {}; unmatched listeners {}",
                    file.display(),
                    p.rules.len(),
                    on(p.builtin.world_writable),
                    on(p.builtin.memfd),
                    on(p.builtin.deleted),
                    if p.default_allow {
                        "allowed"
                    } else {
                        "alert (not_allowed)"
                    }
                );
                ExitCode::SUCCESS
            }
            Ok(None) => {
                println!(
                    "{}: valid; no policy in force (no [policy], or enabled = false)",
                    file.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, 1),
        },
    }
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// A configuration (it has a `[policy]` table or other sections) or a policy file.
pub fn load_any(file: &Path) -> Result<Option<Policy>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let is_config = toml::from_str::<toml::Table>(&text).is_ok_and(|t| {
        [
            "policy", "api", "kernel", "table", "sinks", "metrics", "log",
        ]
        .iter()
        .any(|k| t.contains_key(*k))
    });
    if is_config {
        let c = Config::parse(file, &text).map_err(|e| e.to_string())?;
        return policy::from_config(file, &text, c.policy.as_ref()).map_err(|e| e.to_string());
    }
    policy::parse_file(file, &text)
        .map(|(_, p)| Some(p))
        .map_err(|e| e.to_string())
}

/// The policy a one-shot command (audit) runs with.
pub fn from_source(src: &PolicySource) -> Result<Policy, String> {
    if let Some(p) = &src.policy {
        return policy::load_file(p)
            .map(|(_, p)| p)
            .map_err(|e| e.to_string());
    }
    let path = src
        .config
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_CONFIG));
    load_any(&path)?.ok_or_else(|| {
        format!(
            "{} has no [policy]; give one with --policy FILE (or write one with `sockmon baseline`)",
            path.display()
        )
    })
}
