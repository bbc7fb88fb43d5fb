//! Layer 4: `sockmon.service` under a real systemd. Needs root.
//!
//! Debian's systemd is booted as PID 1 of a new PID + mount namespace, on an
//! overlay of `/` whose writes land in a tmpfs
//! (`packaging/test/systemd-sandbox-boot.sh` says how, and why it must never
//! be booted on the host's own file system). The packaged unit, with
//! `ExecStart=` pointed at the binary under test, and the packaged config are
//! installed inside; then `systemctl start` (which returns only after READY=1:
//! `Type=notify`), a lookup of a live connection through the installed
//! service's API socket, the journal, a reload, `systemctl stop` (clean exit,
//! every program unloaded from the kernel), and poweroff. The network
//! namespace is the host's, so a connection this process makes is seen by the
//! daemon inside.
//!
//! Everything started is ended by the PID this test started (the sandbox's
//! PID 1), also when an assertion fails (drop guards); the host's /etc, /run
//! and /tmp are checked to be as they were.

pub mod host;
pub mod sandbox;

use std::{
    collections::BTreeSet,
    fs,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use host::{HostState, loaded_programs, program_ids_held_by, programs_named};
use sandbox::{Limits, Sandbox};

use crate::support::{bin, shared};

const SYSTEMD: &str = "/lib/systemd/systemd";
/// Generous: CI machines have 2 cores and run other tests meanwhile.
const LIMITS: Limits = Limits {
    boot: Duration::from_secs(180),
    command: Duration::from_secs(120),
};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the sockmon crate lives in the workspace")
        .to_path_buf()
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn service_starts_answers_reloads_and_stops_cleanly() {
    let _turn = shared();
    require_root_and_systemd();
    let host = HostState::capture();
    {
        let sb = Sandbox::boot("main", &[], LIMITS);
        install_service(&sb, true);

        let verify = sb.run(&[
            "systemd-analyze",
            "verify",
            "/etc/systemd/system/sockmon.service",
        ]);
        println!("systemd-analyze verify:\n{}", verify.all());
        assert!(
            verify.ok(),
            "systemd-analyze verify failed:\n{}",
            verify.all()
        );
        let said = format!("{}{}", verify.stdout, verify.stderr);
        assert!(
            !said.contains("sockmon.service"),
            "systemd-analyze verify complains about the unit:\n{}",
            verify.all()
        );
        check_security_score(&sb);

        let sock_release_before = programs_named("sock_release");
        let start = sb.run(&["systemctl", "start", "sockmon"]);
        assert!(
            start.ok(),
            "systemctl start failed:\n{}\n{}",
            start.all(),
            sb.diagnostics()
        );
        // Type=notify: `start` returned, so READY=1 has been sent.
        let show = sb.show(&["ActiveState", "SubState", "Type", "MainPID", "NRestarts"]);
        assert_eq!(
            (
                show["ActiveState"].as_str(),
                show["SubState"].as_str(),
                show["Type"].as_str()
            ),
            ("active", "running", "notify"),
            "{show:?}\n{}",
            sb.diagnostics()
        );
        assert_eq!(show["NRestarts"], "0");
        let status = sb.run(&["systemctl", "status", "--no-pager", "--lines=0", "sockmon"]);
        assert!(
            status.stdout.contains("active (running)"),
            "{}",
            status.all()
        );
        let main_pid: u32 = show["MainPID"].parse().unwrap();
        let daemon = sb.host_pid(main_pid).expect("the daemon's PID on the host");
        let held = program_ids_held_by(daemon);
        let loaded = loaded_programs();
        let held_names: Vec<&str> = loaded
            .iter()
            .filter(|(id, _)| held.contains(id))
            .map(|(_, n)| n.as_str())
            .collect();
        println!(
            "daemon: PID {main_pid} in the sandbox, {daemon} on the host, holding BPF programs {held:?} ({held_names:?}); \
             programs named sock_release loaded: {sock_release_before} before start, {} now",
            programs_named("sock_release")
        );
        assert!(
            held_names.contains(&"sock_release"),
            "the daemon holds no sock_release program: {held_names:?}"
        );

        // The API socket: where the unit's RuntimeDirectory= put it, group sockmon.
        let sock = sb.run(&["stat", "-c", "%a %U %G %F", "/run/sockmon/sockmon.sock"]);
        assert_eq!(
            sock.stdout.trim(),
            "660 root sockmon socket",
            "{}",
            sock.all()
        );

        lookup_finds_this_process(&sb);

        let journal = sb.wait_for(
            Duration::from_secs(30),
            "the start-up line in the journal",
            || {
                let j = sb.run(&["journalctl", "--no-pager", "-o", "cat", "-u", "sockmon"]);
                j.stdout
                    .contains("sockmon daemon ready")
                    .then_some(j.stdout)
            },
        );
        println!("journal after start:\n{journal}");

        let reload = sb.run(&["systemctl", "reload", "sockmon"]);
        assert!(reload.ok(), "systemctl reload failed:\n{}", reload.all());
        sb.wait_for(Duration::from_secs(30), "the reload in the journal", || {
            let j = sb.run(&["journalctl", "--no-pager", "-o", "cat", "-u", "sockmon"]);
            j.stdout.contains("configuration reloaded").then_some(())
        });
        assert_eq!(sb.show(&["ActiveState"])["ActiveState"], "active");

        let stop = sb.run(&["systemctl", "stop", "sockmon"]);
        assert!(stop.ok(), "systemctl stop failed:\n{}", stop.all());
        let show = sb.show(&["ActiveState", "Result", "ExecMainStatus", "ExecMainCode"]);
        assert_eq!(show["ActiveState"], "inactive", "{show:?}");
        assert_eq!(show["Result"], "success", "{show:?}\n{}", sb.diagnostics());
        assert_eq!(show["ExecMainStatus"], "0", "{show:?}");
        let exists = sb.run(&["test", "-e", "/run/sockmon/sockmon.sock"]);
        assert!(!exists.ok(), "the API socket outlived the daemon");
        host::wait_programs_gone(&held, "the stopped daemon");
        println!(
            "after stop: none of the daemon's programs is loaded; programs named sock_release: {}",
            programs_named("sock_release")
        );
        let journal = sb.run(&["journalctl", "--no-pager", "-o", "cat", "-u", "sockmon"]);
        assert!(
            journal.stdout.contains("every program detached"),
            "{}",
            journal.stdout
        );

        sb.power_off();
    }
    host.assert_unchanged();
}

/// On a machine where tracefs is not mounted (and systemd does not mount it
/// either), the service mounts it itself: the unit does not prevent that.
#[test]
fn service_mounts_tracefs_when_it_is_missing() {
    let _turn = shared();
    require_root_and_systemd();
    let host = HostState::capture();
    {
        let sb = Sandbox::boot("tracefs", &[("SDTEST_TRACEFS", "unmounted")], LIMITS);
        let mp = sb.run(&["mountpoint", "-q", "/sys/kernel/tracing"]);
        assert!(!mp.ok(), "tracefs is still mounted in the sandbox");
        install_service(&sb, false);
        let start = sb.run(&["systemctl", "start", "sockmon"]);
        assert!(
            start.ok(),
            "systemctl start failed:\n{}\n{}",
            start.all(),
            sb.diagnostics()
        );
        let main_pid = &sb.show(&["MainPID"])["MainPID"];
        let info = sb.run(&["cat", &format!("/proc/{main_pid}/mountinfo")]);
        assert!(
            info.stdout
                .lines()
                .any(|l| l.contains(" /sys/kernel/tracing ") && l.contains(" - tracefs ")),
            "the daemon's mount namespace has no tracefs:\n{}",
            info.stdout
        );
        lookup_finds_this_process(&sb);
        let stop = sb.run(&["systemctl", "stop", "sockmon"]);
        assert!(stop.ok(), "{}", stop.all());
        assert_eq!(sb.show(&["Result"])["Result"], "success");
        sb.power_off();
    }
    host.assert_unchanged();
}

/// Policy alerts under systemd: sent once, over the journal's native
/// protocol, with their MESSAGE_ID and fields (read back by `journalctl`),
/// not duplicated by the stdout sink; a bad policy on reload keeps the old one.
#[test]
fn policy_alerts_reach_the_journal_once_with_their_fields() {
    let _turn = shared();
    require_root_and_systemd();
    let host = HostState::capture();
    {
        let sb = Sandbox::boot("policy", &[], LIMITS);
        install_service(&sb, false);
        let config = fs::read_to_string(repo().join("packaging/config.toml"))
            .unwrap()
            .replace("#enabled = false", "enabled = true");
        sb.write(
            "/etc/sockmon/config.toml",
            &format!("{config}\n[policy]\nfile = \"/etc/sockmon/policy.toml\"\n"),
        );
        sb.write(
            "/etc/sockmon/policy.toml",
            "[[rule]]\nname = \"ssh\"\nexe = \"/usr/sbin/sshd\"\nport = 22\n",
        );
        let start = sb.run(&["systemctl", "start", "sockmon"]);
        assert!(start.ok(), "{}\n{}", start.all(), sb.diagnostics());

        let listen = |unit: &str| {
            // A free port number, from a UDP socket (a TcpListener would be a
            // listener of this test's, judged too).
            let port = std::net::UdpSocket::bind("0.0.0.0:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let code = format!(
                "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',{port}))\ns.listen(4)\ntime.sleep(120)\n"
            );
            let r = sb.run(&[
                "systemd-run",
                &format!("--unit={unit}"),
                "--property=Type=exec",
                "/usr/bin/python3",
                "-c",
                &code,
            ]);
            assert!(r.ok(), "{}", r.all());
            let pid = sb.run(&["systemctl", "show", "-p", "MainPID", "--value", unit]);
            (port, pid.stdout.trim().to_string())
        };
        let not_allowed = "6b1f4d0c8e7a4c2f9a3e5d7b1c0f2a41";
        let entries = |port: u16| -> Vec<serde_json::Value> {
            let j = sb.run(&[
                "journalctl",
                "--no-pager",
                "-o",
                "json",
                &format!("MESSAGE_ID={not_allowed}"),
                &format!("SOCKMON_PORT={port}"),
            ]);
            j.stdout
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        };
        let (port, pid) = listen("sockmon-policy-l1.service");
        let e = sb.wait_for(Duration::from_secs(60), "the alert in the journal", || {
            entries(port).into_iter().next()
        });
        println!("journal entry: {e}");
        assert_eq!(e["SOCKMON_REASON"], "not_allowed");
        assert_eq!(e["SOCKMON_SEVERITY"], "warning");
        assert_eq!(e["PRIORITY"], "4");
        // The probes report PIDs of the kernel's initial namespace; the
        // sandbox has a PID namespace (and /proc) of its own.
        let host_pid = sb
            .host_pid(pid.parse().unwrap())
            .expect("the listener's host PID");
        println!("listener: MainPID {pid} in the sandbox, {host_pid} on the host");
        assert_eq!(e["SOCKMON_PID"], host_pid.to_string().as_str(), "{e}");
        assert_eq!(e["SOCKMON_PROTO"], "tcp");
        assert_eq!(e["SOCKMON_ADDRESS"], "0.0.0.0");
        assert_eq!(e["SYSLOG_IDENTIFIER"], "sockmon");
        // Its /proc cannot show the daemon a process by its host PID, so the
        // owner is reported as unidentified (partial), never judged on guesses;
        // the exe and unit are checked in the `policy` module, outside the sandbox.
        match e["SOCKMON_METADATA"].as_str() {
            Some("complete") => {
                assert_eq!(e["SOCKMON_UNIT"], "sockmon-policy-l1.service", "{e}");
                assert!(
                    e["SOCKMON_EXE"]
                        .as_str()
                        .unwrap()
                        .starts_with("/usr/bin/python3")
                );
            }
            Some("partial") => assert!(e.get("SOCKMON_EXE").is_none(), "{e}"),
            other => panic!("SOCKMON_METADATA {other:?}"),
        }
        let class = if port >= 49152 {
            "dynamic"
        } else {
            "registered"
        };
        assert_eq!(e["SOCKMON_PORT_CLASS"], class);
        assert_eq!(e["_SYSTEMD_UNIT"], "sockmon.service");
        // Once: no second entry, and the stdout sink (the journal too) left the alert out.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(entries(port).len(), 1);
        let out = sb.run(&["journalctl", "--no-pager", "-o", "cat", "-u", "sockmon"]);
        let port_field = format!("\"src_port\":{port}");
        assert!(
            out.stdout
                .lines()
                .any(|l| l.contains("\"event\":\"listen\"") && l.contains(&port_field)),
            "the stdout sink is on: its listen line is in the journal"
        );
        assert!(
            !out.stdout
                .lines()
                .any(|l| l.contains("\"event\":\"alert\"") && l.contains(&port_field)),
            "the stdout sink duplicated the alert into the journal"
        );

        // A broken policy on reload: refused with its line, the old one stays.
        sb.write("/etc/sockmon/policy.toml", "[[rule]]\nport = \"9-1\"\n");
        let r = sb.run(&["systemctl", "reload", "sockmon"]);
        assert!(r.ok(), "{}", r.all());
        sb.wait_for(Duration::from_secs(30), "the refused reload in the journal", || {
            let j = sb.run(&["journalctl", "--no-pager", "-o", "cat", "-u", "sockmon"]);
            j.stdout
                .contains("configuration not reloaded: /etc/sockmon/policy.toml:2:1: policy: rule 1: port")
                .then_some(())
        });
        let (port2, _) = listen("sockmon-policy-l2.service");
        sb.wait_for(
            Duration::from_secs(60),
            "an alert under the old policy",
            || entries(port2).into_iter().next(),
        );
        let stop = sb.run(&["systemctl", "stop", "sockmon"]);
        assert!(stop.ok(), "{}", stop.all());
        sb.power_off();
    }
    host.assert_unchanged();
}

/// The packaged config lists every key of `Config` with its default, commented out.
#[test]
fn packaged_config_documents_every_key_with_its_default() {
    let _turn = shared();
    use sockmon::daemon::config::Config;
    let path = repo().join("packaging/config.toml");
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        Config::parse(&path, &text).unwrap(),
        Config::default(),
        "the packaged config must change nothing"
    );
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if is_setting(rest) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut c = Config::parse(&path, &uncommented)
        .unwrap_or_else(|e| panic!("the commented-out settings do not parse: {e}"));
    // The two settings that are off by default are shown with an example.
    assert!(c.sinks.file.path.is_some() && c.metrics.listen.is_some());
    c.sinks.file.path = None;
    c.metrics.listen = None;
    // [sinks.clickhouse]: its optional settings are shown with examples too.
    let ch = &mut c.sinks.clickhouse;
    assert!(ch.url.is_some() && ch.netns.is_some() && ch.spool_dir.is_some());
    (ch.url, ch.user, ch.password, ch.host) = (None, None, None, None);
    (ch.netns, ch.spool_dir) = (None, None);
    assert_eq!(
        c,
        Config::default(),
        "a documented default differs from the code's"
    );
    let table: toml::Table = toml::from_str(&uncommented).unwrap();
    let mut documented = BTreeSet::new();
    flatten("", &toml::Value::Table(table), &mut documented);
    let mut fields = debug_fields(&format!("{:?}", Config::default()));
    // `[policy]` is off by default and documented as a commented example
    // (`##` lines), checked by the policy module's own test.
    fields.remove("policy");
    assert_eq!(
        documented, fields,
        "keys in packaging/config.toml vs Config"
    );
}

