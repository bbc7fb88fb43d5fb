//! Connect outcomes (`connect_result`), accepts of connections already
//! reset, TCP Fast Open and io_uring: the paths that bypass or outlive the
//! connect and accept syscalls. Each runs in every attach mode.

use std::{
    io::Write as _,
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _},
    process::Command,
    time::Duration,
};

use sockmon::event::EventKind;

use crate::{
    harness::{assert_mine, gettid, harness, inode_of},
    sys,
};

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("expected IPv4"),
    }
}

#[test]
fn a_refused_non_blocking_connect_has_its_source_port_and_its_outcome() {
    let h = harness();
    // A bound, non-listening socket answers a SYN with RST.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let target = SocketAddrV4::new([127, 0, 0, 1].into(), port);
    let fd = sys::tcp_socket(libc::SOCK_NONBLOCK);
    let inode = sys::inode_of_fd(fd);
    let rc = sys::connect(fd, target);
    assert!(
        matches!(rc, Err(libc::EINPROGRESS) | Err(libc::ECONNREFUSED)),
        "{rc:?}"
    );
    let e = h.expect("connect", std::process::id(), |e| {
        e.kind == EventKind::Connect && e.inode == inode
    });
    assert_mine(&e, inode);
    assert_ne!(
        e.src.port(),
        0,
        "a connect always has its source port: {e:?}"
    );
    assert_eq!(e.dst, SocketAddr::V4(target));
    let r = h.expect("refusal", std::process::id(), |e| {
        e.kind == EventKind::ConnectResult && e.inode == inode
    });
    assert_mine(&r, inode);
    assert_eq!(r.error, Some(libc::ECONNREFUSED));
    assert_eq!((r.src, r.dst), (e.src, e.dst));
    assert!(r.duration_us().is_some());
    sys::close(fd);
}

/// Runs `f` on a thread of its own in a new network namespace whose
/// loopback is up, with `nft` rules applied there.
fn in_new_netns<T: Send + 'static>(nft: &'static str, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's namespaces.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        // Children forked from this thread start in its namespace.
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
        if !nft.is_empty() {
            let mut child = Command::new("nft")
                .args(["-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("nft (package nftables)");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(nft.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "nft -f -");
        }
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn a_connect_whose_syns_are_dropped_times_out_with_etimedout() {
    let h = harness();
    let (fd, inode, tid, src, dst) = in_new_netns(
        "table inet sockmon_test {\n chain out {\n  type filter hook output priority 0;\n  tcp dport 9 drop\n }\n}\n",
        || {
            let fd = sys::tcp_socket(libc::SOCK_NONBLOCK);
            let one: libc::c_int = 1;
            // SAFETY: setsockopt with a valid int on our socket: one SYN
            // retry, so the connect gives up after about 3 s.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_SYNCNT,
                    (&raw const one).cast(),
                    size_of::<libc::c_int>() as u32,
                )
            };
            assert_eq!(rc, 0);
            let dst = SocketAddrV4::new([127, 0, 0, 1].into(), 9);
            assert_eq!(sys::connect(fd, dst), Err(libc::EINPROGRESS));
            let src = sys::local_addr(fd);
            let inode = sys::inode_of_fd(fd);
            // The socket stays open (in this namespace) until its outcome.
            (fd, inode, gettid(), src, dst)
        },
    );
    let r = h.expect_within(
        "timeout",
        std::process::id(),
        Duration::from_secs(30),
        |e| e.kind == EventKind::ConnectResult && e.inode == inode,
    );
    assert_eq!((r.pid, r.tid), (std::process::id(), tid));
    assert_eq!(r.error, Some(libc::ETIMEDOUT));
    assert_eq!((r.src, r.dst), (src, SocketAddr::V4(dst)));
    assert!(r.duration_us().unwrap() >= 1_000_000, "{r:?}");
    sys::close(fd);
}

#[test]
fn an_accept_of_a_connection_reset_before_it_carries_the_real_tuple() {
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect(server).unwrap();
    let client_addr = client.local_addr().unwrap();
    // Close with RST: SO_LINGER on, timeout 0.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid linger struct on our socket.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0);
    drop(client);
    // The reset connection is still in the accept queue.
    std::thread::sleep(Duration::from_millis(50));
    let (stream, peer) = listener.accept().unwrap();
    assert_eq!(peer, client_addr);
    let inode = inode_of(&stream);
    let e = h.expect("accept of a reset connection", std::process::id(), |e| {
        e.kind == EventKind::Accept && e.inode == inode
    });
    assert_mine(&e, inode);
    assert_eq!((e.src, e.dst), (server, client_addr));
}

