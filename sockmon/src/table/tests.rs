//! Unit tests of the table: socket lifecycle, owners, processes.

use super::*;
use crate::event::ProcChange;

use crate::event::testing::{comm, event as ev};

fn held(t: &SocketTable, pid: u32) -> Vec<u64> {
    let mut v: Vec<u64> = t.process(pid).unwrap().sockets.iter().copied().collect();
    v.sort();
    v
}

fn proc_change(kind: EventKind, actor: u32, pid: u32) -> ProcChange {
    ProcChange {
        kind,
        time: crate::clock::WallTime(0),
        pid,
        actor,
        start_ns: 1_000_000_000 * pid as u64,
        comm: comm(b"child"),
    }
}

fn key(src: &str, dst: &str) -> TupleKey {
    TupleKey::new(7, Proto::Tcp, src.parse().unwrap(), dst.parse().unwrap())
}

fn owner_pids(t: &SocketTable, inode: u64) -> Vec<(u32, OwnerSource)> {
    let mut v: Vec<_> = t
        .get(inode)
        .unwrap()
        .owners
        .iter()
        .map(|o| (o.pid, o.source))
        .collect();
    v.sort();
    v
}

#[test]
fn bind_listen_close_lifecycle() {
    let mut t = SocketTable::new(16);
    let a = ev(EventKind::Bind, 10, 100, "0.0.0.0:80", "0.0.0.0:0");
    assert_eq!(t.apply(&a), Change::Inserted);
    assert_eq!(
        t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0")),
        Change::Updated
    );
    let found: Vec<_> = t.lookup(&key("0.0.0.0:80", "0.0.0.0:0")).collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].state, SockState::Listening);
    assert_eq!(found[0].owners[0].pid, 100);
    let p = t.process(100).unwrap();
    assert_eq!((p.start_ticks, p.comm), (100 * 100, comm(b"proc")));
    assert_eq!(held(&t, 100), vec![10]);
    assert_eq!(
        t.apply(&ev(EventKind::Close, 10, 100, "0.0.0.0:80", "0.0.0.0:0")),
        Change::Removed
    );
    assert!(t.is_empty());
    assert_eq!(t.lookup(&key("0.0.0.0:80", "0.0.0.0:0")).count(), 0);
    assert!(
        t.process(100).is_none(),
        "a process holding nothing is forgotten"
    );
}

#[test]
fn accepted_socket_beside_its_listener() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(EventKind::Listen, 10, 100, "127.0.0.1:80", "0.0.0.0:0"));
    t.apply(&ev(
        EventKind::Accept,
        11,
        100,
        "127.0.0.1:80",
        "127.0.0.1:5555",
    ));
    assert_eq!(t.len(), 2);
    let a: Vec<_> = t.lookup(&key("127.0.0.1:80", "127.0.0.1:5555")).collect();
    assert_eq!(a[0].inode, 11);
    assert_eq!(a[0].state, SockState::Connected);
    assert_eq!(held(&t, 100), vec![10, 11]);
}

#[test]
fn reuseport_listeners_share_a_tuple() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Listen, 11, 101, "0.0.0.0:80", "0.0.0.0:0"));
    let mut pids: Vec<u32> = t
        .lookup(&key("0.0.0.0:80", "0.0.0.0:0"))
        .map(|e| e.owners[0].pid)
        .collect();
    pids.sort();
    assert_eq!(pids, vec![100, 101]);
    t.apply(&ev(EventKind::Close, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    assert_eq!(t.lookup(&key("0.0.0.0:80", "0.0.0.0:0")).count(), 1);
}

#[test]
fn connect_moves_the_socket_to_its_new_tuple() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(EventKind::Bind, 10, 100, "10.0.0.1:4000", "0.0.0.0:0"));
    t.apply(&ev(
        EventKind::Connect,
        10,
        100,
        "10.0.0.1:4000",
        "1.1.1.1:443",
    ));
    assert_eq!(t.lookup(&key("10.0.0.1:4000", "0.0.0.0:0")).count(), 0);
    assert_eq!(t.lookup(&key("10.0.0.1:4000", "1.1.1.1:443")).count(), 1);
}

