//! Event and socket filters shared by `watch`, `ls` and the API.
//!
//! Within one criterion the values are alternatives (`--port 80 --port 443`
//! matches either); different criteria must all match.

use crate::event::{Event, EventKind, Proto};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    /// Exact `comm` (as the kernel truncates it: 15 bytes).
    pub comms: Vec<String>,
    /// Either side's port.
    pub ports: Vec<u16>,
    pub proto: Option<Proto>,
    pub events: Vec<EventKind>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn matches(&self, e: &Event) -> bool {
        (self.pids.is_empty() || self.pids.contains(&e.pid))
            && (self.comms.is_empty()
                || self.comms.iter().any(|c| c.as_bytes() == e.comm.as_bytes()))
            && (self.ports.is_empty() || self.ports.iter().any(|p| e.has_port(*p)))
            && self.proto.is_none_or(|p| p == e.proto)
            && (self.events.is_empty() || self.events.contains(&e.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing;

    fn ev(kind: EventKind, pid: u32, name: &[u8], src: &str, dst: &str) -> Event {
        Event {
            comm: testing::comm(name),
            ..testing::event(kind, 1, pid, src, dst)
        }
    }

    #[test]
    fn empty_filter_matches_everything() {
        let e = ev(
            EventKind::Connect,
            1,
            b"curl",
            "10.0.0.1:5000",
            "1.1.1.1:443",
        );
        assert!(Filter::default().matches(&e));
    }

    #[test]
    fn port_matches_either_side() {
        let e = ev(
            EventKind::Connect,
            1,
            b"curl",
            "10.0.0.1:5000",
            "1.1.1.1:443",
        );
        let f = |p| Filter {
            ports: vec![p],
            ..Default::default()
        };
        assert!(f(443).matches(&e));
        assert!(f(5000).matches(&e));
        assert!(!f(80).matches(&e));
    }

    #[test]
    fn criteria_combine_with_and_values_with_or() {
        let e = ev(
            EventKind::Accept,
            42,
            b"nginx",
            "0.0.0.0:80",
            "1.2.3.4:9999",
        );
        let f = Filter {
            pids: vec![7, 42],
            comms: vec!["nginx".into()],
            events: vec![EventKind::Accept, EventKind::Close],
            proto: Some(Proto::Tcp),
            ..Default::default()
        };
        assert!(f.matches(&e));
        assert!(
            !Filter {
                proto: Some(Proto::Udp),
                ..f.clone()
            }
            .matches(&e)
        );
        assert!(
            !Filter {
                pids: vec![7],
                ..f.clone()
            }
            .matches(&e)
        );
        assert!(
            !Filter {
                comms: vec!["ngin".into()],
                ..f.clone()
            }
            .matches(&e)
        );
        assert!(
            !Filter {
                events: vec![EventKind::Bind],
                ..f
            }
            .matches(&e)
        );
    }
}
