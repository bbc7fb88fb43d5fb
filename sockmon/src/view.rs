//! What `ls`, `lookup` and the API show of a socket: a self-contained,
//! serializable copy of a table entry with its owners' process details
//! joined in, redacted for the viewer.
//!
//! These are the `SOCKET` objects of docs/api.md and the lines of
//! `sockmon ls --json`; the CLI reads them back from the daemon with the same
//! types.

use serde::{Deserialize, Serialize};

use crate::{
    clock::{BootClock, WallTime},
    escape,
    event::{
        Event, Proto,
        flow::{ExecCtx, TcpCounters},
    },
    filter::Filter,
    table::{SocketEntry, SocketTable},
};

/// One socket, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketView {
    pub proto: String,
    pub family: String,
    pub src_ip: String,
    pub src_port: u16,
    pub dst_ip: String,
    pub dst_port: u16,
    pub state: String,
    pub inode: u64,
    pub netns: u32,
    pub owners: Vec<OwnerView>,
    /// Owners beyond the daemon's `table.max_owners`, counted, not listed
    /// (children forked from a listed owner, nearly always).
    #[serde(default)]
    pub inherited_more: u32,
    /// IANA class of the local port (`well_known`, `registered`, `dynamic`).
    #[serde(default)]
    pub port_class: Option<String>,
    /// Below the namespace's `ip_unprivileged_port_start` (null: not readable).
    #[serde(default)]
    pub port_privileged: Option<bool>,
    /// Inside the namespace's `ip_local_port_range` (null: not readable).
    #[serde(default)]
    pub port_ephemeral: Option<bool>,
    /// `loopback`, `link_local`, `specific` or `wildcard`.
    #[serde(default)]
    pub addr_scope: Option<String>,
    /// IANA class of the remote port, when there is a remote side.
    #[serde(default)]
    pub dst_port_class: Option<String>,
    /// When the connection began (its connect or accept; RFC 3339, UTC),
    /// for connections the daemon saw begin or found in its start-up
    /// snapshot; null otherwise (listeners, bound sockets, no daemon).
    #[serde(default)]
    pub since: Option<String>,
    /// `since` is when the start-up snapshot found it: it began earlier.
    #[serde(default)]
    pub since_is_lower_bound: bool,
    /// What the TCP connection moved, at the daemon's latest `flow` sample
    /// (`flows.interval_ms`); null while flow records are off.
    #[serde(default)]
    pub bytes_sent: Option<u64>,
    #[serde(default)]
    pub bytes_received: Option<u64>,
}

/// One owner, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerView {
    pub pid: u32,
    pub tid: u32,
    /// The process's (leader's) name.
    pub comm: Option<String>,
    /// The name of the thread that last acted on the socket.
    pub thread_comm: Option<String>,
    pub uid: Option<u32>,
    pub exe: Option<String>,
    /// When the process started (RFC 3339, UTC).
    pub start_time: Option<String>,
    /// `event`, `snapshot` or `inherited`.
    pub source: String,
    /// The systemd unit only (user-manager units as `user@UID:name`).
    pub unit: Option<String>,
    /// The container, with its full id (and the short one, for people).
    #[serde(default)]
    pub container: Option<ContainerView>,
    /// argv at exec, when the daemon saw the exec (processes started before
    /// it have none); shown where `exe` is.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub args_truncated: bool,
    /// The parent at exec, when the daemon saw the exec.
    #[serde(default)]
    pub ppid: Option<u32>,
}

/// A container, as the event schema writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerView {
    /// `docker`, `containerd`, `crio` or `podman`.
    pub runtime: String,
    /// The full 64-hex id.
    pub id: String,
    pub short_id: String,
    /// Podman run by a user (under `user@UID.service`).
    pub rootless: bool,
}

impl From<&crate::cgroup_unit::Container> for ContainerView {
    fn from(c: &crate::cgroup_unit::Container) -> Self {
        Self {
            runtime: c.runtime.to_string(),
            id: c.id.clone(),
            short_id: c.short().to_string(),
            rootless: c.rootless,
        }
    }
}

/// Who is looking, and so what they may see (see docs/api.md, Access).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Viewer {
    /// `None`: sees everything (root). `Some(uid)`: sees paths and units of
    /// that uid's processes only.
    pub uid: Option<u32>,
    /// `/proc` is mounted with `hidepid`: names of others' processes are hidden too.
    pub hide_names: bool,
}

