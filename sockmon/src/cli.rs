//! The command line, as clap sees it, and its resolution into the typed
//! configuration the commands run with (`Filter`, `WatchConfig`): raw flags
//! never travel past this module.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    event::{EventKind, Proto},
    filter::Filter,
    kernel::LoadOptions,
    output::Format,
    table,
};

/// Which process owns this socket? Live, exact, from eBPF.
#[derive(Debug, Parser)]
#[command(name = "sockmon", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The daemon's API socket (for `daemon`: where to serve it) [default: /run/sockmon/sockmon.sock].
    #[arg(long, global = true, value_name = "PATH", env = "SOCKMON_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Do not use a running daemon: load the probes or take a snapshot in this process.
    #[arg(long, global = true)]
    pub no_daemon: bool,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The API socket path the command uses.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::api::server::DEFAULT_SOCKET))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream socket events live (bind, listen, connect, accept, close).
    Watch(WatchArgs),
    /// List every socket and its owners, like `ss -tunap`.
    Ls(LsArgs),
    /// Show the owner(s) of one socket: `sockmon lookup 10.0.0.5:40312 93.184.216.34:443`.
    Lookup(LookupArgs),
    /// Report on the running daemon: probes, event rates, drops, table, snapshot, uptime.
    Status(StatusArgs),
    /// Run the daemon: live table, local API, event sinks (see docs/api.md).
    Daemon(DaemonArgs),
    /// Which attach modes this kernel allows (each is tried by loading it), and what `auto` picks.
    Modes(ModesArgs),
    /// Full-screen live view: processes, their connections, listeners, events (q quits, ? helps).
    Top(TopArgs),
    /// Write the manual pages or shell completions of this binary into DIR
    /// (a packaging step, hidden).
    #[command(hide = true)]
    Generate(GenerateArgs),
    /// Check this moment's listeners against the policy: exit 0 clean, 1 violations, 2 errors.
    Audit(AuditArgs),
    /// Write a policy that allows what the machine listens on now (merged into --policy FILE).
    Baseline(BaselineArgs),
    /// Policy tools: `sockmon policy check FILE`.
    Policy(PolicyArgs),
}

/// Where a command gets its policy from.
#[derive(Debug, Args, Clone, Default)]
pub struct PolicySource {
    /// A policy file (top-level `[[rule]]` tables).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub policy: Option<PathBuf>,
    /// The `[policy]` of this configuration file [default: /etc/sockmon/config.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub source: PolicySource,
    /// Only this network namespace (its inode; repeatable; default: all).
    #[arg(long, value_name = "INODE")]
    pub netns: Vec<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also compare the kernel's views of the listeners (sock_diag, /proc/net, descriptor tables).
    #[arg(long)]
    pub hidden: bool,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Policy file to merge into (its rules are kept as written; new ones are appended). Default: print to stdout.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Also watch for listeners that open during this long (`30s`, `5m`, `1h`; default: 0, the snapshot only).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration, default_value = "0")]
    pub duration: Duration,
    /// Only this network namespace (its inode; repeatable; default: all).
    #[arg(long, value_name = "INODE")]
    pub netns: Vec<u32>,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file (or a configuration's `[policy]`): exit 0 if valid, 1 with file:line errors.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// `500ms`, `30s`, `5m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration like 30s, 5m or 1h");
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !(0.0..=7.0 * 86_400.0).contains(&(v * mul)) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * mul))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PortClassArg {
    WellKnown,
    Registered,
    Dynamic,
}

impl PortClassArg {
    pub fn class(self) -> crate::policy::ports::PortClass {
        use crate::policy::ports::PortClass;
        match self {
            Self::WellKnown => PortClass::WellKnown,
            Self::Registered => PortClass::Registered,
            Self::Dynamic => PortClass::Dynamic,
        }
    }
}

#[derive(Debug, Args)]
pub struct ModesArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `sockmon generate` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GenerateWhat {
    /// `sockmon.8` and one `sockmon-SUBCOMMAND.8` per subcommand (roff).
    Man,
    /// bash (`sockmon`), zsh (`_sockmon`) and fish (`sockmon.fish`) completions.
    Completions,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Manual pages or completions.
    #[arg(value_enum)]
    pub what: GenerateWhat,
    /// Directory to write them into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventArg {
    Bind,
    Listen,
    Connect,
    ConnectResult,
    Accept,
    Close,
}

