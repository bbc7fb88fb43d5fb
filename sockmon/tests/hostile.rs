//! Layer 4, hostile input: process names are bytes any user controls.
//! Real processes named with terminal escape sequences, newlines and invalid
//! UTF-8 (through `prctl(PR_SET_NAME)` and through the executable's file
//! name) make real connections; `watch --json` must stay one valid object
//! per line carrying the exact bytes, and the human view must never pass a
//! control byte to the terminal.

mod support;

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _},
    net::{TcpListener, TcpStream},
    os::unix::ffi::OsStrExt as _,
    process::Command,
    time::Duration,
};

use support::{exclusive, signal, spawn_watch, wait_exit};

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

/// The JSON form of a comm: valid UTF-8 as is, other bytes as the text `\xNN`.
fn json_form(name: &[u8]) -> String {
    let mut out = String::new();
    for chunk in name.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[test]
fn json_carries_hostile_names_exactly_one_object_per_line() {
    let _g = exclusive();
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
    let _g = exclusive();
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
    assert!(text.contains("(\\x1b[31mred\\x1b[0m)"), "{text}");
    assert!(text.contains("(\\x1b]0;pwn\\x07\\x0a)"), "{text}");
    assert!(text.contains("(bad\\xff\\xfeutf8)"), "{text}");
    assert!(text.contains("(\\x1b[2J\\x07ev\\xffil\\x0ax)"), "{text}");
    assert_eq!(text.lines().count(), NAMES.len() + 1);
    let _ = std::fs::remove_dir_all(&dir);
}
