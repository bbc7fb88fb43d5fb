//! The NDJSON event encoding (schema version 2; `schema/event.v2.json`, a superset of version 1).
//!
//! One object per line. Field names and meanings are an interface other
//! programs parse: add fields freely, never rename or retype one without
//! bumping `v`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::escape;
use crate::event::{
    Event, errno,
    flow::{Life, ProcCtx, tcp_state_name},
    kind_name,
};
use crate::policy::{
    Alert,
    ports::{PortClass, PortFacts},
};

/// Schema version written as `v`.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Serialize)]
struct JsonEvent<'a> {
    v: u32,
    time: String,
    event: &'static str,
    proto: &'static str,
    family: &'static str,
    src_ip: String,
    src_port: u16,
    dst_ip: String,
    dst_port: u16,
    pid: u32,
    tid: u32,
    comm: Cow<'a, str>,
    process_comm: Cow<'a, str>,
    uid: u32,
    netns: u32,
    inode: u64,
    cgroup_id: u64,
    error: Option<Cow<'static, str>>,
    implicit: bool,
    // Port classes (policy): IANA's class, the namespace's sysctls, the address scope.
    port_class: &'static str,
    port_privileged: Option<bool>,
    port_ephemeral: Option<bool>,
    addr_scope: &'static str,
    dst_port_class: Option<&'static str>,
    /// Flows (issue 13): Community ID v1 of the connection; null without a remote side.
    community_id: Option<String>,
    /// Flows (issue 13): present on `close` events only.
    #[serde(flatten)]
    life: Option<JsonLife>,
    /// Flows (issue 13): the acting process's context.
    #[serde(flatten)]
    ctx: JsonCtx<'a>,
    /// How exactly pid/tid name who acted.
    attribution: &'static str,
    /// Which family of hooks produced the record.
    attach: &'static str,
    /// `connect_result` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_us: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    local_pending: bool,
}

/// The acting process at the time of the event (schema v2).
#[derive(Serialize)]
struct JsonCtx<'a> {
    exe: Option<Cow<'a, str>>,
    exe_source: Option<&'static str>,
    args: Option<Vec<Cow<'a, str>>>,
    args_truncated: bool,
    ppid: Option<u32>,
    unit: Option<&'a str>,
    container: Option<JsonContainer<'a>>,
    metadata: &'static str,
}

#[derive(Serialize)]
struct JsonContainer<'a> {
    runtime: &'static str,
    id: &'a str,
    short_id: &'a str,
    rootless: bool,
}

impl<'a> JsonCtx<'a> {
    fn new(c: Option<&'a ProcCtx>) -> Self {
        let Some(c) = c else {
            return Self {
                exe: None,
                exe_source: None,
                args: None,
                args_truncated: false,
                ppid: None,
                unit: None,
                container: None,
                metadata: "partial",
            };
        };
        Self {
            exe: c.exe.as_ref().map(|(e, _)| escape::for_json(e)),
            exe_source: c.exe.as_ref().map(|(_, s)| s.name()),
            args: c
                .args
                .as_ref()
                .map(|a| a.iter().map(|x| escape::for_json(x)).collect()),
            args_truncated: c.args_truncated,
            ppid: c.ppid,
            unit: c.unit.as_deref(),
            container: c.container.as_ref().map(|k| JsonContainer {
                runtime: k.runtime,
                id: &k.id,
                short_id: k.short(),
                rootless: k.rootless,
            }),
            metadata: if c.partial { "partial" } else { "complete" },
        }
    }
}

/// A connection's life on its `close` (schema v2; totals over the socket's life).
#[derive(Serialize)]
struct JsonLife {
    duration_ms: Option<f64>,
    duration_is_lower_bound: bool,
    final_state: Option<&'static str>,
    bytes_sent: Option<u64>,
    bytes_acked: Option<u64>,
    bytes_received: Option<u64>,
    segs_in: Option<u32>,
    segs_out: Option<u32>,
    total_retrans: Option<u32>,
    srtt_us: Option<u32>,
    drops: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_ms: Option<u64>,
}

impl JsonLife {
    fn new(l: &Life) -> Self {
        let t = l.tcp;
        Self {
            // Whole microseconds, in milliseconds.
            duration_ms: l.duration_ns.map(|ns| (ns / 1_000) as f64 / 1_000.0),
            duration_is_lower_bound: l.duration_is_lower_bound,
            final_state: l.final_state.map(tcp_state_name),
            bytes_sent: t.map(|t| t.bytes_sent),
            bytes_acked: t.map(|t| t.bytes_acked),
            bytes_received: t.map(|t| t.bytes_received),
            segs_in: t.map(|t| t.segs_in),
            segs_out: t.map(|t| t.segs_out),
            total_retrans: t.map(|t| t.total_retrans),
            srtt_us: t.map(|t| t.srtt_us),
            drops: l.drops,
            interval_ms: l.interval_ms,
        }
    }
}

