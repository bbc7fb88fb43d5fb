//! Loading the kernel programs with this kernel's offsets and attaching them.
//!
//! [`Probes`] owns the loaded object; dropping it detaches every program
//! (links are fd-based, nothing is pinned), so a process that exits, even by
//! a signal, leaves nothing behind in the kernel.

use std::{fs::File, path::PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSock, CgroupSockAddr, FExit, KProbe, Program,
        ProgramError, SockOps, TracePoint,
    },
};
use sockmon_common::{
    COUNTERS_MAP, DEFAULT_RING_BYTES, ENRICH_GLOBAL, EVENTS_MAP, KFUNC_KINDS_GLOBAL, KernelCounter,
    OFFSETS_GLOBAL, SYSCALLS_MODE_GLOBAL, WAKEUP_BYTES_GLOBAL, flow::FLOW_OFFSETS_GLOBAL,
    kfunc_kinds,
};
use thiserror::Error;

use super::{
    btf::{self, BtfError},
    cgroup::{self, CgroupError},
    privileges,
    tracefs::{self, TracefsError},
};

/// The compiled kernel programs (built by `build.rs`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockmon"));

/// Which hooks report bind, listen, connect and accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// The best mode this kernel allows, found by trying: `kfunc` for each
    /// event kind whose kernel function can be hooked, `socket` for the
    /// others, else `syscalls`.
    #[default]
    Auto,
    /// Kernel-function hooks (fexit on `inet_bind`, `inet_listen`,
    /// `tcp_v4_connect`, `inet_accept`, ...): no tax on unrelated syscalls,
    /// and the errno of failed binds and connects, `accept(fd, NULL, NULL)`
    /// and a UDP connect's local address. Needs BPF trampolines.
    Kfunc,
    /// Socket-layer hooks (cgroup `post_bind`, `sock_ops`, `getpeername`,
    /// `connect`): no tax on unrelated syscalls.
    Socket,
    /// Syscall tracepoints (every syscall of the machine takes the tracing
    /// slow path), plus the socket-layer hooks for what never enters those
    /// syscalls (io_uring, TCP Fast Open).
    Syscalls,
}

impl AttachMode {
    pub const ALL: [AttachMode; 4] = [Self::Auto, Self::Kfunc, Self::Socket, Self::Syscalls];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Kfunc => "kfunc",
            Self::Socket => "socket",
            Self::Syscalls => "syscalls",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The source of one event kind's records in a loaded mode (`status`,
/// metrics, `watch`'s first line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindSource {
    pub kind: &'static str,
    /// `kfunc` (trampolines), `kprobe` (the `kfunc` mode's kprobe
    /// variant), `socket` or `syscalls`.
    pub source: &'static str,
}

/// How a kind is hooked in each concrete mode: (kind, in `socket`, in
/// `syscalls`, its `kfunc_kinds` bit where a kernel-function hook can
/// report it instead).
const KIND_SOURCES: [(&str, &str, &str, u64); 7] = [
    ("bind", "socket", "syscalls", kfunc_kinds::BIND),
    ("listen", "socket", "syscalls", kfunc_kinds::LISTEN),
    ("connect", "socket", "syscalls", kfunc_kinds::CONNECT),
    // The outcome's record is the connect's, completed in `inet_sock_set_state`.
    ("connect_result", "socket", "socket", kfunc_kinds::CONNECT),
    ("accept", "socket", "syscalls", kfunc_kinds::ACCEPT),
    ("close", "socket", "socket", 0),
    (
        "udp_implicit_bind",
        "socket",
        "socket",
        kfunc_kinds::UDP_IMPLICIT_BIND,
    ),
];

/// What a kernel-function hook reads by position, checked against the
/// kernel's BTF before it is attached.
#[derive(Clone, Copy, Debug)]
struct Signature {
    /// The kernel function.
    function: &'static str,
    /// Its leading parameters as C spells them.
    params: &'static [&'static str],
    /// Whether it must have exactly these (the hook reads the return value,
    /// which follows the last parameter).
    exact: bool,
    /// Its return type.
    ret: &'static str,
}

