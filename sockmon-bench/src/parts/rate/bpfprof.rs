//! Where sockmon's in-kernel time goes, from the counters this machine has.
//!
//! Hardware counters are not available on these VMs (`perf stat -e
//! instructions` says `<not supported>`), but the kernel can account every
//! BPF program's run time itself (`BPF_ENABLE_STATS`: on while we hold the
//! descriptor it returns, off again when it closes). One extra run per
//! workload, outside the measured rounds (the accounting costs two clock
//! reads per program run), gives each sockmon program's runs and
//! nanoseconds per connection and per `getppid()`.

use std::{
    collections::BTreeMap,
    os::fd::{FromRawFd, OwnedFd},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use crate::{
    procs::output,
    tools::Tools,
    tracers::{Attached, StartOptions, Tracer},
    worker::Job,
};

#[derive(Debug, Serialize)]
pub struct BpfProfile {
    pub connections: u64,
    /// Workload CPU (user + system) per connection, µs, in this run.
    pub workload_cpu_us_per_conn: f64,
    pub programs: Vec<ProgCost>,
    pub total_ns_per_conn: f64,
    /// BPF time per `getppid()` call (programs sockmon has on other events,
    /// run by the machine's other tasks meanwhile, spread over the calls).
    pub ns_per_getppid: f64,
    /// BPF time per process start (`fork`, `exec` and `exit` of
    /// `/bin/true`: the process hooks, and the exec record when enriched).
    pub ns_per_spawn: f64,
}

#[derive(Debug, Serialize)]
pub struct ProgCost {
    pub name: String,
    pub runs_per_conn: f64,
    pub ns_per_run: f64,
    pub ns_per_conn: f64,
}

/// Run time and count of one program.
#[derive(Clone, Debug, Default)]
struct Counts {
    name: String,
    ns: u64,
    runs: u64,
}

/// BPF run-time statistics, on while this lives.
struct StatsOn {
    _fd: OwnedFd,
}

impl StatsOn {
    fn enable() -> anyhow::Result<Self> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        // union bpf_attr { struct { __u32 type; } enable_stats; }: type 0 is
        // BPF_STATS_RUN_TIME; the rest must be zero.
        let attr = [0u32; 2];
        // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of attr, which we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                size_of_val(&attr),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("BPF_ENABLE_STATS");
        }
        let fd = i32::try_from(fd)?;
        Ok(Self {
            // SAFETY: the kernel just returned this descriptor to us alone.
            _fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

pub fn profile(tools: &Tools, secs: f64, tracer: Tracer) -> anyhow::Result<BpfProfile> {
    let sockmon = Attached::start(tracer, &tools.sockmon, StartOptions::default())?;
    let ids = prog_ids(sockmon.pid().context("no sockmon pid")?)?;
    let stats = StatsOn::enable()?;
    let c0 = counts(&ids)?;
    let conn = tools.run_worker(&Job::Rate {
        threads: 1,
        secs,
        warmup: 0.0,
        port: 0,
        per_sec: 0.0,
    })?;
    let c1 = counts(&ids)?;
    let calls = tools.run_worker(&Job::Getppid { secs, warmup: 0.0 })?;
    let c2 = counts(&ids)?;
    let spawns = tools.run_worker(&Job::Spawn { secs, warmup: 0.0 })?;
    let c3 = counts(&ids)?;
    drop(stats);
    sockmon.stop()?;
    let n = conn.total_ops.max(1) as f64;
    let programs = costs(&c0, &c1, n);
    Ok(BpfProfile {
        connections: conn.total_ops,
        workload_cpu_us_per_conn: (conn.user_s + conn.sys_s) * 1e6 / conn.ops.max(1) as f64,
        total_ns_per_conn: programs.iter().map(|p| p.ns_per_conn).sum(),
        programs,
        ns_per_getppid: total_ns(&c1, &c2) as f64 / calls.total_ops.max(1) as f64,
        ns_per_spawn: total_ns(&c2, &c3) as f64 / spawns.total_ops.max(1) as f64,
    })
}

/// Per-program cost between two readings, per operation (`n` of them).
fn costs(before: &BTreeMap<u32, Counts>, after: &BTreeMap<u32, Counts>, n: f64) -> Vec<ProgCost> {
    let mut v: Vec<ProgCost> = after
        .iter()
        .filter_map(|(id, a)| {
            let b = before.get(id)?;
            let (ns, runs) = (a.ns.saturating_sub(b.ns), a.runs.saturating_sub(b.runs));
            (runs > 0).then(|| ProgCost {
                name: a.name.clone(),
                runs_per_conn: runs as f64 / n,
                ns_per_run: ns as f64 / runs as f64,
                ns_per_conn: ns as f64 / n,
            })
        })
        .collect();
    v.sort_by(|a, b| b.ns_per_conn.total_cmp(&a.ns_per_conn));
    v
}

fn total_ns(before: &BTreeMap<u32, Counts>, after: &BTreeMap<u32, Counts>) -> u64 {
    after
        .iter()
        .filter_map(|(id, a)| Some(a.ns.saturating_sub(before.get(id)?.ns)))
        .sum()
}

/// IDs of the BPF programs `pid` holds (`prog_id` in the fdinfo of its
/// `bpf-prog` descriptors).
fn prog_ids(pid: u32) -> anyhow::Result<Vec<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let info = std::fs::read_to_string(e?.path()).unwrap_or_default();
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        bail!("sockmon (pid {pid}) holds no BPF programs");
    }
    Ok(ids)
}

/// Run time and count of the programs `ids`, from `bpftool prog show`.
fn counts(ids: &[u32]) -> anyhow::Result<BTreeMap<u32, Counts>> {
    let json = output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    Ok(parse_counts(&serde_json::from_str(&json)?, ids))
}

fn parse_counts(all: &Value, ids: &[u32]) -> BTreeMap<u32, Counts> {
    all.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = u32::try_from(p["id"].as_u64()?).ok()?;
            ids.contains(&id).then(|| {
                let c = Counts {
                    name: p["name"].as_str().unwrap_or("?").to_string(),
                    ns: p["run_time_ns"].as_u64().unwrap_or(0),
                    runs: p["run_cnt"].as_u64().unwrap_or(0),
                };
                (id, c)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_per_operation() {
        let all: Value = serde_json::from_str(
            r#"[{"id":7,"name":"sys_exit_connect","run_time_ns":1000,"run_cnt":10},
                {"id":8,"name":"sock_release","run_time_ns":500,"run_cnt":5},
                {"id":9,"name":"not_ours","run_time_ns":9,"run_cnt":9}]"#,
        )
        .unwrap();
        let before = parse_counts(&all, &[7, 8]);
        assert_eq!(before.len(), 2);
        let mut after = before.clone();
        after.get_mut(&7).unwrap().ns += 3000;
        after.get_mut(&7).unwrap().runs += 3;
        let c = costs(&before, &after, 3.0);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].name.as_str(), c[0].ns_per_run, c[0].ns_per_conn),
            ("sys_exit_connect", 1000.0, 1000.0)
        );
        assert_eq!(total_ns(&before, &after), 3000);
    }
}