#[test]
fn in_progress_connect_is_connecting_and_failures_change_nothing() {
    let mut t = SocketTable::new(16);
    let mut e = ev(EventKind::Connect, 10, 100, "10.0.0.1:4000", "1.1.1.1:443");
    e.error = Some(libc::EINPROGRESS);
    t.apply(&e);
    assert_eq!(t.get(10).unwrap().state, SockState::Connecting);
    let mut f = ev(EventKind::Connect, 12, 100, "10.0.0.1:4001", "1.1.1.1:443");
    f.error = Some(libc::ECONNREFUSED);
    assert_eq!(t.apply(&f), Change::Unchanged);
    assert!(t.get(12).is_none());
}

#[test]
fn a_second_process_acting_becomes_a_second_owner() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(EventKind::Bind, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Listen, 10, 200, "0.0.0.0:80", "0.0.0.0:0"));
    assert_eq!(
        owner_pids(&t, 10),
        vec![(100, OwnerSource::Event), (200, OwnerSource::Event)]
    );
}

#[test]
fn fork_makes_the_child_an_inherited_owner_that_survives_the_parent() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    assert_eq!(t.apply_proc(&proc_change(EventKind::Fork, 100, 200)), None);
    assert_eq!(
        owner_pids(&t, 10),
        vec![(100, OwnerSource::Event), (200, OwnerSource::Inherited)]
    );
    assert_eq!(t.process(200).unwrap().uid, 0);
    t.apply_proc(&proc_change(EventKind::Exit, 100, 100));
    assert_eq!(owner_pids(&t, 10), vec![(200, OwnerSource::Inherited)]);
    assert!(t.process(100).is_none());
    // The inherited owner acts: now it is certain.
    t.apply(&ev(EventKind::Accept, 11, 200, "0.0.0.0:80", "1.2.3.4:5"));
    t.apply(&ev(EventKind::Listen, 10, 200, "0.0.0.0:80", "0.0.0.0:0"));
    assert_eq!(owner_pids(&t, 10), vec![(200, OwnerSource::Event)]);
}

/// A parent (pid 100) with listeners 10 and 11, at an owner bound of 3,
/// forking children 201..=200+n.
fn forked(n: u32) -> SocketTable {
    let mut t = SocketTable::new(16);
    t.set_max_owners(3);
    t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Listen, 11, 100, "0.0.0.0:81", "0.0.0.0:0"));
    for child in 201..=200 + n {
        t.apply_proc(&proc_change(EventKind::Fork, 100, child));
    }
    t
}

#[test]
fn owners_past_the_bound_are_counted_not_listed() {
    let t = forked(10);
    for inode in [10, 11] {
        let e = t.get(inode).unwrap();
        assert_eq!(
            owner_pids(&t, inode),
            vec![
                (100, OwnerSource::Event),
                (201, OwnerSource::Inherited),
                (202, OwnerSource::Inherited)
            ]
        );
        assert_eq!(e.inherited_more, 8);
    }
    // Counted children share one set of what counts them.
    let a = &t.process(203).unwrap().collapsed;
    let b = &t.process(210).unwrap().collapsed;
    assert!(Arc::ptr_eq(a, b));
    assert_eq!(a.len(), 2);
    assert!(t.process(210).unwrap().sockets.is_empty());
    assert_eq!(t.process_count(), 11);
}

#[test]
fn a_counted_child_s_exit_exec_and_fork_keep_the_count_exact() {
    let mut t = forked(10);
    t.apply_proc(&proc_change(EventKind::Exit, 205, 205));
    assert_eq!(t.get(10).unwrap().inherited_more, 7);
    assert!(t.process(205).is_none());
    // A counted child forks: the grandchild is counted on the same sockets.
    t.apply_proc(&proc_change(EventKind::Fork, 206, 300));
    assert_eq!(t.get(10).unwrap().inherited_more, 8);
    assert_eq!(t.get(11).unwrap().inherited_more, 8);
    // A counted child execs and kept only 11.
    let req = t
        .apply_proc(&proc_change(EventKind::Exec, 207, 207))
        .unwrap();
    assert_eq!(req.inodes, vec![10, 11]);
    t.apply_verified(&req, &[11].into_iter().collect());
    assert_eq!(t.get(10).unwrap().inherited_more, 7);
    assert_eq!(t.get(11).unwrap().inherited_more, 8);
    // Everyone but the parent exits: nothing counted, nothing stale.
    for pid in (201..=210).chain([300]) {
        t.apply_proc(&proc_change(EventKind::Exit, pid, pid));
    }
    for inode in [10, 11] {
        assert_eq!(t.get(inode).unwrap().inherited_more, 0);
        assert_eq!(owner_pids(&t, inode), vec![(100, OwnerSource::Event)]);
    }
    assert_eq!(t.process_count(), 1);
}

