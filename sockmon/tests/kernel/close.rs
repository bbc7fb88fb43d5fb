//! close: the end of a socket removes it from the table, with the tuple
//! still reported though the kernel clears the ports during the close.

use std::{
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
};

use sockmon::{
    event::{EventKind, Proto},
    table::{SockState, TupleKey},
};

use crate::harness::{assert_mine, harness, inode_of, my_netns};

#[test]
fn close_reports_the_tuple_and_removes_the_table_entry() {
    let h = harness();
    let pid = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect(server).unwrap();
    let local = client.local_addr().unwrap();
    let inode = inode_of(&client);
    let key = TupleKey::new(my_netns(), Proto::Tcp, local, server);

    h.expect("connect", pid, |e| {
        e.kind == EventKind::Connect && e.inode == inode
    });
    // The connect's outcome is its own record (written at the SYN-ACK), and
    // may come in a later batch than the connect: the row is `Connected`
    // once it is applied. A batch is applied to the table before its
    // events are seen, so after this the row is settled.
    h.expect("connect result", pid, |e| {
        e.kind == EventKind::ConnectResult && e.inode == inode
    });
    {
        let table = h.table();
        let rows: Vec<_> = table.lookup(&key).collect();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].inode, inode);
        assert_eq!(rows[0].state, SockState::Connected);
        assert_eq!(
            rows[0].owners.iter().map(|o| o.pid).collect::<Vec<_>>(),
            vec![pid]
        );
    }

    drop(client);
    let e = h.expect("close", pid, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
    assert_mine(&e, inode);
    assert_eq!((e.src, e.dst, e.error), (local, server, None));
    let table = h.table();
    assert_eq!(table.lookup(&key).count(), 0);
    assert!(table.get(inode).is_none());
    let _ = listener.as_raw_fd();
}

#[test]
fn closing_one_of_two_descriptors_does_not_end_the_socket() {
    let h = harness();
    let pid = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let inode = inode_of(&listener);
    let dup = listener.try_clone().unwrap();
    h.expect("listen", pid, |e| {
        e.kind == EventKind::Listen && e.inode == inode
    });
    drop(dup);
    // A later socket's close proves the ring was drained past the dup's close.
    let marker = TcpListener::bind("127.0.0.1:0").unwrap();
    let marker_inode = inode_of(&marker);
    drop(marker);
    h.expect("marker close", pid, |e| {
        e.kind == EventKind::Close && e.inode == marker_inode
    });
    assert!(
        h.all(|e| e.kind == EventKind::Close && e.inode == inode)
            .is_empty()
    );
    assert!(h.table().get(inode).is_some());
    drop(listener);
    h.expect("close", pid, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
}
