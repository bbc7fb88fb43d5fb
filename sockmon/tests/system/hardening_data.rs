//! Layer 4, hardening (issue 12): attacks on the data the real daemon keeps,
//! run against the real daemon (root) by unprivileged processes.
//!
//! - Forged sock_diag replies: a user namespace (`unshare -Urn` as nobody)
//!   whose process watches for the daemon's sock_diag socket in its
//!   namespace (`/proc/net/netlink`) and, while the daemon snapshots it,
//!   unicasts forged replies for every sequence number: a fake tuple for a
//!   real socket's inode (would re-key the real entry), tens of thousands of
//!   fake sockets (would flood the table into evicting real entries), and
//!   enough of them to keep the dump from ever ending (would stall the
//!   start-up and every later re-snapshot).
//! - Fork amplification: real forks at a lowered `--max-owners`.
//! - One user filling the shared in-flight map (`syscalls` mode): nobody's
//!   threads blocked in `connect()` at a lowered `--pending-per-user`; the
//!   excess is that user's own loss, counted exactly, and root's connects
//!   and, once the threads are gone, nobody's own are reported again.
//!
//! Needs util-linux (`unshare`, `setpriv`) and python3.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use crate::support::{
    Daemon, bin, eventually_within, exclusive, listen_backlog_0, read_json_line, request_on,
    shared, syn_sent_to,
};

/// The fake sockets' addresses: 10.66.0.0/16, which nothing else uses.
const FAKE_PREFIX: &str = "10.66.";
/// Fake inodes start here (above what a test machine reaches).
const FAKE_INODE_BASE: u64 = 0xF000_0000;

const FORGER: &str = r#"
import os, socket, struct, sys, threading, time, resource

victim_inode, want, marker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want + 64), hard))
# Real sockets make the daemon's dump of this namespace take a while (tens
# of milliseconds), long enough for a poll of /proc/net/netlink to see it.
keep = []
for _ in range(min(want, hard - 64)):
    s = socket.socket(); s.bind(("0.0.0.0", 0)); s.listen(1); keep.append(s)
NETLINK_SOCK_DIAG = 4
nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
nl.bind((0, 0))
me = nl.getsockname()[0]
stats = {"attempts": 0, "delivered": 0, "refused": 0, "seen": 0}

def row(seq, inode, a, b, sport, dport):
    hdr = struct.pack("=IHHII", 16 + 72, 20, 2, seq, me)  # NLM_F_MULTI
    src = bytes([10, 66, a, b]) + bytes(12)
    dst = bytes([10, 66, b, a]) + bytes(12)
    msg = struct.pack("=BBBB", 2, 10, 0, 0) + struct.pack(">HH", sport, dport)
    msg += src + dst + struct.pack("=I", 0) + bytes(8)
    msg += struct.pack("=IIIII", 0, 0, 0, 0, inode)
    return hdr + msg

def datagram(first):
    out = b""
    for seq in range(1, 5):
        out += row(seq, victim_inode, 0, 1, 1, 2)
        for i in range(140):
            n = first + i
            out += row(seq, 0xF0000000 + n, (n >> 8) & 255, n & 255, 1000 + n % 50000, 7)
    return out

ours = {}

def is_our_daemon(portid):
    # Only the test's own daemon (its first netlink socket in this namespace
    # has its pid as port id): other daemons on the machine are not attacked.
    if portid not in ours:
        try:
            with open("/proc/%d/cmdline" % portid, "rb") as f:
                ours[portid] = marker in f.read()
        except OSError:
            ours[portid] = False
    return ours[portid]

def targets():
    found = []
    with open("/proc/net/netlink") as f:
        next(f)
        for line in f:
            c = line.split()
            if int(c[1]) == NETLINK_SOCK_DIAG and int(c[2]) not in (0, me) and is_our_daemon(int(c[2])):
                found.append(int(c[2]))
    return found

def report():
    for _ in sys.stdin:
        print(" ".join("%s=%d" % kv for kv in sorted(stats.items())), flush=True)

threading.Thread(target=report, daemon=True).start()
print("ready", len(keep), flush=True)
n = 0
while True:
    t = targets()
    if not t:
        time.sleep(0.0005)
        continue
    stats["seen"] += 1
    for _ in range(200):
        for portid in t:
            stats["attempts"] += 1
            try:
                nl.sendto(datagram(n), (portid, 0))
                stats["delivered"] += 1
            except OSError:
                stats["refused"] += 1
            n = (n + 140) % 60000
"#;

/// The forging process in its own user and network namespace.
struct Forger {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// How many real listeners it holds in its namespace.
    listeners: usize,
}

