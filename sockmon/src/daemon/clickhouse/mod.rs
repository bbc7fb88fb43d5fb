//! The ClickHouse sink (`[sinks.clickhouse]`, off unless `url` is set):
//! every event of the daemon (or of one network namespace, `netns`) as a
//! row of one table shared by a fleet, each row tagged with `host`.
//!
//! It runs on a thread and runtime of its own, so a slow or dead server, a
//! slow spool disk or the encoding work never delays the daemon's runtime
//! (its API, its other sinks). It has its own subscription to the stream; a
//! receiver task encodes events into batches of `batch_rows` (or whatever
//! `flush_ms` gathered) and queues them in the [`backlog`] (bounded memory,
//! then the optional spool); a sender task POSTs them one at a time as
//! `INSERT INTO db.table FORMAT JSONEachRow` over HTTP/1 (plain HTTP; put a
//! TLS proxy in front for remote servers), retrying failures with
//! exponential backoff (250 ms doubling to `retry_max_ms`). Delivery is at
//! least once: a batch whose answer was lost (timeout, server killed after
//! committing) is sent again.
//!
//! Every event not delivered is counted by cause ([`LOSS_CAUSES`]) in
//! `status` and metrics (`dropped`) and announced in the stream as a `lost`
//! record.

pub mod backlog;
pub mod row;

use std::{
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use backlog::{Backlog, Batch, Loss, Spool};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Deserialize;
use tokio::sync::{Notify, oneshot};

use crate::{
    engine::{EngineHandle, StreamItem, Subscription},
    filter::Filter,
};

/// Events the subscription may queue before the sink is cut off (it only
/// has to keep up with encoding; the backlog absorbs outages).
const SUBSCRIPTION_QUEUE: usize = 65_536;
/// How long a stop waits for memory to reach the server before spooling it.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// First retry delay; it doubles up to `retry_max_ms`.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// A batch the server refuses (HTTP 4xx) this many times is given up.
const REJECTS_BEFORE_DROP: u32 = 3;

/// The sink lagged: its subscription overflowed.
pub const LAGGED: &str = "clickhouse_lagged";
/// The server refused a batch [`REJECTS_BEFORE_DROP`] times (HTTP 4xx).
pub const REJECTED: &str = "clickhouse_rejected";

/// Every cause this sink counts, as shown in `status`'s `dropped`.
pub const LOSS_CAUSES: [&str; 6] = [
    backlog::BUFFER_FULL,
    backlog::SPOOL_FULL,
    backlog::SPOOL_ERROR,
    backlog::UNSENT_AT_STOP,
    LAGGED,
    REJECTED,
];

/// `[sinks.clickhouse]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. "http://127.0.0.1:8123"; unset = off. Reloadable.
    pub url: Option<String>,
    pub database: String,
    pub table: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// The `host` column; default: this machine's hostname.
    pub host: Option<String>,
    /// Only events of this network namespace (a path such as
    /// `/run/netns/NAME` or `/proc/PID/ns/net`); default: all.
    pub netns: Option<PathBuf>,
    pub batch_rows: u64,
    pub flush_ms: u64,
    pub buffer_rows: u64,
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    pub timeout_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: None,
            database: "sockmon".into(),
            table: "events".into(),
            user: None,
            password: None,
            host: None,
            netns: None,
            batch_rows: 10_000,
            flush_ms: 1000,
            buffer_rows: 200_000,
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            timeout_ms: 10_000,
            retry_max_ms: 30_000,
        }
    }
}

impl ClickHouseConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if let Some(url) = &self.url {
            let uri: hyper::Uri = url
                .parse()
                .map_err(|e| ("url", format!("`{url}` is not a URL: {e}")))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err((
                    "url",
                    format!("`{url}` is not an http://HOST[:PORT] URL (TLS is not supported)"),
                ));
            }
        }
        for (key, v) in [("database", &self.database), ("table", &self.table)] {
            if !ident(v) {
                return Err((
                    key,
                    format!("`{v}` is not a name of letters, digits and `_`"),
                ));
            }
        }
        if let Some(h) = &self.host
            && (h.is_empty() || h.len() > 255 || h.chars().any(char::is_control))
        {
            return Err(("host", "must be 1 to 255 printable characters".into()));
        }
        for (key, p) in [("netns", &self.netns), ("spool_dir", &self.spool_dir)] {
            if let Some(p) = p
                && !p.is_absolute()
            {
                return Err((key, format!("`{}` is not an absolute path", p.display())));
            }
        }
        let ranges: [(&'static str, u64, u64, u64); 6] = [
            ("batch_rows", self.batch_rows, 1, 1_000_000),
            ("flush_ms", self.flush_ms, 10, 600_000),
            (
                "buffer_rows",
                self.buffer_rows,
                self.batch_rows,
                100_000_000,
            ),
            ("spool_max_bytes", self.spool_max_bytes, 4096, u64::MAX),
            ("timeout_ms", self.timeout_ms, 100, 3_600_000),
            ("retry_max_ms", self.retry_max_ms, 250, 3_600_000),
        ];
        for (key, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err((key, format!("{v} is not between {lo} and {hi}")));
            }
        }
        Ok(())
    }
}

