//! Layer 4, hostile input: process names are bytes any user controls.
//! Real processes named with terminal escape sequences, newlines and invalid
//! UTF-8 (through `prctl(PR_SET_NAME)` and through the executable's file
//! name) make real connections; `watch --json` must stay one valid object
//! per line carrying the exact bytes, and the human view must never pass a
//! control byte to the terminal.
//!
//! Through a daemon (issue 12): a name with table punctuation (`x[1], sshd`)
//! must not pass for a second owner in `ls`; zero-width and other format
//! characters are escaped; JSON tells the text `\xff` from the byte 0xFF;
//! an executable path that is not UTF-8 reaches `exe` exactly.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _},
    net::{TcpListener, TcpStream},
    os::unix::ffi::OsStrExt as _,
    process::Command,
    time::Duration,
};

use crate::support::{self, shared, signal, spawn_watch, wait_exit};

/// Names to try: (kernel comm bytes, at most 15).
const NAMES: [&[u8]; 4] = [
    b"\x1b[31mred\x1b[0m",
    b"\x1b]0;pwn\x07\n",
    b"a\nb\"}{\\",
    b"bad\xff\xfeutf8",
];

/// Connects to `port` from a thread whose name is `name`.
fn connect_named(name: &[u8], port: u16) {
    let name = name.to_vec();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        buf[..name.len()].copy_from_slice(&name);
        // SAFETY: PR_SET_NAME reads a NUL-terminated buffer of at most 16 bytes.
        assert_eq!(unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) }, 0);
        drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
    })
    .join()
    .unwrap();
}

/// The JSON form of a name (schema/event.v2.json `$defs/name`): valid
/// UTF-8 as is but a backslash doubled, other bytes as the text `\xNN`.
fn json_form(name: &[u8]) -> String {
    let mut out = String::new();
    for chunk in name.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[test]
fn json_carries_hostile_names_exactly_one_object_per_line() {
    let _turn = shared();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut child, _err) =
        spawn_watch(&["--json", "--event", "connect", "--port", &port.to_string()]);
    for name in NAMES {
        connect_named(name, port);
    }
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for _ in NAMES {
        let line = lines.next().unwrap().unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        seen.push(v["comm"].as_str().unwrap().to_string());
    }
    for name in NAMES {
        assert!(
            seen.contains(&json_form(name)),
            "{:?} not in {seen:?}",
            json_form(name)
        );
    }
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(3)).code(),
        Some(0)
    );
}

