//! Layer 1 (pure): the model's counting, socket tracking and table merging.

use std::time::{Duration, Instant};

use super::*;
use crate::{
    event::{EventKind, testing},
    view::OwnerView,
};

fn ev(kind: EventKind, inode: u64, pid: u32, src: &str, dst: &str) -> Event {
    Event {
        process_comm: testing::comm(b"curl"),
        ..testing::event(kind, inode, pid, src, dst)
    }
}

fn failed(inode: u64, pid: u32, dst: &str) -> Event {
    Event {
        error: Some(libc::ECONNREFUSED),
        ..ev(EventKind::Connect, inode, pid, "127.0.0.1:40000", dst)
    }
}

fn view(inode: u64, pid: u32, state: &str, src: &str, dst: &str, source: &str) -> SocketView {
    let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    SocketView {
        inherited_more: 0,
        port_class: None,
        port_privileged: None,
        port_ephemeral: None,
        addr_scope: None,
        dst_port_class: None,
        since: None,
        since_is_lower_bound: false,
        bytes_sent: None,
        bytes_received: None,
        proto: "tcp".into(),
        family: "ipv4".into(),
        src_ip: src.ip().to_string(),
        src_port: src.port(),
        dst_ip: dst.ip().to_string(),
        dst_port: dst.port(),
        state: state.into(),
        inode,
        netns: 7,
        owners: vec![OwnerView {
            pid,
            tid: pid,
            comm: Some("nginx".into()),
            thread_comm: Some("nginx".into()),
            uid: Some(0),
            exe: None,
            start_time: None,
            source: source.into(),
            unit: Some("nginx.service".into()),
            container: None,
            args: None,
            args_truncated: false,
            ppid: None,
        }],
    }
}

fn row(rows: &[ProcRow], pid: u32) -> &ProcRow {
    rows.iter()
        .find(|r| r.key == RowKey::Pid(pid))
        .unwrap_or_else(|| panic!("no row for {pid}: {rows:?}"))
}

#[test]
fn connects_failures_and_totals_per_process() {
    let t0 = Instant::now();
    let mut m = Model::new(t0);
    for i in 0..3 {
        m.apply(
            Update::Event(ev(
                EventKind::Connect,
                10 + i,
                42,
                &format!("127.0.0.1:{}", 40000 + i),
                "127.0.0.1:8080",
            )),
            t0,
        );
    }
    m.apply(Update::Event(failed(20, 42, "127.0.0.1:1")), t0);
    m.apply(
        Update::Event(Event {
            error: Some(libc::EINPROGRESS),
            ..ev(
                EventKind::Connect,
                21,
                42,
                "127.0.0.1:40010",
                "10.0.0.1:443",
            )
        }),
        t0,
    );
    m.apply(
        Update::Event(ev(
            EventKind::Accept,
            30,
            7,
            "127.0.0.1:8080",
            "127.0.0.1:40000",
        )),
        t0,
    );
    m.apply(
        Update::Event(ev(
            EventKind::Close,
            10,
            42,
            "127.0.0.1:40000",
            "127.0.0.1:8080",
        )),
        t0,
    );
    m.tick(t0 + Duration::from_secs(1));
    let rows = m.process_rows(Group::Process, t0 + Duration::from_secs(1));
    let r = row(&rows, 42);
    // 3 connected + 1 in progress, one closed again; 5 attempts, 1 failed.
    assert_eq!((r.conns, r.listeners, r.total), (3, 0, 4));
    assert_eq!((r.rates.connects, r.rates.failed), (5.0, 1.0));
    assert_eq!(r.name, "curl");
    assert_eq!(row(&rows, 7).total, 1);
    assert_eq!(m.events_per_s, 7.0);
    // The closed connection stays (greyed) for a while, then goes.
    let c = m.connections(&RowKey::Pid(42), t0 + Duration::from_secs(1));
    assert_eq!(c.len(), 4);
    assert!(c.iter().find(|c| c.inode == 10).unwrap().closed);
    assert_eq!(
        c.iter().find(|c| c.inode == 21).unwrap().state,
        "connecting"
    );
    m.tick(t0 + GREY_FOR + Duration::from_secs(1));
    let c = m.connections(&RowKey::Pid(42), t0 + GREY_FOR + Duration::from_secs(1));
    assert_eq!(
        c.iter().map(|c| c.inode).collect::<Vec<_>>(),
        vec![11, 12, 21]
    );
    // A second without events: rates fall to zero, totals stay.
    let rows = m.process_rows(Group::Process, t0 + GREY_FOR + Duration::from_secs(1));
    assert_eq!(row(&rows, 42).rates.connects, 0.0);
    assert_eq!(row(&rows, 42).total, 4);
}

