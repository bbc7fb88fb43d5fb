//! Flows (issue 13): the counters a TCP socket's release record carries are
//! the kernel's own, exactly. Each is compared with what `TCP_INFO` says
//! for the same socket just before its last descriptor goes, on loopback and
//! through a lossy path (an nftables rule dropping packets at random in a
//! network namespace of the test's own: this kernel has no netem). The rule
//! drops on *input*: a drop on output is an error to the sender, which
//! simply sends again later, not a loss TCP retransmits.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::Command,
};

use sockmon::event::{EventKind, flow::CloseStats};

use crate::harness::{Harness, harness, harness_forking, inode_of};

/// `TCP_INFO` of a live socket.
fn tcp_info(s: &impl AsRawFd) -> libc::tcp_info {
    // SAFETY: getsockopt into a zeroed tcp_info of the size we pass.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        );
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info
    }
}

/// The socket's drop counter (`sk_drops`), as `SO_MEMINFO` says.
fn sk_drops(s: &impl AsRawFd) -> u32 {
    // SK_MEMINFO_DROPS is the last of the SK_MEMINFO_VARS (9) counters.
    let mut m = [0u32; 9];
    let mut len = size_of_val(&m) as libc::socklen_t;
    // SAFETY: getsockopt into an array of the size we pass.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            m.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_MEMINFO: {}", std::io::Error::last_os_error());
    m[8]
}

/// What the test reads of a live socket just before its last descriptor goes.
type Seen = (libc::tcp_info, u32);

/// Waits for the release counters of socket `inode`.
fn close_stats(h: &Harness, inode: u64) -> CloseStats {
    let pid = std::process::id();
    h.expect("close", pid, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
    // The counters precede the close in the ring: they are in by now.
    let all = crate::harness::lock(&h.close_stats);
    let mine: Vec<_> = all.iter().filter(|s| s.inode == inode).copied().collect();
    assert_eq!(
        mine.len(),
        1,
        "one counters record for inode {inode}: {mine:?}"
    );
    mine[0]
}

/// Client: writes `up` bytes, reads `down`; server: reads `up`, writes
/// `down`, then waits for the client's end. Returns the client's
/// `TCP_INFO` taken after the exchange, and the client's inode (its
/// descriptor is closed on return).
fn exchange(server: &TcpListener, up: usize, down: usize) -> (Seen, u64, u64, Seen) {
    let addr = server.local_addr().unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    let (mut accepted, _) = server.accept().unwrap();
    let server_thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; up];
        accepted.read_exact(&mut buf).unwrap();
        accepted.write_all(&vec![7u8; down]).unwrap();
        // The client's FIN: after it, nothing more moves on this socket.
        assert_eq!(accepted.read(&mut [0u8; 1]).unwrap(), 0);
        let info = (tcp_info(&accepted), sk_drops(&accepted));
        let inode = inode_of(&accepted);
        drop(accepted);
        (info, inode)
    });
    client.write_all(&vec![1u8; up]).unwrap();
    let mut buf = vec![0u8; down];
    client.read_exact(&mut buf).unwrap();
    let info = (tcp_info(&client), sk_drops(&client));
    let inode = inode_of(&client);
    drop(client);
    let (server_info, server_inode) = server_thread.join().unwrap();
    (info, inode, server_inode, server_info)
}

