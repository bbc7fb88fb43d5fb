//! sockmon: which process owns this socket? Live and exact, from eBPF.
//!
//! Data flow (see ARCHITECTURE.md): kernel programs → ring buffer →
//! [`kernel::reader`] → [`event::decode`] → [`table::SocketTable`] →
//! [`output`] (text or NDJSON).

#![cfg_attr(
    test,
    expect(
        unused_crate_dependencies,
        reason = "the dev-dependencies serve the integration tests and the benches"
    )
)]

pub mod api;
pub mod cgroup_unit;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod daemon;
pub mod engine;
pub mod escape;
pub mod event;
pub mod filter;
pub mod kernel;
pub mod logging;
pub mod output;
pub mod policy;
pub mod procfs;
pub mod signals;
pub mod snapshot;
pub mod table;
pub mod toml_text;
pub mod top;
pub mod view;
