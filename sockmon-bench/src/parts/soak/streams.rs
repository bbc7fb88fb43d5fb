//! The soak's two subscriptions, read while it runs: one filtered to the
//! listener's and receiver's ports (the TCP events carry the listener's
//! port on one side), one to the churn processes' name and UDP (a fresh
//! socket's implicit bind and its close carry only its own ephemeral port).
//! Their readers count events by kind and `lost` lines by cause; after the
//! churn, [`wait_quiet`] waits until they have carried what was expected or
//! stopped moving.

use std::{
    collections::BTreeMap,
    io::BufRead,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::json;

use super::accounting::total;
use crate::{
    api::{Api, SUBSCRIBER_LAGGED, delta},
    events::raw_field,
};

/// The stream counts as quiet when nothing moved for this long.
const STILL: Duration = Duration::from_secs(2);

/// Live progress of the stream readers, for deciding when they are done.
#[derive(Debug, Default)]
pub(super) struct Live {
    /// Events counted (the churn's and the server's).
    events: AtomicU64,
    /// Events the stream said it lost.
    lost: AtomicU64,
}

/// What the streams carried.
#[derive(Clone, Debug, Default)]
pub(super) struct Tally {
    /// Counted events, by kind.
    pub by_kind: BTreeMap<String, u64>,
    /// `lost` lines' counts, by cause.
    pub lost: BTreeMap<String, u64>,
    /// Events of neither the churn nor the server's sockets' ends.
    pub unrelated: u64,
    /// Why a reader stopped before its stream ended, if it did.
    pub error: Option<String>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        for (k, v) in o.by_kind {
            *self.by_kind.entry(k).or_default() += v;
        }
        for (k, v) in o.lost {
            *self.lost.entry(k).or_default() += v;
        }
        self.unrelated += o.unrelated;
        self.error = self.error.take().or(o.error);
    }
}

/// Which events of a stream are counted.
#[derive(Clone, Copy, Debug)]
enum Select {
    /// TCP events on the listener's port, UDP events on the receiver's,
    /// but no bind or listen (only the server binds these ports, before the
    /// stream was filtered to them).
    Ports { tcp: u16, udp: u16 },
    /// Every UDP event (the stream is filtered to the churn's name).
    ChurnUdp,
}

impl Select {
    fn counts(self, kind: &str, proto: Option<&str>, src: Option<u16>, dst: Option<u16>) -> bool {
        let on = |p: u16| src == Some(p) || dst == Some(p);
        let server_setup = kind == "bind" || kind == "listen";
        match (self, proto) {
            (Self::Ports { tcp, .. }, Some("tcp")) => on(tcp) && !server_setup,
            (Self::Ports { udp, .. }, Some("udp")) => on(udp) && !server_setup,
            (Self::ChurnUdp, Some("udp")) => true,
            _ => false,
        }
    }
}

pub(super) struct Streams {
    pub live: Arc<Live>,
    readers: Vec<thread::JoinHandle<Tally>>,
}

impl Streams {
    pub fn open(api: &Api, port: u16, udp_port: u16, comm: &str) -> anyhow::Result<Self> {
        let live = Arc::new(Live::default());
        let subs = [
            (
                json!({"port": [port, udp_port]}),
                Select::Ports {
                    tcp: port,
                    udp: udp_port,
                },
            ),
            (json!({"comm": [comm], "proto": "udp"}), Select::ChurnUdp),
        ];
        let mut readers = Vec::new();
        for (filter, select) in subs {
            let stream = api.subscribe_filter(&filter)?;
            let live = Arc::clone(&live);
            readers.push(thread::spawn(move || count(stream, select, &live)));
        }
        Ok(Self { live, readers })
    }

    /// Waits for the readers (their streams end when the daemon stops).
    pub fn join(self, errors: &mut Vec<String>) -> Tally {
        let mut all = Tally::default();
        for r in self.readers {
            match r.join() {
                Ok(t) => all.merge(t),
                Err(_) => errors.push("a stream reader panicked".into()),
            }
        }
        if let Some(e) = all.error.take() {
            errors.push(format!("reading the event stream: {e}"));
        }
        all
    }
}

/// Reads NDJSON events until EOF (or an error, kept in the tally).
fn count(mut r: impl BufRead, select: Select, live: &Live) -> Tally {
    let mut tally = Tally::default();
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return tally,
            Ok(_) => tally_line(&line, select, live, &mut tally),
            Err(e) => {
                tally.error = Some(e.to_string());
                return tally;
            }
        }
    }
}

