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
        TracePoint,
    },
};
use sockmon_common::{
    COUNTERS_MAP, DEFAULT_RING_BYTES, EVENTS_MAP, KernelCounter, OFFSETS_GLOBAL,
    WAKEUP_BYTES_GLOBAL, flow::FLOW_OFFSETS_GLOBAL,
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

/// Every tracepoint program: (category, tracepoint = program name).
pub const TRACEPOINTS: [(&str, &str); 10] = [
    ("syscalls", "sys_enter_bind"),
    ("syscalls", "sys_exit_bind"),
    ("syscalls", "sys_enter_listen"),
    ("syscalls", "sys_exit_listen"),
    ("syscalls", "sys_enter_connect"),
    ("syscalls", "sys_exit_connect"),
    ("syscalls", "sys_exit_accept"),
    ("syscalls", "sys_exit_accept4"),
    ("sched", "sched_process_exec"),
    ("sched", "sched_process_exit"),
];
/// BTF tracepoints: (tracepoint, program name).
pub const BTF_TRACEPOINTS: [(&str, &str); 2] = [
    ("sched_process_fork", "sched_process_fork"),
    ("inet_sock_set_state", "inet_sock_set_state"),
];
/// The cgroup program that reports a socket's end.
pub const RELEASE_PROGRAM: &str = "sock_release";
/// The cgroup programs that report a UDP socket's implicit bind.
pub const SENDMSG_PROGRAMS: [&str; 2] = ["udp_sendmsg4", "udp_sendmsg6"];

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
    #[error("map `{0}` is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
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
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
            wakeup_bytes: (DEFAULT_RING_BYTES / 8) as u64,
        }
    }
}

/// The loaded, attached programs.
pub struct Probes {
    ebpf: Ebpf,
    _logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    counters: PerCpuArray<MapData, u64>,
}

impl Probes {
    /// Checks privileges, resolves offsets, loads and attaches everything.
    pub fn load(opts: LoadOptions) -> Result<Self, LoadError> {
        let missing = privileges::missing(privileges::effective(), &privileges::REQUIRED);
        if !missing.is_empty() {
            return Err(LoadError::Privileges(privileges::explain(&missing)));
        }
        raise_memlock_limit();
        let tracefs = tracefs::ensure_mounted()?;
        let offsets = btf::resolve(btf::VMLINUX_BTF, &tracefs)?;
        let flow_offsets = btf::resolve_flow(btf::VMLINUX_BTF, &tracefs)?; // flows (issue 13)
        let mut ebpf = EbpfLoader::new()
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .override_global(FLOW_OFFSETS_GLOBAL, &flow_offsets, true) // flows (issue 13)
            .override_global(WAKEUP_BYTES_GLOBAL, &opts.wakeup_bytes, true)
            .map_max_entries(EVENTS_MAP, opts.ring_bytes)
            .load(OBJECT)?;
        // Programs log only at debug level; without log statements the object
        // has no log map and there is nothing to forward.
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
        attach_all(&mut ebpf)?;
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
            _logger: logger,
            counters,
        })
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

/// Loads and attaches every program of the object.
fn attach_all(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    for (category, name) in TRACEPOINTS {
        let tp: &mut TracePoint = program(ebpf, name)?;
        tp.load().map_err(fail(name))?;
        tp.attach(category, name).map_err(fail(name))?;
    }
    let btf = Btf::from_sys_fs().map_err(|e| BtfError::Open {
        path: btf::VMLINUX_BTF.to_string(),
        reason: e.to_string(),
    })?;
    for (tracepoint, name) in BTF_TRACEPOINTS {
        let tp: &mut BtfTracePoint = program(ebpf, name)?;
        tp.load(tracepoint, &btf).map_err(fail(name))?;
        tp.attach().map_err(fail(name))?;
    }
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
    let release: &mut CgroupSock = program(ebpf, RELEASE_PROGRAM)?;
    release.load().map_err(fail(RELEASE_PROGRAM))?;
    release
        .attach(open()?, CgroupAttachMode::Single)
        .map_err(fail(RELEASE_PROGRAM))?;
    for name in SENDMSG_PROGRAMS {
        let p: &mut CgroupSockAddr = program(ebpf, name)?;
        p.load().map_err(fail(name))?;
        p.attach(open()?, CgroupAttachMode::Single)
            .map_err(fail(name))?;
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
