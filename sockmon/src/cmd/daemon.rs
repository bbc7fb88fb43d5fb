//! `sockmon daemon`: resolves the configuration (file, then flags) and runs
//! [`crate::daemon`]. A bad file or flag value exits with status 2 before
//! anything is loaded.

use std::{path::PathBuf, process::ExitCode};

use super::{EXIT_USAGE, fail};
use crate::{
    cli::DaemonArgs,
    daemon::{self, DaemonSetup, config::Config},
    logging::LogHandle,
};

pub fn run(args: DaemonArgs, socket: Option<PathBuf>, log: LogHandle) -> ExitCode {
    let path = if args.no_config {
        None
    } else {
        args.config.clone().or_else(daemon::default_config_path)
    };
    let build = move || build_config(path.as_deref(), &args, socket.as_ref());
    match build() {
        Ok(config) => match daemon::run(
            DaemonSetup {
                config,
                reload: Box::new(build),
            },
            log,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => fail(&f.message, if f.usage { EXIT_USAGE } else { 1 }),
        },
        Err(e) => fail(&e, EXIT_USAGE),
    }
}

/// The file's settings (or defaults), overridden by the flags, validated.
pub fn build_config(
    path: Option<&std::path::Path>,
    args: &DaemonArgs,
    socket: Option<&PathBuf>,
) -> Result<Config, String> {
    let mut c = match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(s) = socket {
        c.api.socket = s.clone();
    }
    if let Some(v) = args.max_clients {
        c.api.max_clients = v;
    }
    if let Some(v) = args.attach {
        c.kernel.attach = v.name().into();
    }
    if let Some(v) = args.ring_kib {
        c.kernel.ring_kib = v;
    }
    if let Some(v) = args.pending_per_user {
        c.kernel.pending_per_user = v;
    }
    if let Some(v) = args.table_cap {
        c.table.cap = v;
    }
    if let Some(v) = args.max_owners {
        c.table.max_owners = v;
    }
    if args.no_enrichment {
        c.kernel.enrich = false;
    }
    if let Some(v) = args.flow_interval_ms {
        c.flows.interval_ms = v;
    }
    if let Some(v) = args.dump_deadline_ms {
        c.snapshot.dump_deadline_ms = v;
    }
    if args.sink_stdout {
        c.sinks.stdout.enabled = true;
    }
    if let Some(v) = &args.sink_file {
        c.sinks.file.path = Some(v.clone());
    }
    if let Some(v) = args.sink_file_max_bytes {
        c.sinks.file.max_bytes = v;
    }
    if let Some(v) = args.sink_file_keep {
        c.sinks.file.keep = v;
    }
    if let Some(v) = args.metrics_listen {
        c.metrics.listen = Some(v);
    }
    if let Some(v) = &args.log_level {
        c.log.level = v.clone();
    }
    if let Some(v) = args.max_clients_per_uid {
        c.api.max_clients_per_uid = v;
    }
    if let Some(v) = args.write_timeout_ms {
        c.api.write_timeout_ms = v;
    }
    if let Some(v) = args.max_filter_values {
        c.api.max_filter_values = v;
    }
    if args.metrics_allow_remote {
        c.metrics.allow_remote = true;
    }
    if let Some(v) = args.metrics_max_connections {
        c.metrics.max_connections = v;
    }
    if let Some(v) = &args.policy {
        c.policy.get_or_insert_with(Default::default).file = Some(v.clone());
    }
    c.validate().map_err(|e| format!("invalid setting: {e}"))?;
    if args.policy.is_some() {
        crate::policy::from_config(std::path::Path::new("--policy"), "", c.policy.as_ref())
            .map_err(|e| e.to_string())?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_are_validated() {
        let dir = std::env::temp_dir().join(format!("sockmon-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(&file, "[table]\ncap = 10\n[api]\nmax_clients = 5\n").unwrap();
        let args = DaemonArgs {
            max_clients: Some(7),
            ..Default::default()
        };
        let c = build_config(Some(&file), &args, Some(&PathBuf::from("/tmp/x.sock"))).unwrap();
        assert_eq!((c.table.cap, c.api.max_clients), (10, 7));
        assert_eq!(c.api.socket, PathBuf::from("/tmp/x.sock"));
        let bad = DaemonArgs {
            ring_kib: Some(3),
            ..Default::default()
        };
        let e = build_config(None, &bad, None).unwrap_err();
        assert!(e.contains("kernel.ring_kib: 3"), "{e}");
        let e = build_config(
            Some(&dir.join("missing.toml")),
            &DaemonArgs::default(),
            None,
        )
        .unwrap_err();
        assert!(e.contains("missing.toml"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
