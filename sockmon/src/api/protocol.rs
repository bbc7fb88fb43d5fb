//! The API's wire format (docs/api.md): one JSON request per line, one JSON
//! response per line. Pure: bytes in, typed request or error out, so it can
//! be fuzzed and unit-tested without a daemon.
//!
//! Unknown fields are errors, so a typo never silently widens a filter.
//!
//! One typed API on both sides: the server parses lines into [`Request`]
//! with [`parse`]; clients build a [`Request`] and send [`Request::to_line`]
//! (through [`super::client::Client`]'s typed methods). Both go through the
//! same [`WireRequest`], so a new filter field is one field here, and a test
//! holds `parse(r.to_line()) == r` for every request the fuzz corpus yields.

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    engine::stats::Status,
    event::Proto,
    filter::Filter,
    view::{Lookup, SocketView},
};

/// Longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// A request as it is on the wire (docs/api.md), before validation.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum WireRequest {
    Lookup {
        src: String,
        dst: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proto: Option<ProtoName>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<u32>,
    },
    List {
        #[serde(default, skip_serializing_if = "WireFilter::is_empty")]
        filter: WireFilter,
    },
    Status {},
    Subscribe {
        #[serde(default, skip_serializing_if = "WireFilter::is_empty")]
        filter: WireFilter,
    },
    /// Per-process sums of the stream, one line per interval
    /// ([`CountersLine`]), instead of every event.
    Counters {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        every_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "WireFilter::is_empty")]
        filter: WireFilter,
    },
}

/// `counters`: the interval when none is asked for, and the bounds of one.
pub const COUNTERS_EVERY_DEFAULT: Duration = Duration::from_secs(1);
pub const COUNTERS_EVERY_MIN: Duration = Duration::from_millis(100);
pub const COUNTERS_EVERY_MAX: Duration = Duration::from_secs(60);

/// A filter as it is on the wire.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pid: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comm: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<ProtoName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event: Vec<String>,
}

impl WireFilter {
    fn is_empty(&self) -> bool {
        self.pid.is_empty()
            && self.comm.is_empty()
            && self.port.is_empty()
            && self.proto.is_none()
            && self.event.is_empty()
    }
}

impl From<&Filter> for WireFilter {
    fn from(f: &Filter) -> Self {
        Self {
            pid: f.pids.clone(),
            comm: f.comms.clone(),
            port: f.ports.clone(),
            proto: f.proto.map(ProtoName::of),
            event: f
                .events
                .iter()
                .map(|k| crate::event::kind_name(*k).to_string())
                .collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtoName {
    Tcp,
    Udp,
}

impl ProtoName {
    fn of(p: Proto) -> Self {
        match p {
            Proto::Tcp => Self::Tcp,
            Proto::Udp => Self::Udp,
        }
    }
}

/// A valid request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Lookup(Lookup),
    List(Filter),
    Status,
    Subscribe(Filter),
    /// Per-process sums of the events matching the filter, every `every`.
    Counters {
        filter: Filter,
        every: Duration,
    },
}

impl Request {
    /// As it goes on the wire.
    pub fn to_wire(&self) -> WireRequest {
        match self {
            Self::Lookup(l) => WireRequest::Lookup {
                src: l.src.to_string(),
                dst: l.dst.to_string(),
                proto: l.proto.map(ProtoName::of),
                netns: l.netns,
            },
            Self::List(f) => WireRequest::List { filter: f.into() },
            Self::Status => WireRequest::Status {},
            Self::Subscribe(f) => WireRequest::Subscribe { filter: f.into() },
            Self::Counters { filter, every } => WireRequest::Counters {
                every_ms: Some(every.as_millis() as u64),
                filter: filter.into(),
            },
        }
    }

    /// The request as one line, newline included (what [`parse`] reads).
    pub fn to_line(&self) -> Vec<u8> {
        // Only strings, numbers and lists of them: encoding cannot fail.
        let mut v = serde_json::to_vec(&self.to_wire()).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Why a request was refused: `code` (stable) and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: "bad_request",
            message: message.into(),
        }
    }

    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Parses one request line (without its newline).
pub fn parse(line: &[u8]) -> Result<Request, ApiError> {
    if line.len() > MAX_REQUEST {
        return Err(ApiError::new(
            "too_large",
            format!(
                "request of {} bytes; the limit is {MAX_REQUEST}",
                line.len()
            ),
        ));
    }
    let wire: WireRequest =
        serde_json::from_slice(line).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(match wire {
        WireRequest::Lookup {
            src,
            dst,
            proto,
            netns,
        } => Request::Lookup(Lookup {
            proto: proto.map(proto_of),
            src: parse_endpoint("src", &src)?,
            dst: parse_endpoint("dst", &dst)?,
            netns,
        }),
        WireRequest::List { filter } => {
            if !filter.event.is_empty() {
                return Err(ApiError::bad_request(
                    "`event` filters the live stream; it applies to subscribe, not list",
                ));
            }
            Request::List(filter_of(filter)?)
        }
        WireRequest::Status {} => Request::Status,
        WireRequest::Subscribe { filter } => Request::Subscribe(filter_of(filter)?),
        WireRequest::Counters { every_ms, filter } => {
            let every = every_ms.map_or(COUNTERS_EVERY_DEFAULT, Duration::from_millis);
            if !(COUNTERS_EVERY_MIN..=COUNTERS_EVERY_MAX).contains(&every) {
                return Err(ApiError::bad_request(format!(
                    "`every_ms`: {} is outside {}..={}",
                    every.as_millis(),
                    COUNTERS_EVERY_MIN.as_millis(),
                    COUNTERS_EVERY_MAX.as_millis()
                )));
            }
            Request::Counters {
                filter: filter_of(filter)?,
                every,
            }
        }
    })
}

/// `ip:port`, IPv6 as `[ip]:port`.
pub fn parse_endpoint(what: &str, s: &str) -> Result<SocketAddr, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "`{what}`: `{}` is not an address as ip:port or [ipv6]:port",
            s.escape_debug()
        ))
    })
}