fn assert_matches_tcp_info(s: &CloseStats, (info, drops): &Seen, what: &str) {
    let t = s
        .tcp
        .unwrap_or_else(|| panic!("{what}: no TCP counters in {s:?}"));
    assert_eq!(t.bytes_sent, info.tcpi_bytes_sent, "{what} bytes_sent");
    assert_eq!(t.bytes_acked, info.tcpi_bytes_acked, "{what} bytes_acked");
    assert_eq!(
        t.bytes_received, info.tcpi_bytes_received,
        "{what} bytes_received"
    );
    assert_eq!(
        t.total_retrans, info.tcpi_total_retrans,
        "{what} total_retrans"
    );
    // Segment counts may only have grown (a last ACK) between TCP_INFO and the release.
    assert!(
        t.segs_out >= info.tcpi_segs_out && t.segs_out > 0,
        "{what} segs_out {t:?}"
    );
    assert!(
        t.segs_in >= info.tcpi_segs_in && t.segs_in > 0,
        "{what} segs_in {t:?}"
    );
    assert!(t.srtt_us > 0, "{what} srtt {t:?}");
    // Drops (a duplicate segment of a retransmit, say) may only have grown
    // between the read and the release, like the segment counts.
    let released = s
        .drops
        .unwrap_or_else(|| panic!("{what}: no drop count in {s:?}"));
    assert!(released >= *drops, "{what} drops: {released} < {drops}");
}

#[test]
fn release_counters_are_the_kernels_exact_byte_counts() {
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (up, down) = (123_457usize, 54_321usize);
    let (info, inode, server_inode, server_info) = exchange(&listener, up, down);

    let c = close_stats(&h, inode);
    assert_matches_tcp_info(&c, &info, "client");
    let t = c.tcp.unwrap();
    // Exactly what moved: the client's SYN counts as one acknowledged byte.
    // `bytes_sent` counts retransmitted bytes too: on a starved machine (a
    // guest under emulation) the retransmit timer can fire even on loopback.
    assert_sent(t.bytes_sent, up as u64, t.total_retrans, "client");
    assert_eq!(t.bytes_received, down as u64);
    assert_eq!(t.bytes_acked, up as u64 + 1);
    // Released with the connection still established (its FIN is sent after).
    assert_eq!(c.state, 1);

    let s = close_stats(&h, server_inode);
    assert_matches_tcp_info(&s, &server_info, "server");
    let t = s.tcp.unwrap();
    assert_sent(t.bytes_sent, down as u64, t.total_retrans, "server");
    // The passive side's SYN-ACK is not counted (the ACK that completes the
    // handshake does not advance `bytes_acked` in `tcp_rcv_state_process`).
    assert_eq!(t.bytes_acked, down as u64);
    // The client's FIN counts as one received byte.
    assert_eq!(t.bytes_received, up as u64 + 1);
    // The peer closed first: CLOSE_WAIT.
    assert_eq!(s.state, 8);
}

/// `bytes_sent` is exactly what was written, unless segments were
/// retransmitted (they count again): then it is more.
fn assert_sent(bytes_sent: u64, written: u64, retrans: u32, what: &str) {
    if retrans == 0 {
        assert_eq!(bytes_sent, written, "{what} bytes_sent");
    } else {
        assert!(
            bytes_sent > written,
            "{what}: {bytes_sent} sent, {retrans} retransmits"
        );
    }
}

