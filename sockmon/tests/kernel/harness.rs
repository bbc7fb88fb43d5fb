//! One loaded copy of the real probes for the whole test binary.
//!
//! The attach mode comes from `SOCKMON_TEST_ATTACH` (`auto`, `socket`,
//! `syscalls`; default `auto`): `cargo xtask test` runs this binary once per
//! mode the kernel allows, and tests that assert a documented difference
//! between modes ask [`Harness::mode`].
//!
//! The first test to call [`harness`] loads and attaches the programs; a
//! background thread drains the ring buffer into a shared log and a
//! [`SocketTable`]. Tests make real sockets and wait for the events they
//! expect with [`Harness::expect`], which returns the first event matching
//! the test's predicate (the test then asserts pid, tid, addresses, ports
//! and inode exactly) and, when none comes, fails with every event the
//! process produced.
//!
//! Tests run in parallel threads of one process, so a `fork` copies every
//! descriptor the other tests hold at that moment: the child would become an
//! owner of their sockets in the table, and their close would happen at the
//! child's exit (wrongly attributed). So [`harness`] hands out a shared guard
//! and [`harness_forking`] an exclusive one: a test that forks runs alone,
//! and its children close every descriptor they were not given
//! ([`crate::sys::close_other_fds`]) before doing anything else.

use std::{
    net::SocketAddr,
    ops::Deref,
    os::fd::AsRawFd,
    sync::{
        Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard,
        RwLockWriteGuard, mpsc,
    },
    time::{Duration, Instant},
};

use sockmon::{
    event::{
        Event, ProcChange, Record,
        flow::{CloseStats, ExecCtx},
    },
    kernel::{AttachMode, LoadOptions, Probes, reader},
    table::SocketTable,
};

