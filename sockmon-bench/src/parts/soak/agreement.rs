//! The soak's last phase, with the server still up: the daemon's table
//! held against the kernel (`ss -tunap`). The listener's and receiver's
//! owners in both views, anything left on their ports, table entries the
//! kernel no longer has and kernel sockets the table lacks. Listings and
//! `ss` runs alternate, [`GAP`] apart, so a socket that came or went in
//! between is not counted against either.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, thread,
    time::Duration,
};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use sockmon_testkit::ss::{self, Socket};

use super::KEEP;
use crate::api::Api;

/// Between the listings and `ss` runs of the final comparison: anything a
/// listing shows that `ss` does not (or the reverse) had this long to reach
/// the table.
const GAP: Duration = Duration::from_millis(300);

/// The end-of-run comparison of the table with `ss -tunap`.
#[derive(Debug, Default, Serialize)]
pub struct Agreement {
    pub server_pid: u32,
    pub listener: Owners,
    pub receiver: Owners,
    /// Table entries on the listener's (TCP) or receiver's (UDP) port
    /// other than those two.
    pub leftover_table: Found,
    /// The same in `ss -tunap`.
    pub leftover_ss: Found,
    /// Table entries (this network namespace) the kernel no longer has: in
    /// two listings, and not in an `ss` taken between them.
    pub stale: Found,
    /// Kernel sockets in two `ss` runs and not in a listing between them.
    pub untracked: Found,
    /// Sockets in both whose owner pids differ (where `ss` names any).
    pub owners_differ: Found,
    /// Sockets in both the table and `ss`.
    pub compared: usize,
}

impl Agreement {
    /// The target: both long-lived sockets owned by the server in both
    /// views, nothing left on their ports, no stale entry.
    pub fn met(&self) -> bool {
        let server = vec![self.server_pid];
        self.listener.table == server
            && self.listener.ss == server
            && self.receiver.table == server
            && self.receiver.ss == server
            && self.leftover_table.count == 0
            && self.leftover_ss.count == 0
            && self.stale.count == 0
    }
}

/// Owner pids of one socket, as the table and as `ss` see them.
#[derive(Debug, Default, Serialize)]
pub struct Owners {
    pub table: Vec<u32>,
    pub ss: Vec<u32>,
}

/// How many, and a few of them described.
#[derive(Debug, Default, Serialize)]
pub struct Found {
    pub count: usize,
    pub sample: Vec<String>,
}

impl Found {
    pub fn of(items: impl IntoIterator<Item = String>) -> Self {
        let mut f = Self::default();
        for s in items {
            if f.sample.len() < KEEP {
                f.sample.push(s);
            }
            f.count += 1;
        }
        f
    }
}

/// A table entry, as far as the comparison needs it.
#[derive(Clone, Debug, PartialEq)]
struct TableSock {
    proto: String,
    src_port: u16,
    dst_port: u16,
    state: String,
    inode: u64,
    netns: u64,
    pids: Vec<u32>,
    desc: String,
}

