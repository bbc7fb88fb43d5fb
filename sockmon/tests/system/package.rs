//! Layer 4: the Debian package, installed for real. Needs root.
//!
//! The `.deb` that `cargo xtask package` builds (handed over in
//! `SOCKMON_DEB` by `cargo xtask test`; built here with it otherwise) is
//! installed with `dpkg -i` inside the real-systemd sandbox of the systemd
//! test (an overlay of `/` whose writes land in a tmpfs: dpkg's database,
//! `/usr/bin`, `/etc` of the host are never touched). Then, as an
//! administrator would: nothing enabled or started by the install, the
//! group made; `systemctl start sockmon`; `sockmon status` and a lookup of
//! this process's connection through the installed binary; the daemon's
//! records in the journal as structured native entries at the right
//! priorities; `man sockmon`; bash completion through bash-completion's own
//! loader; `systemctl stop`; and `dpkg --purge` (of a running service, with
//! an edited conffile): every file, the configuration and the unit gone.

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    support::{bin, shared},
    systemd::{
        host::{self, HostState, program_ids_held_by},
        repo,
        sandbox::{Limits, Sandbox},
    },
};

/// Generous: CI machines have 2 cores and run other tests meanwhile.
const LIMITS: Limits = Limits {
    boot: Duration::from_secs(180),
    command: Duration::from_secs(180),
};
/// Where the package puts the binary.
const SOCKMON: &str = "/usr/bin/sockmon";
/// dpkg and the maintainer scripts need the sbin directories (ldconfig, groupadd).
const SBIN_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// What the package installs (besides the man pages and docs).
const PACKAGED: &[&str] = &[
    "/usr/bin/sockmon",
    "/lib/systemd/system/sockmon.service",
    "/etc/sockmon/config.toml",
    "/usr/share/man/man8/sockmon.8.gz",
    "/usr/share/man/man8/sockmon-watch.8.gz",
    "/usr/share/man/man8/sockmon-daemon.8.gz",
    "/usr/share/bash-completion/completions/sockmon",
    "/usr/share/zsh/vendor-completions/_sockmon",
    "/usr/share/fish/vendor_completions.d/sockmon.fish",
    "/usr/share/doc/sockmon/copyright",
];

/// The `.deb` under test: `SOCKMON_DEB`, or built now by `cargo xtask package`.
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("SOCKMON_DEB") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "SOCKMON_DEB={} is not a file", p.display());
        return p;
    }
    let out_dir = repo().join("target/debian-test");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args(["run", "--quiet", "-p", "xtask", "--", "package", "--output"])
        .arg(&out_dir)
        .output()
        .expect("cannot run cargo xtask package");
    assert!(
        out.status.success(),
        "cargo xtask package failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.is_file(),
        "cargo xtask package named {}",
        path.display()
    );
    path
}

