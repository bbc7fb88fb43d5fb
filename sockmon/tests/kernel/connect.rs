//! connect: from a forked child, refused, non-blocking.

use std::{
    net::{SocketAddr, SocketAddrV4, TcpListener},
    os::fd::AsRawFd as _,
};

use sockmon::event::{EventKind, Proto};

use crate::{
    harness::{assert_mine, harness, harness_forking, my_comm},
    sys,
};

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("expected IPv4"),
    }
}

#[test]
fn connect_from_a_forked_child_is_the_childs_with_the_kernel_chosen_source_port() {
    let h = harness_forking();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = v4(listener.local_addr().unwrap());
    let (pipe_r, pipe_w) = sys::pipe();
    let pipe = [pipe_r, pipe_w];
    // The child only makes async-signal-safe calls, then _exit.
    let child = sys::fork_keeping(&[pipe_w]);
    if child == 0 {
        let fd = sys::tcp_socket(0);
        let ok = sys::connect(fd, server).is_ok();
        // SAFETY: async-signal-safe calls with valid buffers.
        unsafe {
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            let mut len = size_of::<libc::sockaddr_in>() as u32;
            libc::getsockname(fd, (&raw mut sa).cast(), &mut len);
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(fd, &mut st);
            let mut msg = [0u8; 11];
            msg[0] = ok as u8;
            msg[1..3].copy_from_slice(&u16::from_be(sa.sin_port).to_ne_bytes());
            msg[3..11].copy_from_slice(&st.st_ino.to_ne_bytes());
            libc::write(pipe[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    let mut msg = [0u8; 11];
    // SAFETY: reading into a local buffer from our pipe.
    let n = unsafe { libc::read(pipe[0], msg.as_mut_ptr().cast(), msg.len()) };
    // SAFETY: reaping our child; closing our pipe.
    unsafe {
        libc::waitpid(child, std::ptr::null_mut(), 0);
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    assert_eq!((n, msg[0]), (11, 1), "the child's connect failed");
    let src_port = u16::from_ne_bytes([msg[1], msg[2]]);
    let inode = u64::from_ne_bytes(msg[3..11].try_into().unwrap());
    let child = child as u32;

    let e = h.expect("connect", child, |e| {
        e.kind == EventKind::Connect && e.pid == child
    });
    assert_eq!((e.pid, e.tid), (child, child));
    assert_eq!(e.comm.as_bytes(), my_comm());
    assert_eq!(e.inode, inode);
    assert_eq!(e.src, SocketAddr::from(([127, 0, 0, 1], src_port)));
    assert_eq!(e.dst, SocketAddr::V4(server));
    assert_eq!((e.proto, e.error), (Proto::Tcp, None));
    let r = h.expect("the child's connect result", child, |e| {
        e.kind == EventKind::ConnectResult && e.inode == inode
    });
    assert_eq!((r.pid, r.tid, r.error), (child, child, None));
    assert_eq!(r.src, SocketAddr::from(([127, 0, 0, 1], src_port)));
    drop(listener);
}

#[test]
fn refused_connect_reports_econnrefused_with_the_full_tuple() {
    let h = harness();
    // A bound, non-listening socket: a SYN to it is answered with RST.
    let closed = sys::tcp_socket(0);
    let sa = sys::sockaddr_in(SocketAddrV4::new([127, 0, 0, 1].into(), 0));
    assert_eq!(
        // SAFETY: bind of our socket to a valid sockaddr.
        unsafe {
            libc::bind(
                closed,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        },
        0
    );
    let target = v4(sys::local_addr(closed));

    let fd = sys::tcp_socket(0);
    let inode = sys::inode_of_fd(fd);
    assert_eq!(sys::connect(fd, target), Err(libc::ECONNREFUSED));
    let src_port = sys::local_addr(fd).port();
    assert_ne!(src_port, 0);

    let e = h.expect("refused connect", std::process::id(), |e| {
        e.kind == EventKind::Connect && e.inode == inode
    });
    assert_mine(&e, inode);
    // The syscall knows the syscall's result; the socket layer reports the
    // attempt, and the outcome in `connect_result` (both modes).
    let attempt_error = if h.syscalls() {
        Some(libc::ECONNREFUSED)
    } else {
        None
    };
    assert_eq!(e.error, attempt_error);
    assert_eq!(e.dst, SocketAddr::V4(target));
    assert_eq!(e.src, SocketAddr::from(([127, 0, 0, 1], src_port)));
    let r = h.expect("refused connect's result", std::process::id(), |e| {
        e.kind == EventKind::ConnectResult && e.inode == inode
    });
    assert_mine(&r, inode);
    assert_eq!(r.error, Some(libc::ECONNREFUSED));
    assert_eq!(r.dst, SocketAddr::V4(target));
    assert_eq!(r.src, SocketAddr::from(([127, 0, 0, 1], src_port)));
    sys::close(fd);
    sys::close(closed);
}

#[test]
fn non_blocking_connect_reports_its_result_and_source_port() {
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = v4(listener.local_addr().unwrap());
    let fd = sys::tcp_socket(libc::SOCK_NONBLOCK);
    let inode = sys::inode_of_fd(fd);
    let result = sys::connect(fd, server);
    assert!(
        matches!(result, Ok(()) | Err(libc::EINPROGRESS)),
        "{result:?}"
    );
    let src = sys::local_addr(fd);
    assert_ne!(src.port(), 0);

    let e = h.expect("non-blocking connect", std::process::id(), |e| {
        e.kind == EventKind::Connect && e.inode == inode
    });
    assert_mine(&e, inode);
    let attempt_error = if h.syscalls() { result.err() } else { None };
    assert_eq!(e.error, attempt_error);
    assert_eq!(e.src, src);
    assert_eq!(e.dst, SocketAddr::V4(server));
    let r = h.expect("non-blocking connect's result", std::process::id(), |e| {
        e.kind == EventKind::ConnectResult && e.inode == inode
    });
    assert_mine(&r, inode);
    assert_eq!((r.error, r.src, r.dst), (None, src, SocketAddr::V4(server)));
    assert_eq!(e.source().name(), h.source("connect"));
    assert_eq!(r.source().name(), h.source("connect_result"));
    // Reported once, by one family (the outcome comes after the attempt).
    let n = h
        .all(|e| e.kind == EventKind::Connect && e.inode == inode)
        .len();
    assert_eq!(n, 1, "the connect reported {n} times");
    let _ = listener.as_raw_fd();
    sys::close(fd);
}
