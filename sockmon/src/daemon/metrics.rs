//! The optional Prometheus endpoint (`metrics.listen`, off by default):
//! plain-text exposition on `GET /metrics`.
//!
//! Label sets are bounded by construction: event kinds and loss causes are
//! fixed lists; nothing is labelled by pid, port or address.

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::{
    engine::{EngineHandle, stats::Status},
    snapshot::Source,
};

/// Serves metrics on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, engine: EngineHandle, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), respond(stream, &engine)).await;
        });
    }
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn respond(mut stream: TcpStream, engine: &EngineHandle) -> std::io::Result<()> {
    let mut head = [0u8; 2048];
    let mut n = 0;
    while n < head.len() && !head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        let r = stream.read(&mut head[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let first = head[..n].split(|b| *b == b'\n').next().unwrap_or_default();
    let (status, body) =
        if first.starts_with(b"GET /metrics ") || first.starts_with(b"GET /metrics\r") {
            match engine.status().await {
                Ok(s) => ("200 OK", render(&s)),
                Err(_) => ("503 Service Unavailable", "shutting down\n".into()),
            }
        } else {
            ("404 Not Found", "try /metrics\n".into())
        };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}

/// The Prometheus text exposition of `s`.
pub fn render(s: &Status) -> String {
    let mut o = String::new();
    family(
        &mut o,
        "sockmon_attach_info",
        "gauge",
        "The hook family that reports each event kind (1), and the attach mode loaded.",
    );
    for (k, v) in &s.attach.kinds {
        let _ = writeln!(
            o,
            "sockmon_attach_info{{mode=\"{}\",kind=\"{k}\",source=\"{v}\"}} 1",
            s.attach.mode
        );
    }
    family(
        &mut o,
        "sockmon_events_total",
        "counter",
        "Socket events seen, by kind.",
    );
    for (k, v) in &s.events_total {
        let _ = writeln!(o, "sockmon_events_total{{kind=\"{k}\"}} {v}");
    }
    family(
        &mut o,
        "sockmon_dropped_total",
        "counter",
        "Events lost, by cause.",
    );
    for (c, v) in &s.dropped {
        let _ = writeln!(o, "sockmon_dropped_total{{cause=\"{c}\"}} {v}");
    }
    let snapshot_s = s.snapshot.as_ref().map_or(0.0, |x| x.duration_ms / 1e3);
    family(
        &mut o,
        "sockmon_reconciliations_total",
        "counter",
        "Re-snapshots of the table after lost events.",
    );
    let _ = writeln!(o, "sockmon_reconciliations_total {}", s.reconciliations);
    // 1 for each source the start-up snapshot used (bounded: two names).
    family(
        &mut o,
        "sockmon_snapshot_source",
        "gauge",
        "Sources the start-up snapshot read sockets from (sock_diag, proc_net): 1 if used.",
    );
    for source in [Source::SockDiag, Source::ProcNet] {
        let used = s
            .snapshot
            .as_ref()
            .is_some_and(|x| x.source.split('+').any(|n| n == source.name()));
        let _ = writeln!(
            o,
            "sockmon_snapshot_source{{source=\"{}\"}} {}",
            source.name(),
            u8::from(used)
        );
    }
    let gauges: [(&str, &str, f64); 7] = [
        (
            "sockmon_table_sockets",
            "Sockets in the live table.",
            s.table.sockets as f64,
        ),
        (
            "sockmon_table_processes",
            "Processes holding sockets in the table.",
            s.table.processes as f64,
        ),
        (
            "sockmon_table_evictions",
            "Sockets evicted because the table was full.",
            s.table.evictions as f64,
        ),
        (
            "sockmon_api_clients",
            "Connected API clients.",
            s.clients as f64,
        ),
        (
            "sockmon_api_subscribers",
            "API clients subscribed to the event stream.",
            s.subscribers as f64,
        ),
        (
            "sockmon_snapshot_duration_seconds",
            "Duration of the start-up snapshot.",
            snapshot_s,
        ),
        (
            "sockmon_uptime_seconds",
            "Seconds since the daemon started.",
            s.uptime_s,
        ),
    ];
    for (name, help, v) in gauges {
        family(&mut o, name, "gauge", help);
        let _ = writeln!(o, "{name} {v}");
    }
    render_units(&mut o, s);
    if let Some(p) = &s.policy {
        crate::policy::write_metrics(&mut o, p);
    }
    o
}

type UnitField = fn(&crate::engine::totals::UnitTotals) -> u64;

/// Flows (issue 13): per-unit totals of closed TCP connections. The label
/// set is the first units seen since start (then `other`), so it is bounded
/// and every counter is monotonic.
fn render_units(o: &mut String, s: &Status) {
    let rows: [(&str, &str, UnitField); 4] = [
        (
            "sockmon_unit_connections_total",
            "TCP connections closed, by systemd unit.",
            |t| t.connections,
        ),
        (
            "sockmon_unit_bytes_sent_total",
            "Bytes sent by closed TCP connections, by systemd unit.",
            |t| t.bytes_sent,
        ),
        (
            "sockmon_unit_bytes_received_total",
            "Bytes received by closed TCP connections, by systemd unit.",
            |t| t.bytes_received,
        ),
        (
            "sockmon_unit_retransmits_total",
            "Segments retransmitted by closed TCP connections, by systemd unit.",
            |t| t.retransmits,
        ),
    ];
    for (name, help, get) in rows {
        family(o, name, "counter", help);
        for (unit, t) in &s.units {
            let _ = writeln!(o, "{name}{{unit=\"{}\"}} {}", label(unit), get(t));
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::stats::{SnapshotStatus, TableStatus};

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
            clients: 1,
            subscribers: 0,
            units: BTreeMap::from([(
                "user@1000:a\"b.service".into(),
                crate::engine::totals::UnitTotals {
                    connections: 3,
                    bytes_sent: 100,
                    bytes_received: 200,
                    retransmits: 1,
                },
            )]),
            policy: None,
        };
        let text = render(&s);
        assert!(
            text.contains("sockmon_events_total{kind=\"connect\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("sockmon_dropped_total{cause=\"ring_full\"} 1\n"));
        assert!(text.contains("sockmon_table_sockets 10\n"));
        assert!(text.contains("sockmon_snapshot_duration_seconds 0.0125\n"));
        assert!(text.contains("sockmon_snapshot_source{source=\"proc_net\"} 1\n"));
        assert!(text.contains("sockmon_snapshot_source{source=\"sock_diag\"} 0\n"));
        assert!(text.contains("# TYPE sockmon_uptime_seconds gauge\n"));
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
