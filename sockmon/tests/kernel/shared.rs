//! Sockets shared without a fork: a descriptor passed over a Unix socket
//! (SCM_RIGHTS) and used by the receiver, and a `dup`.

use std::{
    net::{SocketAddr, SocketAddrV4, TcpListener},
    os::fd::AsRawFd as _,
};

use sockmon::{event::EventKind, table::OwnerSource};

use crate::{
    harness::{harness, harness_forking},
    sys,
};

/// Sends `fd` over the Unix socket `via` with SCM_RIGHTS.
fn send_fd(via: i32, fd: i32) {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(size_of::<i32>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr/cmsghdr built in local buffers of the right sizes.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        assert_eq!(libc::sendmsg(via, &msg, 0), 1);
    }
}

/// Receives one descriptor from `via` (async-signal-safe: used in a child).
fn recv_fd(via: i32) -> i32 {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u8; 64];
    // SAFETY: as in send_fd.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        if libc::recvmsg(via, &mut msg, libc::MSG_CMSG_CLOEXEC) != 1 {
            return -1;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return -1;
        }
        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>())
    }
}

#[test]
fn a_socket_passed_with_scm_rights_and_connected_by_the_receiver_is_the_receivers() {
    let h = harness_forking();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(server) = listener.local_addr().unwrap() else {
        unreachable!()
    };
    let mut pair = [0i32; 2];
    assert_eq!(
        // SAFETY: socketpair into a local array.
        unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        },
        0
    );
    // The receiver: a forked child that waits for a descriptor and connects it.
    // The child keeps only its end of the pair; async-signal-safe calls, then _exit.
    let child = sys::fork_keeping(&[pair[1]]);
    if child == 0 {
        let fd = recv_fd(pair[1]);
        let ok = fd >= 0 && sys::connect(fd, server).is_ok();
        // SAFETY: async-signal-safe; report the result, keep the socket until told.
        unsafe {
            libc::write(pair[1], [ok as u8].as_ptr().cast(), 1);
            let mut b = [0u8; 1];
            libc::read(pair[1], b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    let child = child as u32;
    // The sender creates the socket, passes it, and closes its own copy.
    let fd = sys::tcp_socket(0);
    let inode = sys::inode_of_fd(fd);
    send_fd(pair[0], fd);
    sys::close(fd);
    let mut ok = [0u8; 1];
    // SAFETY: reading the child's report into a local byte.
    assert_eq!(unsafe { libc::read(pair[0], ok.as_mut_ptr().cast(), 1) }, 1);
    assert_eq!(ok[0], 1, "the receiver's connect failed");

    let e = h.expect("connect by the receiver", child, |e| {
        e.kind == EventKind::Connect && e.inode == inode
    });
    assert_eq!((e.pid, e.tid), (child, child));
    assert_eq!(e.dst, SocketAddr::V4(server));
    {
        let t = h.table();
        let owners: Vec<_> = t
            .get(inode)
            .unwrap()
            .owners
            .iter()
            .map(|o| (o.pid, o.source))
            .collect();
        assert_eq!(owners, vec![(child, OwnerSource::Event)]);
    }
    // The receiver closes it (by exiting): the end of the socket is its.
    // SAFETY: telling the child to go, reaping it, closing our ends.
    unsafe {
        libc::write(pair[0], [0u8].as_ptr().cast(), 1);
        libc::waitpid(child as i32, std::ptr::null_mut(), 0);
        libc::close(pair[0]);
        libc::close(pair[1]);
    }
    let close = h.expect("close", child, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
    assert_eq!(close.pid, child);
    assert!(h.table().get(inode).is_none());
    let _ = SocketAddrV4::new([0, 0, 0, 0].into(), 0);
    let _ = listener.as_raw_fd();
}

#[test]
fn a_dup_is_the_same_socket_and_the_same_owner() {
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(server) = listener.local_addr().unwrap() else {
        unreachable!()
    };
    let fd = sys::tcp_socket(0);
    // SAFETY: dup of our own descriptor.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    assert!(copy >= 0);
    assert_eq!(sys::connect(copy, server), Ok(()));
    let inode = sys::inode_of_fd(fd);
    let pid = std::process::id();
    h.expect("connect through the dup", pid, |e| {
        e.kind == EventKind::Connect && e.inode == inode
    });
    sys::close(copy);
    sys::close(fd);
    h.expect("one close when the last copy goes", pid, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
    assert_eq!(
        h.all(|e| e.kind == EventKind::Close && e.inode == inode)
            .len(),
        1
    );
}