/// How a program attaches.
#[derive(Clone, Copy, Debug)]
enum Hook {
    /// A classic tracepoint: (category, name = the program's name).
    Tracepoint(&'static str),
    /// A BTF tracepoint of this name.
    BtfTracepoint(&'static str),
    /// A cgroup socket program (`cgroup/post_bind*`, `cgroup/sock_release`).
    CgroupSock,
    /// A cgroup sock_addr program (`cgroup/connect*`, `getpeername*`, `sendmsg*`).
    CgroupSockAddr,
    /// A cgroup `sock_ops` program.
    SockOps,
    /// An fexit program on a kernel function of this shape.
    FExit(Signature),
    /// A kprobe at the entry of a kernel function of this shape.
    KProbe(Signature),
    /// A kretprobe on this kernel function (its entry's kprobe checks the shape).
    KRetProbe(&'static str),
}

/// Which modes attach a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// Attached in every mode.
    Common,
    /// Only in the `syscalls` mode.
    Syscalls,
    /// In every mode: in `syscalls` it reports only what bypasses the
    /// syscalls. It reports the given `kfunc_kinds`, and is left out where
    /// kernel-function hooks report all of them.
    SocketLayer(u64),
    /// A kernel-function hook (fexit) for one of `kfunc_kinds`: attached
    /// where the load asks for that kind.
    Kfunc(u64),
    /// The same kind's hook as a kprobe or kretprobe, where its fexit
    /// programs do not load.
    Kprobe(u64),
}

const BIND_SIG: &[&str] = &["struct socket *", "struct sockaddr *", "int"];
const CONNECT_SIG: &[&str] = &["struct sock *", "struct sockaddr *", "int"];

const fn fexit(function: &'static str, params: &'static [&'static str], exact: bool) -> Hook {
    Hook::FExit(Signature {
        function,
        params,
        exact,
        ret: "int",
    })
}

const fn kprobe(function: &'static str, params: &'static [&'static str]) -> Hook {
    Hook::KProbe(Signature {
        function,
        params,
        exact: true,
        ret: "int",
    })
}

/// Every program of the object. A program in the object but not here fails
/// the load (a probe that is never attached is a bug, not a choice).
const PROGRAMS: [(&str, Hook, Family); 48] = [
    (
        "kf_inet_bind",
        fexit("inet_bind", BIND_SIG, true),
        Family::Kfunc(kfunc_kinds::BIND),
    ),
    (
        "kf_inet6_bind",
        fexit("inet6_bind", BIND_SIG, true),
        Family::Kfunc(kfunc_kinds::BIND),
    ),
    (
        "kf_inet_listen",
        fexit("inet_listen", &["struct socket *", "int"], true),
        Family::Kfunc(kfunc_kinds::LISTEN),
    ),
    (
        "kf_tcp_v4_connect",
        fexit("tcp_v4_connect", CONNECT_SIG, true),
        Family::Kfunc(kfunc_kinds::CONNECT),
    ),
    (
        "kf_tcp_v6_connect",
        fexit("tcp_v6_connect", CONNECT_SIG, true),
        Family::Kfunc(kfunc_kinds::CONNECT),
    ),
    (
        "kf_ip4_datagram_connect",
        fexit("ip4_datagram_connect", CONNECT_SIG, true),
        Family::Kfunc(kfunc_kinds::CONNECT),
    ),
    (
        "kf_ip6_datagram_connect",
        fexit("ip6_datagram_connect", CONNECT_SIG, true),
        Family::Kfunc(kfunc_kinds::CONNECT),
    ),
    (
        "kf_inet_autobind",
        fexit("inet_autobind", &["struct sock *"], true),
        Family::Kfunc(kfunc_kinds::UDP_IMPLICIT_BIND),
    ),
    (
        // (sock, newsock, flags, kern) before 6.10, (sock, newsock, arg) since.
        "kf_inet_accept",
        fexit(
            "inet_accept",
            &["struct socket *", "struct socket *"],
            false,
        ),
        Family::Kfunc(kfunc_kinds::ACCEPT),
    ),
    (
        "kp_inet_bind",
        kprobe("inet_bind", BIND_SIG),
        Family::Kprobe(kfunc_kinds::BIND),
    ),
    (
        "kr_inet_bind",
        Hook::KRetProbe("inet_bind"),
        Family::Kprobe(kfunc_kinds::BIND),
    ),
    (
        "kp_inet6_bind",
        kprobe("inet6_bind", BIND_SIG),
        Family::Kprobe(kfunc_kinds::BIND),
    ),
    (
        "kr_inet6_bind",
        Hook::KRetProbe("inet6_bind"),
        Family::Kprobe(kfunc_kinds::BIND),
    ),
    (
        "kp_inet_listen",
        kprobe("inet_listen", &["struct socket *", "int"]),
        Family::Kprobe(kfunc_kinds::LISTEN),
    ),
    (
        "kr_inet_listen",
        Hook::KRetProbe("inet_listen"),
        Family::Kprobe(kfunc_kinds::LISTEN),
    ),
    (
        "kp_tcp_v4_connect",
        kprobe("tcp_v4_connect", CONNECT_SIG),
        Family::Kprobe(kfunc_kinds::CONNECT),
    ),
    (
        "kr_tcp_v4_connect",
        Hook::KRetProbe("tcp_v4_connect"),
        Family::Kprobe(kfunc_kinds::CONNECT),
    ),
    (
        "kp_tcp_v6_connect",
        kprobe("tcp_v6_connect", CONNECT_SIG),
        Family::Kprobe(kfunc_kinds::CONNECT),
    ),
    (
        "kr_tcp_v6_connect",
        Hook::KRetProbe("tcp_v6_connect"),
        Family::Kprobe(kfunc_kinds::CONNECT),
    ),
    (
        "kp_ip4_datagram_connect",
        kprobe("ip4_datagram_connect", CONNECT_SIG),
        Family::Kprobe(kfunc_kinds::CONNECT),
    ),
    (
        "kr_ip4_datagram_connect",
        Hook::KRetProbe("ip4_datagram_connect"),
        Family::Kprobe(kfunc_kinds::CONNECT),
    ),
    (
        "kp_ip6_datagram_connect",
        kprobe("ip6_datagram_connect", CONNECT_SIG),
        Family::Kprobe(kfunc_kinds::CONNECT),
    ),
    (
        "kr_ip6_datagram_connect",
        Hook::KRetProbe("ip6_datagram_connect"),
        Family::Kprobe(kfunc_kinds::CONNECT),
    ),
    (
        "kp_inet_autobind",
        kprobe("inet_autobind", &["struct sock *"]),
        Family::Kprobe(kfunc_kinds::UDP_IMPLICIT_BIND),
    ),
    (
        "kr_inet_autobind",
        Hook::KRetProbe("inet_autobind"),
        Family::Kprobe(kfunc_kinds::UDP_IMPLICIT_BIND),
    ),
    (
        // At the entry: a return probe on a function that blocks in accept
        // could run out of return instances (kprobe.rs).
        "kp_inet_accept_graft",
        Hook::KProbe(Signature {
            function: "__inet_accept",
            params: &["struct socket *", "struct socket *", "struct sock *"],
            exact: true,
            ret: "void",
        }),
        Family::Kprobe(kfunc_kinds::ACCEPT),
    ),
    (
        "sys_enter_bind",
        Hook::Tracepoint("syscalls"),
        Family::Syscalls,
    ),
    (
        "sys_exit_bind",
        Hook::Tracepoint("syscalls"),
        Family::Syscalls,
    ),
    (
        "sys_enter_listen",
        Hook::Tracepoint("syscalls"),
        Family::Syscalls,
    ),
    (
        "sys_exit_listen",
        Hook::Tracepoint("syscalls"),
        Family::Syscalls,
    ),
    (
        "sys_enter_connect",
        Hook::Tracepoint("syscalls"),
        Family::Syscalls,
    ),
    (
        "sys_exit_connect",
        Hook::Tracepoint("syscalls"),
        Family::Syscalls,
    ),
    (
        "sys_exit_accept",
        Hook::Tracepoint("syscalls"),
        Family::Syscalls,
    ),
    (
        "sys_exit_accept4",
        Hook::Tracepoint("syscalls"),
        Family::Syscalls,
    ),
    (
        "sched_process_exec",
        Hook::Tracepoint("sched"),
        Family::Common,
    ),
    (
        "sched_process_exit",
        Hook::Tracepoint("sched"),
        Family::Common,
    ),
    (
        "sched_process_fork",
        Hook::BtfTracepoint("sched_process_fork"),
        Family::Common,
    ),
    (
        "inet_sock_set_state",
        Hook::BtfTracepoint("inet_sock_set_state"),
        Family::Common,
    ),
    ("sock_release", Hook::CgroupSock, Family::Common),
    (
        "udp_sendmsg4",
        Hook::CgroupSockAddr,
        Family::SocketLayer(kfunc_kinds::UDP_IMPLICIT_BIND),
    ),
    (
        "udp_sendmsg6",
        Hook::CgroupSockAddr,
        Family::SocketLayer(kfunc_kinds::UDP_IMPLICIT_BIND),
    ),
    (
        "post_bind4",
        Hook::CgroupSock,
        Family::SocketLayer(kfunc_kinds::BIND),
    ),
    (
        "post_bind6",
        Hook::CgroupSock,
        Family::SocketLayer(kfunc_kinds::BIND),
    ),
    (
        "sock_ops",
        Hook::SockOps,
        Family::SocketLayer(kfunc_kinds::LISTEN | kfunc_kinds::CONNECT),
    ),
    (
        "accept_getpeername4",
        Hook::CgroupSockAddr,
        Family::SocketLayer(kfunc_kinds::ACCEPT),
    ),
    (
        "accept_getpeername6",
        Hook::CgroupSockAddr,
        Family::SocketLayer(kfunc_kinds::ACCEPT),
    ),
    (
        "udp_connect4",
        Hook::CgroupSockAddr,
        Family::SocketLayer(kfunc_kinds::CONNECT),
    ),
    (
        "udp_connect6",
        Hook::CgroupSockAddr,
        Family::SocketLayer(kfunc_kinds::CONNECT),
    ),
];

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{0}")]
    Privileges(String),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("loading the eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("program `{program}`: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "the embedded eBPF object was built for ABI {object}, this program for ABI {expected}: a stale build; rebuild sockmon"
    )]
    Abi { object: String, expected: u32 },
    #[error("map `{0}` is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "the eBPF object has program `{0}`, which the loader does not know: add it to `PROGRAMS` in kernel/loader.rs"
    )]
    UnregisteredProgram(String),
    #[error("program `{0}` is registered in the loader but missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("the `{mode}` attach mode cannot load on this kernel: {reason}")]
    ModeUnavailable { mode: &'static str, reason: String },
    #[error(
        "kernel function `{function}` is `{found}` in this kernel's BTF; its hook reads `{expected}`"
    )]
    Signature {
        function: &'static str,
        found: String,
        expected: String,
    },
    #[error(
        "{KFUNC_SKIP_ENV}: `{0}` is not an event kind kernel-function hooks report (bind, listen, connect, accept, udp_implicit_bind)"
    )]
    KfuncSkip(String),
    #[error("left to the socket layer by {KFUNC_SKIP_ENV}")]
    KfuncSkipped,
    #[error("{KFUNC_VIA_ENV}={0}: only `fexit` or `kprobe` are hook variants")]
    KfuncVia(String),
    #[error("not tried: {KFUNC_VIA_ENV}={0}")]
    KfuncNotTried(&'static str),
    #[error("fexit: {fexit}; kprobe: {kprobe}")]
    KfuncVariants { fexit: String, kprobe: String },
    /// Only inside `auto`, which then loads again without the kinds that
    /// failed: some kernel-function hooks did not load.
    #[error("kernel-function hooks refused: {why}")]
    KfuncPartial {
        /// The `kfunc_kinds` whose hooks all loaded.
        ok: u64,
        why: String,
    },
    #[error("cannot open cgroup {path}: {source}")]
    OpenCgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LoadError {
    /// Whether the error is about privileges (exit status 2 at the CLI).
    pub fn is_privileges(&self) -> bool {
        matches!(self, Self::Privileges(_))
    }
}

/// Tunables fixed at load time.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Backlog in bytes at which a submit wakes the reader.
    pub wakeup_bytes: u64,
    /// Which hooks report bind, listen, connect and accept.
    pub attach: AttachMode,
    /// The flows records at close and exec (on unless measuring their cost).
    pub enrich: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
            wakeup_bytes: (DEFAULT_RING_BYTES / 8) as u64,
            attach: AttachMode::Auto,
            enrich: true,
        }
    }
}

