//! Layer 2: real-kernel tests. They load the real programs into the running
//! kernel (root required), make real sockets and assert exact pids, tids,
//! addresses, ports and inodes. One module per hook family.

#![expect(
    unused_crate_dependencies,
    reason = "a test binary links every dependency of the package and uses a few"
)]

mod accept;
mod bind_listen;
mod close;
mod connect;
mod flows;
mod harness;
mod ipv6;
mod modes;
mod netns;
mod outcomes;
mod process;
mod shared;
mod sys;
mod udp;
