//! Reading the daemon's event stream (`schema/event.v2.json` lines) into the
//! updates `top` applies.
//!
//! This runs once per event at the full event rate, so it reads only the
//! fields `top` shows, borrowing strings from the line instead of building
//! a `serde_json::Value` (as `output::json::parse_line` does for `watch`):
//! measured in BENCHMARKS.md (`top`). Unknown record kinds (added by later
//! schema versions) are skipped; `flow` records (the flows workstream) add
//! bytes, and so do the totals a TCP `close` carries; `lost` records are
//! counted and shown.

use std::{borrow::Cow, net::IpAddr, net::SocketAddr};

use serde::Deserialize;

use crate::{
    api::protocol::CountersLine,
    clock::WallTime,
    event::{
        Comm, Event, EventKind, Family, Proto,
        flow::{Life, TcpCounters},
        tally::Counts,
    },
    view::ContainerView,
};

/// One thing that happened, for the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    Event(Event),
    /// A `flow` record: bytes moved on socket `inode` since its previous one.
    Flow {
        pid: u32,
        netns: u32,
        inode: u64,
        sent: u64,
        received: u64,
    },
    /// The result of a non-blocking connect (`connect_result`), when the stream has it.
    ConnectResult {
        pid: u32,
        inode: u64,
        failed: bool,
    },
    /// `count` events were lost for `cause`.
    Lost {
        cause: String,
        count: u64,
    },
    /// One line of the daemon's `counters` subscription: what each process
    /// did in the interval (instead of its events).
    Counters {
        processes: Vec<ProcCount>,
        events: u64,
    },
}

/// One process in an [`Update::Counters`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcCount {
    pub pid: u32,
    pub comm: Comm,
    /// Where it runs ([`place`]).
    pub place: Option<String>,
    pub counts: Counts,
}

/// Where a process runs, as `top` groups rows by unit: its container
/// (`runtime:id`, shown by its short id), else its systemd unit.
pub fn place(unit: Option<&str>, container: Option<&ContainerView>) -> Option<String> {
    container
        .map(|c| format!("{}:{}", c.runtime, c.id))
        .or_else(|| unit.map(str::to_string))
}

/// Decodes one line of a `counters` subscription: the sums, and a `lost`
/// update when the daemon says this subscription missed events.
pub fn counters_line(line: &str) -> Option<(Update, Option<Update>)> {
    let c: CountersLine = serde_json::from_str(line).ok()?;
    let lost = (c.lost > 0).then(|| Update::Lost {
        cause: "counters_lagged".into(),
        count: c.lost,
    });
    let processes = c
        .processes
        .iter()
        .map(|p| ProcCount {
            pid: p.pid,
            comm: comm_of(&p.comm),
            place: place(p.unit.as_deref(), p.container.as_ref()),
            counts: p.counts(),
        })
        .collect();
    Some((
        Update::Counters {
            processes,
            events: c.events,
        },
        lost,
    ))
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    proto: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    family: Option<Cow<'a, str>>,
    #[serde(default)]
    src_ip: Option<IpAddr>,
    #[serde(default)]
    src_port: Option<u16>,
    #[serde(default)]
    dst_ip: Option<IpAddr>,
    #[serde(default)]
    dst_port: Option<u16>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    tid: Option<u32>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default, borrow)]
    comm: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    process_comm: Option<Cow<'a, str>>,
    #[serde(default)]
    netns: Option<u32>,
    #[serde(default)]
    inode: Option<u64>,
    #[serde(default)]
    cgroup_id: Option<u64>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(default)]
    implicit: Option<bool>,
    #[serde(default, borrow)]
    cause: Option<Cow<'a, str>>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    bytes_sent: Option<u64>,
    #[serde(default)]
    bytes_received: Option<u64>,
}

/// A name from the stream as the kernel's 16-byte buffer (JSON strings are
/// the escaped form `output::escape::for_json` wrote: decoded back to the
/// exact bytes).
pub fn comm_of(s: &str) -> Comm {
    let bytes = crate::output::escape::from_json(s);
    let mut raw = [0u8; 16];
    let n = bytes.len().min(16);
    raw[..n].copy_from_slice(&bytes[..n]);
    Comm::from_kernel(&raw)
}

