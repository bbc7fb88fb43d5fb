//! Starting and stopping what is measured against "nothing attached":
//! sockmon and an equivalent bpftrace program.
//!
//! Which sockmon runs is one switch, [`SockmonMode`]: `sockmon daemon` (what
//! production runs) when the binary has it, else `sockmon watch --json` with
//! its output to /dev/null. Each tracer is started, and a figure taken only
//! once it has said its probes are attached: sockmon watch's stderr line,
//! the daemon's sd_notify `READY=1`, bpftrace's
//! `__BPFTRACE_NOTIFY_PROBES_ATTACHED` (printed after its last attach).

use std::{
    fs,
    io::ErrorKind,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use serde::Serialize;

use sockmon_testkit::child::ChildGuard;

use crate::procs::{TempDir, cpu_seconds};

/// How long a tracer may take to attach before the run fails.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);

/// What runs as "sockmon attached".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SockmonMode {
    /// `sockmon watch --json > /dev/null`.
    Watch,
    /// `sockmon daemon` serving its API on a Unix socket.
    Daemon,
}

impl SockmonMode {
    /// `Daemon` if this sockmon binary has the subcommand.
    pub fn detect(sockmon: &Path) -> Self {
        let has_daemon = Command::new(sockmon)
            .args(["daemon", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if has_daemon {
            Self::Daemon
        } else {
            Self::Watch
        }
    }
}

/// One of the configurations compared side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tracer {
    Bare,
    /// sockmon in its default attach mode on this kernel (`socket`).
    Sockmon,
    /// sockmon with `--attach syscalls` (syscall tracepoints), side by side.
    #[serde(rename = "sockmon-syscalls")]
    SockmonSyscalls,
    /// sockmon in its default mode without the kernel's flows records at
    /// close and exec (`--no-enrichment`): what those records cost, side by side.
    #[serde(rename = "sockmon-no-enrichment")]
    SockmonPlain,
    /// sockmon with `--attach kfunc` (kernel-function hooks), where the
    /// kernel allows it (the Debian guests of `bench --kernel`).
    #[serde(rename = "sockmon-kfunc")]
    SockmonKfunc,
    Bpftrace,
}

impl Tracer {
    pub fn label(self, mode: SockmonMode) -> &'static str {
        match (self, mode) {
            (Self::Bare, _) => "nothing attached",
            (Self::Sockmon, SockmonMode::Daemon) => "sockmon daemon --attach socket",
            (Self::Sockmon, SockmonMode::Watch) => "sockmon watch --json --attach socket",
            (Self::SockmonSyscalls, SockmonMode::Daemon) => "sockmon daemon --attach syscalls",
            (Self::SockmonSyscalls, SockmonMode::Watch) => "sockmon watch --json --attach syscalls",
            (Self::SockmonPlain, SockmonMode::Daemon) => {
                "sockmon daemon --attach socket --no-enrichment"
            }
            (Self::SockmonPlain, SockmonMode::Watch) => {
                "sockmon watch --json --attach socket (no switch: enriched)"
            }
            (Self::SockmonKfunc, SockmonMode::Daemon) => "sockmon daemon --attach kfunc",
            (Self::SockmonKfunc, SockmonMode::Watch) => "sockmon watch --json --attach kfunc",
            (Self::Bpftrace, _) => "bpftrace",
        }
    }
}

/// How to start sockmon.
#[derive(Clone, Debug)]
pub struct SockmonCmd {
    pub bin: PathBuf,
    pub mode: SockmonMode,
}

/// Options of one start.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartOptions {
    /// `--ring-kib`; sockmon's default when `None`.
    pub ring_kib: Option<u32>,
    /// `watch` only: keep its stdout (the event stream) for the caller
    /// instead of sending it to /dev/null.
    pub keep_stdout: bool,
}

/// A started tracer (or nothing, for [`Tracer::Bare`]); stopped on drop.
pub struct Attached {
    proc: Option<TracerProc>,
    /// The daemon's API socket, when the tracer is the daemon.
    pub api_socket: Option<PathBuf>,
    /// Time from spawn until attached (or READY).
    pub attach_time: Duration,
    pub stdout: Option<ChildStdout>,
}

struct TracerProc {
    guard: ChildGuard,
    dir: TempDir,
}

