//! TEMPORARY stand-in for `snapshot/` while it is being written; removed when it lands.
use std::{collections::HashMap, net::SocketAddr, time::Duration};

use crate::event::{Comm, Family, Proto};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockRow {
    pub netns: u32,
    pub inode: u64,
    pub proto: Proto,
    pub family: Family,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub state: u8,
    pub uid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcRow {
    pub pid: u32,
    pub comm: Comm,
    pub uid: u32,
    pub start_ticks: u64,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub sockets: Vec<SockRow>,
    pub holders: HashMap<u64, Vec<u32>>,
    pub processes: HashMap<u32, ProcRow>,
    pub duration: Duration,
    pub skipped_netns: Vec<(u32, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not yet")]
    NotYet,
}

pub fn take() -> Result<Snapshot, SnapshotError> {
    Ok(Snapshot::default())
}
