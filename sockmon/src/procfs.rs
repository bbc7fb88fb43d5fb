//! `/proc`: the processes, the sockets in their descriptor tables, and who
//! they are (name, real uid, start time). Used by the snapshot (every
//! process at once) and by the engine's `/proc` worker (one process).
//!
//! Why this shape: the descriptor scan is the costly part of a snapshot (one
//! `readlink` per descriptor of every process), so it walks each
//! `/proc/PID/fd` through one directory descriptor with `readlinkat` and
//! reused buffers instead of building a path per descriptor. Threads are not
//! listed in `/proc` (they share their process's table), so each table is
//! read once. Processes exit at any time: a process that vanishes, or that
//! we may not read, is skipped silently.

use std::{
    ffi::{CStr, c_int},
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    ptr::NonNull,
};

use crate::event::Comm;

/// What `/proc` says about a process holding at least one socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcRow {
    pub pid: u32,
    /// `/proc/PID/comm`: the process leader's name.
    pub comm: Comm,
    /// Real uid (first field of `Uid:` in `/proc/PID/status`).
    pub uid: u32,
    /// Field 22 of `/proc/PID/stat`: start time in clock ticks after boot.
    pub start_ticks: u64,
}

/// The pids of all processes (thread-group ids), ascending.
pub fn pids() -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The inode in a descriptor's link text `socket:[N]`, if it is a socket.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Every `(socket inode, pid)` pair in the descriptor tables of `pids`, in
/// the order of `pids`. A socket held through several descriptors of one
/// process appears once per descriptor.
pub fn socket_fds(pids: &[u32]) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut path = Vec::with_capacity(32);
    for &pid in pids {
        path.clear();
        if write!(path, "/proc/{pid}/fd\0").is_err() {
            continue;
        }
        let Ok(path) = CStr::from_bytes_with_nul(&path) else {
            continue;
        };
        if let Some(mut dir) = Dir::open(path) {
            dir.sockets(pid, &mut out);
        }
    }
    out
}

/// An open directory stream.
struct Dir(NonNull<libc::DIR>);

