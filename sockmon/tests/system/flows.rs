//! Flows (issue 13) end to end: `sockmon watch --json` reports, on each
//! side's `close`, the bytes that moved each way exactly, the state the
//! connection ended in, and how long it lived within the bounds of this
//! test's own clock. Every line is validated against `schema/event.v2.json`
//! and the close line is read by `jq`.
//!
//! The first test runs alone (`support::exclusive`): it asserts that the
//! closes are this process's, and a close is the last release of the
//! socket, which is another test's child when that child was forked (and
//! held a copy of every descriptor, until its exec) at the moment of the
//! close. The others are shared.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::support::{self, exclusive, shared, signal, spawn_watch, wait_exit};

/// Time the connection is held open, so its duration is far from zero.
const HOLD: Duration = Duration::from_millis(250);
/// Slack for turning kernel timestamps into wall-clock time in two batches.
const CLOCK_SLACK_MS: f64 = 1.0;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn close_reports_bytes_each_way_final_state_and_duration() {
    let _turn = exclusive();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../schema/event.v2.json")).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("valid schema");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut watch, _err) = spawn_watch(&["--json", "--port", &port.to_string()]);
    let (up, down) = (10_000usize, 20_000usize);

    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let before_accept = Instant::now();
        let (mut s, _) = listener.accept().unwrap();
        let after_accept = Instant::now();
        let mut buf = vec![0u8; up];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&vec![2u8; down]).unwrap();
        assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0, "the client's end");
        let before_close = Instant::now();
        drop(s);
        tx.send((before_accept, after_accept, before_close, Instant::now()))
            .unwrap();
    });
    let before_connect = Instant::now();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let after_connect = Instant::now();
    let cport = client.local_addr().unwrap().port();
    client.write_all(&vec![1u8; up]).unwrap();
    let mut buf = vec![0u8; down];
    client.read_exact(&mut buf).unwrap();
    std::thread::sleep(HOLD);
    let before_close = Instant::now();
    drop(client);
    let after_close = Instant::now();
    server.join().unwrap();
    let (s_before_accept, s_after_accept, s_before_close, s_after_close) = rx.recv().unwrap();

    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut closes: Vec<(serde_json::Value, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while closes.len() < 2 && Instant::now() < deadline {
        let line = lines.next().expect("stdout open").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line} violates the schema: {errors:?}");
        if v["event"] == "close" {
            closes.push((v, line));
        } else {
            assert!(
                v.get("bytes_sent").is_none(),
                "only a close has counters: {line}"
            );
        }
    }
    signal(&watch, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut watch, Duration::from_secs(3)).code(),
        Some(0)
    );
    let find = |src: u16| {
        closes
            .iter()
            .find(|(v, _)| v["src_port"] == src)
            .unwrap_or_else(|| panic!("no close from port {src} in {closes:#?}"))
    };

    let (c, line) = find(cport);
    assert_eq!(c["pid"], std::process::id());
    assert_eq!(c["dst_port"], port);
    assert_eq!(c["bytes_sent"], up);
    assert_eq!(c["bytes_received"], down);
    // The SYN counts as one acknowledged byte on the connecting side.
    assert_eq!(c["bytes_acked"], up + 1);
    assert_eq!(c["total_retrans"], 0);
    assert_eq!(c["final_state"], "established");
    assert_eq!(c["duration_is_lower_bound"], false);
    assert!(c["srtt_us"].as_u64().unwrap() > 0, "{line}");
    assert!(c["segs_out"].as_u64().unwrap() > 0 && c["segs_in"].as_u64().unwrap() > 0);
    assert_eq!(c["drops"], 0);
    // The connect event lies in [before_connect, after_connect], the release
    // in [before_close, after_close]: the duration lies between the shortest
    // and the longest span those allow.
    let d = c["duration_ms"].as_f64().unwrap();
    let (lo, hi) = (
        ms(before_close - after_connect) - CLOCK_SLACK_MS,
        ms(after_close - before_connect) + CLOCK_SLACK_MS,
    );
    assert!(
        lo <= d && d <= hi,
        "client duration {d} ms not in [{lo}, {hi}]"
    );
    assert!(d >= ms(HOLD));

    let (s, _) = find(port);
    assert_eq!(s["dst_port"], cport);
    assert_eq!(s["bytes_sent"], down);
    // The accepting side does not count the SYN; it does count the client's FIN.
    assert_eq!(s["bytes_acked"], down);
    assert_eq!(s["bytes_received"], up + 1);
    assert_eq!(s["final_state"], "close_wait");
    let d = s["duration_ms"].as_f64().unwrap();
    let (lo, hi) = (
        ms(s_before_close - s_after_accept) - CLOCK_SLACK_MS,
        ms(s_after_close - s_before_accept) + CLOCK_SLACK_MS,
    );
    assert!(
        lo <= d && d <= hi,
        "server duration {d} ms not in [{lo}, {hi}]"
    );

    // One Community ID for every record of the connection, from either side.
    let want = sockmon::event::flow::community_id(
        sockmon::event::Proto::Tcp,
        format!("127.0.0.1:{cport}").parse().unwrap(),
        format!("127.0.0.1:{port}").parse().unwrap(),
    )
    .unwrap();
    assert_eq!(c["community_id"], want.as_str());
    assert_eq!(s["community_id"], want.as_str());

    // A real consumer reads the same line.
    let mut jq = Command::new("jq")
        .args([
            "-e",
            &format!(
                ".event == \"close\" and .bytes_sent == {up} and .bytes_received == {down} \
                 and .final_state == \"established\" and (.duration_ms | type) == \"number\""
            ),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("jq");
    jq.stdin.take().unwrap().write_all(line.as_bytes()).unwrap();
    assert!(jq.wait().unwrap().success(), "jq rejected {line}");
}

/// A cgroup tree of this test's own under the cgroup v2 root, removed on drop.
struct Cgroups {
    top: std::path::PathBuf,
    leaves: Vec<std::path::PathBuf>,
}

impl Cgroups {
    fn new(paths: &[&str]) -> Cgroups {
        let root = sockmon::kernel::cgroup::v2_root().expect("a cgroup v2 root");
        let top = root.join(format!("sockmon-flows-{}", std::process::id()));
        let leaves = paths
            .iter()
            .map(|p| {
                let leaf = top.join(p.trim_start_matches('/'));
                std::fs::create_dir_all(&leaf).unwrap_or_else(|e| panic!("{leaf:?}: {e}"));
                leaf
            })
            .collect();
        Cgroups { top, leaves }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Children first (rmdir of a cgroup needs it empty of cgroups and processes).
        let mut dirs = Vec::new();
        let mut stack = vec![self.top.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Runs python3 in cgroup `leaf` (moved there before it connects), which
/// connects to `port` and exits at once. Returns its pid.
fn connect_from_cgroup(leaf: &std::path::Path, port: u16, marker: &str) -> u32 {
    let code = format!(
        "import sys, socket; sys.stdin.readline(); socket.create_connection(('127.0.0.1', {port})).close()"
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &code, marker])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(leaf.join("cgroup.procs"), child.id().to_string()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    child.id()
}

#[test]
fn events_carry_exe_args_parent_unit_and_container() {
    let _turn = shared();
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let cgroups = Cgroups::new(&[
        "user.slice/user-1000.slice/user@1000.service/app.slice/sshd.service",
        &format!("system.slice/docker-{ID}.scope"),
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut watch, _err) = spawn_watch(&["--json", "--port", &port.to_string()]);
    let user_pid = connect_from_cgroup(&cgroups.leaves[0], port, "as-user");
    let docker_pid = connect_from_cgroup(&cgroups.leaves[1], port, "in-docker");

    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut connects = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while connects.len() < 2 && Instant::now() < deadline {
        let line = lines.next().expect("stdout open").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let pid = v["pid"].as_u64().unwrap() as u32;
        if v["event"] == "connect" && (pid == user_pid || pid == docker_pid) {
            connects.insert(pid, v);
        }
    }
    signal(&watch, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut watch, Duration::from_secs(3)).code(),
        Some(0)
    );
    drop(listener);

    let canonical = std::fs::canonicalize("/usr/bin/python3").unwrap();
    for (pid, marker) in [(user_pid, "as-user"), (docker_pid, "in-docker")] {
        let v = connects
            .get(&pid)
            .unwrap_or_else(|| panic!("no connect of {pid}: {connects:#?}"));
        // Either the kernel's copy of the exec filename or, if the /proc
        // worker read it before the process was gone, the canonical path.
        let exe = (
            v["exe"].as_str().unwrap(),
            v["exe_source"].as_str().unwrap(),
        );
        assert!(
            exe == ("/usr/bin/python3", "exec_filename")
                || exe == (canonical.to_str().unwrap(), "proc_exe"),
            "{v}"
        );
        let args: Vec<&str> = v["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "/usr/bin/python3");
        assert_eq!((args[1], args[3], args.len()), ("-c", marker, 4));
        assert_eq!(v["args_truncated"], false);
        assert_eq!(v["ppid"], std::process::id());
        assert_eq!(v["metadata"], "complete", "{v}");
    }
    let user = &connects[&user_pid];
    assert_eq!(user["unit"], "user@1000:sshd.service");
    assert!(user["container"].is_null());
    let docker = &connects[&docker_pid];
    assert_eq!(docker["unit"], format!("docker-{ID}.scope"));
    assert_eq!(docker["container"]["runtime"], "docker");
    assert_eq!(docker["container"]["id"], ID);
    assert_eq!(docker["container"]["short_id"], &ID[..12]);
    assert_eq!(docker["container"]["rootless"], false);
}

/// `--flow-interval 1`: a connection that moves known bursts for ~9 s gets a
/// `flow` record about every second, whose deltas add up to exactly what
/// moved, and the close's totals agree.
#[test]
fn flow_records_arrive_at_the_interval_with_deltas_that_add_up() {
    let _turn = shared();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../schema/event.v2.json")).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("valid schema");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut watch, _err) = spawn_watch(&[
        "--json",
        "--port",
        &port.to_string(),
        "--flow-interval",
        "1",
    ]);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cport = client.local_addr().unwrap().port();
    let (mut server, _) = listener.accept().unwrap();
    let (burst, bursts) = (7_000usize, 6usize);
    let started = Instant::now();
    for _ in 0..bursts {
        client.write_all(&vec![3u8; burst]).unwrap();
        let mut buf = vec![0u8; burst];
        server.read_exact(&mut buf).unwrap();
        std::thread::sleep(Duration::from_millis(1_500));
    }
    let held = started.elapsed();
    drop(client);
    drop(server);

    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut flows = Vec::new();
    let mut close = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while close.is_none() && Instant::now() < deadline {
        let line = lines.next().expect("stdout open").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["src_port"] != cport {
            continue;
        }
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line} violates the schema: {errors:?}");
        match v["event"].as_str() {
            Some("flow") => flows.push(v),
            Some("close") => close = Some(v),
            _ => {}
        }
    }
    signal(&watch, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut watch, Duration::from_secs(3)).code(),
        Some(0)
    );
    let close = close.expect("the client's close");

    // One record per interval the connection lived through (a loaded machine
    // may delay a round, never add one).
    let rounds = held.as_secs() as usize;
    assert!(
        flows.len() >= rounds.saturating_sub(2) && flows.len() <= rounds + 1,
        "{} flow records over {held:?}: {flows:#?}",
        flows.len()
    );
    for f in &flows {
        assert_eq!(f["interval_ms"], 1000);
        assert_eq!(f["pid"], std::process::id());
        assert_eq!(f["dst_port"], port);
        assert_eq!(f["final_state"], "established");
        assert!(f["srtt_us"].as_u64().unwrap() > 0);
    }
    let sum = |k: &str| flows.iter().map(|f| f[k].as_u64().unwrap()).sum::<u64>();
    // Every burst was sent and acknowledged more than a second before the
    // close, so some round saw it: the deltas add up to all of it.
    assert_eq!(sum("bytes_sent"), (burst * bursts) as u64);
    assert_eq!(sum("bytes_acked"), (burst * bursts) as u64 + 1);
    assert_eq!(close["bytes_sent"], burst * bursts);
    // No round saw a burst twice: each delta is a whole number of bursts.
    assert!(
        flows
            .iter()
            .all(|f| f["bytes_sent"].as_u64().unwrap() % burst as u64 == 0)
    );
}

/// The daemon's `status` totals what closed connections moved, by unit:
/// a connection from a process in a `user@1000.service` cgroup counts under
/// `user@1000:web.service`, with its exact bytes.
#[test]
fn status_totals_bytes_by_unit() {
    let _turn = shared();
    let cgroups =
        Cgroups::new(&["user.slice/user-1000.slice/user@1000.service/app.slice/web.service"]);
    let d = support::Daemon::start("flows-units", &["--no-config"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        buf.len()
    });
    let code = format!(
        "import sys, socket; sys.stdin.readline(); s = socket.create_connection(('127.0.0.1', {port})); s.sendall(b'z' * 4321); s.close()"
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &code])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(
        cgroups.leaves[0].join("cgroup.procs"),
        child.id().to_string(),
    )
    .unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(server.join().unwrap(), 4321);
    let row = support::eventually("the unit's totals", || {
        let v = d.request(r#"{"op":"status"}"#);
        let row = v["status"]["units"]["user@1000:web.service"].clone();
        (!row.is_null()).then_some(row)
    });
    assert_eq!(row["connections"], 1);
    assert_eq!(row["bytes_sent"], 4321);
    assert_eq!(row["bytes_received"], 0);
}

/// The daemon with flow records on (`--flow-interval-ms`): `ls` shows each
/// connection's bytes at the latest sample and how long ago it began, and
/// sorts by either.
#[test]
fn ls_through_the_daemon_shows_and_sorts_by_bytes_and_age() {
    let _turn = shared();
    let d = support::Daemon::start("ls-bytes", &["--no-config", "--flow-interval-ms", "1000"]);
    let sock = d.socket.to_str().unwrap().to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The older connection moves little, the younger one a lot.
    let mut old = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut old_srv, _) = listener.accept().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let mut big = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut big_srv, _) = listener.accept().unwrap();
    let began = chrono::Utc::now();
    old.write_all(&[1u8; 100]).unwrap();
    old_srv.read_exact(&mut [0u8; 100]).unwrap();
    big.write_all(&vec![2u8; 300_000]).unwrap();
    big_srv.read_exact(&mut vec![0u8; 300_000]).unwrap();
    let (po, pb) = (
        old.local_addr().unwrap().port(),
        big.local_addr().unwrap().port(),
    );
    let port_arg = port.to_string();
    let ls = |extra: &[&str]| support::ls_rows(&sock, &[&["--port", &port_arg], extra].concat());
    let client = |rows: &[serde_json::Value], p: u16| -> serde_json::Value {
        rows.iter()
            .find(|r| r["src_port"] == p && r["dst_port"] == port)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    // Both connections sampled after their bytes moved.
    let rows = support::eventually("bytes of both connections", || {
        let rows = ls(&[]);
        (client(&rows, pb)["bytes_sent"] == 300_000 && client(&rows, po)["bytes_sent"] == 100)
            .then_some(rows)
    });
    let (o, b) = (client(&rows, po), client(&rows, pb));
    assert_eq!(
        (o["bytes_received"].as_u64(), b["bytes_received"].as_u64()),
        (Some(0), Some(0))
    );
    // Ages: from their connects, the test's clock around them.
    let since = |v: &serde_json::Value| -> chrono::DateTime<chrono::Utc> {
        v["since"].as_str().expect("since").parse().unwrap()
    };
    assert!(since(&o) < since(&b), "{o} {b}");
    assert!((since(&b) - began).num_milliseconds().abs() < 1000, "{b}");
    assert_eq!(b["since_is_lower_bound"], false);
    // The listener has neither.
    let listen = rows
        .iter()
        .find(|r| r["state"] == "listen")
        .expect("listener");
    assert_eq!(
        (&listen["since"], &listen["bytes_sent"]),
        (&serde_json::Value::Null, &serde_json::Value::Null)
    );
    // Sorted: the big one first by bytes, the old one first by age; the
    // listener (neither figure) last both ways.
    let order = |rows: Vec<serde_json::Value>| -> Vec<(u64, u64)> {
        rows.iter()
            .map(|r| {
                (
                    r["src_port"].as_u64().unwrap(),
                    r["dst_port"].as_u64().unwrap(),
                )
            })
            .filter(|(_, d)| *d == u64::from(port) || *d == 0)
            .collect()
    };
    let by_bytes = order(ls(&["--sort", "bytes"]));
    assert_eq!(
        by_bytes[0],
        (u64::from(pb), u64::from(port)),
        "{by_bytes:?}"
    );
    assert_eq!(by_bytes.last().unwrap().1, 0, "{by_bytes:?}");
    let by_age = order(ls(&["--sort", "age"]));
    assert_eq!(by_age[0], (u64::from(po), u64::from(port)), "{by_age:?}");
    // The human table has the columns.
    let out = Command::new(support::bin())
        .args(["--socket", &sock, "ls", "--port", &pb.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().next().unwrap().contains("AGE      BYTES"),
        "{text}"
    );
    assert!(text.contains("300.0KB/0B"), "{text}");
}

/// Flow records cover every network namespace, not only the daemon's: a
/// connection inside a fresh namespace shows the bytes it moved.
#[test]
fn connections_in_another_network_namespace_get_their_bytes_too() {
    let _turn = shared();
    let d = support::Daemon::start("ls-netns", &["--no-config", "--flow-interval-ms", "1000"]);
    let sock = d.socket.to_str().unwrap().to_string();
    let script = "import socket,sys\nl=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
                  c=socket.create_connection(l.getsockname()); a,_=l.accept()\n\
                  c.sendall(b'x'*5000); n=0\nwhile n < 5000: n+=len(a.recv(65536))\n\
                  print(c.getsockname()[1], l.getsockname()[1], flush=True); sys.stdin.read()";
    let (mut p, line) = support::spawn_first_line(Command::new("unshare").args([
        "--net",
        "sh",
        "-c",
        "ip link set lo up && exec /usr/bin/python3 -c \"$1\"",
        "sh",
        script,
    ]));
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let (cport, lport) = (ports[0], ports[1]);
    let theirs = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/proc/{}/ns/net", p.id()))
            .unwrap()
            .ino()
    };
    let ours = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self/ns/net").unwrap().ino()
    };
    assert_ne!(theirs, ours);
    let row = support::eventually("the namespaced connection with its bytes", || {
        support::ls_rows(&sock, &["--port", &cport.to_string()])
            .into_iter()
            .find(|r| {
                r["src_port"] == cport
                    && r["dst_port"] == lport
                    && r["netns"] == theirs
                    && r["bytes_sent"] == 5000
            })
    });
    assert_eq!(row["owners"][0]["pid"], p.id());
    assert_eq!(row["bytes_received"], 0);
    drop(p.stdin.take());
    let _ = p.kill();
    let _ = p.wait();
}