#[test]
fn the_table_replaces_what_the_stream_guessed_but_not_what_came_after() {
    let t0 = Instant::now();
    let mut m = Model::new(t0);
    m.apply_table(
        vec![
            view(1, 100, "listen", "0.0.0.0:80", "0.0.0.0:0", "snapshot"),
            view(
                2,
                100,
                "connected",
                "10.0.0.1:80",
                "10.0.0.9:5000",
                "snapshot",
            ),
        ],
        t0,
        t0,
    );
    let rows = m.process_rows(Group::Process, t0);
    let r = row(&rows, 100);
    assert_eq!((r.conns, r.listeners, r.name.as_str()), (1, 1, "nginx"));
    let c = m.connections(&RowKey::Pid(100), t0);
    assert!(c.iter().all(|c| c.before_start && c.source == "snapshot"));
    // The stream: a new connection after the next list was asked for, and
    // one that the next list will not have.
    let t1 = t0 + Duration::from_secs(2);
    m.apply(
        Update::Event(ev(
            EventKind::Accept,
            3,
            100,
            "10.0.0.1:80",
            "10.0.0.9:5001",
        )),
        t1 + Duration::from_millis(5),
    );
    m.apply_table(
        vec![view(
            1,
            100,
            "listen",
            "0.0.0.0:80",
            "0.0.0.0:0",
            "snapshot",
        )],
        t1,
        t1 + Duration::from_millis(10),
    );
    let c = m.connections(&RowKey::Pid(100), t1 + Duration::from_millis(10));
    let states: Vec<(u64, &str, bool)> = c.iter().map(|c| (c.inode, c.state, c.closed)).collect();
    assert_eq!(
        states,
        vec![
            (1, "listen", false),
            (3, "connected", false),
            (2, "closed", true)
        ]
    );
    let l = m.listeners();
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].local.port(), l[0].pid, l[0].source),
        (80, 100, "snapshot")
    );
    assert_eq!(l[0].unit.as_deref(), Some("nginx.service"));
}

#[test]
fn rows_per_unit_sum_their_processes() {
    let t0 = Instant::now();
    let mut m = Model::new(t0);
    let mut a = view(1, 100, "connected", "10.0.0.1:80", "10.0.0.9:5000", "event");
    let mut b = view(
        2,
        101,
        "connected",
        "10.0.0.1:80",
        "10.0.0.9:5001",
        "inherited",
    );
    b.owners[0].comm = Some("worker".into());
    let mut c = view(3, 200, "listen", "0.0.0.0:22", "0.0.0.0:0", "snapshot");
    c.owners[0].unit = Some("docker:0123456789abcdef".into());
    a.owners[0].unit = Some("web.service".into());
    b.owners[0].unit = Some("web.service".into());
    m.apply_table(vec![a, b, c], t0, t0);
    let mut rows = m.process_rows(Group::Unit, t0);
    rows.sort_by(|x, y| x.key.cmp(&y.key));
    let got: Vec<(&str, Vec<u32>, u64, u64)> = rows
        .iter()
        .map(|r| (r.name.as_str(), r.pids.clone(), r.conns, r.listeners))
        .collect();
    assert_eq!(
        got,
        vec![
            ("docker:0123456789abcdef", vec![200], 0, 1),
            ("web.service", vec![100, 101], 2, 0),
        ]
    );
    let key = RowKey::Unit("web.service".into());
    let sources: Vec<&str> = m.connections(&key, t0).iter().map(|c| c.source).collect();
    assert_eq!(sources, vec!["event", "inherited"]);
}

