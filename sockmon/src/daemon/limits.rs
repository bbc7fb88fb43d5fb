//! The daemon's descriptor budget: the soft RLIMIT_NOFILE is raised to the
//! hard limit at start (systemd hands services a soft limit of 1024), and
//! the configured connection bounds must fit in it, so that clients run out
//! of slots long before the daemon runs out of descriptors for its own work
//! (`/proc` reads, re-snapshots, sinks).

use std::io;

use super::config::Config;
use crate::api::server::MAX_REFUSALS;

/// Descriptors the daemon needs besides its clients: programs, maps and
/// links (about 60), the `/proc` worker and a re-snapshot (a few each),
/// sinks, logging, with room to spare.
pub const RESERVED: u64 = 256;

/// Raises the soft descriptor limit to the hard one; returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    // SAFETY: rlimit is plain data; getrlimit fills it.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: as above; lowering nothing, raising soft to hard is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(r.rlim_cur)
}

/// Descriptors the configuration may use at once (refusals aside).
pub fn needed(config: &Config) -> u64 {
    let metrics = config
        .metrics
        .listen
        .map_or(0, |_| config.metrics.max_connections as u64 + 1);
    config.api.max_clients as u64 + metrics + RESERVED
}

/// Refuses a configuration whose connection bounds do not fit in `nofile`.
pub fn check_descriptors(config: &Config, nofile: u64) -> Result<(), String> {
    let need = needed(config);
    if need > nofile {
        return Err(format!(
            "api.max_clients = {} (+ {} metrics connections and {RESERVED} for the daemon's own work) needs {need} descriptors, but RLIMIT_NOFILE allows {nofile}; lower api.max_clients or raise LimitNOFILE=",
            config.api.max_clients,
            config
                .metrics
                .listen
                .map_or(0, |_| config.metrics.max_connections),
        ));
    }
    Ok(())
}

/// How many refused connections may be answered at once: what is left of
/// `nofile` after [`needed`], at most [`MAX_REFUSALS`] (beyond, a refused
/// connection is closed unanswered).
pub fn refusals(config: &Config, nofile: u64) -> usize {
    let left = nofile.saturating_sub(needed(config));
    usize::try_from(left).map_or(MAX_REFUSALS, |l| l.clamp(16, MAX_REFUSALS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_in_systemds_hard_limit_but_not_in_1024_with_many_clients() {
        let mut c = Config::default();
        assert!(check_descriptors(&c, 524_288).is_ok());
        assert!(check_descriptors(&c, 1024).is_ok());
        assert_eq!(refusals(&c, 1024), 1024 - 256 - 256);
        assert_eq!(refusals(&c, 1 << 20), MAX_REFUSALS);
        c.api.max_clients = 4096;
        let e = check_descriptors(&c, 1024).unwrap_err();
        assert!(e.contains("api.max_clients = 4096"), "{e}");
        assert!(e.contains("RLIMIT_NOFILE allows 1024"), "{e}");
    }

    #[test]
    fn raising_returns_the_hard_limit() {
        let n = raise_nofile().unwrap();
        // SAFETY: reading our own limit into a local.
        let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        assert_eq!((n, r.rlim_cur), (r.rlim_max, r.rlim_max));
    }
}