fn proto_of(p: ProtoName) -> Proto {
    match p {
        ProtoName::Tcp => Proto::Tcp,
        ProtoName::Udp => Proto::Udp,
    }
}

fn filter_of(w: WireFilter) -> Result<Filter, ApiError> {
    if let Some(c) = w.comm.iter().find(|c| c.is_empty() || c.len() > 15) {
        return Err(ApiError::bad_request(format!(
            "`comm`: `{}` must be 1 to 15 bytes (the kernel keeps 15)",
            c.escape_debug()
        )));
    }
    let mut events = Vec::new();
    for e in &w.event {
        let kind = crate::event::kind_from_name(e).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`event`: `{}` is not one of bind, listen, connect, accept, close",
                e.escape_debug()
            ))
        })?;
        if !events.contains(&kind) {
            events.push(kind);
        }
    }
    // Repeated values are alternatives that add nothing: each is kept once,
    // so the length a server bounds is the number of distinct values.
    let (mut pids, mut comms, mut ports) = (w.pid, w.comm, w.port);
    pids.sort_unstable();
    pids.dedup();
    comms.sort_unstable();
    comms.dedup();
    ports.sort_unstable();
    ports.dedup();
    Ok(Filter {
        pids,
        comms,
        ports,
        proto: w.proto.map(proto_of),
        events,
    })
}

/// Refuses a filter with a list of more than `max` distinct values.
pub fn check_filter_len(f: &Filter, max: usize) -> Result<(), ApiError> {
    let lists = [
        ("pid", f.pids.len()),
        ("comm", f.comms.len()),
        ("port", f.ports.len()),
        ("event", f.events.len()),
    ];
    match lists.iter().find(|(_, n)| *n > max) {
        Some((name, n)) => Err(ApiError::bad_request(format!(
            "`{name}`: {n} distinct values; at most {max} are accepted (api.max_filter_values)"
        ))),
        None => Ok(()),
    }
}

/// One line of a `counters` subscription: what each process did in the
/// interval that ended at `time`. Processes without events in it are left
/// out; every count is the interval's own (add them up for totals).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersLine {
    /// RFC 3339, UTC.
    pub time: String,
    pub interval_ms: u64,
    /// Events counted, all kinds.
    pub events: u64,
    /// Events this subscription missed (it fell behind); also in `status`.
    pub lost: u64,
    pub processes: Vec<ProcCounters>,
    /// Processes beyond the most one line lists (`api::counters::MAX_PROCESSES`),
    /// summed (`pid` 0, `comm` empty); absent when there were none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<ProcCounters>,
}

/// One process in a [`CountersLine`] (counting rule: `event::tally`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcCounters {
    pub pid: u32,
    /// The process's name (its leader's), escaped as in events; empty
    /// where the viewer may not see it (as `list` hides it).
    pub comm: String,
    /// The systemd unit, where known and the viewer may see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The container, as in `list`'s owners (same rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::view::ContainerView>,
    pub events: u64,
    pub connects: u64,
    pub failed: u64,
    pub accepts: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl ProcCounters {
    pub fn counts(&self) -> crate::event::tally::Counts {
        crate::event::tally::Counts {
            connects: self.connects,
            failed: self.failed,
            accepts: self.accepts,
            sent: self.bytes_sent,
            received: self.bytes_received,
        }
    }
}

