//! Layer 1 (pure): snapshots of every view, rendered by ratatui's test
//! backend, wide and narrow, with hostile process names (escape sequences,
//! invalid UTF-8, bidi overrides) that must reach the screen escaped.
//! Update with `INSTA_UPDATE=always cargo test -p sockmon --lib top::` and
//! review the diff of `snapshots/`.

use std::time::{Duration, Instant};

use ratatui::{Terminal, backend::TestBackend};

use super::*;
use crate::{
    clock::WallTime,
    event::{Event, EventKind, testing},
    top::{
        decode::Update,
        filter::TopFilter,
        input::{Ui, View},
        model::{Model, RowKey},
        order::Order,
        screen,
    },
    view::{OwnerView, SocketView},
};

const EVIL: &[u8] = b"\x1b[31mevil\x07";
const BAD_UTF8: &[u8] = b"caf\xc3\xa9\xff";
const BIDI: &[u8] = "x\u{202e}gpj".as_bytes();

fn ev(kind: EventKind, inode: u64, pid: u32, name: &[u8], src: &str, dst: &str) -> Event {
    Event {
        process_comm: testing::comm(name),
        comm: testing::comm(name),
        time: WallTime(1_700_000_000_123_000_000 + inode as i64 * 1_000_000),
        ..testing::event(kind, inode, pid, src, dst)
    }
}

fn listener(inode: u64, pid: u32, comm: &str, unit: &str, addr: &str, source: &str) -> SocketView {
    let a: std::net::SocketAddr = addr.parse().unwrap();
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
        src_ip: a.ip().to_string(),
        src_port: a.port(),
        dst_ip: "0.0.0.0".into(),
        dst_port: 0,
        state: "listen".into(),
        inode,
        netns: 7,
        owners: vec![OwnerView {
            pid,
            tid: pid,
            comm: Some(comm.into()),
            thread_comm: None,
            uid: Some(0),
            exe: None,
            start_time: None,
            source: source.into(),
            unit: Some(unit.into()),
            container: None,
            args: None,
            args_truncated: false,
            ppid: None,
        }],
    }
}

