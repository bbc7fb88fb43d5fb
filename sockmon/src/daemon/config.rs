//! The daemon's configuration: `/etc/sockmon/config.toml` (path overridable),
//! every setting also a flag (flags win).
//!
//! Unknown keys and bad values are refused with the file, line and column,
//! and the reason, so a typo never passes silently. Settings marked
//! "reloadable" take effect on SIGHUP; the others need a restart (a reload
//! that changes them says so).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use thiserror::Error;

use crate::api::server::{
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_CLIENTS_PER_UID, DEFAULT_MAX_FILTER_VALUES, DEFAULT_SOCKET,
    DEFAULT_WRITE_TIMEOUT_MS,
};
use crate::toml_text;

pub const DEFAULT_CONFIG: &str = "/etc/sockmon/config.toml";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
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
    #[error("{what}: {reason}")]
    Value { what: String, reason: String },
}

/// The whole configuration, defaults filled in.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub api: ApiConfig,
    pub kernel: KernelConfig,
    pub table: TableConfig,
    pub sinks: SinksConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub snapshot: SnapshotConfig,
    pub flows: FlowsConfig,
    /// The policy of allowed listeners (`crate::policy`); absent = off. Reloadable.
    pub policy: Option<crate::policy::PolicyConfig>,
}

/// Default queue of the sinks' subscription, in events.
pub const SINK_QUEUE: usize = 65_536;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Path of the API socket. Restart to change.
    pub socket: PathBuf,
    /// Most simultaneous clients. Reloadable.
    pub max_clients: usize,
    /// Most simultaneous clients of one uid other than root. Reloadable.
    pub max_clients_per_uid: usize,
    /// Time a client has to take each write of a response, in ms. Reloadable.
    pub write_timeout_ms: u64,
    /// Most values in one filter list (`pid`, `comm`, `port`, `event`). Reloadable.
    pub max_filter_values: usize,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelConfig {
    /// Ring buffer size in KiB (power of two). Restart to change.
    pub ring_kib: u32,
    /// Which hooks report bind, listen, connect and accept: `auto`,
    /// `socket` or `syscalls`. Restart to change.
    pub attach: String,
    /// The flows records the kernel writes at each close (the connection's
    /// counters) and exec (exe, argv, parent). Off only to measure what they
    /// cost (`cargo xtask bench`): closes then carry no counters and events
    /// no argv. Restart to change.
    pub enrich: bool,
    /// The most threads of one uid inside bind, listen, connect or accept
    /// at once that the `syscalls` mode follows (1 to 16384; default 4096,
    /// a quarter of the shared in-flight map): one user's blocked threads
    /// lose that user's further events (`pending_user_full`), never anyone
    /// else's. Restart to change.
    pub pending_per_user: u32,
}

