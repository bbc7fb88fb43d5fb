//! One frame's worth of data: what the current view shows, computed from
//! the model once per frame (not per event), and kept as is while paused.
//! Rendering ([`super::render`]) only lays this out.

use std::{net::SocketAddr, time::Duration, time::Instant};

use super::{
    input::{Ui, View},
    model::{ConnRow, ListenRow, Model, ProcRow, Rates, RowKey},
    order::Order,
    text::shown,
};
use crate::{
    clock::WallTime,
    event::{Proto, errno, kind_name},
};

/// The header: where the data comes from and the totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    /// `daemon /run/sockmon/sockmon.sock` or `alone`.
    pub source: String,
    pub rows: usize,
    pub conns: u64,
    pub listeners: u64,
    pub rates: Rates,
    pub total: u64,
    pub events_per_s: f64,
    pub lost: u64,
    pub flows_on: bool,
    /// How long the counters have counted (since start or the last filter).
    pub counting_for: Duration,
    /// A message to show (a lost connection to the daemon, ...).
    pub notice: Option<String>,
}

/// One event, formatted.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    pub time: String,
    pub kind: &'static str,
    pub proto: Proto,
    pub pid: u32,
    pub name: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `ok`, `in progress` or the errno name.
    pub result: String,
}

/// What the current view lists.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Processes(Vec<ProcRow>),
    Connections { title: String, rows: Vec<ConnRow> },
    Listeners(Vec<ListenRow>),
    Events { title: String, rows: Vec<EventRow> },
}

impl Body {
    pub fn len(&self) -> usize {
        match self {
            Body::Processes(r) => r.len(),
            Body::Connections { rows, .. } => rows.len(),
            Body::Listeners(r) => r.len(),
            Body::Events { rows, .. } => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of Processes row `i`.
    pub fn row_key(&self, i: usize) -> Option<RowKey> {
        match self {
            Body::Processes(r) => r.get(i).map(|r| r.key.clone()),
            _ => None,
        }
    }
}

/// A frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Screen {
    pub header: Header,
    pub body: Body,
}

/// Shown times: local wall clock in `sockmon top`, fixed in tests.
pub type TimeFormat = fn(WallTime) -> String;

/// Builds the frame for `ui`'s view. `events_max`: rows the Events view can show.
pub fn build(
    model: &Model,
    ui: &Ui,
    order: &mut Order,
    source: &str,
    now: Instant,
    events_max: usize,
    time: TimeFormat,
) -> Screen {
    let procs = order.arrange(model.process_rows(ui.group, now), ui.sort, ui.reverse, now);
    let mut header = Header {
        source: source.to_string(),
        rows: procs.len(),
        events_per_s: model.events_per_s,
        lost: model.lost,
        flows_on: model.flows_on,
        counting_for: now.duration_since(model.counting_since()),
        ..Header::default()
    };
    for r in &procs {
        header.conns += r.conns;
        header.listeners += r.listeners;
        header.total += r.total;
        header.rates.connects += r.rates.connects;
        header.rates.failed += r.rates.failed;
        header.rates.sent += r.rates.sent;
        header.rates.received += r.rates.received;
    }
    let title_of = |key: &RowKey| match key {
        RowKey::Pid(pid) => format!(
            "{} (pid {pid})",
            shown(model.comm(*pid).unwrap_or_default())
        ),
        RowKey::Unit(u) => super::text::unit_label(u),
    };
    let body = match &ui.view {
        View::Processes => Body::Processes(procs),
        View::Connections(key) => Body::Connections {
            title: title_of(key),
            rows: model.connections(key, now),
        },
        View::Listeners => Body::Listeners(model.listeners()),
        View::Events(key) => Body::Events {
            title: key.as_ref().map_or_else(|| "all".to_string(), title_of),
            rows: model
                .events(key.as_ref(), events_max)
                .into_iter()
                .map(|e| EventRow {
                    time: time(e.time),
                    kind: kind_name(e.kind),
                    proto: e.proto,
                    pid: e.pid,
                    name: shown(model.comm(e.pid).unwrap_or(e.comm.as_bytes())),
                    local: e.src,
                    remote: e.dst,
                    result: match e.error {
                        None => "ok".into(),
                        Some(libc::EINPROGRESS) => "in progress".into(),
                        Some(-1) => "error".into(),
                        Some(n) => errno::name(n).into_owned(),
                    },
                })
                .collect(),
        },
    };
    Screen { header, body }
}
