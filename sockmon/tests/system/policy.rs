//! Layer 4: the listener watchdog with real processes. Needs root.
//!
//! Listeners are python processes in a network namespace of this test's own
//! (`ip netns add`), so fixed ports never collide with anything else on the
//! machine and `audit`/`baseline` are scoped to it (`--netns`). The stream
//! is `sockmon watch --json --policy FILE`, with the real probes; alerts of
//! other people's listeners on this shared machine are ignored by pid.
//!
//! Alerts are judged in order by one thread, so "no alert for X" is checked
//! once the alert of a listener started after X has arrived.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

use crate::support::{self, bin, eventually_within, shared, signal, spawn_watch, wait_exit};

const WAIT: Duration = Duration::from_secs(30);

/// Listener script: prints its pid, waits for "go", opens what `argv` says,
/// prints `ready PORT`, and holds it until stdin closes.
const SCRIPT: &str = r#"
import os, socket, sys
print(os.getpid(), flush=True)
sys.stdin.readline()
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
keep = []
if mode == "tcp":
    for p in [port] + [int(x) for x in sys.argv[4:]]:
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, p)); s.listen(8); keep.append(s)
elif mode == "listen0":
    s = socket.socket(); s.listen(8); keep.append(s)
elif mode == "udp":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((addr, port)); keep.append(u)
elif mode == "udpclient":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((addr, 0))
    u.sendto(b"x", (addr, 9)); keep.append(u)
print("ready", keep[0].getsockname()[1], flush=True)
sys.stdin.read()
"#;

/// A network namespace of this test's, removed when dropped.
struct Netns {
    name: String,
    ino: u32,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("sockmon-pol-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        assert!(
            Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success()
        );
        assert!(
            Command::new("ip")
                .args(["-n", &name, "link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success()
        );
        let ino = std::fs::metadata(format!("/run/netns/{name}"))
            .unwrap()
            .ino() as u32;
        Netns { name, ino }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One listener process.
struct Listener {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    port: u16,
}

impl Listener {
    /// Starts `exe SCRIPT args` in `ns`; `before_go` runs with the pid before it opens anything.
    fn start_with(ns: &Netns, exe: &str, args: &[&str], before_go: impl FnOnce(u32)) -> Listener {
        Self::start_script(ns, exe, SCRIPT, args, before_go)
    }

    fn start_script(
        ns: &Netns,
        exe: &str,
        script: &str,
        args: &[&str],
        before_go: impl FnOnce(u32),
    ) -> Listener {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, exe, "-c", script])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let pid: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("pid line {line:?}"));
        // `ip netns exec` execs the program: the process we spawned is the listener.
        assert_eq!(pid, child.id(), "ip netns exec forked");
        before_go(pid);
        stdin.write_all(b"go\n").unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("listener said {line:?}"));
        Listener {
            child,
            stdin: Some(stdin),
            pid,
            port,
        }
    }

    fn start(ns: &Netns, args: &[&str]) -> Listener {
        Self::start_with(ns, "/usr/bin/python3", args, |_| {})
    }

    fn stop(mut self) {
        self.stdin.take();
        let _ = wait_exit(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cgroup named like a systemd unit, so the owner's unit is one we chose.
struct UnitCgroup {
    dir: PathBuf,
    unit: String,
}

impl UnitCgroup {
    /// In the name=systemd v1 hierarchy if mounted, else the v2 root.
    fn new() -> Option<UnitCgroup> {
        let unit = format!("sockmon-policy-test-{}.service", std::process::id());
        for root in [
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            let dir = Path::new(root).join(&unit);
            if std::fs::create_dir_all(&dir).is_ok() && dir.join("cgroup.procs").exists() {
                return Some(UnitCgroup { dir, unit });
            }
        }
        None
    }

    fn enter(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        // Emptied once its processes have exited.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Every JSON line of a child's stdout, collected by a thread.
fn collect(child: &mut Child) -> Arc<Mutex<Vec<Value>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                l.lock().unwrap().push(v);
            }
        }
    });
    lines
}

