//! UDP: explicit bind, connect, and the implicit bind of an unbound socket on
//! its first sendto (reported once, flagged implicit).

use std::net::{SocketAddr, UdpSocket};

use sockmon::event::{EventKind, Proto};

use crate::{
    harness::{assert_mine, harness, inode_of},
    sys,
};

#[test]
fn udp_bind_and_connect() {
    let h = harness();
    let pid = std::process::id();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let si = inode_of(&server);
    let bind = h.expect("udp bind", pid, |e| {
        e.kind == EventKind::Bind && e.inode == si
    });
    assert_mine(&bind, si);
    assert_eq!(
        (bind.proto, bind.src, bind.error),
        (Proto::Udp, server_addr, None)
    );
    assert!(!bind.is_implicit());

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(server_addr).unwrap();
    let ci = inode_of(&client);
    let connect = h.expect("udp connect", pid, |e| {
        e.kind == EventKind::Connect && e.inode == ci
    });
    assert_mine(&connect, ci);
    assert_eq!(connect.proto, Proto::Udp);
    assert_eq!(
        (connect.src, connect.dst),
        (client.local_addr().unwrap(), server_addr)
    );
    // A connected socket's sends report nothing more.
    client.send(b"x").unwrap();
    let local = client.local_addr().unwrap();
    drop(client);
    let close = h.expect("udp close", pid, |e| {
        e.kind == EventKind::Close && e.inode == ci
    });
    assert_eq!(
        (close.proto, close.src, close.dst),
        (Proto::Udp, local, server_addr)
    );
    assert!(h.all(|e| e.inode == ci && e.is_implicit()).is_empty());
}

#[test]
fn udp_sendto_on_an_unbound_socket_reports_one_implicit_bind() {
    let h = harness();
    let pid = std::process::id();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(target) = server.local_addr().unwrap() else {
        unreachable!()
    };
    // SAFETY: plain socket syscalls on our own descriptor with a valid sockaddr.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    let inode = sys::inode_of_fd(fd);
    let sa = sys::sockaddr_in(target);
    for _ in 0..3 {
        // SAFETY: as above.
        let n = unsafe {
            libc::sendto(
                fd,
                b"q".as_ptr().cast(),
                1,
                0,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert_eq!(n, 1);
    }
    let local = sys::local_addr(fd);
    assert_ne!(local.port(), 0);
    let e = h.expect("implicit bind", pid, |e| {
        e.kind == EventKind::Bind && e.inode == inode
    });
    assert_mine(&e, inode);
    assert!(e.is_implicit());
    assert_eq!(e.source().name(), h.source("udp_implicit_bind"));
    assert_eq!(
        (e.proto, e.src.port(), e.error),
        (Proto::Udp, local.port(), None)
    );
    sys::close(fd);
    h.expect("close", pid, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
    let binds = h.all(|e| e.kind == EventKind::Bind && e.inode == inode);
    assert_eq!(
        binds.len(),
        1,
        "one implicit bind for three sends: {binds:?}"
    );
}

#[test]
fn udp_connect_of_an_unbound_socket_reports_the_local_port_where_the_mode_knows_it() {
    // A UDP connect picks the local address and port inside the kernel
    // (`inet_autobind`, then the route). The syscall exit and the
    // kernel-function hook see them; the socket layer's hook runs before
    // and says the local end is still pending (documented).
    let h = harness();
    let pid = std::process::id();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let client = sys::udp_socket();
    let ci = sys::inode_of_fd(client);
    let SocketAddr::V4(target) = server_addr else {
        unreachable!()
    };
    sys::connect(client, target).unwrap();
    let local = sys::local_addr(client);
    assert_ne!(local.port(), 0);
    let connect = h.expect("udp connect", pid, |e| {
        e.kind == EventKind::Connect && e.inode == ci
    });
    assert_mine(&connect, ci);
    assert_eq!((connect.proto, connect.dst), (Proto::Udp, server_addr));
    match h.source("connect") {
        "socket" => {
            assert!(connect.local_pending());
            assert_eq!(connect.src.port(), 0);
        }
        source => {
            assert_eq!(connect.source().name(), source);
            assert!(!connect.local_pending());
            assert_eq!(connect.src, local);
        }
    }
    // The autobind inside the connect is the connect's: no implicit bind.
    sys::close(client);
    h.expect("close", pid, |e| {
        e.kind == EventKind::Close && e.inode == ci
    });
    let binds = h.all(|e| e.kind == EventKind::Bind && e.inode == ci);
    assert!(binds.is_empty(), "{binds:?}");
}
