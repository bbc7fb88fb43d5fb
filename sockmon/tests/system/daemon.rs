//! Layer 4: the daemon as a service uses it. A real `sockmon daemon` with
//! its own socket; real sockets; requests over the real API: lookup,
//! filtered subscriptions, malformed requests, refused peers, status,
//! metrics, sinks, SIGHUP, SIGTERM.
//!
//! Alone (`support::exclusive`): the lookup (exactly one owner of this
//! process's connection: another test's child is one for a moment), SIGTERM
//! (stopped within 2 s), a thousand clients (the daemon's RSS), the
//! subscriber cut off (40,000 binds: load for everyone), and both
//! agreements with `ss` (a forked child holds every descriptor of the
//! process). The others run beside other shared tests.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    process::Command,
    time::{Duration, Instant},
};

use crate::support::{
    self, Daemon, bin, eventually, exclusive, program_ids_of, read_json_line, request_on, shared,
    wait_unloaded,
};

fn inode_of(fd: &impl std::os::fd::AsRawFd) -> u64 {
    // SAFETY: fstat of a live descriptor into a local buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::fstat(fd.as_raw_fd(), &mut st), 0);
        st.st_ino
    }
}

/// Polls `f` until it returns Some, for at most 5 s.
#[test]
fn lookup_of_a_live_connection_returns_its_owner() {
    let _turn = exclusive();
    let d = Daemon::start("lookup", &["--no-config"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect(server).unwrap();
    let local = client.local_addr().unwrap();
    let req = format!(r#"{{"op":"lookup","src":"{local}","dst":"{server}","proto":"tcp"}}"#);
    let v = eventually("the connection in the table", || {
        let v = d.request(&req);
        (v["sockets"].as_array().is_some_and(|s| !s.is_empty())).then_some(v)
    });
    assert_eq!(v["ok"], true);
    let sockets = v["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 1, "{v}");
    let s = &sockets[0];
    assert_eq!(s["inode"], inode_of(&client));
    assert_eq!(
        (s["src_port"].as_u64(), s["dst_port"].as_u64()),
        (Some(local.port() as u64), Some(server.port() as u64))
    );
    assert_eq!(s["state"], "connected");
    let owners = s["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0]["pid"], std::process::id());
    assert_eq!(owners[0]["source"], "event");
    // The CLI's lookup answers the same through the daemon, and exits 1 for nothing.
    let out = Command::new(bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["lookup", &local.to_string(), &server.to_string(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["owners"][0]["pid"], std::process::id());
    let none = Command::new(bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["lookup", "127.0.0.1:1", "127.0.0.1:2"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    drop(listener);
}

#[test]
fn a_filtered_subscriber_gets_exactly_the_matching_events() {
    let _turn = shared();
    let d = Daemon::start("subscribe", &["--no-config"]);
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let (pa, pb) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let mut sub = d.connect();
    let ok = request_on(
        &mut sub,
        &format!(r#"{{"op":"subscribe","filter":{{"event":["connect"],"port":[{pa}]}}}}"#),
    );
    assert_eq!(ok, serde_json::json!({"ok": true, "subscribed": true}));
    // Noise on the other port and other kinds, then the one event that matches.
    let nb = TcpStream::connect(("127.0.0.1", pb)).unwrap();
    let na = TcpStream::connect(("127.0.0.1", pa)).unwrap();
    let (acc, _) = a.accept().unwrap();
    drop((nb, acc));
    let expected_src = na.local_addr().unwrap().port();
    drop(na);
    let ev = read_json_line(&mut sub);
    assert_eq!(ev["event"], "connect");
    assert_eq!(ev["dst_port"], pa);
    assert_eq!(ev["src_port"], expected_src);
    assert_eq!(ev["pid"], std::process::id());
    // Nothing else arrives: make a marker event that does not match either,
    // then check the stream stays silent.
    sub.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut byte = [0u8; 1];
    let r = sub.read(&mut byte);
    assert!(r.is_err(), "an unexpected event arrived: {r:?} {byte:?}");
}

#[test]
fn a_counters_subscriber_gets_exact_per_process_sums_once_per_interval() {
    let _turn = shared();
    let d = Daemon::start("counters", &["--no-config"]);
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let po = open.local_addr().unwrap().port();
    // A port with nothing listening: connects to it are refused.
    let pc = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sub = d.connect();
    let ok = request_on(
        &mut sub,
        &format!(r#"{{"op":"counters","every_ms":200,"filter":{{"port":[{po},{pc}]}}}}"#),
    );
    assert_eq!(ok, serde_json::json!({"ok": true, "subscribed": true}));
    let mut kept = Vec::new();
    for _ in 0..3 {
        let c = TcpStream::connect(("127.0.0.1", po)).unwrap();
        let (a, _) = open.accept().unwrap();
        kept.push((c, a));
    }
    for _ in 0..2 {
        let e = TcpStream::connect(("127.0.0.1", pc)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    let me = u64::from(std::process::id());
    let (mut lines, mut sums) = (0, [0u64; 4]);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Sum the intervals until our five connects, two failures and three
    // accepts are in, then one more second: nothing else may arrive.
    let mut settled: Option<Instant> = None;
    while settled.is_none_or(|t| t.elapsed() < Duration::from_secs(1)) {
        assert!(Instant::now() < deadline, "sums so far: {sums:?}");
        let line = read_json_line(&mut sub);
        lines += 1;
        assert_eq!(line["interval_ms"], 200, "{line}");
        assert_eq!(line["lost"], 0, "{line}");
        let procs = line["processes"].as_array().expect("processes");
        for p in procs {
            assert_eq!(p["pid"], me, "only this process uses these ports: {line}");
            assert!(p["comm"].as_str().is_some_and(|c| !c.is_empty()), "{line}");
            for (i, k) in ["connects", "failed", "accepts", "events"]
                .iter()
                .enumerate()
            {
                sums[i] += p[*k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
            }
        }
        if settled.is_none() && sums[..3] == [5, 2, 3] {
            settled = Some(Instant::now());
        }
    }
    assert_eq!(sums[..3], [5, 2, 3], "connects, failed, accepts");
    // At least a connect and an accept per connection, a connect per refusal.
    assert!(sums[3] >= 3 * 2 + 2, "events: {sums:?}");
    // One line per interval, including the empty ones.
    assert!(lines >= 5, "{lines} lines in more than a second at 200 ms");
    drop(kept);
}

#[test]
fn malformed_requests_get_errors_and_the_daemon_keeps_serving() {
    let _turn = shared();
    let d = Daemon::start("malformed", &["--no-config"]);
    let mut c = d.connect();
    for bad in [
        "not json",
        r#"{"op":"lookup","src":"1.2.3.4"}"#,
        r#"{"op":"list","filter":{"colour":1}}"#,
        "{}",
    ] {
        let v = request_on(&mut c, bad);
        assert_eq!(v["ok"], false, "{bad}");
        assert_eq!(v["code"], "bad_request", "{bad}");
    }
    // Same connection still works.
    assert_eq!(request_on(&mut c, r#"{"op":"status"}"#)["ok"], true);
    // Oversized: error, then the connection is closed.
    let mut big = d.connect();
    let huge = vec![b'x'; 70 * 1024];
    let _ = big.write_all(&huge);
    let _ = big.write_all(b"\n");
    let v = read_json_line(&mut big);
    assert_eq!(v["code"], "too_large");
    // A truncated request and a client that vanishes mid-line.
    let mut t = d.connect();
    t.write_all(br#"{"op":"sta"#).unwrap();
    drop(t);
    // Others are still served.
    assert_eq!(d.request(r#"{"op":"status"}"#)["ok"], true);
}

/// `sockmon status` run as uid/gid 65534 against `d`.
fn status_as_nobody(d: &Daemon) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .arg("--socket")
        .arg(&d.socket)
        .arg("status")
        .output()
        .expect("setpriv (util-linux)")
}

#[test]
fn a_peer_that_is_not_allowed_is_refused() {
    let _turn = shared();
    let d = Daemon::start("refused", &["--no-config"]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // Through the file mode: nobody cannot even connect.
    let out = status_as_nobody(&d);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sockmon` group"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Through the daemon's own check: open the file mode, the daemon still refuses.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = status_as_nobody(&d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("forbidden") && err.contains("uid 65534"),
        "{err}"
    );
    assert_eq!(d.request(r#"{"op":"status"}"#)["ok"], true);
}

#[test]
fn status_and_metrics_report_events_and_the_table() {
    let _turn = shared();
    let metrics = TcpListener::bind("127.0.0.1:0").unwrap();
    let maddr = metrics.local_addr().unwrap();
    drop(metrics);
    let d = Daemon::start(
        "status",
        &["--no-config", "--metrics-listen", &maddr.to_string()],
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _a = l.accept().unwrap();
    let st = eventually("connect counted", || {
        let v = d.request(r#"{"op":"status"}"#);
        (v["status"]["events_total"]["connect"].as_u64() >= Some(1)).then_some(v)
    });
    let s = &st["status"];
    assert_eq!(s["probes_attached"], true);
    assert!(s["table"]["sockets"].as_u64().unwrap() >= 3);
    assert!(s["snapshot"]["duration_ms"].as_f64().is_some());
    // Counters are machine-wide (other load may fill the ring): present, not zero.
    assert!(s["dropped"]["ring_full"].is_u64());
    let mut http = TcpStream::connect(maddr).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    let connects: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("sockmon_events_total{kind=\"connect\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(connects >= 1, "{body}");
    assert!(body.contains("sockmon_table_sockets "));
    drop(c);
}

#[test]
fn file_sink_rotates_and_sighup_reloads_the_configuration() {
    let _turn = shared();
    let dir = std::env::temp_dir().join(format!("sockmon-sink-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    let events = dir.join("events.ndjson");
    std::fs::write(&config, "[api]\nmax_clients = 8\n").unwrap();
    let mut d = Daemon::start("sink", &["--config", config.to_str().unwrap()]);
    assert!(!events.exists());
    // Reload with a file sink.
    std::fs::write(
        &config,
        format!(
            "[sinks.file]\npath = \"{}\"\nmax_bytes = 32768\nkeep = 5\n",
            events.display()
        ),
    )
    .unwrap();
    support::signal(&d.child, libc::SIGHUP);
    eventually("reload logged", || {
        d.stderr
            .try_iter()
            .find(|l| l.contains("configuration reloaded"))
    });
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    for _ in 0..40 {
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = l.accept().unwrap();
        drop(c);
    }
    eventually("rotation", || {
        dir.join("events.ndjson.1").exists().then_some(())
    });
    // A bad reload keeps the old configuration and says why.
    std::fs::write(&config, "[sinks.file]\nkeep = \"many\"\n").unwrap();
    support::signal(&d.child, libc::SIGHUP);
    let err = eventually("reload refused", || {
        d.stderr.try_iter().find(|l| l.contains("not reloaded"))
    });
    assert!(err.contains("config.toml:2:"), "{err}");
    assert_eq!(d.stop(Duration::from_secs(3)).code(), Some(0));
    // Every line of every file is a whole JSON object, no file is over the
    // limit, and the 40 connections (~130 KB of events with v2's process
    // context and close counters) are all kept.
    let mut connects = 0;
    let files = [events.clone()]
        .into_iter()
        .chain((1..=5).map(|n| dir.join(format!("events.ndjson.{n}"))));
    for f in files.filter(|f| f.exists()) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.len() <= 32768,
            "{} is {} bytes",
            f.display(),
            text.len()
        );
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["event"] == "connect" && v["dst_port"] == port {
                connects += 1;
            }
        }
    }
    assert_eq!(connects, 40);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_exits_0_removes_the_socket_and_detaches_everything() {
    let _turn = exclusive();
    let mut d = Daemon::start("sigterm", &["--no-config"]);
    let ids = program_ids_of(d.child.id());
    assert!(ids.len() >= 14, "the daemon holds its programs: {ids:?}");
    // A watcher goes through the daemon: no second copy of the probes.
    let mut watch = Command::new(bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["watch", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(watch.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.contains("through the daemon"), "{first}");
    assert!(
        program_ids_of(watch.id()).is_empty(),
        "the watcher loaded programs of its own"
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut out = BufReader::new(watch.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["pid"], std::process::id());
    drop(l);
    let started = Instant::now();
    assert_eq!(d.stop(Duration::from_secs(3)).code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(!d.socket.exists(), "socket left behind");
    let _ = support::wait_exit(&mut watch, Duration::from_secs(3));
    assert_eq!(
        wait_unloaded(&ids),
        Vec::<u32>::new(),
        "programs left loaded"
    );
}

#[test]
fn bad_configuration_exits_2_naming_file_and_line() {
    let _turn = shared();
    let dir = std::env::temp_dir().join(format!("sockmon-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, "[api]\nmax_clients = 4\nsocket_path = \"/x\"\n").unwrap();
    let out = Command::new(bin())
        .args(["daemon", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:3:1:", config.display())) && err.contains("socket_path"),
        "{err}"
    );
    let out = Command::new(bin())
        .args(["daemon", "--no-config", "--ring-kib", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel.ring_kib: 5"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn after_loading_the_daemon_keeps_only_the_capabilities_it_needs() {
    let _turn = shared();
    let d = Daemon::start("caps", &["--no-config"]);
    // CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21).
    let kept: u64 = (1 << 2) | (1 << 19) | (1 << 21);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.child.id())).unwrap();
    let mut threads = 0;
    for t in tasks {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let cap = |name: &str| {
            let v = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim();
            u64::from_str_radix(v, 16).unwrap()
        };
        assert_eq!(cap("CapEff:"), kept, "{status}");
        assert_eq!(cap("CapPrm:"), kept);
        assert_eq!(cap("CapBnd:"), kept);
        assert_eq!(cap("CapAmb:"), 0);
        assert!(status.contains("NoNewPrivs:\t1"));
        threads += 1;
    }
    assert!(
        threads >= 2,
        "the runtime's and the /proc worker's threads too: {threads}"
    );
    // It still works: kernel counters are read through the map it holds.
    let v = d.request(r#"{"op":"status"}"#);
    assert_eq!(v["status"]["dropped"]["ring_full"], 0);
}

/// Raises this process's descriptor limit to its hard limit.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        r.rlim_cur
    }
}

#[test]
fn a_thousand_clients_at_once_are_answered_and_the_rest_still_served() {
    let _turn = exclusive();
    assert!(raise_nofile() >= 2100, "need descriptors for 1000 clients");
    let d = Daemon::start("thousand", &["--no-config", "--max-clients", "256"]);
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    };
    let before = rss(d.child.id());
    let mut clients: Vec<_> = (0..1000).map(|_| d.connect()).collect();
    for c in &mut clients {
        c.write_all(b"{\"op\":\"status\"}\n").unwrap();
    }
    let (mut ok, mut busy) = (0, 0);
    for c in &mut clients {
        let v = read_json_line(c);
        match (v["ok"].as_bool(), v["code"].as_str()) {
            (Some(true), _) => ok += 1,
            (Some(false), Some("busy")) => busy += 1,
            other => panic!("unexpected answer {other:?}: {v}"),
        }
    }
    assert_eq!((ok, busy), (256, 744));
    let during = rss(d.child.id());
    drop(clients);
    let v = eventually("clients gone", || {
        let v = d.request(r#"{"op":"status"}"#);
        (v["status"]["clients"] == 1).then_some(v)
    });
    assert_eq!(v["ok"], true);
    assert!(
        during < before + 16 * 1024,
        "RSS {before} → {during} KiB with 1000 clients"
    );
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_off_with_a_lost_notice() {
    let _turn = exclusive();
    // The write deadline is not what this test is about: long enough for
    // the burst below on a loaded machine.
    let d = Daemon::start("slowsub", &["--no-config", "--write-timeout-ms", "30000"]);
    let mut slow = d.connect();
    assert_eq!(
        request_on(&mut slow, r#"{"op":"subscribe"}"#)["subscribed"],
        true
    );
    // Far more events than its queue (32768) and socket buffers hold, while
    // it reads nothing; made no faster than the daemon takes them (a debug
    // build drains the kernel ring slowly, and what the ring drops never
    // reaches any queue).
    let bound = || {
        d.request(r#"{"op":"status"}"#)["status"]["events_total"]["bind"]
            .as_u64()
            .unwrap_or(0)
    };
    let base = bound();
    for done in (2000..=40_000u64).step_by(2000) {
        for _ in 0..2000 {
            drop(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        }
        eventually("the daemon took the binds", || {
            (bound() >= base + done).then_some(())
        });
    }
    let st = eventually("the subscriber counted as lagging", || {
        let v = d.request(r#"{"op":"status"}"#);
        (v["status"]["dropped"]["subscriber_lagged"].as_u64() > Some(0)).then_some(v)
    });
    assert_eq!(st["ok"], true, "the daemon serves others meanwhile");
    // Reading now: what was queued, then a lost notice, then the end.
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut last = String::new();
    let mut lines = 0usize;
    for line in BufReader::new(slow).lines() {
        last = line.unwrap();
        lines += 1;
    }
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["event"], "lost", "last line: {last}");
    assert_eq!(v["cause"], "subscriber_lagged");
    assert!(v["count"].as_u64().unwrap() >= 1);
    assert!(lines > 1000, "it got what was queued first ({lines} lines)");
    assert_eq!(d.request(r#"{"op":"status"}"#)["status"]["subscribers"], 0);
}

#[test]
fn a_request_that_never_finishes_is_dropped() {
    let _turn = shared();
    let d = Daemon::start("unfinished", &["--no-config"]);
    let mut c = d.connect();
    c.write_all(br#"{"op":"sta"#).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap();
    assert_eq!(n, 0, "the daemon closes the connection without an answer");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(14),
        "{waited:?}"
    );
    assert_eq!(d.request(r#"{"op":"status"}"#)["ok"], true);
}

/// Set to `1` by the guest runner of `cargo xtask test` where the guest's
/// kernel refuses sock_diag's modules (xtask/src/guest/run.sh).
fn diag_blocked() -> bool {
    std::env::var_os("SOCKMON_TEST_DIAG_BLOCKED").is_some_and(|v| v == "1")
}

/// `sockmon ls --json` with `args`, and `env` for it.
fn ls_json(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(bin())
        .args(args)
        .args(["ls", "--json"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A forked child that only pauses (holding copies of every descriptor of
/// this process); killed and reaped on drop.
struct Forked(libc::pid_t);

impl Forked {
    fn new() -> Self {
        // SAFETY: the child only calls pause, which is async-signal-safe,
        // until it is killed; it never returns into the test harness.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            },
            pid if pid > 0 => Self(pid),
            _ => panic!("fork: {}", std::io::Error::last_os_error()),
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child by its pid.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// Sockets from before the daemon's start (also held by a forked child) and
/// after it; the daemon started with `env`; asserts that its table, and a
/// daemon-less `ls`, name the same owners as `ss -tunap` for every socket of
/// ours, and that the listener from before the start is known with its
/// exact inode and both holders from the snapshot. Returns the daemon's
/// `status` answer.
fn daemon_agrees_with_ss(name: &str, env: &[(&str, &str)]) -> serde_json::Value {
    use crate::support::holders::{assert_agree, ls_owners, ss_owners};
    use std::{collections::BTreeSet, net::UdpSocket};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let udp = UdpSocket::bind("[::1]:0").unwrap();
    // Connected: `ss` names an unconnected one's peer differently when it
    // reads /proc/net (`*:*`) than over sock_diag (`[::]:*`).
    udp.connect(("::1", 53)).unwrap();
    let child = Forked::new();
    let d = Daemon::start_with_env(name, &["--no-config"], env);
    // (`ss` names IPv4-mapped sockets differently: kept out of the comparison.)
    let later = TcpListener::bind("127.0.0.1:0").unwrap();
    let later_client = TcpStream::connect(later.local_addr().unwrap()).unwrap();
    let (later_server, _) = later.accept().unwrap();
    let pids = BTreeSet::from([std::process::id(), child.0 as u32]);
    let sock = d.socket.to_str().unwrap().to_string();
    let compared = eventually("agreement with ss", || {
        let ss = ss_owners();
        let ls = ls_owners(&ls_json(&["--socket", &sock], &[]));
        std::panic::catch_unwind(|| assert_agree(&ss, &ls, &pids)).ok()
    });
    // Four from before (each held by us and the child), three after.
    assert!(compared >= 7, "compared only {compared} sockets");
    let n = assert_agree(
        &ss_owners(),
        &ls_owners(&ls_json(&["--no-daemon"], env)),
        &pids,
    );
    assert_eq!(n, compared);
    let status = d.request(r#"{"op":"status"}"#);
    let local = listener.local_addr().unwrap();
    let lookup = || {
        d.request(&format!(
            r#"{{"op":"lookup","src":"{local}","dst":"0.0.0.0:0","proto":"tcp"}}"#
        ))
    };
    // The `ls --no-daemon` just run was a child of ours: between its fork
    // and its exec it held this listener too, so the daemon lists it as an
    // inherited owner until it has read that child's exit from the ring.
    // Wait for that, then assert the owners exactly.
    eventually("the ls child's exit to be applied", || {
        let found = lookup();
        let owners = found["sockets"][0]["owners"].as_array()?.len();
        (owners == pids.len()).then_some(())
    });
    let found = lookup();
    let sockets = found["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 1, "{found}");
    assert_eq!(sockets[0]["inode"], inode_of(&listener));
    assert_eq!(sockets[0]["state"], "listen");
    let owners: BTreeSet<u32> = sockets[0]["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["source"], "snapshot", "{found}");
            o["pid"].as_u64().unwrap() as u32
        })
        .collect();
    assert_eq!(owners, pids, "{found}");
    // The human view names the source.
    let out = Command::new(bin())
        .arg("--socket")
        .arg(&d.socket)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let source = status["status"]["snapshot"]["source"]
        .as_str()
        .unwrap_or("?");
    assert!(text.contains(&format!("(from {source})")), "{text}");
    let fallback = !status["status"]["snapshot"]["fallback"].is_null();
    assert_eq!(text.contains("sock_diag not used: "), fallback, "{text}");
    drop((
        client,
        server,
        udp,
        later_client,
        later_server,
        later,
        child,
    ));
    status
}

/// A daemon whose snapshot cannot use sock_diag (forced here with
/// `SOCKMON_SNAPSHOT_NO_SOCK_DIAG=1`; for real in the guest of
/// `cargo xtask test` that refuses the diag modules) starts, fills its table
/// from `/proc/net`, agrees with `ss -tunap` and says so in `status`.
#[test]
fn without_sock_diag_the_daemon_starts_from_proc_net_agrees_with_ss_and_says_so() {
    let _turn = exclusive();
    let blocked = diag_blocked();
    let env: &[(&str, &str)] = if blocked {
        &[]
    } else {
        &[("SOCKMON_SNAPSHOT_NO_SOCK_DIAG", "1")]
    };
    let v = daemon_agrees_with_ss("no-diag", env);
    let snap = &v["status"]["snapshot"];
    assert_eq!(snap["source"], "proc_net", "{v}");
    let why = snap["fallback"].as_str().unwrap_or_default();
    if blocked {
        assert!(why.contains("the kernel refused the sock_diag dump"), "{v}");
    } else {
        assert_eq!(why, "sock_diag skipped: SOCKMON_SNAPSHOT_NO_SOCK_DIAG=1");
    }
}

/// With sock_diag (the normal case), the same agreement; the status says
/// sock_diag answered.
#[test]
fn the_daemon_and_ss_agree_on_sockets_from_before_and_after_its_start() {
    let _turn = exclusive();
    let v = daemon_agrees_with_ss("agree-ss", &[]);
    assert_eq!(v["status"]["snapshot"]["source"], "sock_diag", "{v}");
    assert_eq!(
        v["status"]["snapshot"]["fallback"],
        serde_json::Value::Null,
        "{v}"
    );
}