#[test]
fn a_counted_owner_that_acts_takes_an_inherited_owner_s_place() {
    let mut t = forked(5);
    assert_eq!(t.get(10).unwrap().inherited_more, 3);
    t.apply(&ev(EventKind::Listen, 10, 204, "0.0.0.0:80", "0.0.0.0:0"));
    let owners = owner_pids(&t, 10);
    assert_eq!(owners.len(), 3);
    assert!(owners.contains(&(204, OwnerSource::Event)), "{owners:?}");
    assert!(owners.contains(&(100, OwnerSource::Event)), "{owners:?}");
    // 204 left the count, the displaced inherited owner joined it.
    assert_eq!(t.get(10).unwrap().inherited_more, 3);
    assert!(!t.process(204).unwrap().collapsed.contains(&10));
    assert!(t.process(204).unwrap().sockets.contains(&10));
    let displaced = [201, 202]
        .into_iter()
        .find(|p| !owners.iter().any(|(o, _)| o == p))
        .unwrap();
    assert!(t.process(displaced).unwrap().collapsed.contains(&10));
    assert!(!t.process(displaced).unwrap().sockets.contains(&10));
    // Its exit is taken off the count.
    t.apply_proc(&proc_change(EventKind::Exit, displaced, displaced));
    assert_eq!(t.get(10).unwrap().inherited_more, 2);
}

#[test]
fn fork_of_a_process_without_sockets_records_nothing() {
    let mut t = SocketTable::new(16);
    t.apply_proc(&proc_change(EventKind::Fork, 100, 200));
    assert_eq!(t.process_count(), 0);
}

#[test]
fn exec_asks_to_verify_and_drops_what_close_on_exec_closed() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Listen, 11, 100, "0.0.0.0:81", "0.0.0.0:0"));
    t.apply_proc(&proc_change(EventKind::Fork, 100, 200));
    let req = t
        .apply_proc(&proc_change(EventKind::Exec, 200, 200))
        .unwrap();
    assert_eq!(
        req,
        VerifyRequest {
            pid: 200,
            start_ticks: 200 * 100,
            inodes: vec![10, 11],
            clock: req.clock,
        }
    );
    t.apply_verified(&req, &[11].into_iter().collect());
    assert_eq!(owner_pids(&t, 10), vec![(100, OwnerSource::Event)]);
    assert_eq!(
        owner_pids(&t, 11),
        vec![(100, OwnerSource::Event), (200, OwnerSource::Inherited)]
    );
    assert_eq!(held(&t, 200), vec![11]);
}

#[test]
fn exit_leaves_an_ownerless_socket_until_its_close() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(
        EventKind::Connect,
        10,
        100,
        "10.0.0.1:4000",
        "1.1.1.1:443",
    ));
    t.apply_proc(&proc_change(EventKind::Exit, 100, 100));
    assert!(t.get(10).unwrap().owners.is_empty());
    t.apply(&ev(
        EventKind::Close,
        10,
        100,
        "10.0.0.1:4000",
        "1.1.1.1:443",
    ));
    assert!(t.get(10).is_none());
}

#[test]
fn a_reused_pid_is_a_new_process_never_merged_with_the_old() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    // pid 100 again, but started later: the old process is gone (its exit was missed).
    let mut e = ev(EventKind::Connect, 11, 100, "10.0.0.1:4000", "1.1.1.1:443");
    e.start_ns += 5_000_000_000;
    t.apply(&e);
    assert!(
        t.get(10).unwrap().owners.is_empty(),
        "old process's ownership dropped"
    );
    assert_eq!(t.process(100).unwrap().start_ticks, (100 + 5) * 100);
    assert_eq!(held(&t, 100), vec![11]);
    // An exit of the old incarnation does not touch the new one.
    t.apply_proc(&proc_change(EventKind::Exit, 100, 100));
    assert_eq!(owner_pids(&t, 11), vec![(100, OwnerSource::Event)]);
}