// ---------------------------------------------------------------------------
// Steps shared by the tests

fn require_root_and_systemd() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    assert!(
        Path::new(SYSTEMD).exists(),
        "{SYSTEMD} is missing: this test boots Debian's systemd (package systemd)"
    );
}

/// Installs the unit (ExecStart= pointed at the binary under test), the
/// packaged config and (optionally) the group `sockmon`, as `cargo xtask
/// install` does, and reloads systemd.
fn install_service(sb: &Sandbox, group: bool) {
    let unit = fs::read_to_string(repo().join("packaging/systemd/sockmon.service")).unwrap();
    assert_eq!(
        unit.lines().filter(|l| l.starts_with("ExecStart=")).count(),
        1
    );
    // The unit hides /root, /home, /run/user (ProtectHome=yes) and /tmp,
    // /var/tmp (PrivateTmp=yes) from the service, and a checkout may be in
    // any of them: the service always runs a copy installed in the sandbox,
    // as `cargo xtask install` would install it.
    let mut exe = bin().to_string();
    {
        let copy = "/usr/local/libexec/sockmon-under-test";
        let cp = sb.run(&[
            "sh",
            "-c",
            "mkdir -p \"${2%/*}\" && cp \"$1\" \"$2\"",
            "sh",
            &exe,
            copy,
        ]);
        assert!(cp.ok(), "{}", cp.all());
        println!("the service runs a copy of {exe} at {copy}");
        exe = copy.to_string();
    }
    let unit: String = unit
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                format!("ExecStart={exe} daemon\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    sb.write("/etc/systemd/system/sockmon.service", &unit);
    let config = fs::read_to_string(repo().join("packaging/config.toml")).unwrap();
    sb.write("/etc/sockmon/config.toml", &config);
    if group {
        let g = sb.run(&["groupadd", "--system", "sockmon"]);
        assert!(g.ok(), "{}", g.all());
    }
    let r = sb.run(&["systemctl", "daemon-reload"]);
    assert!(r.ok(), "{}", r.all());
}

/// Prints `systemd-analyze security`, and checks the score is no worse than
/// the one written at the top of the unit.
fn check_security_score(sb: &Sandbox) {
    let sec = sb.run(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "sockmon.service",
    ]);
    println!("systemd-analyze security sockmon.service:\n{}", sec.stdout);
    let score = exposure(&sec.stdout).unwrap_or_else(|| panic!("no score in:\n{}", sec.all()));
    let unit = fs::read_to_string(repo().join("packaging/systemd/sockmon.service")).unwrap();
    let documented = unit
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter(|l| l.contains("systemd-analyze security sockmon.service"))
        .find_map(|l| {
            l.rsplit(':')
                .next()?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .expect("the unit's header states its systemd-analyze security score");
    println!("systemd-analyze security score: {score} (documented in the unit: {documented})");
    assert!(
        score <= documented + 1e-9,
        "the unit's exposure rose to {score}, above the documented {documented}"
    );
}

/// "→ Overall exposure level for sockmon.service: 2.9 OK 🙂" → 2.9
fn exposure(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("Overall exposure level"))?;
    line.rsplit(':')
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A connection made by this process is found by `sockmon lookup` run inside
/// the sandbox, through the service's API socket, with this process's PID.
fn lookup_finds_this_process(sb: &Sandbox) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect(server).unwrap();
    let (_accepted, _) = listener.accept().unwrap();
    let local = client.local_addr().unwrap();
    let (src, dst) = (local.to_string(), server.to_string());
    let answer = sb.wait_for(
        Duration::from_secs(30),
        "the connection in the daemon's table",
        || {
            let out = sb.run(&[bin(), "lookup", &src, &dst, "--proto", "tcp", "--json"]);
            (out.ok() && !out.stdout.trim().is_empty()).then_some(out.stdout)
        },
    );
    println!("sockmon lookup {src} {dst}:\n{answer}");
    let rows: Vec<serde_json::Value> = answer
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{answer}");
    let s = &rows[0];
    assert_eq!(
        (
            s["src_port"].as_u64(),
            s["dst_port"].as_u64(),
            s["state"].as_str()
        ),
        (
            Some(u64::from(local.port())),
            Some(u64::from(server.port())),
            Some("connected")
        ),
        "{s}"
    );
    // It acted on the socket; anything else listed can only be a child this
    // process forked (to run the commands above) that inherited it for a moment.
    let owners = s["owners"].as_array().unwrap();
    let acting: Vec<&serde_json::Value> =
        owners.iter().filter(|o| o["source"] == "event").collect();
    assert_eq!(acting.len(), 1, "{s}");
    assert_eq!(acting[0]["pid"], std::process::id(), "{s}");
    assert!(
        owners
            .iter()
            .all(|o| o["source"] == "event" || o["source"] == "inherited"),
        "{s}"
    );
    drop(client);
}

// ---------------------------------------------------------------------------
// Small helpers

/// Whether `line` (after its `#`) is a commented-out setting: `key = value`.
fn is_setting(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(k, _)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

/// Dotted paths of the leaf values of a TOML table.
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// Dotted paths of the leaf fields in a `{:?}` of nested structs, e.g.
/// `Config { api: ApiConfig { socket: "/x", max_clients: 1 } }` →
/// {api.socket, api.max_clients}. A field whose value is `Name {` is a table.
fn debug_fields(debug: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<String> = Vec::new();
    let mut pending: Option<String> = None;
    let mut chars = debug.char_indices().peekable();
    let mut in_string = false;
    let bytes = debug.as_bytes();
    while let Some((i, c)) = chars.next() {
        if in_string {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => stack.push(pending.take().unwrap_or_default()),
            '}' => {
                stack.pop();
            }
            c if c.is_ascii_lowercase() || c == '_' => {
                // A field name starts after `{ ` or `, ` and ends with `: `.
                let prev = debug[..i].trim_end().chars().last();
                if !matches!(prev, Some('{') | Some(',')) {
                    continue;
                }
                let end = debug[i..]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .map_or(debug.len(), |n| i + n);
                if !debug[end..].starts_with(": ") {
                    continue;
                }
                let name = &debug[i..end];
                let value = &debug[end + 2..];
                let is_table = value
                    .split_whitespace()
                    .next()
                    .is_some_and(|w| w.starts_with(|ch: char| ch.is_ascii_uppercase()))
                    && value.split_whitespace().nth(1) == Some("{")
                    && bytes.get(end + 2).is_some_and(u8::is_ascii_uppercase);
                let path: Vec<&str> = stack
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(String::as_str)
                    .chain([name])
                    .collect();
                if is_table {
                    pending = Some(name.to_string());
                } else {
                    out.insert(path.join("."));
                }
                while chars.peek().is_some_and(|&(j, _)| j < end) {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn debug_fields_of_nested_structs() {
    let _turn = shared();
    let d = r#"Config { api: ApiConfig { socket: "/run/x, y: {", max_clients: 256 }, sinks: SinksConfig { file: FileSinkConfig { path: None, keep: 5 } }, metrics: MetricsConfig { listen: Some(127.0.0.1:9464) } }"#;
    let f: Vec<String> = debug_fields(d).into_iter().collect();
    assert_eq!(
        f,
        [
            "api.max_clients",
            "api.socket",
            "metrics.listen",
            "sinks.file.keep",
            "sinks.file.path"
        ]
    );
}