pub struct Harness {
    events: Mutex<Vec<Event>>,
    procs: Mutex<Vec<ProcChange>>,
    /// Flows (issue 13): counters read at release, in arrival order.
    pub close_stats: Mutex<Vec<CloseStats>>,
    /// Flows (issue 13): what processes became at exec.
    pub execs: Mutex<Vec<ExecCtx>>,
    arrived: Condvar,
    table: Mutex<SocketTable>,
    mode: OnceLock<AttachMode>,
    /// (event kind, the hook family reporting it) in the loaded mode.
    sources: OnceLock<Vec<(&'static str, &'static str)>>,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

/// Locks one of the harness's mutexes, ignoring poison (see [`Harness::table`]).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long an expected event may take to arrive.
const WAIT: Duration = Duration::from_secs(10);

/// Held by every running test: shared by those that do not fork, exclusive
/// for one that does.
static FORKS: RwLock<()> = RwLock::new(());

/// The harness, for a test that never forks (runs beside other such tests).
pub fn harness() -> Guard {
    let lock = FORKS.read().unwrap_or_else(|p| p.into_inner());
    Guard {
        _lock: Lock::Shared(lock),
        h: loaded(),
    }
}

/// The harness, for a test that forks: no other test runs meanwhile.
pub fn harness_forking() -> Guard {
    let lock = FORKS.write().unwrap_or_else(|p| p.into_inner());
    Guard {
        _lock: Lock::Exclusive(lock),
        h: loaded(),
    }
}

enum Lock {
    Shared(#[expect(dead_code, reason = "held for its drop")] RwLockReadGuard<'static, ()>),
    Exclusive(#[expect(dead_code, reason = "held for its drop")] RwLockWriteGuard<'static, ()>),
}

/// The loaded harness, and this test's share of [`FORKS`] until dropped.
pub struct Guard {
    _lock: Lock,
    h: &'static Harness,
}

impl Deref for Guard {
    type Target = Harness;

    fn deref(&self) -> &Harness {
        self.h
    }
}

fn loaded() -> &'static Harness {
    let h = HARNESS.get_or_init(|| Harness {
        events: Mutex::new(Vec::new()),
        procs: Mutex::new(Vec::new()),
        close_stats: Mutex::new(Vec::new()),
        execs: Mutex::new(Vec::new()),
        arrived: Condvar::new(),
        table: Mutex::new(SocketTable::new(1 << 16)),
        mode: OnceLock::new(),
        sources: OnceLock::new(),
    });
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| start(h));
    h
}

fn start(h: &'static Harness) {
    assert!(
        // SAFETY: no preconditions.
        unsafe { libc::geteuid() } == 0,
        "the kernel tests load eBPF programs and must run as root (use `cargo xtask test`)"
    );
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("probe-reader".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let attach = std::env::var("SOCKMON_TEST_ATTACH").unwrap_or_else(|_| "auto".into());
                let attach = AttachMode::from_name(&attach)
                    .unwrap_or_else(|| panic!("SOCKMON_TEST_ATTACH={attach}: not a mode"));
                let opts = LoadOptions {
                    attach,
                    ..LoadOptions::default()
                };
                let mut probes = match Probes::load(opts) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:?}")));
                        return;
                    }
                };
                let _ = h.mode.set(probes.mode());
                let _ = h.sources.set(
                    probes
                        .kind_sources()
                        .into_iter()
                        .map(|k| (k.kind, k.source))
                        .collect(),
                );
                eprintln!("kernel tests: attach mode {}", probes.mode().name());
                let ring = probes.take_ring().expect("ring buffer");
                let (tx, mut rx) = tokio::sync::mpsc::channel(64);
                tokio::spawn(reader::run(ring, tx, Duration::from_millis(5)));
                let _ = ready_tx.send(Ok(()));
                while let Some(batch) = rx.recv().await {
                    assert_eq!(batch.decode_errors, 0, "undecodable records");
                    let mut table = lock(&h.table);
                    let mut events = lock(&h.events);
                    let mut procs = lock(&h.procs);
                    for record in batch.events {
                        match record {
                            Record::Sock(e) => {
                                table.apply(&e);
                                events.push(e);
                            }
                            Record::Proc(p) => {
                                table.apply_proc(&p);
                                procs.push(p);
                            }
                            Record::CloseStats(s) => lock(&h.close_stats).push(s),
                            Record::ExecInfo(x) => lock(&h.execs).push(*x),
                        }
                    }
                    drop((table, events, procs));
                    h.arrived.notify_all();
                }
                drop(probes);
            });
        })
        .expect("spawn reader thread");
    ready_rx
        .recv()
        .expect("reader thread died")
        .unwrap_or_else(|e| panic!("loading the probes failed: {e}"));
}

