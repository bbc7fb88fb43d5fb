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

/// A new IPv4 TCP socket (with extra `flags` such as `SOCK_NONBLOCK`).
pub fn tcp_socket(flags: i32) -> i32 {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | flags, 0) };
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
