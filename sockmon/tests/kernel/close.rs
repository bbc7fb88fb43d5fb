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

#[test]
fn a_dup2_over_the_last_descriptor_ends_the_socket() {
    let h = harness();
    let pid = std::process::id();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    let inode = inode_of(&sock);
    let (r, w) = crate::sys::pipe();
    // SAFETY: dup2 of our pipe over our socket's descriptor (as dup3, the
    // same kernel path, to keep the copy close-on-exec: no other test's
    // child may inherit it), then closing what is ours; `sock` is
    // forgotten, its descriptor now the pipe's.
    unsafe {
        let fd = std::os::fd::IntoRawFd::into_raw_fd(sock);
        assert_eq!(libc::dup3(r, fd, libc::O_CLOEXEC), fd);
        libc::close(fd);
    }
    let e = h.expect("close by dup2", pid, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
    assert_mine(&e, inode);
    assert_eq!((e.proto, e.src), (Proto::Udp, local));
    crate::sys::close(r);
    crate::sys::close(w);
}

/// A child that makes a socket of its own and ends it, by `how`: `exit`
/// (its last holder exits) or `exec` (close-on-exec). The child listens
/// without binding, so the kernel chooses the port; it reports the socket's
/// inode and port on a pipe. Returns (child pid, inode, port).
fn child_socket(how: &str) -> (u32, u64, u16) {
    let (r, w) = crate::sys::pipe();
    let true_bin = std::ffi::CString::new("/bin/true").unwrap();
    let argv = [true_bin.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    let exec = how == "exec";
    let child = crate::sys::fork_keeping(&[w]);
    if child == 0 {
        // SAFETY: async-signal-safe calls only, on our own descriptors.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 || libc::listen(fd, 1) != 0 {
                libc::_exit(2);
            }
            let mut st: libc::stat = std::mem::zeroed();
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            let mut len = size_of::<libc::sockaddr_in>() as u32;
            if libc::fstat(fd, &mut st) != 0
                || libc::getsockname(fd, (&raw mut sa).cast(), &mut len) != 0
            {
                libc::_exit(3);
            }
            let msg = [st.st_ino, u64::from(u16::from_be(sa.sin_port))];
            libc::write(w, msg.as_ptr().cast(), 16);
            if exec {
                libc::execve(true_bin.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
            libc::_exit(0);
        }
    }
    crate::sys::close(w);
    let mut msg = [0u64; 2];
    // SAFETY: reading 16 bytes into our array.
    let n = unsafe { libc::read(r, msg.as_mut_ptr().cast(), 16) };
    assert_eq!(n, 16, "the child reported nothing");
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status}"
    );
    crate::sys::close(r);
    (child as u32, msg[0], msg[1] as u16)
}

#[test]
fn a_listen_without_bind_and_the_exit_of_its_only_holder() {
    let h = crate::harness::harness_forking();
    let (child, inode, port) = child_socket("exit");
    assert_ne!(port, 0);
    let listen = h.expect("listen without bind", child, |e| {
        e.kind == EventKind::Listen && e.inode == inode
    });
    assert_eq!((listen.pid, listen.tid), (child, child));
    assert_eq!(listen.src, format!("0.0.0.0:{port}").parse().unwrap());
    assert_eq!(listen.source().name(), h.source("listen"));
    let close = h.expect("close at exit", child, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
    assert_eq!((close.pid, close.tid), (child, child));
    assert_eq!(close.src.port(), port);
    assert!(h.table().get(inode).is_none());
}

#[test]
fn an_exec_closes_a_close_on_exec_socket() {
    let h = crate::harness::harness_forking();
    let (child, inode, port) = child_socket("exec");
    let close = h.expect("close at exec", child, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
    assert_eq!((close.pid, close.tid), (child, child));
    assert_eq!(close.src.port(), port);
    // The exec itself is a process change of the same pid.
    h.expect_proc("exec", |p| p.kind == EventKind::Exec && p.pid == child);
    assert!(h.table().get(inode).is_none());
}
