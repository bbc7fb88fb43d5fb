//! The daemon's local API (docs/api.md): wire protocol, access rule, server,
//! and the blocking client the CLI uses.

pub mod access;
pub mod client;
pub mod counters;
pub mod protocol;
pub mod server;