impl CountersLine {
    /// The line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Strings and numbers only: encoding cannot fail.
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Responses, as they go on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sockets: Option<Vec<SocketView>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subscribed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

impl Response {
    fn ok() -> Self {
        Self {
            ok: true,
            sockets: None,
            status: None,
            subscribed: None,
            code: None,
            error: None,
        }
    }

    pub fn sockets(sockets: Vec<SocketView>) -> Self {
        Self {
            sockets: Some(sockets),
            ..Self::ok()
        }
    }

    pub fn status(status: Status) -> Self {
        Self {
            status: Some(status),
            ..Self::ok()
        }
    }

    pub fn subscribed() -> Self {
        Self {
            subscribed: Some(true),
            ..Self::ok()
        }
    }

    pub fn error(e: &ApiError) -> Self {
        Self {
            ok: false,
            code: Some(e.code.to_string()),
            error: Some(e.message.clone()),
            ..Self::ok()
        }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"ok":false,"code":"internal","error":"cannot encode the response"}"#.to_vec()
        });
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    #[test]
    fn lookup_with_ipv4_and_ipv6() {
        let r = parse(
            br#"{"op":"lookup","src":"127.0.0.1:5000","dst":"[::1]:80","proto":"tcp","netns":7}"#,
        );
        assert_eq!(
            r,
            Ok(Request::Lookup(Lookup {
                proto: Some(Proto::Tcp),
                src: "127.0.0.1:5000".parse().unwrap(),
                dst: "[::1]:80".parse().unwrap(),
                netns: Some(7),
            }))
        );
    }

    #[test]
    fn list_status_subscribe() {
        assert_eq!(parse(br#"{"op":"status"}"#), Ok(Request::Status));
        assert_eq!(
            parse(br#"{"op":"list"}"#),
            Ok(Request::List(Filter::default()))
        );
        let r = parse(br#"{"op":"subscribe","filter":{"event":["connect"],"port":[443],"pid":[1],"comm":["curl"],"proto":"udp"}}"#);
        assert_eq!(
            r,
            Ok(Request::Subscribe(Filter {
                pids: vec![1],
                comms: vec!["curl".into()],
                ports: vec![443],
                proto: Some(Proto::Udp),
                events: vec![EventKind::Connect],
            }))
        );
    }

    #[test]
    fn malformed_requests_are_bad_requests_with_a_reason() {
        let bad: &[&[u8]] = &[
            b"",
            b"not json",
            b"{",
            b"[]",
            br#"{"op":"frobnicate"}"#,
            br#"{"src":"1.2.3.4:5"}"#,
            br#"{"op":"lookup","src":"1.2.3.4:5"}"#,
            br#"{"op":"lookup","src":"1.2.3.4","dst":"1.2.3.4:5"}"#,
            br#"{"op":"lookup","src":"1.2.3.4:5","dst":"1.2.3.4:5","prot":"tcp"}"#,
            br#"{"op":"list","filter":{"port":[70000]}}"#,
            br#"{"op":"list","filter":{"event":["connect"]}}"#,
            br#"{"op":"subscribe","filter":{"comm":["0123456789abcdef"]}}"#,
            br#"{"op":"subscribe","filter":{"colour":"red"}}"#,
            br#"{"op":"subscribe","filter":{"event":["exec"]}}"#,
            br#"{"op":"subscribe","filter":{"event":[3]}}"#,
            br#"{"op":"status","extra":1}"#,
            br#"{"op":"counters","every_ms":10}"#,
            br#"{"op":"counters","every_ms":600000}"#,
            br#"{"op":"counters","every_ms":-1}"#,
            br#"{"op":"counters","every":1000}"#,
            b"\xff\xfe",
        ];
        for line in bad {
            let e = parse(line).unwrap_err();
            assert_eq!(e.code, "bad_request", "{:?}", String::from_utf8_lossy(line));
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn counters_take_an_interval_within_bounds_and_a_filter() {
        assert_eq!(
            parse(br#"{"op":"counters"}"#),
            Ok(Request::Counters {
                filter: Filter::default(),
                every: COUNTERS_EVERY_DEFAULT
            })
        );
        assert_eq!(
            parse(br#"{"op":"counters","every_ms":100,"filter":{"port":[80,80]}}"#),
            Ok(Request::Counters {
                filter: Filter {
                    ports: vec![80],
                    ..Filter::default()
                },
                every: Duration::from_millis(100)
            })
        );
        let e = parse(br#"{"op":"counters","every_ms":99}"#).unwrap_err();
        assert!(e.message.contains("every_ms"), "{}", e.message);
    }

    #[test]
    fn unknown_event_name_is_named_in_the_error() {
        let e = parse(br#"{"op":"subscribe","filter":{"event":["connect","exec"]}}"#).unwrap_err();
        assert_eq!(e.code, "bad_request");
        assert_eq!(
            e.message,
            "`event`: `exec` is not one of bind, listen, connect, accept, close"
        );
    }

    #[test]
    fn filter_lists_are_deduplicated_and_bounded() {
        let Ok(Request::List(f)) =
            parse(br#"{"op":"list","filter":{"pid":[3,1,3,3],"port":[80,80],"comm":["a","a"]}}"#)
        else {
            panic!("not a list");
        };
        assert_eq!(
            (f.pids, f.ports, f.comms),
            (vec![1, 3], vec![80], vec!["a".to_string()])
        );
        let f = Filter {
            ports: (1..=300).collect(),
            ..Default::default()
        };
        let e = check_filter_len(&f, 256).unwrap_err();
        assert_eq!(e.code, "bad_request");
        assert!(
            e.message.contains("`port`: 300 distinct values"),
            "{}",
            e.message
        );
        assert!(check_filter_len(&f, 300).is_ok());
    }

    #[test]
    fn oversized_request_is_too_large() {
        let big = vec![b' '; MAX_REQUEST + 1];
        assert_eq!(parse(&big).unwrap_err().code, "too_large");
    }

    /// Checks the fuzzing invariant on one input: no panic, and an error
    /// answer is exactly one JSON line.
    fn holds(input: &[u8]) {
        if let Err(e) = parse(input) {
            let line = Response::error(&e).to_line();
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "{input:?}");
            assert!(serde_json::from_slice::<serde_json::Value>(&line).is_ok());
        }
    }

    #[test]
    fn the_fuzz_corpus_replays() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/api_request");
        let (mut n, mut valid) = (0, 0);
        for entry in std::fs::read_dir(dir).unwrap() {
            let input = std::fs::read(entry.unwrap().path()).unwrap();
            holds(&input);
            n += 1;
            // What a client would send for each valid request parses back to it.
            if let Ok(r) = parse(trim(&input)) {
                let line = r.to_line();
                assert_eq!(parse(&line[..line.len() - 1]), Ok(r.clone()), "{line:?}");
                valid += 1;
            }
        }
        assert!(n >= 15, "corpus has {n} inputs");
        assert!(valid >= 4, "{valid} valid requests in the corpus");
    }

    fn trim(b: &[u8]) -> &[u8] {
        b.strip_suffix(b"\n").unwrap_or(b)
    }

    #[test]
    fn every_request_round_trips_through_its_line() {
        let filter = Filter {
            pids: vec![1, 7],
            comms: vec!["nginx".into()],
            ports: vec![443],
            proto: Some(Proto::Udp),
            events: vec![],
        };
        let subscribe = Filter {
            events: vec![EventKind::Connect, EventKind::Close],
            ..filter.clone()
        };
        for r in [
            Request::Status,
            Request::List(Filter::default()),
            Request::List(filter),
            Request::Subscribe(subscribe),
            Request::Subscribe(Filter::default()),
            Request::Counters {
                filter: Filter {
                    pids: vec![3],
                    ..Filter::default()
                },
                every: Duration::from_millis(250),
            },
            Request::Lookup(Lookup {
                proto: Some(Proto::Tcp),
                src: "[::1]:5000".parse().unwrap(),
                dst: "10.0.0.1:80".parse().unwrap(),
                netns: Some(4026531840),
            }),
            Request::Lookup(Lookup {
                proto: None,
                src: "127.0.0.1:1".parse().unwrap(),
                dst: "127.0.0.1:2".parse().unwrap(),
                netns: None,
            }),
        ] {
            let line = r.to_line();
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(
                parse(trim(&line)),
                Ok(r.clone()),
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
        assert_eq!(Request::Status.to_line(), b"{\"op\":\"status\"}\n");
    }

    #[test]
    fn mutated_requests_never_panic() {
        // A small deterministic mutation fuzzer for CI; cargo-fuzz goes deeper.
        let seeds: [&[u8]; 3] = [
            br#"{"op":"lookup","src":"127.0.0.1:5000","dst":"[::1]:80","proto":"tcp"}"#,
            br#"{"op":"subscribe","filter":{"event":["connect"],"port":[443],"comm":["x"]}}"#,
            br#"{"op":"list","filter":{"pid":[1]}}"#,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut input = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let pos = (next() as usize) % input.len();
                match next() % 3 {
                    0 => input[pos] = next() as u8,
                    1 => input.insert(pos, next() as u8),
                    _ => {
                        input.remove(pos);
                    }
                }
                if input.is_empty() {
                    input.push(b'{');
                }
            }
            holds(&input);
        }
    }

    #[test]
    fn responses_are_one_line() {
        let line = Response::error(&ApiError::bad_request("a\nb")).to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["code"], "bad_request");
        assert_eq!(
            Response::subscribed().to_line(),
            b"{\"ok\":true,\"subscribed\":true}\n"
        );
    }
}
