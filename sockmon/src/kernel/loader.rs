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
        BtfTracePoint, CgroupAttachMode, CgroupSock, CgroupSockAddr, Program, ProgramError,
        SockOps, TracePoint,
    },
};
use sockmon_common::{
    COUNTERS_MAP, DEFAULT_RING_BYTES, ENRICH_GLOBAL, EVENTS_MAP, KernelCounter, OFFSETS_GLOBAL,
    SYSCALLS_MODE_GLOBAL, WAKEUP_BYTES_GLOBAL, flow::FLOW_OFFSETS_GLOBAL,
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
    /// The best mode this kernel allows, found by trying: `socket`, else `syscalls`.
    #[default]
    Auto,
    /// Socket-layer hooks (cgroup `post_bind`, `sock_ops`, `getpeername`,
    /// `connect`): no tax on unrelated syscalls.
    Socket,
    /// Syscall tracepoints (every syscall of the machine takes the tracing
    /// slow path), plus the socket-layer hooks for what never enters those
    /// syscalls (io_uring, TCP Fast Open).
    Syscalls,
}

impl AttachMode {
    pub const ALL: [AttachMode; 3] = [Self::Auto, Self::Socket, Self::Syscalls];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
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
    /// `socket` or `syscalls`.
    pub source: &'static str,
}

/// How a kind is hooked in each concrete mode: (kind, in `socket`, in `syscalls`).
const KIND_SOURCES: [(&str, &str, &str); 7] = [
    ("bind", "socket", "syscalls"),
    ("listen", "socket", "syscalls"),
    ("connect", "socket", "syscalls"),
    ("connect_result", "socket", "socket"),
    ("accept", "socket", "syscalls"),
    ("close", "socket", "socket"),
    ("udp_implicit_bind", "socket", "socket"),
];

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
}

/// Which modes attach a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// Attached in every mode.
    Common,
    /// Only in the `syscalls` mode.
    Syscalls,
    /// In every mode: in `syscalls` it reports only what bypasses the syscalls.
    SocketLayer,
}

/// Every program of the object. A program in the object but not here fails
/// the load (a probe that is never attached is a bug, not a choice).
const PROGRAMS: [(&str, Hook, Family); 22] = [
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
    ("udp_sendmsg4", Hook::CgroupSockAddr, Family::Common),
    ("udp_sendmsg6", Hook::CgroupSockAddr, Family::Common),
    ("post_bind4", Hook::CgroupSock, Family::SocketLayer),
    ("post_bind6", Hook::CgroupSock, Family::SocketLayer),
    ("sock_ops", Hook::SockOps, Family::SocketLayer),
    (
        "accept_getpeername4",
        Hook::CgroupSockAddr,
        Family::SocketLayer,
    ),
    (
        "accept_getpeername6",
        Hook::CgroupSockAddr,
        Family::SocketLayer,
    ),
    ("udp_connect4", Hook::CgroupSockAddr, Family::SocketLayer),
    ("udp_connect6", Hook::CgroupSockAddr, Family::SocketLayer),
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
    /// Why `auto` did not choose `socket`, when it fell back.
    fallback: Option<String>,
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
        match opts.attach {
            AttachMode::Auto => match Self::load_mode(&opts, AttachMode::Socket, btf) {
                Ok(p) => Ok(p),
                Err(e) if !e.is_privileges() => {
                    let mut p =
                        Self::load_mode(&opts, AttachMode::Syscalls, btf).map_err(|e2| {
                            LoadError::ModeUnavailable {
                                mode: "auto",
                                reason: format!("socket: {e}; syscalls: {e2}"),
                            }
                        })?;
                    p.fallback = Some(e.to_string());
                    Ok(p)
                }
                Err(e) => Err(e),
            },
            mode => Self::load_mode(&opts, mode, btf),
        }
    }

    fn load_mode(
        opts: &LoadOptions,
        mode: AttachMode,
        (btf, aya_btf): (&btf::Layout, &Btf),
    ) -> Result<Self, LoadError> {
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
            .map_max_entries(EVENTS_MAP, opts.ring_bytes)
            .load(OBJECT)?;
        check_registry(&ebpf)?;
        attach_mode(&mut ebpf, mode, aya_btf).map_err(|e| match e {
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
            mode,
            fallback: None,
        })
    }

    /// The concrete mode loaded (`socket` or `syscalls`, never `auto`).
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Why `auto` fell back from `socket`, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The source of each event kind's records in the loaded mode.
    pub fn kind_sources(&self) -> Vec<KindSource> {
        kind_sources(self.mode)
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

/// The source of each event kind's records in `mode` (`auto` as `socket`).
pub fn kind_sources(mode: AttachMode) -> Vec<KindSource> {
    KIND_SOURCES
        .iter()
        .map(|&(kind, socket, syscalls)| KindSource {
            kind,
            source: if mode == AttachMode::Syscalls {
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

/// Loads and attaches the programs of `mode`; the others stay unloaded on purpose.
fn attach_mode(ebpf: &mut Ebpf, mode: AttachMode, btf: &Btf) -> Result<(), LoadError> {
    let wanted = |f: Family| f != Family::Syscalls || mode == AttachMode::Syscalls;
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
        }
    }
    Ok(())
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
