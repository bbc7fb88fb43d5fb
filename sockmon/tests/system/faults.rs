//! Layer 4, overload and faults (issue: nothing lost, nothing leaked):
//! the table at its cap, network namespaces and processes that vanish,
//! `kill -9` then restart, and a short soak of churn from many short-lived
//! processes. The long soak is part of `cargo xtask bench`.
//!
//! Alone (`support::exclusive`): the cap, the soak, the burst and the
//! connect in flight: they measure the daemon's table, memory and losses
//! (which other tests' sockets change), or are load themselves. The others
//! are shared.

use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader},
    net::{TcpListener, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{
    self, Daemon, eventually_within, exclusive, listen_backlog_0, program_ids_of, read_json_line,
    request_on, shared, syn_sent_to, wait_unloaded,
};

fn status(d: &Daemon) -> serde_json::Value {
    d.request(r#"{"op":"status"}"#)["status"].clone()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn lookup(d: &Daemon, src: &str, dst: &str) -> Vec<serde_json::Value> {
    let v = d.request(&format!(r#"{{"op":"lookup","src":"{src}","dst":"{dst}"}}"#));
    v["sockets"].as_array().cloned().unwrap_or_default()
}

#[test]
fn at_the_cap_new_sockets_still_get_in_evictions_are_counted_and_memory_is_flat() {
    let _turn = exclusive();
    let d = Daemon::start("cap", &["--no-config", "--table-cap", "64"]);
    let listeners: Vec<TcpListener> = (0..256)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let st = eventually_within("256 listens", Duration::from_secs(10), || {
        let s = status(&d);
        (s["events_total"]["listen"].as_u64() >= Some(256)).then_some(s)
    });
    // Full (other processes' sockets may close meanwhile: at most the cap).
    assert!(st["table"]["sockets"].as_u64().unwrap() <= 64, "{st}");
    assert!(st["table"]["sockets"].as_u64().unwrap() >= 48, "{st}");
    assert_eq!(st["table"]["cap"], 64);
    assert!(
        st["table"]["evictions"].as_u64().unwrap() >= 256 - 64,
        "{st}"
    );
    let addr = |l: &TcpListener| l.local_addr().unwrap().to_string();
    assert_eq!(
        lookup(&d, &addr(&listeners[255]), "0.0.0.0:0").len(),
        1,
        "the newest got in"
    );
    assert!(
        lookup(&d, &addr(&listeners[0]), "0.0.0.0:0").is_empty(),
        "the oldest was evicted"
    );
    // Churn at the cap: memory stays flat.
    let churn = |n: usize| {
        for _ in 0..n {
            drop(UdpSocket::bind("127.0.0.1:0").unwrap());
        }
    };
    churn(3000);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(d.child.id());
    churn(10_000);
    eventually_within("churn applied", Duration::from_secs(10), || {
        (status(&d)["events_total"]["bind"].as_u64() >= Some(13_256)).then_some(())
    });
    let after = rss_kib(d.child.id());
    assert!(
        after <= before + 2048,
        "RSS grew from {before} to {after} KiB at the cap"
    );
    // Each churned socket evicted one and then left: never above the cap.
    assert!(status(&d)["table"]["sockets"].as_u64().unwrap() <= 64);
}

#[test]
fn vanishing_namespaces_and_processes_do_no_harm() {
    let _turn = shared();
    let d = Daemon::start("netns", &["--no-config"]);
    let ns = format!("sockmon-t{}", std::process::id());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success()
    );
    let _cleanup = NetnsGuard(ns.clone());
    assert!(
        Command::new("ip")
            .args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success()
    );
    // A process in the namespace holds a listener.
    let mut holder = Command::new("ip")
        .args(["netns", "exec", &ns, "/usr/bin/python3", "-c"])
        .arg("import socket,sys,time\ns=socket.socket(); s.bind(('127.0.0.1',5599)); s.listen()\nprint('ready', flush=True); time.sleep(60)")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let ns_inode = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino()
    };
    let rows = eventually_within(
        "the listener in the namespace",
        Duration::from_secs(5),
        || {
            let r = lookup(&d, "127.0.0.1:5599", "0.0.0.0:0");
            (!r.is_empty()).then_some(r)
        },
    );
    assert_eq!(rows[0]["netns"], ns_inode);
    assert_eq!(rows[0]["owners"][0]["pid"], holder.id());
    // The namespace loses its name while its socket lives, then its last process dies.
    assert!(
        Command::new("ip")
            .args(["netns", "delete", &ns])
            .status()
            .unwrap()
            .success()
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    eventually_within("the listener's close", Duration::from_secs(5), || {
        lookup(&d, "127.0.0.1:5599", "0.0.0.0:0")
            .is_empty()
            .then_some(())
    });
    // Processes that exit right after their event (before enrichment reads /proc).
    let port = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = port.local_addr().unwrap().port();
    for _ in 0..50 {
        let s = Command::new("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{p}")])
            .status()
            .unwrap();
        assert!(s.success());
    }
    let st = status(&d);
    assert_eq!(st["probes_attached"], true);
    assert_eq!(st["dropped"]["ring_full"], 0);
}

struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn after_kill_9_nothing_stays_loaded_and_a_new_daemon_starts() {
    let _turn = shared();
    use crate::support::holders::{Holder, assert_daemon_agrees, hold};
    let holders: Vec<Holder> = (0..5).map(|i| hold(2, 1, i % 2 == 0)).collect();
    let mut first = Daemon::start("kill9", &["--no-config"]);
    let ids = program_ids_of(first.child.id());
    assert!(ids.len() >= 14);
    first.child.kill().unwrap(); // SIGKILL: no clean-up code runs
    first.child.wait().unwrap();
    assert_eq!(
        wait_unloaded(&ids),
        Vec::<u32>::new(),
        "programs outlived the process"
    );
    assert!(
        first.socket.exists(),
        "a stale socket file is left, as expected after SIGKILL"
    );
    // A new daemon on the same path replaces the stale socket and serves.
    let out = Command::new(support::bin())
        .arg("--socket")
        .arg(&first.socket)
        .args(["daemon", "--no-config"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut second = Daemon {
        child: out,
        dir: first.dir.join("second"),
        socket: first.socket.clone(),
        stderr: std::sync::mpsc::channel().1,
    };
    let v = eventually_within("the new daemon", Duration::from_secs(20), || {
        let s = std::os::unix::net::UnixStream::connect(&second.socket).ok()?;
        let mut s = s;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        support::try_request_on(&mut s, r#"{"op":"status"}"#)
    });
    assert_eq!(v["ok"], true);
    // Its table (from its own snapshot) equals what ss says.
    assert_eq!(
        assert_daemon_agrees(&second.socket, &holders),
        5 * (2 + 1 + 4)
    );
    assert_eq!(second.stop(Duration::from_secs(3)).code(), Some(0));
}

#[test]
fn short_soak_of_short_lived_processes_misses_nothing_and_returns_memory() {
    let _turn = exclusive();
    let d = Daemon::start("soak", &["--no-config"]);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tp, up) = (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    let mut sub = d.connect();
    let r = request_on(
        &mut sub,
        &format!(r#"{{"op":"subscribe","filter":{{"event":["connect"],"port":[{tp},{up}]}}}}"#),
    );
    assert_eq!(r["subscribed"], true);
    let baseline = rss_kib(d.child.id());
    // Accept in the background so the backlog never fills.
    let acceptor = std::thread::spawn(move || {
        tcp.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0;
        while n < 300 && Instant::now() < deadline {
            match tcp.accept() {
                Ok(_) => n += 1,
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        n
    });
    let mut pids = HashSet::new();
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{tp}; echo x > /dev/udp/127.0.0.1/{up}");
    let mut children = Vec::new();
    for i in 0..300 {
        let c = Command::new("bash").args(["-c", &script]).spawn().unwrap();
        pids.insert(c.id());
        children.push(c);
        if i % 20 == 19 {
            for mut c in children.drain(..) {
                assert!(c.wait().unwrap().success());
            }
        }
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(acceptor.join().unwrap(), 300);
    // Every process's TCP and UDP connect arrived, from the right pid.
    let (mut tcp_seen, mut udp_seen) = (HashSet::new(), HashSet::new());
    while tcp_seen.len() < 300 || udp_seen.len() < 300 {
        let ev = read_json_line(&mut sub);
        assert_ne!(ev["event"], "lost", "{ev}");
        let pid = ev["pid"].as_u64().unwrap() as u32;
        assert!(pids.contains(&pid), "{ev}");
        if ev["proto"] == "tcp" {
            tcp_seen.insert(pid)
        } else {
            udp_seen.insert(pid)
        };
    }
    let st = status(&d);
    for cause in [
        "ring_full",
        "pending_full",
        "pending_missing",
        "subscriber_lagged",
    ] {
        assert_eq!(st["dropped"][cause], 0, "{cause}: {st}");
    }
    // Their sockets are gone from the table, and so are they.
    let v = d.request(&format!(r#"{{"op":"list","filter":{{"port":[{tp}]}}}}"#));
    let left: Vec<_> = v["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] != "listen")
        .collect();
    assert!(
        left.is_empty()
            || left.iter().all(|s| s["owners"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| !pids.contains(&(o["pid"].as_u64().unwrap() as u32)))),
        "{left:?}"
    );
    let after = rss_kib(d.child.id());
    assert!(
        after <= baseline + 4096,
        "RSS grew from {baseline} to {after} KiB"
    );
}

#[test]
fn a_burst_larger_than_the_ring_is_counted_reported_and_healed() {
    let _turn = exclusive();
    use crate::support::holders::{Holder, assert_daemon_agrees, hold};
    // A 4 KiB ring holds about thirty events.
    let d = Daemon::start("overflow", &["--no-config", "--ring-kib", "4"]);
    let mut sub = d.connect();
    assert_eq!(
        request_on(&mut sub, r#"{"op":"subscribe","filter":{"port":[1]}}"#)["subscribed"],
        true
    );
    // The burst: connections as fast as four threads go, while holders start.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acceptor = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = listener.accept();
            }
        })
    };
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    drop(std::net::TcpStream::connect(addr));
                }
            })
        })
        .collect();
    let holders: Vec<Holder> = (0..6).map(|_| hold(4, 2, false)).collect();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in burst {
        t.join().unwrap();
    }
    acceptor.join().unwrap();
    // Counted, and told to the subscriber.
    let lost = read_json_line(&mut sub);
    assert_eq!(lost["event"], "lost", "{lost}");
    assert_eq!(lost["cause"], "ring_full");
    assert!(lost["count"].as_u64().unwrap() > 0);
    let st = status(&d);
    assert!(st["dropped"]["ring_full"].as_u64().unwrap() > 0, "{st}");
    // Healed: after a re-snapshot the holders' sockets (whose events may
    // have been lost) agree with ss.
    eventually_within("a reconciliation", Duration::from_secs(15), || {
        (status(&d)["reconciliations"].as_u64() >= Some(1)).then_some(())
    });
    assert_eq!(assert_daemon_agrees(&d.socket, &holders), 6 * (4 + 2 + 8));
}

/// A syscall in flight when the probes attach reaches its exit with no
/// entry saved: that is `pending_missing`, counted once, and a loss (the
/// daemon writes its `lost` record). The connect is held in flight by a
/// listener whose accept queue is full (the kernel drops its SYNs), and
/// let through by accepting the connection that fills the queue.
#[test]
fn a_connect_in_flight_at_start_is_counted_as_pending_missing() {
    let _turn = exclusive();
    // Backlog 0 queues one connection; the next one's SYNs are dropped.
    let listener = listen_backlog_0();
    let addr = listener.local_addr().unwrap();
    let queued = std::net::TcpStream::connect(addr).unwrap();
    let in_flight = std::thread::spawn(move || std::net::TcpStream::connect(addr));
    // The second connect is in SYN_SENT, blocked in connect(2).
    eventually_within(
        "the connect to wait in SYN_SENT",
        Duration::from_secs(20),
        || (syn_sent_to(addr) > 0).then_some(()),
    );
    let d = Daemon::start("pending-missing", &["--no-config", "--attach", "syscalls"]);
    let before = status(&d)["dropped"]["pending_missing"].as_u64().unwrap();
    // Free the queue: the next SYN retransmission gets through.
    let (first, _) = listener.accept().unwrap();
    let stream = in_flight
        .join()
        .unwrap()
        .expect("the held connect completes");
    let missing = eventually_within(
        "pending_missing to count the exit",
        Duration::from_secs(60),
        || {
            let n = status(&d)["dropped"]["pending_missing"].as_u64().unwrap();
            (n > before).then_some(n)
        },
    );
    assert_eq!(missing, before + 1, "exactly the one connect in flight");
    drop((first, stream, queued));
}
