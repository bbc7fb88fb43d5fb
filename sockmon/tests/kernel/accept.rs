//! accept / accept4, in a thread other than the process's main thread.

use std::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use sockmon::event::EventKind;

use crate::harness::{gettid, harness, inode_of, my_cgroup_id, my_netns};

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
