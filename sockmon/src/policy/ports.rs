//! Port and address classes: IANA's classes of a port number, and the
//! kernel's own view of a port in one network namespace.
//!
//! IANA's classes are fixed (RFC 6335): well-known 0–1023, registered
//! 1024–49151, dynamic 49152–65535. The kernel's are per network namespace
//! and set by sysctls: a port below `net.ipv4.ip_unprivileged_port_start` needs
//! `CAP_NET_BIND_SERVICE`; a port inside `net.ipv4.ip_local_port_range` is one
//! the kernel hands out for `bind(:0)`, `connect` and `listen` without bind
//! (32768–60999 by default, not IANA's 49152+).
//!
//! Why a cache with a thread: `/proc/sys` answers for the namespace of the
//! thread that opens it, so another namespace's sysctls are read from a
//! short-lived thread that has entered it with `setns` (as the snapshot does,
//! `snapshot::netns`). Each namespace is read once; a namespace that could
//! not be entered is retried after [`RETRY`], and its fields are `null`
//! meanwhile rather than guessed.

use std::{
    collections::HashMap,
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// IANA's class of a port number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortClass {
    WellKnown,
    Registered,
    Dynamic,
}

impl PortClass {
    pub const ALL: [PortClass; 3] = [Self::WellKnown, Self::Registered, Self::Dynamic];

    pub const fn of(port: u16) -> Self {
        match port {
            0..=1023 => Self::WellKnown,
            1024..=49151 => Self::Registered,
            _ => Self::Dynamic,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::WellKnown => "well_known",
            Self::Registered => "registered",
            Self::Dynamic => "dynamic",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// What an address a socket is bound to reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddrScope {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// One interface's address.
    Specific,
    /// 0.0.0.0, `::`: every address of the namespace.
    Wildcard,
}

impl AddrScope {
    pub fn of(ip: IpAddr) -> Self {
        let ip = crate::event::unmap(ip);
        if ip.is_unspecified() {
            return Self::Wildcard;
        }
        if ip.is_loopback() {
            return Self::Loopback;
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        if link_local {
            Self::LinkLocal
        } else {
            Self::Specific
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::LinkLocal => "link_local",
            Self::Specific => "specific",
            Self::Wildcard => "wildcard",
        }
    }

    /// How much wider than `other` this scope is (wildcard > the others).
    pub fn is_wider_than(self, other: AddrScope) -> bool {
        self == Self::Wildcard && other != Self::Wildcard
    }
}

/// The two sysctls of one namespace that classify ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPorts {
    /// `net.ipv4.ip_unprivileged_port_start`.
    pub unprivileged_start: u16,
    /// `net.ipv4.ip_local_port_range` (inclusive).
    pub ephemeral: (u16, u16),
}

impl KernelPorts {
    pub fn privileged(&self, port: u16) -> bool {
        port < self.unprivileged_start
    }

    pub fn ephemeral(&self, port: u16) -> bool {
        (self.ephemeral.0..=self.ephemeral.1).contains(&port)
    }

    /// Parses the two files' contents.
    pub fn parse(unprivileged: &str, range: &str) -> Option<Self> {
        let start: u32 = unprivileged.trim().parse().ok()?;
        let mut r = range.split_whitespace().map(|v| v.parse::<u16>().ok());
        let (lo, hi) = (r.next()??, r.next()??);
        Some(Self {
            // The kernel accepts 0..=65536 here; 65536 means "none privileged" would be 0.
            unprivileged_start: u16::try_from(start).unwrap_or(u16::MAX),
            ephemeral: (lo, hi),
        })
    }

    /// Reads them in the calling thread's namespace.
    pub fn read_here() -> Option<Self> {
        let dir = "/proc/sys/net/ipv4";
        let unpriv = std::fs::read_to_string(format!("{dir}/ip_unprivileged_port_start")).ok()?;
        let range = std::fs::read_to_string(format!("{dir}/ip_local_port_range")).ok()?;
        Self::parse(&unpriv, &range)
    }
}

/// A socket's port fields, as the JSON stream and `ls` show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortFacts {
    pub class: PortClass,
    /// `None` when the namespace's sysctls could not be read.
    pub privileged: Option<bool>,
    pub ephemeral: Option<bool>,
    pub scope: AddrScope,
}

impl PortFacts {
    pub fn of(netns: u32, pid_hint: Option<u32>, ip: IpAddr, port: u16) -> Self {
        let k = kernel_ports(netns, pid_hint);
        Self {
            class: PortClass::of(port),
            privileged: k.map(|k| k.privileged(port)),
            ephemeral: k.map(|k| k.ephemeral(port)),
            scope: AddrScope::of(ip),
        }
    }
}

/// How long a namespace that could not be read waits before another try.
pub const RETRY: Duration = Duration::from_secs(5);

enum Cached {
    Known(KernelPorts),
    Failed(Instant),
}

fn cache() -> &'static Mutex<HashMap<u32, Cached>> {
    static CACHE: OnceLock<Mutex<HashMap<u32, Cached>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Most namespaces remembered (a machine churning namespaces cannot grow it without bound).
const CACHE_CAP: usize = 4096;

/// The port sysctls of namespace `netns` (an nsfs inode), entering it
/// through `/proc/PID/ns/net` of `pid_hint` (a process in it) when it is not
/// ours. Cached per namespace.
pub fn kernel_ports(netns: u32, pid_hint: Option<u32>) -> Option<KernelPorts> {
    {
        let c = cache().lock().unwrap_or_else(|p| p.into_inner());
        match c.get(&netns) {
            Some(Cached::Known(k)) => return Some(*k),
            Some(Cached::Failed(at)) if at.elapsed() < RETRY => return None,
            _ => {}
        }
    }
    let found = resolve(netns, pid_hint);
    let mut c = cache().lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= CACHE_CAP {
        c.clear();
    }
    c.insert(
        netns,
        match found {
            Some(k) => Cached::Known(k),
            None => Cached::Failed(Instant::now()),
        },
    );
    found
}

fn resolve(netns: u32, pid_hint: Option<u32>) -> Option<KernelPorts> {
    let own = std::fs::metadata("/proc/thread-self/ns/net").ok()?.ino();
    if own == u64::from(netns) {
        return KernelPorts::read_here();
    }
    let path = match pid_hint {
        Some(pid) => format!("/proc/{pid}/ns/net"),
        None => find_netns_path(netns)?,
    };
    in_netns(&path, netns, KernelPorts::read_here).flatten()
}

/// A `/proc/PID/ns/net` or `/run/netns/NAME` naming namespace `netns`.
pub(crate) fn find_netns_path(netns: u32) -> Option<String> {
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            if std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == u64::from(netns)) {
                return Some(e.path().to_string_lossy().into_owned());
            }
        }
    }
    for pid in crate::procfs::pids().ok()? {
        let p = format!("/proc/{pid}/ns/net");
        if std::fs::metadata(&p).is_ok_and(|m| m.ino() == u64::from(netns)) {
            return Some(p);
        }
    }
    None
}

