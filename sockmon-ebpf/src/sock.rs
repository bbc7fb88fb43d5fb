//! The only code that knows kernel struct layout.
//!
//! Every read goes through `bpf_probe_read_kernel` at an offset from
//! [`crate::maps::OFFSETS`] (resolved from BTF by user space), because the Rust
//! eBPF toolchain emits no CO-RE relocations. The walks are:
//!
//! - descriptor → socket: `current->files->fdt->fd[fd]` → `file->private_data`
//!   (`struct socket`) → `socket->sk`, with `file->f_inode` giving the inode
//!   (`socket:[N]`), as in `fs/file.c` and `net/socket.c`;
//! - socket → four-tuple: `sock_common`'s `skc_*` fields (`include/net/sock.h`)
//!   and `inet_sock.inet_sport`;
//! - socket → network namespace: `sk->__sk_common.skc_net.net->ns.inum`.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use sockmon_common::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, KernelCounter, SOCK_HEAD_BYTES, SockEvent,
};

use crate::maps::{Fallible, SOCK_HEAD, Tuple, off};

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Fallible<T> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }
        .map_err(|_| KernelCounter::ReadFailed)
}

/// Turns a verifier-typed socket pointer (`PTR_TO_SOCKET`, on which the
/// verifier forbids arithmetic) into a plain address for [`read`], by copying
/// it through a probe read of its own stack slot.
#[inline(always)]
pub fn launder(ptr: u64) -> u64 {
    let slot = ptr;
    // SAFETY: reads 8 bytes of our own stack.
    unsafe { bpf_probe_read_kernel(&raw const slot) }.unwrap_or(0)
}

/// An inet TCP/UDP socket reached from a descriptor.
#[derive(Clone, Copy)]
pub struct SockRef {
    /// `struct sock *`.
    pub sk: u64,
    /// Inode number of the socket.
    pub inode: u64,
}

/// The `struct file *` behind descriptor `fd` of the current task; `None`
/// for a descriptor that is not open (the syscall fails with `EBADF`: not
/// a failure of ours).
#[inline(always)]
fn file_of_fd(fd: u64) -> Fallible<Option<u64>> {
    // SAFETY: returns the current task pointer; we only read through it with probe reads.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, off!(task_files))?;
    let fdt: u64 = read(files, off!(files_fdt))?;
    let max_fds: u32 = read(fdt, off!(fdtable_max_fds))?;
    if fd >= max_fds as u64 {
        return Ok(None);
    }
    let fd_array: u64 = read(fdt, off!(fdtable_fd))?;
    let file: u64 = read(fd_array, (fd * 8) as u32)?;
    Ok((file != 0).then_some(file))
}

/// Resolves descriptor `fd` of the current task to its socket, if it is an
/// IPv4/IPv6 TCP or UDP socket. `Ok(None)` for any other kind of descriptor.
#[inline(always)]
pub fn inet_sock_of_fd(fd: u64) -> Fallible<Option<SockRef>> {
    let Some(file) = file_of_fd(fd)? else {
        return Ok(None);
    };
    let inode: u64 = read(file, off!(file_inode))?;
    let mode: u16 = read(inode, off!(inode_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return Ok(None);
    }
    let ino: u64 = read(inode, off!(inode_ino))?;
    let socket: u64 = read(file, off!(file_private_data))?;
    let sk: u64 = read(socket, off!(socket_sk))?;
    if sk == 0 || !is_inet_tcp_udp(sk)? {
        return Ok(None);
    }
    Ok(Some(SockRef { sk, inode: ino }))
}

/// Whether `sk` is an AF_INET/AF_INET6 socket of protocol TCP or UDP.
#[inline(always)]
pub fn is_inet_tcp_udp(sk: u64) -> Fallible<bool> {
    let family: u16 = read(sk, off!(sk_family))?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(false);
    }
    let protocol: u16 = read(sk, off!(sk_protocol))?;
    Ok(protocol == IPPROTO_TCP as u16 || protocol == IPPROTO_UDP as u16)
}

/// Inode number of the socket `sk` belongs to, through `sk->sk_socket->file->f_inode`.
#[inline(always)]
pub fn inode_of_sk(sk: u64) -> Fallible<u64> {
    let socket: u64 = read(sk, off!(sk_socket))?;
    inode_of_socket(socket)
}

/// Inode number of a `struct socket *`, through `socket->file->f_inode`
/// (0 for none, or a socket without a file yet).
#[inline(always)]
pub fn inode_of_socket(socket: u64) -> Fallible<u64> {
    if socket == 0 {
        return Ok(0);
    }
    let file: u64 = read(socket, off!(socket_file))?;
    if file == 0 {
        return Ok(0);
    }
    let inode: u64 = read(file, off!(file_inode))?;
    read(inode, off!(inode_ino))
}

