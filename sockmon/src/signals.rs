//! SIGINT and SIGTERM for the long-running commands (`watch`, `daemon`),
//! whatever disposition they inherited.
//!
//! A shell starts a background job with SIGINT ignored, and an ignored
//! signal stays ignored across exec: a command that relies on the default
//! action could then never be stopped with SIGINT. So each long-running
//! command installs its own handler first thing, before the slow, blocking
//! start-up (loading the probes, the snapshot) and whichever path it takes
//! afterwards. The handler only sets a flag and, for a command blocked
//! reading a socket (`watch` through the daemon), shuts that socket down so
//! the read returns; the command then ends normally. Tokio's handlers,
//! installed later by the async paths, chain to this one.

use std::{
    io,
    os::fd::RawFd,
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
};

static STOP: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: shutdown(2) is async-signal-safe; a stale descriptor
        // number only makes it fail.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// Installs the handler for SIGINT and SIGTERM (replacing SIG_IGN or SIG_DFL).
pub fn install() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain data; all-zero is a valid start.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        // SAFETY: a valid sigaction; the handler only touches atomics and
        // calls an async-signal-safe function.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: as above.
        if unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM has arrived since [`install`].
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// On SIGINT or SIGTERM, shut `fd` (a socket) down, so that a blocking read
/// on it returns; at once if one already arrived.
pub fn shutdown_on_stop(fd: RawFd) {
    WAKE_FD.store(fd, Ordering::SeqCst);
    if requested() {
        // SAFETY: shutdown of a socket descriptor the caller owns.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_sets_the_flag_and_wakes_a_blocked_reader() {
        use std::io::Read as _;
        use std::os::fd::AsRawFd as _;
        install().unwrap();
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        shutdown_on_stop(a.as_raw_fd());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8];
            a.read(&mut buf).unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        // SAFETY: raising a signal in our own process; the handler is installed.
        unsafe { libc::raise(libc::SIGTERM) };
        assert_eq!(reader.join().unwrap(), 0, "the read returned end-of-file");
        assert!(requested());
    }
}
