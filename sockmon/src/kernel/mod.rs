//! Everything that talks to the kernel: privileges, tracefs, BTF offsets,
//! the cgroup v2 root, loading and attaching the programs, and reading the
//! ring buffer. Inside, one way: `programs` (the registry) and `error`
//! below `kfunc` (kernel-function hooks), below `loader` (the modes).

pub mod btf;
pub mod cgroup;
mod error;
mod kfunc;
pub mod loader;
pub mod privileges;
mod programs;
pub mod reader;
pub mod tracefs;

pub use error::LoadError;
pub use kfunc::{KFUNC_SKIP_ENV, KFUNC_VIA_ENV, Variant};
pub use loader::{AttachMode, LoadOptions, Probes};
pub use programs::KindSource;