/// `--no-enrichment` (for the benchmark's side-by-side cost) leaves out
/// exactly the kernel's flows records: the close still comes, without its
/// counters, and the connect without argv; everything else stays.
#[test]
fn without_enrichment_closes_carry_no_counters_and_events_no_argv() {
    let _turn = shared();
    let d = support::Daemon::start("no-enrich", &["--no-config", "--no-enrichment"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut sub = d.connect();
    let ok = support::request_on(
        &mut sub,
        &format!(r#"{{"op":"subscribe","filter":{{"port":[{port}]}}}}"#),
    );
    assert_eq!(ok["ok"], true);
    // A fresh process connects: its exec happened after the daemon started.
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            &format!(
                "import socket\nc=socket.create_connection(('127.0.0.1',{port})); c.sendall(b'y'*100); c.close()"
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (mut srv, _) = listener.accept().unwrap();
    srv.read_to_end(&mut Vec::new()).unwrap();
    drop(srv);
    let mut connect = None;
    let mut close = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (connect.is_none() || close.is_none()) && Instant::now() < deadline {
        let v = support::read_json_line(&mut sub);
        if v["dst_port"] == port && v["comm"] == "python3" {
            match v["event"].as_str() {
                Some("connect") => connect = Some(v),
                Some("close") => close = Some(v),
                _ => {}
            }
        }
    }
    let (connect, close) = (connect.expect("connect"), close.expect("close"));
    assert_eq!(connect["args"], serde_json::Value::Null, "{connect}");
    assert_eq!(close["bytes_sent"], serde_json::Value::Null, "{close}");
    assert_eq!(close["final_state"], serde_json::Value::Null, "{close}");
    // The close itself is exact as ever.
    assert_eq!(close["dst_port"], port);
    assert!(
        close["src_port"].as_u64().is_some_and(|p| p != 0),
        "{close}"
    );
}