impl Viewer {
    pub const ROOT: Viewer = Viewer {
        uid: None,
        hide_names: false,
    };

    /// Whether the details (exe, args, unit, container) of a process of
    /// `owner_uid` may be shown.
    pub fn sees_details_of(&self, owner_uid: Option<u32>) -> bool {
        match self.uid {
            None => true,
            Some(me) => owner_uid == Some(me),
        }
    }

    /// Whether names (`comm`) of a process of `owner_uid` may be shown.
    pub fn sees_names_of(&self, owner_uid: Option<u32>) -> bool {
        !self.hide_names || self.sees_details_of(owner_uid)
    }

    /// `e` as this viewer may see it on the stream, by the rule of
    /// [`socket`]: `None` when nothing needs hiding, else a copy with the
    /// acting process's names emptied (when `/proc` hides them from this
    /// viewer) and its executable, arguments (with the names), unit and
    /// container removed (when the process is not the viewer's).
    pub fn redact_event(&self, e: &Event) -> Option<Event> {
        let details = self.sees_details_of(Some(e.uid));
        let names = self.sees_names_of(Some(e.uid));
        let ctx_hides = !details
            && e.ctx.as_deref().is_some_and(|c| {
                c.exe.is_some()
                    || c.unit.is_some()
                    || c.container.is_some()
                    || (!names && c.args.is_some())
            });
        if names && !ctx_hides {
            return None;
        }
        let mut r = e.clone();
        if !names {
            r.comm = Default::default();
            r.process_comm = Default::default();
        }
        if ctx_hides && let Some(c) = e.ctx.as_deref() {
            let mut c = c.clone();
            c.exe = None;
            c.unit = None;
            c.container = None;
            if !names {
                c.args = None;
                c.args_truncated = false;
            }
            r.ctx = Some(std::sync::Arc::new(c));
        }
        Some(r)
    }
}

/// What a view joins to the table: wall-clock start times, and what an
/// engine keeps beside the table ([`Joined`]), when one runs.
#[derive(Clone, Copy)]
pub struct Joins<'a> {
    pub boot: &'a BootClock,
    pub engine: Option<&'a dyn Joined>,
}

/// What the engine knows beyond the table, joined into views: the exec
/// record of a process (argv, parent), the start of a connection
/// (`since`) and its latest flow sample (`bytes_*`). A trait, so that the
/// views sit below the engine and the engine's records stay its own.
pub trait Joined {
    fn exec_of(&self, pid: u32, start_ticks: u64) -> Option<&ExecCtx>;
    /// When the socket's connection began, and whether that is a lower bound.
    fn birth(&self, inode: u64) -> Option<(WallTime, bool)>;
    fn moved(&self, inode: u64) -> Option<&TcpCounters>;
}

impl<'a> Joins<'a> {
    /// Start times only (a table without an engine behind it).
    pub fn boot_only(boot: &'a BootClock) -> Self {
        Self { boot, engine: None }
    }
}