impl Attached {
    pub fn start(tracer: Tracer, sockmon: &SockmonCmd, opts: StartOptions) -> anyhow::Result<Self> {
        match (tracer, sockmon.mode) {
            (Tracer::Bare, _) => Ok(Self {
                proc: None,
                api_socket: None,
                attach_time: Duration::ZERO,
                stdout: None,
            }),
            (Tracer::Sockmon, SockmonMode::Daemon) => start_daemon(&sockmon.bin, opts, "socket"),
            (Tracer::SockmonPlain, SockmonMode::Daemon) => {
                start_daemon_with(&sockmon.bin, opts, "socket", &["--no-enrichment"])
            }
            (Tracer::SockmonPlain, SockmonMode::Watch) => start_watch(&sockmon.bin, opts, "socket"),
            (Tracer::Sockmon, SockmonMode::Watch) => start_watch(&sockmon.bin, opts, "socket"),
            (Tracer::SockmonSyscalls, SockmonMode::Daemon) => {
                start_daemon(&sockmon.bin, opts, "syscalls")
            }
            (Tracer::SockmonSyscalls, SockmonMode::Watch) => {
                start_watch(&sockmon.bin, opts, "syscalls")
            }
            (Tracer::SockmonKfunc, SockmonMode::Daemon) => {
                start_daemon(&sockmon.bin, opts, "kfunc")
            }
            (Tracer::SockmonKfunc, SockmonMode::Watch) => start_watch(&sockmon.bin, opts, "kfunc"),
            (Tracer::Bpftrace, _) => start_bpftrace(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.guard.pid())
    }

    /// CPU seconds the tracer process has used so far (0 for none).
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.pid().map_or(Ok(0.0), cpu_seconds)
    }

    /// Fails, with the tracer's log, if it has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        let Some(p) = self.proc.as_mut() else {
            return Ok(());
        };
        p.guard
            .ensure_running()
            .with_context(|| log_tail(&p.dir.path().join("stderr.log")))
    }

    /// SIGTERM; an exit other than 0 is an error (carrying the log).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let Some(p) = self.proc.take() else {
            return Ok(());
        };
        let name = p.guard.name().to_string();
        let status = p.guard.stop()?;
        // bpftrace ends on SIGTERM by the signal's default action.
        if !status.success() && !name.starts_with("bpftrace") {
            bail!(
                "{name} ended with {status} on SIGTERM\n{}",
                log_tail(&p.dir.path().join("stderr.log"))
            );
        }
        Ok(())
    }
}

fn stderr_file(dir: &TempDir) -> anyhow::Result<(PathBuf, Stdio)> {
    let path = dir.path().join("stderr.log");
    let f = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok((path, Stdio::from(f)))
}

/// The last lines of a log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    format!("last lines of {}:\n{tail}", path.display())
}