/// Reads the head of `sk` (its `sock_common`, [`SOCK_HEAD_BYTES`] long) in
/// one probe read into per-CPU scratch memory: one read instead of ten is
/// most of what an event costs. User space checked at load that every
/// `sock_common` field used lies within it.
#[inline(always)]
fn head_of(sk: u64) -> Fallible<&'static [u8; SOCK_HEAD_BYTES]> {
    let slot = SOCK_HEAD
        .get_ptr_mut(0)
        .ok_or(KernelCounter::ScratchMissing)?;
    // SAFETY: a per-CPU slot only this program run uses; the helper
    // validates the source address and fills the whole buffer.
    unsafe {
        bpf_probe_read_kernel_buf(sk as *const u8, &mut *slot)
            .map_err(|_| KernelCounter::ReadFailed)?;
        Ok(&*slot)
    }
}

/// `N` bytes of `head` at `off` (bounds checked for the verifier).
#[inline(always)]
fn take<const N: usize>(head: &[u8; SOCK_HEAD_BYTES], off: u32) -> Fallible<[u8; N]> {
    let off = off as usize;
    match head.get(off..off + N) {
        Some(bytes) => bytes.try_into().map_err(|_| KernelCounter::HeadOutOfBounds),
        None => Err(KernelCounter::HeadOutOfBounds),
    }
}

/// The four-tuple in a socket's head.
#[inline(always)]
fn tuple_in(head: &[u8; SOCK_HEAD_BYTES]) -> Fallible<Tuple> {
    let family = u16::from_ne_bytes(take(head, off!(sk_family))?);
    let mut tuple = Tuple {
        src_addr: [0; 16],
        dst_addr: [0; 16],
        src_port: u16::from_ne_bytes(take(head, off!(sk_num))?),
        dst_port: u16::from_be_bytes(take(head, off!(sk_dport))?),
        family,
        _pad: 0,
    };
    if family == AF_INET {
        tuple.src_addr[..4].copy_from_slice(&take::<4>(head, off!(sk_rcv_saddr))?);
        tuple.dst_addr[..4].copy_from_slice(&take::<4>(head, off!(sk_daddr))?);
    } else {
        tuple.src_addr = take(head, off!(sk_v6_rcv_saddr))?;
        tuple.dst_addr = take(head, off!(sk_v6_daddr))?;
    }
    Ok(tuple)
}

/// The four-tuple `sk` holds now.
#[inline(always)]
pub fn tuple_of_sk(sk: u64) -> Fallible<Tuple> {
    tuple_in(head_of(sk)?)
}

/// Fills family, protocol, state, addresses, ports and netns of `ev` from `sk`.
///
/// The local port comes from `skc_num` (host order), which is the port
/// actually bound, including one the kernel chose.
#[inline(always)]
pub fn fill_from_sk(ev: &mut SockEvent, sk: u64) -> Fallible<()> {
    let protocol: u16 = read(sk, off!(sk_protocol))?;
    let head = head_of(sk)?;
    let t = tuple_in(head)?;
    ev.family = t.family;
    ev.protocol = protocol as u8;
    ev.state = take::<1>(head, off!(sk_state))?[0];
    ev.src_port = t.src_port;
    ev.dst_port = t.dst_port;
    ev.src_addr = t.src_addr;
    ev.dst_addr = t.dst_addr;
    let net = u64::from_ne_bytes(take(head, off!(sk_net))?);
    ev.netns = read(net, off!(net_inum))?;
    Ok(())
}

/// The local port as `inet_sock.inet_sport` holds it (host order). Unlike
/// `skc_num`, this survives the port being released when a connect fails.
#[inline(always)]
pub fn inet_sport(sk: u64) -> Fallible<u16> {
    let sport: u16 = read(sk, off!(inet_sport))?;
    Ok(u16::from_be(sport))
}

/// Like [`fill_from_sk`], for a socket whose local port may already be
/// released (`skc_num` reads 0 once a reset or a failed connect closed it):
/// the port is then taken from `inet_sport`, which survives.
#[inline(always)]
pub fn fill_from_sk_keep_port(ev: &mut SockEvent, sk: u64) -> Fallible<()> {
    fill_from_sk(ev, sk)?;
    if ev.src_port == 0 {
        ev.src_port = inet_sport(sk)?;
    }
    Ok(())
}

/// `sk->sk_err`: the error a failed connect left on the socket.
#[inline(always)]
pub fn sk_err(sk: u64) -> Fallible<i32> {
    read(sk, off!(sk_err))
}
