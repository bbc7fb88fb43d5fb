//! One module per subcommand, and what they share: exit statuses, error
//! reporting, and choosing between a running daemon and working alone.

mod alone;
pub mod audit;
pub mod baseline;
pub mod daemon;
pub mod generate;
pub mod lookup;
pub mod ls;
pub mod modes;
pub mod policy;
pub mod status;
pub mod top;
pub mod watch;

/// SIGINT/SIGTERM handling lives below the daemon (a leaf), so that both
/// the daemon and the client commands can use it.
pub use crate::signals;

use std::{io::Write as _, path::Path, process::ExitCode};

use crate::api::client::{Client, ClientError};

/// Exit status for bad usage and missing privileges (as clap uses for usage errors).
pub const EXIT_USAGE: u8 = 2;

/// Whether an I/O error means the reader of our output went away
/// (`sockmon watch | head`): a normal end, not a failure.
pub fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Prints `err` the way every command reports a fatal error.
pub fn fail(err: &dyn std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("sockmon: {err}");
    ExitCode::from(code)
}

/// Prints `err` and every error below it (`a: b: c`), then exits with `code`.
pub fn fail_chain(err: &dyn std::error::Error, code: u8) -> ExitCode {
    fail(&crate::logging::chain(err), code)
}

/// [`crate::engine::runtime`], or the exit of a command that cannot start it.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    crate::engine::runtime().map_err(|e| fail(&format!("cannot start the runtime: {e}"), 1))
}

/// Where a client command gets its answers.
pub enum Backend {
    /// A daemon answered on the API socket.
    Daemon(Client),
    /// No daemon: work in this process.
    Alone,
}

/// Connects to the daemon at `socket` unless told not to or none listens.
/// An unusable socket (permission denied) is an error, not a silent fallback.
pub fn backend(socket: &Path, no_daemon: bool) -> Result<Backend, ExitCode> {
    if no_daemon {
        return Ok(Backend::Alone);
    }
    match Client::connect(socket) {
        Ok(c) => Ok(Backend::Daemon(c)),
        Err(ClientError::NoDaemon(_)) => Ok(Backend::Alone),
        Err(e) => Err(fail(&e, EXIT_USAGE)),
    }
}

/// Writes `buf` to stdout; a closed pipe is a normal end (`| head`).
pub fn print(buf: &[u8]) -> Result<(), ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(buf).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if is_broken_pipe(&e) => Err(ExitCode::SUCCESS),
        Err(e) => Err(fail(&format!("writing output failed: {e}"), 1)),
    }
}