fn alerts_of(lines: &Mutex<Vec<Value>>, pid: u32) -> Vec<Value> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["event"] == "alert" && v["owners"][0]["pid"] == pid)
        .cloned()
        .collect()
}

fn wait_alert(lines: &Mutex<Vec<Value>>, pid: u32, port: u16) -> Value {
    eventually_within(&format!("an alert for pid {pid} port {port}"), WAIT, || {
        alerts_of(lines, pid)
            .into_iter()
            .find(|a| a["src_port"] == port)
    })
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sockmon-policy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn watch_raises_the_alerts_the_policy_calls_for() {
    let _turn = shared();
    assert!(
        is_root(),
        "the policy tests load eBPF programs: run as root"
    );
    let ns = Netns::new("w");
    let dir = tmp_dir("w");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "grace_s = 8\n\n[[rule]]\nname = \"py-7000\"\nexe = \"/usr/bin/python3*\"\nport = 7000\nnetns = {0}\n\n[[rule]]\nname = \"py-7100\"\nexe = \"/usr/bin/python3*\"\nport = 7100\nnetns = {0}\n",
            ns.ino
        ),
    )
    .unwrap();
    let (mut watch, _err) = spawn_watch(&["--json", "--policy", policy.to_str().unwrap()]);
    let lines = collect(&mut watch);
    let cg = UnitCgroup::new();

    // An allowed listener, then one on a registered and a dynamic port.
    let allowed = Listener::start(&ns, &["tcp", "0.0.0.0", "7000"]);
    let two = Listener::start_with(
        &ns,
        "/usr/bin/python3",
        &["tcp", "0.0.0.0", "7200", "50001"],
        |pid| {
            if let Some(cg) = &cg {
                cg.enter(pid);
            }
        },
    );
    let reg = wait_alert(&lines, two.pid, 7200);
    let dynamic = wait_alert(&lines, two.pid, 50001);
    for (a, class) in [(&reg, "registered"), (&dynamic, "dynamic")] {
        assert_eq!(a["reason"], "not_allowed", "{a}");
        assert_eq!(a["severity"], "warning", "{a}");
        assert_eq!(a["port_class"], class, "{a}");
        assert_eq!(a["proto"], "tcp");
        assert_eq!(a["src_ip"], "0.0.0.0");
        assert_eq!(a["addr_scope"], "wildcard");
        assert_eq!(a["netns"], ns.ino);
        assert_eq!(a["metadata"], "complete");
        let o = &a["owners"][0];
        assert!(
            o["exe"].as_str().unwrap().starts_with("/usr/bin/python3"),
            "{a}"
        );
        assert_eq!(o["comm"], "python3");
        assert_eq!(o["uid"], 0);
        if let Some(cg) = &cg {
            assert_eq!(o["unit"], cg.unit.as_str(), "{a}");
        }
        assert!(a["inode"].as_u64().unwrap() > 0);
    }
    assert_eq!(reg["port_privileged"], false);
    assert_eq!(reg["port_ephemeral"], false);
    assert_eq!(
        dynamic["port_ephemeral"], true,
        "50001 is inside 32768-60999"
    );
    assert_eq!(
        alerts_of(&lines, two.pid).len(),
        2,
        "one alert per listener"
    );
    assert_eq!(
        alerts_of(&lines, allowed.pid),
        Vec::<Value>::new(),
        "allowed listener"
    );
    // The listen events carry the port classes too.
    let listen = eventually_within("the listen event of 7200", WAIT, || {
        lines
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["event"] == "listen" && v["pid"] == two.pid && v["src_port"] == 7200)
            .cloned()
    });
    assert_eq!(listen["port_class"], "registered");
    assert_eq!(listen["addr_scope"], "wildcard");
    assert_eq!(listen["port_privileged"], false);

    // Built-in denies: an executable in /tmp, and one run from a memfd.
    let copy = dir.join("python3");
    std::fs::copy("/usr/bin/python3", &copy).unwrap();
    let from_tmp = Listener::start_with(
        &ns,
        copy.to_str().unwrap(),
        &["tcp", "0.0.0.0", "7300"],
        |_| {},
    );
    let a = wait_alert(&lines, from_tmp.pid, 7300);
    assert_eq!(
        (&a["reason"], &a["rule"], &a["severity"]),
        (
            &"denied".into(),
            &"builtin:world-writable-exe".into(),
            &"critical".into()
        ),
        "{a}"
    );
    assert_eq!(a["owners"][0]["exe"], copy.to_str().unwrap());
    let memfd = memfd_listener(&ns, 7301);
    let a = wait_alert(&lines, memfd.pid, 7301);
    assert_eq!(a["rule"], "builtin:memfd-exe", "{a}");
    assert_eq!(a["severity"], "critical");
    assert!(
        a["owners"][0]["exe"]
            .as_str()
            .unwrap()
            .starts_with("/memfd:"),
        "{a}"
    );

    // A restart within the grace window is quiet.
    let first = Listener::start(&ns, &["tcp", "0.0.0.0", "7400"]);
    wait_alert(&lines, first.pid, 7400);
    first.stop();
    let again = Listener::start(&ns, &["tcp", "0.0.0.0", "7400"]);
    // Widened: allowed on loopback, then the same program on the wildcard.
    let narrow = Listener::start(&ns, &["tcp", "127.0.0.1", "7100"]);
    let marker = Listener::start(&ns, &["tcp", "0.0.0.0", "7401"]);
    wait_alert(&lines, marker.pid, 7401);
    assert_eq!(
        alerts_of(&lines, again.pid),
        Vec::<Value>::new(),
        "restart within grace"
    );
    assert_eq!(
        alerts_of(&lines, narrow.pid),
        Vec::<Value>::new(),
        "allowed on loopback"
    );
    narrow.stop();
    let wide = Listener::start(&ns, &["tcp", "0.0.0.0", "7100"]);
    let a = wait_alert(&lines, wide.pid, 7100);
    assert_eq!(a["reason"], "address_widened", "{a}");
    assert_eq!(a["rule"], "py-7100");
    assert_eq!(a["previous"]["address"], "127.0.0.1");

    // listen() without bind(): the kernel picks the port; still judged.
    let unbound = Listener::start(&ns, &["listen0", "0.0.0.0", "0"]);
    let a = wait_alert(&lines, unbound.pid, unbound.port);
    assert_eq!(a["reason"], "not_allowed");
    assert_eq!(a["port_ephemeral"], true);

    // UDP: a client's port-0 bind raises nothing; a service's bind does.
    let client = Listener::start(&ns, &["udpclient", "127.0.0.1", "0"]);
    let service = Listener::start(&ns, &["udp", "0.0.0.0", "7500"]);
    let a = wait_alert(&lines, service.pid, 7500);
    assert_eq!(a["proto"], "udp");
    assert_eq!(
        alerts_of(&lines, client.pid),
        Vec::<Value>::new(),
        "UDP client bind"
    );

    signal(&watch, libc::SIGTERM);
    assert!(wait_exit(&mut watch, Duration::from_secs(20)).success());
    // Every alert is valid against schema v2 (events: the `cli` module).
    let schema: Value =
        serde_json::from_str(include_str!("../../../schema/event.v2.json")).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("valid schema");
    let all = lines.lock().unwrap();
    assert!(all.iter().filter(|v| v["event"] == "alert").count() >= 9);
    for v in all.iter().filter(|v| v["event"] == "alert") {
        let errors: Vec<String> = validator.iter_errors(v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{v} violates the schema: {errors:?}");
    }
    drop(all);
    drop((
        allowed, two, from_tmp, memfd, again, marker, wide, unbound, client, service,
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A python listener whose executable is a memfd (fileless).
fn memfd_listener(ns: &Netns, port: u16) -> Listener {
    // The launcher copies python into a memfd and execs it in place
    // (same pid): /proc/PID/exe is then `/memfd:sockmon (deleted)`.
    let launcher = format!(
        "import os,sys\nfd=os.memfd_create('sockmon',0)\nos.write(fd,open('/usr/bin/python3','rb').read())\nos.execv('/proc/self/fd/%d'%fd,['python3','-c',{SCRIPT:?},'tcp','0.0.0.0','{port}'])\n"
    );
    Listener::start_script(ns, "/usr/bin/python3", &launcher, &[], |_| {})
}

fn audit(args: &[&str]) -> (i32, Value) {
    let out = Command::new(bin())
        .arg("audit")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "audit said {:?} / {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, v)
}

#[test]
fn baseline_then_audit_then_a_new_listener() {
    let _turn = shared();
    assert!(
        is_root(),
        "audit and baseline read every process: run as root"
    );
    let ns = Netns::new("a");
    let dir = tmp_dir("a");
    let policy = dir.join("policy.toml");
    let handwritten = "# hand-written, kept as is\ngrace_s = 5\n\n[[rule]]\nname = \"mine\"\nexe = \"/nowhere/daemon\"\nport = 1\n";
    std::fs::write(&policy, handwritten).unwrap();
    let ns_arg = ns.ino.to_string();
    let p = policy.to_str().unwrap();
    let tcp = Listener::start(&ns, &["tcp", "0.0.0.0", "8000"]);
    let udp = Listener::start(&ns, &["udp", "127.0.0.1", "8001"]);

    // Baseline, with a listener that opens during --for.
    let mut base = Command::new(bin())
        .args(["baseline", "--policy", p, "--netns", &ns_arg, "--for", "4s"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    support::wait_attached(base.stderr.take().unwrap());
    let late = Listener::start(&ns, &["tcp", "127.0.0.1", "8002"]);
    assert!(wait_exit(&mut base, Duration::from_secs(60)).success());
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(
        text.starts_with(handwritten),
        "hand-written rules kept:\n{text}"
    );
    for port in ["port = 8000", "port = 8001", "port = 8002"] {
        assert!(text.contains(port), "{port} missing:\n{text}");
    }
    assert_eq!(text.matches("[[rule]]").count(), 4, "{text}");
    let check = Command::new(bin())
        .args(["policy", "check", p])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    // Unchanged machine: clean.
    let (code, v) = audit(&["--policy", p, "--netns", &ns_arg]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["clean"], true);
    assert_eq!(v["listeners"], 3, "{v}");
    // A second baseline adds nothing.
    let again = Command::new(bin())
        .args(["baseline", "--policy", p, "--netns", &ns_arg])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), text);

    // The kernel's views agree on a clean namespace.
    let (code, v) = audit(&["--policy", p, "--netns", &ns_arg, "--hidden"]);
    assert_eq!(code, 0, "{v}");
    let h = &v["hidden"][0];
    assert_eq!(h["netns"], ns.ino);
    assert_eq!(h["discrepancies"], Value::Array(vec![]), "{h}");
    assert_eq!(
        (&h["sock_diag"], &h["proc_net"], &h["fd"]),
        (&3.into(), &3.into(), &3.into()),
        "{h}"
    );

    // A new listener: a violation naming it.
    let new = Listener::start(&ns, &["tcp", "0.0.0.0", "8003"]);
    let (code, v) = audit(&["--policy", p, "--netns", &ns_arg]);
    assert_eq!(code, 1, "{v}");
    let viol = v["violations"].as_array().unwrap();
    assert_eq!(viol.len(), 1, "{v}");
    assert_eq!(viol[0]["port"], 8003);
    assert_eq!(viol[0]["owner"]["pid"], new.pid);
    assert_eq!(viol[0]["reason"], "not_allowed");
    // The table form says the same, with the same exit status.
    let out = Command::new(bin())
        .args(["audit", "--policy", p, "--netns", &ns_arg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("0.0.0.0:8003") && table.contains(&new.pid.to_string()),
        "{table}"
    );

    // Errors: 2.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nname = \"x\"\n\n[[rule]]\nport = \"9-1\"\n").unwrap();
    let out = Command::new(bin())
        .args(["audit", "--policy", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let check = Command::new(bin())
        .args(["policy", "check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains(&format!("{}:5:1: rule 2: port:", bad.display())),
        "{err}"
    );
    drop((tcp, udp, late, new));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The daemon: alerts in the API's `subscribe` stream, and SIGHUP swapping
/// the policy without reloading the probes.
#[test]
fn daemon_streams_alerts_and_reloads_the_policy_on_sighup() {
    let _turn = shared();
    assert!(is_root(), "the daemon loads eBPF programs: run as root");
    let ns = Netns::new("d");
    let dir = tmp_dir("d");
    let policy = dir.join("policy.toml");
    let rule = |ports: &str| {
        format!(
            "[[rule]]\nname = \"py\"\nexe = \"/usr/bin/python3*\"\nport = \"{ports}\"\nnetns = {}\n",
            ns.ino
        )
    };
    std::fs::write(&policy, rule("7600-7601")).unwrap();
    let socket = dir.join("api.sock");
    let mut daemon = Command::new(bin())
        .args(["daemon", "--no-config", "--socket"])
        .arg(&socket)
        .arg("--policy")
        .arg(&policy)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = {
        let (tx, rx) = std::sync::mpsc::channel();
        let err = daemon.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        rx
    };
    let mut said = Vec::new();
    let mut wait_log = |what: &str| {
        eventually_within(what, Duration::from_secs(60), || {
            while let Ok(l) = log.try_recv() {
                said.push(l);
            }
            said.iter().any(|l| l.contains(what)).then_some(())
        })
    };
    wait_log("sockmon daemon ready");
    let mut sub = Command::new(bin())
        .arg("--socket")
        .arg(&socket)
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(sub.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("through the daemon"), "{line}");
    let lines = collect(&mut sub);

    let allowed = Listener::start(&ns, &["tcp", "0.0.0.0", "7601"]);
    let marker = Listener::start(&ns, &["tcp", "0.0.0.0", "7602"]);
    wait_alert(&lines, marker.pid, 7602);
    assert_eq!(alerts_of(&lines, allowed.pid), Vec::<Value>::new());
    allowed.stop();

    // Reload: 7601 is no longer allowed. The daemon keeps its programs.
    let programs = support::program_ids_of(daemon.id());
    std::fs::write(&policy, rule("7600")).unwrap();
    signal(&daemon, libc::SIGHUP);
    wait_log("policy: 1 rules");
    wait_log("configuration reloaded");
    assert_eq!(
        support::program_ids_of(daemon.id()),
        programs,
        "probes reloaded"
    );
    // (exe, unit, tcp, 0.0.0.0, 7601) is still inside its grace window (a
    // reopen there would be a quiet restart): the new listener takes 127.0.0.1.
    let denied = Listener::start(&ns, &["tcp", "127.0.0.1", "7601"]);
    let a = wait_alert(&lines, denied.pid, 7601);
    assert_eq!(a["reason"], "not_allowed", "{a}");
    let status = Command::new(bin())
        .arg("--socket")
        .arg(&socket)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["policy"]["enabled"], true, "{st}");
    assert_eq!(st["policy"]["rules"], 1);
    assert_eq!(st["policy"]["reloads"], 1);
    let counted: u64 = st["policy"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["reason"] == "not_allowed" && c["rule"] == "none" && c["port_class"] == "registered"
        })
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    assert!(counted >= 2, "{st}");

    signal(&sub, libc::SIGTERM);
    let _ = wait_exit(&mut sub, Duration::from_secs(10));
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(&mut daemon, Duration::from_secs(30)).success());
    drop((marker, denied));
    let _ = std::fs::remove_dir_all(&dir);
}
