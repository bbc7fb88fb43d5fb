//! Naming the systemd unit or container a process belongs to, from its
//! cgroup path (`/proc/PID/cgroup`). Pure: text in, names out.
//!
//! Rules, innermost component first:
//! - `docker-<id>.scope` or `/docker/<id>` → container `docker:<id12>`;
//!   `libpod-<id>.scope` → `podman:<id12>`; `cri-containerd-<id>.scope` →
//!   `containerd:<id12>`; `crio-<id>.scope` → `crio:<id12>`; a bare 64-hex
//!   component under `kubepods` → `containerd:<id12>`;
//! - the innermost `*.service` or `*.scope` component is the unit
//!   (`nginx.service`, `run-u12.service` for `systemd-run`), except
//!   `init.scope` (PID 1) and `-.slice`.
//!
//! The cgroup v2 line (`0::`) is used; on hybrid systems whose v2 tree is
//! empty (`0::/`), the `name=systemd` v1 line is.
//!
//! Flows (issue 13): [`classify`] keeps the full 64-hex container id and the
//! runtime apart from the unit, names user-manager units `user@UID:name`,
//! and [`CgroupNames`] resolves a cgroup *id* (what the kernel stamps on
//! every event) to its path once, caching the answer, so a process that is
//! gone by the time user space looks still gets its unit and container.

pub use crate::event::flow::Container;

/// What a cgroup path says about a process: the systemd unit only, and the
/// container apart, with its full id (the conventions of the event schema).
pub type Placement = Classified;

/// Reads the placement from the contents of `/proc/PID/cgroup`.
pub fn from_proc_cgroup(text: &str) -> Placement {
    let v2 = text.lines().find_map(|l| l.strip_prefix("0::"));
    let v1 = text
        .lines()
        .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p));
    let path = match (v2, v1) {
        (Some(p), _) if p != "/" => p,
        (_, Some(p)) => p,
        (Some(p), None) => p,
        (None, None) => return Placement::default(),
    };
    from_path(path)
}

/// Reads the placement from one cgroup path.
pub fn from_path(path: &str) -> Placement {
    classify(path)
}

/// What a cgroup path says, in full (flows, issue 13).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classified {
    /// The systemd unit only. Units of a user manager are `user@UID:name`
    /// (`…/user@1000.service/app.slice/sshd.service` is `user@1000:sshd.service`,
    /// never `sshd.service`); the manager itself is `user@UID.service`.
    pub unit: Option<String>,
    pub container: Option<Container>,
}

/// Classifies one cgroup path.
pub fn classify(path: &str) -> Classified {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // The innermost user manager, if any: its units belong to that user.
    let manager = parts.iter().enumerate().rev().find_map(|(i, p)| {
        let uid = p.strip_prefix("user@")?.strip_suffix(".service")?;
        (!uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit())).then_some((i, uid))
    });
    let mut out = Classified::default();
    for (i, part) in parts.iter().enumerate().rev() {
        if out.container.is_none()
            && let Some((runtime, id)) = container(part, i.checked_sub(1).map(|j| parts[j]), path)
        {
            out.container = Some(Container {
                runtime,
                id: id.to_string(),
                rootless: manager.is_some_and(|(m, _)| i > m),
            });
        }
        if out.unit.is_none()
            && (part.ends_with(".service") || part.ends_with(".scope"))
            && *part != "init.scope"
        {
            out.unit = Some(match manager {
                Some((m, uid)) if i > m => format!("user@{uid}:{part}"),
                _ => (*part).to_string(),
            });
        }
    }
    out
}

fn container<'a>(
    part: &'a str,
    parent: Option<&str>,
    path: &str,
) -> Option<(&'static str, &'a str)> {
    const KINDS: [(&str, &str); 4] = [
        ("docker-", "docker"),
        ("libpod-", "podman"),
        ("cri-containerd-", "containerd"),
        ("crio-", "crio"),
    ];
    for (prefix, kind) in KINDS {
        if let Some(id) = part
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".scope"))
            && is_id(id)
        {
            return Some((kind, id));
        }
    }
    if is_id(part) {
        if parent == Some("docker") {
            return Some(("docker", part));
        }
        if path.contains("kubepods") {
            return Some(("containerd", part));
        }
    }
    None
}

fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// cgroup id → what its path says, resolved once per id and cached.
///
/// The id of a cgroup v2 directory is its inode number; the path is found by
/// walking the v2 tree (no capability needed, unlike `open_by_handle_at`,
/// so it keeps working after the daemon drops its capabilities). Bounded:
/// at most [`CGROUP_CACHE`] ids (then the cache starts over) and
/// [`WALK_LIMIT`] directories per walk.
#[derive(Debug, Default)]
pub struct CgroupNames {
    root: Option<std::path::PathBuf>,
    cache: std::collections::HashMap<u64, std::sync::Arc<Classified>>,
    /// Walks done (cache misses), for status and benchmarks.
    pub walks: u64,
}

pub const CGROUP_CACHE: usize = 4096;
pub const WALK_LIMIT: usize = 20_000;

impl CgroupNames {
    pub fn new(root: Option<std::path::PathBuf>) -> Self {
        Self {
            root,
            ..Self::default()
        }
    }

