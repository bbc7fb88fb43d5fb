//! Who may use the API, and what they may see (docs/api.md, Access).
//!
//! The socket file is `0660 root:sockmon`, so the kernel already keeps out
//! anyone else; the daemon checks again on every connection with the peer's
//! credentials (`SO_PEERCRED`), because a file mode is easy to loosen by
//! mistake and a check in code is not.

use std::{ffi::CString, fs};

use super::protocol::ApiError;
use crate::view::Viewer;

/// The group whose members may use the API.
pub const GROUP: &str = "sockmon";

/// The peer of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
}

/// The gid of group `name`, if it exists.
pub fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    // SAFETY: `group` is plain data; all-zero is a valid (empty) value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf outlives it.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

/// Decides whether `peer` may use the API and, if so, what it may see.
/// `group` is the gid of [`GROUP`], `groups_of` returns a pid's
/// supplementary groups, `hidepid` whether `/proc` hides other users' processes.
pub fn check(
    peer: Peer,
    group: Option<u32>,
    groups_of: impl Fn(u32) -> Vec<u32>,
    hidepid: bool,
) -> Result<Viewer, ApiError> {
    if peer.uid == 0 {
        return Ok(Viewer::ROOT);
    }
    let member = group
        .is_some_and(|g| peer.gid == g || peer.pid.is_some_and(|pid| groups_of(pid).contains(&g)));
    if member {
        Ok(Viewer {
            uid: Some(peer.uid),
            hide_names: hidepid,
        })
    } else {
        Err(ApiError::new(
            "forbidden",
            format!(
                "permission denied: uid {} is neither root nor a member of the `{GROUP}` group",
                peer.uid
            ),
        ))
    }
}

/// Supplementary groups of `pid` (`Groups:` in `/proc/PID/status`).
pub fn proc_groups(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Whether `/proc` is mounted with `hidepid` (other users' processes hidden).
pub fn proc_hidepid() -> bool {
    fs::read_to_string("/proc/self/mounts")
        .map(|m| parse_hidepid(&m))
        .unwrap_or(false)
}

fn parse_hidepid(mounts: &str) -> bool {
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && f[2] == "proc"
            && f[1] == "/proc"
            && f[3].split(',').any(|o| {
                o.strip_prefix("hidepid=")
                    .is_some_and(|v| !matches!(v, "0" | "off"))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u32 = 990;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer {
            uid,
            gid,
            pid: Some(4242),
        }
    }

    #[test]
    fn root_sees_everything() {
        assert_eq!(check(peer(0, 0), None, |_| vec![], true), Ok(Viewer::ROOT));
    }

    #[test]
    fn group_members_by_primary_or_supplementary_group() {
        let v = check(peer(1000, G), Some(G), |_| vec![], false).unwrap();
        assert_eq!(
            v,
            Viewer {
                uid: Some(1000),
                hide_names: false
            }
        );
        let v = check(
            peer(1000, 1000),
            Some(G),
            |pid| if pid == 4242 { vec![27, G] } else { vec![] },
            true,
        )
        .unwrap();
        assert_eq!(
            v,
            Viewer {
                uid: Some(1000),
                hide_names: true
            }
        );
    }

    #[test]
    fn others_are_forbidden_with_a_reason() {
        let e = check(peer(1000, 1000), Some(G), |_| vec![27], false).unwrap_err();
        assert_eq!(e.code, "forbidden");
        assert!(e.message.contains("uid 1000"), "{}", e.message);
        // Without the group existing, only root gets in.
        assert!(check(peer(1000, G), None, |_| vec![G], false).is_err());
    }

    #[test]
    fn hidepid_detection() {
        assert!(parse_hidepid(
            "proc /proc proc rw,nosuid,hidepid=invisible 0 0\n"
        ));
        assert!(parse_hidepid("proc /proc proc rw,hidepid=2 0 0\n"));
        assert!(!parse_hidepid(
            "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
        ));
        assert!(!parse_hidepid("proc /proc proc rw,hidepid=0 0 0\n"));
        assert!(!parse_hidepid("proc /other proc rw,hidepid=2 0 0\n"));
    }

    #[test]
    fn reads_groups_of_a_live_process() {
        // Our own status has a Groups: line (possibly empty); a dead pid has none.
        let _ = proc_groups(std::process::id());
        assert!(proc_groups(u32::MAX).is_empty());
    }
}
