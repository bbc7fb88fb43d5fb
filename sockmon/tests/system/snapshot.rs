//! The start-up snapshot against real sockets (run as root): exact rows for
//! sockets this test opens, their holders (also across `fork`), a second
//! network namespace (`unshare --net`) and one that only `/run/netns` leads
//! to (`ip netns add`). Needs util-linux, iproute2 and python3.
//!
//! Plus an `#[ignore]`d measurement: sock_diag vs `/proc/net/*` text, and
//! the whole `take()`, at 10k–100k sockets (`cargo test -p sockmon --release
//! --test system -- --ignored --nocapture snapshot::`).
//!
//! Every test here runs alone (`support::exclusive`): they assert the exact
//! holders of this process's sockets, which another test's child holds for
//! a moment, and one forks a child that copies every descriptor of this
//! process.

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{fd::AsRawFd, unix::fs::MetadataExt as _},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use sockmon::{
    event::{Family, Proto, decode::reconcile_family, unmap},
    snapshot::{Snapshot, SockRow, diag::DiagSocket, take},
};

use crate::support::exclusive;

fn inode_of(fd: &impl AsRawFd) -> u64 {
    // SAFETY: libc::stat is plain old data; all zeroes is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `st` is a valid, writable stat buffer.
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
    st.st_ino
}

fn netns_of(pid: &str) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .ino() as u32
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Field 22 of /proc/PID/stat, split after the last ')'.
fn start_ticks_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn row(snap: &Snapshot, inode: u64) -> &SockRow {
    let rows: Vec<&SockRow> = snap.sockets.iter().filter(|r| r.inode == inode).collect();
    assert_eq!(rows.len(), 1, "socket {inode} in the snapshot: {rows:?}");
    rows[0]
}

fn expect(netns: u32, inode: u64, proto: Proto, src: &str, dst: &str, state: u8) -> SockRow {
    SockRow {
        netns,
        inode,
        proto,
        family: if src.starts_with('[') {
            Family::Ipv6
        } else {
            Family::Ipv4
        },
        src: addr(src),
        dst: addr(dst),
        state,
        // SAFETY: geteuid cannot fail.
        uid: unsafe { libc::geteuid() },
    }
}

#[test]
fn tcp_listener_and_established_pair_are_exact_and_held_by_us() {
    let _turn = exclusive();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cport = client.local_addr().unwrap().port();
    let (server, _) = listener.accept().unwrap();
    let me = std::process::id();
    let ns = netns_of("self");

    let snap = take().unwrap();

    let (l, c, s) = (inode_of(&listener), inode_of(&client), inode_of(&server));
    let local = format!("127.0.0.1:{port}");
    let remote = format!("127.0.0.1:{cport}");
    assert_eq!(
        *row(&snap, l),
        expect(ns, l, Proto::Tcp, &local, "0.0.0.0:0", 10)
    );
    assert_eq!(
        *row(&snap, c),
        expect(ns, c, Proto::Tcp, &remote, &local, 1)
    );
    assert_eq!(
        *row(&snap, s),
        expect(ns, s, Proto::Tcp, &local, &remote, 1)
    );
    for inode in [l, c, s] {
        assert_eq!(snap.holders[&inode], [me], "holders of {inode}");
    }
    let p = &snap.processes[&me];
    assert_eq!(p.pid, me);
    assert_eq!(p.start_ticks, start_ticks_of(me));
    // SAFETY: getuid cannot fail.
    assert_eq!(p.uid, unsafe { libc::getuid() });
    let comm = std::fs::read("/proc/self/comm").unwrap();
    assert_eq!(p.comm.as_bytes(), &comm[..comm.len() - 1]);
    for pid in snap.holders.values().flatten() {
        assert!(snap.processes.contains_key(pid), "pid {pid} has no ProcRow");
    }
    assert!(snap.duration > Duration::ZERO && snap.duration < Duration::from_secs(10));
    // Only a namespace that vanished mid-way may be skipped, never ours.
    let own = netns_of("self");
    assert!(
        snap.skipped_netns
            .iter()
            .all(|(ino, why)| *ino != own && why.starts_with("vanished")),
        "{:?}",
        snap.skipped_netns
    );
}

