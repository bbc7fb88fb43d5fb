//! Helper processes that hold real sockets for the attribution tests, and
//! the `ss -tunap` view to compare sockmon's owners with.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, Command, Stdio},
};

/// A python process holding `listen` TCP listeners, `udp` bound UDP
/// sockets and, per listener, one established pair (both ends its own); if
/// `fork`, a child that inherits all of them. Everyone exits when dropped.
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The holder's pid, and its forked child's if any.
    pub pids: Vec<u32>,
    /// `ip:port` of each listener.
    pub listeners: Vec<String>,
}

const SCRIPT: &str = r#"
import os, socket, sys
listen, udp, fork = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
keep = []
for _ in range(listen):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64); keep.append(s)
for _ in range(udp):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); keep.append(u)
for s in keep[:listen]:
    c = socket.create_connection(s.getsockname()); a, _ = s.accept(); keep += [c, a]
child = 0
if fork:
    child = os.fork()
    if child == 0:
        sys.stdin.read(); os._exit(0)
addrs = " ".join("%s:%d" % s.getsockname() for s in keep[:listen])
print("ready", child, addrs, flush=True)
sys.stdin.read()
"#;

impl Holder {
    pub fn start(listen: usize, udp: usize, fork: bool) -> Holder {
        let mut child = Command::new("/usr/bin/python3")
            .args([
                "-c",
                SCRIPT,
                &listen.to_string(),
                &udp.to_string(),
                if fork { "1" } else { "0" },
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut f = line.split_whitespace();
        assert_eq!(f.next(), Some("ready"), "holder said {line:?}");
        let forked: u32 = f.next().unwrap().parse().unwrap();
        let mut pids = vec![child.id()];
        if forked != 0 {
            pids.push(forked);
        }
        Holder {
            pids,
            listeners: f.map(str::to_string).collect(),
            child,
            stdin,
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.pids[1..] {
            // SAFETY: the forked child exits when its stdin closes; make sure.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}

/// A socket as both tools name it: (proto, local, remote) with `*` ports as 0.
pub type Key = (String, String, String);

/// `ss -tunap` (all TCP and UDP sockets with their processes) as key → pids.
pub fn ss_owners() -> BTreeMap<Key, BTreeSet<u32>> {
    let out = Command::new("ss").args(["-tunapH"]).output().expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        let pids: BTreeSet<u32> = line
            .split("pid=")
            .skip(1)
            .filter_map(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .collect();
        map.insert((f[0].to_string(), norm(f[4]), norm(f[5])), pids);
    }
    map
}

/// `ss` writes `0.0.0.0:*`, `[::]:*`, `*:*`; sockmon writes port 0.
fn norm(endpoint: &str) -> String {
    let e = endpoint
        .strip_suffix(":*")
        .map(|h| format!("{h}:0"))
        .unwrap_or_else(|| endpoint.to_string());
    e.replace('%', "_")
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