impl Harness {
    /// The table the reader thread keeps. A test that failed while holding
    /// it must not take the reader, and every later test, down with it: the
    /// lock's poison is ignored (here and for every lock of the harness), so
    /// one failure shows as one failure.
    pub fn table(&self) -> MutexGuard<'_, SocketTable> {
        lock(&self.table)
    }

    /// The hook family (`kfunc`, `socket`, `syscalls`) that reports event
    /// `kind` (`bind`, `accept`, ...) in the loaded mode, as its records say
    /// it (`attach`): kernel-function hooks are `kfunc` whether trampolines
    /// or kprobes carry them.
    pub fn source(&self, kind: &str) -> &'static str {
        match self.hook(kind) {
            "kprobe" => "kfunc",
            other => other,
        }
    }

    /// What the loader says hooks `kind`: `kfunc` (trampolines), `kprobe`,
    /// `socket` or `syscalls`.
    pub fn hook(&self, kind: &str) -> &'static str {
        self.sources
            .get()
            .expect("the probes are loaded")
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no event kind `{kind}`"))
    }

    /// The concrete attach mode loaded (`kfunc`, `socket` or `syscalls`).
    pub fn mode(&self) -> AttachMode {
        *self.mode.get().expect("the probes are loaded")
    }

    /// Whether the syscall tracepoints report bind, listen, connect, accept.
    pub fn syscalls(&self) -> bool {
        self.mode() == AttachMode::Syscalls
    }

    /// Waits for an event matching `pred`; panics with every event of `pid`
    /// if none comes. It checks nothing else: the caller asserts the fields
    /// of the event it gets back (pid, tid, tuple, inode: [`assert_mine`]).
    pub fn expect(&self, what: &str, pid: u32, pred: impl Fn(&Event) -> bool) -> Event {
        self.expect_within(what, pid, WAIT, pred)
    }

    /// [`Harness::expect`] with a deadline of its own (for outcomes the
    /// kernel decides by a timer).
    pub fn expect_within(
        &self,
        what: &str,
        pid: u32,
        wait: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        let deadline = Instant::now() + wait;
        let mut events = lock(&self.events);
        loop {
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let mine: Vec<String> = events
                    .iter()
                    .filter(|e| e.pid == pid)
                    .map(|e| format!("{e:?}"))
                    .collect();
                panic!(
                    "no {what} event within {wait:?}; events of pid {pid}:\n{}",
                    mine.join("\n")
                );
            }
            events = self
                .arrived
                .wait_timeout(events, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits for a process record matching `pred`.
    pub fn expect_proc(&self, what: &str, pred: impl Fn(&ProcChange) -> bool) -> ProcChange {
        let deadline = Instant::now() + WAIT;
        let mut events = lock(&self.events);
        loop {
            if let Some(p) = lock(&self.procs).iter().find(|p| pred(p)) {
                return p.clone();
            }
            let now = Instant::now();
            assert!(now < deadline, "no {what} process record within {WAIT:?}");
            events = self
                .arrived
                .wait_timeout(events, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// All process records seen so far that match `pred`.
    pub fn procs_matching(&self, pred: impl Fn(&ProcChange) -> bool) -> Vec<ProcChange> {
        lock(&self.procs)
            .iter()
            .filter(|p| pred(p))
            .cloned()
            .collect()
    }

    /// All events seen so far that match `pred`.
    pub fn all(&self, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        lock(&self.events)
            .iter()
            .filter(|e| pred(e))
            .cloned()
            .collect()
    }
}

/// This thread's id.
pub fn gettid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// The socket inode of `fd` (`socket:[N]`).
pub fn inode_of(fd: &impl AsRawFd) -> u64 {
    // SAFETY: fstat into a zeroed stat buffer of a live descriptor.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::fstat(fd.as_raw_fd(), &mut st), 0);
        st.st_ino
    }
}

/// The inode of this process's network namespace.
pub fn my_netns() -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32
}

/// The cgroup v2 id (the inode of the cgroup directory) of this process.
pub fn my_cgroup_id() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let root = sockmon::kernel::cgroup::v2_root().unwrap();
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line in /proc/self/cgroup");
    std::fs::metadata(root.join(path.trim_start_matches('/')))
        .unwrap()
        .ino()
}

/// This thread's name as the kernel keeps it (`comm`, at most 15 bytes).
pub fn my_comm() -> Vec<u8> {
    let name = std::fs::read(format!("/proc/self/task/{}/comm", gettid())).unwrap();
    name.strip_suffix(b"\n").unwrap_or(&name).to_vec()
}

/// Asserts the identity fields every event of this thread must carry.
pub fn assert_mine(e: &Event, inode: u64) {
    assert_eq!(e.pid, std::process::id(), "pid of {e:?}");
    assert_eq!(e.tid, gettid(), "tid of {e:?}");
    assert_eq!(e.uid, 0, "uid of {e:?}");
    assert_eq!(e.comm.as_bytes(), my_comm(), "comm of {e:?}");
    assert_eq!(e.netns, my_netns(), "netns of {e:?}");
    assert_eq!(e.cgroup_id, my_cgroup_id(), "cgroup of {e:?}");
    assert_eq!(e.inode, inode, "inode of {e:?}");
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