/// Builds the view of `e` for `viewer`.
pub fn socket(
    e: &SocketEntry,
    table: &SocketTable,
    viewer: Viewer,
    joins: Joins<'_>,
) -> SocketView {
    let boot = joins.boot;
    let owners = e
        .owners
        .iter()
        .map(|o| {
            let p = table.process(o.pid);
            let uid = p.map(|p| p.uid);
            let details = viewer.sees_details_of(uid);
            let names = details || !viewer.hide_names;
            // argv follows exe's rule (and names', for a name is in it).
            let exec = p
                .filter(|_| details && names)
                .and_then(|p| joins.engine?.exec_of(p.pid, p.start_ticks));
            OwnerView {
                pid: o.pid,
                tid: o.tid,
                comm: p
                    .filter(|_| names)
                    .map(|p| escape::for_json(p.comm.as_bytes()).into_owned()),
                thread_comm: names.then(|| escape::for_json(o.comm.as_bytes()).into_owned()),
                uid,
                exe: p
                    .filter(|_| details)
                    .and_then(|p| p.exe.as_deref().map(str::to_string)),
                start_time: p.map(|p| boot.start_time(p.start_ticks).rfc3339()),
                source: o.source.name().to_string(),
                unit: p
                    .filter(|_| details)
                    .and_then(|p| p.unit.as_deref().map(str::to_string)),
                container: p
                    .filter(|_| details)
                    .and_then(|p| p.container.as_deref().map(ContainerView::from)),
                args: exec.and_then(|x| {
                    x.args
                        .as_ref()
                        .map(|a| a.iter().map(|x| escape::for_json(x).into_owned()).collect())
                }),
                args_truncated: exec.is_some_and(|x| x.args_truncated),
                ppid: exec.map(|x| x.ppid),
            }
        })
        .collect();
    let facts = crate::policy::ports::PortFacts::of(
        e.key.netns,
        e.owners.first().map(|o| o.pid),
        e.key.src().ip(),
        e.key.src().port(),
    );
    let dst_port = e.key.dst().port();
    let birth = joins.engine.and_then(|j| j.birth(e.inode));
    let moved = joins.engine.and_then(|j| j.moved(e.inode));
    SocketView {
        since: birth.map(|(t, _)| t.rfc3339()),
        since_is_lower_bound: birth.is_some_and(|(_, lower)| lower),
        bytes_sent: moved.map(|c| c.bytes_sent),
        bytes_received: moved.map(|c| c.bytes_received),
        port_class: Some(facts.class.name().to_string()),
        port_privileged: facts.privileged,
        port_ephemeral: facts.ephemeral,
        addr_scope: Some(facts.scope.name().to_string()),
        dst_port_class: (dst_port != 0).then(|| {
            crate::policy::ports::PortClass::of(dst_port)
                .name()
                .to_string()
        }),
        proto: e.key.proto().name().to_string(),
        family: e.key.family().name().to_string(),
        src_ip: e.key.src().ip().to_string(),
        src_port: e.key.src().port(),
        dst_ip: e.key.dst().ip().to_string(),
        dst_port: e.key.dst().port(),
        state: e.state.name().to_string(),
        inode: e.inode,
        netns: e.key.netns,
        owners,
        inherited_more: e.inherited_more,
    }
}

/// Every socket of `table` passing `filter`, ordered by (netns, inode).
pub fn list(
    table: &SocketTable,
    filter: &Filter,
    viewer: Viewer,
    joins: Joins<'_>,
) -> Vec<SocketView> {
    let mut rows: Vec<_> = table
        .iter()
        .filter(|e| matches_for(filter, e, table, viewer))
        .map(|e| socket(e, table, viewer, joins))
        .collect();
    rows.sort_by_key(|r| (r.netns, r.inode));
    rows
}

/// "Who owns `src → dst`?": in namespace `netns` or any, of `proto` or either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub proto: Option<Proto>,
    pub src: std::net::SocketAddr,
    pub dst: std::net::SocketAddr,
    pub netns: Option<u32>,
}

/// Every socket of `table` that answers `q`, ordered by (netns, inode).
pub fn lookup(
    table: &SocketTable,
    q: &Lookup,
    viewer: Viewer,
    joins: Joins<'_>,
) -> Vec<SocketView> {
    let mut rows: Vec<_> = table
        .lookup_any(q.proto, q.src, q.dst, q.netns)
        .map(|e| socket(e, table, viewer, joins))
        .collect();
    rows.sort_by_key(|r| (r.netns, r.inode));
    rows
}

/// Whether socket `e` passes `f` (`pid`, `comm`: any owner; `port`: either side).
pub fn matches(f: &Filter, e: &SocketEntry, table: &SocketTable) -> bool {
    matches_for(f, e, table, Viewer::ROOT)
}