#[test]
fn the_filter_narrows_rows_counters_and_events() {
    let t0 = Instant::now();
    let mut m = Model::new(t0);
    m.set_filter(TopFilter::parse("port:8080").unwrap(), t0);
    m.apply(
        Update::Event(ev(
            EventKind::Connect,
            1,
            42,
            "127.0.0.1:40000",
            "127.0.0.1:8080",
        )),
        t0,
    );
    m.apply(
        Update::Event(ev(
            EventKind::Connect,
            2,
            43,
            "127.0.0.1:40001",
            "127.0.0.1:9090",
        )),
        t0,
    );
    let rows = m.process_rows(Group::Process, t0);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].key.clone(), rows[0].conns, rows[0].total),
        (RowKey::Pid(42), 1, 1)
    );
    let events = m.events(None, 10);
    assert_eq!(events.iter().map(|e| e.pid).collect::<Vec<_>>(), vec![42]);
    // A filter on processes picks rows; their counters count since start.
    m.set_filter(TopFilter::parse("pid:43").unwrap(), t0);
    let rows = m.process_rows(Group::Process, t0);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].key.clone(), rows[0].conns, rows[0].total),
        (RowKey::Pid(43), 1, 1)
    );
    assert_eq!(m.counting_since(), t0);
    // A new filter on sockets restarts the counters.
    let t1 = t0 + Duration::from_secs(1);
    m.set_filter(TopFilter::parse("port:9090").unwrap(), t1);
    let rows = m.process_rows(Group::Process, t1);
    assert_eq!(
        (rows[0].key.clone(), rows[0].conns, rows[0].total),
        (RowKey::Pid(43), 1, 0)
    );
    assert_eq!(m.counting_since(), t1);
    // Events of one row only.
    m.set_filter(TopFilter::default(), t0);
    assert_eq!(m.events(Some(&RowKey::Pid(42)), 10).len(), 1);
    assert_eq!(m.events(None, 1).len(), 1);
}

#[test]
fn flows_add_bytes_and_turn_the_columns_on() {
    let t0 = Instant::now();
    let mut m = Model::new(t0);
    m.apply(
        Update::Event(ev(
            EventKind::Connect,
            5,
            42,
            "127.0.0.1:40000",
            "127.0.0.1:8080",
        )),
        t0,
    );
    assert!(!m.flows_on);
    for _ in 0..2 {
        m.apply(
            Update::Flow {
                pid: 42,
                netns: 7,
                inode: 5,
                sent: 1000,
                received: 10,
            },
            t0,
        );
    }
    assert!(m.flows_on);
    m.tick(t0 + Duration::from_secs(2));
    let rows = m.process_rows(Group::Process, t0 + Duration::from_secs(2));
    assert_eq!(
        (row(&rows, 42).rates.sent, row(&rows, 42).rates.received),
        (1000.0, 10.0)
    );
    let c = m.connections(&RowKey::Pid(42), t0);
    assert_eq!((c[0].sent, c[0].received), (2000, 20));
    m.apply(
        Update::Lost {
            cause: "subscriber_lagged".into(),
            count: 12,
        },
        t0,
    );
    assert_eq!(m.lost, 12);
}

#[test]
fn idle_processes_without_sockets_are_forgotten() {
    let t0 = Instant::now();
    let mut m = Model::new(t0);
    m.apply(Update::Event(failed(1, 42, "127.0.0.1:1")), t0);
    assert_eq!(m.process_rows(Group::Process, t0).len(), 1);
    let later = t0 + IDLE_FOR + Duration::from_secs(1);
    m.tick(later);
    assert!(m.process_rows(Group::Process, later).is_empty());
    assert_eq!(m.comm(42), None);
}

#[test]
fn the_events_kept_are_bounded() {
    let t0 = Instant::now();
    let mut m = Model::new(t0);
    for i in 0..(EVENTS_KEPT as u64 + 10) {
        m.apply(Update::Event(failed(i + 1, 42, "127.0.0.1:1")), t0);
    }
    assert_eq!(m.events(None, usize::MAX).len(), EVENTS_KEPT);
    assert_eq!(m.events(None, 1)[0].inode, EVENTS_KEPT as u64 + 10);
}

