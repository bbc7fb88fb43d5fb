//! `sockmon watch`: the live event stream on stdout.
//!
//! With a daemon running it subscribes to the daemon's stream (the probes
//! are never loaded twice); otherwise it starts its own engine (no
//! snapshot). Output is written and flushed once per batch of events read
//! together, so no event waits in a buffer. Ctrl-C and SIGTERM end it with
//! status 0 on either path, even when SIGINT was inherited ignored
//! ([`signals`]); a closed stdout (`| head`) ends it quietly.

use std::{path::Path, process::ExitCode};

use tokio::signal::unix::{SignalKind, signal};

use super::{Backend, EXIT_USAGE, backend, fail, fail_chain, print, signals};
use crate::{
    api::client::Client,
    cli::WatchConfig,
    clock::WallTime,
    engine::{Engine, EngineOptions, OnLag, StreamItem, Subscription},
    output::{self, Format, json},
};

pub fn run(cfg: WatchConfig, socket: &Path, no_daemon: bool) -> ExitCode {
    // First thing, whichever path follows: SIGINT may arrive ignored.
    if let Err(e) = signals::install() {
        return fail(&format!("cannot install signal handlers: {e}"), 1);
    }
    // A policy of its own needs probes of its own.
    let policy = match &cfg.policy {
        None => None,
        Some(p) => match crate::policy::load_file(p) {
            Ok((_, p)) => Some(std::sync::Arc::new(p)),
            Err(e) => return fail(&e, EXIT_USAGE),
        },
    };
    match backend(socket, no_daemon || policy.is_some()) {
        Err(code) => code,
        Ok(Backend::Daemon(client)) => from_daemon(client, &cfg),
        Ok(Backend::Alone) => alone(cfg, policy),
    }
}

/// Prints the daemon's stream, filtered by the daemon.
fn from_daemon(mut client: Client, cfg: &WatchConfig) -> ExitCode {
    let attach = match client.status() {
        Ok(s) => s.attach,
        Err(e) => return fail(&e, 1),
    };
    if let Err(e) = client.subscribe(cfg.filter.clone()) {
        return fail(&e, 1);
    }
    // A signal shuts the socket down, which ends the blocking read below.
    signals::shutdown_on_stop(client.as_raw_fd());
    eprintln!(
        "sockmon: watching through the daemon; {}. Ctrl-C to stop.",
        attach_line(&attach)
    );
    loop {
        let line = match client.next_line() {
            _ if signals::requested() => return ExitCode::SUCCESS,
            Ok(Some(l)) => l,
            Ok(None) => return fail(&"the daemon closed the stream", 1),
            Err(e) => return fail(&e, 1),
        };
        let out = match cfg.format {
            Format::Json => line.into_bytes(),
            Format::Human => match json::parse_line(&line) {
                Some(json::Line::Event(e)) => {
                    let mut buf = Vec::new();
                    output::human::write_event(&mut buf, &e);
                    buf
                }
                Some(json::Line::Lost { cause, count }) => {
                    eprintln!("sockmon: {count} events lost ({cause})");
                    continue;
                }
                None => continue,
            },
        };
        if let Err(code) = print(&out) {
            return code;
        }
    }
}

/// Loads the probes in this process.
fn alone(cfg: WatchConfig, policy: Option<std::sync::Arc<crate::policy::Policy>>) -> ExitCode {
    let opts = EngineOptions {
        policy,
        load: cfg.load,
        drain_interval: cfg.drain_interval,
        table_cap: cfg.table_cap,
        snapshot: false,
        flow_interval: cfg.flow_interval,
        ..EngineOptions::default()
    };
    let mut prepared = match Engine::prepare(opts) {
        Ok(p) => p,
        Err(e) => return fail_chain(&e, if e.is_privileges() { EXIT_USAGE } else { 1 }),
    };
    if signals::requested() {
        return ExitCode::SUCCESS; // stopped while the probes were loading
    }
    // Subscribed before the first event is applied: nothing is missed; if
    // we fall behind, the misses are counted and said, and we go on.
    let sub = prepared.subscribe_with(cfg.filter.clone(), OnLag::Resume("watch_lagged"));
    let attach = prepared.attach();
    let rt = match crate::cmd::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let engine = match prepared.run().await {
            Ok(e) => e,
            Err(e) => return fail_chain(&e, 1),
        };
        let code = stream(sub, &cfg, &engine, &attach).await;
        engine.shutdown().await;
        code
    })
}

/// `attach mode socket (bind=socket, ...)`: which hooks report what. Why
/// `auto` did not use kernel-function hooks everywhere is long (the
/// verifier's words for each kind): `status` and `sockmon modes` carry it.
fn attach_line(a: &crate::engine::stats::AttachStatus) -> String {
    let kinds: Vec<String> = a.kinds.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let fallback = if a.fallback.is_some() {
        "; some kinds fell back from kernel-function hooks (`sockmon modes` says why)"
    } else {
        ""
    };
    format!("attach mode {} ({}){fallback}", a.mode, kinds.join(" "))
}

async fn stream(
    mut sub: Subscription,
    cfg: &WatchConfig,
    engine: &Engine,
    attach: &crate::engine::stats::AttachStatus,
) -> ExitCode {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return fail(&"cannot install signal handlers", 1);
    };
    if signals::requested() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "sockmon: probes attached, {}; watching bind, listen, connect, accept and close (TCP/UDP, IPv4/IPv6). Ctrl-C to stop.",
        attach_line(attach)
    );
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let item = tokio::select! {
            item = sub.rx.recv() => item,
            _ = term.recv() => return ExitCode::SUCCESS,
            _ = int.recv() => return ExitCode::SUCCESS,
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                if engine.is_finished() {
                    return fail(&"the event pipeline stopped unexpectedly", 1);
                }
                continue;
            }
        };
        match item {
            Some(item) => render(&item, cfg.format, &mut buf),
            None => return fail(&"the event pipeline stopped", 1),
        }
        while buf.len() < 256 * 1024 {
            match sub.rx.try_recv() {
                Ok(item) => render(&item, cfg.format, &mut buf),
                Err(_) => break,
            }
        }
        if let Err(code) = print(&buf) {
            return code;
        }
    }
}

fn render(item: &StreamItem, format: Format, buf: &mut Vec<u8>) {
    match item {
        StreamItem::Event(e) => output::write_event(format, buf, e),
        StreamItem::Lost { cause, count, .. } => lost(format, cause, *count, buf),
        StreamItem::Alert(a) => match format {
            Format::Json => json::write_alert(buf, a),
            Format::Human => {
                buf.extend_from_slice(
                    format!("ALERT {} {}\n", a.severity.name(), a.message()).as_bytes(),
                );
            }
        },
    }
}

/// A loss: a `lost` line in JSON, a warning on stderr for people.
fn lost(format: Format, cause: &str, count: u64, buf: &mut Vec<u8>) {
    match format {
        Format::Json => json::write_lost(buf, WallTime::now(), cause, count),
        Format::Human => eprintln!("sockmon: {count} events lost ({cause})"),
    }
}
