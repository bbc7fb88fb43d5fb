//! Whole-system tests of the ClickHouse sink (layer 4), against a real
//! `clickhouse-server` (Debian's 18.16) that each test starts as a normal
//! process with its own data path and loopback ports, and stops by its PID.
//!
//! Each "host" is a real `sockmon daemon` with its own `host` tag,
//! restricted by `[sinks.clickhouse] netns` to a network namespace the test
//! creates; the test makes sockets in that namespace from a thread that
//! entered it, so every event there is the test's own. The daemon's file
//! sink (the same stream, unfiltered) is the reference the rows must match.
//! Needs root (BPF, namespaces).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::support::{Daemon, eventually_within, shared};

const SCHEMA: &str = include_str!("../../../packaging/clickhouse/events.sql");
const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The statements of an SQL file, its `--` comment lines left out.
fn statements(text: &str) -> Vec<String> {
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The server's configuration: loopback only, its own ports and paths.
fn write_server_config(dir: &Path, http: u16, tcp: u16) {
    let d = dir.display();
    std::fs::write(
        dir.join("config.xml"),
        format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><console>1</console></logger>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <mark_cache_size>5368709</mark_cache_size>
    <max_concurrent_queries>16</max_concurrent_queries>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
</yandex>
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("users.xml"),
        r#"<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default></default></quotas>
</yandex>
"#,
    )
    .unwrap();
}

/// A `clickhouse-server` of this test's own.
struct Server {
    child: Option<Child>,
    dir: PathBuf,
    http: u16,
}

impl Server {
    /// Starts a server on free loopback ports. A port picked free may be
    /// taken by someone else before the server binds it (tests run in
    /// parallel, and others use this machine): the server proves it is ours
    /// by creating a marker database in our data path; else new ports.
    fn start(name: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("sockmon-ch-{name}-{}", std::process::id()));
        for _ in 0..5 {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let (http, tcp) = (free_port(), free_port());
            write_server_config(&dir, http, tcp);
            let mut s = Server {
                child: None,
                dir: dir.clone(),
                http,
            };
            if !s.spawn_once() {
                continue;
            }
            s.query(&format!("CREATE DATABASE {}", s.marker()));
            if !dir
                .join(format!("data/metadata/{}.sql", s.marker()))
                .exists()
            {
                s.kill();
                continue;
            }
            for sql in statements(SCHEMA) {
                s.query(&sql);
            }
            return s;
        }
        panic!(
            "no clickhouse-server of our own after 5 tries; see {}",
            dir.display()
        );
    }

    /// A database only this server has.
    fn marker(&self) -> String {
        format!("sockmon_test_{}_{}", std::process::id(), self.http)
    }

    /// (Re)starts the server on its ports and data; checks it is ours.
    fn spawn(&mut self) {
        assert!(
            self.spawn_once(),
            "clickhouse-server exited; see {}",
            self.dir.display()
        );
        let marker = self.marker();
        let n = self.query(&format!(
            "SELECT count() FROM system.databases WHERE name = '{marker}'"
        ));
        assert_eq!(n.trim(), "1", "port {} is not our server's", self.http);
    }

    /// Spawns the server and waits for `/ping`; false if it exited first.
    fn spawn_once(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("clickhouse-server (xtask setup installs the Debian package)");
        self.child = Some(child);
        eventually_within("clickhouse-server answers /ping or exits", WAIT, || {
            if let Some(c) = &mut self.child
                && c.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return Some(false);
            }
            self.try_http("GET /ping", "")
                .filter(|(code, _)| *code == 200)
                .map(|_| true)
        })
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling the server this test started, by its PID.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One HTTP/1.0 exchange; `None` if the server is not there.
    fn try_http(&self, head: &str, body: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let req = format!(
            "{head} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let code = resp.split(' ').nth(1)?.parse().ok()?;
        let body = resp.split_once("\r\n\r\n")?.1.to_string();
        Some((code, body))
    }

    fn query(&self, sql: &str) -> String {
        let (code, body) = self.try_http("POST /", sql).expect("clickhouse answers");
        assert_eq!(code, 200, "{sql}: {body}");
        body
    }

    /// Every row tagged `host`, as JSON objects.
    fn rows(&self, host: &str) -> Vec<Value> {
        self.query(&format!(
            "SELECT *, toUnixTimestamp(time) AS unix FROM sockmon.events WHERE host = '{host}' FORMAT JSONEachRow"
        ))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // SAFETY: our own child, by PID; a stopped server must be woken to die cleanly.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A named network namespace with loopback up, deleted when dropped.
struct Netns {
    name: String,
    inode: u64,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("sockmon-ch-{}-{tag}", std::process::id());
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        run(&["netns", "add", &name]);
        run(&["-n", &name, "link", "set", "lo", "up"]);
        let inode = std::fs::metadata(format!("/run/netns/{name}"))
            .unwrap()
            .ino();
        Netns { name, inode }
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

fn inode_of(fd: &impl std::os::fd::AsRawFd) -> u64 {
    // SAFETY: fstat on a descriptor we own into a zeroed stat.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::fstat(fd.as_raw_fd(), &mut st), 0);
        st.st_ino
    }
}

/// What one connection made in a namespace was.
#[derive(Debug, Clone)]
struct Made {
    tid: u32,
    listen_port: u16,
    listener_inode: u64,
    client_port: u16,
    client_inode: u64,
    accepted_inode: u64,
    refused_port: u16,
}

/// A port nothing listens on in the test's fresh namespaces, below the
/// ephemeral range (32768 and up), so that a connect to it can never pick
/// it as its own source port and connect to itself (TCP simultaneous open:
/// a port released by `free_port` was picked that way once, and the
/// "refused" connect succeeded). Unique for the whole test binary.
fn refused_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(20_000);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// From a thread inside `ns`: `n` times a listener, a connection to it, its
/// accept, a refused connect, then all closed.
fn make_sockets(ns: &Netns, n: usize) -> Vec<Made> {
    let path = ns.path();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a namespace descriptor we hold.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        (0..n)
            .map(|_| {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (a, _) = l.accept().unwrap();
                let refused_port = refused_port();
                assert!(TcpStream::connect(("127.0.0.1", refused_port)).is_err());
                Made {
                    tid,
                    listen_port: l.local_addr().unwrap().port(),
                    listener_inode: inode_of(&l),
                    client_port: c.local_addr().unwrap().port(),
                    client_inode: inode_of(&c),
                    accepted_inode: inode_of(&a),
                    refused_port,
                }
            })
            .collect()
    })
    .join()
    .unwrap()
}

/// Removes a directory when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon for host `host`, restricted to `ns`, with a file sink and the
/// `[sinks.clickhouse]` settings `extra` (its files go with the `TempDir`,
/// which must outlive it).
fn daemon(server: &Server, host: &str, ns: &Netns, extra: &str) -> (Daemon, PathBuf, TempDir) {
    let dir = std::env::temp_dir().join(format!("sockmon-ch-d-{host}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.ndjson");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[sinks.file]\npath = \"{}\"\n[sinks.clickhouse]\nurl = \"http://127.0.0.1:{}\"\nhost = \"{host}\"\nnetns = \"{}\"\nflush_ms = 100\nretry_max_ms = 1000\n{extra}",
            events.display(),
            server.http,
            ns.path()
        ),
    )
    .unwrap();
    // One daemon loads its programs at a time (the verifier's work is heavy
    // on a loaded 2-core machine; the tests run in parallel).
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    let d = Daemon::start(
        &format!("ch-{host}"),
        &["--config", config.to_str().unwrap()],
    );
    (d, events, TempDir(dir))
}