/// The loaded, attached programs.
pub struct Probes {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    mode: AttachMode,
    /// The `kfunc_kinds` that kernel-function hooks report.
    kfunc: u64,
    /// Those of them hooked with kprobes rather than trampolines.
    kprobes: u64,
    /// Why `auto` did not use kernel-function hooks for every kind, or fell
    /// back to `syscalls`.
    fallback: Option<String>,
}

/// The environment variable that leaves event kinds to the socket layer
/// even where their kernel functions can be hooked (`bind,listen,...`): a
/// way around a hook that misbehaves on some kernel, and how the tests make
/// `auto` mix the two families on a kernel where all four kinds load.
pub const KFUNC_SKIP_ENV: &str = "SOCKMON_KFUNC_SKIP";

/// The `kfunc_kinds` named in [`KFUNC_SKIP_ENV`].
fn kfunc_skip() -> Result<u64, LoadError> {
    let Ok(list) = std::env::var(KFUNC_SKIP_ENV) else {
        return Ok(0);
    };
    let mut bits = 0;
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let bit = KIND_SOURCES
            .iter()
            .find(|k| k.0 == name && k.3 != 0 && k.0 != "connect_result")
            .map(|k| k.3)
            .ok_or_else(|| LoadError::KfuncSkip(name.to_string()))?;
        bits |= bit;
    }
    Ok(bits)
}

