//! Helpers for the whole-system tests (`tests/system/`), which run the
//! `sockmon` binary as a user would, and the schedule they share.

pub mod holders;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, ChildStderr, Command, Stdio},
    sync::{
        RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

/// `d` times `SOCKMON_TEST_TIME_SCALE` (a whole number, default 1): the
/// guests of `cargo xtask test` run these tests under software emulation,
/// many times slower, and set it there. Only deadlines are scaled.
pub fn scaled(d: Duration) -> Duration {
    let scale = std::env::var("SOCKMON_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    d * scale
}

/// Polls `f` every 25 ms until it returns `Some`, for at most `limit`
/// ([`scaled`]); panics naming `what` when time runs out.
pub fn eventually_within<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let limit = scaled(limit);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// [`eventually_within`] 10 s.
pub fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_within(what, Duration::from_secs(10), f)
}

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockmon")
}

/// The schedule of the whole-system binary. Its tests run in parallel
/// threads of one process (two at a time on a 2-core machine: libtest's
/// default), and the first thing each test does is take its turn here:
///
/// - [`shared`]: beside other shared tests. Such a test looks only at what
///   it made (its own ports, filters, namespaces, helper processes, temp
///   directories, daemons) and tolerates what other tests do meanwhile:
///   their sockets, events and short-lived children.
/// - [`exclusive`]: alone; no other test of the binary runs meanwhile. For a
///   test that forks without exec (its child holds a copy of every
///   descriptor of the process, other tests' sockets and pipes included),
///   that asserts the exact holders or counts of this process's own sockets
///   or events (which other tests' sockets and children change), that
///   measures a daemon's memory, descriptors, losses or reconciliations
///   (which other tests' load changes), or that is load itself (bursts and
///   churn that would starve others' deadlines).
///
/// Writers are preferred (std's `RwLock` on Linux), so an exclusive test
/// waits only for the shared ones already running. A panicking test's
/// poison is ignored: one failure stays one failure.
static SCHEDULE: RwLock<()> = RwLock::new(());

/// This test's turn beside other [`shared`] tests (see [`SCHEDULE`]).
pub fn shared() -> RwLockReadGuard<'static, ()> {
    SCHEDULE.read().unwrap_or_else(|p| p.into_inner())
}

/// This test's turn alone (see [`SCHEDULE`]).
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SCHEDULE.write().unwrap_or_else(|p| p.into_inner())
}

/// Waits until `child` prints the "probes attached" line on stderr, and
/// returns a channel with the rest of its stderr lines.
pub fn wait_attached(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("probes attached") => return rx,
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("sockmon never reported the probes attached; stderr: {seen:?}");
}

/// Starts `sockmon watch ARGS` with piped stdout/stderr and waits for it to attach.
pub fn spawn_watch(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockmon watch");
    let err = wait_attached(child.stderr.take().unwrap());
    (child, err)
}

/// Sends `sig` to `child`.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling a child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits up to `limit` for `child` to exit; kills it and panics if it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// IDs of the BPF programs process `pid` holds (program and link
/// descriptors both show a `prog_id:` line in `/proc/PID/fdinfo`).
pub fn program_ids_of(pid: u32) -> std::collections::HashSet<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Default::default();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Which of `ids` are still loaded in the kernel.
pub fn still_loaded(ids: &std::collections::HashSet<u32>) -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .filter(|id| ids.contains(id))
        .collect()
}

/// Waits (at most 3 s: the kernel frees programs after an RCU grace
/// period) until none of `ids` is loaded; returns those still loaded.
pub fn wait_unloaded(ids: &std::collections::HashSet<u32>) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = still_loaded(ids);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `cmd` with its stdin and stdout piped and reads its first line
/// (trimmed): what a helper process says once it is ready. Its stdin stays
/// open in the returned child; dropping it ends a helper that reads stdin.
pub fn spawn_first_line(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_string())
}