/// Filters shared by every command that lists sockets or events.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only this process (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only processes with this exact name (comm, at most 15 bytes; repeatable).
    #[arg(long, value_name = "NAME", value_parser = parse_comm)]
    pub comm: Vec<String>,
    /// Only sockets with this port on either side (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only this protocol.
    #[arg(long, value_enum)]
    pub proto: Option<ProtoArg>,
}

fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a process name cannot be empty".into());
    }
    if s.len() > 15 {
        return Err(format!(
            "`{s}` is {} bytes; the kernel keeps at most 15 bytes of a process name",
            s.len()
        ));
    }
    Ok(s.to_string())
}

impl ProtoArg {
    pub fn proto(self) -> Proto {
        match self {
            ProtoArg::Tcp => Proto::Tcp,
            ProtoArg::Udp => Proto::Udp,
        }
    }
}

impl FilterArgs {
    pub fn resolve(&self) -> Filter {
        Filter {
            pids: self.pid.clone(),
            comms: self.comm.clone(),
            ports: self.port.clone(),
            proto: self.proto.map(ProtoArg::proto),
            events: Vec::new(),
        }
    }
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print one JSON object per socket (docs/api.md, SOCKET) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only sockets whose local port is of this IANA class (repeatable).
    #[arg(long, value_enum, value_name = "CLASS")]
    pub port_class: Vec<PortClassArg>,
    /// Only listeners (TCP listen; UDP bound, unconnected).
    #[arg(long)]
    pub listening: bool,
    /// Order by bytes moved (most first; needs flow records) or by age
    /// (oldest connection first); sockets without the figure come last.
    #[arg(long, value_enum, value_name = "KEY")]
    pub sort: Option<LsSort>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub use crate::output::sockets::LsSort;

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// Local side, as ip:port ([ipv6]:port).
    #[arg(value_name = "SRC", value_parser = parse_endpoint)]
    pub src: SocketAddr,
    /// Remote side, as ip:port ([ipv6]:port).
    #[arg(value_name = "DST", value_parser = parse_endpoint)]
    pub dst: SocketAddr,
    /// Only this protocol (default: both).
    #[arg(long, value_enum)]
    pub proto: Option<ProtoArg>,
    /// Only this network namespace (its inode; default: all).
    #[arg(long, value_name = "INODE")]
    pub netns: Option<u32>,
    /// Print JSON (one object per matching socket).
    #[arg(long)]
    pub json: bool,
}

fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not ip:port (IPv6 as [ip]:port)"))
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status object as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Daemon settings; each overrides the same setting of the configuration file.
#[derive(Debug, Args, Clone, Default)]
pub struct DaemonArgs {
    /// Configuration file [default: /etc/sockmon/config.toml, if it exists].
    #[arg(long, value_name = "PATH", conflicts_with = "no_config")]
    pub config: Option<PathBuf>,
    /// Ignore any configuration file; use defaults and flags only.
    #[arg(long)]
    pub no_config: bool,
    /// Most simultaneous API clients.
    #[arg(long, value_name = "N")]
    pub max_clients: Option<usize>,
    /// Which kernel hooks report bind, listen, connect and accept [default: auto].
    #[arg(long, value_enum, value_name = "MODE")]
    pub attach: Option<AttachArg>,
    /// Kernel ring buffer size, in KiB (a power of two).
    #[arg(long, value_name = "KIB")]
    pub ring_kib: Option<u32>,
    /// Most threads of one user in bind/listen/connect/accept at once that
    /// the `syscalls` mode follows [default: 4096].
    #[arg(long, value_name = "N")]
    pub pending_per_user: Option<u32>,
    /// Most sockets kept in the live table.
    #[arg(long, value_name = "N")]
    pub table_cap: Option<usize>,
    /// Most owners listed per socket (more are counted as inherited_more).
    #[arg(long, value_name = "N")]
    pub max_owners: Option<usize>,
    /// Deadline of one sock_diag dump of a snapshot, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub dump_deadline_ms: Option<u64>,
    /// A `flow` record per live TCP connection every MS milliseconds (0: off).
    #[arg(long, value_name = "MS")]
    pub flow_interval_ms: Option<u64>,
    /// Without the kernel's flows records at close and exec (to measure
    /// their cost; `kernel.enrich = false`).
    #[arg(long, hide = true)]
    pub no_enrichment: bool,
    /// Write the NDJSON event stream to stdout.
    #[arg(long)]
    pub sink_stdout: bool,
    /// Append the NDJSON event stream to this file (rotated by size).
    #[arg(long, value_name = "PATH")]
    pub sink_file: Option<PathBuf>,
    /// Rotate the event file at this size, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub sink_file_max_bytes: Option<u64>,
    /// Rotated event files kept.
    #[arg(long, value_name = "N")]
    pub sink_file_keep: Option<u32>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Most simultaneous API clients of one uid other than root.
    #[arg(long, value_name = "N")]
    pub max_clients_per_uid: Option<usize>,
    /// Time a client has to take each write of a response, in ms.
    #[arg(long, value_name = "MS")]
    pub write_timeout_ms: Option<u64>,
    /// Most values in one API filter list.
    #[arg(long, value_name = "N")]
    pub max_filter_values: Option<usize>,
    /// Allow --metrics-listen on an address other than loopback.
    #[arg(long)]
    pub metrics_allow_remote: bool,
    /// Most metrics connections at once.
    #[arg(long, value_name = "N")]
    pub metrics_max_connections: Option<usize>,
    /// Judge listeners against this policy file (sets `policy.file`; re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Print NDJSON (one JSON object per line, schema v1) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only these events (repeatable).
    #[arg(long = "event", value_enum, value_name = "EVENT")]
    pub events: Vec<EventArg>,
    /// Which kernel hooks report bind, listen, connect and accept.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub attach: AttachArg,
    /// Kernel ring buffer size, in KiB (a power of two, at least 4).
    #[arg(long, value_name = "KIB", default_value_t = sockmon_common::DEFAULT_RING_BYTES / 1024, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
    /// Most sockets kept in the live table.
    #[arg(long, value_name = "N", default_value_t = table::DEFAULT_CAP, value_parser = parse_cap)]
    pub table_cap: usize,
    /// Also print a `flow` record per live TCP connection every SECONDS (deltas since the last).
    #[arg(long, value_name = "SECONDS", value_parser = parse_flow_interval)]
    pub flow_interval: Option<Duration>,
    /// Judge listeners against this policy file and stream `alert` records (loads the probes here).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

fn parse_flow_interval(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=86_400.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "`{s}`: the flow interval is a number of seconds from 0.1 to 86400"
        )),
    }
}

/// `--attach`: which kernel hooks report bind, listen, connect and accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttachArg {
    /// The best mode this kernel allows (kfunc for each kind it can hook, socket for the rest, else syscalls).
    Auto,
    /// Kernel-function hooks (fexit): no tax on unrelated syscalls; needs BPF trampolines.
    Kfunc,
    /// Socket-layer hooks: no tax on unrelated syscalls.
    Socket,
    /// Syscall tracepoints: every syscall of the machine pays the tracing slow path.
    Syscalls,
}

impl AttachArg {
    pub fn mode(self) -> crate::kernel::AttachMode {
        use crate::kernel::AttachMode;
        match self {
            Self::Auto => AttachMode::Auto,
            Self::Kfunc => AttachMode::Kfunc,
            Self::Socket => AttachMode::Socket,
            Self::Syscalls => AttachMode::Syscalls,
        }
    }

    pub fn name(self) -> &'static str {
        self.mode().name()
    }
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of KiB"))?;
    if v < 4 || !v.is_power_of_two() || v > (1 << 20) {
        return Err(format!(
            "{v} KiB: the ring buffer must be a power of two between 4 KiB and 1 GiB"
        ));
    }
    Ok(v)
}

fn parse_cap(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("the table must hold at least one socket".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("`{s}` is not a number of sockets")),
    }
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Start with this filter (the `/` filter's words: port:N pid:N comm:NAME proto:tcp|udp unit:NAME state:STATE).
    #[arg(long, value_name = "WORDS", num_args = 1..)]
    pub filter: Vec<String>,
    /// Time between redraws, in milliseconds (50 to 5000).
    #[arg(long = "refresh-ms", value_name = "MS", default_value = "250", value_parser = parse_refresh)]
    pub refresh: Duration,
}

