//! Who the acting process was when an event happened: its executable,
//! argv, parent, systemd unit and container (flows, issue 13).
//!
//! The kernel captures exe filename, argv and parent at exec
//! ([`ExecCtx`], `probes/exec.rs`), so a process that connects and exits at
//! once still has them; the cgroup id on every event gives the unit and
//! container ([`CgroupNames`], resolved once per cgroup). The canonical
//! `/proc/PID/exe`, read by the `/proc` worker while the process lives, is
//! preferred over the exec filename once known (`exe_source` says which).
//! A process that predates sockmon has no exec record: its args and parent
//! are unknown (`metadata: partial`).
//!
//! Bounded: one exec record per live process (removed at its exit, at most
//! [`EXEC_CAP`]); one built context per process, rebuilt when what it was
//! built from changes.

use std::{collections::HashMap, path::Path, sync::Arc};

use crate::cgroup_unit::CgroupNames;
use crate::{
    event::{
        Event,
        flow::{ExeSource, ExecCtx, ProcCtx},
    },
    table::SocketTable,
};

/// Processes whose exec record is kept at once.
pub const EXEC_CAP: usize = 65_536;

#[derive(Debug)]
struct Built {
    cgroup_id: u64,
    had_proc_exe: bool,
    ctx: Arc<ProcCtx>,
}

#[derive(Debug, Default)]
pub struct ProcContexts {
    execs: HashMap<u32, Arc<ExecCtx>>,
    built: HashMap<u32, Built>,
    cgroups: CgroupNames,
    /// Exec records dropped because [`EXEC_CAP`] was reached.
    pub dropped: u64,
}

impl ProcContexts {
    pub fn new(cgroup_root: Option<std::path::PathBuf>) -> Self {
        Self {
            cgroups: CgroupNames::new(cgroup_root),
            ..Self::default()
        }
    }

    /// A process executed a program. A relative filename is made absolute
    /// against its working directory while that can still be read.
    pub fn on_exec(&mut self, mut x: ExecCtx) {
        if !x.filename.starts_with(b"/")
            && let Ok(cwd) = std::fs::read_link(format!("/proc/{}/cwd", x.pid))
        {
            use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
            let name = std::ffi::OsStr::from_bytes(&x.filename);
            let rel = Path::new(name);
            let rel = rel.strip_prefix("./").unwrap_or(rel);
            x.filename = cwd.join(rel).into_os_string().into_vec();
        }
        if self.execs.len() >= EXEC_CAP && !self.execs.contains_key(&x.pid) {
            self.dropped += 1;
            return;
        }
        self.built.remove(&x.pid);
        self.execs.insert(x.pid, Arc::new(x));
    }

    /// The exec record of `pid`, if it is still the process that started
    /// at `start_ticks` (ticks since boot, as `/proc/PID/stat` says).
    pub fn exec_of(&self, pid: u32, start_ticks: u64) -> Option<&ExecCtx> {
        self.execs
            .get(&pid)
            .map(|x| &**x)
            .filter(|x| crate::event::start_ticks(x.start_ns) == start_ticks)
    }

    /// The last thread of `pid` exited.
    pub fn on_exit(&mut self, pid: u32) {
        self.execs.remove(&pid);
        self.built.remove(&pid);
    }

    /// Gives `e` its process context.
    pub fn annotate(&mut self, e: &mut Event, table: &SocketTable) {
        let proc_exe = table.process(e.pid).and_then(|p| p.exe.clone());
        if let Some(b) = self.built.get(&e.pid)
            && b.cgroup_id == e.cgroup_id
            && b.had_proc_exe == proc_exe.is_some()
        {
            e.ctx = Some(b.ctx.clone());
            return;
        }
        let exec = self
            .execs
            .get(&e.pid)
            .filter(|x| x.start_ns == e.start_ns)
            .cloned();
        let placement = self.cgroups.get(e.cgroup_id);
        let exe = match (&proc_exe, &exec) {
            (Some(p), _) => Some((p.as_bytes().to_vec(), ExeSource::ProcExe)),
            (None, Some(x)) if !x.filename.is_empty() => {
                Some((x.filename.clone(), ExeSource::ExecFilename))
            }
            _ => None,
        };
        let args = exec.as_ref().and_then(|x| x.args.clone());
        let ctx = ProcCtx {
            partial: exe.is_none()
                || args.is_none()
                || exec.is_none()
                || placement.is_none()
                || exe
                    .as_ref()
                    .is_some_and(|(name, _)| !name.starts_with(b"/")),
            exe,
            args,
            args_truncated: exec.as_ref().is_some_and(|x| x.args_truncated),
            ppid: exec.as_ref().map(|x| x.ppid),
            unit: placement.as_ref().and_then(|p| p.unit.clone()),
            container: placement.as_ref().and_then(|p| p.container.clone()),
        };
        let ctx = Arc::new(ctx);
        if self.built.len() >= EXEC_CAP {
            self.built.clear();
        }
        self.built.insert(
            e.pid,
            Built {
                cgroup_id: e.cgroup_id,
                had_proc_exe: proc_exe.is_some(),
                ctx: ctx.clone(),
            },
        );
        e.ctx = Some(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, testing};

    fn exec(pid: u32, name: &[u8]) -> ExecCtx {
        ExecCtx {
            pid,
            ppid: 1,
            start_ns: pid as u64 * 1_000_000_000,
            filename: name.to_vec(),
            filename_truncated: false,
            args: Some(vec![b"prog".to_vec(), b"--flag".to_vec()]),
            args_truncated: true,
            exe_file: Some((1, 2)),
        }
    }

    #[test]
    fn exec_record_gives_exe_args_and_parent_until_exit() {
        let table = SocketTable::new(10);
        let mut p = ProcContexts::new(None);
        p.on_exec(exec(4242, b"/usr/bin/prog"));
        let mut e = testing::event(EventKind::Connect, 1, 4242, "10.0.0.1:1", "10.0.0.2:2");
        e.start_ns = 4242 * 1_000_000_000;
        p.annotate(&mut e, &table);
        let c = e.ctx.clone().unwrap();
        assert_eq!(
            c.exe,
            Some((b"/usr/bin/prog".to_vec(), ExeSource::ExecFilename))
        );
        assert_eq!(c.args.as_ref().unwrap()[1], b"--flag");
        assert!(c.args_truncated);
        assert_eq!(c.ppid, Some(1));
        // No cgroup tree here: partial.
        assert!(c.partial);
        p.on_exit(4242);
        let mut later = e.clone();
        later.ctx = None;
        p.annotate(&mut later, &table);
        assert_eq!(later.ctx.unwrap().exe, None);
    }

    #[test]
    fn a_reused_pid_does_not_inherit_the_old_exec() {
        let table = SocketTable::new(10);
        let mut p = ProcContexts::new(None);
        p.on_exec(exec(7, b"/bin/old"));
        let mut e = testing::event(EventKind::Connect, 1, 7, "10.0.0.1:1", "10.0.0.2:2");
        e.start_ns = 999;
        p.annotate(&mut e, &table);
        assert_eq!(e.ctx.unwrap().exe, None);
    }
}