#[test]
fn full_table_evicts_oldest_and_counts() {
    let mut t = SocketTable::new(2);
    t.apply(&ev(EventKind::Bind, 1, 1, "0.0.0.0:1", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Bind, 2, 1, "0.0.0.0:2", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Bind, 3, 1, "0.0.0.0:3", "0.0.0.0:0"));
    assert_eq!(t.len(), 2);
    assert_eq!(t.evictions(), 1);
    assert!(t.get(1).is_none());
    assert!(t.get(2).is_some() && t.get(3).is_some());
    assert_eq!(held(&t, 1), vec![2, 3]);
}

#[test]
fn eviction_skips_entries_already_closed() {
    let mut t = SocketTable::new(2);
    t.apply(&ev(EventKind::Bind, 1, 1, "0.0.0.0:1", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Bind, 2, 1, "0.0.0.0:2", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Close, 1, 1, "0.0.0.0:1", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Bind, 3, 1, "0.0.0.0:3", "0.0.0.0:0"));
    assert_eq!(t.evictions(), 0);
    t.apply(&ev(EventKind::Bind, 4, 1, "0.0.0.0:4", "0.0.0.0:0"));
    assert_eq!(t.evictions(), 1);
    assert!(t.get(2).is_none());
}

#[test]
fn order_queue_stays_bounded_under_churn() {
    let mut t = SocketTable::new(8);
    for i in 1..100_000u64 {
        t.apply(&ev(EventKind::Bind, i, 1, "0.0.0.0:1", "0.0.0.0:0"));
        t.apply(&ev(EventKind::Close, i, 1, "0.0.0.0:1", "0.0.0.0:0"));
    }
    assert!(t.order.len() <= 2 * t.len() + 1025, "{}", t.order.len());
    assert!(t.is_empty());
    assert_eq!(t.process_count(), 0);
}

mod reconcile {
    use std::collections::HashMap;

    use super::*;
    use crate::snapshot::{ProcRow, Snapshot, SockRow};

    fn row(inode: u64, src: &str, dst: &str, state: u8) -> SockRow {
        SockRow {
            netns: 7,
            inode,
            proto: Proto::Tcp,
            family: Family::Ipv4,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            state,
            uid: 0,
        }
    }

    fn snapshot(rows: Vec<SockRow>, holders: &[(u64, &[u32])]) -> Snapshot {
        let holders: HashMap<u64, Vec<u32>> =
            holders.iter().map(|(i, p)| (*i, p.to_vec())).collect();
        let processes = holders
            .values()
            .flatten()
            .map(|pid| {
                (
                    *pid,
                    ProcRow {
                        pid: *pid,
                        comm: comm(b"snap"),
                        uid: 0,
                        start_ticks: *pid as u64 * 100,
                    },
                )
            })
            .collect();
        Snapshot {
            sockets: rows,
            holders,
            processes,
            ..Default::default()
        }
    }

    #[test]
    fn lost_closes_are_removed_and_lost_creations_added() {
        let mut t = SocketTable::new(16);
        t.apply(&ev(
            EventKind::Connect,
            10,
            100,
            "10.0.0.1:4000",
            "1.1.1.1:443",
        ));
        t.apply(&ev(EventKind::Listen, 11, 100, "0.0.0.0:80", "0.0.0.0:0"));
        let cutoff = t.begin_reconcile();
        let snap = snapshot(
            vec![
                row(11, "0.0.0.0:80", "0.0.0.0:0", 10),
                row(12, "0.0.0.0:80", "9.9.9.9:5", 1),
            ],
            &[(11, &[100]), (12, &[100])],
        );
        let r = t.finish_reconcile(&snap, cutoff);
        assert_eq!(
            r,
            Reconciled {
                removed: 1,
                added: 1,
                added_bound: 1,
                processes_removed: 0
            }
        );
        assert!(t.get(10).is_none(), "its close was lost: gone");
        assert_eq!(owner_pids(&t, 12), vec![(100, OwnerSource::Snapshot)]);
        assert_eq!(t.get(12).unwrap().state, SockState::Connected);
        assert_eq!(owner_pids(&t, 11), vec![(100, OwnerSource::Event)]);
    }

