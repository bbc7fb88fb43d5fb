//! Layer 4, attribution (issue: complete attribution): sockets that existed
//! before sockmon started, shared sockets, namespaces, units, and agreement
//! with `ss -tunap` over a few hundred sockets in a few dozen processes.

mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use support::{
    Daemon, bin, eventually, exclusive,
    holders::{Holder, assert_agree, ls_owners, ss_owners},
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
    let _g = exclusive();
    let h = Holder::start(1, 0, false);
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
    let _g = exclusive();
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
    let _g = exclusive();
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
    let _g = exclusive();
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
    let _g = exclusive();
    // Half the processes exist before the daemon (snapshot), half after (events).
    let mut holders: Vec<Holder> = (0..15).map(|i| Holder::start(3, 2, i % 3 == 0)).collect();
    let d = Daemon::start("agree", &["--no-config"]);
    holders.extend((0..15).map(|i| Holder::start(3, 2, i % 3 == 0)));
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
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };
    let _g = exclusive();
    // Churn of processes holding sockets, before, during and after the
    // daemon's start: each new holder replaces the oldest, so sockets keep
    // appearing and disappearing (their closes come through process exits).
    let holders: Arc<Mutex<Vec<Holder>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (holders, stop) = (holders.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let h = Holder::start(1, 1, false);
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
