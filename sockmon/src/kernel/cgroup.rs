//! Finding the cgroup v2 hierarchy the release hook attaches to.
//!
//! `cgroup/sock_release` programs run for sockets whose cgroup is at or below
//! the attach point, so attaching at the root of the v2 hierarchy sees every
//! socket on the machine. On hybrid systems the v2 tree is usually mounted at
//! `/sys/fs/cgroup/unified`; when no v2 mount exists one is made under
//! `/run/sockmon`.

use std::{fs, io, path::PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Mountinfo(io::Error),
    #[error("no cgroup v2 hierarchy is mounted and mounting one at {path} failed: {source}")]
    Mount { path: PathBuf, source: io::Error },
}

/// Mount point of the cgroup v2 hierarchy, mounting one if none is found.
pub fn v2_root() -> Result<PathBuf, CgroupError> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
    if let Some(p) = find_v2_mount(&info) {
        return Ok(p);
    }
    let path = PathBuf::from("/run/sockmon/cgroup2");
    fs::create_dir_all(&path).map_err(|source| CgroupError::Mount {
        path: path.clone(),
        source,
    })?;
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        CgroupError::Mount {
            path: path.clone(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        }
    })?;
    // SAFETY: valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            c"cgroup2".as_ptr(),
            target.as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(CgroupError::Mount {
            path,
            source: io::Error::last_os_error(),
        });
    }
    Ok(path)
}

/// The mount point of the first `cgroup2` entry whose root is `/`.
fn find_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // id parent maj:min root mountpoint opts... - fstype source superopts
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mut f = pre.split_whitespace();
        let root = f.nth(3)?;
        let mount_point = f.next()?;
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(digits) = std::str::from_utf8(&b[i + 1..i + 4])
            && let Ok(v) = u8::from_str_radix(digits, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unified_on_a_hybrid_system() {
        let info = "30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
                    31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                    40 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_v2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn skips_a_bind_mount_of_a_subtree_and_unescapes() {
        let info = "40 30 0:35 /system.slice /x rw - cgroup2 cgroup2 rw\n\
                    41 30 0:35 / /my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_v2_mount(info), Some(PathBuf::from("/my cg")));
    }

    #[test]
    fn none_without_cgroup2() {
        assert_eq!(
            find_v2_mount("31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n"),
            None
        );
    }
}