/// What one load attaches.
#[derive(Clone, Copy, Debug)]
struct Plan {
    mode: AttachMode,
    /// The `kfunc_kinds` asked of kernel-function hooks.
    kfunc: u64,
    /// The `kfunc_kinds` left to the socket layer ([`KFUNC_SKIP_ENV`]).
    skip: u64,
    /// Which variants of kernel-function hooks ([`KFUNC_VIA_ENV`]).
    via: Via,
    /// Whether a kernel-function hook that fails fails the load (`kfunc`),
    /// or is reported as [`LoadError::KfuncPartial`] (`auto`).
    strict: bool,
}

impl Probes {
    /// Checks privileges, resolves offsets, loads and attaches everything the
    /// mode needs. `auto` tries `socket` first and falls back to `syscalls`.
    pub fn load(opts: LoadOptions) -> Result<Self, LoadError> {
        check_abi(OBJECT)?;
        let missing = privileges::missing(privileges::effective(), &privileges::REQUIRED);
        if !missing.is_empty() {
            return Err(LoadError::Privileges(privileges::explain(&missing)));
        }
        raise_memlock_limit();
        // Parsed once for every mode tried: for the offsets (btf-rs) and for
        // aya's relocations and typed attachments (its own parser).
        let btf = btf::Layout::from_file(btf::VMLINUX_BTF)?;
        let aya_btf = Btf::from_sys_fs().map_err(|e| BtfError::Open {
            path: btf::VMLINUX_BTF.to_string(),
            reason: e.to_string(),
        })?;
        let btf = (&btf, &aya_btf);
        let skip = kfunc_skip()?;
        let via = kfunc_via()?;
        let plan = |mode, kfunc, strict| Plan {
            mode,
            kfunc,
            skip,
            via,
            strict,
        };
        match opts.attach {
            AttachMode::Auto => {
                Self::load_auto(&opts, plan(AttachMode::Kfunc, kfunc_kinds::ALL, false), btf)
            }
            AttachMode::Kfunc => {
                Self::load_plan(&opts, plan(AttachMode::Kfunc, kfunc_kinds::ALL, true), btf)
            }
            mode => Self::load_plan(&opts, plan(mode, 0, true), btf),
        }
    }

