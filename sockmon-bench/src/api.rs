//! A minimal client of the daemon's local API (docs/api.md): one JSON line
//! per request, one per response, over a Unix stream socket. Written here,
//! not borrowed from sockmon, so the benchmark measures the protocol as any
//! client sees it.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Api {
    path: PathBuf,
}

/// The parts of `status` the benchmark uses.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub table_sockets: u64,
    /// Live processes the table knows as owners (`table.processes`).
    pub table_processes: Option<u64>,
    /// Re-snapshots after losses.
    pub reconciliations: Option<u64>,
    pub dropped: BTreeMap<String, u64>,
    /// Events since start, all kinds (`events_total` summed).
    pub events_total: u64,
    /// Clients reading a stream (`subscribe` or `counters`).
    pub subscribers: u64,
}

/// The drop counter that is not the kernel's: a subscriber too slow for
/// its queue (reported to that subscriber in its stream).
pub const SUBSCRIBER_LAGGED: &str = "subscriber_lagged";

/// Kernel-side drops of a `dropped` object (everything but a slow subscriber's).
pub fn kernel_drops(dropped: &BTreeMap<String, u64>) -> u64 {
    dropped
        .iter()
        .filter(|(k, _)| k.as_str() != SUBSCRIBER_LAGGED)
        .map(|(_, v)| v)
        .sum()
}

/// What each counter of a `dropped` object grew by since `base` (counters
/// that did not grow left out).
pub fn delta(now: &BTreeMap<String, u64>, base: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(base.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

impl Api {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// The API socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&self) -> anyhow::Result<UnixStream> {
        let s = UnixStream::connect(&self.path)
            .with_context(|| format!("connecting to {}", self.path.display()))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        Ok(s)
    }

    /// One request on a fresh connection; fails unless the answer has `"ok":true`.
    pub fn request(&self, req: &Value) -> anyhow::Result<Value> {
        let stream = self.connect()?;
        let mut reader = BufReader::new(stream.try_clone()?);
        send(&stream, req)?;
        let resp = read_json_line(&mut reader)?;
        check_ok(&resp)?;
        Ok(resp)
    }

    pub fn status(&self) -> anyhow::Result<Status> {
        let resp = self.request(&json!({"op": "status"}))?;
        parse_status(&resp)
    }

    /// A connection kept open for many requests.
    pub fn open(&self) -> anyhow::Result<Conn> {
        let stream = self.connect()?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Conn { stream, reader })
    }

    /// One `lookup` round trip as a new client makes it: connect, one
    /// request line, one response line. Returns the time and whether a
    /// socket matched.
    pub fn lookup(&self, src: &str, dst: &str) -> anyhow::Result<(Duration, bool)> {
        let line = lookup_line(src, dst);
        let t0 = Instant::now();
        let mut stream = self.connect()?;
        stream.write_all(line.as_bytes())?;
        let mut resp = String::new();
        BufReader::new(&stream).read_line(&mut resp)?;
        let elapsed = t0.elapsed();
        Ok((elapsed, parse_lookup(&resp)?))
    }

    /// Polls `status` until the table's size satisfies `done`, or has not
    /// changed for 3 s (events the daemon never got), or a minute passed;
    /// returns the last size.
    pub fn wait_table(&self, done: impl Fn(u64) -> bool) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut last, mut moved) = (u64::MAX, Instant::now());
        loop {
            let n = self.status()?.table_sockets;
            if n != last {
                (last, moved) = (n, Instant::now());
            }
            if done(n) || moved.elapsed() > Duration::from_secs(3) || Instant::now() > deadline {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Subscribes to events on `port`; returns the stream after the
    /// acknowledgement, to be read line by line.
    pub fn subscribe(&self, port: u16) -> anyhow::Result<BufReader<UnixStream>> {
        self.subscribe_filter(&json!({"port": [port]}))
    }

    /// Subscribes with a `filter` object (docs/api.md); returns the stream
    /// after the acknowledgement.
    pub fn subscribe_filter(&self, filter: &Value) -> anyhow::Result<BufReader<UnixStream>> {
        let stream = self.connect()?;
        let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone()?);
        send(&stream, &json!({"op": "subscribe", "filter": filter}))?;
        let ack = read_json_line(&mut reader)?;
        check_ok(&ack)?;
        stream.set_read_timeout(None)?;
        Ok(reader)
    }

    /// The table's sockets (`list`, unfiltered): `SOCKET` objects.
    pub fn list(&self) -> anyhow::Result<Vec<Value>> {
        let mut resp = self.request(&json!({"op": "list"}))?;
        match resp["sockets"].take() {
            Value::Array(v) => Ok(v),
            other => bail!("`list` answered no socket array: {other}"),
        }
    }
}

