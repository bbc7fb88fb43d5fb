//! Layers 3 and 4: the whole system, as users, services and attackers use
//! it: the `sockmon` binary, real daemons, real sockets and processes, a real
//! systemd, the real Debian package. One binary (one link, one copy of
//! `support`), a module per concern; `tests/kernel/` is a binary of its own
//! (it is run again per attach mode, and inside the guests).
//!
//! The tests run in parallel threads of this one process. Each takes its
//! turn first: `support::shared()` or `support::exclusive()` (the rules are
//! at `support::SCHEDULE`); every socket and pipe a test makes is
//! close-on-exec (std's and socket2's are; raw ones are made so), so no
//! other test's child inherits it.

#![expect(
    unused_crate_dependencies,
    reason = "a test binary links every dependency of the package and uses a few"
)]

#[path = "../support/mod.rs"]
mod support;

mod attribution;
mod cli;
mod clickhouse;
mod daemon;
mod faults;
mod flows;
mod hardening_api;
mod hardening_data;
mod hostile;
mod package;
mod policy;
mod snapshot;
mod systemd;
mod top;