    /// `auto`: kernel-function hooks for every kind whose hooks load, the
    /// socket layer for the others; if the socket layer cannot load either,
    /// the syscall tracepoints. Each step is found by trying.
    fn load_auto(
        opts: &LoadOptions,
        all: Plan,
        btf: (&btf::Layout, &Btf),
    ) -> Result<Self, LoadError> {
        let kfunc_why = match Self::load_plan(opts, all, btf) {
            Ok(p) => return Ok(p),
            Err(LoadError::KfuncPartial { ok, why }) if ok != 0 => {
                // The object is loaded again, so that the socket layer's
                // shared `sock_ops` knows which kinds it keeps.
                let some = Plan {
                    kfunc: ok,
                    strict: true,
                    ..all
                };
                match Self::load_plan(opts, some, btf) {
                    Ok(mut p) => {
                        let more = p
                            .fallback
                            .take()
                            .map(|f| format!("; {f}"))
                            .unwrap_or_default();
                        p.fallback = Some(format!(
                            "kfunc: {why}; the socket layer reports those kinds{more}"
                        ));
                        return Ok(p);
                    }
                    Err(e) if e.is_privileges() => return Err(e),
                    Err(e) => format!("{why}; then {e}"),
                }
            }
            Err(LoadError::KfuncPartial { why, .. }) => why,
            Err(e) if e.is_privileges() => return Err(e),
            Err(e) => e.to_string(),
        };
        let socket = Plan {
            mode: AttachMode::Socket,
            kfunc: 0,
            strict: true,
            ..all
        };
        match Self::load_plan(opts, socket, btf) {
            Ok(mut p) => {
                p.fallback = Some(format!("kfunc: {kfunc_why}"));
                Ok(p)
            }
            Err(e) if !e.is_privileges() => {
                let syscalls = Plan {
                    mode: AttachMode::Syscalls,
                    ..socket
                };
                let mut p = Self::load_plan(opts, syscalls, btf).map_err(|e2| {
                    LoadError::ModeUnavailable {
                        mode: "auto",
                        reason: format!("kfunc: {kfunc_why}; socket: {e}; syscalls: {e2}"),
                    }
                })?;
                p.fallback = Some(format!("kfunc: {kfunc_why}; socket: {e}"));
                Ok(p)
            }
            Err(e) => Err(e),
        }
    }

    fn load_plan(
        opts: &LoadOptions,
        plan: Plan,
        (btf, aya_btf): (&btf::Layout, &Btf),
    ) -> Result<Self, LoadError> {
        let mode = plan.mode;
        let syscalls = mode == AttachMode::Syscalls;
        // Every mode attaches the sched tracepoints, which need tracefs.
        let tracefs = tracefs::ensure_mounted()?;
        let offsets = btf::resolve(btf, Some(&tracefs))?;
        let flow_offsets = btf::resolve_flow(btf, &tracefs)?; // flows (issue 13)
        let syscalls_flag: u64 = syscalls.into();
        let enrich_flag: u64 = opts.enrich.into();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(aya_btf))
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .override_global(FLOW_OFFSETS_GLOBAL, &flow_offsets, true) // flows (issue 13)
            .override_global(WAKEUP_BYTES_GLOBAL, &opts.wakeup_bytes, true)
            .override_global(SYSCALLS_MODE_GLOBAL, &syscalls_flag, true)
            .override_global(ENRICH_GLOBAL, &enrich_flag, true)
            .override_global(KFUNC_KINDS_GLOBAL, &plan.kfunc, true)
            .map_max_entries(EVENTS_MAP, opts.ring_bytes)
            .load(OBJECT)?;
        check_registry(&ebpf)?;
        let (kfunc, kprobes, notes) =
            attach_plan(&mut ebpf, plan, btf, aya_btf).map_err(|e| match e {
                LoadError::Program { program, source } => LoadError::ModeUnavailable {
                    mode: mode.name(),
                    reason: format!("program `{program}`: {source}"),
                },
                other => other,
            })?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map(COUNTERS_MAP)
                .ok_or(LoadError::MissingMap(COUNTERS_MAP))?,
        )
        .map_err(|source| LoadError::Map {
            map: COUNTERS_MAP,
            source,
        })?;
        Ok(Self {
            ebpf,
            counters,
            mode: if kfunc == 0 && mode == AttachMode::Kfunc {
                AttachMode::Socket
            } else {
                mode
            },
            kfunc,
            kprobes,
            fallback: (!notes.is_empty())
                .then(|| format!("kfunc: {notes}; the socket layer reports those kinds")),
        })
    }

    /// The concrete mode loaded (`kfunc`, `socket` or `syscalls`, never
    /// `auto`). `kfunc` where kernel-function hooks report at least one
    /// kind; [`Probes::kind_sources`] says which.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Why `auto` did not hook every kind's kernel function, if it did not.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The source of each event kind's records in the loaded mode.
    pub fn kind_sources(&self) -> Vec<KindSource> {
        kind_sources(self.mode, self.kfunc, self.kprobes)
    }

    /// Takes the event ring buffer (once) for a reader task.
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self
            .ebpf
            .take_map(EVENTS_MAP)
            .ok_or(LoadError::MissingMap(EVENTS_MAP))?;
        RingBuf::try_from(map).map_err(|source| LoadError::Map {
            map: EVENTS_MAP,
            source,
        })
    }

    /// Current kernel-side counters, summed over CPUs.
    pub fn counters(&self) -> [u64; KernelCounter::ALL.len()] {
        let mut out = [0u64; KernelCounter::ALL.len()];
        for (i, c) in KernelCounter::ALL.iter().enumerate() {
            if let Ok(values) = self.counters.get(&(*c as u32), 0) {
                out[i] = values.iter().sum();
            }
        }
        out
    }
}

