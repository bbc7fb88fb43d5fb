//! The `counters` subscription's sums: per process, what the events of one
//! interval added (counted by `event::tally`, the rule `top` uses on the raw
//! stream).
//!
//! Why it exists: a client that wants rates (`sockmon top`) would otherwise
//! decode every ~900-byte event line, and the daemon encode it, at the full
//! event rate. Here each event costs one hash-map update in the daemon and
//! nothing on the wire; the client reads one line per interval, whatever the
//! rate (BENCHMARKS.md, `top`). Pure: items in, lines out, so it is tested
//! without a daemon.

use std::collections::HashMap;

use super::protocol::{CountersLine, ProcCounters};
use crate::{
    clock::WallTime,
    engine::StreamItem,
    escape,
    event::{
        Comm,
        tally::{Counts, Tally},
    },
    view::{ContainerView, Viewer},
};

#[derive(Debug, Default)]
struct Sum {
    comm: Comm,
    unit: Option<String>,
    container: Option<ContainerView>,
    events: u64,
    counts: Counts,
}

/// Most processes one interval lists; the rest are summed in `other`, so
/// a client's cost in daemon memory is bounded whatever the fork rate
/// (about 100 bytes a process: ~1.6 MiB).
pub const MAX_PROCESSES: usize = 16_384;

/// The interval being counted.
#[derive(Debug)]
pub struct Window {
    viewer: Viewer,
    tally: Tally,
    procs: HashMap<u32, Sum>,
    /// Processes beyond [`MAX_PROCESSES`], summed.
    other: Sum,
    events: u64,
    lost: u64,
}

impl Window {
    pub fn new(viewer: Viewer) -> Self {
        Self {
            viewer,
            tally: Tally::default(),
            procs: HashMap::new(),
            other: Sum::default(),
            events: 0,
            lost: 0,
        }
    }

    /// Counts one item of the subscription.
    pub fn count(&mut self, item: &StreamItem) {
        let e = match item {
            StreamItem::Event(e) => e,
            StreamItem::Lost { count, .. } => {
                self.lost += count;
                return;
            }
            StreamItem::Alert(_) => return,
        };
        self.events += 1;
        let delta = self.tally.event(e);
        if e.pid == 0 {
            return; // a flow record of a socket without a known owner
        }
        let full = self.procs.len() >= MAX_PROCESSES;
        let sum = match self.procs.get_mut(&e.pid) {
            Some(sum) => sum,
            None if full => {
                self.other.events += 1;
                self.other.counts.add(&delta);
                return;
            }
            None => self.procs.entry(e.pid).or_default(),
        };
        sum.events += 1;
        sum.counts.add(&delta);
        if self.viewer.sees_names_of(Some(e.uid)) {
            let leader = if e.process_comm.as_bytes().is_empty() {
                e.comm
            } else {
                e.process_comm
            };
            if !leader.as_bytes().is_empty() {
                sum.comm = leader;
            }
        }
        // Copied once per process and interval, not per event.
        if sum.unit.is_none()
            && sum.container.is_none()
            && self.viewer.sees_details_of(Some(e.uid))
            && let Some(c) = e.ctx.as_deref()
        {
            sum.unit.clone_from(&c.unit);
            sum.container = c.container.as_ref().map(ContainerView::from);
        }
    }