/// Periodic `flow` records of live TCP connections (flows, issue 13).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowsConfig {
    /// A `flow` record per live TCP connection every this many
    /// milliseconds (1000 to 3600000); 0, the default: off. With them on,
    /// `list` shows each connection's bytes and `top` its bytes/s. Restart
    /// to change.
    pub interval_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableConfig {
    /// Most sockets in the table. Restart to change.
    pub cap: usize,
    /// Most owners listed per socket; more are counted (`inherited_more`).
    /// Restart to change.
    pub max_owners: usize,
    /// Least time between two re-checks of who holds the sockets no event
    /// can speak for (sockets left without owners, owners of shared
    /// sockets that may have closed their copy), in milliseconds. Restart
    /// to change.
    pub recheck_interval_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// How long one sock_diag dump (of one protocol and family in one
    /// network namespace) may take, in milliseconds. Reloadable.
    pub dump_deadline_ms: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            dump_deadline_ms: crate::snapshot::diag::DEFAULT_DEADLINE.as_millis() as u64,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    pub stdout: StdoutSinkConfig,
    pub file: FileSinkConfig,
    /// Events the sinks may fall behind by before they miss some (counted). Reloadable.
    pub queue: usize,
    /// Boxed: it is most of the section's size (SinkControl stays small).
    pub clickhouse: Box<super::clickhouse::ClickHouseConfig>,
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self {
            stdout: StdoutSinkConfig::default(),
            file: FileSinkConfig::default(),
            queue: SINK_QUEUE,
            clickhouse: Box::default(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Write the NDJSON stream to stdout (for journald or a log shipper). Reloadable.
    pub enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Append the NDJSON stream to this file; unset = off. Reloadable.
    pub path: Option<PathBuf>,
    /// Rotate when the file would grow past this many bytes. Reloadable.
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` … `path.N`). Reloadable.
    pub keep: u32,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus text metrics here (e.g. "127.0.0.1:9464"); unset = off. Reloadable.
    pub listen: Option<SocketAddr>,
    /// Allow `listen` on an address other than loopback. Reloadable.
    pub allow_remote: bool,
    /// Most metrics connections at once. Reloadable (with `listen`).
    pub max_connections: usize,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug or trace. Reloadable.
    pub level: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            max_clients: DEFAULT_MAX_CLIENTS,
            max_clients_per_uid: DEFAULT_MAX_CLIENTS_PER_UID,
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
            max_filter_values: DEFAULT_MAX_FILTER_VALUES,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            allow_remote: false,
            max_connections: crate::daemon::metrics::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            ring_kib: sockmon_common::DEFAULT_RING_BYTES / 1024,
            attach: "auto".into(),
            enrich: true,
            pending_per_user: sockmon_common::DEFAULT_PENDING_PER_UID,
        }
    }
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            cap: crate::table::DEFAULT_CAP,
            max_owners: crate::table::DEFAULT_MAX_OWNERS,
            recheck_interval_ms: crate::engine::DEFAULT_RECHECK.as_millis() as u64,
        }
    }
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_bytes: 100 << 20,
            keep: 5,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

impl Config {
    /// Parses `text` (the contents of `path`) and validates it.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml_text::parse(text).map_err(|at| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: at.line,
            column: at.column,
            reason: at.reason,
        })?;
        cfg.validate().map_err(|e| match e {
            ConfigError::Value { what, reason } => {
                let (line, column) = toml_text::locate_key(text, &what);
                ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    column,
                    reason: format!("{what}: {reason}"),
                }
            }
            other => other,
        })?;
        crate::policy::from_config(path, text, cfg.policy.as_ref()).map_err(|e| match e {
            crate::policy::PolicyError::Invalid {
                path,
                line,
                column,
                reason,
            } => ConfigError::Invalid {
                path,
                line,
                column,
                reason: format!("policy: {reason}"),
            },
            crate::policy::PolicyError::Read { path, source } => ConfigError::Read { path, source },
        })?;
        Ok(cfg)
    }

    /// The compiled policy of this configuration (checked by [`Config::parse`]).
    pub fn policy(&self) -> Option<std::sync::Arc<crate::policy::Policy>> {
        crate::policy::from_config(Path::new(""), "", self.policy.as_ref())
            .ok()
            .flatten()
            .map(std::sync::Arc::new)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str, reason: String| {
            Err(ConfigError::Value {
                what: what.to_string(),
                reason,
            })
        };
        let k = self.kernel.ring_kib;
        if !(4..=1 << 20).contains(&k) || !k.is_power_of_two() {
            return bad(
                "kernel.ring_kib",
                format!("{k} is not a power of two between 4 and 1048576"),
            );
        }
        if crate::kernel::AttachMode::from_name(&self.kernel.attach).is_none() {
            return bad(
                "kernel.attach",
                format!(
                    "`{}` is not one of auto, socket, syscalls",
                    self.kernel.attach
                ),
            );
        }
        let p = self.kernel.pending_per_user;
        if !(1..=sockmon_common::PENDING_CAPACITY).contains(&p) {
            return bad(
                "kernel.pending_per_user",
                format!(
                    "{p} is not between 1 and {}",
                    sockmon_common::PENDING_CAPACITY
                ),
            );
        }
        if self.table.cap == 0 {
            return bad("table.cap", "must be at least 1".into());
        }
        if !(1..=65_536).contains(&self.table.max_owners) {
            return bad(
                "table.max_owners",
                format!("{} is not between 1 and 65536", self.table.max_owners),
            );
        }
        if !(500..=3_600_000).contains(&self.table.recheck_interval_ms) {
            return bad(
                "table.recheck_interval_ms",
                format!(
                    "{} is not between 500 and 3600000",
                    self.table.recheck_interval_ms
                ),
            );
        }
        if self.flows.interval_ms != 0 && !(1_000..=3_600_000).contains(&self.flows.interval_ms) {
            return bad(
                "flows.interval_ms",
                format!(
                    "{} is neither 0 (off) nor between 1000 and 3600000",
                    self.flows.interval_ms
                ),
            );
        }
        if !(1..=600_000).contains(&self.snapshot.dump_deadline_ms) {
            return bad(
                "snapshot.dump_deadline_ms",
                format!(
                    "{} is not between 1 and 600000",
                    self.snapshot.dump_deadline_ms
                ),
            );
        }
        if !(1..=65_536).contains(&self.api.max_clients) {
            return bad(
                "api.max_clients",
                format!("{} is not between 1 and 65536", self.api.max_clients),
            );
        }
        if !(1..=65_536).contains(&self.api.max_clients_per_uid) {
            return bad(
                "api.max_clients_per_uid",
                format!(
                    "{} is not between 1 and 65536",
                    self.api.max_clients_per_uid
                ),
            );
        }
        if !(100..=600_000).contains(&self.api.write_timeout_ms) {
            return bad(
                "api.write_timeout_ms",
                format!(
                    "{} is not between 100 and 600000",
                    self.api.write_timeout_ms
                ),
            );
        }
        if !(1..=65_536).contains(&self.api.max_filter_values) {
            return bad(
                "api.max_filter_values",
                format!("{} is not between 1 and 65536", self.api.max_filter_values),
            );
        }
        if !(1..=65_536).contains(&self.metrics.max_connections) {
            return bad(
                "metrics.max_connections",
                format!(
                    "{} is not between 1 and 65536",
                    self.metrics.max_connections
                ),
            );
        }
        if let Some(addr) = self.metrics.listen
            && !addr.ip().is_loopback()
            && !self.metrics.allow_remote
        {
            return bad(
                "metrics.listen",
                format!(
                    "{addr} is not a loopback address; set metrics.allow_remote = true to serve metrics beyond this machine"
                ),
            );
        }
        if !self.api.socket.is_absolute() {
            return bad(
                "api.socket",
                format!("`{}` is not an absolute path", self.api.socket.display()),
            );
        }
        if self.sinks.file.max_bytes < 4096 {
            return bad(
                "sinks.file.max_bytes",
                format!("{} is below the minimum of 4096", self.sinks.file.max_bytes),
            );
        }
        if !(16..=1 << 24).contains(&self.sinks.queue) {
            return bad(
                "sinks.queue",
                format!("{} is not between 16 and 16777216", self.sinks.queue),
            );
        }
        if !(1..=1000).contains(&self.sinks.file.keep) {
            return bad(
                "sinks.file.keep",
                format!("{} is not between 1 and 1000", self.sinks.file.keep),
            );
        }
        if let Err((what, reason)) = self.sinks.clickhouse.validate() {
            return bad(&format!("sinks.clickhouse.{what}"), reason);
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            return bad(
                "log.level",
                format!(
                    "`{}` is not one of error, warn, info, debug, trace",
                    self.log.level
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/sockmon/config.toml"), text)
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn every_section_parses() {
        let c = parse(
            r#"
[api]
socket = "/run/x/api.sock"
max_clients = 10
[kernel]
ring_kib = 16384
[table]
cap = 5000
[sinks.stdout]
enabled = true
[sinks.file]
path = "/var/log/sockmon/events.ndjson"
max_bytes = 1048576
keep = 3
[metrics]
listen = "127.0.0.1:9464"
[log]
level = "debug"
"#,
        )
        .unwrap();
        assert_eq!(c.api.socket, PathBuf::from("/run/x/api.sock"));
        assert_eq!(
            (c.api.max_clients, c.kernel.ring_kib, c.table.cap),
            (10, 16384, 5000)
        );
        assert!(c.sinks.stdout.enabled);
        assert_eq!(
            c.sinks.file.path.as_deref(),
            Some(Path::new("/var/log/sockmon/events.ndjson"))
        );
        assert_eq!((c.sinks.file.max_bytes, c.sinks.file.keep), (1048576, 3));
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn unknown_keys_name_the_file_line_and_key() {
        let e = parse("[api]\nmax_clients = 3\nsokcet = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/sockmon/config.toml:3:1: "), "{e}");
        assert!(e.contains("unknown field `sokcet`"), "{e}");
        let e = parse("[metric]\nlisten = \"x\"\n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/sockmon/config.toml:1:"), "{e}");
        assert!(e.contains("unknown field `metric`"), "{e}");
    }

    #[test]
    fn bad_types_and_values_name_line_and_reason() {
        let e = parse("[kernel]\nring_kib = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/sockmon/config.toml:2:"), "{e}");
        let e = parse("[kernel]\nring_kib = 100\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/sockmon/config.toml:2:1: kernel.ring_kib: 100 is not a power of two between 4 and 1048576"
        );
        let e = parse("[metrics]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/sockmon/config.toml:2:"), "{e}");
        let e = parse("\n[log]\n  level = \"loud\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/etc/sockmon/config.toml:3:3: log.level: `loud` is not one of error, warn, info, debug, trace"
        );
        let e = parse("[api]\nsocket = \"relative.sock\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("api.socket: `relative.sock` is not an absolute path"),
            "{e}"
        );
        assert!(parse("[sinks.file]\nkeep = 0\n").is_err());
        let e = parse("[metrics]\nlisten = \"0.0.0.0:9464\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.allow_remote"), "{e}");
        assert!(parse("[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n").is_ok());
        assert!(parse("[metrics]\nlisten = \"[::1]:9464\"\n").is_ok());
        assert!(parse("[api]\nwrite_timeout_ms = 0\n").is_err());
        assert!(parse("[api]\nmax_filter_values = 0\n").is_err());
        assert!(parse("[table]\ncap = 0\n").is_err());
        assert!(parse("[table]\nmax_owners = 0\n").is_err());
        assert!(parse("[table]\nrecheck_interval_ms = 100\n").is_err());
        assert!(parse("[flows]\ninterval_ms = 500\n").is_err());
        assert_eq!(parse("").unwrap().flows.interval_ms, 0);
        assert_eq!(
            parse("[flows]\ninterval_ms = 2000\n")
                .unwrap()
                .flows
                .interval_ms,
            2000
        );
        assert_eq!(
            parse("[table]\nrecheck_interval_ms = 1500\n")
                .unwrap()
                .table
                .recheck_interval_ms,
            1500
        );
        assert_eq!(Config::default().table.recheck_interval_ms, 3000);
        assert!(parse("[snapshot]\ndump_deadline_ms = 0\n").is_err());
        let c = parse("[table]\nmax_owners = 8\n[snapshot]\ndump_deadline_ms = 2500\n").unwrap();
        assert_eq!((c.table.max_owners, c.snapshot.dump_deadline_ms), (8, 2500));
        assert!(parse("not toml at all").is_err());
    }

    #[test]
    fn policy_section_is_checked_with_its_line() {
        let c =
            parse("[policy]\ngrace_s = 3\n[[policy.rule]]\nname = \"ssh\"\nport = 22\n").unwrap();
        assert_eq!(c.policy().unwrap().rules[0].name, "ssh");
        let e =
            parse("[log]\nlevel = \"info\"\n[policy]\n[[policy.rule]]\nport_class = \"huge\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.starts_with("/etc/sockmon/config.toml:5:1: policy: rule 1: port_class: "),
            "{e}"
        );
        assert!(parse("").unwrap().policy().is_none());
    }
}