/// The source of each event kind's records in `mode`, where kernel-function
/// hooks report the `kfunc` kinds.
fn kind_sources(mode: AttachMode, kfunc: u64, kprobes: u64) -> Vec<KindSource> {
    KIND_SOURCES
        .iter()
        .map(|&(kind, socket, syscalls, bit)| KindSource {
            kind,
            source: if bit & kprobes != 0 {
                "kprobe"
            } else if bit & kfunc != 0 {
                "kfunc"
            } else if mode == AttachMode::Syscalls {
                syscalls
            } else {
                socket
            },
        })
        .collect()
}

/// Refuses an object built against another ABI than this program's
/// (`sockmon_common::ABI_VERSION`): its records would be misread. The
/// object says its version in its `ABI_VERSION` symbol, in a section of
/// its own that aya does not load.
fn check_abi(object: &[u8]) -> Result<(), LoadError> {
    let expected = sockmon_common::ABI_VERSION;
    match object_abi(object) {
        Ok(v) if v == expected => Ok(()),
        Ok(v) => Err(LoadError::Abi {
            object: v.to_string(),
            expected,
        }),
        Err(why) => Err(LoadError::Abi {
            object: format!("unknown ({why})"),
            expected,
        }),
    }
}

/// The `ABI_VERSION` the object was built with.
fn object_abi(object: &[u8]) -> Result<u32, String> {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    let file = object::File::parse(object).map_err(|e| e.to_string())?;
    let symbol = file
        .symbol_by_name("ABI_VERSION")
        .ok_or("the object has no ABI_VERSION symbol")?;
    let index = symbol
        .section_index()
        .ok_or("ABI_VERSION is in no section")?;
    let data = file
        .section_by_index(index)
        .and_then(|s| s.data())
        .map_err(|e| e.to_string())?;
    let at = usize::try_from(symbol.address()).map_err(|e| e.to_string())?;
    let bytes = data
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or("ABI_VERSION lies outside its section")?;
    // The object is bpfel: little-endian whatever the host.
    Ok(u32::from_le_bytes(bytes))
}

/// Every program of the object must be registered in [`PROGRAMS`], and
/// every registered program must be in the object.
fn check_registry(ebpf: &Ebpf) -> Result<(), LoadError> {
    for (name, _) in ebpf.programs() {
        if !PROGRAMS.iter().any(|(n, _, _)| *n == name) {
            return Err(LoadError::UnregisteredProgram(name.to_string()));
        }
    }
    for (name, _, _) in PROGRAMS {
        if ebpf.program(name).is_none() {
            return Err(LoadError::MissingProgram(name));
        }
    }
    Ok(())
}

/// The kinds the socket layer's shared `sock_ops` leaves to kernel-function
/// hooks by the `KFUNC_KINDS` global: one of these failing needs the object
/// loaded again. The others' socket-layer programs are simply attached.
const GLOBAL_KINDS: u64 = kfunc_kinds::LISTEN | kfunc_kinds::CONNECT;

/// Kinds a pure `kfunc` load may leave to the socket layer (the mode stands
/// without them): their function can be inlined away by the compiler.
const OPTIONAL_KINDS: u64 = kfunc_kinds::UDP_IMPLICIT_BIND;