impl Dir {
    /// Opens `path`; `None` if it is gone or unreadable.
    fn open(path: &CStr) -> Option<Self> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: `path` is NUL-terminated; the result is checked.
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is an open directory descriptor that nothing else
        // owns; on success the stream owns it.
        let dir = unsafe { libc::fdopendir(fd) };
        match NonNull::new(dir) {
            Some(d) => Some(Self(d)),
            None => {
                // SAFETY: fdopendir failed, so `fd` is still ours to close.
                unsafe { libc::close(fd) };
                None
            }
        }
    }

    /// Appends `(inode, pid)` for each socket descriptor in this `fd`
    /// directory.
    fn sockets(&mut self, pid: u32, out: &mut Vec<(u64, u32)>) {
        // SAFETY: the stream is open for as long as `self` lives.
        let dirfd: c_int = unsafe { libc::dirfd(self.0.as_ptr()) };
        // "socket:[4294967295]" is 19 bytes; longer links are not sockets.
        let mut link = [0u8; 32];
        loop {
            // SAFETY: the stream is open; readdir64 returns NULL at the end
            // (or on error, where we stop too).
            let Some(entry) = NonNull::new(unsafe { libc::readdir64(self.0.as_ptr()) }) else {
                return;
            };
            // SAFETY: `entry` points to a dirent64 that stays valid until the
            // next readdir64 on this stream; d_name is NUL-terminated.
            let name = unsafe { (*entry.as_ptr()).d_name.as_ptr() };
            // SAFETY: `name` is a NUL-terminated entry name relative to
            // `dirfd`; `link` is valid for writes of its length.
            let n = unsafe { libc::readlinkat(dirfd, name, link.as_mut_ptr().cast(), link.len()) };
            // "." and "..", closed descriptors and errors all give n < 0.
            let Ok(n) = usize::try_from(n) else {
                continue;
            };
            if let Some(inode) = socket_inode(&link[..n.min(link.len())]) {
                out.push((inode, pid));
            }
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: the stream is open and closed only here.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

/// Start time of `pid` in clock ticks since boot; `None` if it is gone.
pub fn start_ticks_of(pid: u32) -> Option<u64> {
    let dir = open_dir(pid)?;
    let mut buf = Vec::with_capacity(512);
    read_at(&dir, c"stat", &mut buf)?;
    start_ticks(&buf)
}

/// The socket inodes in `pid`'s descriptor table; `None` if it is gone.
pub fn socket_inodes_of(pid: u32) -> Option<std::collections::HashSet<u64>> {
    drop(open_dir(pid)?);
    Some(
        socket_fds(&[pid])
            .into_iter()
            .map(|(inode, _)| inode)
            .collect(),
    )
}

/// Name, real uid and start time of `pid`; `None` if it has exited or cannot
/// be read. All three come from one `/proc/PID` directory descriptor, so
/// they describe one process even if the pid is reused meanwhile.
pub fn process(pid: u32, buf: &mut Vec<u8>) -> Option<ProcRow> {
    let dir = open_dir(pid)?;
    read_at(&dir, c"stat", buf)?;
    let start_ticks = start_ticks(buf)?;
    read_at(&dir, c"status", buf)?;
    let uid = real_uid(buf)?;
    read_at(&dir, c"comm", buf)?;
    Some(ProcRow {
        pid,
        comm: comm(buf),
        uid,
        start_ticks,
    })
}

fn open_dir(pid: u32) -> Option<OwnedFd> {
    let path = format!("/proc/{pid}\0");
    let path = CStr::from_bytes_with_nul(path.as_bytes()).ok()?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: `path` is NUL-terminated; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    // SAFETY: a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads the whole file `name` in directory `dir` into `buf`.
fn read_at(dir: &OwnedFd, name: &CStr, buf: &mut Vec<u8>) -> Option<()> {
    // SAFETY: `name` is NUL-terminated and relative to the open `dir`.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    buf.clear();
    file.read_to_end(buf).ok().map(drop)
}

/// Field 22 (`starttime`, clock ticks after boot) of `/proc/PID/stat`.
///
/// Field 2 is the name in parentheses and may itself contain spaces and
/// parentheses, so the fields after it are found from the *last* `)`.
pub fn start_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // `rest` starts at field 3 (state), so field 22 is the 20th.
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// The real uid: the first number on the `Uid:` line of `/proc/PID/status`.
pub fn real_uid(status: &[u8]) -> Option<u32> {
    status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Uid:"))
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

/// The name from `/proc/PID/comm` (raw bytes and a newline), as the kernel
/// keeps it: at most 15 bytes, NUL-padded.
pub fn comm(file: &[u8]) -> Comm {
    let name = file.strip_suffix(b"\n").unwrap_or(file);
    let mut raw = [0u8; 16];
    let n = name.len().min(15);
    raw[..n].copy_from_slice(&name[..n]);
    Comm::from_kernel(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_are_parsed_and_others_rejected() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"socket:[4294967295]"), Some(4_294_967_295));
        assert_eq!(socket_inode(b"socket:[0]"), Some(0));
        for other in [
            &b"pipe:[12345]"[..],
            b"/dev/null",
            b"anon_inode:[eventfd]",
            b"socket:[]",
            b"socket:[12a]",
            b"socket:[-1]",
            b"socket:[+1]",
            b"socket:[123",
            b"socket:[123]x",
            b"socket:[99999999999999999999999]",
            b"",
        ] {
            assert_eq!(
                socket_inode(other),
                None,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    const STAT_TAIL: &str = "S 1 1234 1234 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654321 \
                             12345678 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";

    #[test]
    fn start_time_is_field_22_even_with_a_hostile_name() {
        let plain = format!("1234 (sleep) {STAT_TAIL}\n");
        assert_eq!(start_ticks(plain.as_bytes()), Some(987_654_321));
        let hostile = format!("1234 (a) b (c) {STAT_TAIL}\n");
        assert_eq!(start_ticks(hostile.as_bytes()), Some(987_654_321));
        let spaces = format!("1234 (x 1 2 3 4 5)) {STAT_TAIL}\n");
        assert_eq!(start_ticks(spaces.as_bytes()), Some(987_654_321));
        assert_eq!(start_ticks(b"1234 (a) b (c"), None);
        assert_eq!(start_ticks(b"1234 (x) S 1 2 3"), None);
    }

    #[test]
    fn start_time_of_this_process_is_read() {
        let mut buf = Vec::new();
        let me = process(std::process::id(), &mut buf).unwrap();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let field22: u64 = after.split(' ').nth(19).unwrap().parse().unwrap();
        assert_eq!(me.start_ticks, field22);
        // SAFETY: getuid cannot fail.
        assert_eq!(me.uid, unsafe { libc::getuid() });
        let name = std::fs::read("/proc/self/comm").unwrap();
        assert_eq!(me.comm.as_bytes(), &name[..name.len() - 1]);
    }

    #[test]
    fn real_uid_is_the_first_uid_field() {
        let status = b"Name:\tx\nUmask:\t0022\nState:\tS\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n";
        assert_eq!(real_uid(status), Some(1000));
        assert_eq!(real_uid(b"Name:\tUid: 7\nGid:\t5\n"), None);
    }

    #[test]
    fn comm_strips_the_newline_and_keeps_odd_bytes() {
        assert_eq!(comm(b"a) b (c\n").as_bytes(), b"a) b (c");
        assert_eq!(comm(b"tab\there\n").as_bytes(), b"tab\there");
        assert_eq!(comm(b"line\n\n").as_bytes(), b"line\n");
        assert_eq!(
            comm(b"0123456789abcdefXYZ\n").as_bytes(),
            b"0123456789abcde"
        );
    }

    #[test]
    fn a_missing_process_is_none() {
        assert_eq!(process(0x7fff_fff0, &mut Vec::new()), None);
        assert_eq!(socket_fds(&[0x7fff_fff0]), []);
    }
}