/// An open API connection.
pub struct Conn {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Conn {
    /// One `lookup` request and its response on this connection.
    pub fn lookup(&mut self, src: &str, dst: &str) -> anyhow::Result<(Duration, bool)> {
        let line = lookup_line(src, dst);
        let t0 = Instant::now();
        self.stream.write_all(line.as_bytes())?;
        let mut resp = String::new();
        self.reader.read_line(&mut resp)?;
        let elapsed = t0.elapsed();
        Ok((elapsed, parse_lookup(&resp)?))
    }
}

fn lookup_line(src: &str, dst: &str) -> String {
    format!("{{\"op\":\"lookup\",\"src\":\"{src}\",\"dst\":\"{dst}\",\"proto\":\"tcp\"}}\n")
}

/// Whether a `lookup` response found a socket (an error response is an error).
fn parse_lookup(resp: &str) -> anyhow::Result<bool> {
    let v: Value = serde_json::from_str(resp).with_context(|| format!("bad response {resp:?}"))?;
    check_ok(&v)?;
    Ok(v["sockets"].as_array().is_some_and(|a| !a.is_empty()))
}

fn send(mut stream: &UnixStream, req: &Value) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    Ok(())
}

fn read_json_line(reader: &mut impl std::io::BufRead) -> anyhow::Result<Value> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("the daemon closed the connection without answering");
    }
    serde_json::from_str(&line).with_context(|| format!("bad response {line:?}"))
}

fn check_ok(v: &Value) -> anyhow::Result<()> {
    if v["ok"] != Value::Bool(true) {
        bail!("the daemon answered an error: {v}");
    }
    Ok(())
}

fn parse_status(resp: &Value) -> anyhow::Result<Status> {
    let s = &resp["status"];
    let table_sockets = s["table"]["sockets"]
        .as_u64()
        .with_context(|| format!("status has no table.sockets: {resp}"))?;
    let dropped = s["dropped"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Status {
        table_sockets,
        table_processes: s["table"]["processes"].as_u64(),
        reconciliations: s["reconciliations"].as_u64(),
        dropped,
        events_total: s["events_total"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum()),
        subscribers: s["subscribers"].as_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_from_the_documented_shape() {
        let v: Value = serde_json::from_str(
            r#"{"ok":true,"status":{"version":"0.1.0","dropped":{"ring_full":3,"pending_full":1,
            "pending_missing":0,"subscriber_lagged":7},"table":{"sockets":1234,"processes":56,"cap":10},
            "reconciliations":2,"events_total":{"bind":10,"connect":40,"close":80},"subscribers":3}}"#,
        )
        .unwrap();
        let s = parse_status(&v).unwrap();
        assert_eq!(s.table_sockets, 1234);
        assert_eq!((s.events_total, s.subscribers), (130, 3));
        assert_eq!((s.table_processes, s.reconciliations), (Some(56), Some(2)));
        assert_eq!(kernel_drops(&s.dropped), 4);
        assert_eq!(s.dropped["subscriber_lagged"], 7);
        assert!(parse_status(&serde_json::json!({"ok":true})).is_err());
    }

    #[test]
    fn delta_keeps_growth_only() {
        let base = BTreeMap::from([("ring_full".to_string(), 5)]);
        let now = BTreeMap::from([
            ("ring_full".to_string(), 8),
            ("pending_full".to_string(), 0),
        ]);
        assert_eq!(
            delta(&now, &base),
            BTreeMap::from([("ring_full".to_string(), 3)])
        );
    }

    #[test]
    fn errors_are_errors() {
        assert!(check_ok(&serde_json::json!({"ok":false,"code":"busy"})).is_err());
        assert!(check_ok(&serde_json::json!({"ok":true})).is_ok());
    }
}
