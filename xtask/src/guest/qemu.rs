//! Booting one guest under qemu and reading its serial console.
//!
//! Software emulation (`-accel tcg`): `/dev/kvm` on these machines is a PVM
//! that stock kernels cannot boot under. The guest's serial console is
//! qemu's stdout, written to a file that is followed while the guest runs
//! (its `@@sockmon-guest` lines are shown as progress). A guest that has not
//! powered off by the deadline is killed by its own PID: it can never hang
//! the test command.

use std::{
    fs,
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{MARK, debian::Kernel};

/// How a boot ended.
pub struct Boot {
    /// Everything the guest wrote on its console.
    pub console: String,
    pub wall: Duration,
    /// qemu's CPU time (user + system): about what the guest takes on an
    /// idle core, whatever else the machine is doing.
    pub cpu: Duration,
    /// Killed at the deadline.
    pub timed_out: bool,
}

/// Boots `k` with `initrd`, `cpus` vCPUs, console to `log`; prints the
/// guest's marker lines prefixed with `label` as they come.
pub fn boot(
    k: &Kernel,
    initrd: &Path,
    cpus: u32,
    log: &Path,
    timeout: Duration,
    label: &str,
) -> anyhow::Result<Boot> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "2048"])
        .args(["-smp", &cpus.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(k.vmlinuz())
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            // no_timer_check: on a loaded host the emulated timer can miss the
            // kernel's IO-APIC check, which then panics at boot.
            "console=ttyS0 quiet panic=-1 rdinit=/init mitigations=off no_timer_check",
        ])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let mut follow = Follow::new(log)?;
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .context("cannot start qemu-system-x86_64 (qemu-system-x86)")?;
    let deadline = started + timeout;
    let mut timed_out = false;
    let cpu;
    loop {
        follow.print_marks(label);
        match reap(child.id()) {
            Ok(Some(used)) => {
                cpu = used;
                break;
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                return Err(e);
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "xtask: [{label}] no poweroff after {timeout:?}: killing qemu (pid {})",
                child.id()
            );
            // Child::kill signals this child's own PID (SIGKILL).
            let _ = child.kill();
            cpu = loop {
                if let Some(used) = reap(child.id())? {
                    break used;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    follow.print_marks(label);
    let wall = started.elapsed();
    let console = String::from_utf8_lossy(&fs::read(log)?).into_owned();
    Ok(Boot {
        console,
        wall,
        cpu,
        timed_out,
    })
}

/// Reaps `pid` if it has exited, returning its CPU time (user + system).
fn reap(pid: u32) -> anyhow::Result<Option<Duration>> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; all zeroes is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid, with valid out-pointers.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, libc::WNOHANG, &mut ru) };
    match r {
        0 => Ok(None),
        r if r > 0 => {
            let tv = |t: libc::timeval| {
                Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
            };
            Ok(Some(tv(ru.ru_utime) + tv(ru.ru_stime)))
        }
        _ => Err(std::io::Error::last_os_error()).context("wait4(qemu)"),
    }
}

/// Follows the console log, printing complete marker lines.
struct Follow {
    file: fs::File,
    pending: Vec<u8>,
}

impl Follow {
    fn new(log: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            file: fs::File::open(log)?,
            pending: Vec::new(),
        })
    }

    fn print_marks(&mut self, label: &str) {
        let mut buf = Vec::new();
        if self.file.read_to_end(&mut buf).is_err() {
            return;
        }
        self.pending.extend_from_slice(&buf);
        while let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(rest) = line.trim_end().split_once(MARK).map(|(_, r)| r) {
                eprintln!("xtask: [{label}]{rest}");
            }
        }
    }
}