/// The stream's lines from the file sink.
fn stream(events: &Path) -> Vec<Value> {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// One event in a form both the stream and the table give exactly.
fn key_of_event(v: &Value) -> String {
    let t = chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).unwrap();
    format!(
        "{} {}.{:09} {} {}:{} > {}:{} pid {} tid {} uid {} comm {} ns {} inode {} cg {} err {} impl {}",
        v["event"].as_str().unwrap(),
        t.timestamp(),
        t.timestamp_subsec_nanos(),
        v["proto"].as_str().unwrap(),
        v["src_ip"].as_str().unwrap(),
        num(&v["src_port"]),
        v["dst_ip"].as_str().unwrap(),
        num(&v["dst_port"]),
        num(&v["pid"]),
        num(&v["tid"]),
        num(&v["uid"]),
        v["comm"].as_str().unwrap(),
        num(&v["netns"]),
        num(&v["inode"]),
        num(&v["cgroup_id"]),
        v["error"].as_str().unwrap_or(""),
        u8::from(v["implicit"].as_bool().unwrap()),
    )
}

fn key_of_row(r: &Value) -> String {
    format!(
        "{} {}.{:09} {} {}:{} > {}:{} pid {} tid {} uid {} comm {} ns {} inode {} cg {} err {} impl {}",
        r["event"].as_str().unwrap(),
        num(&r["unix"]),
        num(&r["time_ns"]),
        r["proto"].as_str().unwrap(),
        r["src_ip"].as_str().unwrap(),
        num(&r["src_port"]),
        r["dst_ip"].as_str().unwrap(),
        num(&r["dst_port"]),
        num(&r["pid"]),
        num(&r["tid"]),
        num(&r["uid"]),
        r["comm"].as_str().unwrap(),
        num(&r["netns"]),
        num(&r["inode"]),
        num(&r["cgroup_id"]),
        r["error"].as_str().unwrap(),
        num(&r["implicit"]),
    )
}

