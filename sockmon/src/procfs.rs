//! Small, allocation-light readers of `/proc/PID/*` used off the event path.
//!
//! Every reader returns `None` when the process is gone or unreadable: a
//! process may exit at any moment, and that is never an error here.

use std::{collections::HashSet, fs};

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`).
pub fn start_ticks(pid: u32) -> Option<u64> {
    parse_stat_start(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a `/proc/PID/stat` line. The name (field 2) may contain spaces
/// and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The socket inodes in `pid`'s descriptor table.
pub fn socket_inodes(pid: u32) -> Option<HashSet<u64>> {
    let dir = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.filter_map(Result::ok)
            .filter_map(|e| fs::read_link(e.path()).ok())
            .filter_map(|target| parse_socket_link(target.as_os_str().as_encoded_bytes()))
            .collect(),
    )
}

/// `socket:[12345]` → 12345.
pub fn parse_socket_link(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_a_hostile_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat_start(stat), Some(987654));
        assert_eq!(parse_stat_start("42 (x"), None);
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link(b"pipe:[12345]"), None);
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat of a live descriptor into a local buffer.
        assert_eq!(
            unsafe { libc::fstat(std::os::fd::AsRawFd::as_raw_fd(&sock), &mut st) },
            0
        );
        assert!(socket_inodes(me).unwrap().contains(&st.st_ino));
        assert!(start_ticks(me).unwrap() > 0);
        assert_eq!(start_ticks(u32::MAX), None);
    }
}