    /// The line for the interval that ends now, and a fresh interval.
    pub fn take(&mut self, time: WallTime, interval_ms: u64) -> CountersLine {
        let row = |pid, s: Sum| ProcCounters {
            pid,
            comm: escape::for_json(s.comm.as_bytes()).into_owned(),
            unit: s.unit,
            container: s.container,
            events: s.events,
            connects: s.counts.connects,
            failed: s.counts.failed,
            accepts: s.counts.accepts,
            bytes_sent: s.counts.sent,
            bytes_received: s.counts.received,
        };
        let mut processes: Vec<ProcCounters> =
            self.procs.drain().map(|(pid, s)| row(pid, s)).collect();
        processes.sort_unstable_by_key(|p| p.pid);
        let other = std::mem::take(&mut self.other);
        CountersLine {
            time: time.rfc3339(),
            interval_ms,
            events: std::mem::take(&mut self.events),
            lost: std::mem::take(&mut self.lost),
            processes,
            other: (other.events > 0).then(|| row(0, other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind, testing};

    fn ev(kind: EventKind, pid: u32, uid: u32, error: Option<i32>) -> StreamItem {
        StreamItem::Event(Event {
            uid,
            error,
            ..testing::event(kind, 10 + u64::from(pid), pid, "127.0.0.1:1", "127.0.0.1:2")
        })
    }

    #[test]
    fn sums_per_process_then_starts_again() {
        let mut w = Window::new(Viewer::ROOT);
        for item in [
            ev(EventKind::Connect, 5, 0, None),
            ev(EventKind::Connect, 5, 0, Some(libc::ECONNREFUSED)),
            ev(EventKind::Accept, 6, 0, None),
            ev(EventKind::Close, 6, 0, None),
            StreamItem::Lost {
                time: WallTime(0),
                cause: "counters_lagged",
                count: 3,
            },
        ] {
            w.count(&item);
        }
        let line = w.take(WallTime(0), 250);
        assert_eq!((line.events, line.lost, line.interval_ms), (4, 3, 250));
        let p: Vec<_> = line
            .processes
            .iter()
            .map(|p| {
                (
                    p.pid,
                    p.comm.as_str(),
                    p.events,
                    p.connects,
                    p.failed,
                    p.accepts,
                )
            })
            .collect();
        assert_eq!(p, [(5, "proc", 2, 2, 1, 0), (6, "proc", 2, 0, 0, 1)]);
        let next = w.take(WallTime(1), 250);
        assert_eq!((next.events, next.lost, next.processes.len()), (0, 0, 0));
    }

    #[test]
    fn unit_and_container_come_from_the_event_and_follow_exes_rule() {
        use crate::event::flow::{Container, ProcCtx};
        let id = "ab".repeat(32);
        let mut e = Event {
            uid: 33,
            ..testing::event(EventKind::Connect, 1, 5, "127.0.0.1:1", "127.0.0.1:2")
        };
        e.ctx = Some(std::sync::Arc::new(ProcCtx {
            unit: Some(format!("docker-{id}.scope")),
            container: Some(Container {
                runtime: "docker",
                id: id.clone(),
                rootless: false,
            }),
            ..Default::default()
        }));
        let line = |viewer| {
            let mut w = Window::new(viewer);
            w.count(&StreamItem::Event(e.clone()));
            w.take(WallTime(0), 1000).processes.remove(0)
        };
        let p = line(Viewer::ROOT);
        assert_eq!(p.unit, Some(format!("docker-{id}.scope")));
        let c = p.container.expect("container");
        assert_eq!((c.runtime.as_str(), c.id.as_str()), ("docker", id.as_str()));
        let stranger = Viewer {
            uid: Some(1000),
            hide_names: false,
        };
        let p = line(stranger);
        assert_eq!((p.unit, p.container), (None, None));
    }

    #[test]
    fn names_are_hidden_as_list_hides_them() {
        let viewer = Viewer {
            uid: Some(1000),
            hide_names: true,
        };
        let mut w = Window::new(viewer);
        w.count(&ev(EventKind::Connect, 5, 0, None));
        w.count(&ev(EventKind::Connect, 7, 1000, None));
        let line = w.take(WallTime(0), 1000);
        let names: Vec<_> = line
            .processes
            .iter()
            .map(|p| (p.pid, p.comm.as_str()))
            .collect();
        assert_eq!(names, [(5, ""), (7, "proc")]);
    }

    #[test]
    fn beyond_the_bound_processes_are_summed_in_other() {
        let mut w = Window::new(Viewer::ROOT);
        for pid in 1..=MAX_PROCESSES as u32 + 3 {
            w.count(&ev(EventKind::Connect, pid, 0, None));
        }
        // A process already listed is still counted as itself.
        w.count(&ev(EventKind::Connect, 1, 0, None));
        let line = w.take(WallTime(0), 1000);
        assert_eq!(line.processes.len(), MAX_PROCESSES);
        assert_eq!(line.processes[0].connects, 2);
        let other = line.other.expect("other");
        assert_eq!((other.pid, other.events, other.connects), (0, 3, 3));
        assert_eq!(line.events, MAX_PROCESSES as u64 + 4);
        assert_eq!(w.take(WallTime(1), 1000).other, None);
    }

    #[test]
    fn the_line_reads_back() {
        let mut w = Window::new(Viewer::ROOT);
        w.count(&ev(EventKind::Connect, 5, 0, None));
        let line = w.take(WallTime(0), 1000);
        let bytes = line.to_line();
        assert_eq!(bytes.last(), Some(&b'\n'));
        let back: CountersLine = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, line);
    }
}
