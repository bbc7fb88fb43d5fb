//! Every program of the kernel object, registered once: how it attaches
//! (its [`Hook`]) and which attach mode it belongs to (its [`Family`]), and
//! which hooks report each event kind in each mode.
//!
//! Why one table: a program that is in the object but not here, or the
//! reverse, fails the load ([`check_registry`]), so a probe cannot be
//! forgotten; and the loader, `status`, `sockmon modes` and the tests all
//! read which family reports a kind from [`KIND_SOURCES`].

use aya::{
    Ebpf,
    programs::{Program, ProgramError},
};
use sockmon_common::kfunc_kinds;

use super::error::LoadError;

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
pub(super) const KIND_SOURCES: [(&str, &str, &str, u64); 7] = [
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
pub(super) struct Signature {
    /// The kernel function.
    pub(super) function: &'static str,
    /// Its leading parameters as C spells them.
    pub(super) params: &'static [&'static str],
    /// Whether it must have exactly these (the hook reads the return value,
    /// which follows the last parameter).
    pub(super) exact: bool,
    /// Its return type.
    pub(super) ret: &'static str,
}

/// How a program attaches.
#[derive(Clone, Copy, Debug)]
pub(super) enum Hook {
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
pub(super) enum Family {
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

pub(super) const BIND_SIG: &[&str] = &["struct socket *", "struct sockaddr *", "int"];
pub(super) const CONNECT_SIG: &[&str] = &["struct sock *", "struct sockaddr *", "int"];

pub(super) const fn fexit(
    function: &'static str,
    params: &'static [&'static str],
    exact: bool,
) -> Hook {
    Hook::FExit(Signature {
        function,
        params,
        exact,
        ret: "int",
    })
}

pub(super) const fn kprobe(function: &'static str, params: &'static [&'static str]) -> Hook {
    Hook::KProbe(Signature {
        function,
        params,
        exact: true,
        ret: "int",
    })
}

/// Every program of the object. A program in the object but not here fails
/// the load (a probe that is never attached is a bug, not a choice).
pub(super) const PROGRAMS: [(&str, Hook, Family); 48] = [
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

/// The source of each event kind's records in a mode (the `syscalls` mode,
/// or not), where kernel-function hooks report the `kfunc` kinds (those of
/// `kprobes` with kprobes).
pub(super) fn kind_sources(syscalls_mode: bool, kfunc: u64, kprobes: u64) -> Vec<KindSource> {
    KIND_SOURCES
        .iter()
        .map(|&(kind, socket, syscalls, bit)| KindSource {
            kind,
            source: if bit & kprobes != 0 {
                "kprobe"
            } else if bit & kfunc != 0 {
                "kfunc"
            } else if syscalls_mode {
                syscalls
            } else {
                socket
            },
        })
        .collect()
}

/// The event kind of a `kfunc_kinds` bit, as `status` names it.
pub(super) fn kind_name(bit: u64) -> &'static str {
    KIND_SOURCES
        .iter()
        .find(|k| k.3 == bit)
        .map_or("?", |k| k.0)
}

/// Every program of the object must be registered in [`PROGRAMS`], and
/// every registered program must be in the object.
pub(super) fn check_registry(ebpf: &Ebpf) -> Result<(), LoadError> {
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

/// The program `name` of the object, as type `T`.
pub(super) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
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

pub(super) fn fail(program: &'static str) -> impl Fn(ProgramError) -> LoadError {
    move |source| LoadError::Program { program, source }
}
