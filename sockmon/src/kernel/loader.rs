//! Loading the kernel programs with this kernel's offsets and attaching them.
//!
//! [`Probes`] owns the loaded object; dropping it detaches every program
//! (links are fd-based, nothing is pinned), so a process that exits, even by
//! a signal, leaves nothing behind in the kernel.

use std::fs::File;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSock, CgroupSockAddr, SockOps, TracePoint},
};
use sockmon_common::{
    COUNTERS_MAP, DEFAULT_PENDING_PER_UID, DEFAULT_RING_BYTES, ENRICH_GLOBAL, EVENTS_MAP,
    KFUNC_KINDS_GLOBAL, KernelCounter, OFFSETS_GLOBAL, PENDING_PER_UID_GLOBAL,
    SYSCALLS_MODE_GLOBAL, WAKEUP_BYTES_GLOBAL, flow::FLOW_OFFSETS_GLOBAL, kfunc_kinds,
};

use super::{
    btf::{self, BtfError},
    cgroup,
    error::LoadError,
    kfunc::{
        GLOBAL_KINDS, KFUNC_KIND_BITS, OPTIONAL_KINDS, Variant, Via, attach_kind, kfunc_skip,
        kfunc_via,
    },
    privileges,
    programs::{
        Family, Hook, KindSource, PROGRAMS, check_registry, fail, kind_name, kind_sources, program,
    },
    tracefs,
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
    /// The most syscalls of one uid in flight at once in the `syscalls`
    /// mode (its share of the shared in-flight map).
    pub pending_per_uid: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
            wakeup_bytes: (DEFAULT_RING_BYTES / 8) as u64,
            attach: AttachMode::Auto,
            enrich: true,
            pending_per_uid: u64::from(DEFAULT_PENDING_PER_UID),
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
            .override_global(PENDING_PER_UID_GLOBAL, &opts.pending_per_uid, true)
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
        kind_sources(self.mode == AttachMode::Syscalls, self.kfunc, self.kprobes)
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
