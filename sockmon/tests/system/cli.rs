//! Layer 3 and 4: the `sockmon` binary as users and programs use it.
//! Help and bad arguments (no root needed), then `watch` end to end: the
//! JSON stream validated against `schema/event.v2.json` and read by `jq`,
//! the human view, SIGTERM, `| head`, and missing privileges.

use std::{
    io::{BufRead as _, BufReader},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use assert_cmd::Command as Cmd;

use crate::support::{
    self, bin, program_ids_of, shared, signal, spawn_watch, wait_exit, wait_unloaded,
};

fn sockmon() -> Cmd {
    Cmd::new(bin())
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_the_commands_and_flags() {
    let _turn = shared();
    let out = sockmon().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("watch"), "{text}");
    let out = sockmon().args(["watch", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--json", "--pid", "--comm", "--port", "--proto", "--event"] {
        assert!(text.contains(flag), "watch --help lacks {flag}: {text}");
    }
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    let _turn = shared();
    let cases: &[(&[&str], &str)] = &[
        (&[], "Usage"),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&["watch", "--port", "70000"], "70000"),
        (&["watch", "--pid", "abc"], "invalid value 'abc'"),
        (&["watch", "--proto", "sctp"], "possible values: tcp, udp"),
        (
            &["watch", "--event", "open"],
            "possible values: bind, listen, connect, connect-result, accept, close",
        ),
        (
            &["watch", "--comm", "0123456789abcdefg"],
            "at most 15 bytes",
        ),
        (&["watch", "--ring-kib", "100"], "power of two"),
        (
            &["watch", "--no-such-flag"],
            "unexpected argument '--no-such-flag'",
        ),
    ];
    for (args, needle) in cases {
        let out = sockmon().args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains(needle),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }
}

#[test]
fn without_capabilities_watch_names_what_is_missing_and_exits_2() {
    let _turn = shared();
    // Root with an empty bounding set has no effective capabilities after exec.
    let out = Command::new("setpriv")
        .args([
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
            bin(),
            "watch",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(err.contains(cap), "{err}");
    }
}

/// Makes one connection to a fresh listener; returns (listener port, client port).
fn one_connection() -> (u16, u16, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let cport = client.local_addr().unwrap().port();
    drop(client);
    drop(accepted);
    (port, cport, listener)
}

#[test]
fn watch_json_matches_the_schema_and_ends_cleanly_on_sigterm() {
    let _turn = shared();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../schema/event.v2.json")).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("valid schema");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut child, _err) = spawn_watch(&["--json", "--port", &port.to_string()]);
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cport = client.local_addr().unwrap().port();
    let (accepted, _) = listener.accept().unwrap();
    drop(client);
    drop(accepted);

    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let closes = |seen: &[serde_json::Value]| seen.iter().filter(|v| v["event"] == "close").count();
    while closes(&seen) < 2 && seen.len() < 16 && Instant::now() < deadline {
        let line = lines.next().expect("stdout open").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line} violates the schema: {errors:?}");
        seen.push(v);
    }
    let pid = std::process::id();
    let find = |event: &str, src: u16| {
        seen.iter()
            .find(|v| v["event"] == event && v["src_port"] == src)
            .unwrap_or_else(|| panic!("no {event} from port {src} in {seen:#?}"))
    };
    let connect = find("connect", cport);
    assert_eq!(connect["pid"], pid);
    assert_eq!(connect["dst_port"], port);
    assert_eq!(connect["src_ip"], "127.0.0.1");
    assert_eq!(connect["family"], "ipv4");
    assert!(connect["error"].is_null());
    let accept = find("accept", port);
    assert_eq!(accept["dst_port"], cport);
    assert_eq!(accept["pid"], pid);
    assert_eq!(find("close", cport)["dst_port"], port);
    assert_eq!(find("close", port)["dst_port"], cport);
    assert!(
        seen.iter()
            .all(|v| v["src_port"] == port || v["dst_port"] == port)
    );

    let ids = program_ids_of(child.id());
    assert!(ids.len() >= 14, "the watcher holds its programs: {ids:?}");
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(3));
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        wait_unloaded(&ids),
        Vec::<u32>::new(),
        "programs left loaded"
    );
}

#[test]
fn jq_reads_the_stream() {
    let _turn = shared();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut watch = Command::new(bin())
        .args([
            "watch",
            "--json",
            "--event",
            "connect",
            "--port",
            &port.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _err = support::wait_attached(watch.stderr.take().unwrap());
    let mut jq = Command::new("jq")
        .args([
            "-c",
            "--unbuffered",
            "{event, pid, src_ip, dst_port, error}",
        ])
        .stdin(watch.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("jq");
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let line = BufReader::new(jq.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        line,
        format!(
            r#"{{"event":"connect","pid":{},"src_ip":"127.0.0.1","dst_port":{port},"error":null}}"#,
            std::process::id()
        )
    );
    drop(client);
    signal(&watch, libc::SIGINT);
    assert_eq!(
        wait_exit(&mut watch, Duration::from_secs(3)).code(),
        Some(0)
    );
    assert!(jq.wait().unwrap().success());
}

#[test]
fn human_view_shows_one_aligned_line_and_the_errno_of_a_failed_connect() {
    let _turn = shared();
    // A bound, non-listening socket refuses connections.
    let refuser = socket2_bound();
    let port = refuser.1;
    let (mut child, _err) = spawn_watch(&["--port", &port.to_string()]);
    let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let pid = std::process::id();
    assert!(line.contains("  connect  tcp  127.0.0.1:"), "{line}");
    assert!(line.contains(&format!("→ 127.0.0.1:{port} ")), "{line}");
    assert!(line.contains(&format!("  pid {pid} ")), "{line}");
    // The attempt (in the socket attach mode it carries no errno), then its
    // outcome, with the errno and how long the refusal took.
    let outcome = lines.next().unwrap().unwrap();
    assert!(outcome.contains("  outcome  tcp  127.0.0.1:"), "{outcome}");
    assert!(
        outcome.contains(&format!("→ 127.0.0.1:{port} ")),
        "{outcome}"
    );
    assert!(outcome.contains(&format!("  pid {pid} ")), "{outcome}");
    assert!(outcome.contains("uid 0  ECONNREFUSED after "), "{outcome}");
    assert!(outcome.ends_with(" ms"), "{outcome}");
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(3)).code(),
        Some(0)
    );
    // SAFETY: closing our descriptor.
    unsafe { libc::close(refuser.0) };
}

/// A TCP socket bound to 127.0.0.1:0 and not listening: (fd, port).
fn socket2_bound() -> (i32, u16) {
    // SAFETY: plain socket syscalls with valid buffers.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(libc::bind(fd, (&raw const sa).cast(), len), 0);
        let mut out_len = len;
        libc::getsockname(fd, (&raw mut sa).cast(), &mut out_len);
        (fd, u16::from_be(sa.sin_port))
    }
}

