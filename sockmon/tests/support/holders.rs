//! Helper processes that hold real sockets for the attribution tests, and
//! the `ss -tunap` view to compare sockmon's owners with.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

pub use sockmon_testkit::ss::Key;
use sockmon_testkit::{holder::Python, ss};

/// A python process holding `listen` TCP listeners, `udp` bound UDP
/// sockets and, per listener, one established pair (both ends its own); if
/// `fork`, a child that inherits all of them. Everyone exits when dropped.
/// The bench's holder (`sockmon-testkit`), one for both.
pub type Holder = Python;

/// Starts a [`Holder`] and waits until every socket is open.
pub fn hold(listen: usize, udp: usize, fork: bool) -> Holder {
    Python::start(listen, udp, fork).expect("the python socket holder")
}

/// `ss -tunape` (all TCP and UDP sockets with their processes) as key →
/// pids, through the one `ss` parser (`sockmon-testkit`).
pub fn ss_owners() -> BTreeMap<Key, BTreeSet<u32>> {
    ss::owners(&ss::sockets().expect("ss"))
}

/// `sockmon ls --json` lines as key → owner pids.
pub fn ls_owners(json_lines: &str) -> BTreeMap<Key, BTreeSet<u32>> {
    let mut map = BTreeMap::new();
    for line in json_lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ep = |ip: &serde_json::Value, port: &serde_json::Value| {
            let ip = ip.as_str().unwrap();
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        };
        let pids = v["owners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["pid"].as_u64().unwrap() as u32)
            .collect();
        let key = (
            v["proto"].as_str().unwrap().to_string(),
            ep(&v["src_ip"], &v["src_port"]),
            ep(&v["dst_ip"], &v["dst_port"]),
        );
        map.insert(key, pids);
    }
    map
}

/// Both views restricted to sockets owned by any of `pids`; asserts they name
/// the same owners (pids among `pids`) for every such socket.
pub fn assert_agree(
    ss: &BTreeMap<Key, BTreeSet<u32>>,
    ls: &BTreeMap<Key, BTreeSet<u32>>,
    pids: &BTreeSet<u32>,
) -> usize {
    let mine = |m: &BTreeMap<Key, BTreeSet<u32>>| -> BTreeMap<Key, BTreeSet<u32>> {
        m.iter()
            .filter(|(_, p)| !p.is_disjoint(pids))
            .map(|(k, p)| (k.clone(), p.intersection(pids).copied().collect()))
            .collect()
    };
    let (a, b) = (mine(ss), mine(ls));
    let only_ss: Vec<_> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).collect();
    let only_ls: Vec<_> = b.iter().filter(|(k, v)| a.get(*k) != Some(v)).collect();
    assert!(
        only_ss.is_empty() && only_ls.is_empty(),
        "ss and sockmon disagree:\n  ss says: {only_ss:?}\n  sockmon says: {only_ls:?}"
    );
    a.len()
}

/// The daemon at `socket` and `ss -tunap` agree on the owners of every socket
/// held by `holders`; returns how many sockets were compared.
pub fn assert_daemon_agrees(socket: &std::path::Path, holders: &[Holder]) -> usize {
    let pids: BTreeSet<u32> = holders
        .iter()
        .flat_map(|h| h.pids.iter().copied())
        .collect();
    let out = Command::new(super::bin())
        .arg("--socket")
        .arg(socket)
        .args(["ls", "--json"])
        .output()
        .expect("sockmon ls");
    assert_agree(
        &ss_owners(),
        &ls_owners(&String::from_utf8_lossy(&out.stdout)),
        &pids,
    )
}