/// [`matches`] as `viewer` may ask: a `comm` criterion only matches owners
/// whose names the viewer may see, so it is no oracle for hidden names.
pub fn matches_for(f: &Filter, e: &SocketEntry, table: &SocketTable, viewer: Viewer) -> bool {
    let owner_pid = |pid: &u32| {
        e.owners.iter().any(|o| o.pid == *pid)
            || table
                .process(*pid)
                .is_some_and(|p| p.collapsed.contains(&e.inode))
    };
    let owner_comm = |c: &String| {
        e.owners.iter().any(|o| {
            let p = table.process(o.pid);
            viewer.sees_names_of(p.map(|p| p.uid))
                && (o.comm.as_bytes() == c.as_bytes()
                    || p.is_some_and(|p| p.comm.as_bytes() == c.as_bytes()))
        })
    };
    (f.pids.is_empty() || f.pids.iter().any(owner_pid))
        && (f.comms.is_empty() || f.comms.iter().any(owner_comm))
        && (f.ports.is_empty()
            || f.ports
                .iter()
                .any(|p| e.key.src().port() == *p || e.key.dst().port() == *p))
        && f.proto.is_none_or(|p: Proto| p == e.key.proto())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Comm, Event, EventKind, Family},
        table::SocketTable,
    };

    fn table_with(uid: u32) -> SocketTable {
        let mut raw = [0u8; 16];
        raw[..5].copy_from_slice(b"nginx");
        let mut t = SocketTable::new(8);
        t.apply(&Event {
            kind: EventKind::Listen,
            time: WallTime(0),
            proto: Proto::Tcp,
            family: Family::Ipv4,
            src: "0.0.0.0:80".parse().unwrap(),
            dst: "0.0.0.0:0".parse().unwrap(),
            pid: 10,
            tid: 11,
            uid,
            comm: Comm::from_kernel(&raw),
            process_comm: Comm::from_kernel(&raw),
            start_ns: 2_000_000_000,
            netns: 5,
            inode: 99,
            cgroup_id: 0,
            error: None,
            state: 10,
            flags: 0,
            life: None,
            ctx: None,
            aux: 0,
        });
        t.set_process_details(
            10,
            200,
            crate::table::Details {
                exe: Some("/usr/sbin/nginx".into()),
                unit: Some(format!("docker-{ID}.scope").into()),
                container: crate::cgroup_unit::from_path(&format!(
                    "/system.slice/docker-{ID}.scope"
                ))
                .container
                .map(std::sync::Arc::new),
            },
        );
        t
    }

    const ID: &str = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e";

    /// What an engine joins, in a test: exec records by pid.
    struct Execs(Vec<ExecCtx>);

    impl Joined for Execs {
        fn exec_of(&self, pid: u32, _start_ticks: u64) -> Option<&ExecCtx> {
            self.0.iter().find(|x| x.pid == pid)
        }
        fn birth(&self, _inode: u64) -> Option<(WallTime, bool)> {
            None
        }
        fn moved(&self, _inode: u64) -> Option<&TcpCounters> {
            None
        }
    }

    /// Exec records: pid 10 ran `nginx -g daemon off;` from pid 1.
    fn execs() -> Execs {
        Execs(vec![ExecCtx {
            pid: 10,
            ppid: 1,
            start_ns: 2_000_000_000,
            filename: b"/usr/sbin/nginx".to_vec(),
            filename_truncated: false,
            args: Some(vec![
                b"nginx".to_vec(),
                b"-g".to_vec(),
                b"daemon off;".to_vec(),
            ]),
            args_truncated: false,
            exe_file: None,
        }])
    }

    fn view_as(t: &SocketTable, viewer: Viewer) -> SocketView {
        let (boot, execs) = (BootClock::sample(), execs());
        let joins = Joins {
            engine: Some(&execs),
            ..Joins::boot_only(&boot)
        };
        socket(t.get(99).unwrap(), t, viewer, joins)
    }

    #[test]
    fn root_sees_everything() {
        let t = table_with(33);
        let v = view_as(&t, Viewer::ROOT);
        assert_eq!(
            (v.proto.as_str(), v.state.as_str(), v.src_port, v.netns),
            ("tcp", "listen", 80, 5)
        );
        let o = &v.owners[0];
        assert_eq!((o.pid, o.tid, o.uid), (10, 11, Some(33)));
        assert_eq!(o.comm.as_deref(), Some("nginx"));
        assert_eq!(o.exe.as_deref(), Some("/usr/sbin/nginx"));
        // The unit is the unit only; the container apart, with its full id.
        assert_eq!(o.unit, Some(format!("docker-{ID}.scope")));
        let c = o.container.as_ref().expect("container");
        assert_eq!((c.runtime.as_str(), c.id.as_str()), ("docker", ID));
        assert_eq!((c.short_id.as_str(), c.rootless), ("3f4e5d6c7b8a", false));
        assert_eq!(
            o.args.as_deref(),
            Some(&["nginx".to_string(), "-g".into(), "daemon off;".into()][..])
        );
        assert_eq!((o.ppid, o.args_truncated), (Some(1), false));
        assert_eq!(o.source, "event");
        assert_eq!(v.port_class.as_deref(), Some("well_known"));
        assert_eq!(v.addr_scope.as_deref(), Some("wildcard"));
        assert_eq!(v.dst_port_class, None);
        assert!(o.start_time.as_deref().is_some_and(|s| s.ends_with('Z')));
    }

    #[test]
    fn others_processes_hide_paths_and_units_and_names_under_hidepid() {
        let t = table_with(33);
        let stranger = Viewer {
            uid: Some(1000),
            hide_names: false,
        };
        let v = view_as(&t, stranger);
        let o = &v.owners[0];
        assert_eq!((o.exe.as_deref(), o.unit.as_deref()), (None, None));
        assert_eq!((&o.container, &o.args, o.ppid), (&None, &None, None));
        assert_eq!(o.comm.as_deref(), Some("nginx"));
        let hidden = Viewer {
            uid: Some(1000),
            hide_names: true,
        };
        let v = view_as(&t, hidden);
        let o = &v.owners[0];
        assert_eq!((o.comm.as_deref(), o.thread_comm.as_deref()), (None, None));
        let same = Viewer {
            uid: Some(33),
            hide_names: true,
        };
        let v = view_as(&t, same);
        let o = &v.owners[0];
        assert_eq!(o.exe.as_deref(), Some("/usr/sbin/nginx"));
        // Its own process: argv too, names being its own.
        assert_eq!(o.args.as_ref().map(Vec::len), Some(3));
        // A process that is not the one the exec record is of (pid reused): no argv.
        let mut t2 = table_with(33);
        t2.set_process_details(10, 200, crate::table::Details::default());
        // Its exit removed the record (ProcContexts::on_exit).
        let (boot, execs) = (BootClock::sample(), Execs(Vec::new()));
        let joins = Joins {
            engine: Some(&execs),
            ..Joins::boot_only(&boot)
        };
        let o = &socket(t2.get(99).unwrap(), &t2, Viewer::ROOT, joins).owners[0];
        assert_eq!((&o.args, o.ppid, &o.container), (&None, None, &None));
    }

    #[test]
    fn stream_events_are_redacted_as_rows_are() {
        use crate::event::{flow::ProcCtx, testing};
        let mut e = testing::event(EventKind::Connect, 1, 10, "10.0.0.1:5000", "1.1.1.1:443");
        e.uid = 33;
        e.comm = testing::comm(b"nginx");
        e.ctx = Some(std::sync::Arc::new(ProcCtx {
            exe: Some((
                b"/usr/sbin/nginx".to_vec(),
                crate::event::flow::ExeSource::ProcExe,
            )),
            args: Some(vec![b"nginx".to_vec()]),
            unit: Some("nginx.service".into()),
            ..Default::default()
        }));
        assert_eq!(Viewer::ROOT.redact_event(&e), None);
        let owner = Viewer {
            uid: Some(33),
            hide_names: true,
        };
        assert_eq!(owner.redact_event(&e), None);
        let stranger = Viewer {
            uid: Some(1000),
            hide_names: false,
        };
        let r = stranger.redact_event(&e).unwrap();
        assert_eq!(r.comm.as_bytes(), b"nginx");
        let c = r.ctx.as_deref().unwrap();
        assert_eq!((&c.exe, &c.unit), (&None, &None));
        assert_eq!(c.args.as_deref(), Some(&[b"nginx".to_vec()][..]));
        let hidden = Viewer {
            uid: Some(1000),
            hide_names: true,
        };
        let r = hidden.redact_event(&e).unwrap();
        assert_eq!(
            (r.comm.as_bytes(), r.process_comm.as_bytes()),
            (&b""[..], &b""[..])
        );
        assert_eq!(r.ctx.as_deref().unwrap().args, None);
    }

    #[test]
    fn socket_filters() {
        let t = table_with(0);
        let e = t.get(99).unwrap();
        assert!(matches(&Filter::default(), e, &t));
        assert!(matches(
            &Filter {
                pids: vec![10],
                ..Default::default()
            },
            e,
            &t
        ));
        assert!(!matches(
            &Filter {
                pids: vec![11],
                ..Default::default()
            },
            e,
            &t
        ));
        assert!(matches(
            &Filter {
                comms: vec!["nginx".into()],
                ..Default::default()
            },
            e,
            &t
        ));
        assert!(matches(
            &Filter {
                ports: vec![80],
                ..Default::default()
            },
            e,
            &t
        ));
        assert!(!matches(
            &Filter {
                proto: Some(Proto::Udp),
                ..Default::default()
            },
            e,
            &t
        ));
    }
}