fn start_watch(bin: &Path, opts: StartOptions, attach: &str) -> anyhow::Result<Attached> {
    let dir = TempDir::new("watch")?;
    let (log, stderr) = stderr_file(&dir)?;
    let mut cmd = Command::new(bin);
    cmd.args(["watch", "--json", "--attach", attach]);
    if let Some(k) = opts.ring_kib {
        cmd.arg("--ring-kib").arg(k.to_string());
    }
    cmd.stdin(Stdio::null())
        .stderr(stderr)
        .stdout(if opts.keep_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let t0 = Instant::now();
    let mut guard = ChildGuard::spawn(&mut cmd)?;
    wait_for_line(&mut guard, &log, "probes attached")?;
    let attach_time = t0.elapsed();
    let stdout = guard.child()?.stdout.take();
    Ok(Attached {
        proc: Some(TracerProc { guard, dir }),
        api_socket: None,
        attach_time,
        stdout,
    })
}

/// Polls a log file until a line contains `marker`; fails if the process exits.
fn wait_for_line(guard: &mut ChildGuard, log: &Path, marker: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        if fs::read_to_string(log).is_ok_and(|t| t.contains(marker)) {
            return Ok(());
        }
        guard.ensure_running().with_context(|| log_tail(log))?;
        if Instant::now() >= deadline {
            bail!(
                "{} did not attach within {ATTACH_TIMEOUT:?}\n{}",
                guard.name(),
                log_tail(log)
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// bpftrace printing the same facts as sockmon (four-tuple, pid) for the same
/// syscalls, from tracepoints only: bind, listen and connect at exit (the fd
/// saved at entry), accept/accept4 at exit, and a socket's close at entry.
/// The socket is found the way sockmon finds it: fd → file → socket → sk.
pub const BPFTRACE_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_bind,
tracepoint:syscalls:sys_enter_listen,
tracepoint:syscalls:sys_enter_connect
{
  @fd[tid] = args->fd + 1;
}

tracepoint:syscalls:sys_exit_bind,
tracepoint:syscalls:sys_exit_listen,
tracepoint:syscalls:sys_exit_connect
/@fd[tid]/
{
  $fd = @fd[tid] - 1;
  delete(@fd[tid]);
  $file = *(curtask->files->fdt->fd + $fd);
  $sk = ((struct socket *)$file->private_data)->sk;
  $dport = $sk->__sk_common.skc_dport;
  printf("%s pid=%d %s:%d %s:%d ret=%d\n", probe, pid,
    ntop($sk->__sk_common.skc_rcv_saddr), $sk->__sk_common.skc_num,
    ntop($sk->__sk_common.skc_daddr), (($dport & 0xff) << 8) | ($dport >> 8), args->ret);
}

tracepoint:syscalls:sys_exit_accept,
tracepoint:syscalls:sys_exit_accept4
/args->ret >= 0/
{
  $file = *(curtask->files->fdt->fd + args->ret);
  $sk = ((struct socket *)$file->private_data)->sk;
  $dport = $sk->__sk_common.skc_dport;
  printf("%s pid=%d %s:%d %s:%d ret=%d\n", probe, pid,
    ntop($sk->__sk_common.skc_rcv_saddr), $sk->__sk_common.skc_num,
    ntop($sk->__sk_common.skc_daddr), (($dport & 0xff) << 8) | ($dport >> 8), args->ret);
}

tracepoint:syscalls:sys_enter_close
{
  $file = *(curtask->files->fdt->fd + args->fd);
  if ($file != 0 && ($file->f_inode->i_mode & 0xf000) == 0xc000) {
    $sk = ((struct socket *)$file->private_data)->sk;
    $dport = $sk->__sk_common.skc_dport;
    printf("%s pid=%d %s:%d %s:%d\n", probe, pid,
      ntop($sk->__sk_common.skc_rcv_saddr), $sk->__sk_common.skc_num,
      ntop($sk->__sk_common.skc_daddr), (($dport & 0xff) << 8) | ($dport >> 8));
  }
}
"#;

fn start_bpftrace() -> anyhow::Result<Attached> {
    let dir = TempDir::new("bpftrace")?;
    let (log, stderr) = stderr_file(&dir)?;
    let mut cmd = Command::new("bpftrace");
    cmd.arg("-e")
        .arg(BPFTRACE_SCRIPT)
        .env("__BPFTRACE_NOTIFY_PROBES_ATTACHED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let t0 = Instant::now();
    let mut guard = ChildGuard::spawn(&mut cmd)?;
    wait_for_line(&mut guard, &log, "__BPFTRACE_NOTIFY_PROBES_ATTACHED")?;
    Ok(Attached {
        proc: Some(TracerProc { guard, dir }),
        api_socket: None,
        attach_time: t0.elapsed(),
        stdout: None,
    })
}

fn start_daemon(bin: &Path, opts: StartOptions, attach: &str) -> anyhow::Result<Attached> {
    start_daemon_with(bin, opts, attach, &[])
}

fn start_daemon_with(
    bin: &Path,
    opts: StartOptions,
    attach: &str,
    extra: &[&str],
) -> anyhow::Result<Attached> {
    let dir = TempDir::new("daemon")?;
    let (log, stderr) = stderr_file(&dir)?;
    let socket = dir.path().join("sockmon.sock");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)
        .with_context(|| format!("binding {}", notify_path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(["daemon", "--no-config", "--attach", attach])
        .args(extra)
        .arg("--socket")
        .arg(&socket);
    if let Some(k) = opts.ring_kib {
        cmd.arg("--ring-kib").arg(k.to_string());
    }
    cmd.env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let t0 = Instant::now();
    let mut guard = ChildGuard::spawn(&mut cmd)?;
    wait_ready(&notify, &mut guard).with_context(|| log_tail(&log))?;
    Ok(Attached {
        proc: Some(TracerProc { guard, dir }),
        api_socket: Some(socket),
        attach_time: t0.elapsed(),
        stdout: None,
    })
}

/// Waits for an sd_notify datagram containing the line `READY=1`.
fn wait_ready(notify: &UnixDatagram, guard: &mut ChildGuard) -> anyhow::Result<()> {
    notify.set_read_timeout(Some(Duration::from_millis(20)))?;
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    let mut buf = vec![0u8; 4096];
    loop {
        match notify.recv(&mut buf) {
            Ok(n) if is_ready(&buf[..n]) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e).context("reading the notify socket"),
        }
        guard.ensure_running()?;
        if Instant::now() >= deadline {
            bail!("{} sent no READY=1 within {ATTACH_TIMEOUT:?}", guard.name());
        }
    }
}

/// Whether an sd_notify message (newline-separated assignments) says READY=1.
pub fn is_ready(msg: &[u8]) -> bool {
    msg.split(|b| *b == b'\n').any(|l| l == b"READY=1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_an_exact_assignment() {
        assert!(is_ready(b"READY=1"));
        assert!(is_ready(b"STATUS=snapshot done\nREADY=1\n"));
        assert!(!is_ready(b"READY=0"));
        assert!(!is_ready(b"NOTREADY=1"));
        assert!(!is_ready(b""));
    }
}