/// A model with three processes with hostile names and an sshd from the table.
fn model(t0: Instant) -> Model {
    let mut m = Model::new(t0);
    m.apply_table(
        vec![
            listener(1, 500, "sshd", "ssh.service", "0.0.0.0:22", "snapshot"),
            listener(
                2,
                501,
                "\u{1b}]0;pwned\u{7}",
                "evil\u{1b}[2J.service",
                "127.0.0.1:8080",
                "snapshot",
            ),
            listener(
                3,
                502,
                "x",
                "docker:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "[::]:50000",
                "inherited",
            ),
        ],
        t0,
        t0,
    );
    let mut add = |e: Event| m.apply(Update::Event(e), t0);
    for i in 0..3 {
        add(ev(
            EventKind::Connect,
            10 + i,
            4242,
            EVIL,
            &format!("127.0.0.1:{}", 41000 + i),
            "127.0.0.1:8080",
        ));
    }
    add(Event {
        error: Some(libc::ECONNREFUSED),
        ..ev(
            EventKind::Connect,
            20,
            4242,
            EVIL,
            "127.0.0.1:41100",
            "127.0.0.1:1",
        )
    });
    add(ev(
        EventKind::Connect,
        30,
        77,
        BAD_UTF8,
        "10.0.0.5:40312",
        "93.184.216.34:443",
    ));
    // A TCP close carries the connection's byte totals.
    add(Event {
        life: Some(Box::new(crate::event::flow::Life {
            tcp: Some(crate::event::flow::TcpCounters {
                bytes_sent: 5000,
                bytes_received: 300_000,
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..ev(
            EventKind::Close,
            30,
            77,
            BAD_UTF8,
            "10.0.0.5:40312",
            "93.184.216.34:443",
        )
    });
    add(ev(
        EventKind::Accept,
        40,
        501,
        BIDI,
        "127.0.0.1:8080",
        "127.0.0.1:41000",
    ));
    m.tick(t0 + Duration::from_secs(1));
    m
}

fn render(m: &Model, ui: &Ui, w: u16, h: u16, now: Instant) -> String {
    let mut order = Order::default();
    let s = screen::build(
        m,
        ui,
        &mut order,
        "daemon /run/sockmon/sockmon.sock",
        now,
        h as usize,
        |t| {
            chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(t.0)
                .format("%H:%M:%S%.3f")
                .to_string()
        },
    );
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| draw(f, &s, ui)).unwrap();
    let text = term.backend().to_string();
    assert!(
        !text.contains('\u{1b}'),
        "an escape reached the screen:\n{text}"
    );
    assert!(
        !text.contains('\u{7}') && !text.contains('\u{202e}'),
        "{text}"
    );
    text
}

fn setup() -> (Model, Instant) {
    let t0 = Instant::now();
    (model(t0), t0 + Duration::from_secs(1))
}

#[test]
fn processes_wide_and_narrow() {
    let (m, now) = setup();
    let ui = Ui::default();
    insta::assert_snapshot!("processes_100x14", render(&m, &ui, 100, 14, now));
    insta::assert_snapshot!("processes_40x12", render(&m, &ui, 40, 12, now));
}

#[test]
fn processes_by_unit_with_a_filter_paused_and_sorted_by_name() {
    let (mut m, now) = setup();
    let mut ui = Ui {
        group: Group::Unit,
        paused: true,
        sort: crate::top::order::SortKey::Name,
        filter_text: "proto:tcp".into(),
        ..Ui::default()
    };
    m.set_filter(TopFilter::parse("proto:tcp").unwrap(), now);
    insta::assert_snapshot!("units_100x10", render(&m, &ui, 100, 10, now));
    ui.editing = Some("port:x".into());
    ui.filter_error = TopFilter::parse("port:x").err();
    insta::assert_snapshot!("filter_error_60x8", render(&m, &ui, 60, 8, now));
}

#[test]
fn connections_of_a_process_with_a_closed_one_greyed() {
    let (m, now) = setup();
    let ui = Ui {
        view: View::Connections(RowKey::Pid(4242)),
        ..Ui::default()
    };
    insta::assert_snapshot!("connections_100x10", render(&m, &ui, 100, 10, now));
    insta::assert_snapshot!("connections_44x10", render(&m, &ui, 44, 10, now));
    let closed = Ui {
        view: View::Connections(RowKey::Pid(77)),
        ..Ui::default()
    };
    let text = render(&m, &closed, 100, 8, now);
    insta::assert_snapshot!("connections_closed_100x8", text);
    // Greyed: the closed row is drawn dark grey.
    let mut order = Order::default();
    let s = screen::build(&m, &closed, &mut order, "x", now, 8, |_| String::new());
    let mut term = Terminal::new(TestBackend::new(100, 8)).unwrap();
    term.draw(|f| draw(f, &s, &closed)).unwrap();
    let buf = term.backend().buffer();
    let row = (0..8)
        .find(|y| buf[(0, *y)].symbol() == "t" && buf[(1, *y)].symbol() == "c")
        .expect("the connection row");
    assert_eq!(buf[(0, row)].fg, Color::DarkGray);
    assert_eq!(buf[(0, row - 1)].fg, Color::Reset, "the header is not grey");
}

#[test]
fn listeners_with_classes() {
    let (m, now) = setup();
    let ui = Ui {
        view: View::Listeners,
        ..Ui::default()
    };
    insta::assert_snapshot!("listeners_120x8", render(&m, &ui, 120, 8, now));
    insta::assert_snapshot!("listeners_40x8", render(&m, &ui, 40, 8, now));
}

#[test]
fn events_all_and_of_one_process() {
    let (m, now) = setup();
    let ui = Ui {
        view: View::Events(None),
        ..Ui::default()
    };
    insta::assert_snapshot!("events_110x12", render(&m, &ui, 110, 12, now));
    insta::assert_snapshot!("events_50x12", render(&m, &ui, 50, 12, now));
    let one = Ui {
        view: View::Events(Some(RowKey::Pid(4242))),
        ..Ui::default()
    };
    insta::assert_snapshot!("events_of_4242_110x9", render(&m, &one, 110, 9, now));
}

#[test]
fn help_overlay_and_a_tiny_terminal() {
    let (m, now) = setup();
    let ui = Ui {
        help: true,
        ..Ui::default()
    };
    insta::assert_snapshot!("help_80x20", render(&m, &ui, 80, 20, now));
    // Too small for anything: still no panic, no escape.
    render(&m, &ui, 10, 3, now);
    render(&m, &Ui::default(), 1, 1, now);
}

#[test]
fn bytes_show_once_flows_are_on() {
    let (mut m, now) = setup();
    m.apply(
        Update::Flow {
            pid: 4242,
            netns: 7,
            inode: 10,
            sent: 3 * 1024 * 1024,
            received: 2048,
        },
        now,
    );
    m.tick(now + Duration::from_secs(1));
    let text = render(&m, &Ui::default(), 100, 8, now + Duration::from_secs(1));
    insta::assert_snapshot!("processes_flows_100x8", text);
    assert!(!text.contains("bytes: off"));
}
