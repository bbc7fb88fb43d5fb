//! Diagnostics on stderr through `tracing` (journald takes the daemon's
//! stderr). `RUST_LOG` wins; otherwise the level the command or the daemon's
//! configuration asks for, which SIGHUP can change. Records of the kernel
//! programs (aya-log, through the `log` crate) arrive here too.

use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt as _, reload, util::SubscriberInitExt as _,
};

/// Changes the level after start-up.
pub struct LogHandle {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    from_env: bool,
}

/// Installs the subscriber with `default` as the level (unless `RUST_LOG` is set).
pub fn init(default: &str) -> LogHandle {
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = EnvFilter::new(env.as_deref().unwrap_or(default));
    let (layer, handle) = reload::Layer::new(filter);
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .try_init()
        .is_ok();
    LogHandle {
        handle: installed.then_some(handle),
        from_env: env.is_some(),
    }
}

impl LogHandle {
    /// Sets the level (ignored when `RUST_LOG` chose it).
    pub fn set_level(&self, level: &str) {
        if let (Some(h), false) = (&self.handle, self.from_env) {
            let _ = h.reload(EnvFilter::new(level));
        }
    }
}