#[test]
fn udp_sockets_report_state_7_unconnected_and_1_connected() {
    let _turn = exclusive();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let udp6 = UdpSocket::bind("[::1]:0").unwrap();
    udp6.connect(("::1", 53)).unwrap();
    let port6 = udp6.local_addr().unwrap().port();
    let ns = netns_of("self");

    let snap = take().unwrap();

    let (u, u6) = (inode_of(&udp), inode_of(&udp6));
    let local = format!("127.0.0.1:{port}");
    assert_eq!(
        *row(&snap, u),
        expect(ns, u, Proto::Udp, &local, "0.0.0.0:0", 7)
    );
    let local6 = format!("[::1]:{port6}");
    assert_eq!(
        *row(&snap, u6),
        expect(ns, u6, Proto::Udp, &local6, "[::1]:53", 1)
    );
    assert_eq!(snap.holders[&u], [std::process::id()]);
}

#[test]
fn a_dual_stack_socket_talking_ipv4_is_folded_to_ipv4() {
    let _turn = exclusive();
    let listener = TcpListener::bind("[::]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cport = client.local_addr().unwrap().port();
    let (server, _) = listener.accept().unwrap();
    let ns = netns_of("self");

    let snap = take().unwrap();

    let (l, s) = (inode_of(&listener), inode_of(&server));
    let any = format!("[::]:{port}");
    assert_eq!(
        *row(&snap, l),
        expect(ns, l, Proto::Tcp, &any, "[::]:0", 10)
    );
    let local = format!("127.0.0.1:{port}");
    let remote = format!("127.0.0.1:{cport}");
    assert_eq!(
        *row(&snap, s),
        expect(ns, s, Proto::Tcp, &local, &remote, 1)
    );
}

/// A forked child that sleeps until killed; killed and reaped on drop.
struct Forked(libc::pid_t);

impl Forked {
    fn new() -> Self {
        // SAFETY: the child only calls pause, which is async-signal-safe,
        // until it is killed; it never returns into the test harness.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            },
            pid if pid > 0 => Self(pid),
            _ => panic!("fork: {}", std::io::Error::last_os_error()),
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child by its pid.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

#[test]
fn a_forked_child_holding_our_listener_is_a_holder_too() {
    let _turn = exclusive();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let inode = inode_of(&listener);
    let child = Forked::new();
    let child_pid = child.0 as u32;
    let me = std::process::id();

    let snap = take().unwrap();

    let mut both = [me, child_pid];
    both.sort_unstable();
    assert_eq!(snap.holders[&inode], both);
    let p = &snap.processes[&child_pid];
    assert_eq!(p.start_ticks, start_ticks_of(child_pid));
    let comm = std::fs::read(format!("/proc/{child_pid}/comm")).unwrap();
    assert_eq!(p.comm.as_bytes(), &comm[..comm.len() - 1]);
    drop(child);

    let snap = take().unwrap();
    assert_eq!(snap.holders[&inode], [me]);
    assert!(!snap.processes.contains_key(&child_pid));
}

/// A child process, killed (by its pid) and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the first line the child prints (its "ready" signal).
fn first_line(out: ChildStdout) -> String {
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    line
}

#[test]
fn listeners_on_one_port_in_two_namespaces_are_both_seen() {
    let _turn = exclusive();
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = "import socket, sys\n\
                  s = socket.socket()\n\
                  s.bind(('0.0.0.0', int(sys.argv[1])))\n\
                  s.listen()\n\
                  print('ready', flush=True)\n\
                  sys.stdin.read()\n";
    let mut child = Reaped(
        Command::new("unshare")
            .args(["--net", "python3", "-c", script, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare --net python3 (util-linux, python3)"),
    );
    let ready = first_line(child.0.stdout.take().unwrap());
    assert_eq!(
        ready, "ready\n",
        "the child in a new namespace did not start"
    );
    let child_pid = child.0.id();
    let (ours, theirs) = (netns_of("self"), netns_of(&child_pid.to_string()));
    assert_ne!(ours, theirs);

    let snap = take().unwrap();

    let on_port: Vec<&SockRow> = snap
        .sockets
        .iter()
        .filter(|r| r.proto == Proto::Tcp && r.src.port() == port && r.state == 10)
        // Only the two namespaces of this test: other namespaces of the
        // machine may hold the same port.
        .filter(|r| r.netns == ours || r.netns == theirs)
        .collect();
    assert_eq!(on_port.len(), 2, "{on_port:?}");
    let mine = on_port.iter().find(|r| r.netns == ours).expect("ours");
    let other = on_port.iter().find(|r| r.netns == theirs).expect("theirs");
    let any = format!("0.0.0.0:{port}");
    let l = inode_of(&listener);
    assert_eq!(**mine, expect(ours, l, Proto::Tcp, &any, "0.0.0.0:0", 10));
    assert_eq!(
        **other,
        expect(theirs, other.inode, Proto::Tcp, &any, "0.0.0.0:0", 10)
    );
    assert_eq!(snap.holders[&other.inode], [child_pid]);
    assert_eq!(snap.processes[&child_pid].comm.as_bytes(), b"python3");
    assert!(
        snap.skipped_netns.iter().all(|(ino, _)| *ino != theirs),
        "{:?}",
        snap.skipped_netns
    );
    drop(child);
}

/// A namespace made by `ip netns add`, deleted on drop.
struct NamedNetns(String);

impl NamedNetns {
    fn new() -> Self {
        let name = format!("sockmon-test-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(ok.expect("ip (iproute2)").success(), "ip netns add {name}");
        Self(name)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[test]
fn a_namespace_reachable_only_through_run_netns_is_read() {
    let _turn = exclusive();
    let ns = NamedNetns::new();
    let ns_ino = std::fs::metadata(format!("/run/netns/{}", ns.0))
        .unwrap()
        .ino() as u32;
    // The child opens a listener inside the namespace, then moves itself
    // back to ours: no process is left in the namespace, only the mount.
    let script = "import ctypes, os, socket, sys\n\
                  s = socket.socket()\n\
                  s.bind(('0.0.0.0', 0))\n\
                  s.listen()\n\
                  fd = os.open(sys.argv[1], os.O_RDONLY)\n\
                  assert ctypes.CDLL(None).setns(fd, 0x40000000) == 0\n\
                  os.close(fd)\n\
                  print(os.getpid(), s.getsockname()[1], flush=True)\n\
                  sys.stdin.read()\n";
    let back = format!("/proc/{}/ns/net", std::process::id());
    let mut child = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &ns.0, "python3", "-c", script, &back])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip netns exec"),
    );
    let line = first_line(child.0.stdout.take().unwrap());
    let mut words = line.split_whitespace().map(|w| w.parse::<u32>().unwrap());
    let (pid, port) = (words.next().unwrap(), words.next().unwrap() as u16);
    assert_eq!(netns_of(&pid.to_string()), netns_of("self"));

    let snap = take().unwrap();

    let rows: Vec<&SockRow> = snap.sockets.iter().filter(|r| r.netns == ns_ino).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let any = format!("0.0.0.0:{port}");
    let inode = rows[0].inode;
    assert_eq!(
        *rows[0],
        expect(ns_ino, inode, Proto::Tcp, &any, "0.0.0.0:0", 10)
    );
    assert_eq!(snap.holders[&inode], [pid]);
    drop(child);
    drop(ns);
}

// ---- Measurement -----------------------------------------------------------

/// Parses `/proc/net/{tcp,tcp6,udp,udp6}` into rows, folded like sock_diag's.
fn proc_net_rows(netns: u32) -> Vec<SockRow> {
    let mut rows = Vec::new();
    for (file, proto, af) in [
        ("tcp", Proto::Tcp, 2),
        ("tcp6", Proto::Tcp, 10),
        ("udp", Proto::Udp, 2),
        ("udp6", Proto::Udp, 10),
    ] {
        let text = std::fs::read_to_string(format!("/proc/net/{file}")).unwrap();
        rows.extend(
            text.lines()
                .skip(1)
                .filter_map(|l| proc_net_line(l, netns, proto, af)),
        );
    }
    rows
}

fn proc_net_line(line: &str, netns: u32, proto: Proto, af: u16) -> Option<SockRow> {
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    let inode: u64 = f.get(9)?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    let (src_ip, sport) = proc_net_addr(f[1])?;
    let (dst_ip, dport) = proc_net_addr(f[2])?;
    let (src_ip, dst_ip, family) = reconcile_family(src_ip, dst_ip, af);
    Some(SockRow {
        netns,
        inode,
        proto,
        family,
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        state: u8::from_str_radix(f[3], 16).ok()?,
        uid: f[7].parse().ok()?,
    })
}

/// `0100007F:1F90` (words in host order, port in hex) → address and port.
fn proc_net_addr(s: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut octets = [0u8; 16];
    for (i, chunk) in ip.as_bytes().chunks(8).enumerate() {
        let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        octets[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])),
        32 => unmap(IpAddr::V6(octets.into())),
        _ => return None,
    };
    Some((ip, port))
}

fn diag_rows(netns: u32) -> Vec<SockRow> {
    let mut rows = Vec::new();
    DiagSocket::open()
        .unwrap()
        .dump_all(netns, &mut rows)
        .unwrap();
    rows
}

/// Sockets per helper process: the hard `RLIMIT_NOFILE` here is 20,000 and
/// raising it needs `CAP_SYS_RESOURCE`, which this machine's root lacks.
const PER_HELPER: usize = 18_000;

/// Helper processes holding about `n` loopback TCP sockets in all (n/2
/// connected pairs, over 8 listeners per helper).
fn socket_holders(n: usize) -> Vec<Reaped> {
    let script = "import socket, resource, struct, sys\n\
                  n = int(sys.argv[1])\n\
                  hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n\
                  resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n\
                  ls = []\n\
                  for _ in range(8):\n    \
                      l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(4096); ls.append(l)\n\
                  keep = []\n\
                  rst = struct.pack('ii', 1, 0)\n\
                  for i in range(n // 2):\n    \
                      l = ls[i % 8]\n    \
                      c = socket.socket()\n    \
                      c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, rst)\n    \
                      c.connect(l.getsockname())\n    \
                      keep.append(c); keep.append(l.accept()[0])\n\
                  print('ready', len(keep) + 8, flush=True)\n\
                  sys.stdin.read()\n";
    let mut helpers = Vec::new();
    let mut left = n;
    while left > 0 {
        let here = left.min(PER_HELPER);
        left -= here;
        let mut child = Reaped(
            Command::new("python3")
                .args(["-c", script, &here.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3"),
        );
        let ready = first_line(child.0.stdout.take().unwrap());
        assert!(ready.starts_with("ready"), "helper: {ready:?}");
        helpers.push(child);
    }
    helpers
}

/// Raises the soft descriptor limit to the hard one.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a valid rlimit buffer.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

const RUNS: usize = 7;

#[test]
#[ignore = "measurement: creates up to 100k sockets; run with --ignored --nocapture"]
fn measure_sock_diag_vs_proc_net_and_take() {
    let _turn = exclusive();
    raise_nofile();
    let ns = netns_of("self");
    println!(
        "\n| sockets | sock_diag | /proc/net text | take() | take() cold | rows diag/text | holders |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in [10_000, 50_000, 100_000] {
        let helpers = socket_holders(n);
        let (mut diag, mut text, mut full) = (Vec::new(), Vec::new(), Vec::new());
        let (mut counts, mut holders) = ((0, 0), 0);
        // The first take() meets cold /proc/PID/fd entries, as at start-up.
        let cold = take().unwrap().duration;
        // One warm-up of the others, then interleaved runs in rotating order.
        diag_rows(ns);
        proc_net_rows(ns);
        for run in 0..RUNS * 3 {
            let t = Instant::now();
            match (run + run / 3) % 3 {
                0 => {
                    counts.0 = diag_rows(ns).len();
                    diag.push(t.elapsed());
                }
                1 => {
                    counts.1 = proc_net_rows(ns).len();
                    text.push(t.elapsed());
                }
                _ => {
                    let snap = take().unwrap();
                    full.push(t.elapsed());
                    holders = snap.holders.len();
                }
            }
        }
        assert!(counts.0 >= n && counts.1 >= n, "{counts:?}");
        assert!(holders >= n, "{holders}");
        println!(
            "| {n} | {} | {} | {} | {} | {}/{} | {holders} |",
            ms(median(diag)),
            ms(median(text)),
            ms(median(full)),
            ms(cold),
            counts.0,
            counts.1,
        );
        drop(helpers);
    }
}

// ---- The /proc/net fallback ------------------------------------------------

/// Set to `1` by the guest runner of `cargo xtask test` (xtask/src/guest/)
/// in a guest whose kernel refuses to load sock_diag's modules: there the
/// fallback must happen by itself. Elsewhere the test forces it with
/// `Options { sock_diag: false }` (what `SOCKMON_SNAPSHOT_NO_SOCK_DIAG=1`
/// does for the daemon).
const DIAG_BLOCKED_ENV: &str = "SOCKMON_TEST_DIAG_BLOCKED";

#[test]
fn without_sock_diag_the_snapshot_comes_from_proc_net_with_exact_rows() {
    let _turn = exclusive();
    use sockmon::snapshot::{Options, Source, take_with};
    let blocked = std::env::var_os(DIAG_BLOCKED_ENV).is_some_and(|v| v == "1");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cport = client.local_addr().unwrap().port();
    let (server, _) = listener.accept().unwrap();
    let dual = TcpListener::bind("[::]:0").unwrap();
    let dport = dual.local_addr().unwrap().port();
    let mapped = TcpStream::connect(("127.0.0.1", dport)).unwrap();
    let mport = mapped.local_addr().unwrap().port();
    let (mapped_server, _) = dual.accept().unwrap();
    let udp6 = UdpSocket::bind("[::1]:0").unwrap();
    udp6.connect(("::1", 53)).unwrap();
    let uport = udp6.local_addr().unwrap().port();
    // A listener in a namespace of its own, held by a child.
    let script = "import os, socket, sys\n\
                  s = socket.socket()\n\
                  s.bind(('127.0.0.1', 0))\n\
                  s.listen()\n\
                  print(s.getsockname()[1], os.fstat(s.fileno()).st_ino, flush=True)\n\
                  sys.stdin.read()\n";
    let mut child = Reaped(
        Command::new("unshare")
            .args(["--net", "python3", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare --net python3 (util-linux, python3)"),
    );
    let ready = first_line(child.0.stdout.take().unwrap());
    let (child_port, child_inode): (u16, u64) = match ready.split_whitespace().collect::<Vec<_>>()[..]
    {
        [p, i] => (p.parse().unwrap(), i.parse().unwrap()),
        _ => panic!("the child in a new namespace did not start: {ready:?}"),
    };
    let child_pid = child.0.id();
    let (ours, theirs) = (netns_of("self"), netns_of(&child_pid.to_string()));
    assert_ne!(ours, theirs);

    if blocked {
        // The kernel really cannot answer: its diag modules were refused.
        let err = DiagSocket::open()
            .and_then(|mut d| d.dump_all(ours, &mut Vec::new()))
            .unwrap_err();
        assert!(
            matches!(
                err,
                sockmon::snapshot::diag::DiagError::Kernel(libc::ENOENT)
            ),
            "{err:?}"
        );
    }
    let snap = take_with(Options { sock_diag: blocked }).unwrap();

    assert_eq!(
        snap.sources.keys().copied().collect::<Vec<_>>(),
        [Source::ProcNet],
        "{:?}",
        snap.sources
    );
    assert!(snap.sources[&Source::ProcNet] >= 2, "{:?}", snap.sources);
    assert_eq!(snap.source_names(), "proc_net");
    let why = snap.fallback.clone().unwrap_or_default();
    if blocked {
        assert!(
            why.contains("the kernel refused the sock_diag dump"),
            "{why}"
        );
    } else {
        assert_eq!(why, "sock_diag skipped: SOCKMON_SNAPSHOT_NO_SOCK_DIAG=1");
    }
    let me = std::process::id();
    let local = format!("127.0.0.1:{port}");
    let remote = format!("127.0.0.1:{cport}");
    let (l, c, s) = (inode_of(&listener), inode_of(&client), inode_of(&server));
    assert_eq!(
        *row(&snap, l),
        expect(ours, l, Proto::Tcp, &local, "0.0.0.0:0", 10)
    );
    assert_eq!(
        *row(&snap, c),
        expect(ours, c, Proto::Tcp, &remote, &local, 1)
    );
    assert_eq!(
        *row(&snap, s),
        expect(ours, s, Proto::Tcp, &local, &remote, 1)
    );
    let (d, ms) = (inode_of(&dual), inode_of(&mapped_server));
    assert_eq!(
        *row(&snap, d),
        expect(ours, d, Proto::Tcp, &format!("[::]:{dport}"), "[::]:0", 10)
    );
    assert_eq!(
        *row(&snap, ms),
        expect(
            ours,
            ms,
            Proto::Tcp,
            &format!("127.0.0.1:{dport}"),
            &format!("127.0.0.1:{mport}"),
            1
        )
    );
    let u6 = inode_of(&udp6);
    assert_eq!(
        *row(&snap, u6),
        expect(
            ours,
            u6,
            Proto::Udp,
            &format!("[::1]:{uport}"),
            "[::1]:53",
            1
        )
    );
    for inode in [l, c, s, d, ms, u6] {
        assert_eq!(snap.holders[&inode], [me], "holders of {inode}");
    }
    assert_eq!(
        *row(&snap, child_inode),
        expect(
            theirs,
            child_inode,
            Proto::Tcp,
            &format!("127.0.0.1:{child_port}"),
            "0.0.0.0:0",
            10
        )
    );
    assert_eq!(snap.holders[&child_inode], [child_pid]);
    assert_eq!(snap.processes[&child_pid].comm.as_bytes(), b"python3");
    assert_eq!(snap.processes[&me].start_ticks, start_ticks_of(me));

    if !blocked {
        // Where both sources answer, they give the same rows.
        let diag = take_with(Options { sock_diag: true }).unwrap();
        assert_eq!(diag.source_names(), "sock_diag");
        assert_eq!(diag.fallback, None);
        for inode in [l, c, s, d, ms, u6, child_inode] {
            assert_eq!(row(&diag, inode), row(&snap, inode));
        }
    }
    drop((client, mapped));
}
