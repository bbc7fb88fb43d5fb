//! Layer 4: `sockmon top` read from a real terminal. A real daemon, a real
//! tmux (its own server socket) running a shell, `sockmon top` typed into
//! it; the screen is read with `capture-pane`. A child process with a
//! known pid and a hostile name (`ev\e[31mil`, an escape sequence) makes
//! three connections and keeps failing to connect to a closed port; the
//! test finds it (after typing a `/` filter), checks its counts, drills
//! into its connections (exact four-tuples), checks the Listeners view,
//! resizes the window, and ends `top` by `q`, by SIGTERM and by a SIGINT
//! that it inherited as ignored, checking each time that the shell gets
//! back a sane terminal (`stty -a`, no alternate screen); last, it checks
//! that `top` ends when its terminal disappears (tmux killed).
//!
//! The terminal test runs alone (`support::exclusive`): it checks the test
//! process's own row (its listeners and connections), which any other test
//! of the binary would change.

use std::{
    io::{BufRead as _, BufReader},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::support::{Daemon, bin, eventually_within, exclusive, shared};

const WAIT: Duration = Duration::from_secs(30);

/// A tmux server of our own with one session running a plain shell.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn start(dir: &Path, width: u16, height: u16) -> Tmux {
        let t = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let out = t
            .cmd()
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "top"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg("env PS1='top-test$ ' TERM=xterm-256color bash --norc --noprofile")
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux: {out:?}");
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "top", "-l", text]);
    }

    /// Presses keys by tmux name (`Enter`, `Escape`, `q`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn format(&self, f: &str) -> String {
        self.run(&["display-message", "-p", "-t", "top", f])
            .trim()
            .to_string()
    }

    /// Polls the screen until `f` accepts it; panics with the last screen.
    fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&str) -> Option<T>) -> T {
        let last = Mutex::new(String::new());
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually_within(what, WAIT, || {
                let s = self.screen();
                let r = f(&s);
                *last.lock().unwrap() = s;
                r
            })
        }));
        match found {
            Ok(v) => v,
            Err(_) => panic!(
                "timed out waiting for {what}; last screen:\n{}",
                last.lock().unwrap()
            ),
        }
    }

    fn alternate_screen(&self) -> bool {
        self.format("#{alternate_on}") == "1"
    }

    /// Runs `line` in the shell and waits for `top` to take the screen.
    fn start_top(&self, line: &str) {
        self.type_text(line);
        self.keys(&["Enter"]);
        eventually_within("top on the alternate screen", WAIT, || {
            self.alternate_screen().then_some(())
        });
        self.wait_for("top's header", |s| {
            s.contains("sockmon top · daemon").then_some(())
        });
    }

    /// After `top` ended: the shell is back, `top` exited with `rc`, and the
    /// terminal is in its normal (cooked, echoing) mode.
    fn check_sane(&self, rc: i32, mark: &str) {
        eventually_within("the normal screen back", WAIT, || {
            (!self.alternate_screen()).then_some(())
        });
        self.type_text(&format!("echo \"{mark} rc=$?\"; stty -a; echo {mark}-done"));
        self.keys(&["Enter"]);
        let s = self.wait_for("the shell's answer", |s| {
            s.lines()
                .any(|l| l.trim() == format!("{mark}-done"))
                .then(|| s.to_string())
        });
        assert!(s.contains(&format!("{mark} rc={rc}")), "exit status:\n{s}");
        let words: Vec<&str> = s.split_whitespace().collect();
        for on in [
            "icanon", "echo", "isig", "icrnl", "opost", "onlcr", "iexten",
        ] {
            assert!(words.contains(&on), "`{on}` is off after top:\n{s}");
            assert!(
                !words.contains(&format!("-{on}").as_str()),
                "`-{on}` after top:\n{s}"
            );
        }
        self.run(&["send-keys", "-t", "top", "clear", "Enter"]);
        self.run(&["clear-history", "-t", "top"]);
    }

    /// The pid of the shell's foreground child (`top`).
    fn child_of_shell(&self) -> i32 {
        let shell = self.format("#{pane_pid}");
        eventually_within("top's pid", WAIT, || {
            let c = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).ok()?;
            c.split_whitespace().next()?.parse().ok()
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The row of the Processes view whose PID column is `pid`, as its words:
/// PID NAME CONNS LISTEN CONN/S FAIL/S SENT/S RECV/S TOTAL.
fn process_row(screen: &str, pid: u32) -> Option<Vec<String>> {
    screen
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|w| w.len() == 9 && w[0] == pid.to_string())
}

struct Connector {
    child: Child,
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bash started through a symlink named `ev\e[31mil` (so that is its
/// comm): three connections to `port` held open, and a failed connect to
/// `closed` every 0.2 s, until its stdin closes. Only builtins: no forks.
fn connector(dir: &Path, port: u16, closed: u16) -> Connector {
    let link = dir.join("ev\x1b[31mil");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/bin/bash", &link).unwrap();
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} 4<>/dev/tcp/127.0.0.1/{port} 5<>/dev/tcp/127.0.0.1/{port}
         echo ready
         while read -t 0.2 -r line || [ $? -gt 128 ]; do
           {{ exec 6<>/dev/tcp/127.0.0.1/{closed}; }} 2>/dev/null
         done"
    );
    let mut child = Command::new(&link)
        .args(["--norc", "--noprofile", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the connector");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Connector { child }
}

#[test]
fn top_in_a_real_terminal_finds_a_known_process_and_restores_the_terminal() {
    let _turn = exclusive();
    let d = Daemon::start("top", &["--no-config"]);
    let dir = d.dir.clone();
    let me = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let accepted: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let keep = accepted.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().map_while(Result::ok) {
            keep.lock().unwrap().push(s);
        }
    });

    let tmux = Tmux::start(&dir, 120, 32);
    let top = format!("'{}' --socket '{}' top", bin(), d.socket.display());
    tmux.start_top(&top);
    // Subscribed before the connections are made, so they are counted.
    eventually_within("top subscribed", WAIT, || {
        (d.request(r#"{"op":"status"}"#)["status"]["subscribers"].as_u64() >= Some(1)).then_some(())
    });
    let c = connector(&dir, port, closed);
    let pid = c.child.id();
    let peers: Vec<u16> = eventually_within("three accepted", WAIT, || {
        let a = accepted.lock().unwrap();
        (a.len() == 3).then(|| a.iter().map(|s| s.peer_addr().unwrap().port()).collect())
    });

    // The `/` filter narrows the view to the connector.
    tmux.type_text("/");
    tmux.type_text(&format!("pid:{pid}"));
    tmux.keys(&["Enter"]);
    let row = tmux.wait_for("the connector's row with its counts", |s| {
        let w = process_row(s, pid)?;
        let failing = w[5].parse::<f64>().ok()? > 0.0;
        (w[2] == "3" && w[8] == "3" && failing && s.contains(&format!("filter: pid:{pid}")))
            .then_some(w)
    });
    // Escaped, not interpreted: the name is shown as text.
    assert_eq!(row[1], "ev\\x1b[31mil", "{row:?}");
    assert_eq!(row[3], "0", "listeners: {row:?}");
    assert!(row[4].parse::<f64>().unwrap() >= row[5].parse::<f64>().unwrap());
    assert_eq!((row[6].as_str(), row[7].as_str()), ("off", "off"));
    let s = tmux.screen();
    assert!(s.contains("1 processes") && s.contains("bytes: off"), "{s}");

    // Enter: its connections, exactly the three four-tuples.
    tmux.keys(&["Enter"]);
    let conns = tmux.wait_for("the connector's three connections", |s| {
        let mut rows: Vec<Vec<String>> = s
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter(|w| w.len() == 9 && w[0] == "tcp" && w[2] == format!("127.0.0.1:{port}"))
            .collect();
        rows.sort();
        (rows.len() == 3 && s.contains("3 open")).then_some(rows)
    });
    let mut want: Vec<String> = peers.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    want.sort();
    assert_eq!(conns.iter().map(|w| w[1].clone()).collect::<Vec<_>>(), want);
    for w in &conns {
        assert_eq!(
            (w[3].as_str(), w[7].as_str(), w[8].clone()),
            ("connected", "event", pid.to_string()),
            "{w:?}"
        );
    }

    // Esc: back; a new filter: the test process, which listens and accepted three.
    tmux.keys(&["Escape"]);
    tmux.wait_for("the processes view", |s| process_row(s, pid).map(|_| ()));
    tmux.type_text("/");
    for _ in 0..16 {
        tmux.keys(&["BSpace"]);
    }
    tmux.type_text(&format!("pid:{me}"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("the test process's row", |s| {
        let w = process_row(s, me)?;
        (w[2] == "3" && w[3] == "1" && w[8] == "3").then_some(())
    });

    // Listeners: the test's listener, with its class.
    tmux.keys(&["2"]);
    let class = if port < 49152 {
        "registered"
    } else {
        "dynamic"
    };
    let want = [
        "tcp".to_string(),
        "127.0.0.1".to_string(),
        port.to_string(),
        class.to_string(),
        "loopback".to_string(),
        me.to_string(),
    ];
    tmux.wait_for("the listener with its class", |s| {
        s.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .any(|w| w.len() >= 6 && w[..6] == want)
            .then_some(())
    });

    // Resize: the layout follows, columns that do not fit are dropped.
    tmux.keys(&["1"]);
    tmux.run(&["resize-window", "-t", "top", "-x", "60", "-y", "16"]);
    tmux.wait_for("the narrow layout", |s| {
        let widest = s.lines().map(|l| l.chars().count()).max()?;
        let head = s.lines().find(|l| l.contains("PID"))?;
        let row = s
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&me.to_string()))?;
        (widest <= 60 && head.contains("CONNS") && !head.contains("SENT/S") && row.contains('3'))
            .then_some(())
    });
    tmux.run(&["resize-window", "-t", "top", "-x", "120", "-y", "32"]);
    tmux.wait_for("the wide layout again", |s| {
        s.lines()
            .find(|l| l.contains("PID"))
            .filter(|h| h.contains("SENT/S"))
            .map(|_| ())
    });

    // `q` quits and gives the terminal back.
    tmux.keys(&["?"]);
    tmux.wait_for("the help", |s| s.contains("this help").then_some(()));
    tmux.keys(&["Escape"]);
    tmux.keys(&["q"]);
    tmux.check_sane(0, "after-q");

    // SIGTERM.
    tmux.start_top(&top);
    let top_pid = tmux.child_of_shell();
    // SAFETY: signalling the process we started in our tmux.
    assert_eq!(unsafe { libc::kill(top_pid, libc::SIGTERM) }, 0);
    tmux.check_sane(0, "after-term");

    // SIGINT, inherited as ignored (as under `nohup` or a script's `&`).
    tmux.start_top(&format!("(trap '' INT; exec {top})"));
    let top_pid = tmux.child_of_shell();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(top_pid, libc::SIGINT) }, 0);
    tmux.check_sane(0, "after-int");

    // The terminal itself goes away (the emulator dies): top ends too.
    tmux.start_top(&top);
    let top_pid = tmux.child_of_shell();
    drop(tmux);
    eventually_within("top gone with its terminal", WAIT, || {
        (!Path::new(&format!("/proc/{top_pid}")).exists()).then_some(())
    });
    drop(c);
}

#[test]
fn without_a_terminal_or_with_a_bad_filter_top_says_why() {
    let _turn = shared();
    let out = Command::new(bin())
        .args(["--socket", "/nonexistent/api.sock", "top"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`top` needs a terminal"), "{err}");
    let out = Command::new(bin())
        .args(["top", "--filter", "port:http"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--filter: `port:http`: not a port"), "{err}");
}