/// A running ClickHouse sink.
pub struct ClickHouseSink {
    config: ClickHouseConfig,
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

impl ClickHouseSink {
    /// Starts the sink if `cfg.url` is set. A setting that cannot be applied
    /// (a namespace path that does not exist, a spool directory that cannot
    /// be created) is logged and the sink stays off.
    /// The subscription is made here, on the caller's runtime, so the sink
    /// sees every event from the moment this returns (as the other sinks do).
    pub async fn start(engine: &EngineHandle, cfg: &ClickHouseConfig) -> Option<ClickHouseSink> {
        let url = cfg.url.clone()?;
        match Setup::new(cfg, &url) {
            Ok(setup) => {
                let sub = subscribe(engine).await;
                for cause in LOSS_CAUSES {
                    engine.shared.count_sink_loss(cause, 0);
                }
                let (stop, stop_rx) = oneshot::channel();
                let (done_tx, done) = oneshot::channel();
                let engine = engine.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("clickhouse".into())
                        .spawn(move || {
                            match tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                            {
                                Ok(rt) => rt.block_on(run(engine, setup, sub, stop_rx)),
                                Err(e) => tracing::error!("clickhouse sink: no runtime: {e}"),
                            }
                            let _ = done_tx.send(());
                        });
                if let Err(e) = spawned {
                    tracing::error!("clickhouse sink: cannot start its thread: {e}");
                    return None;
                }
                tracing::info!("clickhouse sink: inserting into {url}");
                Some(ClickHouseSink {
                    config: cfg.clone(),
                    stop,
                    done,
                })
            }
            Err(e) => {
                tracing::error!("clickhouse sink not started: {e}");
                None
            }
        }
    }

    /// Stops: sends what it can within a few seconds, spools the rest.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }

    /// Restarts `sink` if its configuration changed (a reload).
    pub async fn reconfigure(
        sink: &mut Option<ClickHouseSink>,
        engine: &EngineHandle,
        cfg: &ClickHouseConfig,
    ) {
        if sink.as_ref().map(|s| &s.config) == Some(cfg) || (sink.is_none() && cfg.url.is_none()) {
            return;
        }
        if let Some(old) = sink.take() {
            old.stop().await;
        }
        *sink = ClickHouseSink::start(engine, cfg).await;
    }
}

/// What the sink's thread is handed.
struct Setup {
    cfg: ClickHouseConfig,
    insert: hyper::Uri,
    host: String,
    netns: Option<u32>,
    spool: Option<Spool>,
}

impl Setup {
    fn new(cfg: &ClickHouseConfig, url: &str) -> Result<Setup, String> {
        let mut query = format!(
            "{}/?query={}",
            url.trim_end_matches('/'),
            percent(&format!(
                "INSERT INTO {}.{} FORMAT JSONEachRow",
                cfg.database, cfg.table
            ))
        );
        if let Some(u) = &cfg.user {
            query.push_str(&format!("&user={}", percent(u)));
        }
        if let Some(p) = &cfg.password {
            query.push_str(&format!("&password={}", percent(p)));
        }
        let insert = query.parse().map_err(|e| format!("url `{url}`: {e}"))?;
        let host = match &cfg.host {
            Some(h) => h.clone(),
            None => hostname(),
        };
        let netns = match &cfg.netns {
            Some(p) => Some(
                std::fs::metadata(p)
                    .map_err(|e| format!("netns {}: {e}", p.display()))?
                    .ino() as u32,
            ),
            None => None,
        };
        let spool = match &cfg.spool_dir {
            Some(d) => Some(
                Spool::open(d, cfg.spool_max_bytes)
                    .map_err(|e| format!("spool_dir {}: {e}", d.display()))?,
            ),
            None => None,
        };
        Ok(Setup {
            cfg: cfg.clone(),
            insert,
            host,
            netns,
            spool,
        })
    }
}

/// This machine's hostname (the UTS namespace's), or "localhost".
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// State shared by the receiver and sender tasks.
struct Shared {
    engine: EngineHandle,
    backlog: Mutex<Backlog>,
    wake: Notify,
}

impl Shared {
    fn backlog(&self) -> MutexGuard<'_, Backlog> {
        self.backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts losses (status, metrics) and announces them (stream).
    fn lose(&self, losses: &[Loss]) {
        for &(cause, n) in losses {
            if n == 0 {
                continue;
            }
            tracing::warn!("clickhouse sink: {n} events lost ({cause})");
            self.engine.shared.count_sink_loss(cause, n);
            self.engine.report_lost(cause, n);
        }
    }
}

async fn run(
    engine: EngineHandle,
    setup: Setup,
    mut sub: Option<Subscription>,
    mut stop: oneshot::Receiver<()>,
) {
    let Setup {
        cfg,
        insert,
        host,
        netns,
        spool,
    } = setup;
    let shared = Arc::new(Shared {
        engine: engine.clone(),
        backlog: Mutex::new(Backlog::new(cfg.buffer_rows, spool)),
        wake: Notify::new(),
    });
    let sender = tokio::spawn(send_loop(shared.clone(), insert, cfg.clone()));
    let mut units = row::UnitCache::new(crate::kernel::cgroup::v2_root().ok());
    let mut body = Vec::with_capacity(256 * 1024);
    let mut rows = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.flush_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let seal = |body: &mut Vec<u8>, rows: &mut u64| {
        if *rows == 0 {
            return;
        }
        let batch = Batch {
            body: Bytes::from(std::mem::take(body)),
            rows: std::mem::take(rows),
        };
        let lost = shared.backlog().push(batch);
        shared.lose(&lost);
        shared.wake.notify_one();
    };
    let mut add = |item: &StreamItem, body: &mut Vec<u8>, rows: &mut u64| {
        if let StreamItem::Event(e) = item
            && netns.is_none_or(|n| n == e.netns)
        {
            row::write_row(body, e, &host, units.unit(e.cgroup_id));
            *rows += 1;
        }
    };
    loop {
        let next = async {
            match &mut sub {
                Some(s) => s.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = next => match item {
                Some(item) => {
                    add(&item, &mut body, &mut rows);
                    if rows >= cfg.batch_rows {
                        seal(&mut body, &mut rows);
                    }
                }
                None => {
                    seal(&mut body, &mut rows);
                    let missed = sub.as_ref().map_or(0, |s| s.lost.load(std::sync::atomic::Ordering::Relaxed));
                    shared.lose(&[(LAGGED, missed)]);
                    sub = subscribe(&engine).await;
                }
            },
            _ = tick.tick() => seal(&mut body, &mut rows),
            _ = &mut stop => break,
        }
    }
    if let Some(s) = &mut sub {
        while let Ok(item) = s.rx.try_recv() {
            add(&item, &mut body, &mut rows);
        }
    }
    seal(&mut body, &mut rows);
    drop(sub);
    // Give the sender a moment to deliver memory, then keep the rest.
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while shared.backlog().memory_rows() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    sender.abort();
    let _ = sender.await;
    let lost = shared.backlog().spool_all();
    shared.lose(&lost);
}

async fn subscribe(engine: &EngineHandle) -> Option<Subscription> {
    engine
        .subscribe(Filter::default(), Some(SUBSCRIPTION_QUEUE))
        .await
        .ok()
}

/// Why an insert failed.
enum Failure {
    /// Worth retrying (no connection, timeout, 5xx).
    Retry(String),
    /// The server refused this batch (4xx).
    Rejected(String),
}

async fn send_loop(shared: Arc<Shared>, insert: hyper::Uri, cfg: ClickHouseConfig) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(cfg.timeout_ms)));
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let retry_max = Duration::from_millis(cfg.retry_max_ms);
    let mut backoff = RETRY_FIRST;
    let mut failing = false;
    let mut rejects = 0u32;
    loop {
        let (batch, lost) = shared.backlog().take();
        shared.lose(&lost);
        let Some(batch) = batch else {
            shared.wake.notified().await;
            continue;
        };
        tracing::debug!("clickhouse sink: inserting {} rows", batch.rows);
        let result = post(&client, &insert, batch.body.clone(), timeout).await;
        tracing::debug!(
            "clickhouse sink: insert of {} rows: {}",
            batch.rows,
            if result.is_ok() { "done" } else { "failed" }
        );
        match result {
            Ok(()) => {
                shared.backlog().done();
                if failing {
                    tracing::info!("clickhouse sink: inserting again");
                }
                failing = false;
                backoff = RETRY_FIRST;
                rejects = 0;
            }
            Err(failure) => {
                let (why, refused) = match failure {
                    Failure::Retry(why) => (why, false),
                    Failure::Rejected(why) => (why, true),
                };
                rejects = if refused { rejects + 1 } else { 0 };
                if rejects >= REJECTS_BEFORE_DROP {
                    tracing::error!(
                        "clickhouse sink: batch of {} events refused: {why}",
                        batch.rows
                    );
                    shared.backlog().done();
                    shared.lose(&[(REJECTED, batch.rows)]);
                    rejects = 0;
                    continue;
                }
                shared.backlog().put_back();
                if !failing {
                    tracing::warn!("clickhouse sink: insert failed, retrying with backoff: {why}");
                }
                failing = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry_max);
            }
        }
    }
}

