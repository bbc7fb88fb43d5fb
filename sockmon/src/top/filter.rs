//! The `/` filter of `sockmon top`: `key:value` words, the CLI's filters
//! (`pid`, `comm`, `port`, `proto`) plus `unit` and `state`.
//!
//! As on the command line, values of one key are alternatives and different
//! keys must all match: `port:80 port:443 comm:nginx` is "nginx on 80 or
//! 443". A word that does not parse is refused with a message naming it, so
//! a typo never silently shows everything.

use crate::event::Proto;

/// A parsed filter; the empty filter matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopFilter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub ports: Vec<u16>,
    pub proto: Vec<Proto>,
    pub units: Vec<String>,
    pub states: Vec<String>,
}

impl TopFilter {
    /// Whether it picks processes only (pid, comm, unit), not sockets
    /// (port, proto, state): counters per process then answer it.
    pub fn picks_processes_only(&self) -> bool {
        self.ports.is_empty() && self.proto.is_empty() && self.states.is_empty()
    }
}

/// The states `state:` accepts: the table's socket states, and `closed`.
pub const STATES: [&str; 6] = [
    "bound",
    "listen",
    "connecting",
    "connected",
    "closing",
    "closed",
];

/// What one socket or event offers to the filter.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub pid: u32,
    pub comm: &'a [u8],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: Proto,
    pub unit: Option<&'a str>,
    pub state: &'a str,
}

impl TopFilter {
    /// Parses `text` (whitespace-separated `key:value` words).
    pub fn parse(text: &str) -> Result<TopFilter, String> {
        let mut f = TopFilter::default();
        for word in text.split_whitespace() {
            let Some((key, value)) = word.split_once(':') else {
                return Err(format!(
                    "`{}`: expected key:value (keys: port pid comm proto unit state)",
                    word.escape_debug()
                ));
            };
            let bad = |what: &str| format!("`{}`: {what}", word.escape_debug());
            match key {
                "pid" => f
                    .pids
                    .push(value.parse().map_err(|_| bad("not a process id"))?),
                "port" => f
                    .ports
                    .push(value.parse().map_err(|_| bad("not a port (0-65535)"))?),
                "comm" if !value.is_empty() && value.len() <= 15 => f.comms.push(value.into()),
                "comm" => return Err(bad("a name is 1 to 15 bytes (the kernel keeps 15)")),
                "proto" => f.proto.push(match value {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    _ => return Err(bad("proto is tcp or udp")),
                }),
                "unit" if !value.is_empty() => f.units.push(value.into()),
                "state" if STATES.contains(&value) => f.states.push(value.into()),
                "state" => return Err(bad(&format!("state is one of {}", STATES.join(" ")))),
                _ => {
                    return Err(bad("unknown key (keys: port pid comm proto unit state)"));
                }
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn matches(&self, s: &Subject<'_>) -> bool {
        (self.pids.is_empty() || self.pids.contains(&s.pid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| c.as_bytes() == s.comm))
            && (self.ports.is_empty()
                || self
                    .ports
                    .iter()
                    .any(|p| *p == s.src_port || *p == s.dst_port))
            && (self.proto.is_empty() || self.proto.contains(&s.proto))
            && (self.units.is_empty()
                || s.unit
                    .is_some_and(|u| self.units.iter().any(|w| unit_matches(w, u))))
            && (self.states.is_empty() || self.states.iter().any(|w| w == s.state))
    }
}

/// `unit:nginx` matches `nginx.service` too (the suffix people leave out).
fn unit_matches(wanted: &str, unit: &str) -> bool {
    unit == wanted || unit.strip_suffix(".service") == Some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject<'static> {
        Subject {
            pid: 42,
            comm: b"nginx",
            src_port: 80,
            dst_port: 51000,
            proto: Proto::Tcp,
            unit: Some("nginx.service"),
            state: "connected",
        }
    }

    #[test]
    fn words_parse_into_alternatives_and_conjunctions() {
        let f = TopFilter::parse(
            "port:80 port:443  comm:nginx proto:tcp unit:nginx state:connected pid:42",
        )
        .unwrap();
        assert_eq!(f.ports, vec![80, 443]);
        assert_eq!(f.comms, vec!["nginx".to_string()]);
        assert_eq!(f.pids, vec![42]);
        assert!(f.matches(&subject()));
        assert!(!TopFilter::parse("port:443").unwrap().matches(&subject()));
        assert!(TopFilter::parse("port:51000").unwrap().matches(&subject()));
        assert!(!TopFilter::parse("pid:41").unwrap().matches(&subject()));
        assert!(!TopFilter::parse("proto:udp").unwrap().matches(&subject()));
        assert!(
            !TopFilter::parse("state:listen")
                .unwrap()
                .matches(&subject())
        );
        assert!(
            TopFilter::parse("unit:nginx.service")
                .unwrap()
                .matches(&subject())
        );
        assert!(!TopFilter::parse("unit:ngin").unwrap().matches(&subject()));
        let no_unit = Subject {
            unit: None,
            ..subject()
        };
        assert!(!TopFilter::parse("unit:nginx").unwrap().matches(&no_unit));
        assert!(TopFilter::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_words_are_refused_by_name() {
        for (text, part) in [
            ("port", "expected key:value"),
            ("port:http", "not a port"),
            ("port:70000", "not a port"),
            ("pid:-1", "not a process id"),
            ("proto:sctp", "tcp or udp"),
            ("state:open", "state is one of"),
            ("colour:red", "unknown key"),
            ("comm:", "1 to 15 bytes"),
            ("comm:a-name-longer-than-15", "1 to 15 bytes"),
        ] {
            let e = TopFilter::parse(text).unwrap_err();
            assert!(e.contains(part), "{text}: {e}");
        }
        let e = TopFilter::parse("port:\x1b[31m").unwrap_err();
        assert!(!e.contains('\x1b'), "{e:?}");
    }
}
