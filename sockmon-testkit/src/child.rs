//! Child processes that cannot outlive their handle.
//!
//! Everything a benchmark or a test starts (tracers, daemons, socket
//! holders, workloads) is owned by a [`ChildGuard`] that stops it by its PID
//! when dropped (SIGTERM, then SIGKILL after a grace period), so an error or
//! a panic halfway through leaves nothing running. Nothing here signals a
//! process group or a name: only the one PID the guard started.

use std::{
    process::{Child, ChildStdout, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// How long a child gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// A running child process, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    /// Starts `cmd`; the guard's name is its command line.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        let name = describe(cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            child: Some(child),
            name,
        })
    }

    /// The child's PID (0 once it has been waited for).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The command line it was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child itself, while it has not been waited for.
    pub fn child(&mut self) -> anyhow::Result<&mut Child> {
        self.child
            .as_mut()
            .with_context(|| format!("{} was already stopped", self.name))
    }

    /// The child's piped stdout, once.
    pub fn child_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// Fails if the child has already exited (with its status).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        let name = self.name.clone();
        if let Some(status) = self.child()?.try_wait()? {
            bail!("{name} exited early: {status}");
        }
        Ok(())
    }

    /// The child's exit status if it has exited (the guard is then done
    /// with it), `None` while it runs.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let status = self.child()?.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Waits for the child to exit on its own, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let name = self.name.clone();
        let child = self.child()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{name} did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then SIGKILL after a grace period; returns how it ended.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        terminate(&mut child).with_context(|| format!("stopping {}", self.name))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = terminate(&mut child)
        {
            eprintln!("stopping {}: {e:#}", self.name);
        }
    }
}

fn terminate(child: &mut Child) -> anyhow::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    signal(child.id(), libc::SIGTERM)?;
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(5));
    }
    child.kill()?;
    Ok(child.wait()?)
}

/// Sends `sig` to the process `pid` (one process, never a group).
pub fn signal(pid: u32, sig: libc::c_int) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    if pid <= 0 {
        bail!("refusing to signal pid {pid}");
    }
    // SAFETY: kill(2) has no memory arguments; pid is a single positive PID.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// A command line as a shell would show it (program and arguments).
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use super::*;

    #[test]
    fn guard_stops_a_child_on_drop() {
        let guard = ChildGuard::spawn(Command::new("sleep").arg("30")).unwrap();
        let pid = guard.pid();
        drop(guard);
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie_or_gone(pid));
    }

    fn is_zombie_or_gone(pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true)
    }

    #[test]
    fn commands_are_described_with_their_arguments() {
        let mut c = Command::new("ss");
        c.args(["-tunapeH", "src", "127.0.0.1:1"]);
        assert_eq!(describe(&c), "ss -tunapeH src 127.0.0.1:1");
    }

    #[test]
    fn no_group_is_ever_signalled() {
        assert!(signal(0, libc::SIGTERM).is_err());
        assert!(signal(u32::MAX, libc::SIGTERM).is_err());
    }
}