/// Appends `e` as one JSON line (with the trailing newline) to `out`.
pub fn write_event(out: &mut Vec<u8>, e: &Event) {
    let facts = PortFacts::of(e.netns, Some(e.pid), e.src.ip(), e.src.port());
    let j = JsonEvent {
        v: SCHEMA_VERSION,
        time: e.time.rfc3339(),
        event: kind_name(e.kind),
        proto: e.proto.name(),
        family: e.family.name(),
        src_ip: e.src.ip().to_string(),
        src_port: e.src.port(),
        dst_ip: e.dst.ip().to_string(),
        dst_port: e.dst.port(),
        pid: e.pid,
        tid: e.tid,
        comm: escape::for_json(e.comm.as_bytes()),
        process_comm: escape::for_json(e.process_comm.as_bytes()),
        uid: e.uid,
        netns: e.netns,
        inode: e.inode,
        cgroup_id: e.cgroup_id,
        error: e.error.map(errno::name),
        implicit: e.is_implicit(),
        community_id: crate::event::flow::community_id(e.proto, e.src, e.dst),
        life: e.life.as_deref().map(JsonLife::new),
        ctx: JsonCtx::new(e.ctx.as_deref()),
        attribution: e.attribution().name(),
        attach: e.source().name(),
        duration_us: e.duration_us(),
        local_pending: e.local_pending(),
        port_class: facts.class.name(),
        port_privileged: facts.privileged,
        port_ephemeral: facts.ephemeral,
        addr_scope: facts.scope.name(),
        dst_port_class: (e.dst.port() != 0).then(|| PortClass::of(e.dst.port()).name()),
    };
    // Serializing plain strings and integers into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, &j).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        clock::WallTime,
        event::{Comm, EventKind, Family, Proto},
    };

    pub(crate) fn sample(comm: &[u8]) -> Event {
        let mut raw = [0u8; 16];
        raw[..comm.len()].copy_from_slice(comm);
        Event {
            kind: EventKind::Connect,
            time: WallTime(1_700_000_000_123_456_789),
            proto: Proto::Tcp,
            family: Family::Ipv4,
            src: "10.0.0.5:40312".parse().unwrap(),
            dst: "93.184.216.34:443".parse().unwrap(),
            pid: 1234,
            tid: 1236,
            uid: 1000,
            comm: Comm::from_kernel(&raw),
            process_comm: Comm::default(),
            start_ns: 0,
            netns: 4026531840,
            inode: 99,
            cgroup_id: 5,
            error: Some(libc::ECONNREFUSED),
            state: 7,
            flags: 0,
            life: None,
            ctx: None,
            aux: 0,
        }
    }

    #[test]
    fn encodes_every_field_by_name() {
        let mut out = Vec::new();
        write_event(&mut out, &sample(b"curl"));
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["v"], 2);
        assert_eq!(v["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["event"], "connect");
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["src_ip"], "10.0.0.5");
        assert_eq!(v["src_port"], 40312);
        assert_eq!(v["dst_ip"], "93.184.216.34");
        assert_eq!(v["dst_port"], 443);
        assert_eq!(v["pid"], 1234);
        assert_eq!(v["tid"], 1236);
        assert_eq!(v["comm"], "curl");
        assert_eq!(v["uid"], 1000);
        assert_eq!(v["netns"], 4026531840u32);
        assert_eq!(v["inode"], 99);
        assert_eq!(v["cgroup_id"], 5);
        assert_eq!(v["error"], "ECONNREFUSED");
        assert_eq!(v["process_comm"], "");
        assert_eq!(v["implicit"], false);
        assert_eq!(v["community_id"], "1:gBZx9BMw9/hB9WnkZVEqeNE+RLo=");
        assert_eq!(v["port_class"], "registered");
        assert_eq!(v["addr_scope"], "specific");
        assert_eq!(v["dst_port_class"], "well_known");
    }

    #[test]
    fn hostile_comm_stays_on_one_line_and_round_trips() {
        let mut out = Vec::new();
        write_event(&mut out, &sample(b"a\nb\x1b[31m\"}"));
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["comm"], "a\nb\x1b[31m\"}");
    }

    #[test]
    fn the_text_backslash_xff_and_the_byte_0xff_differ_and_read_back_exactly() {
        let mut lines = Vec::new();
        for name in [&b"t\\xff"[..], b"t\xff", b"a\\b"] {
            let mut out = Vec::new();
            write_event(&mut out, &sample(name));
            let line = String::from_utf8(out).unwrap();
            let Some(Line::Event(back)) = parse_line(&line) else {
                panic!("not an event: {line}");
            };
            assert_eq!(back.comm.as_bytes(), name);
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            lines.push(v["comm"].as_str().unwrap().to_string());
        }
        assert_eq!(lines, ["t\\\\xff", "t\\xff", "a\\\\b"]);
    }

    #[test]
    fn lines_read_back_into_the_same_event() {
        let mut e = sample(b"curl");
        e.process_comm = e.comm;
        let mut out = Vec::new();
        write_event(&mut out, &e);
        let Some(Line::Event(back)) = parse_line(std::str::from_utf8(&out).unwrap()) else {
            panic!("not an event");
        };
        assert_eq!(
            *back,
            Event {
                start_ns: 0,
                state: 0,
                ..e
            }
        );
        let mut lost = Vec::new();
        write_lost(&mut lost, WallTime(0), "ring_full", 3);
        assert_eq!(
            parse_line(std::str::from_utf8(&lost).unwrap()),
            Some(Line::Lost {
                cause: "ring_full".into(),
                count: 3
            })
        );
        assert_eq!(parse_line("{}"), None);
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn close_carries_its_life_and_others_do_not() {
        let mut out = Vec::new();
        write_event(&mut out, &sample(b"x"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("bytes_sent").is_none() && v.get("duration_ms").is_none());
        let mut e = sample(b"x");
        e.kind = EventKind::Close;
        e.life = Some(Box::new(Life {
            duration_ns: Some(12_345_678),
            duration_is_lower_bound: true,
            final_state: Some(1),
            tcp: Some(crate::event::flow::TcpCounters {
                bytes_sent: 100,
                bytes_acked: 101,
                bytes_received: 200,
                segs_in: 7,
                segs_out: 8,
                total_retrans: 2,
                srtt_us: 42,
            }),
            drops: None,
            interval_ms: None,
        }));
        let mut out = Vec::new();
        write_event(&mut out, &e);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["duration_ms"], 12.345);
        assert_eq!(v["duration_is_lower_bound"], true);
        assert_eq!(v["final_state"], "established");
        assert_eq!(v["bytes_sent"], 100);
        assert_eq!(v["bytes_acked"], 101);
        assert_eq!(v["bytes_received"], 200);
        assert_eq!(v["segs_in"], 7);
        assert_eq!(v["segs_out"], 8);
        assert_eq!(v["total_retrans"], 2);
        assert_eq!(v["srtt_us"], 42);
        assert!(v["drops"].is_null());
    }

    #[test]
    fn success_has_null_error() {
        let mut e = sample(b"x");
        e.error = None;
        let mut out = Vec::new();
        write_event(&mut out, &e);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["error"].is_null());
    }
}

