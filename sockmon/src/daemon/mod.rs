//! `sockmon daemon`: the engine with its snapshot, served on the API
//! socket, written to the configured sinks, optionally exported as metrics.
//!
//! Lifecycle: the API socket is created first (a second daemon fails here,
//! before loading anything); then the probes are attached and the snapshot
//! merged; then READY is sent to systemd. SIGHUP reloads what can change
//! without reloading probes; SIGTERM/SIGINT stop accepting, remove the
//! socket, flush the sinks, detach every program and exit 0.

pub mod clickhouse;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod sinks;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
};

use config::Config;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot, watch},
};

use crate::{
    api::server::{self, Limits},
    engine::{Engine, EngineOptions, Prepared},
    kernel::{AttachMode, LoadOptions, privileges},
    logging::LogHandle,
    signals,
};

/// What the daemon runs with, and how to rebuild it on SIGHUP.
pub struct DaemonSetup {
    pub config: Config,
    /// Re-reads the file and re-applies the flags (for SIGHUP).
    pub reload: Box<dyn Fn() -> Result<Config, String> + Send>,
}

/// Why the daemon did not start, or stopped: what to tell the user, and
/// whether it is theirs to fix (a bad setting, missing privileges: exit
/// status 2 in `cmd::daemon`) or not (1).
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub usage: bool,
}

impl Failure {
    fn new(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            usage: false,
        }
    }

    fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            usage: true,
            ..Self::new(message)
        }
    }

    /// `err` and what caused it (`a: b: c`).
    fn chain(err: &dyn std::error::Error) -> Self {
        Self::new(crate::logging::chain(err))
    }
}

/// Runs the daemon until SIGTERM/SIGINT (`Ok`) or a failure.
pub fn run(setup: DaemonSetup, log: LogHandle) -> Result<(), Failure> {
    log.set_level(&setup.config.log.level);
    // Before the slow start-up: SIGINT may arrive ignored, and SIGTERM
    // during the load must still end the daemon cleanly.
    if let Err(e) = signals::install() {
        return Err(Failure::new(format!("cannot install signal handlers: {e}")));
    }
    let nofile = match limits::raise_nofile() {
        Ok(n) => {
            if let Err(e) = limits::check_descriptors(&setup.config, n) {
                return Err(Failure::usage(e));
            }
            n
        }
        Err(e) => {
            tracing::warn!("cannot read or raise RLIMIT_NOFILE: {e}");
            1024
        }
    };
    // The privileged part runs on this, the only, thread: capabilities are
    // per thread, so once they are dropped here every thread started later
    // (the runtime's, the /proc worker's) has only what is kept.
    let socket = setup.config.api.socket.clone();
    let listener = match server::bind_std(&socket) {
        Ok(l) => l,
        Err(e) => return Err(Failure::chain(&e)),
    };
    let ring_bytes = setup.config.kernel.ring_kib * 1024;
    crate::snapshot::set_dump_deadline(std::time::Duration::from_millis(
        setup.config.snapshot.dump_deadline_ms,
    ));
    let opts = EngineOptions {
        load: LoadOptions {
            ring_bytes,
            wakeup_bytes: u64::from(ring_bytes / 8),
            // Validated with the configuration.
            attach: AttachMode::from_name(&setup.config.kernel.attach).unwrap_or_default(),
            enrich: setup.config.kernel.enrich,
            pending_per_uid: u64::from(setup.config.kernel.pending_per_user),
        },
        table_cap: setup.config.table.cap,
        max_owners: setup.config.table.max_owners,
        recheck_interval: std::time::Duration::from_millis(setup.config.table.recheck_interval_ms),
        snapshot: true,
        policy: setup.config.policy(),
        flow_interval: (setup.config.flows.interval_ms > 0)
            .then(|| std::time::Duration::from_millis(setup.config.flows.interval_ms)),
        ..EngineOptions::default()
    };
    let prepared = match Engine::prepare(opts) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            let usage = e.is_privileges();
            return Err(Failure {
                usage,
                ..Failure::chain(&e)
            });
        }
    };
    // Going on with full root after a failed drop would make every parser
    // bug a root bug: a failed drop is fatal.
    if let Err(e) = privileges::drop_all_but(&privileges::KEPT_AFTER_LOAD) {
        let _ = std::fs::remove_file(&socket);
        return Err(Failure::new(format!(
            "cannot drop capabilities after loading, refusing to go on: {e}"
        )));
    }
    if signals::requested() {
        let _ = std::fs::remove_file(&socket);
        tracing::info!("stopped during start-up");
        return Ok(());
    }
    let rt = crate::engine::runtime()
        .map_err(|e| Failure::new(format!("cannot start the runtime: {e}")))?;
    let refusals = limits::refusals(&setup.config, nofile);
    rt.block_on(daemon(setup, log, listener, prepared, refusals))
}