#[test]
fn the_daemons_sums_give_the_rows_the_raw_stream_gives() {
    use crate::{api::counters::Window, clock::WallTime, engine::StreamItem};
    let events = vec![
        ev(
            EventKind::Connect,
            10,
            42,
            "127.0.0.1:40000",
            "127.0.0.1:8080",
        ),
        failed(20, 42, "127.0.0.1:1"),
        Event {
            error: Some(libc::EINPROGRESS),
            ..ev(
                EventKind::Connect,
                21,
                42,
                "127.0.0.1:40010",
                "10.0.0.1:443",
            )
        },
        // Its outcome, later: refused.
        Event {
            error: Some(libc::ECONNREFUSED),
            ..ev(
                EventKind::ConnectResult,
                21,
                42,
                "127.0.0.1:40010",
                "10.0.0.1:443",
            )
        },
        // The immediate failure's own result is not counted twice.
        Event {
            error: Some(libc::ECONNREFUSED),
            ..ev(
                EventKind::ConnectResult,
                20,
                42,
                "127.0.0.1:40000",
                "127.0.0.1:1",
            )
        },
        ev(
            EventKind::Accept,
            30,
            7,
            "127.0.0.1:8080",
            "127.0.0.1:40000",
        ),
        ev(
            EventKind::Close,
            10,
            42,
            "127.0.0.1:40000",
            "127.0.0.1:8080",
        ),
    ];
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    // The raw stream, as `decode` turns it into updates.
    let mut raw = Model::new(t0);
    for e in &events {
        let u = match e.kind {
            EventKind::ConnectResult => Update::ConnectResult {
                pid: e.pid,
                inode: e.inode,
                failed: e.error.is_some(),
            },
            _ => Update::Event(e.clone()),
        };
        raw.apply(u, t0);
    }
    // The same events summed by the daemon, sent as one line, read back.
    let mut window = Window::new(crate::view::Viewer::ROOT);
    for e in &events {
        window.count(&StreamItem::Event(e.clone()));
    }
    let line = window.take(WallTime(0), 1000).to_line();
    let (sums, lost) = crate::top::decode::counters_line(std::str::from_utf8(&line).unwrap())
        .expect("a counters line");
    assert_eq!(lost, None);
    let mut summed = Model::new(t0);
    summed.apply(sums, t0);
    for m in [&mut raw, &mut summed] {
        m.tick(t1);
    }
    for pid in [42, 7] {
        let (a, b) = (
            raw.process_rows(Group::Process, t1),
            summed.process_rows(Group::Process, t1),
        );
        let (a, b) = (row(&a, pid), row(&b, pid));
        assert_eq!(
            (a.rates, a.total, &a.name),
            (b.rates, b.total, &b.name),
            "pid {pid}"
        );
    }
    let rows = summed.process_rows(Group::Process, t1);
    let r = row(&rows, 42);
    // Three attempts, two refused (one at once, one later), one connected.
    assert_eq!((r.rates.connects, r.rates.failed, r.total), (3.0, 2.0, 1));
    assert_eq!(r.name, "curl");
    assert_eq!(row(&rows, 7).total, 1);
    assert_eq!((raw.events_per_s, summed.events_per_s), (7.0, 7.0));
}

#[test]
fn a_daemon_feed_asks_for_sums_only_where_they_are_enough() {
    use crate::top::{feed::Want, input::View, want_of};
    let t0 = Instant::now();
    let mut m = Model::new(t0);
    assert_eq!(want_of(&View::Processes, &m), Want::Counters);
    assert_eq!(want_of(&View::Listeners, &m), Want::Counters);
    let of_42 = Want::Events(crate::filter::Filter {
        pids: vec![42],
        ..crate::filter::Filter::default()
    });
    assert_eq!(want_of(&View::Connections(RowKey::Pid(42)), &m), of_42);
    assert_eq!(want_of(&View::Events(Some(RowKey::Pid(42))), &m), of_42);
    let all = Want::Events(crate::filter::Filter::default());
    assert_eq!(want_of(&View::Events(None), &m), all);
    assert_eq!(
        want_of(&View::Connections(RowKey::Unit("nginx.service".into())), &m),
        all
    );
    // A filter on sockets needs the events themselves.
    m.set_filter(TopFilter::parse("port:443").unwrap(), t0);
    assert_eq!(want_of(&View::Processes, &m), all);
}