/// A line of the stream read back (to show a daemon's stream to people).
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Event(Box<Event>),
    Lost { cause: String, count: u64 },
}

#[derive(Deserialize)]
struct ReadEvent {
    time: String,
    event: String,
    proto: String,
    family: String,
    src_ip: std::net::IpAddr,
    src_port: u16,
    dst_ip: std::net::IpAddr,
    dst_port: u16,
    pid: u32,
    tid: u32,
    comm: String,
    #[serde(default)]
    process_comm: String,
    uid: u32,
    netns: u32,
    inode: u64,
    cgroup_id: u64,
    error: Option<String>,
    #[serde(default)]
    implicit: bool,
    #[serde(default)]
    attach: String,
    #[serde(default)]
    duration_us: Option<u64>,
    #[serde(default)]
    local_pending: bool,
}

/// Parses one line of the stream (schema v2; v1 lines parse too). `None` if it is not one.
pub fn parse_line(line: &str) -> Option<Line> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["event"] == "lost" {
        return Some(Line::Lost {
            cause: v["cause"].as_str()?.to_string(),
            count: v["count"].as_u64()?,
        });
    }
    let r: ReadEvent = serde_json::from_value(v).ok()?;
    let kind = crate::event::kind_from_name(&r.event)?;
    let comm = |s: &str| {
        let bytes = escape::from_json(s);
        let mut raw = [0u8; 16];
        let n = bytes.len().min(16);
        raw[..n].copy_from_slice(&bytes[..n]);
        crate::event::Comm::from_kernel(&raw)
    };
    let time = chrono::DateTime::parse_from_rfc3339(&r.time)
        .ok()?
        .timestamp_nanos_opt()?;
    Some(Line::Event(Box::new(Event {
        kind,
        time: crate::clock::WallTime(time),
        proto: if r.proto == "udp" {
            crate::event::Proto::Udp
        } else {
            crate::event::Proto::Tcp
        },
        family: if r.family == "ipv6" {
            crate::event::Family::Ipv6
        } else {
            crate::event::Family::Ipv4
        },
        src: std::net::SocketAddr::new(r.src_ip, r.src_port),
        dst: std::net::SocketAddr::new(r.dst_ip, r.dst_port),
        pid: r.pid,
        tid: r.tid,
        uid: r.uid,
        comm: comm(&r.comm),
        process_comm: comm(&r.process_comm),
        start_ns: 0,
        netns: r.netns,
        inode: r.inode,
        cgroup_id: r.cgroup_id,
        error: r.error.as_deref().and_then(errno::number),
        state: 0,
        flags: {
            use sockmon_common::event::{
                FLAG_IMPLICIT, FLAG_KFUNC, FLAG_LOCAL_PENDING, FLAG_SOCKET_LAYER,
            };
            let mut f = 0;
            if r.implicit {
                f |= FLAG_IMPLICIT;
            }
            if r.local_pending {
                f |= FLAG_LOCAL_PENDING;
            }
            f |= match r.attach.as_str() {
                "socket" => FLAG_SOCKET_LAYER,
                "kfunc" => FLAG_KFUNC,
                _ => 0,
            };
            f
        },
        life: None,
        ctx: None,
        aux: r.duration_us.unwrap_or(0) * 1000,
    })))
}