    #[test]
    fn a_reconcile_takes_counted_owners_that_hold_nothing_off_the_count() {
        let mut t = forked(6);
        assert_eq!(t.get(10).unwrap().inherited_more, 4);
        let cutoff = t.begin_reconcile();
        // The snapshot: 100 and 201..=205 still hold 10; 206 holds nothing.
        let holders: Vec<u32> = vec![100, 201, 202, 203, 204, 205];
        let snap = snapshot(
            vec![row(10, "0.0.0.0:80", "0.0.0.0:0", 10)],
            &[(10, &holders)],
        );
        t.finish_reconcile(&snap, cutoff);
        assert_eq!(t.get(10).unwrap().owners.len(), 3);
        assert_eq!(t.get(10).unwrap().inherited_more, 3);
        assert!(t.process(206).is_none());
    }

    #[test]
    fn snapshot_holders_past_the_bound_are_counted() {
        let mut t = SocketTable::new(16);
        t.set_max_owners(2);
        let holders: Vec<u32> = (100..110).collect();
        let snap = snapshot(
            vec![row(10, "0.0.0.0:80", "0.0.0.0:0", 10)],
            &[(10, &holders)],
        );
        t.apply_snapshot(&snap);
        assert_eq!(t.get(10).unwrap().owners.len(), 2);
        assert_eq!(t.get(10).unwrap().inherited_more, 8);
        // The same snapshot again counts nobody twice.
        let cutoff = t.begin_reconcile();
        t.finish_reconcile(&snap, cutoff);
        assert_eq!(t.get(10).unwrap().owners.len(), 2);
        assert_eq!(t.get(10).unwrap().inherited_more, 8);
    }

    #[test]
    fn sockets_of_a_namespace_that_could_not_be_read_are_kept() {
        let mut t = SocketTable::new(16);
        t.apply(&ev(EventKind::Listen, 11, 100, "0.0.0.0:80", "0.0.0.0:0"));
        let cutoff = t.begin_reconcile();
        let mut snap = snapshot(vec![], &[]);
        snap.skipped_netns
            .push((7, "the sock_diag dump did not end within 10s".into()));
        let r = t.finish_reconcile(&snap, cutoff);
        assert_eq!(r.removed, 0);
        assert!(t.get(11).is_some());
        // Read the next time, and gone: removed then.
        let cutoff = t.begin_reconcile();
        let r = t.finish_reconcile(&snapshot(vec![], &[]), cutoff);
        assert_eq!(r.removed, 1);
        assert!(t.get(11).is_none());
    }

    #[test]
    fn events_during_the_snapshot_win() {
        let mut t = SocketTable::new(16);
        t.apply(&ev(
            EventKind::Connect,
            20,
            100,
            "10.0.0.1:4000",
            "1.1.1.1:443",
        ));
        let cutoff = t.begin_reconcile();
        // While the snapshot runs: 20 closes, 21 is created.
        t.apply(&ev(
            EventKind::Close,
            20,
            100,
            "10.0.0.1:4000",
            "1.1.1.1:443",
        ));
        t.apply(&ev(
            EventKind::Connect,
            21,
            100,
            "10.0.0.1:4001",
            "1.1.1.1:443",
        ));
        // The snapshot saw 20 (before its close) and not 21 (before its creation).
        let snap = snapshot(
            vec![row(20, "10.0.0.1:4000", "1.1.1.1:443", 1)],
            &[(20, &[100])],
        );
        let r = t.finish_reconcile(&snap, cutoff);
        assert_eq!((r.removed, r.added), (0, 0));
        assert!(
            t.get(20).is_none(),
            "closed during the snapshot: not brought back"
        );
        assert!(t.get(21).is_some(), "created during the snapshot: kept");
    }