fn table_sock(v: &Value) -> Option<TableSock> {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let port = |k: &str| v[k].as_u64().and_then(|p| u16::try_from(p).ok());
    let mut pids: Vec<u32> = v["owners"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|o| u32::try_from(o["pid"].as_u64()?).ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids.dedup();
    let (src_port, dst_port) = (port("src_port")?, port("dst_port")?);
    let inode = v["inode"].as_u64()?;
    Some(TableSock {
        desc: format!(
            "{} {}:{src_port} → {}:{dst_port} {} inode {inode} owners {pids:?}",
            s("proto"),
            s("src_ip"),
            s("dst_ip"),
            s("state")
        ),
        proto: s("proto"),
        state: s("state"),
        netns: v["netns"].as_u64()?,
        src_port,
        dst_port,
        inode,
        pids,
    })
}

/// The table's sockets in this network namespace (the one `ss` shows).
fn table(api: &Api, netns: u64) -> anyhow::Result<Vec<TableSock>> {
    Ok(api
        .list()?
        .iter()
        .filter_map(table_sock)
        .filter(|s| s.netns == netns)
        .collect())
}

/// The inode of this process's network namespace.
fn own_netns() -> anyhow::Result<u64> {
    let link = fs::read_link("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
    let s = link.to_string_lossy();
    s.strip_prefix("net:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected network namespace link {s:?}"))
}

/// Compares the table with the kernel (`ss -tunap`), the server still up.
pub(super) fn agree(api: &Api, server_pid: u32, port: u16, udp_port: u16) -> anyhow::Result<Agreement> {
    let netns = own_netns()?;
    let list1 = table(api, netns)?;
    thread::sleep(GAP);
    let ss1 = ss::sockets()?;
    thread::sleep(GAP);
    let list2 = table(api, netns)?;
    let ss2 = ss::sockets()?;
    Ok(compare(
        server_pid, port, udp_port, &list1, &ss1, &list2, &ss2,
    ))
}

/// The comparison itself (pure). `list1`, `ss1`, `list2`, `ss2` were taken
/// in that order, [`GAP`] apart.
fn compare(
    server_pid: u32,
    port: u16,
    udp_port: u16,
    list1: &[TableSock],
    ss1: &[Socket],
    list2: &[TableSock],
    ss2: &[Socket],
) -> Agreement {
    let on = |p: u16, a: u16, b: u16| a == p || b == p;
    let is_listener = |s: &TableSock| s.proto == "tcp" && s.state == "listen" && s.src_port == port;
    let is_receiver = |s: &TableSock| s.proto == "udp" && s.src_port == udp_port && s.dst_port == 0;
    let ss_listener =
        |s: &Socket| s.proto == "tcp" && s.state == "LISTEN" && s.local_port() == Some(port);
    let ss_receiver =
        |s: &Socket| s.proto == "udp" && s.local_port() == Some(udp_port) && s.peer_port().is_none();
    let table_pids = |f: &dyn Fn(&TableSock) -> bool| -> Vec<u32> {
        let set: BTreeSet<u32> = list2
            .iter()
            .filter(|s| f(s))
            .flat_map(|s| s.pids.clone())
            .collect();
        set.into_iter().collect()
    };
    let ss_pids = |f: &dyn Fn(&Socket) -> bool| -> Vec<u32> {
        let set: BTreeSet<u32> = ss2
            .iter()
            .filter(|s| f(s))
            .flat_map(|s| s.pids.clone())
            .collect();
        set.into_iter().collect()
    };
    let leftover_table = Found::of(
        list2
            .iter()
            .filter(|s| {
                let tcp = s.proto == "tcp" && on(port, s.src_port, s.dst_port) && !is_listener(s);
                let udp =
                    s.proto == "udp" && on(udp_port, s.src_port, s.dst_port) && !is_receiver(s);
                tcp || udp
            })
            .map(|s| s.desc.clone()),
    );
    // Sockets the kernel keeps after the last descriptor went (FIN-WAIT-2,
    // TIME-WAIT: inode 0, no process) belong to nobody: sockmon rightly has
    // no owner to show for them, so they are not leftovers.
    let leftover_ss = Found::of(
        ss2.iter()
            .filter(|s| s.inode != 0)
            .filter(|s| {
                let at = |p| s.local_port() == Some(p) || s.peer_port() == Some(p);
                let tcp = s.proto == "tcp" && at(port) && !ss_listener(s);
                let udp = s.proto == "udp" && at(udp_port) && !ss_receiver(s);
                tcp || udp
            })
            .map(Socket::describe),
    );
    let inodes_ss =
        |v: &[Socket]| -> BTreeSet<u64> { v.iter().map(|s| s.inode).filter(|i| *i != 0).collect() };
    let (in_ss1, in_ss2) = (inodes_ss(ss1), inodes_ss(ss2));
    let in_list1: BTreeSet<u64> = list1.iter().map(|s| s.inode).collect();
    let in_list2: BTreeSet<u64> = list2.iter().map(|s| s.inode).collect();
    let stale = Found::of(
        list2
            .iter()
            .filter(|s| in_list1.contains(&s.inode) && !in_ss1.contains(&s.inode))
            .map(|s| s.desc.clone()),
    );
    let untracked = Found::of(
        ss1.iter()
            .filter(|s| s.inode != 0 && in_ss2.contains(&s.inode) && !in_list2.contains(&s.inode))
            .map(Socket::describe),
    );
    let by_inode: BTreeMap<u64, &Socket> = ss2
        .iter()
        .filter(|s| s.inode != 0)
        .map(|s| (s.inode, s))
        .collect();
    let both: Vec<(&TableSock, &Socket)> = list2
        .iter()
        .filter_map(|t| Some((t, *by_inode.get(&t.inode)?)))
        .collect();
    let owners_differ = Found::of(
        both.iter()
            .filter(|(t, s)| !s.pids.is_empty() && t.pids != s.pids)
            .map(|(t, s)| format!("{} (ss: pids {:?})", t.desc, s.pids)),
    );
    Agreement {
        server_pid,
        listener: Owners {
            table: table_pids(&is_listener),
            ss: ss_pids(&ss_listener),
        },
        receiver: Owners {
            table: table_pids(&is_receiver),
            ss: ss_pids(&ss_receiver),
        },
        leftover_table,
        leftover_ss,
        stale,
        untracked,
        owners_differ,
        compared: both.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries_are_parsed() {
        let v: Value = serde_json::from_str(
            r#"{"proto":"tcp","family":"ipv4","src_ip":"0.0.0.0","src_port":8080,"dst_ip":"0.0.0.0","dst_port":0,
            "state":"listen","inode":123456,"netns":4026531840,
            "owners":[{"pid":412,"tid":412},{"pid":12,"tid":13},{"pid":412,"tid":414}]}"#,
        )
        .unwrap();
        let t = table_sock(&v).unwrap();
        assert_eq!((t.src_port, t.dst_port, t.inode), (8080, 0, 123456));
        assert_eq!(t.pids, vec![12, 412]);
        assert_eq!((t.state.as_str(), t.netns), ("listen", 4026531840));
        assert!(table_sock(&serde_json::json!({"proto":"tcp"})).is_none());
    }

    fn tsock(proto: &str, src: u16, dst: u16, state: &str, inode: u64, pids: &[u32]) -> TableSock {
        TableSock {
            proto: proto.into(),
            src_port: src,
            dst_port: dst,
            state: state.into(),
            inode,
            netns: 1,
            pids: pids.to_vec(),
            desc: format!("{proto} {src}->{dst} {inode}"),
        }
    }

    fn ssock(
        proto: &str,
        state: &str,
        local: u16,
        peer: Option<u16>,
        inode: u64,
        pids: &[u32],
    ) -> Socket {
        Socket {
            proto: proto.into(),
            state: state.into(),
            local: format!("127.0.0.1:{local}"),
            peer: peer.map_or("0.0.0.0:*".into(), |p| format!("127.0.0.1:{p}")),
            inode,
            pids: pids.to_vec(),
        }
    }

    #[test]
    fn comparison_finds_leftovers_and_stale_entries() {
        let listener = tsock("tcp", 8080, 0, "listen", 1, &[10]);
        let receiver = tsock("udp", 9090, 0, "bound", 2, &[10]);
        let ss_l = ssock("tcp", "LISTEN", 8080, None, 1, &[10]);
        let ss_r = ssock("udp", "UNCONN", 9090, None, 2, &[10]);
        let clean = compare(
            10,
            8080,
            9090,
            &[listener.clone(), receiver.clone()],
            &[ss_l.clone(), ss_r.clone()],
            &[listener.clone(), receiver.clone()],
            &[ss_l.clone(), ss_r.clone()],
        );
        assert!(clean.met(), "{clean:?}");
        assert_eq!(clean.compared, 2);

        // A churn connection left in the table, a stale UDP socket (closed
        // in the kernel, still listed twice), a kernel socket the table
        // lacks, and a TIME-WAIT on the listener's port (nobody's: inode 0,
        // no process, so not a leftover).
        let left = tsock("tcp", 40000, 8080, "connected", 3, &[]);
        let stale_udp = tsock("udp", 45000, 0, "bound", 4, &[]);
        let mine = ssock("tcp", "ESTAB", 5000, Some(6000), 5, &[77]);
        let tw = ssock("tcp", "TIME-WAIT", 40001, Some(8080), 0, &[]);
        let list = [listener, receiver, left, stale_udp];
        let kernel = [ss_l, ss_r, mine, tw];
        let a = compare(10, 8080, 9090, &list, &kernel, &list, &kernel);
        assert!(!a.met());
        assert_eq!(a.leftover_table.count, 1);
        assert_eq!(a.leftover_ss.count, 0);
        assert_eq!(a.stale.count, 2, "{a:?}");
        assert_eq!(a.untracked.count, 1);
        assert_eq!(a.listener.table, vec![10]);

        // Owners that differ.
        let t = [tsock("tcp", 8080, 0, "listen", 1, &[10, 11])];
        let s = [ssock("tcp", "LISTEN", 8080, None, 1, &[10])];
        let o = compare(10, 8080, 9090, &t, &s, &t, &s);
        assert_eq!(o.owners_differ.count, 1);
        assert!(!o.met());
    }
}

