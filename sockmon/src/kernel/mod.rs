//! Everything that talks to the kernel: privileges, tracefs, BTF offsets,
//! the cgroup v2 root, loading and attaching the programs, and reading the
//! ring buffer.

pub mod btf;
pub mod cgroup;
pub mod loader;
pub mod privileges;
pub mod reader;
pub mod tracefs;

pub use loader::{AttachMode, KindSource, LoadError, LoadOptions, Probes};