    #[test]
    fn lost_exits_and_stale_owners_are_dropped() {
        let mut t = SocketTable::new(16);
        t.apply(&ev(EventKind::Listen, 30, 100, "0.0.0.0:80", "0.0.0.0:0"));
        t.apply_proc(&proc_change(EventKind::Fork, 100, 200));
        t.apply(&ev(
            EventKind::Connect,
            31,
            300,
            "10.0.0.1:4000",
            "1.1.1.1:443",
        ));
        let cutoff = t.begin_reconcile();
        // Now: 200 holds the listener alone (100 exited, exit lost); 300 is gone but its socket lives on in 400.
        let snap = snapshot(
            vec![
                row(30, "0.0.0.0:80", "0.0.0.0:0", 10),
                row(31, "10.0.0.1:4000", "1.1.1.1:443", 1),
            ],
            &[(30, &[200]), (31, &[400])],
        );
        let r = t.finish_reconcile(&snap, cutoff);
        assert_eq!(r.processes_removed, 2, "100 and 300");
        // The snapshot confirmed the inherited owner: now it is certain.
        assert_eq!(owner_pids(&t, 30), vec![(200, OwnerSource::Snapshot)]);
        assert_eq!(owner_pids(&t, 31), vec![(400, OwnerSource::Snapshot)]);
        assert!(t.process(100).is_none() && t.process(300).is_none());
        assert_eq!(held(&t, 400), vec![31]);
    }
}

#[test]
fn sizes_of_what_each_socket_costs() {
    eprintln!(
        "SocketEntry {} TupleKey {} Owner {} Owners {}",
        size_of::<SocketEntry>(),
        size_of::<TupleKey>(),
        size_of::<Owner>(),
        size_of::<Owners>()
    );
    assert!(size_of::<TupleKey>() <= 44);
}

#[test]
fn a_shared_socket_whose_owner_closed_its_copy_loses_that_owner_only() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Listen, 11, 100, "0.0.0.0:81", "0.0.0.0:0"));
    t.apply_proc(&proc_change(EventKind::Fork, 100, 200));
    // Both sockets are shared: both processes are asked about both.
    let reqs = t.shared_holdings(16);
    assert_eq!(
        reqs.iter()
            .map(|r| (r.pid, r.inodes.clone()))
            .collect::<Vec<_>>(),
        vec![(100, vec![10, 11]), (200, vec![10, 11])]
    );
    assert_eq!(t.shared_holdings(1).len(), 1, "bounded");
    // The parent closed its copy of 10; the child still holds both.
    t.apply_verified(&reqs[0], &[11].into_iter().collect());
    t.apply_verified(&reqs[1], &[10, 11].into_iter().collect());
    assert_eq!(owner_pids(&t, 10), vec![(200, OwnerSource::Inherited)]);
    assert_eq!(
        owner_pids(&t, 11),
        vec![(100, OwnerSource::Event), (200, OwnerSource::Inherited)]
    );
    // 10 is no longer shared: only 11 is asked about next time.
    let next = t.shared_holdings(16);
    assert!(next.iter().all(|r| r.inodes == vec![11]), "{next:?}");
    assert!(!t.take_orphaned());
}

#[test]
fn a_verify_answer_leaves_a_socket_an_event_touched_since_the_question() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    t.apply_proc(&proc_change(EventKind::Fork, 100, 200));
    let reqs = t.shared_holdings(16);
    // The parent acts on the socket after the question was asked: the
    // answer (read before the act) must not drop it.
    t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    t.apply_verified(&reqs[0], &HashSet::new());
    assert_eq!(
        owner_pids(&t, 10),
        vec![(100, OwnerSource::Event), (200, OwnerSource::Inherited)]
    );
}

#[test]
fn only_a_socket_that_lost_its_last_owner_asks_for_a_snapshot_and_only_once() {
    let mut t = SocketTable::new(16);
    t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
    t.apply(&ev(EventKind::Listen, 11, 300, "0.0.0.0:81", "0.0.0.0:0"));
    t.apply_proc(&proc_change(EventKind::Fork, 100, 200));
    assert!(!t.take_orphaned());
    // The parent exits: the child still holds 10.
    t.apply_proc(&proc_change(EventKind::Exit, 100, 100));
    assert!(!t.take_orphaned());
    // Its last owner exits, the socket stays (no close seen): ask once.
    t.apply_proc(&proc_change(EventKind::Exit, 200, 200));
    assert_eq!(owner_pids(&t, 10), vec![]);
    assert!(t.take_orphaned());
    // Still ownerless after the snapshot: not asked again.
    assert!(!t.take_orphaned());
    // A socket closed with its owner's exit is no orphan.
    t.apply(&ev(EventKind::Close, 11, 300, "0.0.0.0:81", "0.0.0.0:0"));
    t.apply_proc(&proc_change(EventKind::Exit, 300, 300));
    assert!(!t.take_orphaned());
}