/// Loads and attaches the programs `plan` asks for; the others stay unloaded
/// on purpose. The kernel-function hooks go first. A kind whose hooks fail
/// is left to the socket layer: in `auto` (not strict), one the globals
/// name ([`GLOBAL_KINDS`]) is reported as [`LoadError::KfuncPartial`]
/// before anything else is attached, so that the object is loaded again;
/// in `kfunc` (strict) only [`OPTIONAL_KINDS`] may fail. Returns the kinds
/// kernel-function hooks report and why the others do not.
fn attach_plan(
    ebpf: &mut Ebpf,
    plan: Plan,
    layout: &btf::Layout,
    btf: &Btf,
) -> Result<(u64, u64, String), LoadError> {
    let mut failed = 0u64;
    let mut kprobes = 0u64;
    let mut why = Vec::new();
    for kind in KFUNC_KIND_BITS {
        if plan.kfunc & kind == 0 {
            continue;
        }
        let attached = if plan.skip & kind != 0 {
            Err(LoadError::KfuncSkipped)
        } else {
            attach_kind(ebpf, layout, btf, kind, plan.via)
        };
        match attached {
            Ok(Variant::Fexit) => {}
            Ok(Variant::Kprobe) => kprobes |= kind,
            Err(e) if e.is_privileges() => return Err(e),
            Err(e) if plan.strict && kind & OPTIONAL_KINDS == 0 => {
                return Err(LoadError::ModeUnavailable {
                    mode: plan.mode.name(),
                    reason: format!("{}: {e}", kind_name(kind)),
                });
            }
            Err(e) => {
                failed |= kind;
                why.push(format!("{}: {e}", kind_name(kind)));
            }
        }
    }
    if failed & GLOBAL_KINDS != 0 && !plan.strict {
        return Err(LoadError::KfuncPartial {
            ok: plan.kfunc & !failed,
            why: why.join("; "),
        });
    }
    let kfunc = plan.kfunc & !failed;
    let mode = plan.mode;
    let wanted = |f: Family| match f {
        Family::Common => true,
        Family::Syscalls => mode == AttachMode::Syscalls,
        Family::SocketLayer(kinds) => kinds & !kfunc != 0,
        Family::Kfunc(_) | Family::Kprobe(_) => false, // attached above
    };
    // On 5.7+ aya attaches cgroup programs through a bpf_link, which always
    // coexists with other programs on the cgroup and takes no mode flags (the
    // kernel rejects any with EINVAL): `Single` is what passes flags = 0.
    let root = cgroup::v2_root()?;
    let open = || {
        File::open(&root).map_err(|source| LoadError::OpenCgroup {
            path: root.clone(),
            source,
        })
    };
    for (name, hook, family) in PROGRAMS {
        if !wanted(family) {
            continue;
        }
        match hook {
            Hook::Tracepoint(category) => {
                let tp: &mut TracePoint = program(ebpf, name)?;
                tp.load().map_err(fail(name))?;
                tp.attach(category, name).map_err(fail(name))?;
            }
            Hook::BtfTracepoint(tracepoint) => {
                let tp: &mut BtfTracePoint = program(ebpf, name)?;
                tp.load(tracepoint, btf).map_err(fail(name))?;
                tp.attach().map_err(fail(name))?;
            }
            Hook::CgroupSock => {
                let p: &mut CgroupSock = program(ebpf, name)?;
                p.load().map_err(fail(name))?;
                p.attach(open()?, CgroupAttachMode::Single)
                    .map_err(fail(name))?;
            }
            Hook::CgroupSockAddr => {
                let p: &mut CgroupSockAddr = program(ebpf, name)?;
                p.load().map_err(fail(name))?;
                p.attach(open()?, CgroupAttachMode::Single)
                    .map_err(fail(name))?;
            }
            Hook::SockOps => {
                let p: &mut SockOps = program(ebpf, name)?;
                p.load().map_err(fail(name))?;
                p.attach(open()?, CgroupAttachMode::Single)
                    .map_err(fail(name))?;
            }
            Hook::FExit(_) | Hook::KProbe(_) | Hook::KRetProbe(_) => {} // attached above
        }
    }
    Ok((kfunc, kprobes, why.join("; ")))
}

/// Every `kfunc_kinds` bit, in the order they are tried.
const KFUNC_KIND_BITS: [u64; 5] = [
    kfunc_kinds::BIND,
    kfunc_kinds::LISTEN,
    kfunc_kinds::CONNECT,
    kfunc_kinds::ACCEPT,
    kfunc_kinds::UDP_IMPLICIT_BIND,
];

/// How a kind's kernel functions are hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// fentry/fexit trampolines.
    Fexit,
    /// kprobes and kretprobes.
    Kprobe,
}

/// Which variants a load may use ([`KFUNC_VIA_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// Trampolines, else kprobes (the default).
    Any,
    Only(Variant),
}

/// The environment variable that restricts the `kfunc` mode's hooks to one
/// variant (`fexit` or `kprobe`): how the tests prove the kprobe variant on
/// a kernel where trampolines load too.
pub const KFUNC_VIA_ENV: &str = "SOCKMON_KFUNC_VIA";

fn kfunc_via() -> Result<Via, LoadError> {
    match std::env::var(KFUNC_VIA_ENV).as_deref() {
        Err(_) | Ok("") => Ok(Via::Any),
        Ok("fexit") => Ok(Via::Only(Variant::Fexit)),
        Ok("kprobe") => Ok(Via::Only(Variant::Kprobe)),
        Ok(other) => Err(LoadError::KfuncVia(other.to_string())),
    }
}

/// Hooks the kernel functions of `kind`: with trampolines where they load,
/// else with kprobes. A variant that fails part-way is unloaded whole, so a
/// kind is never reported by two families.
fn attach_kind(
    ebpf: &mut Ebpf,
    layout: &btf::Layout,
    btf: &Btf,
    kind: u64,
    via: Via,
) -> Result<Variant, LoadError> {
    let fexit = match via {
        Via::Only(Variant::Kprobe) => Err(LoadError::KfuncNotTried("kprobe")),
        _ => attach_variant(ebpf, layout, btf, kind, Variant::Fexit),
    };
    let Err(fexit_err) = fexit else {
        return Ok(Variant::Fexit);
    };
    if via == Via::Only(Variant::Fexit) || fexit_err.is_privileges() {
        return Err(fexit_err);
    }
    attach_variant(ebpf, layout, btf, kind, Variant::Kprobe)
        .map(|()| Variant::Kprobe)
        .map_err(|e| LoadError::KfuncVariants {
            fexit: fexit_err.to_string(),
            kprobe: e.to_string(),
        })
}

