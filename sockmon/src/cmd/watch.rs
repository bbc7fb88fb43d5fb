//! `sockmon watch`: load the probes, stream events to stdout.
//!
//! Pipeline: ring-buffer reader task → bounded channel → this loop, which
//! alone owns the socket table, filters and renders. Output is written and
//! flushed once per drained batch, so no event waits in a buffer. Ctrl-C and
//! SIGTERM end it with status 0; dropping the probes detaches everything.

use std::{
    io::Write as _,
    process::ExitCode,
    time::{Duration, Instant},
};

use sockmon_common::KernelCounter;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use super::{EXIT_USAGE, fail, fail_chain, is_broken_pipe};
use crate::{
    cli::WatchConfig,
    clock::WallTime,
    event::Record,
    kernel::{Probes, reader},
    output::{self, Format},
    table::SocketTable,
};

/// How often kernel loss counters are checked.
const LOSS_CHECK: Duration = Duration::from_secs(1);

pub fn run(cfg: WatchConfig) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}"), 1),
    };
    rt.block_on(watch(cfg))
}

async fn watch(cfg: WatchConfig) -> ExitCode {
    let mut probes = match Probes::load(cfg.load) {
        Ok(p) => p,
        Err(e) if e.is_privileges() => return fail_chain(&e, EXIT_USAGE),
        Err(e) => return fail_chain(&e, 1),
    };
    let ring = match probes.take_ring() {
        Ok(r) => r,
        Err(e) => return fail_chain(&e, 1),
    };
    let (tx, mut rx) = mpsc::channel(64);
    let reader = tokio::spawn(reader::run(ring, tx, cfg.drain_interval));
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => return fail(&"cannot install signal handlers", 1),
    };
    eprintln!(
        "sockmon: probes attached; watching bind, listen, connect, accept and close (TCP/UDP, IPv4/IPv6). Ctrl-C to stop."
    );

    let mut table = SocketTable::new(cfg.table_cap);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut losses = LossTracker::new(&probes);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else {
                    return match reader.await {
                        Ok(Err(e)) => fail(&format!("reading the ring buffer failed: {e}"), 1),
                        _ => fail(&"the ring-buffer reader stopped", 1),
                    };
                };
                buf.clear();
                for record in &batch.events {
                    let Record::Sock(e) = record else { continue };
                    table.apply(e);
                    if cfg.filter.matches(e) {
                        output::write_event(cfg.format, &mut buf, e);
                    }
                }
                losses.check(&probes, cfg.format, &mut buf);
                if let Err(e) = emit(&buf) {
                    return if is_broken_pipe(&e) {
                        ExitCode::SUCCESS
                    } else {
                        fail(&format!("writing output failed: {e}"), 1)
                    };
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    drop(probes);
    ExitCode::SUCCESS
}

fn emit(buf: &[u8]) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(buf)?;
    out.flush()
}

/// Reports kernel-side losses as they happen: a `lost` record in JSON, a
/// warning on stderr for people.
struct LossTracker {
    last: [u64; KernelCounter::ALL.len()],
    checked: Instant,
}

impl LossTracker {
    fn new(probes: &Probes) -> Self {
        Self {
            last: probes.counters(),
            checked: Instant::now(),
        }
    }

    fn check(&mut self, probes: &Probes, format: Format, buf: &mut Vec<u8>) {
        if self.checked.elapsed() < LOSS_CHECK {
            return;
        }
        self.checked = Instant::now();
        let now = probes.counters();
        for (i, c) in KernelCounter::ALL.iter().enumerate() {
            let delta = now[i].saturating_sub(self.last[i]);
            if delta == 0 || !c.is_loss() {
                continue;
            }
            match format {
                Format::Json => output::json::write_lost(buf, WallTime::now(), c.name(), delta),
                Format::Human => eprintln!("sockmon: {delta} events lost ({})", c.name()),
            }
        }
        self.last = now;
    }
}
