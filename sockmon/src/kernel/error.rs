//! Why a load failed: one error type for every step of it.

use std::path::PathBuf;

use aya::programs::ProgramError;
use thiserror::Error;

use super::{btf::BtfError, cgroup::CgroupError, tracefs::TracefsError};

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
        "the eBPF object has program `{0}`, which the loader does not know: add it to `PROGRAMS` in kernel/programs.rs"
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
        "SOCKMON_KFUNC_SKIP: `{0}` is not an event kind kernel-function hooks report (bind, listen, connect, accept, udp_implicit_bind)"
    )]
    KfuncSkip(String),
    #[error("left to the socket layer by SOCKMON_KFUNC_SKIP")]
    KfuncSkipped,
    #[error("SOCKMON_KFUNC_VIA={0}: only `fexit` or `kprobe` are hook variants")]
    KfuncVia(String),
    #[error("not tried: SOCKMON_KFUNC_VIA={0}")]
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