#[derive(Serialize)]
struct JsonLost<'a> {
    v: u32,
    time: String,
    event: &'static str,
    cause: &'a str,
    count: u64,
}

/// Appends a `lost` record: `count` events were lost for `cause` (a kernel
/// counter name such as `ring_full`).
pub fn write_lost(out: &mut Vec<u8>, time: crate::clock::WallTime, cause: &str, count: u64) {
    let j = JsonLost {
        v: SCHEMA_VERSION,
        time: time.rfc3339(),
        event: "lost",
        cause,
        count,
    };
    if serde_json::to_writer(&mut *out, &j).is_ok() {
        out.push(b'\n');
    }
}

#[derive(Serialize)]
struct JsonAlert<'a> {
    v: u32,
    time: String,
    event: &'static str,
    reason: &'static str,
    severity: &'static str,
    rule: Option<&'a str>,
    message: String,
    proto: &'static str,
    family: &'static str,
    src_ip: String,
    src_port: u16,
    netns: u32,
    inode: u64,
    port_class: &'static str,
    port_privileged: Option<bool>,
    port_ephemeral: Option<bool>,
    addr_scope: &'static str,
    metadata: &'static str,
    owners: [JsonAlertOwner<'a>; 1],
    previous: Option<&'a crate::policy::alerts::Previous>,
}

#[derive(Serialize)]
struct JsonAlertOwner<'a> {
    pid: u32,
    comm: &'a str,
    uid: u32,
    exe: Option<&'a str>,
    unit: Option<&'a str>,
    socket_unit: Option<&'a str>,
    container: Option<serde_json::Value>,
    ppid: Option<u32>,
    parent_exe: Option<&'a str>,
}

/// Appends an `alert` record (schema v2): a listener the policy does not allow.
pub fn write_alert(out: &mut Vec<u8>, a: &Alert) {
    let o = &a.owner;
    let container = o.container.as_deref().map(|c| match c.split_once(':') {
        Some((runtime, id)) => serde_json::json!({"runtime": runtime, "id": id}),
        None => serde_json::json!({"runtime": null, "id": c}),
    });
    let j = JsonAlert {
        v: SCHEMA_VERSION,
        time: a.time.rfc3339(),
        event: "alert",
        reason: a.reason.name(),
        severity: a.severity.name(),
        rule: a.rule.as_deref(),
        message: a.message(),
        proto: a.proto.name(),
        family: if a.ip.is_ipv4() { "ipv4" } else { "ipv6" },
        src_ip: a.ip.to_string(),
        src_port: a.port,
        netns: a.netns,
        inode: a.inode,
        port_class: a.facts.class.name(),
        port_privileged: a.facts.privileged,
        port_ephemeral: a.facts.ephemeral,
        addr_scope: a.facts.scope.name(),
        metadata: if a.complete { "complete" } else { "partial" },
        owners: [JsonAlertOwner {
            pid: o.pid,
            comm: &o.comm,
            uid: o.uid,
            exe: o.exe.as_deref(),
            unit: o.unit.as_deref(),
            socket_unit: o.socket_unit.as_deref(),
            container,
            ppid: o.ppid,
            parent_exe: o.parent_exe.as_deref(),
        }],
        previous: a.previous.as_ref(),
    };
    if serde_json::to_writer(&mut *out, &j).is_ok() {
        out.push(b'\n');
    }
}