fn tally_line(line: &str, select: Select, live: &Live, tally: &mut Tally) {
    let port = |k| raw_field(line, k).and_then(|p| p.parse::<u16>().ok());
    match raw_field(line, "event") {
        Some("lost") => {
            let n = raw_field(line, "count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let cause = raw_field(line, "cause").unwrap_or("unknown");
            *tally.lost.entry(cause.to_string()).or_default() += n;
            live.lost.fetch_add(n, Ordering::Relaxed);
        }
        Some(kind) => {
            if select.counts(
                kind,
                raw_field(line, "proto"),
                port("src_port"),
                port("dst_port"),
            ) {
                *tally.by_kind.entry(kind.to_string()).or_default() += 1;
                live.events.fetch_add(1, Ordering::Relaxed);
            } else {
                tally.unrelated += 1;
            }
        }
        None => {}
    }
}

/// Waits until the streams carried (or the daemon counted as dropped)
/// `expected` events, or stopped moving, or `max` passed. Returns the
/// daemon's drops since `base` other than a slow subscriber's (those arrive
/// in the stream as `lost` lines).
pub(super) fn wait_quiet(
    live: &Live,
    expected: u64,
    api: &Api,
    base: &BTreeMap<String, u64>,
    max: Duration,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let start = Instant::now();
    let (mut last, mut moved) = (u64::MAX, Instant::now());
    loop {
        let kernel: BTreeMap<String, u64> = delta(&api.status()?.dropped, base)
            .into_iter()
            .filter(|(k, _)| k != SUBSCRIBER_LAGGED)
            .collect();
        let seen = live.events.load(Ordering::Relaxed)
            + live.lost.load(Ordering::Relaxed)
            + total(&kernel);
        if seen != last {
            (last, moved) = (seen, Instant::now());
        }
        // A second at least, so the daemon's drop counters are current.
        let counted = seen >= expected && start.elapsed() > Duration::from_millis(1200);
        if counted || moved.elapsed() > STILL || start.elapsed() > max {
            return Ok(kernel);
        }
        thread::sleep(Duration::from_millis(100));
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = r#"{"v":1,"time":"t","event":"connect","proto":"tcp","family":"ipv4","src_ip":"127.0.0.1","src_port":40312,"dst_ip":"127.0.0.1","dst_port":8080,"pid":1,"tid":1,"comm":"smchurn1","uid":0,"error":null}"#;
    const UDP_BIND: &str = r#"{"v":1,"time":"t","event":"bind","proto":"udp","family":"ipv4","src_ip":"0.0.0.0","src_port":8080,"dst_ip":"0.0.0.0","dst_port":0,"pid":1,"tid":1,"comm":"smchurn1","uid":0,"error":null,"implicit":true}"#;

    #[test]
    fn streams_count_only_their_own_events() {
        let ports = Select::Ports {
            tcp: 8080,
            udp: 9090,
        };
        let live = Live::default();
        // A UDP socket whose ephemeral port is numerically the listener's
        // belongs to the UDP stream, not the port stream.
        let other_tcp = TCP.replace("8080", "7070");
        let lost = r#"{"v":1,"event":"lost","cause":"subscriber_lagged","count":3}"#;
        let text = format!("{TCP}\n{UDP_BIND}\n{other_tcp}\n{lost}\n{TCP}\n");
        let t = count(std::io::Cursor::new(text.clone()), ports, &live);
        assert_eq!(t.by_kind, BTreeMap::from([("connect".into(), 2)]));
        assert_eq!((t.unrelated, t.lost["subscriber_lagged"]), (2, 3));
        let u = count(std::io::Cursor::new(text), Select::ChurnUdp, &live);
        assert_eq!(u.by_kind, BTreeMap::from([("bind".into(), 1)]));
        assert_eq!(live.events.load(Ordering::Relaxed), 3);
        assert_eq!(live.lost.load(Ordering::Relaxed), 6);
        // The server's own bind is not counted, its close is.
        let receiver = UDP_BIND.replace("8080", "9090");
        let close = receiver.replace("\"bind\"", "\"close\"");
        let r = count(
            std::io::Cursor::new(format!("{receiver}\n{close}\n")),
            ports,
            &Live::default(),
        );
        assert_eq!(r.by_kind, BTreeMap::from([("close".into(), 1)]));
        assert_eq!(r.unrelated, 1);
    }
}
