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

/// What a cgroup path says about a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub unit: Option<String>,
    pub container: Option<String>,
}

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
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut placement = Placement::default();
    for (i, part) in parts.iter().enumerate().rev() {
        if placement.container.is_none() {
            placement.container = container(part, i.checked_sub(1).map(|j| parts[j]), path);
        }
        if placement.unit.is_none()
            && (part.ends_with(".service") || part.ends_with(".scope"))
            && *part != "init.scope"
        {
            placement.unit = Some((*part).to_string());
        }
    }
    placement
}

fn container(part: &str, parent: Option<&str>, path: &str) -> Option<String> {
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
            return Some(format!("{kind}:{}", &id[..12]));
        }
    }
    if is_id(part) {
        if parent == Some("docker") {
            return Some(format!("docker:{}", &part[..12]));
        }
        if path.contains("kubepods") {
            return Some(format!("containerd:{}", &part[..12]));
        }
    }
    None
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
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
        assert_eq!(from_path(user).unit, unit("app-foo.scope"));
        assert_eq!(from_path("/init.scope"), Placement::default());
        assert_eq!(from_path("/"), Placement::default());
    }

    #[test]
    fn containers_by_runtime() {
        let docker = from_path(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(docker.container, unit("docker:3f4e5d6c7b8a"));
        assert_eq!(docker.unit, unit(&format!("docker-{ID}.scope")));
        assert_eq!(
            from_path(&format!("/docker/{ID}")).container,
            unit("docker:3f4e5d6c7b8a")
        );
        let podman = format!("/machine.slice/libpod-{ID}.scope/container");
        assert_eq!(from_path(&podman).container, unit("podman:3f4e5d6c7b8a"));
        let k8s = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(from_path(&k8s).container, unit("containerd:3f4e5d6c7b8a"));
        assert_eq!(
            from_path(&format!("/kubepods/burstable/pod1/{ID}")).container,
            unit("containerd:3f4e5d6c7b8a")
        );
        assert_eq!(
            from_path(&format!("/system.slice/crio-{ID}.scope")).container,
            unit("crio:3f4e5d6c7b8a")
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
