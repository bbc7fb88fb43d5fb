//! The hand-written `/proc` readers (`sockmon::procfs`) against the `procfs`
//! crate, on the two reads a snapshot makes of every process:
//!
//! 1. the descriptor scan: every `(socket inode, pid)` of every process;
//! 2. the process row: start time (`stat`), real uid (`status`), name (`comm`).
//!
//! Run: `cargo bench -p sockmon --bench procfs_scan [-- PROCESSES SOCKETS]`
//! (as root, so that every process's table is readable). It starts
//! PROCESSES children (default 1000) that each hold SOCKETS inherited
//! sockets (default 10), then times both readers over all of /proc,
//! interleaved, and prints the medians. Both must find the same pairs.
//! The result is written in ARCHITECTURE.md ("Hand-written parts, and why").

#![expect(
    unused_crate_dependencies,
    reason = "a bench links every dependency of the package and uses a few"
)]

use std::{
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use procfs::process::{FDTarget, Process};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let processes = args.first().copied().unwrap_or(1000);
    let sockets = args.get(1).copied().unwrap_or(10);
    let rounds = 15;

    let children = hold(processes, sockets);
    let pids = sockmon::procfs::pids().expect("/proc");
    println!(
        "{} processes in /proc ({processes} holding {sockets} sockets each), {rounds} rounds",
        pids.len()
    );

    let mut ours = Vec::new();
    let mut crate_ = Vec::new();
    let mut ours_rows = Vec::new();
    let mut crate_rows = Vec::new();
    let (mut n_ours, mut n_crate) = (0, 0);
    for _ in 0..rounds {
        let t = Instant::now();
        let found = sockmon::procfs::socket_fds(&pids);
        ours.push(t.elapsed());
        n_ours = found.len();

        let t = Instant::now();
        let found = crate_socket_fds(&pids);
        crate_.push(t.elapsed());
        n_crate = found.len();

        let t = Instant::now();
        let mut buf = Vec::new();
        let rows = pids
            .iter()
            .filter_map(|&p| sockmon::procfs::process(p, &mut buf))
            .count();
        ours_rows.push(t.elapsed());
        std::hint::black_box(rows);

        let t = Instant::now();
        let rows = pids.iter().filter_map(|&p| crate_process(p)).count();
        crate_rows.push(t.elapsed());
        std::hint::black_box(rows);
    }
    drop(children);
    // Other processes come and go meanwhile: close, not necessarily equal.
    let expected = processes * sockets;
    assert!(
        n_ours >= expected && n_crate >= expected,
        "pairs found: sockmon {n_ours}, procfs {n_crate}, at least {expected} expected"
    );
    println!("descriptor scan ({n_ours} socket descriptors; procfs crate found {n_crate}):");
    report(
        "sockmon::procfs::socket_fds",
        &mut ours,
        &mut crate_,
        "procfs 0.17 Process::fd",
    );
    println!("process rows (stat, status, comm):");
    report(
        "sockmon::procfs::process",
        &mut ours_rows,
        &mut crate_rows,
        "procfs 0.17 stat()+status()",
    );
}

fn report(a: &str, ta: &mut [Duration], tb: &mut [Duration], b: &str) {
    let (ma, mb) = (median(ta), median(tb));
    println!(
        "  {a:<32} median {:>8.2} ms\n  {b:<32} median {:>8.2} ms   ({:.2}x)",
        ma.as_secs_f64() * 1e3,
        mb.as_secs_f64() * 1e3,
        mb.as_secs_f64() / ma.as_secs_f64()
    );
}

fn median(t: &mut [Duration]) -> Duration {
    t.sort_unstable();
    t[t.len() / 2]
}

/// The same scan with the `procfs` crate.
fn crate_socket_fds(pids: &[u32]) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    for &pid in pids {
        let Ok(p) = Process::new(pid as i32) else {
            continue;
        };
        let Ok(fds) = p.fd() else {
            continue;
        };
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target {
                out.push((inode, pid));
            }
        }
    }
    out
}

/// Start time, real uid and name with the `procfs` crate.
fn crate_process(pid: u32) -> Option<(u64, u32, String)> {
    let p = Process::new(pid as i32).ok()?;
    let stat = p.stat().ok()?;
    let status = p.status().ok()?;
    Some((stat.starttime, status.ruid, stat.comm))
}

/// Children that each hold `sockets` sockets (inherited: no close-on-exec),
/// killed and reaped on drop.
struct Holders(Vec<Child>);

impl Drop for Holders {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn hold(processes: usize, sockets: usize) -> Holders {
    let fds: Vec<i32> = (0..sockets)
        .map(|_| {
            // SAFETY: plain socket(2); the descriptor is closed at the end of `hold`.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            fd
        })
        .collect();
    let mut children = Holders(Vec::with_capacity(processes));
    for _ in 0..processes {
        let mut cmd = Command::new("sleep");
        cmd.arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        children.0.push(cmd.spawn().expect("spawn sleep"));
    }
    for fd in fds {
        // SAFETY: our own descriptor, closed once; the children keep their copies.
        unsafe { libc::close(fd) };
    }
    // Let every child reach its exec (then its table holds only the inherited sockets).
    std::thread::sleep(Duration::from_millis(500));
    children
}