fn attach_variant(
    ebpf: &mut Ebpf,
    layout: &btf::Layout,
    btf: &Btf,
    kind: u64,
    variant: Variant,
) -> Result<(), LoadError> {
    let mine = PROGRAMS.iter().filter(|(_, _, f)| match (variant, *f) {
        (Variant::Fexit, Family::Kfunc(k)) | (Variant::Kprobe, Family::Kprobe(k)) => k == kind,
        _ => false,
    });
    let mut loaded = Vec::new();
    for &(name, hook, _) in mine {
        let r = load_hook(ebpf, layout, btf, name, hook);
        loaded.push(name);
        if let Err(e) = r {
            for n in loaded {
                unload(ebpf, n);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn load_hook(
    ebpf: &mut Ebpf,
    layout: &btf::Layout,
    btf: &Btf,
    name: &'static str,
    hook: Hook,
) -> Result<(), LoadError> {
    match hook {
        Hook::FExit(sig) => {
            check_signature(layout, &sig)?;
            let p: &mut FExit = program(ebpf, name)?;
            p.load(sig.function, btf).map_err(fail(name))?;
            p.attach().map_err(fail(name))?;
        }
        Hook::KProbe(sig) => {
            check_signature(layout, &sig)?;
            let p: &mut KProbe = program(ebpf, name)?;
            p.load().map_err(fail(name))?;
            p.attach(sig.function, 0).map_err(fail(name))?;
        }
        Hook::KRetProbe(function) => {
            let p: &mut KProbe = program(ebpf, name)?;
            p.load().map_err(fail(name))?;
            p.attach(function, 0).map_err(fail(name))?;
        }
        _ => unreachable!("only kernel-function hooks are attached per kind"),
    }
    Ok(())
}

/// Detaches and unloads a kernel-function hook of a variant that failed.
fn unload(ebpf: &mut Ebpf, name: &'static str) {
    let Some(p) = ebpf.program_mut(name) else {
        return;
    };
    let _ = match p {
        Program::FExit(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        _ => Ok(()),
    };
}

/// The event kind of a `kfunc_kinds` bit, as `status` names it.
fn kind_name(bit: u64) -> &'static str {
    KIND_SOURCES
        .iter()
        .find(|k| k.3 == bit)
        .map_or("?", |k| k.0)
}

/// Refuses a kernel function whose parameters are not what its hook reads
/// (they changed across kernels: `inet_csk_accept` since 6.10, for one).
fn check_signature(layout: &btf::Layout, sig: &Signature) -> Result<(), LoadError> {
    let (params, ret) = layout.function_signature(sig.function)?;
    let shape_ok = ret == sig.ret
        && params.len() >= sig.params.len()
        && (!sig.exact || params.len() == sig.params.len())
        && params
            .iter()
            .zip(sig.params)
            .all(|(have, want)| have == want);
    if shape_ok {
        Ok(())
    } else {
        Err(LoadError::Signature {
            function: sig.function,
            found: format!("{ret} ({})", params.join(", ")),
            expected: format!(
                "{} ({}{})",
                sig.ret,
                sig.params.join(", "),
                if sig.exact { "" } else { ", ..." }
            ),
        })
    }
}

/// The program `name` of the object, as type `T`.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::Program {
            program: name,
            source: ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(fail(name))
}

fn fail(program: &'static str) -> impl Fn(ProgramError) -> LoadError {
    move |source| LoadError::Program { program, source }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it (best effort).
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to a local struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    use sockmon_common::ABI_VERSION;

    use super::*;

    #[test]
    fn the_embedded_object_carries_this_programs_abi() {
        assert_eq!(object_abi(OBJECT), Ok(ABI_VERSION));
        assert!(check_abi(OBJECT).is_ok());
    }

    #[test]
    fn an_object_of_another_abi_is_refused() {
        let mut copy = OBJECT.to_vec();
        let at = {
            let file = object::File::parse(OBJECT).unwrap();
            let symbol = file.symbol_by_name("ABI_VERSION").unwrap();
            let section = file
                .section_by_index(symbol.section_index().unwrap())
                .unwrap();
            (section.file_range().unwrap().0 + symbol.address()) as usize
        };
        copy[at..at + 4].copy_from_slice(&(ABI_VERSION + 1).to_le_bytes());
        let err = check_abi(&copy).unwrap_err();
        match &err {
            LoadError::Abi { object, expected } => {
                assert_eq!(object, &(ABI_VERSION + 1).to_string());
                assert_eq!(*expected, ABI_VERSION);
            }
            other => panic!("not an ABI error: {other}"),
        }
        assert!(err.to_string().contains("stale build"), "{err}");
    }

    /// The names user space uses for maps and globals are the object's.
    #[test]
    fn every_map_and_global_of_the_object_is_named_here() {
        let file = object::File::parse(OBJECT).unwrap();
        let in_section = |name: &str| -> std::collections::BTreeSet<String> {
            let Some(section) = file.section_by_name(name) else {
                return Default::default();
            };
            file.symbols()
                .filter(|s| s.section_index() == Some(section.index()) && s.is_definition())
                .map(|s| s.name().unwrap().to_string())
                .collect()
        };
        let named = |names: &[&str]| -> std::collections::BTreeSet<String> {
            names.iter().map(|n| n.to_string()).collect()
        };
        assert_eq!(in_section("maps"), named(&sockmon_common::MAPS));
        assert_eq!(in_section(".rodata"), named(&sockmon_common::GLOBALS));
    }

    #[test]
    fn an_object_without_the_symbol_says_why() {
        let err = check_abi(b"not an ELF file").unwrap_err();
        assert!(
            matches!(&err, LoadError::Abi { object, .. } if object.starts_with("unknown (")),
            "{err}"
        );
    }
}