/// A network namespace of this test's own, removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: &str, nft: &str) -> Netns {
        let run = |args: &[&str], stdin: Option<&str>| {
            let mut cmd = Command::new(args[0]);
            cmd.args(&args[1..]).stdin(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{args:?}: {e}"));
            if let Some(text) = stdin {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
            }
            drop(child.stdin.take());
            let status = child.wait().unwrap();
            assert!(status.success(), "{args:?} failed: {status}");
        };
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(&["ip", "netns", "add", name], None);
        let ns = Netns { name: name.into() };
        // A real-sized MTU and no segmentation offload, so a transfer is many
        // packets on the wire and the loss hits some.
        run(
            &[
                "ip",
                "-n",
                name,
                "link",
                "set",
                "lo",
                "mtu",
                "1500",
                "gso_max_size",
                "1500",
                "gso_max_segs",
                "1",
                "up",
            ],
            None,
        );
        run(&["ip", "netns", "exec", name, "nft", "-f", "-"], Some(nft));
        ns
    }

    /// Moves the calling thread into the namespace (namespaces are per thread).
    fn enter(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        // SAFETY: setns on a valid descriptor; affects only this thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[test]
fn a_lossy_path_reports_the_retransmits() {
    // It spawns `ip` and `nft`: a child holds copies of every descriptor
    // until it executes, so it runs alone (see harness.rs).
    let h = harness_forking();
    let port = 47_613u16;
    let ns = Netns::new(
        &format!("sockmon-flows-{}", std::process::id()),
        &format!(
            "table inet lossy {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n  \
             tcp dport {port} numgen random mod 100 < 5 drop\n }}\n}}\n"
        ),
    );
    let (info, inode) = std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter();
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (info, inode, _, _) = exchange(&listener, 200_000, 1_000);
            (info, inode)
        })
        .join()
        .unwrap()
    });
    let c = close_stats(&h, inode);
    assert_matches_tcp_info(&c, &info, "lossy client");
    let t = c.tcp.unwrap();
    assert!(t.total_retrans > 0, "5% loss on ~140 segments: {t:?}");
    // Retransmitted bytes count as sent: more went out than the payload.
    assert!(t.bytes_sent > 200_000, "{t:?}");
    assert_eq!(t.bytes_acked, 200_001);
}

/// A process that connects and exits at once: the kernel captured what it
/// executed, with which arguments, under which parent, before it was gone.
#[test]
fn exec_capture_outlives_a_process_that_connects_and_exits_at_once() {
    use std::os::unix::fs::MetadataExt as _;
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let python = "/usr/bin/python3";
    let code = format!("import socket; socket.create_connection(('127.0.0.1', {port})).close()");
    let marker = "sockmon-flows-marker ünïcode";
    let status = Command::new(python)
        .args(["-c", &code, marker])
        .status()
        .unwrap();
    assert!(status.success());
    // The child is gone by now: wait for its connect, then find its exec.
    let connect = h.expect("connect of the exited child", 0, |e| {
        e.kind == EventKind::Connect && e.dst.port() == port
    });
    let child = connect.pid;
    assert_ne!(child, std::process::id());
    let execs: Vec<_> = crate::harness::lock(&h.execs)
        .iter()
        .filter(|x| x.pid == child)
        .cloned()
        .collect();
    assert_eq!(execs.len(), 1, "{execs:?}");
    let x = &execs[0];
    assert_eq!(x.filename, python.as_bytes());
    assert_eq!(
        x.args.as_deref().unwrap(),
        [python.as_bytes(), b"-c", code.as_bytes(), marker.as_bytes()]
    );
    assert!(!x.args_truncated && !x.filename_truncated);
    assert_eq!(x.ppid, std::process::id());
    assert_eq!(x.start_ns, connect.start_ns);
    // The executable the kernel ran: python3's target, by device and inode.
    let meta = std::fs::metadata(python).unwrap();
    let (dev, ino) = x.exe_file.unwrap();
    assert_eq!(ino, meta.ino());
    let (major, minor) = (dev >> 20, dev & 0xfffff);
    assert_eq!(
        (major, minor),
        (libc::major(meta.dev()), libc::minor(meta.dev()))
    );
}

/// argv longer than the kernel keeps is cut at the bound and says so.
#[test]
fn long_argv_is_truncated_and_flagged() {
    let h = harness();
    let long = "x".repeat(2000);
    let mut child = Command::new("/bin/true").arg(&long).spawn().unwrap();
    // By its pid: other tests exec /bin/true from this process too.
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let found = crate::harness::lock(&h.execs)
            .iter()
            .find(|x| x.pid == pid && x.filename == b"/bin/true")
            .cloned();
        if let Some(x) = found {
            let args = x.args.unwrap();
            assert!(x.args_truncated);
            assert_eq!(args[0], b"/bin/true");
            // 512 bytes kept: "/bin/true\0" then 502 of the x's.
            assert_eq!(args[1].len(), 512 - "/bin/true".len() - 1);
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no exec of /bin/true");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
