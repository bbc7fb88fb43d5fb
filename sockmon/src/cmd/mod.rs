//! One module per subcommand.

pub mod watch;

use std::process::ExitCode;

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
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    fail(&msg, code)
}
