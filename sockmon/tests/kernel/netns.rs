//! A socket in another network namespace: reported with that namespace's
//! inode, by the process that made it.

use sockmon::event::{EventKind, Proto};

use crate::harness::{harness_forking, my_netns};

#[test]
fn a_bind_in_another_network_namespace_carries_that_namespace() {
    let h = harness_forking();
    let (r, w) = crate::sys::pipe();
    let ns_path = c"/proc/self/ns/net";
    let child = crate::sys::fork_keeping(&[w]);
    if child == 0 {
        // SAFETY: async-signal-safe calls only, on our own descriptors.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                libc::_exit(2);
            }
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as u16;
            let mut len = size_of::<libc::sockaddr_in>() as u32;
            if fd < 0
                || libc::bind(fd, (&raw const sa).cast(), len) != 0
                || libc::getsockname(fd, (&raw mut sa).cast(), &mut len) != 0
            {
                libc::_exit(3);
            }
            let mut st: libc::stat = std::mem::zeroed();
            let mut ns: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) != 0 || libc::stat(ns_path.as_ptr(), &mut ns) != 0 {
                libc::_exit(4);
            }
            let msg = [st.st_ino, u64::from(u16::from_be(sa.sin_port)), ns.st_ino];
            libc::write(w, msg.as_ptr().cast(), 24);
            libc::_exit(0);
        }
    }
    crate::sys::close(w);
    let mut msg = [0u64; 3];
    // SAFETY: reading 24 bytes into our array.
    let n = unsafe { libc::read(r, msg.as_mut_ptr().cast(), 24) };
    assert_eq!(n, 24, "the child reported nothing");
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status}"
    );
    crate::sys::close(r);
    let (child, inode, port, netns) = (child as u32, msg[0], msg[1] as u16, msg[2]);
    assert_ne!(netns, u64::from(my_netns()));
    let bind = h.expect("bind in a new netns", child, |e| {
        e.kind == EventKind::Bind && e.inode == inode
    });
    assert_eq!((bind.pid, bind.tid), (child, child));
    assert_eq!(u64::from(bind.netns), netns);
    assert_eq!(
        (bind.proto, bind.src),
        (Proto::Udp, format!("0.0.0.0:{port}").parse().unwrap())
    );
    let close = h.expect("close at exit", child, |e| {
        e.kind == EventKind::Close && e.inode == inode
    });
    assert_eq!(u64::from(close.netns), netns);
}
