//! Building events in unit tests (one place, so a new field is added once).

use super::{Comm, Event, EventKind, Family, Proto};
use crate::clock::WallTime;

/// A kernel-style name.
pub fn comm(name: &[u8]) -> Comm {
    let mut raw = [0u8; 16];
    raw[..name.len()].copy_from_slice(name);
    Comm::from_kernel(&raw)
}

/// A successful TCP event of `pid` (thread `pid`, named "thread" in process
/// "proc", started at `pid` seconds after boot) on socket `inode`, in netns 7.
pub fn event(kind: EventKind, inode: u64, pid: u32, src: &str, dst: &str) -> Event {
    let src: std::net::SocketAddr = src.parse().unwrap();
    Event {
        kind,
        time: WallTime(0),
        proto: Proto::Tcp,
        family: if src.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        },
        src,
        dst: dst.parse().unwrap(),
        pid,
        tid: pid,
        uid: 0,
        comm: comm(b"thread"),
        process_comm: comm(b"proc"),
        start_ns: 1_000_000_000 * pid as u64,
        netns: 7,
        inode,
        cgroup_id: 0,
        error: None,
        state: 0,
        flags: 0,
        life: None,
        ctx: None,
        aux: 0,
    }
}