impl Forger {
    /// Attacks the daemon whose command line contains `marker`.
    fn start(victim_inode: u64, marker: &str) -> Forger {
        let mut child = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "unshare",
                "-Urn",
                "/usr/bin/python3",
                "-c",
                FORGER,
                &victim_inode.to_string(),
                "5000",
                marker,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv unshare python3");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let listeners = match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["ready", n] => n.parse().unwrap(),
            _ => panic!("the forger said {line:?}"),
        };
        assert!(listeners >= 1000, "only {listeners} listeners");
        Forger {
            child,
            stdin,
            stdout,
            listeners,
        }
    }

    fn netns(&self) -> u32 {
        std::fs::metadata(format!("/proc/{}/ns/net", self.child.id()))
            .unwrap()
            .ino() as u32
    }

    /// `attempts`, `delivered`, `refused`, `seen` (times it saw the
    /// daemon's sock_diag socket in its namespace).
    fn stats(&mut self) -> std::collections::BTreeMap<String, u64> {
        self.stdin.write_all(b"report\n").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect()
    }
}

impl Drop for Forger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `list` with a filter (JSON object).
fn list_where(d: &Daemon, filter: &str) -> Vec<serde_json::Value> {
    let r = d.request(&format!(r#"{{"op":"list","filter":{filter}}}"#));
    assert_eq!(r["ok"], true, "{r}");
    r["sockets"].as_array().unwrap().clone()
}

fn status(d: &Daemon) -> serde_json::Value {
    let r = d.request(r#"{"op":"status"}"#);
    assert_eq!(r["ok"], true, "{r}");
    r["status"].clone()
}

/// How many sockets a daemon starting now would load (a one-off snapshot).
fn sockets_now() -> usize {
    let out = Command::new(bin())
        .args(["--no-daemon", "ls", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// A listener that no process the daemon has seen act on holds: created by
/// a python process that hands it over SCM_RIGHTS to a second one and
/// exits. The daemon's table then has it without owners, which makes the
/// daemon re-snapshot (every 30 s while such sockets exist). Returns the
/// keeper, the listener's inode and port.
fn ownerless_listener() -> (Child, u64, u16) {
    let dir = std::env::temp_dir().join(format!("sockmon-hd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pass.sock");
    let _ = std::fs::remove_file(&path);
    let keeper_src = format!(
        "import os, socket, sys\n\
         u = socket.socket(socket.AF_UNIX); u.bind({path:?}); u.listen(1)\n\
         print('listening', flush=True)\n\
         c, _ = u.accept()\n\
         msg, fds, _, _ = socket.recv_fds(c, 16, 1)\n\
         s = socket.socket(fileno=fds[0])\n\
         print(os.fstat(s.fileno()).st_ino, s.getsockname()[1], flush=True)\n\
         sys.stdin.read()\n",
        path = path.to_str().unwrap()
    );
    let mut keeper = Command::new("/usr/bin/python3")
        .args(["-c", &keeper_src])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(keeper.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    let giver_src = format!(
        "import socket\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n\
         u = socket.socket(socket.AF_UNIX); u.connect({path:?})\n\
         socket.send_fds(u, [b'x'], [s.fileno()])\n",
        path = path.to_str().unwrap()
    );
    let st = Command::new("/usr/bin/python3")
        .args(["-c", &giver_src])
        .status()
        .unwrap();
    assert!(st.success());
    line.clear();
    out.read_line(&mut line).unwrap();
    let (inode, port) = line.trim().split_once(' ').unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (keeper, inode.parse().unwrap(), port.parse().unwrap())
}

#[test]
fn forged_sock_diag_replies_from_a_user_namespace_change_nothing() {
    let _turn = shared();
    // The real socket whose inode the forger names with a fake tuple.
    let victim = TcpListener::bind("127.0.0.1:0").unwrap();
    let victim_port = victim.local_addr().unwrap().port();
    // SAFETY: `stat` is plain old data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of our own live descriptor into a zeroed buffer.
    assert_eq!(unsafe { libc::fstat(victim.as_raw_fd(), &mut st) }, 0);
    let victim_inode = st.st_ino;
    let host_netns = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;

    // Daemon::start names its directory sockmon-test-NAME-PID.
    let marker = format!("sockmon-test-forged-{}", std::process::id());
    let mut forger = Forger::start(victim_inode, &marker);
    let forger_netns = forger.netns();
    // A cap the real sockets fit in with room to spare, which tens of
    // thousands of fake rows would overflow.
    let cap = sockets_now() + 20_000;
    let d = Daemon::start("forged", &["--no-config", "--table-cap", &cap.to_string()]);
    let (mut keeper, ownerless, ownerless_port) = ownerless_listener();

    // The start-up snapshot read the forger's namespace while it forged.
    let want = forger.listeners;
    let summary = |socks: &[serde_json::Value]| {
        let listeners = socks
            .iter()
            .filter(|s| s["netns"] == forger_netns && s["state"] == "listen")
            .count();
        let fakes = socks
            .iter()
            .filter(|s| s["src_ip"].as_str().unwrap().starts_with(FAKE_PREFIX))
            .count();
        let victim: Vec<String> = socks
            .iter()
            .filter(|s| s["inode"] == victim_inode)
            .map(|s| format!("{}:{} netns {}", s["src_ip"], s["src_port"], s["netns"]))
            .collect();
        (listeners, fakes, victim)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Filtered lists (the machine may hold many other sockets): the
        // forger's own, every fake (all have port 7), the victim's tuple and
        // the fake one it would be moved to.
        let mut socks = list_where(&d, &format!(r#"{{"pid":[{}]}}"#, forger.child.id()));
        socks.extend(list_where(
            &d,
            &format!(r#"{{"port":[7,1,2,{victim_port}]}}"#),
        ));
        // A forger's listener may have the victim's port number: once each.
        let mut seen = BTreeSet::new();
        socks.retain(|s| seen.insert(s["inode"].as_u64().unwrap()));
        let (listeners, fakes, victim) = summary(&socks);
        if listeners == want && fakes == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the start-up snapshot of the forger's namespace: {listeners} of its {want} \
             listeners, {fakes} fake sockets, victim entry {victim:?}; status {}",
            status(&d)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A re-snapshot (the ownerless listener makes one due within 30 s),
    // again under attack, completes and hands the listener to its keeper.
    let keeper_pid = keeper.id();
    eventually_within(
        "a re-snapshot under attack",
        Duration::from_secs(90),
        || {
            let s = status(&d);
            (s["reconciliations"].as_u64().unwrap() >= 1).then_some(())
        },
    );
    eventually_within(
        "the keeper found by the re-snapshot",
        Duration::from_secs(60),
        || {
            let socks = list_where(&d, &format!(r#"{{"port":[{ownerless_port}]}}"#));
            socks
                .iter()
                .any(|s| {
                    s["inode"] == ownerless
                        && s["owners"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|o| o["pid"] == keeper_pid)
                })
                .then_some(())
        },
    );
    let socks = list_where(
        &d,
        &format!(r#"{{"port":[7,1,2,{victim_port},{ownerless_port}]}}"#),
    );
    let stats = forger.stats();
    assert!(
        stats["seen"] > 0 && stats["refused"] > 0,
        "the forger never saw the daemon's socket: {stats:?}"
    );
    assert_eq!(stats["delivered"], 0, "forged datagrams reached the daemon");

    // No fake tuple, no fake inode, the real entry where it is.
    let fakes: Vec<_> = socks
        .iter()
        .filter(|s| {
            s["src_ip"].as_str().unwrap().starts_with(FAKE_PREFIX)
                || s["inode"].as_u64().unwrap() >= FAKE_INODE_BASE
        })
        .collect();
    assert!(
        fakes.is_empty(),
        "forged rows in the table: {:?}",
        &fakes[..fakes.len().min(3)]
    );
    let real: Vec<_> = socks
        .iter()
        .filter(|s| s["inode"] == victim_inode)
        .collect();
    assert_eq!(real.len(), 1, "{real:?}");
    assert_eq!(real[0]["src_ip"], "127.0.0.1");
    assert_eq!(real[0]["src_port"], victim_port);
    assert_eq!(real[0]["netns"], host_netns);
    assert_eq!(real[0]["state"], "listen");
    let ours = socks.iter().find(|s| s["inode"] == ownerless).unwrap();
    assert_eq!(ours["src_port"], ownerless_port);
    let s = status(&d);
    assert_eq!(s["table"]["evictions"], 0, "{s}");

    drop(forger);
    let _ = keeper.kill();
    let _ = keeper.wait();
}

/// A python parent that opens a listener and forks `children` idle
/// children (all inherit it); prints the parent pid, the port and the
/// children's pids. Everyone exits when stdin closes.
fn forking_parent(children: usize) -> (Child, u32, u16, Vec<u32>) {
    let src = "import os, socket, sys\n\
               n = int(sys.argv[1])\n\
               s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n\
               kids = []\n\
               for _ in range(n):\n    \
                   k = os.fork()\n    \
                   if k == 0:\n        \
                       sys.stdin.read(); os._exit(0)\n    \
                   kids.append(k)\n\
               print(os.getpid(), s.getsockname()[1], *kids, flush=True)\n\
               sys.stdin.read()\n\
               for k in kids:\n    \
                   try: os.waitpid(k, 0)\n    \
                   except ChildProcessError: pass\n";
    let mut p = Command::new("/usr/bin/python3")
        .args(["-c", src, &children.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(p.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let f: Vec<u32> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (p, f[0], f[1] as u16, f[2..].to_vec())
}

fn the_listener(d: &Daemon, port: u16) -> Option<serde_json::Value> {
    list_where(d, &format!(r#"{{"port":[{port}]}}"#))
        .into_iter()
        .find(|s| s["src_port"] == port && s["src_ip"] == "127.0.0.1" && s["state"] == "listen")
}

#[test]
fn fork_amplification_collapses_past_a_lowered_owner_cap() {
    let _turn = shared();
    let d = Daemon::start("forks", &["--no-config", "--max-owners", "4"]);
    let sock = d.socket.to_str().unwrap().to_string();
    let (mut parent, ppid, port, kids) = forking_parent(11);
    let kid_set: BTreeSet<u32> = kids.iter().copied().collect();
    let row = eventually_within(
        "4 owners listed, 8 counted",
        Duration::from_secs(60),
        || {
            let r = the_listener(&d, port)?;
            (r["owners"].as_array().unwrap().len() == 4 && r["inherited_more"] == 8).then_some(r)
        },
    );
    let owners = row["owners"].as_array().unwrap();
    assert_eq!(owners[0]["pid"], ppid);
    assert_eq!(owners[0]["source"], "event");
    let listed: BTreeSet<u32> = owners[1..]
        .iter()
        .map(|o| {
            assert_eq!(o["source"], "inherited", "{o}");
            o["pid"].as_u64().unwrap() as u32
        })
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(listed.is_subset(&kid_set), "{listed:?} not among {kids:?}");
    // Every owner keeps its shape (the v1 fields, nothing less).
    for o in owners {
        for k in [
            "pid",
            "tid",
            "comm",
            "thread_comm",
            "uid",
            "exe",
            "start_time",
            "source",
            "unit",
        ] {
            assert!(o.get(k).is_some(), "owner without {k}: {o}");
        }
    }
    // A counted child is still found by a pid filter.
    let counted: Vec<u32> = kids
        .iter()
        .copied()
        .filter(|k| !listed.contains(k))
        .collect();
    assert_eq!(counted.len(), 8);
    let r = d.request(&format!(
        r#"{{"op":"list","filter":{{"pid":[{}]}}}}"#,
        counted[0]
    ));
    let inodes: Vec<_> = r["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["inode"].clone())
        .collect();
    assert_eq!(inodes, [row["inode"].clone()], "{r}");
    // The human table says so too.
    let out = Command::new(bin())
        .args(["--socket", &sock, "ls", "--port", &port.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port} ")))
        .unwrap_or_else(|| panic!("no row for port {port} in {text}"));
    assert!(line.ends_with(", +8 inherited"), "{line}");

    // Counted children exit: the count falls to exactly zero, and the
    // listed ones stay.
    for k in &counted {
        // SAFETY: killing a child of our python child by its pid.
        unsafe { libc::kill(*k as i32, libc::SIGKILL) };
    }
    let row = eventually_within("the count back to 0", Duration::from_secs(60), || {
        let r = the_listener(&d, port)?;
        (r["inherited_more"] == 0).then_some(r)
    });
    let pids: BTreeSet<u32> = row["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["pid"].as_u64().unwrap() as u32)
        .collect();
    let mut expect = listed.clone();
    expect.insert(ppid);
    assert_eq!(pids, expect);
    // The daemon forgot the dead children entirely.
    let s = status(&d);
    assert!(s["table"]["processes"].as_u64().unwrap() > 0);
    for k in &counted {
        let r = d.request(&format!(r#"{{"op":"list","filter":{{"pid":[{k}]}}}}"#));
        assert_eq!(r["sockets"].as_array().unwrap().len(), 0, "{k}: {r}");
    }
    drop(parent.stdin.take());
    let _ = parent.wait();
}

/// Threads of `nobody` (uid 65534), started 100 ms apart (so that no two
/// pass the share check in the same instant), each blocked in `connect()`
/// to `addr` (a listener whose queue is full: its SYNs are dropped, and a
/// connect waits through its retries). Prints `ready` once all are started.
const BLOCKERS: &str = r#"
import socket, sys, threading, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def block():
    # Blocking (no timeout: Python would make the socket non-blocking and
    # wait in poll(), outside connect()).
    s = socket.socket()
    try:
        s.connect((host, port))
    except OSError:
        pass
for _ in range(n):
    threading.Thread(target=block, daemon=True).start()
    time.sleep(0.1)
print("ready", flush=True)
sys.stdin.read()
"#;

/// One connect by `nobody` to `port`, then exit; prints its pid first.
const ONE_CONNECT: &str = r#"
import os, socket, sys
print(os.getpid(), flush=True)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.close()
"#;

fn as_nobody(script: &str, args: &[String]) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        script,
    ])
    .args(args);
    c
}

#[test]
fn one_user_blocked_in_connect_cannot_take_everyone_s_share_of_the_in_flight_map() {
    // Exact loss counts of the daemon: alone (others' syscalls would count too).
    let _turn = exclusive();
    const SHARE: u64 = 4;
    const BLOCKED: u64 = 10;
    let d = Daemon::start(
        "pending-share",
        &[
            "--no-config",
            "--attach",
            "syscalls",
            "--pending-per-user",
            &SHARE.to_string(),
        ],
    );
    let dropped = |name: &str| status(&d)["dropped"][name].as_u64().unwrap();
    let before = dropped("pending_user_full");
    // A listener whose queue (backlog 0: one connection) is full.
    let full = listen_backlog_0();
    let addr = full.local_addr().unwrap();
    let queued = std::net::TcpStream::connect(addr).unwrap();
    let mut blockers = as_nobody(
        BLOCKERS,
        &[
            "127.0.0.1".into(),
            addr.port().to_string(),
            BLOCKED.to_string(),
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("setpriv python3");
    let mut line = String::new();
    BufReader::new(blockers.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    eventually_within(
        "every blocked connect in SYN_SENT",
        Duration::from_secs(60),
        || (syn_sent_to(addr) as u64 == BLOCKED).then_some(()),
    );
    // Its share held, nobody's other connects are its own loss, exactly.
    let lost = eventually_within(
        "pending_user_full to count nobody's excess",
        Duration::from_secs(30),
        || {
            let n = dropped("pending_user_full") - before;
            (n >= BLOCKED - SHARE).then_some(n)
        },
    );
    assert_eq!(
        lost,
        BLOCKED - SHARE,
        "one loss per connect beyond the share"
    );
    // Root's connects are reported, from the syscall, with the acting thread.
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port();
    let mut sub = d.connect();
    let ok = request_on(
        &mut sub,
        &format!(r#"{{"op":"subscribe","filter":{{"event":["connect"],"port":[{port}]}}}}"#),
    );
    assert_eq!(ok["subscribed"], true, "{ok}");
    let me = std::process::id();
    let mut mine = Vec::new();
    for _ in 0..SHARE + 2 {
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (a, _) = open.accept().unwrap();
        mine.push(c.local_addr().unwrap().port());
        drop((c, a));
    }
    for src in &mine {
        let ev = read_json_line(&mut sub);
        assert_eq!(
            (ev["event"].as_str(), ev["pid"].as_u64()),
            (Some("connect"), Some(u64::from(me))),
            "{ev}"
        );
        assert_eq!(ev["src_port"], *src, "{ev}");
        assert_eq!(ev["dst_port"], port, "{ev}");
        assert_eq!(ev["attribution"], "thread", "{ev}");
        assert_eq!(ev["uid"], 0, "{ev}");
    }
    assert_eq!(
        dropped("pending_user_full") - before,
        lost,
        "root lost nothing"
    );
    // The blocked threads gone, nobody's share is whole again: its next
    // connect is reported.
    let _ = blockers.kill();
    let _ = blockers.wait();
    eventually_within("nobody's connects to end", Duration::from_secs(60), || {
        (syn_sent_to(addr) == 0).then_some(())
    });
    let mut one = as_nobody(ONE_CONNECT, &[port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv python3");
    let mut pid = String::new();
    BufReader::new(one.stdout.take().unwrap())
        .read_line(&mut pid)
        .unwrap();
    let pid: u64 = pid.trim().parse().unwrap();
    let (a, _) = open.accept().unwrap();
    assert!(one.wait().unwrap().success());
    let ev = read_json_line(&mut sub);
    assert_eq!(
        (ev["event"].as_str(), ev["pid"].as_u64(), ev["uid"].as_u64()),
        (Some("connect"), Some(pid), Some(65534)),
        "{ev}"
    );
    assert_eq!(
        dropped("pending_user_full") - before,
        lost,
        "the share came back whole"
    );
    drop((a, queued, full));
}
