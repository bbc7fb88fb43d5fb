//! bind and listen, through `std::net::TcpListener` (socket, bind, listen).

use std::net::TcpListener;

use sockmon::event::{EventKind, Family, Proto};

use crate::harness::{addr, assert_mine, harness, inode_of};

#[test]
fn listener_on_an_ephemeral_port_reports_the_kernel_chosen_port() {
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let inode = inode_of(&listener);
    let local = addr(&format!("127.0.0.1:{port}"));
    let pid = std::process::id();

    let bind = h.expect("bind", pid, |e| {
        e.kind == EventKind::Bind && e.inode == inode
    });
    assert_mine(&bind, inode);
    assert_eq!(bind.src, local);
    assert_eq!(bind.dst, addr("0.0.0.0:0"));
    assert_eq!(
        (bind.proto, bind.family, bind.error),
        (Proto::Tcp, Family::Ipv4, None)
    );

    let listen = h.expect("listen", pid, |e| {
        e.kind == EventKind::Listen && e.inode == inode
    });
    assert_mine(&listen, inode);
    assert_eq!(listen.src, local);
    assert_eq!(listen.dst, addr("0.0.0.0:0"));
    assert_eq!(listen.error, None);
    assert_eq!(bind.source().name(), h.source("bind"));
    assert_eq!(listen.source().name(), h.source("listen"));
    // Once each, by one family (in a mixed load, the socket layer's shared
    // program must leave the kinds of the kernel-function hooks alone):
    // every record of this thread before its close has arrived by then.
    drop(listener);
    let close = h.expect("close", pid, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
    assert_eq!(close.source().name(), h.source("close"));
    for kind in [EventKind::Bind, EventKind::Listen] {
        let n = h.all(|e| e.kind == kind && e.inode == inode).len();
        assert_eq!(n, 1, "{kind:?} reported {n} times");
    }
}

#[test]
fn a_bind_to_a_port_in_use_reports_eaddrinuse_and_the_requested_address() {
    let h = harness();
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap().port();
    // SAFETY: plain socket syscalls on a descriptor we own.
    let (fd, rc, errno) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::bind(
            fd,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        );
        (fd, rc, *libc::__errno_location())
    };
    assert_eq!((rc, errno), (-1, libc::EADDRINUSE));
    let inode = {
        // SAFETY: `stat` is plain old data; all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat of our descriptor into a local buffer.
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        st.st_ino
    };
    if h.source("bind") != "socket" {
        // The syscall exit and the kernel-function hook see the errno.
        let e = h.expect("failed bind", std::process::id(), |e| {
            e.kind == EventKind::Bind && e.inode == inode
        });
        assert_mine(&e, inode);
        assert_eq!(e.source().name(), h.source("bind"));
        assert_eq!(e.error, Some(libc::EADDRINUSE));
        assert_eq!(e.src, addr(&format!("127.0.0.1:{port}")));
    } else {
        // The socket layer sees only binds that succeed (documented): a
        // later bind of this process is reported, the failed one never is.
        let later = TcpListener::bind("127.0.0.1:0").unwrap();
        let li = inode_of(&later);
        h.expect("a later bind", std::process::id(), |e| {
            e.kind == EventKind::Bind && e.inode == li
        });
        assert!(h.all(|e| e.inode == inode).is_empty());
    }
    // SAFETY: closing our descriptor.
    unsafe { libc::close(fd) };
}