/// Runs `f` on a fresh thread inside the namespace file `path` (checked to
/// be namespace `netns`); `None` if it cannot be entered.
pub fn in_netns<T: Send>(path: &str, netns: u32, f: impl FnOnce() -> T + Send) -> Option<T> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.ino() != u64::from(netns) {
        return None;
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("sockmon-netns".into())
            .spawn_scoped(s, move || {
                use std::os::fd::AsRawFd as _;
                // SAFETY: plain syscall on a descriptor we own; moves only this
                // thread, which ends when `f` returns.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return None;
                }
                Some(f())
            })
            .ok()?
            .join()
            .ok()
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iana_classes_at_their_edges() {
        assert_eq!(PortClass::of(0), PortClass::WellKnown);
        assert_eq!(PortClass::of(1023), PortClass::WellKnown);
        assert_eq!(PortClass::of(1024), PortClass::Registered);
        assert_eq!(PortClass::of(49151), PortClass::Registered);
        assert_eq!(PortClass::of(49152), PortClass::Dynamic);
        assert_eq!(PortClass::of(65535), PortClass::Dynamic);
        assert_eq!(PortClass::from_name("dynamic"), Some(PortClass::Dynamic));
        assert_eq!(PortClass::from_name("high"), None);
    }

    #[test]
    fn address_scopes() {
        let s = |a: &str| AddrScope::of(a.parse().unwrap());
        assert_eq!(s("0.0.0.0"), AddrScope::Wildcard);
        assert_eq!(s("::"), AddrScope::Wildcard);
        assert_eq!(s("127.0.0.53"), AddrScope::Loopback);
        assert_eq!(s("::1"), AddrScope::Loopback);
        assert_eq!(s("::ffff:127.0.0.1"), AddrScope::Loopback);
        assert_eq!(s("169.254.1.2"), AddrScope::LinkLocal);
        assert_eq!(s("fe80::1"), AddrScope::LinkLocal);
        assert_eq!(s("10.1.2.3"), AddrScope::Specific);
        assert!(AddrScope::Wildcard.is_wider_than(AddrScope::Loopback));
        assert!(!AddrScope::Loopback.is_wider_than(AddrScope::Specific));
    }

    #[test]
    fn sysctl_text_parses() {
        let k = KernelPorts::parse("1024\n", "32768\t60999\n").unwrap();
        assert!(k.privileged(1023) && !k.privileged(1024));
        assert!(k.ephemeral(32768) && k.ephemeral(60999) && !k.ephemeral(61000));
        assert_eq!(KernelPorts::parse("x", "1 2"), None);
        assert_eq!(KernelPorts::parse("0", "1"), None);
    }

    #[test]
    fn our_namespace_reads_the_real_sysctls() {
        let own = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino() as u32;
        let expect = KernelPorts::read_here().unwrap();
        assert_eq!(kernel_ports(own, None), Some(expect));
    }
}