#[test]
fn tcp_fast_open_connects_are_reported_with_their_process() {
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = v4(listener.local_addr().unwrap());
    let fd = sys::tcp_socket(0);
    let inode = sys::inode_of_fd(fd);
    let sa = sys::sockaddr_in(server);
    // SAFETY: sendto with a valid buffer and sockaddr on our socket; with
    // MSG_FASTOPEN it connects (no connect(2) at all).
    let n = unsafe {
        libc::sendto(
            fd,
            b"hello".as_ptr().cast(),
            5,
            libc::MSG_FASTOPEN,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    assert_eq!(n, 5, "sendto(MSG_FASTOPEN): errno {}", sys::errno());
    let src = sys::local_addr(fd);
    let e = h.expect("fast open connect", std::process::id(), |e| {
        e.kind == EventKind::Connect && e.inode == inode
    });
    assert_mine(&e, inode);
    assert_eq!((e.src, e.dst, e.error), (src, SocketAddr::V4(server), None));
    let r = h.expect("fast open outcome", std::process::id(), |e| {
        e.kind == EventKind::ConnectResult && e.inode == inode
    });
    assert_mine(&r, inode);
    assert_eq!(r.error, None);
    let (_accepted, _) = listener.accept().unwrap();
    sys::close(fd);
}

/// The thread that acted on an io_uring request: this thread when the
/// request ran inline, else one of this process's io-wq workers.
fn assert_io_uring_actor(e: &sockmon::event::Event) {
    assert_eq!(e.pid, std::process::id(), "{e:?}");
    if e.tid != gettid() {
        let comm =
            std::fs::read_to_string(format!("/proc/self/task/{}/comm", e.tid)).unwrap_or_default();
        assert!(comm.starts_with("iou-wrk-"), "tid {} is {comm:?}", e.tid);
    }
}

#[test]
fn io_uring_connect_and_accept_are_reported_with_their_process() {
    use io_uring::{IoUring, opcode, types};

    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = v4(listener.local_addr().unwrap());
    let mut ring = IoUring::new(8).expect("io_uring_setup");

    // Connect through the ring: no connect(2).
    let fd = sys::tcp_socket(0);
    let inode = sys::inode_of_fd(fd);
    let sa = sys::sockaddr_in(server);
    let connect = opcode::Connect::new(
        types::Fd(fd),
        (&raw const sa).cast(),
        size_of::<libc::sockaddr_in>() as u32,
    )
    .build()
    .user_data(1);
    // SAFETY: `sa` outlives the request (we wait for its completion below).
    unsafe { ring.submission().push(&connect).unwrap() };
    ring.submit_and_wait(1).unwrap();
    let cqe = ring.completion().next().unwrap();
    assert_eq!(cqe.result(), 0, "io_uring connect");
    let src = sys::local_addr(fd);
    let e = h.expect("io_uring connect", std::process::id(), |e| {
        e.kind == EventKind::Connect && e.inode == inode
    });
    assert_io_uring_actor(&e);
    assert_eq!(
        (e.inode, e.src, e.dst),
        (inode, src, SocketAddr::V4(server))
    );

    // Accept through the ring, with an address buffer.
    // SAFETY: `sockaddr_in` is plain old data; all zeroes is a valid value.
    let mut peer: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let accept = opcode::Accept::new(
        types::Fd(listener.as_raw_fd()),
        (&raw mut peer).cast(),
        &raw mut len,
    )
    // Close-on-exec, as every descriptor of the tests: no other test's
    // child may inherit it.
    .flags(libc::SOCK_CLOEXEC)
    .build()
    .user_data(2);
    // SAFETY: `peer` and `len` outlive the request.
    unsafe { ring.submission().push(&accept).unwrap() };
    ring.submit_and_wait(1).unwrap();
    let cqe = ring.completion().next().unwrap();
    assert!(cqe.result() >= 0, "io_uring accept: {}", cqe.result());
    // SAFETY: the completion's result is a new descriptor we now own.
    let accepted = unsafe { TcpStream::from_raw_fd(cqe.result()) };
    let ai = inode_of(&accepted);
    let a = h.expect("io_uring accept", std::process::id(), |e| {
        e.kind == EventKind::Accept && e.inode == ai
    });
    assert_io_uring_actor(&a);
    assert_eq!((a.src, a.dst), (SocketAddr::V4(server), src));
    sys::close(fd);
}
