//! What the benchmark reads about processes from `/proc` (memory, CPU time,
//! other people's syscall tracers), its temp dirs, and running a command
//! for its output.
//!
//! Everything the benchmark starts is owned by a
//! [`sockmon_testkit::child::ChildGuard`], which stops it by its PID when
//! dropped, so an error or a panic halfway through a part leaves nothing
//! running.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use sockmon_testkit::child::describe;

/// Runs `cmd` and returns its stdout; fails with its stderr unless it succeeds.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A private directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let base = std::env::temp_dir();
        for n in 0..1000u32 {
            let dir = base.join(format!("sockmon-bench-{}-{tag}-{n}", std::process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(Self(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        }
        bail!("cannot create a temp dir under {}", base.display())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vmrss(&text).with_context(|| format!("no VmRSS in {path}"))
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system, all threads) `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat_ticks(&text).with_context(|| format!("cannot parse {path}"))?;
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(ticks as f64 / hz)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Processes other than `ours` that have a BPF program attached to a
/// syscall tracepoint (a `bpf_link` whose fdinfo names a `sys_*`
/// tracepoint; aya and libbpf attach through links). Such a program puts every task's syscalls on the tracing
/// slow path, so a "bare" run next to it is not bare: on a shared machine
/// (other people's sockmon tests) the benchmark must notice.
pub fn foreign_syscall_tracers(ours: Option<u32>) -> Vec<Foreign> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| Some(*pid) != ours && *pid != me)
        .filter(|pid| has_syscall_link(*pid))
        .map(|pid| Foreign {
            pid,
            cmd: command_line(pid),
        })
        .collect()
}

/// A process with programs on syscall tracepoints that is not ours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Foreign {
    pub pid: u32,
    pub cmd: String,
}

/// `/proc/PID/cmdline` with spaces, shortened for reports.
fn command_line(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let s: String = String::from_utf8_lossy(&raw).replace('\0', " ");
    s.trim().chars().take(120).collect()
}

fn has_syscall_link(pid: u32) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        let is_link =
            fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf_link");
        is_link
            && fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .is_ok_and(|info| is_syscall_tracepoint_link(&info))
    })
}

fn is_syscall_tracepoint_link(fdinfo: &str) -> bool {
    fdinfo.lines().any(|l| {
        l.strip_prefix("tp_name:")
            .is_some_and(|n| n.trim().starts_with("sys_"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss_is_read_in_bytes() {
        let s = "Name:\tsockmon\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(s), Some(1234 * 1024));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
    }

    #[test]
    fn stat_ticks_survive_odd_names() {
        let s = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat_ticks(s), Some(12));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn syscall_links_are_recognised() {
        let info = "pos:\t0\nlink_type:\tperf\nprog_id:\t2101\ntp_name:\tsys_enter_bind\nevent_type:\ttracepoint\n";
        assert!(is_syscall_tracepoint_link(info));
        assert!(!is_syscall_tracepoint_link(
            &info.replace("sys_enter_bind", "inet_sock_set_state")
        ));
        assert!(!is_syscall_tracepoint_link("link_type:\tcgroup\n"));
    }
}