async fn daemon(
    setup: DaemonSetup,
    log: LogHandle,
    listener: std::os::unix::net::UnixListener,
    prepared: Prepared,
    refusals: usize,
) -> Result<(), Failure> {
    let DaemonSetup { config, reload } = setup;
    // Handlers first: a SIGHUP or SIGTERM that arrives during start-up (or
    // right after READY) must not kill the process with the default action.
    let (Ok(term), Ok(int), Ok(hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return Err(Failure::new("cannot install signal handlers"));
    };
    let mut running = start(config, listener, prepared, refusals).await?;
    let outcome = serve(&mut running, Signals { term, int, hup }, reload, &log).await;
    stop(running).await;
    outcome
}

/// The signals the daemon acts on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// What a started daemon runs: the engine, and the tasks serving it.
struct Running {
    config: Config,
    socket: PathBuf,
    engine: Engine,
    handle: crate::engine::EngineHandle,
    limits: Arc<Limits>,
    stop_tx: watch::Sender<bool>,
    api: tokio::task::JoinHandle<()>,
    sink_tx: mpsc::Sender<sinks::SinkControl>,
    sinks: tokio::task::JoinHandle<()>,
    metrics: Option<MetricsTask>,
}

/// Runs the engine (probes attached, snapshot merged), starts the API, the
/// sinks and the metrics, and tells systemd READY.
async fn start(
    config: Config,
    listener: std::os::unix::net::UnixListener,
    prepared: Prepared,
    refusals: usize,
) -> Result<Running, Failure> {
    let socket = config.api.socket.clone();
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            return Err(Failure::new(format!(
                "cannot serve {}: {e}",
                socket.display()
            )));
        }
    };
    let engine = match prepared.run().await {
        Ok(e) => e,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            return Err(Failure::chain(&e));
        }
    };
    let handle = engine.handle.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = Arc::new(Limits::default());
    set_limits(&limits, &config);
    limits.max_refusals.store(refusals, Ordering::Relaxed);
    let api = tokio::spawn(server::serve(
        listener,
        handle.clone(),
        limits.clone(),
        stop_rx,
    ));
    let (sink_tx, sink_rx) = mpsc::channel(4);
    let sinks = tokio::spawn(sinks::run(handle.clone(), config.sinks.clone(), sink_rx));
    let metrics = start_metrics(&config, &handle).await;

    let status = handle.status().await.ok();
    let (sockets, snap_ms) = status
        .as_ref()
        .map(|s| {
            (
                s.table.sockets,
                s.snapshot.as_ref().map_or(0.0, |x| x.duration_ms),
            )
        })
        .unwrap_or_default();
    tracing::info!(
        sockets,
        snapshot_ms = snap_ms,
        api = %socket.display(),
        "sockmon daemon ready: probes attached, {sockets} sockets in the table (snapshot {snap_ms:.1} ms), API on {}",
        socket.display()
    );
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!("watching; {sockets} sockets in the table")),
        ],
    );
    Ok(Running {
        config,
        socket,
        engine,
        handle,
        limits,
        stop_tx,
        api,
        sink_tx,
        sinks,
        metrics,
    })
}

/// Serves until SIGTERM or SIGINT (`Ok`) or until the engine stops on its
/// own (`Err`); SIGHUP reloads the configuration.
async fn serve(
    r: &mut Running,
    mut sig: Signals,
    reload: impl Fn() -> Result<Config, String>,
    log: &LogHandle,
) -> Result<(), Failure> {
    let mut watchdog = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        if signals::requested() {
            return Ok(()); // arrived before tokio's handlers were in
        }
        tokio::select! {
            _ = sig.term.recv() => return Ok(()),
            _ = sig.int.recv() => return Ok(()),
            _ = sig.hup.recv() => match reload() {
                Ok(new) => reconfigure(r, new, log).await,
                Err(e) => tracing::error!("configuration not reloaded: {e}"),
            },
            _ = watchdog.tick() => {
                if r.engine.is_finished() {
                    return Err(Failure::new("the event pipeline stopped unexpectedly"));
                }
            }
        }
    }
}