/// `sockmon --socket SOCKET ls --json ARGS…` through a daemon: one value
/// per socket.
pub fn ls_rows(socket: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(bin())
        .args(["--socket", socket, "ls", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A `sockmon daemon` started for a test, with its own directory (socket,
/// notify socket; unique in the process, whatever name two tests give),
/// stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    pub dir: std::path::PathBuf,
    pub socket: std::path::PathBuf,
    pub stderr: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts the daemon with `args` and waits for READY=1 on NOTIFY_SOCKET.
    pub fn start(name: &str, args: &[&str]) -> Daemon {
        Self::start_with_env(name, args, &[])
    }

    /// [`Daemon::start`] with extra environment variables for the daemon.
    pub fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::start_with(name, args, |c| {
            c.envs(env.iter().copied());
        })
    }

    /// [`Daemon::start`], with `prepare` applied to the command first (an
    /// environment, a `pre_exec` hook...).
    pub fn start_with(name: &str, args: &[&str], prepare: impl FnOnce(&mut Command)) -> Daemon {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sockmon-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("api.sock");
        let notify_path = dir.join("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(scaled(Duration::from_secs(30))))
            .unwrap();
        let mut command = Command::new(bin());
        command
            .arg("--socket")
            .arg(&socket)
            .arg("daemon")
            .args(args)
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        prepare(&mut command);
        let mut child = command.spawn().expect("spawn sockmon daemon");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut buf = [0u8; 4096];
        loop {
            match notify.recv(&mut buf) {
                Ok(n)
                    if String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "READY=1") =>
                {
                    break;
                }
                Ok(_) => continue,
                Err(e) => {
                    let _ = child.kill();
                    let lines: Vec<String> = rx.try_iter().collect();
                    panic!("daemon never sent READY=1 ({e}); stderr: {lines:?}");
                }
            }
        }
        Daemon {
            child,
            dir,
            socket,
            stderr: rx,
        }
    }

    /// One request line, one response (parsed).
    pub fn request(&self, line: &str) -> serde_json::Value {
        let mut c = self.connect();
        request_on(&mut c, line)
    }

    pub fn connect(&self) -> std::os::unix::net::UnixStream {
        let s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(scaled(Duration::from_secs(10))))
            .unwrap();
        s
    }

    /// SIGTERM and wait (at most `limit`); returns the exit status.
    pub fn stop(&mut self, limit: Duration) -> std::process::ExitStatus {
        signal(&self.child, libc::SIGTERM);
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(&self.child, libc::SIGTERM);
            if wait_exit_quietly(&mut self.child, Duration::from_secs(3)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_exit_quietly(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Writes `line` + newline on `s` and reads one response line.
pub fn request_on(s: &mut std::os::unix::net::UnixStream, line: &str) -> serde_json::Value {
    use std::io::Write as _;
    s.write_all(line.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    read_json_line(s)
}

/// [`request_on`], or `None` when the daemon does not answer within the
/// stream's read timeout (it may still be loading its probes).
pub fn try_request_on(
    s: &mut std::os::unix::net::UnixStream,
    line: &str,
) -> Option<serde_json::Value> {
    use std::io::{Read as _, Write as _};
    s.write_all(line.as_bytes()).ok()?;
    s.write_all(b"\n").ok()?;
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => out.push(b[0]),
            Err(_) => return None,
        }
    }
    serde_json::from_slice(&out).ok()
}

/// Reads one line from `s` (byte by byte: the stream may carry more after it).
pub fn read_json_line(s: &mut std::os::unix::net::UnixStream) -> serde_json::Value {
    use std::io::Read as _;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = s.read(&mut b).unwrap();
        if n == 0 || b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    serde_json::from_slice(&line)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&line)))
}

/// A TCP listener on 127.0.0.1 whose queue holds one connection (backlog
/// 0): once one client is queued, the SYNs of the next are dropped and
/// their `connect()` blocks through its retries (std's listeners take 128).
pub fn listen_backlog_0() -> std::net::TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(0).unwrap();
    s.into()
}

/// How many connects to `addr` wait in SYN_SENT (`ss`, through the one parser).
pub fn syn_sent_to(addr: std::net::SocketAddr) -> usize {
    sockmon_testkit::ss::lines(&["-Htn", "state", "syn-sent", "dst", &addr.to_string()])
        .expect("ss")
        .len()
}
