//! The sandbox of the systemd test: Debian's systemd booted by
//! `packaging/test/systemd-sandbox-boot.sh` as PID 1 of a new PID + mount
//! namespace, commands run in it with `nsenter`, and its end (poweroff, or
//! SIGKILL to its PID 1 by the PID this test started), also on failure.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::repo;
use crate::support::bin;

/// How long the sandbox may take to boot, and one command in it: each
/// module that boots one says.
#[derive(Clone, Copy)]
pub struct Limits {
    pub boot: Duration,
    pub command: Duration,
}

/// A systemd booted by `packaging/test/systemd-sandbox-boot.sh` in a new PID
/// and mount namespace. Dropping it powers it off (or kills its PID 1) and
/// removes the cgroups made for it.
pub struct Sandbox {
    /// `unshare`, whose one child is the namespace's PID 1.
    unshare: Child,
    /// Host PID of the namespace's PID 1 (systemd).
    pid1: i32,
    /// `pid:[N]` of the namespace.
    pidns: String,
    cgroups: Vec<PathBuf>,
    console: Arc<Mutex<Vec<String>>>,
    done: bool,
    limits: Limits,
}

impl Sandbox {
    pub fn boot(name: &str, env: &[(&str, &str)], limits: Limits) -> Sandbox {
        let cgroup = format!("sockmon-sdtest-{}-{name}", std::process::id());
        let cgroups = make_cgroups(&cgroup);
        let bin_dir = Path::new(bin())
            .parent()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--fork",
            "--pid",
            "--mount",
            "--propagation",
            "private",
            "--kill-child",
        ])
        .arg("bash")
        .arg(repo().join("packaging/test/systemd-sandbox-boot.sh"))
        .env("SDTEST_CGROUP", &cgroup)
        .env("SDTEST_BIND", &bin_dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                // If this test process dies, unshare dies, and with it
                // (--kill-child) the sandbox's PID 1 and so every process in it.
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
        let mut unshare = cmd.spawn().expect("cannot start unshare (util-linux)");
        let console = Arc::new(Mutex::new(Vec::new()));
        collect(unshare.stdout.take().unwrap(), console.clone());
        collect(unshare.stderr.take().unwrap(), console.clone());
        let upid = unshare.id();
        let found = poll(Duration::from_secs(30), || {
            let children = fs::read_to_string(format!("/proc/{upid}/task/{upid}/children")).ok()?;
            let pid: i32 = children.split_whitespace().next()?.parse().ok()?;
            let ns = fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
            (nspid.split_whitespace().last() == Some("1"))
                .then(|| (pid, ns.to_string_lossy().into_owned()))
        });
        let mut sb = Sandbox {
            unshare,
            pid1: 0,
            pidns: String::new(),
            cgroups,
            console,
            done: false,
            limits,
        };
        let Some((pid1, pidns)) = found else {
            panic!(
                "the sandbox's PID 1 never appeared; console:\n{}",
                sb.console()
            );
        };
        sb.pid1 = pid1;
        sb.pidns = pidns;
        println!("sandbox {name}: PID 1 is {pid1} on the host ({})", sb.pidns);
        sb.wait_booted();
        sb
    }

    fn wait_booted(&self) {
        let deadline = Instant::now() + self.limits.boot;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out = self.run_for(
                &["systemctl", "is-system-running", "--wait"],
                left.max(Duration::from_secs(1)),
            );
            match out.stdout.trim() {
                "running" => return,
                "degraded" => {
                    let failed = self.run(&["systemctl", "--failed", "--no-pager"]);
                    println!("sandbox booted degraded (accepted):\n{}", failed.stdout);
                    return;
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let jobs = self.run(&["systemctl", "list-jobs", "--no-pager"]);
                panic!(
                    "the sandbox's systemd did not finish booting in {:?}: {}\njobs:\n{}\nconsole:\n{}",
                    self.limits.boot,
                    out.all(),
                    jobs.all(),
                    self.console()
                );
            }
            // Not up enough to answer yet (no private socket): try again.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `args` inside the sandbox (its mount and PID namespaces and root).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_for(args, self.limits.command)
    }

    fn run_for(&self, args: &[&str], limit: Duration) -> Output {
        self.run_with_input(args, None, limit)
    }

    fn run_with_input(&self, args: &[&str], input: Option<&str>, limit: Duration) -> Output {
        self.assert_ours();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid1.to_string(), "-m", "-p", "-r", "-w", "--"])
            .args(args)
            .env("SYSTEMD_PAGER", "cat")
            .env("SYSTEMD_COLORS", "0")
            .env_remove("NOTIFY_SOCKET")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot start nsenter (util-linux)");
        if let Some(text) = input {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(text.as_bytes()).unwrap();
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let t1 = collect(child.stdout.take().unwrap(), out.clone());
        let t2 = collect(child.stderr.take().unwrap(), err.clone());
        let status = wait_or_kill(&mut child, limit);
        let _ = (t1.join(), t2.join());
        let join = |v: &Arc<Mutex<Vec<String>>>| {
            v.lock()
                .unwrap()
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        };
        Output {
            what: args.join(" "),
            status,
            stdout: join(&out),
            stderr: join(&err),
        }
    }

    /// Writes `text` to `path` inside the sandbox (its overlay: the host's
    /// file is never touched).
    pub fn write(&self, path: &str, text: &str) {
        let out = self.run_with_input(
            &[
                "sh",
                "-c",
                "mkdir -p \"$(dirname \"$1\")\" && cat > \"$1\"",
                "sh",
                path,
            ],
            Some(text),
            self.limits.command,
        );
        assert!(out.ok(), "writing {path} in the sandbox: {}", out.all());
    }

    /// `systemctl show` of sockmon.service, these properties.
    pub fn show(&self, props: &[&str]) -> std::collections::HashMap<String, String> {
        let mut args = vec!["systemctl", "show", "sockmon.service"];
        let joined = props.join(",");
        args.extend(["-p", &joined]);
        let out = self.run(&args);
        assert!(out.ok(), "{}", out.all());
        out.stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The host PID of the sandbox's process `pid`.
    pub fn host_pid(&self, pid: u32) -> Option<u32> {
        fs::read_dir("/proc")
            .ok()?
            .filter_map(Result::ok)
            .find_map(|e| {
                let host: u32 = e.file_name().to_str()?.parse().ok()?;
                let ns = fs::read_link(e.path().join("ns/pid")).ok()?;
                if ns.to_string_lossy() != self.pidns {
                    return None;
                }
                let status = fs::read_to_string(e.path().join("status")).ok()?;
                let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
                (nspid.split_whitespace().last()? == pid.to_string()).then_some(host)
            })
    }

    /// Polls `f` until it returns something, for at most `limit`.
    pub fn wait_for<T>(&self, limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
        poll(limit, f).unwrap_or_else(|| {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                self.diagnostics()
            )
        })
    }

    /// The service's status and journal, and systemd's console, for failure messages.
    pub fn diagnostics(&self) -> String {
        let status = self.run_for(
            &["systemctl", "status", "--no-pager", "-l", "sockmon"],
            Duration::from_secs(20),
        );
        let journal = self.run_for(
            &["journalctl", "--no-pager", "-b", "-n", "200"],
            Duration::from_secs(20),
        );
        format!(
            "--- systemctl status sockmon\n{}--- journal\n{}--- console\n{}",
            status.all(),
            journal.all(),
            self.console()
        )
    }

    fn console(&self) -> String {
        self.console.lock().unwrap().join("\n")
    }

    /// Panics unless `pid1` is still the sandbox's PID 1 (never act on a
    /// reused PID).
    fn assert_ours(&self) {
        let ns = fs::read_link(format!("/proc/{}/ns/pid", self.pid1))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            !self.done && ns == self.pidns,
            "the sandbox's PID 1 ({}) is gone; console:\n{}",
            self.pid1,
            self.console()
        );
    }

    /// Powers the sandbox off, checking that it goes by itself and leaves no
    /// process behind.
    pub fn power_off(mut self) {
        let forced = self.shut_down();
        assert!(
            !forced,
            "the sandbox did not power off by itself; console:\n{}",
            self.console()
        );
    }

    /// `systemctl poweroff`, then SIGKILL to the namespace's PID 1 if it is
    /// not gone within a minute. Returns whether it had to be killed.
    fn shut_down(&mut self) -> bool {
        if self.done {
            return false;
        }
        let mut forced = false;
        if self.pid1_alive() {
            let _ = self.run_for(
                &["systemctl", "poweroff", "--no-block"],
                Duration::from_secs(30),
            );
        }
        if wait_or_kill_quietly(&mut self.unshare, Duration::from_secs(60)).is_none() {
            forced = true;
            if self.pid1_alive() {
                // SAFETY: signalling the PID we checked is still our sandbox's PID 1.
                unsafe { libc::kill(self.pid1, libc::SIGKILL) };
            }
            if wait_or_kill_quietly(&mut self.unshare, Duration::from_secs(30)).is_none() {
                let _ = self.unshare.kill();
                let _ = self.unshare.wait();
            }
        }
        self.done = true;
        // Killing a PID namespace's init kills everything in it; check.
        let left = poll(Duration::from_secs(30), || {
            let left = self.processes_left();
            left.is_empty().then_some(())
        });
        assert!(
            left.is_some(),
            "processes left in the sandbox's PID namespace: {:?}",
            self.processes_left()
        );
        remove_cgroups(&self.cgroups);
        forced
    }

    fn pid1_alive(&self) -> bool {
        fs::read_link(format!("/proc/{}/ns/pid", self.pid1))
            .is_ok_and(|p| p.to_string_lossy() == self.pidns)
    }

    fn processes_left(&self) -> Vec<u32> {
        fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| {
                        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                        let ns = fs::read_link(e.path().join("ns/pid")).ok()?;
                        (ns.to_string_lossy() == self.pidns).then_some(pid)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.done {
            if self.pid1 == 0 {
                // Never found PID 1: killing unshare kills its child (--kill-child).
                let _ = self.unshare.kill();
                let _ = self.unshare.wait();
                self.done = true;
                remove_cgroups(&self.cgroups);
            } else if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.shut_down()))
                .is_err()
            {
                eprintln!("cleaning up the sandbox failed (see above)");
            }
        }
    }
}