/// Applies a reloaded configuration: what can change without reloading
/// the probes.
async fn reconfigure(r: &mut Running, new: Config, log: &LogHandle) {
    let nofile = limits::raise_nofile().unwrap_or(u64::MAX);
    if let Err(e) = limits::check_descriptors(&new, nofile) {
        tracing::error!("configuration not reloaded: {e}");
        return;
    }
    apply_reload(&r.config, &new, &r.limits, &r.sink_tx, log).await;
    if new.metrics != r.config.metrics {
        if let Some((tx, task)) = r.metrics.take() {
            let _ = tx.send(true);
            let _ = task.await;
        }
        r.metrics = start_metrics(&new, &r.handle).await;
    }
    // The policy thread swaps rules; the probes stay as they are.
    let policy = new.policy();
    tracing::info!(
        "policy: {}",
        policy
            .as_ref()
            .map_or("none".to_string(), |p| format!("{} rules", p.rules.len()))
    );
    r.handle.policy.reload(policy);
    r.config = new;
    tracing::info!("configuration reloaded");
}

/// Stops accepting, removes the socket, flushes the sinks, stops the
/// metrics and detaches every program.
async fn stop(r: Running) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = r.stop_tx.send(true);
    let _ = r.api.await;
    let _ = std::fs::remove_file(&r.socket);
    let (done_tx, done_rx) = oneshot::channel();
    if r.sink_tx
        .send(sinks::SinkControl::Stop(done_tx))
        .await
        .is_ok()
    {
        let _ = done_rx.await;
    }
    let _ = r.sinks.await;
    if let Some((tx, task)) = r.metrics {
        let _ = tx.send(true);
        let _ = task.await;
    }
    r.engine.shutdown().await;
    tracing::info!("sockmon daemon stopped; every program detached");
}

type MetricsTask = (watch::Sender<bool>, tokio::task::JoinHandle<()>);

async fn start_metrics(
    config: &Config,
    handle: &crate::engine::EngineHandle,
) -> Option<MetricsTask> {
    let addr = config.metrics.listen?;
    match metrics::bind(addr).await {
        Ok(listener) => {
            let (tx, rx) = watch::channel(false);
            tracing::info!("metrics on http://{addr}/metrics");
            Some((
                tx,
                tokio::spawn(metrics::serve(
                    listener,
                    handle.clone(),
                    config.metrics.max_connections,
                    rx,
                )),
            ))
        }
        Err(e) => {
            tracing::error!("cannot serve metrics on {addr}: {e}");
            None
        }
    }
}

async fn apply_reload(
    old: &Config,
    new: &Config,
    limits: &Limits,
    sinks: &mpsc::Sender<sinks::SinkControl>,
    log: &LogHandle,
) {
    set_limits(limits, new);
    log.set_level(&new.log.level);
    crate::snapshot::set_dump_deadline(std::time::Duration::from_millis(
        new.snapshot.dump_deadline_ms,
    ));
    if new.sinks != old.sinks {
        let _ = sinks
            .send(sinks::SinkControl::Reconfigure(new.sinks.clone()))
            .await;
    }
    let fixed: [(&str, bool); 5] = [
        ("api.socket", new.api.socket != old.api.socket),
        (
            "kernel.ring_kib",
            new.kernel.ring_kib != old.kernel.ring_kib,
        ),
        (
            "kernel.pending_per_user",
            new.kernel.pending_per_user != old.kernel.pending_per_user,
        ),
        ("table.cap", new.table.cap != old.table.cap),
        (
            "table.max_owners",
            new.table.max_owners != old.table.max_owners,
        ),
    ];
    for (name, changed) in fixed {
        if changed {
            tracing::warn!("{name} changed; it takes effect at the next restart");
        }
    }
}

fn set_limits(limits: &Limits, config: &Config) {
    let api = &config.api;
    limits.max_clients.store(api.max_clients, Ordering::Relaxed);
    limits
        .max_clients_per_uid
        .store(api.max_clients_per_uid, Ordering::Relaxed);
    limits
        .write_timeout_ms
        .store(api.write_timeout_ms, Ordering::Relaxed);
    limits
        .max_filter_values
        .store(api.max_filter_values, Ordering::Relaxed);
}

/// The default config path if it exists, for `--config` left unset.
pub fn default_config_path() -> Option<PathBuf> {
    let p = PathBuf::from(config::DEFAULT_CONFIG);
    p.exists().then_some(p)
}