    /// What cgroup `id` is; `None` when it cannot be found (gone, or no v2 tree).
    pub fn get(&mut self, id: u64) -> Option<std::sync::Arc<Classified>> {
        if let Some(c) = self.cache.get(&id) {
            return Some(c.clone());
        }
        let root = self.root.clone()?;
        self.walks += 1;
        let path = find_cgroup(&root, id)?;
        let c = std::sync::Arc::new(classify(&path));
        if self.cache.len() >= CGROUP_CACHE {
            self.cache.clear();
        }
        self.cache.insert(id, c.clone());
        Some(c)
    }
}

/// The path (relative to `root`, with a leading `/`) of the cgroup whose
/// directory inode is `id`.
pub fn find_cgroup(root: &std::path::Path, id: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::metadata(root).ok()?.ino() == id {
        return Some("/".into());
    }
    let mut queue = std::collections::VecDeque::from([root.to_path_buf()]);
    let mut seen = 0usize;
    while let Some(dir) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            seen += 1;
            if seen > WALK_LIMIT {
                return None;
            }
            let path = entry.path();
            if entry.metadata().is_ok_and(|m| m.ino() == id) {
                let rel = path.strip_prefix(root).ok()?;
                return Some(format!("/{}", rel.to_string_lossy()));
            }
            queue.push_back(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100aabbccddeeff00112233445566778899";

    fn unit(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn systemd_services_and_transient_units() {
        assert_eq!(
            from_path("/system.slice/nginx.service").unit,
            unit("nginx.service")
        );
        assert_eq!(
            from_path("/system.slice/run-u42.service").unit,
            unit("run-u42.service")
        );
        let user = "/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope";
        assert_eq!(from_path(user).unit, unit("user@1000:app-foo.scope"));
        assert_eq!(from_path("/init.scope"), Placement::default());
        assert_eq!(from_path("/"), Placement::default());
    }

    #[test]
    fn containers_by_runtime() {
        let short = |p: Placement| {
            p.container.map(|c| {
                assert_eq!(c.id, ID, "the full id is kept");
                format!("{}:{}", c.runtime, c.short())
            })
        };
        let docker = from_path(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(short(docker.clone()), unit("docker:3f4e5d6c7b8a"));
        assert_eq!(docker.unit, unit(&format!("docker-{ID}.scope")));
        assert_eq!(
            short(from_path(&format!("/docker/{ID}"))),
            unit("docker:3f4e5d6c7b8a")
        );
        let podman = format!("/machine.slice/libpod-{ID}.scope/container");
        assert_eq!(short(from_path(&podman)), unit("podman:3f4e5d6c7b8a"));
        let k8s = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(short(from_path(&k8s)), unit("containerd:3f4e5d6c7b8a"));
        assert_eq!(
            short(from_path(&format!("/kubepods/burstable/pod1/{ID}"))),
            unit("containerd:3f4e5d6c7b8a")
        );
        assert_eq!(
            short(from_path(&format!("/system.slice/crio-{ID}.scope"))),
            unit("crio:3f4e5d6c7b8a")
        );
    }

    #[test]
    fn user_manager_units_are_named_with_their_user() {
        let p = "/user.slice/user-1000.slice/user@1000.service/app.slice/sshd.service";
        assert_eq!(classify(p).unit, unit("user@1000:sshd.service"));
        let m = "/user.slice/user-1000.slice/user@1000.service/init.scope";
        assert_eq!(classify(m).unit, unit("user@1000.service"));
        assert_eq!(
            classify("/system.slice/sshd.service").unit,
            unit("sshd.service")
        );
        // Rootless podman: a libpod scope under a user manager.
        let rootless = format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        );
        let c = classify(&rootless);
        assert_eq!(c.unit, unit(&format!("user@1000:libpod-{ID}.scope")));
        let container = c.container.unwrap();
        assert_eq!((container.runtime, container.id.as_str()), ("podman", ID));
        assert!(container.rootless);
        assert_eq!(container.short(), "3f4e5d6c7b8a");
        let rootful = classify(&format!("/machine.slice/libpod-{ID}.scope"));
        assert!(!rootful.container.unwrap().rootless);
        // "user@" without a number is not a user manager.
        assert_eq!(
            classify("/x/user@abc.service/a.service").unit,
            unit("a.service")
        );
    }

    #[test]
    fn not_an_id_is_not_a_container() {
        assert_eq!(
            from_path("/system.slice/docker-notanid.scope").container,
            None
        );
        assert_eq!(from_path(&format!("/elsewhere/{ID}")).container, None);
    }

    #[test]
    fn prefers_v2_line_then_name_systemd() {
        let hybrid = "9:name=systemd:/system.slice/sshd.service\n4:memory:/x\n0::/\n";
        assert_eq!(from_proc_cgroup(hybrid).unit, unit("sshd.service"));
        let unified = "0::/system.slice/cron.service\n";
        assert_eq!(from_proc_cgroup(unified).unit, unit("cron.service"));
        let both = "1:name=systemd:/system.slice/a.service\n0::/system.slice/b.service\n";
        assert_eq!(from_proc_cgroup(both).unit, unit("b.service"));
        assert_eq!(from_proc_cgroup(""), Placement::default());
    }
}
