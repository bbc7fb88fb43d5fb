//! accept / accept4, in a thread other than the process's main thread,
//! with and without an address buffer.

use std::{
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::mpsc,
};

use sockmon::event::EventKind;

use crate::{
    harness::{gettid, harness, inode_of, my_cgroup_id, my_netns},
    sys,
};

#[test]
fn accept_in_a_non_main_thread_is_the_process_with_that_threads_tid() {
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let acceptor = std::thread::Builder::new()
        .name("acceptor-thr".into())
        .spawn(move || {
            // std's accept uses accept4(2).
            let (stream, peer) = listener.accept().unwrap();
            tx.send((gettid(), inode_of(&stream), peer)).unwrap();
            stream
        })
        .unwrap();
    let client = TcpStream::connect(server).unwrap();
    let (tid, inode, peer) = rx.recv().unwrap();
    assert_ne!(
        tid,
        std::process::id(),
        "the acceptor must not be the main thread"
    );
    assert_eq!(peer, client.local_addr().unwrap());

    let e = h.expect("accept", std::process::id(), |e| {
        e.kind == EventKind::Accept && e.inode == inode
    });
    assert_eq!(e.pid, std::process::id());
    assert_eq!(e.tid, tid);
    assert_eq!(e.comm.as_bytes(), b"acceptor-thr");
    assert_eq!(e.src, server);
    assert_eq!(e.dst, client.local_addr().unwrap());
    assert_eq!(
        (e.netns, e.cgroup_id, e.uid, e.error),
        (my_netns(), my_cgroup_id(), 0, None)
    );
    drop(acceptor.join().unwrap());
}

#[test]
fn accept_without_an_address_is_reported_where_the_mode_sees_it() {
    // accept(fd, NULL, NULL) (libuv, Node, many C servers) never asks for
    // the peer's address, so the socket layer's accept hook (getpeername)
    // never runs: that mode reports no accept (documented; the socket is
    // first seen at its release). The syscall exit and the kernel-function
    // hook on `inet_accept` report it with the accepting thread.
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let lfd = listener.as_raw_fd();
    let (tx, rx) = mpsc::channel();
    let acceptor = std::thread::Builder::new()
        .name("null-acceptor".into())
        .spawn(move || {
            // SAFETY: accept on our listener, with no address buffer.
            let fd = unsafe {
                libc::accept4(
                    lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            assert!(fd >= 0, "accept4: errno {}", sys::errno());
            tx.send((gettid(), fd, sys::inode_of_fd(fd))).unwrap();
        })
        .unwrap();
    let client = TcpStream::connect(server).unwrap();
    let (tid, fd, inode) = rx.recv().unwrap();
    acceptor.join().unwrap();
    assert_ne!(tid, std::process::id());
    match h.source("accept") {
        "socket" => {
            // Its release is the first sight of it.
            sys::close(fd);
            h.expect("the accepted socket's close", std::process::id(), |e| {
                e.kind == EventKind::Close && e.inode == inode
            });
            assert!(
                h.all(|e| e.kind == EventKind::Accept && e.inode == inode)
                    .is_empty()
            );
        }
        source => {
            let e = h.expect("accept without an address", std::process::id(), |e| {
                e.kind == EventKind::Accept && e.inode == inode
            });
            assert_eq!(e.source().name(), source);
            assert_eq!((e.pid, e.tid), (std::process::id(), tid));
            assert_eq!(e.comm.as_bytes(), b"null-acceptor");
            assert_eq!(e.src, server);
            assert_eq!(e.dst, client.local_addr().unwrap());
            assert_eq!(
                (e.netns, e.cgroup_id, e.uid, e.error),
                (my_netns(), my_cgroup_id(), 0, None)
            );
            sys::close(fd);
        }
    }
    drop((client, listener));
}