/// Decodes one line; `None` for lines `top` does not use (or cannot read).
pub fn line(line: &str) -> Option<Update> {
    let w: Wire<'_> = serde_json::from_str(line).ok()?;
    match &*w.event {
        "lost" => Some(Update::Lost {
            cause: w.cause?.into_owned(),
            count: w.count?,
        }),
        "flow" => Some(Update::Flow {
            pid: w.pid?,
            netns: w.netns.unwrap_or(0),
            inode: w.inode?,
            sent: w.bytes_sent.unwrap_or(0),
            received: w.bytes_received.unwrap_or(0),
        }),
        "connect_result" => Some(Update::ConnectResult {
            pid: w.pid?,
            inode: w.inode.unwrap_or(0),
            failed: w.error.is_some(),
        }),
        name => {
            let kind = crate::event::kind_from_name(name)?;
            let time = w
                .time
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .and_then(|t| t.timestamp_nanos_opt())
                .map_or_else(WallTime::now, WallTime);
            let comm = comm_of(w.comm.as_deref().unwrap_or(""));
            let process_comm = w.process_comm.as_deref().map(comm_of).unwrap_or(comm);
            Some(Update::Event(Event {
                kind,
                time,
                proto: match w.proto.as_deref() {
                    Some("udp") => Proto::Udp,
                    _ => Proto::Tcp,
                },
                family: match w.family.as_deref() {
                    Some("ipv6") => Family::Ipv6,
                    _ => Family::Ipv4,
                },
                src: SocketAddr::new(w.src_ip?, w.src_port?),
                dst: SocketAddr::new(w.dst_ip?, w.dst_port?),
                pid: w.pid?,
                tid: w.tid.unwrap_or(0),
                uid: w.uid.unwrap_or(0),
                comm,
                process_comm,
                start_ns: 0,
                netns: w.netns.unwrap_or(0),
                inode: w.inode.unwrap_or(0),
                cgroup_id: w.cgroup_id.unwrap_or(0),
                error: w
                    .error
                    .as_deref()
                    .map(|e| crate::event::errno::number(e).unwrap_or(-1)),
                state: 0,
                flags: if w.implicit.unwrap_or(false) {
                    sockmon_common::event::FLAG_IMPLICIT
                } else {
                    0
                },
                // A TCP close carries the connection's byte totals.
                life: match (kind, w.bytes_sent, w.bytes_received) {
                    (EventKind::Close, Some(sent), Some(received)) => Some(Box::new(Life {
                        tcp: Some(TcpCounters {
                            bytes_sent: sent,
                            bytes_received: received,
                            ..TcpCounters::default()
                        }),
                        ..Life::default()
                    })),
                    _ => None,
                },
                ctx: None,
                aux: 0,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::json;

    #[test]
    fn reads_back_what_the_stream_writes() {
        let mut e = json::tests::sample(b"a\x1b[31m\"\\x");
        e.process_comm = crate::event::testing::comm(b"nginx");
        let mut out = Vec::new();
        json::write_event(&mut out, &e);
        let Some(Update::Event(back)) = line(std::str::from_utf8(&out).unwrap()) else {
            panic!("not an event");
        };
        assert_eq!(
            back,
            Event {
                start_ns: 0,
                state: 0,
                ..e
            }
        );
    }

    #[test]
    fn lost_flow_and_unknown_records() {
        let mut out = Vec::new();
        json::write_lost(&mut out, WallTime(0), "subscriber_lagged", 7);
        assert_eq!(
            line(std::str::from_utf8(&out).unwrap()),
            Some(Update::Lost {
                cause: "subscriber_lagged".into(),
                count: 7
            })
        );
        assert_eq!(
            line(
                r#"{"v":2,"event":"flow","pid":9,"netns":1,"inode":5,"interval_ms":1000,"bytes_sent":100,"bytes_received":7}"#
            ),
            Some(Update::Flow {
                pid: 9,
                netns: 1,
                inode: 5,
                sent: 100,
                received: 7
            })
        );
        assert_eq!(
            line(r#"{"v":2,"event":"connect_result","pid":3,"error":"ECONNREFUSED"}"#),
            Some(Update::ConnectResult {
                pid: 3,
                inode: 0,
                failed: true
            })
        );
        assert_eq!(line(r#"{"v":2,"event":"alert","reason":"x"}"#), None);
        assert_eq!(line(r#"{"v":2,"event":"connect"}"#), None);
        assert_eq!(line("not json"), None);
    }

    #[test]
    fn a_tcp_close_brings_its_byte_totals() {
        let line = r#"{"v":2,"time":"2026-12-01T00:00:00Z","event":"close","proto":"tcp","family":"ipv4","src_ip":"127.0.0.1","src_port":5,"dst_ip":"127.0.0.1","dst_port":6,"pid":9,"tid":9,"comm":"x","uid":0,"netns":1,"inode":5,"cgroup_id":0,"error":null,"bytes_sent":1234,"bytes_received":56,"final_state":"close"}"#;
        let Some(Update::Event(e)) = super::line(line) else {
            panic!("not an event")
        };
        let t = e.life.and_then(|l| l.tcp).unwrap();
        assert_eq!((t.bytes_sent, t.bytes_received), (1234, 56));
    }

    #[test]
    fn unknown_errno_names_still_count_as_errors() {
        let mut out = Vec::new();
        json::write_event(&mut out, &json::tests::sample(b"x"));
        let s = String::from_utf8(out)
            .unwrap()
            .replace("ECONNREFUSED", "EWEIRD");
        let Some(Update::Event(e)) = line(&s) else {
            panic!("not an event")
        };
        assert_eq!(e.error, Some(-1));
    }
}