fn parse_refresh(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(v @ 50..=5000) => Ok(Duration::from_millis(v)),
        _ => Err(format!("`{s}`: the refresh interval is 50 to 5000 ms")),
    }
}

/// What `watch` runs with.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub format: Format,
    pub filter: Filter,
    pub load: LoadOptions,
    pub drain_interval: Duration,
    pub table_cap: usize,
    pub flow_interval: Option<Duration>,
    pub policy: Option<PathBuf>,
}

impl WatchArgs {
    pub fn resolve(&self) -> WatchConfig {
        let ring_bytes = self.ring_kib * 1024;
        let mut filter = self.filter.resolve();
        filter.events = self
            .events
            .iter()
            .map(|e| match e {
                EventArg::Bind => EventKind::Bind,
                EventArg::Listen => EventKind::Listen,
                EventArg::Connect => EventKind::Connect,
                EventArg::ConnectResult => EventKind::ConnectResult,
                EventArg::Accept => EventKind::Accept,
                EventArg::Close => EventKind::Close,
            })
            .collect();
        WatchConfig {
            format: if self.json {
                Format::Json
            } else {
                Format::Human
            },
            filter,
            load: LoadOptions {
                ring_bytes,
                wakeup_bytes: (ring_bytes / 8) as u64,
                attach: self.attach.mode(),
                enrich: true,
                ..LoadOptions::default()
            },
            drain_interval: crate::kernel::reader::DEFAULT_DRAIN_INTERVAL,
            table_cap: self.table_cap,
            flow_interval: self.flow_interval,
            policy: self.policy.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sockmon").chain(args.iter().copied()))
    }

    #[test]
    fn watch_filters_resolve() {
        let Command::Watch(w) = parse(&[
            "watch", "--json", "--pid", "1", "--pid", "2", "--comm", "curl", "--port", "443",
            "--proto", "tcp", "--event", "connect", "--event", "close",
        ])
        .unwrap()
        .command
        else {
            panic!("not watch");
        };
        let c = w.resolve();
        assert_eq!(c.format, Format::Json);
        assert_eq!(c.filter.pids, vec![1, 2]);
        assert_eq!(c.filter.comms, vec!["curl".to_string()]);
        assert_eq!(c.filter.ports, vec![443]);
        assert_eq!(c.filter.proto, Some(Proto::Tcp));
        assert_eq!(c.filter.events, vec![EventKind::Connect, EventKind::Close]);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["watch", "--port", "70000"]).is_err());
        assert!(parse(&["watch", "--pid", "x"]).is_err());
        assert!(parse(&["watch", "--proto", "sctp"]).is_err());
        assert!(parse(&["watch", "--event", "open"]).is_err());
        assert!(parse(&["watch", "--comm", "a-name-longer-than-15"]).is_err());
        assert!(parse(&["watch", "--ring-kib", "3"]).is_err());
        assert!(parse(&["watch", "--ring-kib", "100"]).is_err());
        assert!(parse(&["watch", "--table-cap", "0"]).is_err());
        assert!(parse(&["lookup", "1.2.3.4", "1.2.3.4:5"]).is_err());
        assert!(parse(&["ls", "--event", "connect"]).is_err());
        assert!(parse(&["daemon", "--config", "/x", "--no-config"]).is_err());
        assert!(parse(&["top", "--refresh-ms", "10"]).is_err());
        assert!(parse(&["top", "--refresh-ms", "x"]).is_err());
    }

    #[test]
    fn lookup_takes_ipv4_and_bracketed_ipv6() {
        let Command::Lookup(l) = parse(&["lookup", "[::1]:5000", "127.0.0.1:80", "--proto", "udp"])
            .unwrap()
            .command
        else {
            panic!("not lookup");
        };
        assert_eq!(l.src, "[::1]:5000".parse().unwrap());
        assert_eq!(l.dst, "127.0.0.1:80".parse().unwrap());
        assert_eq!(l.proto, Some(ProtoArg::Udp));
    }

    #[test]
    fn global_socket_flag_anywhere() {
        let c = parse(&["status", "--socket", "/tmp/s.sock", "--json"]).unwrap();
        assert_eq!(c.socket_path(), PathBuf::from("/tmp/s.sock"));
        let c = parse(&["--no-daemon", "ls"]).unwrap();
        assert!(c.no_daemon);
    }
}