#[test]
fn the_human_view_never_passes_a_control_byte() {
    let _turn = shared();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // An executable whose own file name is hostile (comm comes from it at exec).
    let dir = std::env::temp_dir().join(format!("sockmon-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(OsStr::from_bytes(b"\x1b[2J\x07ev\xffil\nx"));
    std::fs::copy("/bin/bash", &exe).unwrap();
    let (mut child, _err) = spawn_watch(&["--event", "connect", "--port", &port.to_string()]);
    for name in NAMES {
        connect_named(name, port);
    }
    let status = Command::new(&exe)
        .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
        .status()
        .unwrap();
    assert!(status.success());
    let mut out = child.stdout.take().unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while text.iter().filter(|b| **b == b'\n').count() < NAMES.len() + 1 {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "watch ended early");
        text.extend_from_slice(&buf[..n]);
    }
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(3)).code(),
        Some(0)
    );
    for (i, b) in text.iter().enumerate() {
        assert!(
            *b == b'\n' || (*b >= 0x20 && *b != 0x7f),
            "control byte {b:#04x} at {i} in {:?}",
            String::from_utf8_lossy(&text)
        );
    }
    let text = String::from_utf8(text).expect("human output is valid UTF-8");
    assert!(text.contains("(\"\\x1b[31mred\\x1b[0m\")"), "{text}");
    assert!(text.contains("(\"\\x1b]0;pwn\\x07\\x0a\")"), "{text}");
    assert!(text.contains("(\"a\\x0ab\\\"}{\\\\\")"), "{text}");
    assert!(text.contains("(bad\\xff\\xfeutf8)"), "{text}");
    assert!(
        text.contains("(\"\\x1b[2J\\x07ev\\xffil\\x0ax\")"),
        "{text}"
    );
    assert_eq!(text.lines().count(), NAMES.len() + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `bash -c SCRIPT` from a copy of bash at `dir/name` (so its comm is
/// the file name), stdin piped (the script waits on it).
fn bash_named(dir: &std::path::Path, name: &[u8], script: &str) -> std::process::Child {
    let exe = dir.join(OsStr::from_bytes(name));
    std::fs::copy("/bin/bash", &exe).unwrap();
    Command::new(&exe)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// A python process that renames itself to `name` (prctl) and connects to
/// `port`, then waits on stdin.
fn python_named(name: &[u8], port: u16) -> std::process::Child {
    let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
    let src = format!(
        "import ctypes, socket, sys\n\
         ctypes.CDLL(None).prctl(15, bytes.fromhex('{hex}'), 0, 0, 0)\n\
         s = socket.create_connection(('127.0.0.1', {port}))\n\
         sys.stdin.read()\n"
    );
    Command::new("/usr/bin/python3")
        .args(["-c", &src])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn names_and_paths_cannot_forge_ls_and_json_keeps_their_exact_bytes() {
    let _turn = shared();
    let d = support::Daemon::start("hostile-ls", &["--no-config"]);
    let sock = d.socket.to_str().unwrap().to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("sockmon-hostile-ls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hold = format!("exec 3<>/dev/tcp/127.0.0.1/{port}; read");
    // A file name with table punctuation; one with a byte that is not
    // UTF-8, the text `\xff` and a zero-width space (Unicode Cf).
    let forger: &[u8] = b"x[1], sshd";
    let odd: &[u8] = b"e\xff\\xff\xe2\x80\x8b";
    let mut kids = vec![
        bash_named(&dir, forger, &hold),
        bash_named(&dir, odd, &hold),
    ];
    // prctl names: the text `t\xff` and `t` + the byte 0xFF.
    let (text, byte): (&[u8], &[u8]) = (b"t\\xff", b"t\xff");
    kids.push(python_named(text, port));
    kids.push(python_named(byte, port));
    let pids: Vec<u32> = kids.iter().map(|k| k.id()).collect();

    // Each client's connection, by owner pid, from `ls --json`.
    let ls = |human: bool| {
        let mut c = Command::new(support::bin());
        c.args(["--socket", &sock, "ls", "--port", &port.to_string()]);
        if !human {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        out.stdout
    };
    // Generous: four interpreters start and the /proc worker reads each.
    let limit = Duration::from_secs(60);
    let rows = support::eventually_within(
        "the four clients' connections with their exe",
        limit,
        || {
            let out = ls(false);
            let rows: Vec<serde_json::Value> = String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|v| v["dst_port"] == port)
                .collect();
            let owner = |pid: u32| {
                rows.iter()
                    .flat_map(|r| r["owners"].as_array().unwrap().iter())
                    .find(|o| o["pid"] == pid && o["comm"].is_string() && o["exe"].is_string())
                    .cloned()
            };
            pids.iter().map(|p| owner(*p)).collect::<Option<Vec<_>>>()
        },
    );
    assert_eq!(rows[0]["comm"], json_form(forger));
    assert_eq!(rows[1]["comm"], json_form(odd));
    assert_eq!(rows[1]["comm"], "e\\xff\\\\xff\u{200b}");
    assert_eq!(rows[2]["comm"], "t\\\\xff");
    assert_eq!(rows[3]["comm"], "t\\xff");
    assert_ne!(rows[2]["comm"], rows[3]["comm"]);
    // exe: the path's exact bytes, nothing replaced.
    let mut path = dir.as_os_str().as_bytes().to_vec();
    path.push(b'/');
    path.extend_from_slice(odd);
    assert_eq!(rows[1]["exe"], json_form(&path));
    assert!(!rows[1]["exe"].as_str().unwrap().contains('\u{fffd}'));

    // The human table: the punctuated name is one quoted owner.
    let text = String::from_utf8(ls(true)).expect("ls prints UTF-8");
    let line = text
        .lines()
        .find(|l| l.contains(&format!("[{}]", pids[0])))
        .unwrap_or_else(|| panic!("no row of pid {} in {text}", pids[0]));
    assert!(
        line.contains(&format!("\"x[1], sshd\"[{}]", pids[0])),
        "{line}"
    );
    assert!(!line.contains(", sshd["), "{line}");
    let line = text
        .lines()
        .find(|l| l.contains(&format!("[{}]", pids[1])))
        .unwrap();
    assert!(
        line.contains(&format!("e\\xff\\\\xff\\u{{200b}}[{}]", pids[1])),
        "{line}"
    );
    assert!(!line.contains('\u{200b}'), "{line}");
    for mut k in kids {
        drop(k.stdin.take());
        let _ = k.kill();
        let _ = k.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
