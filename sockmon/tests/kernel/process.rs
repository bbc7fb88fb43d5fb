//! Process records (fork, exit), the process identity on socket events
//! (leader name, start time), and what they do to the table's owners.

use std::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use sockmon::{
    event::{EventKind, start_ticks},
    table::OwnerSource,
};

use std::os::fd::AsRawFd as _;

use crate::harness::{harness, harness_forking, inode_of};

/// Field 22 of /proc/PID/stat (start time in clock ticks).
fn proc_start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(19).unwrap().parse().unwrap()
}

fn proc_comm(pid: u32) -> Vec<u8> {
    let c = std::fs::read(format!("/proc/{pid}/comm")).unwrap();
    c.strip_suffix(b"\n").unwrap_or(&c).to_vec()
}

#[test]
fn events_carry_the_leader_name_and_the_process_start_time() {
    let h = harness();
    let pid = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("dialer-thread".into())
        .spawn(move || tx.send(TcpStream::connect(addr).unwrap()).unwrap())
        .unwrap();
    let client = rx.recv().unwrap();
    let ci = inode_of(&client);
    let e = h.expect("connect", pid, |e| {
        e.kind == EventKind::Connect && e.inode == ci
    });
    assert_eq!(e.comm.as_bytes(), b"dialer-thread");
    assert_eq!(e.process_comm.as_bytes(), proc_comm(pid));
    assert_eq!(start_ticks(e.start_ns), proc_start_ticks(pid));
}

#[test]
fn a_forked_child_inherits_and_its_exit_removes_it() {
    let h = harness_forking();
    let pid = std::process::id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let li = inode_of(&listener);
    h.expect("listen", pid, |e| {
        e.kind == EventKind::Listen && e.inode == li
    });
    // The child keeps only the listener, then pauses until killed.
    let child = crate::sys::fork_keeping(&[listener.as_raw_fd()]);
    if child == 0 {
        loop {
            // SAFETY: async-signal-safe.
            unsafe { libc::pause() };
        }
    }
    let child = ChildGuard(child);
    let cpid = child.0 as u32;
    let fork = h.expect_proc("fork", |p| p.kind == EventKind::Fork && p.pid == cpid);
    assert_eq!(fork.actor, pid);
    assert_eq!(start_ticks(fork.start_ns), proc_start_ticks(cpid));
    // Earlier tests' children may have inherited the listener's inode
    // number... no: inodes are unique while the socket lives, and forking
    // tests run alone. Still check our two owners by pid.
    let owners = |h: &crate::harness::Harness| -> Vec<(u32, OwnerSource)> {
        let t = h.table();
        t.get(li)
            .unwrap()
            .owners
            .iter()
            .map(|o| (o.pid, o.source))
            .collect()
    };
    assert_eq!(
        owners(&h),
        [(pid, OwnerSource::Event), (cpid, OwnerSource::Inherited)]
    );

    drop(child); // SIGKILL and reap
    let exit = h.expect_proc("exit", |p| p.kind == EventKind::Exit && p.pid == cpid);
    assert_eq!(exit.actor, cpid);
    assert_eq!(owners(&h), [(pid, OwnerSource::Event)]);
    // The listener lives on in the parent: no close.
    assert!(
        h.all(|e| e.kind == EventKind::Close && e.inode == li)
            .is_empty()
    );
}

/// Kills and reaps a forked child when dropped (also when a test fails).
struct ChildGuard(i32);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

#[test]
fn a_new_thread_is_not_a_fork() {
    let h = harness_forking();
    let pid = std::process::id();
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    // The thread lives until the check: once it ended, any process on the
    // machine could be given its id by a fork of its own.
    let thread = std::thread::spawn(move || {
        tx.send(crate::harness::gettid()).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    // A later fork proves the records up to here were read.
    // The child exits at once.
    let child = crate::sys::fork_keeping(&[]);
    if child == 0 {
        // SAFETY: async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    h.expect_proc("fork", |p| {
        p.kind == EventKind::Fork && p.pid == child as u32
    });
    assert!(
        h.procs_matching(|p| p.kind == EventKind::Fork && p.pid == tid)
            .is_empty()
    );
    drop(done_tx);
    thread.join().unwrap();
    let _ = pid;
}

/// Forks a child that connects to `server` and exits; returns its pid.
fn fork_connecting_child(server: std::net::SocketAddrV4) -> i32 {
    // The child only makes async-signal-safe calls, then _exit.
    let child = crate::sys::fork_keeping(&[]);
    if child == 0 {
        let fd = crate::sys::tcp_socket(0);
        let _ = crate::sys::connect(fd, server);
        // SAFETY: async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    child
}

#[test]
fn a_reused_pid_is_a_new_process_never_merged_with_the_old() {
    let h = harness_forking();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let std::net::SocketAddr::V4(server) = listener.local_addr().unwrap() else {
        unreachable!()
    };
    let first = fork_connecting_child(server);
    let a = h.expect("first connect", first as u32, |e| {
        e.kind == EventKind::Connect && e.pid == first as u32
    });
    // Ask the kernel to give the next process the same pid (other forks on
    // the machine may take it first: try a few times).
    let mut second = 0;
    for _ in 0..20 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (first - 1).to_string()).unwrap();
        second = fork_connecting_child(server);
        if second == first {
            break;
        }
    }
    assert_eq!(second, first, "could not get pid {first} again");
    let b = h.expect("second connect", first as u32, |e| {
        e.kind == EventKind::Connect && e.pid == first as u32 && e.start_ns != a.start_ns
    });
    assert!(b.start_ns > a.start_ns, "the second process started later");
    assert_ne!(b.inode, a.inode);
    // Each process exited: neither is left as an owner of anything.
    h.expect_proc("second exit", |p| {
        p.kind == EventKind::Exit && p.pid == first as u32 && p.start_ns == b.start_ns
    });
    let t = h.table();
    assert!(
        t.process(first as u32)
            .is_none_or(|p| p.start_ticks != start_ticks(a.start_ns))
    );
}
