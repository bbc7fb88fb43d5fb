//! Network namespaces: which ones exist, and running code inside each.
//!
//! Why: a sock_diag socket reports only the namespace it was created in, so
//! a whole-machine snapshot must create one socket per namespace, from a
//! thread that has entered it. `setns(fd, CLONE_NEWNET)` moves only the
//! calling thread, so the foreign namespaces are visited from a dedicated
//! thread that ends afterwards: no other code (a tokio worker, the caller)
//! ever runs in a namespace it did not expect.
//!
//! Namespaces are found through the processes in them (`/proc/PID/ns/net`)
//! and through the bind mounts of `ip netns` (`/run/netns/*`), which may have
//! no process at all.

use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

/// Where `ip netns add` keeps its namespaces.
const RUN_NETNS: &str = "/run/netns";

/// How to reach a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Via {
    /// Through `/proc/PID/ns/net` of any of these processes (several, in case
    /// some exit before we get there).
    Pids(Vec<u32>),
    /// Through a bind mount such as `/run/netns/NAME`.
    Path(PathBuf),
}

/// A namespace other than our own, and how to enter it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Inode of the namespace (`st_ino` of its nsfs file).
    pub ino: u32,
    via: Via,
}

/// What happened in one namespace.
#[derive(Debug)]
pub enum Outcome<T> {
    Done(T),
    /// Could not be entered or read; the reason.
    Skipped(u32, String),
}

/// The calling thread's namespace: `(st_dev, st_ino)` of its nsfs file.
pub fn current() -> io::Result<(u64, u32)> {
    let m = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((m.dev(), ns_inode(m.ino())))
}

/// Namespace inodes are 32-bit in the kernel (`ns_common.inum`).
fn ns_inode(ino: u64) -> u32 {
    u32::try_from(ino).unwrap_or(u32::MAX)
}

/// Every namespace with a process in `pids` or a mount in `/run/netns`,
/// except `own` (`(st_dev, st_ino)` from [`current`]). Processes that exit
/// meanwhile are left out silently.
pub fn enumerate(pids: &[u32], own: (u64, u32)) -> Vec<Target> {
    let mut by_ino: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &pid in pids {
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            let ino = ns_inode(m.ino());
            if ino != own.1 {
                by_ino.entry(ino).or_default().push(pid);
            }
        }
    }
    let mut targets: Vec<Target> = by_ino
        .into_iter()
        .map(|(ino, pids)| Target {
            ino,
            via: Via::Pids(pids),
        })
        .collect();
    let seen: HashSet<u32> = targets.iter().map(|t| t.ino).collect();
    targets.extend(mounted(Path::new(RUN_NETNS), own, &seen));
    targets
}

/// Namespaces bind-mounted in `dir` that are neither `own` nor in `seen`.
/// Files that are not nsfs mounts (a stale name whose mount is gone) are
/// ignored.
fn mounted(dir: &Path, own: (u64, u32), seen: &HashSet<u32>) -> Vec<Target> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        let ino = ns_inode(m.ino());
        if m.dev() == own.0 && ino != own.1 && !seen.contains(&ino) {
            found.entry(ino).or_insert(path);
        }
    }
    found
        .into_iter()
        .map(|(ino, path)| Target {
            ino,
            via: Via::Path(path),
        })
        .collect()
}

/// Opens the namespace of `t`, checking that the file still names the same
/// namespace (a pid may have been reused, a mount replaced).
fn open(t: &Target) -> Result<File, String> {
    let paths: Vec<PathBuf> = match &t.via {
        Via::Pids(pids) => pids
            .iter()
            .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")))
            .collect(),
        Via::Path(p) => vec![p.clone()],
    };
    let mut last = None;
    for path in &paths {
        match File::open(path) {
            Ok(f) => match f.metadata() {
                Ok(m) if ns_inode(m.ino()) == t.ino => return Ok(f),
                Ok(_) => {}
                Err(e) => last = Some(format!("fstat {}: {e}", path.display())),
            },
            Err(e) if gone(&e) => {}
            Err(e) => last = Some(format!("open {}: {e}", path.display())),
        }
    }
    Err(last.unwrap_or_else(|| "vanished: no process or mount refers to it any more".into()))
}

/// Whether an error means "the process went away meanwhile".
pub fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

/// Moves the calling thread into the namespace `ns`.
fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own; affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f(ino)` inside each namespace of `targets`, one after the other, on
/// a dedicated thread that enters them with `setns` and then ends. An `Err`
/// from `f`, or a namespace that cannot be entered, becomes
/// [`Outcome::Skipped`]. Fails only if the thread cannot start or panics.
pub fn in_each<T, F>(targets: &[Target], f: F) -> io::Result<Vec<Outcome<T>>>
where
    T: Send,
    F: FnMut(u32) -> Result<T, String> + Send,
{
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("sockmon-netns".into())
            .spawn_scoped(s, move || visit(targets, f))?
            .join()
            .map_err(|_| io::Error::other("the namespace thread panicked"))
    })
}

fn visit<T>(targets: &[Target], mut f: impl FnMut(u32) -> Result<T, String>) -> Vec<Outcome<T>> {
    targets
        .iter()
        .map(|t| {
            let entered = open(t).and_then(|ns| enter(&ns).map_err(|e| format!("setns: {e}")));
            match entered.and_then(|()| f(t.ino)) {
                Ok(v) => Outcome::Done(v),
                Err(reason) => Outcome::Skipped(t.ino, reason),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespace_is_not_a_target() {
        let own = current().unwrap();
        let me = std::process::id();
        let targets = enumerate(&[me], own);
        assert!(targets.iter().all(|t| t.ino != own.1), "{targets:?}");
        assert!(
            targets.iter().all(|t| t.via != Via::Pids(vec![me])),
            "{targets:?}"
        );
    }

    #[test]
    fn a_namespace_whose_processes_are_gone_is_skipped_with_a_reason() {
        // No process has pid 0x7fff_fff0 (above pid_max's ceiling of 2^22).
        let t = Target {
            ino: 1,
            via: Via::Pids(vec![0x7fff_fff0]),
        };
        let out = in_each(&[t], |_| Ok(())).unwrap();
        assert_eq!(out.len(), 1);
        match &out[0] {
            Outcome::Skipped(1, reason) => assert!(reason.starts_with("vanished"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_naming_another_namespace_is_not_entered() {
        let own = current().unwrap();
        let t = Target {
            ino: own.1.wrapping_add(1),
            via: Via::Path(PathBuf::from("/proc/self/ns/net")),
        };
        let out = in_each(&[t], |_| Ok(())).unwrap();
        assert!(matches!(&out[0], Outcome::Skipped(..)), "{out:?}");
    }

    #[test]
    fn stale_mount_points_are_ignored() {
        let dir = std::env::temp_dir().join(format!("sockmon-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stale"), b"").unwrap();
        let found = mounted(&dir, current().unwrap(), &HashSet::new());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, []);
    }
}