#[test]
fn deb_installs_runs_documents_completes_and_purges() {
    let _turn = shared();
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    let deb = deb();
    println!("package under test: {}", deb.display());
    let fields = control_fields(&deb);
    assert_eq!(fields("Package"), "sockmon");
    assert_eq!(
        fields("Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    // Nothing of Rust: the binary's needs are Debian's base libraries.
    let depends = fields("Depends");
    println!("Depends: {depends}");
    for dep in depends.split(',').map(str::trim) {
        let name = dep.split_whitespace().next().unwrap_or_default();
        assert!(
            ["libc6", "libgcc-s1"].contains(&name),
            "unexpected dependency {dep:?} in {depends:?}"
        );
    }

    let host = HostState::capture();
    {
        let bin_dir = Path::new(bin()).parent().unwrap().display().to_string();
        let deb_dir = deb.parent().unwrap().display().to_string();
        let sb = Sandbox::boot(
            "deb",
            &[("SDTEST_BIND", &format!("{bin_dir}:{deb_dir}"))],
            LIMITS,
        );
        let absent = sb.run(&["test", "-e", SOCKMON]);
        assert!(
            !absent.ok(),
            "{SOCKMON} exists in the sandbox before the install"
        );

        let install = sb.run(&["env", SBIN_PATH, "dpkg", "-i", deb.to_str().unwrap()]);
        assert!(install.ok(), "dpkg -i failed:\n{}", install.all());
        for path in PACKAGED {
            let t = sb.run(&["test", "-f", path]);
            assert!(t.ok(), "{path} is not installed");
        }
        let conffiles = sb.run(&["dpkg-query", "-W", "-f", "${Conffiles}", "sockmon"]);
        assert!(
            conffiles.stdout.contains("/etc/sockmon/config.toml "),
            "the configuration is not a conffile: {}",
            conffiles.all()
        );
        // The maintainer scripts made the group, and enabled and started nothing.
        let group = sb.run(&["getent", "group", "sockmon"]);
        assert!(
            group.ok(),
            "no group sockmon after the install:\n{}",
            group.all()
        );
        let enabled = sb.run(&["systemctl", "is-enabled", "sockmon"]);
        assert_eq!(enabled.stdout.trim(), "disabled", "{}", enabled.all());
        let active = sb.run(&["systemctl", "is-active", "sockmon"]);
        assert_eq!(active.stdout.trim(), "inactive", "{}", active.all());
        let unit = sb.run(&["systemctl", "cat", "sockmon"]);
        assert!(
            unit.stdout
                .contains("\nExecStart=/usr/bin/sockmon daemon\n"),
            "{}",
            unit.all()
        );

        // Start, and query it with the installed binary.
        let start = sb.run(&["systemctl", "start", "sockmon"]);
        assert!(
            start.ok(),
            "systemctl start failed:\n{}\n{}",
            start.all(),
            sb.diagnostics()
        );
        let main_pid: u32 = sb.show(&["MainPID"])["MainPID"].parse().unwrap();
        let status = sb.run(&[SOCKMON, "status", "--json"]);
        assert!(status.ok(), "{}", status.all());
        let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        assert_eq!(s["version"], env!("CARGO_PKG_VERSION"), "{s}");
        assert_eq!(s["probes_attached"], true, "{s}");
        let human = sb.run(&[SOCKMON, "status"]);
        assert!(human.stdout.contains("probes attached"), "{}", human.all());
        lookup_finds_this_process(&sb);

        journal_has_structured_records(&sb, main_pid);
        man_pages_work(&sb);
        bash_completes(&sb);

        let stop = sb.run(&["systemctl", "stop", "sockmon"]);
        assert!(stop.ok(), "systemctl stop failed:\n{}", stop.all());
        let show = sb.show(&["ActiveState", "Result"]);
        assert_eq!(
            (show["ActiveState"].as_str(), show["Result"].as_str()),
            ("inactive", "success"),
            "{show:?}\n{}",
            sb.diagnostics()
        );

        // Purge while it runs again: prerm stops it, its programs go.
        let start = sb.run(&["systemctl", "start", "sockmon"]);
        assert!(start.ok(), "{}\n{}", start.all(), sb.diagnostics());
        let main_pid: u32 = sb.show(&["MainPID"])["MainPID"].parse().unwrap();
        let daemon = sb.host_pid(main_pid).expect("the daemon's PID on the host");
        let held = program_ids_held_by(daemon);
        assert!(!held.is_empty(), "the daemon holds no BPF program");
        let purge = sb.run(&["env", SBIN_PATH, "dpkg", "--purge", "sockmon"]);
        assert!(purge.ok(), "dpkg --purge failed:\n{}", purge.all());
        println!("{}", purge.all());
        for path in PACKAGED
            .iter()
            .chain(&["/etc/sockmon", "/usr/share/doc/sockmon"])
        {
            let t = sb.run(&["test", "-e", path]);
            assert!(!t.ok(), "{path} is still there after the purge");
        }
        let gone = sb.run(&["dpkg-query", "-W", "sockmon"]);
        assert!(!gone.ok(), "dpkg still knows sockmon:\n{}", gone.all());
        let load = sb.show(&["LoadState", "ActiveState"]);
        assert_eq!(
            (load["LoadState"].as_str(), load["ActiveState"].as_str()),
            ("not-found", "inactive"),
            "{load:?}"
        );
        host::wait_programs_gone(&held, "the purged service");
        sb.power_off();
    }
    host.assert_unchanged();
}

/// `dpkg-deb -f DEB FIELD`, as a function of the field.
fn control_fields(deb: &Path) -> impl Fn(&str) -> String + '_ {
    move |field| {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .arg(field)
            .output()
            .expect("dpkg-deb (package dpkg)");
        assert!(out.status.success(), "dpkg-deb -f {field}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A connection this process makes is found through the installed service,
/// with this process's PID.
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
            let out = sb.run(&[SOCKMON, "lookup", &src, &dst, "--proto", "tcp", "--json"]);
            (out.ok() && !out.stdout.trim().is_empty()).then_some(out.stdout)
        },
    );
    let rows: Vec<serde_json::Value> = answer
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{answer}");
    let s = &rows[0];
    assert_eq!(s["src_port"], u64::from(local.port()), "{s}");
    assert_eq!(s["dst_port"], u64::from(server.port()), "{s}");
    let acting: Vec<&serde_json::Value> = s["owners"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["source"] == "event")
        .collect();
    assert_eq!(acting.len(), 1, "{s}");
    assert_eq!(acting[0]["pid"], std::process::id(), "{s}");
    drop(client);
}

/// The journal's entries of the daemon (`journalctl -u sockmon -o json`).
fn journal(sb: &Sandbox) -> Vec<serde_json::Value> {
    let j = sb.run(&["journalctl", "--no-pager", "-u", "sockmon", "-o", "json"]);
    assert!(j.ok(), "{}", j.all());
    j.stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Native journal entries (not lines scraped from stderr), with the event's
/// fields as `SOCKMON_*`, the module as `TARGET`, and INFO at priority 6;
/// an ERROR (a reload with a broken configuration) at priority 3.
fn journal_has_structured_records(sb: &Sandbox, main_pid: u32) {
    let entry_with = |entries: &[serde_json::Value], text: &str| {
        entries
            .iter()
            .find(|e| e["MESSAGE"].as_str().is_some_and(|m| m.starts_with(text)))
            .cloned()
    };
    let ready = sb.wait_for(Duration::from_secs(30), "the ready record", || {
        entry_with(&journal(sb), "sockmon daemon ready")
    });
    println!("ready record: {ready}");
    assert_eq!(ready["_TRANSPORT"], "journal", "{ready}");
    assert_eq!(ready["_PID"], main_pid.to_string(), "{ready}");
    assert_eq!(ready["PRIORITY"], "6", "{ready}");
    assert_eq!(ready["TARGET"], "sockmon::daemon", "{ready}");
    assert_eq!(ready["SOCKMON_API"], "/run/sockmon/sockmon.sock", "{ready}");
    let sockets: u64 = ready["SOCKMON_SOCKETS"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no SOCKMON_SOCKETS: {ready}"));
    assert!(sockets >= 1, "{ready}");

    // A broken configuration: the reload is refused, at priority err.
    let broken = sb.run(&[
        "sh",
        "-c",
        "echo 'this is = = not toml' >> /etc/sockmon/config.toml",
    ]);
    assert!(broken.ok(), "{}", broken.all());
    let reload = sb.run(&["systemctl", "reload", "sockmon"]);
    assert!(reload.ok(), "{}", reload.all());
    let refused = sb.wait_for(Duration::from_secs(30), "the refused reload", || {
        entry_with(&journal(sb), "configuration not reloaded")
    });
    println!("refused reload: {refused}");
    assert_eq!(refused["PRIORITY"], "3", "{refused}");
    assert_eq!(refused["_TRANSPORT"], "journal", "{refused}");
    assert_eq!(sb.show(&["ActiveState"])["ActiveState"], "active");
    // Leave an edited but valid conffile: the purge must remove it too.
    let edit = sb.run(&[
        "sed",
        "-i",
        "s/^this is = = not toml$/# edited by the package test/",
        "/etc/sockmon/config.toml",
    ]);
    assert!(edit.ok(), "{}", edit.all());
}

/// `man sockmon` and a subcommand's page, found where man looks.
fn man_pages_work(sb: &Sandbox) {
    let path = sb.run(&["man", "-w", "sockmon"]);
    assert_eq!(
        path.stdout.trim(),
        "/usr/share/man/man8/sockmon.8.gz",
        "{}",
        path.all()
    );
    let page = sb.run(&[
        "env",
        "LC_ALL=C",
        "MANWIDTH=100",
        "man",
        "-P",
        "cat",
        "sockmon",
    ]);
    assert!(page.ok(), "{}", page.all());
    // Justified text: compare with single spaces.
    let flat = page.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for text in [
        "sockmon - ",
        "SYNOPSIS",
        "sockmon-watch(8)",
        "sockmon-lookup(8)",
        "/etc/sockmon/config.toml",
        "journalctl -u sockmon",
    ] {
        assert!(
            flat.contains(text),
            "no {text:?} in man sockmon:\n{}",
            page.stdout
        );
    }
    let lookup = sb.run(&[
        "env",
        "LC_ALL=C",
        "MANWIDTH=100",
        "man",
        "-P",
        "cat",
        "8",
        "sockmon-lookup",
    ]);
    assert!(lookup.ok(), "{}", lookup.all());
    assert!(lookup.stdout.contains("--netns"), "{}", lookup.stdout);
}

/// bash-completion loads the installed file on demand (`complete -p`
/// names its function), which completes subcommands, flags and values.
fn bash_completes(sb: &Sandbox) {
    let script = r#"
. /usr/share/bash-completion/bash_completion
_completion_loader sockmon
complete -p sockmon
try() {
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    _sockmon sockmon "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    echo "$*| $(compgen -W "${COMPREPLY[*]}" | sort | tr '\n' ' ')"
}
try sockmon wa
try sockmon l
try sockmon watch --js
try sockmon watch --proto ''
"#;
    let out = sb.run(&["bash", "--norc", "--noprofile", "-c", script]);
    assert!(out.ok(), "{}", out.all());
    println!("bash completion:\n{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim_end).collect();
    assert!(
        lines[0].starts_with("complete ")
            && lines[0].contains(" -F _sockmon ")
            && lines[0].ends_with(" sockmon"),
        "{}",
        out.all()
    );
    assert_eq!(
        &lines[1..],
        [
            "sockmon wa| watch",
            "sockmon l| lookup ls",
            "sockmon watch --js| --json",
            "sockmon watch --proto | tcp udp",
        ],
        "{}",
        out.all()
    );
}
