//! Layer 4, attribution (issue: complete attribution): sockets that existed
//! before sockmon started, shared sockets, namespaces, units, and agreement
//! with `ss -tunap` over a few hundred sockets in a few dozen processes.
//!
//! Alone (`support::exclusive`): the hundreds of sockets and the churn
//! during the snapshot (load), and the exact counts of drift and of
//! reconciliations (other tests' sockets make both). The others are shared:
//! they look at their own helper processes.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use crate::support::{
    self, Daemon, bin, eventually, exclusive,
    holders::{Holder, assert_agree, hold, ls_owners, ss_owners},
    shared,
};

fn ls_json(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .args(["ls", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn rows_for(json: &str, local: &str) -> Vec<serde_json::Value> {
    json.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| {
            format!("{}:{}", v["src_ip"].as_str().unwrap(), v["src_port"]) == local
                && v["dst_port"] == 0
        })
        .collect()
}

#[test]
fn a_listener_opened_before_start_appears_with_its_pid() {
    let _turn = shared();
    let h = hold(1, 0, false);
    let local = &h.listeners[0];
    // Without a daemon: a snapshot of this moment.
    let rows = rows_for(&ls_json(&["--no-daemon"]), local);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["state"], "listen");
    assert_eq!(rows[0]["owners"][0]["pid"], h.pids[0]);
    assert_eq!(rows[0]["owners"][0]["source"], "snapshot");
    assert_eq!(rows[0]["owners"][0]["exe"], "/usr/bin/python3.11");
    // Through a daemon started after it.
    let d = Daemon::start("before", &["--no-config"]);
    let json = eventually("exe enriched", || {
        let j = ls_json(&["--socket", d.socket.to_str().unwrap()]);
        let r = rows_for(&j, local);
        (r.len() == 1 && r[0]["owners"][0]["exe"].is_string()).then_some(j)
    });
    let rows = rows_for(&json, local);
    assert_eq!(rows[0]["owners"][0]["pid"], h.pids[0]);
    assert_eq!(rows[0]["owners"][0]["source"], "snapshot");
    assert_eq!(rows[0]["owners"][0]["comm"], "python3");
}

#[test]
fn fork_then_parent_exit_keeps_the_child_as_owner() {
    let _turn = shared();
    let d = Daemon::start("fork", &["--no-config"]);
    let sock = d.socket.to_str().unwrap().to_string();
    // A parent binds a listener after the daemon started, forks, and exits;
    // the child keeps the listener.
    let mut p = Command::new("/usr/bin/python3")
        .args(["-c", "import os,socket,sys\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\nc=os.fork()\nif c == 0:\n    sys.stdin.read(); os._exit(0)\nprint('%d %s:%d' % ((c,) + s.getsockname()), flush=True)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(p.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (child, local) = line.trim().split_once(' ').unwrap();
    let child: u32 = child.parse().unwrap();
    let parent = p.id();
    // Child::wait closes stdin, which would end the child too: keep it.
    let stdin = p.stdin.take();
    assert!(p.wait().unwrap().success(), "the parent exits");
    let rows = eventually("the child alone owns the listener", || {
        let r = rows_for(&ls_json(&["--socket", &sock]), local);
        (r.len() == 1 && r[0]["owners"].as_array().unwrap().len() == 1).then_some(r)
    });
    let owner = &rows[0]["owners"][0];
    assert_eq!(owner["pid"], child);
    assert_eq!(owner["source"], "inherited");
    assert_ne!(owner["pid"], parent);
    drop(stdin);
    // SAFETY: the child is ours (through python); make sure it goes.
    unsafe { libc::kill(child as i32, libc::SIGKILL) };
}

#[test]
fn the_same_port_in_two_network_namespaces_is_two_rows() {
    let _turn = shared();
    let d = Daemon::start("netns2", &["--no-config"]);
    let port = 5611;
    let holder = |netns: bool| {
        let mut cmd = if netns {
            let mut c = Command::new("unshare");
            c.args([
                "--net",
                "sh",
                "-c",
                "ip link set lo up && exec /usr/bin/python3 -c \"$1\"",
                "sh",
            ]);
            c
        } else {
            let mut c = Command::new("/usr/bin/python3");
            c.arg("-c");
            c
        };
        let mut child = cmd
            .arg(format!("import socket,sys\ns=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen()\nprint('ok', flush=True); sys.stdin.read()"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ok");
        child
    };
    let mut a = holder(false);
    let mut b = holder(true);
    let local = format!("127.0.0.1:{port}");
    let rows = eventually("two rows", || {
        let r = rows_for(&ls_json(&["--socket", d.socket.to_str().unwrap()]), &local);
        (r.len() == 2).then_some(r)
    });
    let netns = |pid: u32| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .unwrap()
            .ino()
    };
    let mut got: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["netns"].as_u64().unwrap(),
                r["owners"][0]["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (netns(a.id()), a.id() as u64),
        (netns(b.id()), b.id() as u64),
    ];
    want.sort();
    assert_ne!(want[0].0, want[1].0);
    assert_eq!(got, want);
    // Lookup without a namespace finds both; with one, one.
    let v = d.request(&format!(
        r#"{{"op":"lookup","src":"{local}","dst":"0.0.0.0:0"}}"#
    ));
    assert_eq!(v["sockets"].as_array().unwrap().len(), 2);
    let v = d.request(&format!(
        r#"{{"op":"lookup","src":"{local}","dst":"0.0.0.0:0","netns":{}}}"#,
        want[0].0
    ));
    assert_eq!(v["sockets"].as_array().unwrap().len(), 1);
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn a_process_in_a_transient_unit_shows_its_unit() {
    let _turn = shared();
    let root = sockmon::kernel::cgroup::v2_root().unwrap();
    let unit = format!("run-u{}.service", std::process::id());
    let slice = root.join("sockmon-test.slice");
    let dir = slice.join(&unit);
    std::fs::create_dir_all(&dir).unwrap();
    let d = Daemon::start("unit", &["--no-config"]);
    let script = "import socket,sys\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\nprint('%s:%d' % s.getsockname(), flush=True); sys.stdin.read()";
    let mut p = Command::new("sh")
        .args([
            "-c",
            "echo $$ > \"$1/cgroup.procs\" && exec /usr/bin/python3 -c \"$2\"",
            "sh",
        ])
        .arg(&dir)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut local = String::new();
    BufReader::new(p.stdout.take().unwrap())
        .read_line(&mut local)
        .unwrap();
    let rows = eventually("the unit", || {
        let r = rows_for(
            &ls_json(&["--socket", d.socket.to_str().unwrap()]),
            local.trim(),
        );
        (r.len() == 1 && r[0]["owners"][0]["unit"].is_string()).then_some(r)
    });
    assert_eq!(rows[0]["owners"][0]["pid"], p.id());
    assert_eq!(rows[0]["owners"][0]["unit"], unit.as_str());
    let _ = p.kill();
    let _ = p.wait();
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_dir(&slice);
}

#[test]
fn sockmon_and_ss_name_the_same_owners_for_hundreds_of_sockets() {
    let _turn = exclusive();
    // Half the processes exist before the daemon (snapshot), half after (events).
    let mut holders: Vec<Holder> = (0..15).map(|i| hold(3, 2, i % 3 == 0)).collect();
    let d = Daemon::start("agree", &["--no-config"]);
    holders.extend((0..15).map(|i| hold(3, 2, i % 3 == 0)));
    let pids: BTreeSet<u32> = holders
        .iter()
        .flat_map(|h| h.pids.iter().copied())
        .collect();
    assert!(pids.len() >= 40, "{} processes", pids.len());
    let sock = d.socket.to_str().unwrap().to_string();
    // The last holder's sockets are in the table once its events are applied.
    let compared = eventually("agreement", || {
        let ss = ss_owners();
        let ls = ls_owners(&ls_json(&["--socket", &sock]));
        std::panic::catch_unwind(|| assert_agree(&ss, &ls, &pids)).ok()
    });
    assert!(compared >= 30 * 11, "compared only {compared} sockets");
    // And the daemon-less snapshot agrees too.
    let n = assert_agree(&ss_owners(), &ls_owners(&ls_json(&["--no-daemon"])), &pids);
    assert_eq!(n, compared);
}

#[test]
fn sockets_made_and_closed_while_the_snapshot_is_taken_are_neither_lost_nor_doubled() {
    let _turn = exclusive();
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };
    // Churn of processes holding sockets, before, during and after the
    // daemon's start: each new holder replaces the oldest, so sockets keep
    // appearing and disappearing (their closes come through process exits).
    let holders: Arc<Mutex<Vec<Holder>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (holders, stop) = (holders.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let h = hold(1, 1, false);
                let mut hs = holders.lock().unwrap();
                hs.push(h);
                if hs.len() > 8 {
                    hs.remove(0);
                }
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let d = Daemon::start("during", &["--no-config"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    let pids: BTreeSet<u32> = holders
        .lock()
        .unwrap()
        .iter()
        .flat_map(|h| h.pids.clone())
        .collect();
    let sock = d.socket.to_str().unwrap().to_string();
    let json = eventually("agreement after the churn", || {
        let j = ls_json(&["--socket", &sock]);
        let (ss, ls) = (ss_owners(), ls_owners(&j));
        std::panic::catch_unwind(|| assert_agree(&ss, &ls, &pids))
            .ok()
            .map(|_| j)
    });
    // No socket twice: every row's inode is distinct.
    let inodes: Vec<u64> = json
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["inode"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let unique: BTreeSet<u64> = inodes.iter().copied().collect();
    assert_eq!(unique.len(), inodes.len());
    // The holders that were replaced left nothing behind.
    let v = d.request(r#"{"op":"list"}"#);
    let stale = v["sockets"].as_array().unwrap().iter().filter(|s| {
        s["owners"].as_array().unwrap().iter().any(|o| {
            let pid = o["pid"].as_u64().unwrap() as u32;
            o["comm"] == "python3"
                && !pids.contains(&pid)
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
    });
    assert_eq!(stale.count(), 0, "sockets of exited holders remain");
}

/// Runs `script` with python3; returns it, its stdout and its first line.
fn python_line(
    script: &str,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    String,
) {
    let mut p = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(p.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (p, out, line.trim().to_string())
}

/// Processes a test started, killed however it ends (a failed assertion
/// must not leave them holding sockets for the next test).
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            // SAFETY: kill(2) on processes this test started; at worst ESRCH.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
}

fn owner_pids(row: &serde_json::Value) -> Vec<u64> {
    let mut v: Vec<u64> = row["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["pid"].as_u64().unwrap())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn a_process_that_closes_its_copy_of_a_shared_socket_leaves_its_owners() {
    let _turn = shared();
    // No hook sees the close of a descriptor that is not the last: the
    // re-check of shared sockets' owners (table.recheck_interval_ms) does.
    let d = Daemon::start("partial-close", &["--no-config"]);
    let sock = d.socket.to_str().unwrap().to_string();
    let (mut p, mut out, line) = python_line(
        // The child reads stdin too: the parent is told to close by SIGUSR1.
        "import os,signal,socket,sys\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])\n\
         s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\nc=os.fork()\nif c == 0:\n    sys.stdin.read(); os._exit(0)\n\
         print('%d %s:%d' % ((c,) + s.getsockname()), flush=True)\nsignal.sigwait([signal.SIGUSR1])\ns.close()\nprint('closed', flush=True)\n\
         signal.sigwait([signal.SIGUSR1])",
    );
    let (child, local) = line.split_once(' ').unwrap();
    let child: u64 = child.parse().unwrap();
    let parent = u64::from(p.id());
    let _reap = KillOnDrop(vec![child as i32, parent as i32]);
    // First both hold it: the parent by its listen, the child by the fork.
    eventually("both processes own the listener", || {
        let r = rows_for(&ls_json(&["--socket", &sock]), local);
        (r.len() == 1 && owner_pids(&r[0]) == vec![parent.min(child), parent.max(child)])
            .then_some(())
    });
    let stdin = p.stdin.take();
    // SAFETY: kill on our own child.
    unsafe { libc::kill(p.id() as i32, libc::SIGUSR1) };
    let mut closed = String::new();
    out.read_line(&mut closed).unwrap();
    assert_eq!(closed.trim(), "closed");
    // The parent lives on without it: only the child owns it now.
    let rows = eventually("the parent leaves the owner list", || {
        let r = rows_for(&ls_json(&["--socket", &sock]), local);
        (r.len() == 1 && owner_pids(&r[0]) == vec![child]).then_some(r)
    });
    // Still the inherited owner, or confirmed by a snapshot meanwhile (a
    // re-check of some other ownerless socket on the machine).
    let source = rows[0]["owners"][0]["source"].as_str().unwrap();
    assert!(["inherited", "snapshot"].contains(&source), "{source}");
    assert!(p.try_wait().unwrap().is_none(), "the parent is still alive");
    // SAFETY: kill on our own child.
    unsafe { libc::kill(p.id() as i32, libc::SIGUSR1) };
    assert!(p.wait().unwrap().success());
    drop(stdin);
    // SAFETY: the child is ours (through python); make sure it goes.
    unsafe { libc::kill(child as i32, libc::SIGKILL) };
}

#[test]
fn a_silent_scm_rights_receiver_becomes_the_owner_when_the_sender_exits() {
    let _turn = shared();
    // The receiver takes the descriptor with recvmsg and does nothing with
    // it; the sender closes its copy and exits. No event speaks for the
    // receiver: the re-check of ownerless sockets finds it.
    let d = Daemon::start("silent-receiver", &["--no-config"]);
    let sock = d.socket.to_str().unwrap().to_string();
    let (mut p, _out, line) = python_line(
        "import array,os,socket,sys\na,b=socket.socketpair()\nr=os.fork()\nif r == 0:\n    a.close()\n    \
         m,anc,f,x=b.recvmsg(1, socket.CMSG_SPACE(4))\n    held=array.array('i', anc[0][2])[0]\n    b.sendall(b'k')\n    sys.stdin.read(); os._exit(0)\n\
         b.close()\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n\
         a.sendmsg([b'x'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [s.fileno()]))])\na.recv(1)\n\
         print('%d %s:%d' % ((r,) + s.getsockname()), flush=True)\nos._exit(0)",
    );
    let (receiver, local) = line.split_once(' ').unwrap();
    let receiver: u64 = receiver.parse().unwrap();
    let _reap = KillOnDrop(vec![receiver as i32]);
    let sender = u64::from(p.id());
    // The receiver was forked before the socket existed: nothing inherited.
    let stdin = p.stdin.take();
    assert!(p.wait().unwrap().success(), "the sender exits");
    let rows = eventually("the receiver owns the listener", || {
        let r = rows_for(&ls_json(&["--socket", &sock]), local);
        (r.len() == 1 && owner_pids(&r[0]) == vec![receiver]).then_some(r)
    });
    assert_ne!(receiver, sender);
    // Found holding it, not reported by an event.
    assert_eq!(rows[0]["owners"][0]["source"], "snapshot");
    assert_eq!(rows[0]["state"], "listen");
    drop(stdin);
    // SAFETY: the receiver is ours (through python); make sure it goes.
    unsafe { libc::kill(receiver as i32, libc::SIGKILL) };
}

/// `status.drift` of the daemon `d`.
fn drift(d: &Daemon) -> u64 {
    d.request(r#"{"op":"status"}"#)["status"]["drift"]
        .as_u64()
        .unwrap()
}

/// Rows of `ls --json` whose remote end is `peer`.
fn rows_to(d: &Daemon, peer: &str) -> Vec<serde_json::Value> {
    ls_json(&["--socket", d.socket.to_str().unwrap()])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| format!("{}:{}", v["dst_ip"].as_str().unwrap(), v["dst_port"]) == peer)
        .collect()
}

#[test]
fn an_accept_without_an_address_is_drift_in_the_socket_mode_and_an_event_in_syscalls() {
    let _turn = exclusive();
    // accept(fd, NULL, NULL) never reaches getpeername, the socket mode's
    // accept hook: the accepted socket is first seen at its release, and
    // counted as drift. The syscalls mode sees the accept itself.
    let script = "import ctypes,os,socket,sys\nlibc=ctypes.CDLL(None, use_errno=True)\n\
        s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\nc=socket.create_connection(s.getsockname())\n\
        fd=libc.accept(s.fileno(), None, None)\nassert fd >= 0, ctypes.get_errno()\n\
        print('%s:%d' % c.getsockname(), flush=True)\nsys.stdin.readline()\nos.close(fd)\nprint('closed', flush=True)\nsys.stdin.read()";
    for mode in ["socket", "syscalls"] {
        let d = Daemon::start(&format!("drift-{mode}"), &["--no-config", "--attach", mode]);
        let before = drift(&d);
        let (mut p, mut out, peer) = python_line(script);
        let pid = u64::from(p.id());
        let _reap = KillOnDrop(vec![pid as i32]);
        if mode == "syscalls" {
            // The accept is an event: the table has the socket and its owner.
            let rows = eventually("the accepted socket with its owner", || {
                let r = rows_to(&d, &peer);
                (r.len() == 1).then_some(r)
            });
            assert_eq!(owner_pids(&rows[0]), vec![pid]);
            assert_eq!(rows[0]["owners"][0]["source"], "event");
        }
        let mut stdin = p.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, b"\n").unwrap();
        let mut closed = String::new();
        out.read_line(&mut closed).unwrap();
        assert_eq!(closed.trim(), "closed");
        if mode == "socket" {
            // Its release is the table's first sight of it: one drift.
            eventually("the release counted as drift", || {
                (drift(&d) > before).then_some(())
            });
            assert_eq!(
                drift(&d) - before,
                1,
                "socket mode: one socket no event reported"
            );
        } else {
            eventually("the release removes it", || {
                rows_to(&d, &peer).is_empty().then_some(())
            });
            assert_eq!(drift(&d), before, "syscalls mode: the accept was reported");
        }
        drop(stdin);
        assert!(p.wait().unwrap().success());
    }
}

/// `status.reconciliations` of the daemon `d`.
fn reconciliations(d: &Daemon) -> u64 {
    d.request(r#"{"op":"status"}"#)["status"]["reconciliations"]
        .as_u64()
        .expect("status.reconciliations")
}

#[test]
fn a_socket_nobody_holds_is_looked_for_once_not_at_every_recheck() {
    let _turn = exclusive();
    // A listener whose only reference is a descriptor in flight (queued on
    // a Unix socket, never received): no process holds it, so no snapshot
    // can find an owner. Its last owner's exit makes one snapshot look for
    // it; after that the re-checks (every 500 ms here) leave it alone.
    let dir = std::env::temp_dir().join(format!("sockmon-inflight-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, "[table]\nrecheck_interval_ms = 500\n").unwrap();
    let d = Daemon::start("in-flight", &["--config", config.to_str().unwrap()]);
    let sock = d.socket.to_str().unwrap().to_string();
    let (mut p, _out, line) = python_line(
        // The child keeps both ends of the pair (the queue) and nothing else.
        "import array,os,socket,sys\na,b=socket.socketpair()\nk=os.fork()\nif k == 0:\n    sys.stdin.read(); os._exit(0)\n\
         s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n\
         a.sendmsg([b'x'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [s.fileno()]))])\n\
         print('%d %s:%d' % ((k,) + s.getsockname()), flush=True)\nos._exit(0)",
    );
    let (keeper, local) = line.split_once(' ').unwrap();
    let keeper: i32 = keeper.parse().unwrap();
    let _reap = KillOnDrop(vec![keeper]);
    let stdin = p.stdin.take();
    assert!(p.wait().unwrap().success(), "the listener's maker exits");
    // Still a listener in the kernel, listed without an owner.
    let rows = eventually("the listener without an owner", || {
        let r = rows_for(&ls_json(&["--socket", &sock]), local);
        (r.len() == 1 && owner_pids(&r[0]).is_empty()).then_some(r)
    });
    assert_eq!(rows[0]["state"], "listen");
    // Let the snapshot its orphaning asked for finish, then count.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before = reconciliations(&d);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after = reconciliations(&d);
    // Six re-checks passed; each used to re-snapshot for this socket. (One
    // more is allowed for something else on the machine.)
    assert!(
        after - before <= 1,
        "{before} → {after} re-snapshots in 3 s for a socket nobody holds"
    );
    assert_eq!(rows_for(&ls_json(&["--socket", &sock]), local).len(), 1);
    drop(stdin);
    // SAFETY: the keeper is ours (through python).
    unsafe { libc::kill(keeper, libc::SIGKILL) };
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_owner_started_after_the_daemon_is_listed_with_its_argv_parent_and_unit_apart() {
    let _turn = shared();
    // The exec was seen: `list` joins its argv and parent (captured by the
    // kernel at exec) to the owner, and the unit is the unit only.
    let d = Daemon::start("owner-args", &["--no-config"]);
    let sock = d.socket.to_str().unwrap().to_string();
    let script = "import socket,sys\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n\
                  print('%s:%d' % s.getsockname(), flush=True); sys.stdin.read()";
    let (mut p, local) = support::spawn_first_line(Command::new("/usr/bin/python3").args([
        "-c",
        script,
        "marker-7a1f",
    ]));
    let _reap = KillOnDrop(vec![p.id() as i32]);
    // argv comes with the exec record, exe when the /proc worker has read
    // it: wait for both.
    let rows = eventually("the listener with its owner's argv and exe", || {
        let r = rows_for(&ls_json(&["--socket", &sock]), &local);
        (r.len() == 1
            && r[0]["owners"][0]["args"].is_array()
            && r[0]["owners"][0]["exe"].is_string())
        .then_some(r)
    });
    let o = &rows[0]["owners"][0];
    assert_eq!(o["pid"], p.id());
    assert_eq!(
        o["args"],
        serde_json::json!(["/usr/bin/python3", "-c", script, "marker-7a1f"])
    );
    assert_eq!(o["args_truncated"], false);
    assert_eq!(o["ppid"], std::process::id());
    assert!(
        o["exe"].as_str().is_some_and(|e| e.contains("python3")),
        "{o}"
    );
    // The unit field holds a unit or nothing, never a container; no
    // container here.
    assert_eq!(o["container"], serde_json::Value::Null);
    if let Some(u) = o["unit"].as_str() {
        assert!(u.ends_with(".service") || u.ends_with(".scope"), "{u}");
    }
    drop(p.stdin.take());
    assert!(p.wait().unwrap().success());
}
