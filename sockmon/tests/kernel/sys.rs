//! Thin wrappers over the raw socket calls the tests need where `std` hides
//! the result we want to assert (errno of connect, non-blocking sockets,
//! work in a forked child).

use std::net::{SocketAddr, SocketAddrV4};

/// A `sockaddr_in` for `a`.
pub fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// `connect(fd, a)`: Ok(()) or Err(errno).
pub fn connect(fd: i32, a: SocketAddrV4) -> Result<(), i32> {
    let sa = sockaddr_in(a);
    // SAFETY: valid sockaddr of the right length.
    let rc = unsafe {
        libc::connect(
            fd,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

pub fn errno() -> i32 {
    // SAFETY: reading this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// A new IPv4 TCP socket (with extra `flags` such as `SOCK_NONBLOCK`),
/// close-on-exec like every descriptor the tests make.
pub fn tcp_socket(flags: i32) -> i32 {
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
            0,
        )
    };
    assert!(fd >= 0, "socket: errno {}", errno());
    fd
}

/// A new IPv4 UDP socket, close-on-exec.
pub fn udp_socket() -> i32 {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: errno {}", errno());
    fd
}

/// Local address of an IPv4 socket.
pub fn local_addr(fd: i32) -> SocketAddr {
    // SAFETY: getsockname into a sockaddr_in-sized buffer.
    unsafe {
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        let mut len = size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(libc::getsockname(fd, (&raw mut sa).cast(), &mut len), 0);
        SocketAddr::V4(SocketAddrV4::new(
            u32::from_be(sa.sin_addr.s_addr).into(),
            u16::from_be(sa.sin_port),
        ))
    }
}

pub fn inode_of_fd(fd: i32) -> u64 {
    // SAFETY: fstat of a live descriptor.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::fstat(fd, &mut st), 0);
        st.st_ino
    }
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor we own.
    unsafe { libc::close(fd) };
}

/// `fork()`. In the child, every descriptor but stdio and `keep` is closed
/// before anything else runs, so the child never holds (nor, at its exit,
/// closes) a socket it was not given. Only async-signal-safe calls: the
/// child of a multi-threaded process may not allocate.
pub fn fork_keeping(keep: &[i32]) -> i32 {
    // SAFETY: the child only makes the async-signal-safe calls below before
    // returning to a caller that does the same.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        close_other_fds(keep);
    }
    assert!(pid >= 0, "fork: errno {}", errno());
    pid
}

/// Closes every descriptor from 3 up except those in `keep` (at most 8).
pub fn close_other_fds(keep: &[i32]) {
    let mut sorted = [i32::MAX; 8];
    let n = keep.len().min(sorted.len());
    sorted[..n].copy_from_slice(&keep[..n]);
    sorted.sort_unstable();
    let mut from: u32 = 3;
    for &k in &sorted[..n] {
        let Ok(k) = u32::try_from(k) else { continue };
        if k >= from {
            if k > from {
                close_range(from, k - 1);
            }
            from = k + 1;
        }
    }
    close_range(from, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range(2) on our own descriptor table; no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc != 0 {
        // SAFETY: async-signal-safe; the child cannot report otherwise.
        unsafe { libc::_exit(121) };
    }
}

/// A pipe whose ends are close-on-exec: `(read, write)`.
pub fn pipe() -> (i32, i32) {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 into a two-element array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (p[0], p[1])
}
