//! One event as one `JSONEachRow` line of the `events` table
//! (`packaging/clickhouse/events.sql`), and the systemd unit of its cgroup.
//!
//! Column types work on ClickHouse 18.16 (Debian's) and current releases:
//! no `DateTime64`, so the time is `time` (`DateTime`, Unix seconds, which
//! the server takes as a number whatever its time zone) plus `time_ns`
//! (nanoseconds within that second). A missing error is `""`, never NULL
//! (no `Nullable` in the sort key's way).

use std::{
    borrow::Cow,
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    cgroup_unit::from_proc_cgroup,
    event::{Event, errno, kind_name},
    output::escape,
};

#[derive(Serialize)]
struct Row<'a> {
    time: i64,
    time_ns: u32,
    host: &'a str,
    event: &'static str,
    proto: &'static str,
    family: &'static str,
    src_ip: String,
    src_port: u16,
    dst_ip: String,
    dst_port: u16,
    pid: u32,
    tid: u32,
    uid: u32,
    comm: Cow<'a, str>,
    process_comm: Cow<'a, str>,
    netns: u32,
    inode: u64,
    cgroup_id: u64,
    unit: &'a str,
    error: Cow<'static, str>,
    implicit: u8,
}

/// Appends `e` as one row (with its newline) to `out`, tagged with `host`.
pub fn write_row(out: &mut Vec<u8>, e: &Event, host: &str, unit: &str) {
    let row = Row {
        time: e.time.0.div_euclid(1_000_000_000),
        time_ns: e.time.0.rem_euclid(1_000_000_000) as u32,
        host,
        event: kind_name(e.kind),
        proto: e.proto.name(),
        family: e.family.name(),
        src_ip: e.src.ip().to_string(),
        src_port: e.src.port(),
        dst_ip: e.dst.ip().to_string(),
        dst_port: e.dst.port(),
        pid: e.pid,
        tid: e.tid,
        uid: e.uid,
        comm: escape::for_json(e.comm.as_bytes()),
        process_comm: escape::for_json(e.process_comm.as_bytes()),
        netns: e.netns,
        inode: e.inode,
        cgroup_id: e.cgroup_id,
        unit,
        error: e.error.map_or(Cow::Borrowed(""), errno::name),
        implicit: u8::from(e.is_implicit()),
    };
    // Plain strings and integers into a Vec: cannot fail.
    if serde_json::to_writer(&mut *out, &row).is_ok() {
        out.push(b'\n');
    }
}

/// Least time between two walks of the cgroup tree (a miss within it is
/// answered "unknown" rather than walking again).
const RESCAN_AFTER: Duration = Duration::from_secs(2);

/// The systemd unit of a cgroup id (the inode of its cgroup v2 directory,
/// which the kernel records with each event). The id outlives the process,
/// so short-lived processes get their unit too. Filled by walking the
/// cgroup tree on a miss, at most once per [`RESCAN_AFTER`].
pub struct UnitCache {
    root: Option<PathBuf>,
    units: HashMap<u64, String>,
    scanned: Option<Instant>,
}

/// Cgroup ids cached at most (a walk that finds more keeps the first ones).
const MAX_CGROUPS: usize = 65_536;

impl UnitCache {
    pub fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            units: HashMap::new(),
            scanned: None,
        }
    }

    /// The unit of `cgroup_id`, or `""` when unknown.
    pub fn unit(&mut self, cgroup_id: u64) -> &str {
        if !self.units.contains_key(&cgroup_id)
            && self.scanned.is_none_or(|t| t.elapsed() >= RESCAN_AFTER)
        {
            self.rescan();
        }
        self.units.get(&cgroup_id).map_or("", String::as_str)
    }

    fn rescan(&mut self) {
        self.scanned = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        self.units.clear();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            let path = format!("/{}", rel.display());
            let unit = from_proc_cgroup(&format!("0::{path}\n"))
                .unit
                .unwrap_or_default();
            if self.units.len() < MAX_CGROUPS {
                self.units.insert(meta.ino(), unit);
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::json::tests::sample;

    #[test]
    fn a_row_has_every_column_with_seconds_and_nanoseconds() {
        let mut out = Vec::new();
        write_row(&mut out, &sample(b"curl\x1b"), "web-1", "nginx.service");
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], 1_700_000_000);
        assert_eq!(v["time_ns"], 123_456_789);
        assert_eq!(v["host"], "web-1");
        assert_eq!(v["event"], "connect");
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["src_ip"], "10.0.0.5");
        assert_eq!(v["src_port"], 40312);
        assert_eq!(v["dst_ip"], "93.184.216.34");
        assert_eq!(v["dst_port"], 443);
        assert_eq!(
            (v["pid"].as_u64(), v["tid"].as_u64()),
            (Some(1234), Some(1236))
        );
        assert_eq!(v["uid"], 1000);
        assert_eq!(v["comm"], "curl\x1b");
        assert_eq!(v["netns"], 4026531840u32);
        assert_eq!(v["inode"], 99);
        assert_eq!(v["cgroup_id"], 5);
        assert_eq!(v["unit"], "nginx.service");
        assert_eq!(v["error"], "ECONNREFUSED");
        assert_eq!(v["implicit"], 0);
        assert_eq!(v.as_object().unwrap().len(), 21);
    }

    #[test]
    fn no_error_is_an_empty_string() {
        let mut e = sample(b"x");
        e.error = None;
        let mut out = Vec::new();
        write_row(&mut out, &e, "h", "");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "");
    }

    #[test]
    fn units_come_from_the_cgroup_directory_inode() {
        let root = std::env::temp_dir().join(format!("sockmon-cg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("system.slice/nginx.service");
        std::fs::create_dir_all(&dir).unwrap();
        let ino = std::fs::metadata(&dir).unwrap().ino();
        let slice = std::fs::metadata(root.join("system.slice")).unwrap().ino();
        let mut c = UnitCache::new(Some(root.clone()));
        assert_eq!(c.unit(ino), "nginx.service");
        assert_eq!(c.unit(slice), "");
        assert_eq!(
            c.unit(u64::MAX),
            "",
            "unknown: no rescan within the interval"
        );
        assert_eq!(UnitCache::new(None).unit(ino), "");
        let _ = std::fs::remove_dir_all(&root);
    }
}