/// Multiset of keys.
fn bag(keys: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_default() += 1;
    }
    m
}

/// The events of `ns` in the stream, once the closes of `made` are in it.
fn expected(events: &Path, ns: &Netns, made: &[Made]) -> BTreeMap<String, usize> {
    let want: Vec<u64> = made
        .iter()
        .flat_map(|m| [m.listener_inode, m.client_inode, m.accepted_inode])
        .collect();
    eventually_within("the file sink has every close", WAIT, || {
        let lines = stream(events);
        let closed: Vec<u64> = lines
            .iter()
            .filter(|v| v["event"] == "close" && num(&v["netns"]) == ns.inode)
            .map(|v| num(&v["inode"]))
            .collect();
        want.iter().all(|i| closed.contains(i)).then(|| {
            bag(lines
                .iter()
                .filter(|v| v["event"] != "lost" && num(&v["netns"]) == ns.inode)
                .map(key_of_event))
        })
    })
}

/// Waits until the rows of `host` are exactly `want`; on timeout, shows the difference.
fn wait_rows(
    d: &Daemon,
    server: &Server,
    host: &str,
    want: &BTreeMap<String, usize>,
    what: &str,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let rows = server.rows(host);
        let got = bag(rows.iter().map(key_of_row));
        if &got == want {
            return rows;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<_> = want.iter().filter(|(k, n)| got.get(*k) < Some(n)).collect();
            let extra: Vec<_> = got.iter().filter(|(k, n)| want.get(*k) < Some(n)).collect();
            let log: Vec<String> = d.stderr.try_iter().collect();
            let server_log =
                std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
            panic!(
                "daemon stderr {log:#?}\nserver log {server_log}\n{what}: rows of {host} differ from the stream after {WAIT:?}; missing or short {missing:#?}; extra {extra:#?}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `made`'s own sockets are among `rows`, with exact pids, tids, ports, inodes.
fn assert_has_made(rows: &[Value], made: &[Made], host: &str, ns: &Netns) {
    let pid = u64::from(std::process::id());
    let find = |event: &str, inode: u64| {
        rows.iter()
            .find(|r| r["event"] == event && num(&r["inode"]) == inode)
            .unwrap_or_else(|| panic!("no {event} row for inode {inode} in {rows:?}"))
    };
    for m in made {
        let listen = find("listen", m.listener_inode);
        assert_eq!(num(&listen["src_port"]), u64::from(m.listen_port));
        let connect = find("connect", m.client_inode);
        assert_eq!(
            (
                connect["src_ip"].as_str(),
                num(&connect["src_port"]),
                connect["dst_ip"].as_str(),
                num(&connect["dst_port"]),
                connect["error"].as_str()
            ),
            (
                Some("127.0.0.1"),
                u64::from(m.client_port),
                Some("127.0.0.1"),
                u64::from(m.listen_port),
                Some("")
            )
        );
        let accept = find("accept", m.accepted_inode);
        assert_eq!(num(&accept["dst_port"]), u64::from(m.client_port));
        assert_eq!(num(&accept["src_port"]), u64::from(m.listen_port));
        let refused = rows
            .iter()
            .find(|r| {
                // The refusal is the connect's error (syscall hooks) or its
                // `connect_result` (socket hooks).
                (r["event"] == "connect" || r["event"] == "connect_result")
                    && num(&r["dst_port"]) == u64::from(m.refused_port)
                    && r["error"] == "ECONNREFUSED"
            })
            .unwrap_or_else(|| panic!("no refused connect to {}", m.refused_port));
        assert_eq!(num(&refused["pid"]), pid, "{refused}");
        assert_eq!(refused["host"], host);
        assert_eq!(num(&refused["netns"]), ns.inode);
        for r in [listen, connect, accept] {
            assert_eq!(
                (num(&r["pid"]), num(&r["tid"])),
                (pid, u64::from(m.tid)),
                "{r}"
            );
            assert_eq!(r["host"], host);
            assert_eq!(num(&r["netns"]), ns.inode);
        }
    }
}

fn dropped(d: &Daemon) -> BTreeMap<String, u64> {
    let v = d.request(r#"{"op":"status"}"#);
    v["status"]["dropped"]
        .as_object()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .filter(|(k, _)| k.starts_with("clickhouse_"))
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

#[test]
fn two_hosts_in_two_namespaces_write_exactly_their_events_to_one_server() {
    let _turn = shared();
    let server = Server::start("rows");
    let (na, nb) = (Netns::new("a"), Netns::new("b"));
    let (da, ea, _ta) = daemon(&server, "host-a", &na, "");
    let (db, eb, _tb) = daemon(&server, "host-b", &nb, "");
    let made_a = make_sockets(&na, 3);
    let made_b = make_sockets(&nb, 2);
    for (host, ns, events, made, d) in [
        ("host-a", &na, &ea, &made_a, &da),
        ("host-b", &nb, &eb, &made_b, &db),
    ] {
        let want = expected(events, ns, made);
        let rows = wait_rows(d, &server, host, &want, "every row inserted");
        assert_has_made(&rows, made, host, ns);
        assert!(rows.iter().all(|r| num(&r["netns"]) == ns.inode));
        let lost = dropped(d);
        assert_eq!(lost.len(), 6, "every cause listed: {lost:?}");
        assert_eq!(total(&lost), 0, "{lost:?}");
    }
    // The fleet queries of README run on this server's version.
    let queries = include_str!("../../../packaging/clickhouse/queries.sql");
    let queries = statements(queries);
    assert_eq!(queries.len(), 4);
    for q in queries {
        server.query(&q);
    }
    let failed = server.query(
        "SELECT host, count() FROM sockmon.events WHERE event IN ('connect', 'connect_result') AND error = 'ECONNREFUSED' \
         AND host IN ('host-a', 'host-b') GROUP BY host ORDER BY host FORMAT TSV",
    );
    assert_eq!(failed, "host-a\t3\nhost-b\t2\n");
}

#[test]
fn a_killed_server_loses_nothing_within_the_bounds_and_counts_the_rest() {
    let _turn = shared();
    let server_name = "kill";
    let mut server = Server::start(server_name);
    let (nc, nd) = (Netns::new("c"), Netns::new("d"));
    let spool_c = std::env::temp_dir().join(format!("sockmon-ch-spool-c-{}", std::process::id()));
    let spool_d = std::env::temp_dir().join(format!("sockmon-ch-spool-d-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool_c);
    let _ = std::fs::remove_dir_all(&spool_d);
    let metrics = free_port();
    // c: 8 events in memory, a roomy spool. d: the same memory, a 4 KiB spool.
    let (dc, ec, _tc) = daemon(
        &server,
        "host-c",
        &nc,
        &format!(
            "batch_rows = 4\nbuffer_rows = 8\nspool_dir = \"{}\"\n",
            spool_c.display()
        ),
    );
    let metrics_cfg = format!("\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n");
    let (dd, ed, _td) = daemon(
        &server,
        "host-d",
        &nd,
        &format!(
            "batch_rows = 4\nbuffer_rows = 8\nspool_dir = \"{}\"\nspool_max_bytes = 4096\n{metrics_cfg}",
            spool_d.display()
        ),
    );
    // Healthy first: rows arrive.
    let first_c = make_sockets(&nc, 1);
    let first_d = make_sockets(&nd, 1);
    for (host, ns, events, made, d) in [
        ("host-c", &nc, &ec, &first_c, &dc),
        ("host-d", &nd, &ed, &first_d, &dd),
    ] {
        let want = expected(events, ns, made);
        wait_rows(d, &server, host, &want, "rows before the outage");
    }
    let server_rows_before_kill = server.rows("host-c").len() as u64;
    // Outage: far more events than memory holds.
    server.kill();
    let made_c = make_sockets(&nc, 10);
    let made_d = make_sockets(&nd, 10);
    eventually_within("c spools", WAIT, || {
        (std::fs::read_dir(&spool_c).map_or(0, |d| d.count()) > 0).then_some(())
    });
    eventually_within("d counts losses", WAIT, || {
        (dropped(&dd)["clickhouse_spool_full"] > 0).then_some(())
    });
    let all_c: Vec<Made> = first_c.iter().chain(&made_c).cloned().collect();
    let all_d: Vec<Made> = first_d.iter().chain(&made_d).cloned().collect();
    // c is stopped during the outage: what its memory held goes to the
    // spool, which the next daemon takes over. Nothing counted lost.
    let want_c = expected(&ec, &nc, &all_c);
    let n_c: u64 = want_c.values().sum::<usize>() as u64;
    assert_eq!(total(&dropped(&dc)), 0, "{:?}", dropped(&dc));
    let mut dc = dc;
    assert_eq!(dc.stop(Duration::from_secs(30)).code(), Some(0));
    drop((dc, _tc));
    let spooled: u64 = std::fs::read_dir(&spool_c)
        .unwrap()
        .flatten()
        .map(|f| {
            let name = f.file_name().into_string().unwrap();
            let rows = name
                .strip_suffix(".jsonl")
                .unwrap()
                .split_once('-')
                .unwrap()
                .1;
            let rows: u64 = rows.parse().unwrap();
            assert_eq!(
                std::fs::read_to_string(f.path()).unwrap().lines().count() as u64,
                rows
            );
            rows
        })
        .sum();
    let before_outage = server_rows_before_kill;
    assert_eq!(
        spooled,
        n_c - before_outage,
        "every event of the outage is in the spool"
    );
    let (dc, _ec2, _tc) = daemon(
        &server,
        "host-c",
        &nc,
        &format!(
            "batch_rows = 4\nbuffer_rows = 8\nspool_dir = \"{}\"\n",
            spool_c.display()
        ),
    );
    server.spawn();
    // c: everything arrives, nothing counted lost, the spool empties.
    let rows_c = wait_rows(
        &dc,
        &server,
        "host-c",
        &want_c,
        "every row of c after the restart",
    );
    assert_has_made(&rows_c, &all_c, "host-c", &nc);
    assert_eq!(total(&dropped(&dc)), 0, "{:?}", dropped(&dc));
    eventually_within("c's spool drained", WAIT, || {
        (std::fs::read_dir(&spool_c).unwrap().count() == 0).then_some(())
    });
    // d: what arrived plus what is counted lost is every event, exactly.
    let want_d = expected(&ed, &nd, &all_d);
    let n_d: usize = want_d.values().sum();
    let (rows_d, lost_d) = eventually_within("d's rows and losses add up", WAIT, || {
        let rows = server.rows("host-d");
        let lost = dropped(&dd);
        (rows.len() as u64 + total(&lost) == n_d as u64).then_some((rows, lost))
    });
    let got = bag(rows_d.iter().map(key_of_row));
    for (k, n) in &got {
        assert!(want_d.get(k) >= Some(n), "row {k} is not one of d's events");
    }
    assert!(
        total(&lost_d) > 0 && rows_d.len() >= 8,
        "{lost_d:?}, {} rows",
        rows_d.len()
    );
    assert_eq!(
        lost_d["clickhouse_spool_full"],
        total(&lost_d),
        "{lost_d:?}"
    );
    // The stream said so too, and the metrics.
    let in_stream: u64 = stream(&ed)
        .iter()
        .filter(|v| v["event"] == "lost" && v["cause"] == "clickhouse_spool_full")
        .map(|v| num(&v["count"]))
        .sum();
    assert_eq!(in_stream, lost_d["clickhouse_spool_full"]);
    let mut http = TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    let line = format!(
        "sockmon_dropped_total{{cause=\"clickhouse_spool_full\"}} {}",
        lost_d["clickhouse_spool_full"]
    );
    assert!(body.lines().any(|l| l == line), "{line} not in {body}");
    drop((dc, dd));
    let _ = std::fs::remove_dir_all(&spool_c);
    let _ = std::fs::remove_dir_all(&spool_d);
}

#[test]
fn a_stalled_server_slows_neither_the_api_nor_the_file_sink() {
    let _turn = shared();
    let server = Server::start("stall");
    let ne = Netns::new("e");
    // A long timeout: the stalled insert is waited for, not retried (no duplicate).
    let (d, events, _te) = daemon(&server, "host-e", &ne, "timeout_ms = 600000\n");
    let first = make_sockets(&ne, 1);
    let want = expected(&events, &ne, &first);
    wait_rows(&d, &server, "host-e", &want, "rows before the stall");
    server.signal(libc::SIGSTOP);
    // Stalled: each round's batch waits on the server. The file sink and the
    // API go on.
    let mut all = first.clone();
    for _ in 0..3 {
        let made = make_sockets(&ne, 2);
        all.extend(made.iter().cloned());
        expected(&events, &ne, &all);
        // A live connection made now is in the table and answered exactly.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let req = format!(
            r#"{{"op":"lookup","src":"{}","dst":"{}","proto":"tcp"}}"#,
            c.local_addr().unwrap(),
            l.local_addr().unwrap()
        );
        let v = eventually_within("the new connection answered", WAIT, || {
            let v = d.request(&req);
            v["sockets"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
                .then_some(v)
        });
        assert_eq!(v["sockets"][0]["inode"], inode_of(&c), "{v}");
        assert_eq!(v["sockets"][0]["owners"][0]["pid"], std::process::id());
        let st = d.request(r#"{"op":"status"}"#);
        assert!(
            st["status"]["events_total"]["connect"].as_u64() >= Some(3),
            "{st}"
        );
    }
    server.signal(libc::SIGCONT);
    let want = expected(&events, &ne, &all);
    let rows = wait_rows(&d, &server, "host-e", &want, "every row after the stall");
    assert_has_made(&rows, &all, "host-e", &ne);
    assert_eq!(total(&dropped(&d)), 0);
}

/// CPU time (user + system, clock ticks) of the thread named `name` in `pid`.
fn thread_ticks(pid: u32, name: &str) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|t| ticks(&t.path().join("stat")))
        .sum()
}

/// utime + stime of a `/proc/.../stat` file.
fn ticks(stat: &Path) -> u64 {
    let text = std::fs::read_to_string(stat).unwrap();
    let after = &text[text.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Not a test: the figures of BENCHMARKS.md ("ClickHouse sink"). Run with
/// `cargo test [--release] -p sockmon --test system -- --ignored --nocapture clickhouse::`.
/// Events are made while the server is stopped (SIGSTOP), so they wait in the
/// sink's memory; then the server resumes and the time to insert them all is
/// the rate the sink sustains (with the server on the same machine).
#[test]
#[ignore = "benchmark; prints figures, asserts no timing"]
fn bench_sink_throughput_and_cpu() {
    let _turn = shared();
    const SOCKETS: usize = 50_000;
    let server = Server::start("bench");
    let ns = Netns::new("bench");
    let (d, _events, _t) = daemon(
        &server,
        "bench",
        &ns,
        "buffer_rows = 1000000\ntimeout_ms = 600000\n",
    );
    let daemon_pid = d.child.id();
    let before = thread_ticks(daemon_pid, "clickhouse");
    let server_before = ticks(Path::new(&format!("/proc/{}/stat", server.pid())));
    server.signal(libc::SIGSTOP);
    let path = ns.path();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a namespace descriptor we hold.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        for _ in 0..SOCKETS {
            drop(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        }
    })
    .join()
    .unwrap();
    let events = (SOCKETS * 2) as u64; // a bind and a close each
    std::thread::sleep(Duration::from_secs(3)); // all encoded and queued
    let start = std::time::Instant::now();
    server.signal(libc::SIGCONT);
    let count = || {
        num(&Value::String(
            server
                .query("SELECT count() FROM sockmon.events WHERE host = 'bench'")
                .trim()
                .to_string(),
        ))
    };
    eventually_within("all rows", Duration::from_secs(600), || {
        (count() >= events).then_some(())
    });
    let secs = start.elapsed().as_secs_f64();
    let hz = 100.0; // USER_HZ
    let cpu = (thread_ticks(daemon_pid, "clickhouse") - before) as f64 / hz;
    let server_cpu =
        (ticks(Path::new(&format!("/proc/{}/stat", server.pid()))) - server_before) as f64 / hz;
    println!(
        "clickhouse sink: {events} events inserted in {secs:.2} s after the server resumed = {:.0} events/s; \
         sink thread CPU {cpu:.2} s = {:.1} ms per 10k events; server CPU {server_cpu:.2} s = {:.1} ms per 10k; dropped {:?}",
        events as f64 / secs,
        cpu * 1e3 / (events as f64 / 1e4),
        server_cpu * 1e3 / (events as f64 / 1e4),
        dropped(&d)
    );
    assert_eq!(count(), events);
}
