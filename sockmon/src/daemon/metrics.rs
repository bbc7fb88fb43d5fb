//! The optional Prometheus endpoint (`metrics.listen`, off by default):
//! OpenMetrics text on `GET /metrics`, which Prometheus scrapes natively.
//!
//! The HTTP side is hyper (HTTP/1 only) and the encoding prometheus-client,
//! both maintained, rather than a parser of our own running as root. What
//! an HTTP client may cost is bounded: at most `metrics.max_connections`
//! connections at once (beyond, a new one is closed at once), each with a
//! deadline for its request head and for the whole exchange, one request a
//! connection, and accept errors (out of descriptors) back off instead of
//! spinning the runtime thread.
//!
//! Label sets are bounded by construction: event kinds and loss causes are
//! fixed lists; nothing is labelled by pid, port or address.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Bytes, header, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

use crate::{
    engine::{EngineHandle, stats::Status},
    snapshot::Source,
};

/// Default bound on simultaneous metrics connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a whole exchange may take (a client that does not read is dropped).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves metrics on `listener` until `stop` turns true, with at most
/// `max_connections` connections at once.
pub async fn serve(
    listener: TcpListener,
    engine: EngineHandle,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut backoff = Duration::from_millis(10);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    backoff = Duration::from_millis(10);
                    s
                }
                Err(e) => {
                    tracing::warn!("accepting a metrics connection failed: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream); // over the bound: closed at once, costs nothing more
            continue;
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let engine = engine.clone();
                async move { Ok::<_, Infallible>(respond(&req, &engine).await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(16 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, conn).await;
        });
    }
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn respond(
    req: &Request<hyper::body::Incoming>,
    engine: &EngineHandle,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = header::HeaderValue::from_str(content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match engine.status().await {
        Ok(s) => reply(StatusCode::OK, CONTENT_TYPE, render(&s)),
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n".into(),
        ),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabel {
    reason: String,
    severity: String,
    rule: String,
    port_class: String,
}

/// The policy of allowed listeners: alerts by reason, severity, rule and
/// port class, and what the policy thread did.
fn register_policy(registry: &mut Registry, p: &crate::policy::PolicyStatus) {
    let alerts = Family::<AlertLabel, Counter>::default();
    for a in &p.alerts {
        alerts
            .get_or_create(&AlertLabel {
                reason: a.reason.clone(),
                severity: a.severity.clone(),
                rule: label(&a.rule),
                port_class: a.port_class.clone(),
            })
            .inc_by(a.count);
    }
    registry.register(
        "sockmon_policy_alerts",
        "Alerts raised, by reason, severity, rule and port class",
        alerts,
    );
    let counters: [(&str, &str, u64); 5] = [
        (
            "sockmon_policy_listeners_judged",
            "Listeners judged against the policy",
            p.evaluated,
        ),
        (
            "sockmon_policy_listeners_dropped",
            "Listeners not judged: the policy queue was full",
            p.dropped,
        ),
        (
            "sockmon_policy_alerts_dropped",
            "Alerts lost: the stream queue was full",
            p.alerts_dropped,
        ),
        (
            "sockmon_policy_journal_errors",
            "Alerts the journal refused",
            p.journal_errors,
        ),
        ("sockmon_policy_reloads", "Policy reloads", p.reloads),
    ];
    for (name, help, v) in counters {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        registry.register(name, help, c);
    }
    let rules = Gauge::<i64>::default();
    rules.set(i64::try_from(p.rules).unwrap_or(i64::MAX));
    registry.register(
        "sockmon_policy_rules",
        "Rules of the policy in force",
        rules,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttachLabel {
    mode: String,
    kind: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabel {
    unit: String,
}

type UnitField = fn(&crate::engine::totals::UnitTotals) -> u64;

/// A label value escaped as the text format requires (backslash, quote,
/// newline): prometheus-client writes label values as they are, and unit
/// names come from cgroup names that users choose.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Flows (issue 13): per-unit totals of closed TCP connections. The label
/// set is the first units seen since start (then `other`), so it is bounded
/// and every counter is monotonic.
fn register_units(registry: &mut Registry, s: &Status) {
    let rows: [(&str, &str, UnitField); 4] = [
        (
            "sockmon_unit_connections",
            "TCP connections closed, by systemd unit",
            |t| t.connections,
        ),
        (
            "sockmon_unit_bytes_sent",
            "Bytes sent by closed TCP connections, by systemd unit",
            |t| t.bytes_sent,
        ),
        (
            "sockmon_unit_bytes_received",
            "Bytes received by closed TCP connections, by systemd unit",
            |t| t.bytes_received,
        ),
        (
            "sockmon_unit_retransmits",
            "Segments retransmitted by closed TCP connections, by systemd unit",
            |t| t.retransmits,
        ),
    ];
    for (name, help, get) in rows {
        let family = Family::<UnitLabel, Counter>::default();
        for (unit, t) in &s.units {
            family
                .get_or_create(&UnitLabel { unit: label(unit) })
                .inc_by(get(t));
        }
        registry.register(name, help, family);
    }
}

/// The OpenMetrics exposition of `s`.
pub fn render(s: &Status) -> String {
    let mut registry = Registry::default();
    let attach = Family::<AttachLabel, Gauge>::default();
    for (k, v) in &s.attach.kinds {
        attach
            .get_or_create(&AttachLabel {
                mode: s.attach.mode.clone(),
                kind: k.clone(),
                source: v.clone(),
            })
            .set(1);
    }
    registry.register(
        "sockmon_attach_info",
        "The hook family that reports each event kind (1), and the attach mode loaded",
        attach,
    );
    let events = Family::<KindLabel, Counter>::default();
    for (k, v) in &s.events_total {
        events
            .get_or_create(&KindLabel { kind: k.clone() })
            .inc_by(*v);
    }
    registry.register("sockmon_events", "Socket events seen, by kind", events);
    let dropped = Family::<CauseLabel, Counter>::default();
    for (c, v) in &s.dropped {
        dropped
            .get_or_create(&CauseLabel { cause: c.clone() })
            .inc_by(*v);
    }
    registry.register("sockmon_dropped", "Events lost, by cause", dropped);
    register_units(&mut registry, s);
    let counters: [(&str, &str, u64); 4] = [
        (
            "sockmon_drift",
            "Sockets with a local address that no event reported (first seen at release or by a re-check)",
            s.drift,
        ),
        (
            "sockmon_reconciliations",
            "Re-snapshots of the table after lost events",
            s.reconciliations,
        ),
        (
            "sockmon_sink_open_failures",
            "Sink opens that failed (at start, on reload, on retry)",
            s.sinks.open_failures,
        ),
        (
            "sockmon_sink_write_failures",
            "Sink writes that failed (disk full, I/O errors)",
            s.sinks.write_failures,
        ),
    ];
    for (name, help, v) in counters {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        registry.register(name, help, c);
    }
    // 1 for each source the start-up snapshot used (bounded: two names).
    let sources = Family::<SourceLabel, Gauge>::default();
    for source in [Source::SockDiag, Source::ProcNet] {
        let used = s
            .snapshot
            .as_ref()
            .is_some_and(|x| x.source.split('+').any(|n| n == source.name()));
        sources
            .get_or_create(&SourceLabel {
                source: source.name().to_string(),
            })
            .set(i64::from(used));
    }
    registry.register(
        "sockmon_snapshot_source",
        "Sources the start-up snapshot read sockets from (sock_diag, proc_net): 1 if used",
        sources,
    );
    let snapshot_s = s.snapshot.as_ref().map_or(0.0, |x| x.duration_ms / 1e3);
    let gauges: [(&str, &str, f64); 7] = [
        (
            "sockmon_table_sockets",
            "Sockets in the live table",
            s.table.sockets as f64,
        ),
        (
            "sockmon_table_processes",
            "Processes holding sockets in the table",
            s.table.processes as f64,
        ),
        (
            "sockmon_table_evictions",
            "Sockets evicted because the table was full",
            s.table.evictions as f64,
        ),
        (
            "sockmon_api_clients",
            "Connected API clients",
            s.clients as f64,
        ),
        (
            "sockmon_api_subscribers",
            "API clients subscribed to the event stream",
            s.subscribers as f64,
        ),
        (
            "sockmon_snapshot_duration_seconds",
            "Duration of the start-up snapshot",
            snapshot_s,
        ),
        (
            "sockmon_uptime_seconds",
            "Seconds since the daemon started",
            s.uptime_s,
        ),
    ];
    for (name, help, v) in gauges {
        let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        g.set(v);
        registry.register(name, help, g);
    }
    if let Some(p) = &s.policy {
        register_policy(&mut registry, p);
    }
    let mut out = String::new();
    if encode(&mut out, &registry).is_err() {
        out = "# cannot encode the metrics\n# EOF\n".into();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::stats::{SinkStatus, SnapshotStatus, TableStatus};

    #[test]
    fn exposition_has_bounded_labels_and_every_family() {
        let s = Status {
            version: "0".into(),
            uptime_s: 3.5,
            probes_attached: true,
            attach: crate::engine::stats::AttachStatus {
                mode: "socket".into(),
                fallback: None,
                kinds: BTreeMap::from([("bind".into(), "socket".into())]),
            },
            events_total: BTreeMap::from([("connect".into(), 4), ("close".into(), 2)]),
            events_per_s: BTreeMap::new(),
            dropped: BTreeMap::from([("ring_full".into(), 1)]),
            table: TableStatus {
                sockets: 10,
                processes: 2,
                cap: 100,
                evictions: 0,
            },
            snapshot: Some(SnapshotStatus {
                sockets: 8,
                duration_ms: 12.5,
                time: String::new(),
                source: "proc_net".into(),
                fallback: Some("sock_diag: the kernel refused the sock_diag dump".into()),
            }),
            reconciliations: 0,
            drift: 7,
            clients: 1,
            subscribers: 0,
            sinks: SinkStatus {
                open_failures: 3,
                write_failures: 0,
            },
            units: BTreeMap::from([(
                "user@1000:a\"b.service".into(),
                crate::engine::totals::UnitTotals {
                    connections: 3,
                    bytes_sent: 100,
                    bytes_received: 200,
                    retransmits: 1,
                },
            )]),
            policy: Some(crate::policy::PolicyStatus {
                enabled: true,
                rules: 4,
                evaluated: 9,
                dropped: 0,
                partial: 1,
                alerts_dropped: 0,
                journal_errors: 0,
                reloads: 2,
                alerts: vec![crate::policy::AlertCount {
                    reason: "not_allowed".into(),
                    severity: "warning".into(),
                    rule: "a\"b".into(),
                    port_class: "registered".into(),
                    count: 5,
                }],
            }),
        };
        let text = render(&s);
        assert!(
            text.contains("sockmon_events_total{kind=\"connect\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("sockmon_dropped_total{cause=\"ring_full\"} 1\n"));
        assert!(
            text.contains("sockmon_sink_open_failures_total 3\n"),
            "{text}"
        );
        assert!(text.contains("sockmon_table_sockets 10.0\n"), "{text}");
        assert!(text.contains("sockmon_snapshot_duration_seconds 0.0125\n"));
        assert!(text.contains("sockmon_snapshot_source{source=\"proc_net\"} 1\n"));
        assert!(text.contains("sockmon_snapshot_source{source=\"sock_diag\"} 0\n"));
        assert!(text.contains("# TYPE sockmon_uptime_seconds gauge\n"));
        assert!(
            text.contains("sockmon_policy_alerts_total{reason=\"not_allowed\",severity=\"warning\",rule=\"a\\\"b\",port_class=\"registered\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("sockmon_policy_listeners_judged_total 9\n"));
        assert!(text.contains("sockmon_policy_reloads_total 2\n"));
        assert!(text.contains("sockmon_drift_total 7\n"), "{text}");
        assert!(text.contains("sockmon_policy_rules 4\n"));
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains(
                "sockmon_attach_info{mode=\"socket\",kind=\"bind\",source=\"socket\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("sockmon_unit_bytes_sent_total{unit=\"user@1000:a\\\"b.service\"} 100\n"),
            "{text}"
        );
        assert!(
            text.contains("sockmon_unit_connections_total{unit=\"user@1000:a\\\"b.service\"} 3\n")
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.contains("pid=") && !line.contains("port="), "{line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