/// One `INSERT` of `body`, within `timeout` (connecting included).
async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: &hyper::Uri,
    body: Bytes,
    timeout: Duration,
) -> Result<(), Failure> {
    let req = hyper::Request::post(uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/x-ndjson")
        .body(Full::new(body))
        .map_err(|e| Failure::Rejected(e.to_string()))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| Failure::Retry(format!("{e:#}")))?;
        let status = resp.status();
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let why = format!(
            "HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&text[..text.len().min(300)]).trim()
        );
        if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
            Err(Failure::Rejected(why))
        } else {
            Err(Failure::Retry(why))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(Failure::Retry(format!("no answer within {timeout:?}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let c = ClickHouseConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert!(c.url.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let with = |f: fn(&mut ClickHouseConfig)| {
            let mut c = ClickHouseConfig::default();
            f(&mut c);
            c.validate().err().map(|e| e.0)
        };
        assert_eq!(with(|c| c.url = Some("https://x:8443".into())), Some("url"));
        assert_eq!(with(|c| c.url = Some("not a url".into())), Some("url"));
        assert_eq!(with(|c| c.url = Some("http://127.0.0.1:8123".into())), None);
        assert_eq!(with(|c| c.table = "events; DROP".into()), Some("table"));
        assert_eq!(with(|c| c.database = String::new()), Some("database"));
        assert_eq!(with(|c| c.host = Some("a\nb".into())), Some("host"));
        assert_eq!(
            with(|c| c.netns = Some("run/netns/x".into())),
            Some("netns")
        );
        assert_eq!(with(|c| c.buffer_rows = 10), Some("buffer_rows"));
        assert_eq!(with(|c| c.batch_rows = 0), Some("batch_rows"));
        assert_eq!(with(|c| c.spool_max_bytes = 10), Some("spool_max_bytes"));
    }

    #[test]
    fn the_section_parses_and_errors_name_file_line_and_key() {
        use crate::daemon::config::Config;
        let path = std::path::Path::new("/etc/sockmon/config.toml");
        let c = Config::parse(
            path,
            "[sinks.clickhouse]\nurl = \"http://10.0.0.1:8123\"\nhost = \"web-1\"\nnetns = \"/run/netns/blue\"\nspool_dir = \"/var/log/sockmon/spool\"\nbuffer_rows = 50000\n",
        )
        .unwrap();
        let ch = &c.sinks.clickhouse;
        assert_eq!(ch.url.as_deref(), Some("http://10.0.0.1:8123"));
        assert_eq!(
            (ch.host.as_deref(), ch.buffer_rows),
            (Some("web-1"), 50_000)
        );
        assert_eq!(
            ch.netns.as_deref(),
            Some(std::path::Path::new("/run/netns/blue"))
        );
        let e = Config::parse(
            path,
            "[sinks.clickhouse]\nurl = \"http://x\"\n  batch_rows = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "/etc/sockmon/config.toml:3:3: sinks.clickhouse.batch_rows: 0 is not between 1 and 1000000"
        );
        let e = Config::parse(path, "[sinks.clickhouse]\nurl = \"https://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2:1: sinks.clickhouse.url: `https://x` is not an http://"),
            "{e}"
        );
        let e = Config::parse(path, "[sinks.clickhouse]\nspool = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `spool`"), "{e}");
    }

    #[test]
    fn the_insert_query_is_percent_encoded() {
        let mut c = ClickHouseConfig {
            url: Some("http://127.0.0.1:8123/".into()),
            user: Some("fleet".into()),
            password: Some("p&ss word".into()),
            host: Some("h1".into()),
            ..Default::default()
        };
        let s = Setup::new(&c, "http://127.0.0.1:8123/").unwrap();
        assert_eq!(
            s.insert.to_string(),
            "http://127.0.0.1:8123/?query=INSERT%20INTO%20sockmon.events%20FORMAT%20JSONEachRow&user=fleet&password=p%26ss%20word"
        );
        assert_eq!(s.host, "h1");
        c.host = None;
        assert_eq!(Setup::new(&c, "http://x").unwrap().host, hostname());
        c.netns = Some("/nonexistent/netns".into());
        assert!(
            Setup::new(&c, "http://x")
                .err()
                .unwrap()
                .contains("/nonexistent/netns")
        );
    }
}
