//! Checking, before anything is loaded, that the process holds the
//! capabilities sockmon needs, so a missing one is named in the error instead
//! of surfacing as a bare `EPERM` from the kernel.

use std::fs;

/// A capability sockmon may need, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub name: &'static str,
    pub bit: u32,
    pub why: &'static str,
}

pub const CAP_SYS_ADMIN: Cap = Cap {
    name: "CAP_SYS_ADMIN",
    bit: 21,
    why: "mount tracefs/cgroup2 when missing; stands in for CAP_BPF/CAP_PERFMON on kernels before 5.8",
};
pub const CAP_NET_ADMIN: Cap = Cap {
    name: "CAP_NET_ADMIN",
    bit: 12,
    why: "attach the socket-release program to the root cgroup",
};
pub const CAP_PERFMON: Cap = Cap {
    name: "CAP_PERFMON",
    bit: 38,
    why: "attach tracepoints and read kernel memory from the programs",
};
pub const CAP_BPF: Cap = Cap {
    name: "CAP_BPF",
    bit: 39,
    why: "load eBPF programs and create maps",
};

/// What loading and attaching the probes needs.
pub const REQUIRED: [Cap; 3] = [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN];

/// The effective capability set of this process (`CapEff` in `/proc/self/status`).
pub fn effective() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The capabilities of `needed` missing from `eff`. CAP_SYS_ADMIN covers
/// CAP_BPF and CAP_PERFMON (as the kernel itself allows).
pub fn missing(eff: u64, needed: &[Cap]) -> Vec<Cap> {
    let has = |c: Cap| eff & (1u64 << c.bit) != 0;
    needed
        .iter()
        .copied()
        .filter(|&c| !(has(c) || ((c == CAP_BPF || c == CAP_PERFMON) && has(CAP_SYS_ADMIN))))
        .collect()
}

/// A one-paragraph explanation of what is missing, for the error message.
pub fn explain(missing: &[Cap]) -> String {
    let names: Vec<&str> = missing.iter().map(|c| c.name).collect();
    let reasons: Vec<String> = missing
        .iter()
        .map(|c| format!("{} to {}", c.name, c.why))
        .collect();
    format!(
        "missing capabilities: {} (needs {}); run as root, or grant them, e.g. `sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep $(which sockmon)`",
        names.join(", "),
        reasons.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
    }

    #[test]
    fn root_has_everything_and_nobody_has_nothing() {
        assert!(missing(0x1ff_ffff_ffff, &REQUIRED).is_empty());
        assert_eq!(missing(0, &REQUIRED), REQUIRED.to_vec());
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon_but_not_net_admin() {
        let eff = 1u64 << CAP_SYS_ADMIN.bit;
        assert_eq!(missing(eff, &REQUIRED), vec![CAP_NET_ADMIN]);
    }

    #[test]
    fn explanation_names_each_missing_capability() {
        let e = explain(&[CAP_BPF, CAP_NET_ADMIN]);
        assert!(e.contains("CAP_BPF, CAP_NET_ADMIN"), "{e}");
        assert!(e.contains("load eBPF programs"), "{e}");
    }
}

/// What the daemon keeps after the probes are loaded, and why:
/// reading every process's `/proc/PID/fd` and `exe` (ownership checks after
/// exec, enrichment, re-snapshots) needs CAP_SYS_PTRACE and
/// CAP_DAC_READ_SEARCH; entering other network namespaces for a re-snapshot
/// needs CAP_SYS_ADMIN. Everything else (CAP_BPF, CAP_PERFMON,
/// CAP_NET_ADMIN...) was needed only to load and attach.
pub const KEPT_AFTER_LOAD: [Cap; 3] = [
    Cap {
        name: "CAP_SYS_PTRACE",
        bit: 19,
        why: "read other processes' /proc/PID/fd and exe",
    },
    Cap {
        name: "CAP_DAC_READ_SEARCH",
        bit: 2,
        why: "list other users' /proc/PID/fd directories",
    },
    CAP_SYS_ADMIN,
];

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Reduces this process to `keep` (or to the part of it it holds): drops
/// every other capability from the bounding (when CAP_SETPCAP allows),
/// ambient, inheritable, permitted and effective sets, and sets
/// no-new-privs. Capabilities are per thread: call it while the process has
/// one thread, so every thread started later inherits the reduced sets.
pub fn drop_all_but(keep: &[Cap]) -> std::io::Result<()> {
    let permitted = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapPrm:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    // Asking capset for one we do not hold would fail and drop nothing.
    let mask: u64 = keep.iter().fold(0, |m, c| m | (1u64 << c.bit)) & permitted;
    let last = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for bit in 0..=last.min(63) {
        if mask & (1u64 << bit) == 0 {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, bit as libc::c_ulong, 0, 0, 0) };
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0);
    }
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask as u32,
            permitted: mask as u32,
            inheritable: 0,
        },
        CapData {
            effective: (mask >> 32) as u32,
            permitted: (mask >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a valid v3 header and two data words.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
