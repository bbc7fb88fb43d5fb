//! What the systemd test checks outside the sandbox: the host's files left
//! as they were, and the BPF programs loaded in the (shared) kernel.

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    process::Command,
    time::{Duration, SystemTime},
};

/// What the sandbox must leave as it was on the host.
pub struct HostState {
    etc_unit: bool,
    etc_sockmon: bool,
    run: BTreeSet<String>,
    /// Entries of /tmp older than ten minutes (not someone's short-lived files).
    tmp_old: BTreeSet<String>,
}

impl HostState {
    pub fn capture() -> HostState {
        let state = HostState {
            etc_unit: Path::new("/etc/systemd/system/sockmon.service").exists(),
            etc_sockmon: Path::new("/etc/sockmon").exists(),
            run: names("/run", None),
            tmp_old: names("/tmp", Some(Duration::from_secs(600))),
        };
        assert!(
            !state.etc_unit,
            "the host has /etc/systemd/system/sockmon.service: this test must not run where it could be confused with it"
        );
        state
    }

    pub fn assert_unchanged(&self) {
        assert!(
            !Path::new("/etc/systemd/system/sockmon.service").exists(),
            "the host's /etc/systemd/system/sockmon.service appeared"
        );
        assert_eq!(
            Path::new("/etc/sockmon").exists(),
            self.etc_sockmon,
            "the host's /etc/sockmon changed"
        );
        let run = names("/run", None);
        let new: Vec<&String> = run
            .difference(&self.run)
            .filter(|n| n.contains("sockmon") || n.contains("sdtest") || n.as_str() == "systemd")
            .collect();
        assert!(new.is_empty(), "the host's /run gained {new:?}");
        let tmp = names("/tmp", None);
        let kept = self.tmp_old.intersection(&tmp).count();
        println!(
            "host /tmp: {kept} of the {} entries older than ten minutes are still there",
            self.tmp_old.len()
        );
        assert!(
            kept * 2 >= self.tmp_old.len() && (self.tmp_old.is_empty() || kept > 0),
            "the host's /tmp was emptied: {kept} of {} old entries left",
            self.tmp_old.len()
        );
    }
}

/// Names in `dir` (only those last modified more than `older` ago, if given).
fn names(dir: &str, older: Option<Duration>) -> BTreeSet<String> {
    let now = SystemTime::now();
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    older.is_none_or(|age| {
                        e.metadata()
                            .ok()
                            .and_then(|m| m.modified().ok())
                            .and_then(|t| now.duration_since(t).ok())
                            .is_some_and(|d| d > age)
                    })
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// BPF programs in the kernel

/// (id, name) of every BPF program loaded: from `bpftool` when installed,
/// else through aya.
pub fn loaded_programs() -> Vec<(u32, String)> {
    if let Ok(out) = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        && out.status.success()
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
    {
        return v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let id = u32::try_from(p["id"].as_u64()?).ok()?;
                Some((id, p["name"].as_str().unwrap_or_default().to_string()))
            })
            .collect();
    }
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Waits (the kernel frees programs shortly after their last reference
/// goes) until none of `held` is loaded; panics after 30 s naming those left
/// and `whose` they were.
pub fn wait_programs_gone(held: &BTreeSet<u32>, whose: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<u32> = loaded_programs()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| held.contains(id))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "programs of {whose} still loaded: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn programs_named(name: &str) -> usize {
    loaded_programs().iter().filter(|(_, n)| n == name).count()
}

/// IDs of the BPF programs whose descriptors (programs or links) `pid` holds.
pub fn program_ids_held_by(pid: u32) -> BTreeSet<u32> {
    let dir = format!("/proc/{pid}/fdinfo");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(Result::ok)
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