#[test]
fn watch_piped_into_head_ends_quietly() {
    let _turn = shared();
    let err_path =
        std::env::temp_dir().join(format!("sockmon-head-test-{}.err", std::process::id()));
    let mut sh = Command::new("bash")
        .args([
            "-c",
            &format!(
                "set -o pipefail; {} watch 2>{} | head -3",
                bin(),
                err_path.display()
            ),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Make events until the pipeline ends (head exits after 3 lines, then
    // sockmon's next write hits a closed pipe).
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let _ = one_connection();
        if let Some(s) = sh.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "pipeline did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::io::read_to_string(sh.stdout.take().unwrap()).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    let _ = std::fs::remove_file(&err_path);
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(!err.contains("error") && !err.contains("panick"), "{err}");
}

#[test]
fn modes_tries_each_mode_and_auto_takes_the_first_that_loads() {
    let _turn = shared();
    // `sockmon modes` loads each mode for real. Whatever this kernel
    // allows, the report must be consistent: every mode is listed, a mode
    // that loads names the family behind each event kind (kernel-function
    // hooks for the four kinds they serve, in `kfunc`), a refused one says
    // why, and `auto` is the first of kfunc, socket, syscalls that loads.
    let out = sockmon().args(["modes", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let modes = v["modes"].as_object().unwrap();
    let names: Vec<&str> = modes.keys().map(String::as_str).collect();
    assert_eq!(names, ["kfunc", "socket", "syscalls"]);
    let kinds = [
        "accept",
        "bind",
        "close",
        "connect",
        "connect_result",
        "listen",
        "udp_implicit_bind",
    ];
    for (name, m) in modes {
        if m["available"] == true {
            assert!(m["reason"].is_null(), "{name}: {m}");
            let k = m["kinds"].as_object().unwrap();
            assert_eq!(k.keys().map(String::as_str).collect::<Vec<_>>(), kinds);
            for kind in ["bind", "listen", "connect", "accept", "connect_result"] {
                let want = match name.as_str() {
                    // Trampolines, or the kprobe variant where only kprobes load.
                    "kfunc" if k[kind] == "kprobe" => "kprobe",
                    "kfunc" => "kfunc",
                    "socket" => "socket",
                    _ => "syscalls",
                };
                let want = if kind == "connect_result" && want == "syscalls" {
                    "socket" // the record `sock_ops` keeps, in every mode but kfunc
                } else {
                    want
                };
                assert_eq!(k[kind], want, "{name}: {kind}");
            }
            assert_eq!(k["close"], "socket", "{name}");
            // `inet_autobind` may be inlined away: then the socket layer
            // reports implicit binds in `kfunc` too.
            let implicit = k["udp_implicit_bind"].as_str().unwrap();
            if name == "kfunc" {
                assert!(
                    ["kfunc", "kprobe", "socket"].contains(&implicit),
                    "{implicit}"
                );
            } else {
                assert_eq!(implicit, "socket", "{name}");
            }
        } else {
            assert_eq!(m["available"], false, "{name}: {m}");
            let why = m["reason"].as_str().unwrap();
            assert!(why.contains(&format!("`{name}` attach mode")), "{why}");
        }
    }
    // The socket layer and syscall tracepoints load on every kernel the
    // tests run on; kernel-function hooks only where trampolines do.
    assert_eq!(modes["socket"]["available"], true);
    assert_eq!(modes["syscalls"]["available"], true);
    let first = ["kfunc", "socket", "syscalls"]
        .into_iter()
        .find(|m| modes[*m]["available"] == true);
    assert_eq!(v["auto"].as_str(), first);
    if modes["kfunc"]["available"] == false {
        // A kernel without trampolines (this project's build machine): the
        // refusal names the program that failed, and `watch` in `auto`
        // says it fell back from kernel-function hooks to the socket layer.
        let why = modes["kfunc"]["reason"].as_str().unwrap();
        assert!(why.contains("program `kf_"), "{why}");
        let mut child = Command::new(bin())
            .args(["watch", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let first = BufReader::new(child.stderr.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("probes attached"));
        signal(&child, libc::SIGTERM);
        wait_exit(&mut child, support::scaled(Duration::from_secs(30)));
        let first = first.expect("watch's first line");
        assert!(
            first.contains("attach mode socket (")
                && first.contains("bind=socket")
                && first
                    .contains("fell back from kernel-function hooks (`sockmon modes` says why)")
                && !first.contains("error"),
            "{first}"
        );
    }
}