/// One command's result.
pub struct Output {
    pub what: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn all(&self) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "timed out (killed)".into(),
        };
        format!("$ {} ({status})\n{}{}", self.what, self.stdout, self.stderr)
    }
}

/// Makes the cgroup `name` below the root of each cgroup hierarchy systemd
/// uses (v2, and v1's name=systemd on hybrid systems).
fn make_cgroups(name: &str) -> Vec<PathBuf> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    let mut made = Vec::new();
    for base in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup",
    ] {
        let Ok(c) = std::ffi::CString::new(base) else {
            continue;
        };
        // SAFETY: statfs into a zeroed local buffer with a valid path.
        let magic = unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            if libc::statfs(c.as_ptr(), &mut st) != 0 {
                continue;
            }
            st.f_type as i64
        };
        if magic != CGROUP2_SUPER_MAGIC && magic != CGROUP_SUPER_MAGIC {
            continue;
        }
        remove_stale_cgroups(Path::new(base));
        let dir = Path::new(base).join(name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        made.push(dir);
    }
    made
}

/// Removes the (empty) cgroups left by a run of this test that was killed
/// (no drop guard ran): `sockmon-sdtest-PID-*` whose PID is gone.
fn remove_stale_cgroups(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("sockmon-sdtest-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove_cgroups(&[e.path()]);
        }
    }
}

/// Removes the cgroups made for a sandbox, and what systemd left below them.
fn remove_cgroups(dirs: &[PathBuf]) {
    fn remove(dir: &Path) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&e.path());
                }
            }
        }
        if let Err(e) = fs::remove_dir(dir) {
            eprintln!("cannot remove the cgroup {}: {e}", dir.display());
        }
    }
    for d in dirs {
        // A cgroup can be removed only once its last process is gone.
        let _ = poll(Duration::from_secs(10), || {
            let procs = fs::read_to_string(d.join("cgroup.procs")).ok()?;
            procs.trim().is_empty().then_some(())
        });
        remove(d);
    }
}

/// Reads `r` line by line into `into`, on a thread of its own.
fn collect(
    r: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            into.lock().unwrap().push(text);
            line.clear();
        }
    })
}

/// Waits for `child` at most `limit`; kills it (and returns None) after that.
fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let status = wait_or_kill_quietly(child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

fn wait_or_kill_quietly(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
