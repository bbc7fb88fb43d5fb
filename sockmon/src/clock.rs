//! Turning the kernel's CLOCK_MONOTONIC timestamps into wall-clock time.
//!
//! `bpf_ktime_get_ns` is monotonic; the offset to CLOCK_REALTIME is sampled
//! when a batch of events is decoded, so clock steps (NTP) are followed.
//! [`BootClock`] does the same for `/proc` start times (clock ticks since
//! boot), so that every clock of the program lives here.

use chrono::{DateTime, Local, SecondsFormat, Utc};

/// Nanoseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WallTime(pub i64);

impl WallTime {
    pub fn now() -> Self {
        Self(read(libc::CLOCK_REALTIME))
    }

    /// RFC 3339 with nanoseconds, UTC (`2026-11-26T12:04:05.123456789Z`).
    pub fn rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_nanos(self.0).to_rfc3339_opts(SecondsFormat::Nanos, true)
    }

    /// Local `HH:MM:SS.mmm` for the human view.
    pub fn local_hms_millis(self) -> String {
        DateTime::<Utc>::from_timestamp_nanos(self.0)
            .with_timezone(&Local)
            .format("%H:%M:%S%.3f")
            .to_string()
    }
}

/// Converts monotonic kernel timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in ns.
    offset: i64,
}

impl Clock {
    /// Samples the current offset.
    pub fn sample() -> Self {
        let mono = read(libc::CLOCK_MONOTONIC);
        let real = read(libc::CLOCK_REALTIME);
        Self {
            offset: real - mono,
        }
    }

    /// A clock with a fixed offset (for tests).
    pub const fn with_offset(offset: i64) -> Self {
        Self { offset }
    }

    pub fn wall(&self, monotonic_ns: u64) -> WallTime {
        WallTime(monotonic_ns as i64 + self.offset)
    }
}

/// Current monotonic time in ns (the kernel programs' clock).
pub fn monotonic_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC) as u64
}

fn read(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a local timespec; these clocks always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Boot time on the wall clock, to show start times (ticks since boot).
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    boot_wall_ns: i64,
    ns_per_tick: u64,
}

impl BootClock {
    pub fn sample() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a local timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let since_boot = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
        Self {
            boot_wall_ns: WallTime::now().0 - since_boot,
            ns_per_tick: 1_000_000_000 / clock_ticks_per_sec(),
        }
    }

    pub fn start_time(&self, ticks: u64) -> WallTime {
        WallTime(self.boot_wall_ns + (ticks * self.ns_per_tick) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_nanoseconds_and_z() {
        let t = WallTime(1_700_000_000_123_456_789);
        assert_eq!(t.rfc3339(), "2023-11-14T22:13:20.123456789Z");
    }

    #[test]
    fn wall_adds_the_offset() {
        let c = Clock::with_offset(1_000);
        assert_eq!(c.wall(5), WallTime(1_005));
    }

    #[test]
    fn sampled_clock_is_close_to_now() {
        let c = Clock::sample();
        let diff = (c.wall(monotonic_ns()).0 - WallTime::now().0).abs();
        assert!(diff < 1_000_000_000, "{diff}");
    }
}
