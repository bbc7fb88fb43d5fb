//! IPv6 loopback: bind, listen, connect, accept and close with `[::1]`.

use std::net::{TcpListener, TcpStream};

use sockmon::event::{EventKind, Family};

use crate::harness::{assert_mine, harness, inode_of};

#[test]
fn ipv6_loopback_connection_is_reported_as_ipv6() {
    let h = harness();
    let pid = std::process::id();
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect(server).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let (ci, ai, li) = (inode_of(&client), inode_of(&accepted), inode_of(&listener));

    let listen = h.expect("listen", pid, |e| {
        e.kind == EventKind::Listen && e.inode == li
    });
    assert_mine(&listen, li);
    assert_eq!((listen.family, listen.src), (Family::Ipv6, server));
    assert_eq!(listen.dst, "[::]:0".parse().unwrap());

    let c = h.expect("connect", pid, |e| {
        e.kind == EventKind::Connect && e.inode == ci
    });
    assert_mine(&c, ci);
    assert_eq!(c.family, Family::Ipv6);
    assert_eq!((c.src, c.dst), (client.local_addr().unwrap(), server));

    let a = h.expect("accept", pid, |e| {
        e.kind == EventKind::Accept && e.inode == ai
    });
    assert_mine(&a, ai);
    assert_eq!((a.src, a.dst), (server, client.local_addr().unwrap()));

    let client_addr = client.local_addr().unwrap();
    drop(client);
    let close = h.expect("close", pid, |e| {
        e.kind == EventKind::Close && e.inode == ci
    });
    assert_mine(&close, ci);
    assert_eq!(
        (close.family, close.src, close.dst),
        (Family::Ipv6, client_addr, server)
    );
}

#[test]
fn an_ipv4_mapped_connect_is_reported_once_as_ipv4() {
    // An IPv6 socket connecting to ::ffff:127.0.0.1: the kernel runs
    // tcp_v4_connect inside tcp_v6_connect; the record is one, and the
    // mapped addresses are reported as the IPv4 ones they are.
    let h = harness();
    let pid = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let mapped: std::net::SocketAddr = format!("[::ffff:127.0.0.1]:{}", server.port())
        .parse()
        .unwrap();
    let client = TcpStream::connect(mapped).unwrap();
    let ci = inode_of(&client);
    let std::net::SocketAddr::V6(local) = client.local_addr().unwrap() else {
        panic!("an IPv6 socket");
    };
    let local_v4 =
        std::net::SocketAddr::new(local.ip().to_ipv4_mapped().unwrap().into(), local.port());
    let c = h.expect("mapped connect", pid, |e| {
        e.kind == EventKind::Connect && e.inode == ci
    });
    assert_mine(&c, ci);
    assert_eq!((c.family, c.src, c.dst), (Family::Ipv4, local_v4, server));
    assert_eq!(c.source().name(), h.source("connect"));
    let r = h.expect("mapped connect's result", pid, |e| {
        e.kind == EventKind::ConnectResult && e.inode == ci
    });
    assert_eq!((r.error, r.src, r.dst), (None, local_v4, server));
    let n = h
        .all(|e| e.kind == EventKind::Connect && e.inode == ci)
        .len();
    assert_eq!(n, 1, "the mapped connect reported {n} times");
    drop((client, listener));
}
