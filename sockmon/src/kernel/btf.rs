//! Resolves [`KernelOffsets`] from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) and tracefs format files.
//!
//! Members are found by name, descending through anonymous structs and
//! unions (e.g. `sock_common`'s `skc_daddr` lives in an anonymous struct
//! inside an anonymous union). Each field's size is checked against what the
//! programs read, so a kernel with a different layout fails loudly at load
//! instead of producing wrong tuples.

use std::path::Path;

use btf_rs::{Btf, BtfType, Type};
use sockmon_common::{
    KernelOffsets, SOCK_HEAD_BYTES,
    flow::{ABSENT, FlowOffsets},
};
use thiserror::Error;

use super::tracefs::{Format, TracefsError};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF from {path}: {reason} (sockmon needs a kernel built with CONFIG_DEBUG_INFO_BTF)"
    )]
    Open { path: String, reason: String },
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("kernel BTF: struct `{ty}` has no member `{member}`")]
    NoMember { ty: String, member: String },
    #[error("kernel BTF: `{ty}.{path}` is a bitfield; sockmon reads whole bytes (kernel too old?)")]
    Bitfield { ty: String, path: String },
    #[error("kernel BTF: `{ty}.{path}` is {actual} bytes, sockmon expects {expected}")]
    Size {
        ty: String,
        path: String,
        actual: usize,
        expected: usize,
    },
    #[error("kernel BTF: {0}")]
    Parse(String),
    #[error("kernel BTF has no function `{0}`")]
    NoFunction(String),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
}

/// Looks up member offsets in one BTF blob.
pub struct Layout {
    btf: Btf,
}

impl Layout {
    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let open = |reason: String| BtfError::Open {
            path: path.to_string(),
            reason,
        };
        // Read whole, then parsed from memory: btf-rs's reader seeks for
        // every type, and each seek of the sysfs file is a system call
        // (measured: a third of the parse, a tenth of the time to READY).
        let bytes = std::fs::read(path).map_err(|e| open(e.to_string()))?;
        let btf = Btf::from_bytes(&bytes).map_err(|e| open(e.to_string()))?;
        Ok(Self { btf })
    }

    /// Byte offset of `path` (dot-separated members) inside struct `ty`,
    /// checking the final member is `expected_size` bytes wide.
    pub fn offset(&self, ty: &str, path: &str, expected_size: usize) -> Result<u32, BtfError> {
        let mut current = self.named_struct(ty)?;
        let mut bits = 0u32;
        let mut last_type = 0u32;
        for (i, segment) in path.split('.').enumerate() {
            if i > 0 {
                current = self
                    .as_struct(last_type)
                    .ok_or_else(|| BtfError::NoMember {
                        ty: ty.to_string(),
                        member: path.to_string(),
                    })?;
            }
            let (off, type_id, bitfield) =
                self.find_member(&current, segment)?
                    .ok_or_else(|| BtfError::NoMember {
                        ty: ty.to_string(),
                        member: path.to_string(),
                    })?;
            if bitfield {
                return Err(BtfError::Bitfield {
                    ty: ty.to_string(),
                    path: path.to_string(),
                });
            }
            bits += off;
            last_type = type_id;
        }
        let actual = self.size_of(last_type)?;
        if actual != expected_size {
            return Err(BtfError::Size {
                ty: ty.to_string(),
                path: path.to_string(),
                actual,
                expected: expected_size,
            });
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield {
                ty: ty.to_string(),
                path: path.to_string(),
            });
        }
        Ok(bits / 8)
    }

    /// The parameter types and the return type of kernel function `name`,
    /// as C spells them (`struct socket *`, `int`), for a hook that reads
    /// its arguments by position: a kernel whose function has another shape
    /// is told apart at load, never by its version.
    pub fn function_signature(&self, name: &str) -> Result<(Vec<String>, String), BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::NoFunction(name.to_string()))?;
        let func = types
            .into_iter()
            .find_map(|t| match t {
                Type::Func(f) => Some(f),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoFunction(name.to_string()))?;
        let proto = match self.strip(func.get_type_id().unwrap_or(0))? {
            Type::FuncProto(p) => p,
            other => return Err(BtfError::Parse(format!("{name} is a {}", other.name()))),
        };
        let params = proto
            .parameters
            .iter()
            .map(|p| self.describe(p.get_type_id().unwrap_or(0)))
            .collect();
        Ok((params, self.describe(proto.return_type_id())))
    }

    /// A type as C spells it, through typedefs and qualifiers, enough to
    /// tell `struct socket *` from `struct sock *` or `int`.
    fn describe(&self, type_id: u32) -> String {
        if type_id == 0 {
            return "void".into();
        }
        match self.strip(type_id) {
            Ok(Type::Ptr(p)) => format!("{} *", self.describe(p.get_type_id().unwrap_or(0))),
            Ok(t @ (Type::Struct(_) | Type::Union(_))) => {
                let kw = if matches!(t, Type::Union(_)) {
                    "union"
                } else {
                    "struct"
                };
                let name = t
                    .as_btf_type()
                    .and_then(|b| self.btf.resolve_name(b).ok())
                    .unwrap_or_default();
                format!("{kw} {name}")
            }
            Ok(t) => t
                .as_btf_type()
                .and_then(|b| self.btf.resolve_name(b).ok())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| t.name().to_string()),
            Err(_) => "?".into(),
        }
    }

    fn named_struct(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::NoStruct(name.to_string()))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// The struct or union `type_id` names, looking through typedefs and qualifiers.
    fn as_struct(&self, type_id: u32) -> Option<btf_rs::Struct> {
        match self.strip(type_id).ok()? {
            Type::Struct(s) | Type::Union(s) => Some(s),
            _ => None,
        }
    }

    fn strip(&self, mut type_id: u32) -> Result<Type, BtfError> {
        loop {
            let t = self
                .btf
                .resolve_type_by_id(type_id)
                .map_err(|e| BtfError::Parse(e.to_string()))?;
            match &t {
                Type::Typedef(_)
                | Type::Volatile(_)
                | Type::Const(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    type_id = t
                        .as_btf_type()
                        .and_then(|b| b.get_type_id())
                        .ok_or_else(|| BtfError::Parse(format!("type {type_id} has no target")))?;
                }
                _ => return Ok(t),
            }
        }
    }

    /// (bit offset, type id, is bitfield) of member `name`, searching anonymous members too.
    fn find_member(
        &self,
        s: &btf_rs::Struct,
        name: &str,
    ) -> Result<Option<(u32, u32, bool)>, BtfError> {
        for m in &s.members {
            let type_id = m.get_type_id().unwrap_or(0);
            let member_name = self.btf.resolve_name(m).unwrap_or_default();
            if member_name == name {
                return Ok(Some((
                    m.bit_offset(),
                    type_id,
                    m.bitfield_size().is_some_and(|b| b != 0),
                )));
            }
            if member_name.is_empty()
                && let Some(inner) = self.as_struct(type_id)
                && let Some((off, t, bf)) = self.find_member(&inner, name)?
            {
                return Ok(Some((m.bit_offset() + off, t, bf)));
            }
        }
        Ok(None)
    }

    fn size_of(&self, type_id: u32) -> Result<usize, BtfError> {
        Ok(match self.strip(type_id)? {
            Type::Int(i) => i.size(),
            Type::Ptr(_) => 8,
            Type::Enum(e) => e.size(),
            Type::Enum64(e) => e.size(),
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Array(a) => a.len() * self.size_of(a.get_type_id().unwrap_or(0))?,
            other => return Err(BtfError::Parse(format!("cannot size a {}", other.name()))),
        })
    }
}

/// Resolves every offset the programs use. The caller parses the BTF once
/// ([`Layout::from_file`]) for this and [`resolve_flow`]: a parse of this
/// kernel's vmlinux BTF is the larger part of the time to load.
pub fn resolve(l: &Layout, tracefs: Option<&Path>) -> Result<KernelOffsets, BtfError> {
    let offsets = resolve_all(l, tracefs)?;
    check_sock_head(&offsets)?;
    Ok(offsets)
}

/// The programs read a socket's `sock_common` in one read of
/// [`SOCK_HEAD_BYTES`]: every field they take from it must lie within.
fn check_sock_head(o: &KernelOffsets) -> Result<(), BtfError> {
    let fields = [
        ("skc_rcv_saddr", o.sk_rcv_saddr, 4),
        ("skc_daddr", o.sk_daddr, 4),
        ("skc_dport", o.sk_dport, 2),
        ("skc_num", o.sk_num, 2),
        ("skc_family", o.sk_family, 2),
        ("skc_state", o.sk_state, 1),
        ("skc_net", o.sk_net, 8),
        ("skc_v6_daddr", o.sk_v6_daddr, 16),
        ("skc_v6_rcv_saddr", o.sk_v6_rcv_saddr, 16),
    ];
    for (name, off, size) in fields {
        if off as usize + size > SOCK_HEAD_BYTES {
            return Err(BtfError::Parse(format!(
                "sock.__sk_common.{name} ends at byte {}, beyond the {SOCK_HEAD_BYTES} bytes sockmon reads at once",
                off as usize + size
            )));
        }
    }
    Ok(())
}

fn resolve_all(l: &Layout, tracefs: Option<&Path>) -> Result<KernelOffsets, BtfError> {
    // The syscall tracepoints' record layout: only the `syscalls` mode needs
    // it (0 when tracefs is missing; that mode then does not load).
    let (tp_sys_enter_args, tp_sys_exit_ret) = match tracefs {
        Some(t) => (
            Format::read(t, "syscalls", "sys_enter_bind")?.offset("fd")?,
            Format::read(t, "syscalls", "sys_exit_bind")?.offset("ret")?,
        ),
        None => (0, 0),
    };
    Ok(KernelOffsets {
        task_files: l.offset("task_struct", "files", 8)?,
        files_fdt: l.offset("files_struct", "fdt", 8)?,
        fdtable_max_fds: l.offset("fdtable", "max_fds", 4)?,
        fdtable_fd: l.offset("fdtable", "fd", 8)?,
        file_private_data: l.offset("file", "private_data", 8)?,
        file_inode: l.offset("file", "f_inode", 8)?,
        inode_mode: l.offset("inode", "i_mode", 2)?,
        inode_ino: l.offset("inode", "i_ino", 8)?,
        socket_sk: l.offset("socket", "sk", 8)?,
        socket_file: l.offset("socket", "file", 8)?,
        sk_family: l.offset("sock", "__sk_common.skc_family", 2)?,
        sk_state: l.offset("sock", "__sk_common.skc_state", 1)?,
        sk_num: l.offset("sock", "__sk_common.skc_num", 2)?,
        sk_dport: l.offset("sock", "__sk_common.skc_dport", 2)?,
        sk_rcv_saddr: l.offset("sock", "__sk_common.skc_rcv_saddr", 4)?,
        sk_daddr: l.offset("sock", "__sk_common.skc_daddr", 4)?,
        sk_v6_rcv_saddr: l.offset("sock", "__sk_common.skc_v6_rcv_saddr", 16)?,
        sk_v6_daddr: l.offset("sock", "__sk_common.skc_v6_daddr", 16)?,
        sk_net: l.offset("sock", "__sk_common.skc_net", 8)?,
        sk_protocol: l.offset("sock", "sk_protocol", 2)?,
        sk_socket: l.offset("sock", "sk_socket", 8)?,
        inet_sport: l.offset("inet_sock", "inet_sport", 2)?,
        net_inum: l.offset("net", "ns.inum", 4)?,
        task_group_leader: l.offset("task_struct", "group_leader", 8)?,
        task_comm: l.offset("task_struct", "comm", 16)?,
        // Renamed from `real_start_time` in 5.5.
        task_start_boottime: l
            .offset("task_struct", "start_boottime", 8)
            .or_else(|_| l.offset("task_struct", "real_start_time", 8))?,
        task_tgid: l.offset("task_struct", "tgid", 4)?,
        task_pid: l.offset("task_struct", "pid", 4)?,
        task_signal: l.offset("task_struct", "signal", 8)?,
        signal_live: l.offset("signal_struct", "live", 4)?,
        sk_err: l.offset("sock", "sk_err", 4)?,
        task_cred: l.offset("task_struct", "cred", 8)?,
        cred_uid: l.offset("cred", "uid", 4)?,
        task_cgroups: l.offset("task_struct", "cgroups", 8)?,
        css_set_dfl_cgrp: l.offset("css_set", "dfl_cgrp", 8)?,
        cgroup_kn: l.offset("cgroup", "kn", 8)?,
        kernfs_node_id: l.offset("kernfs_node", "id", 8)?,
        // x86-64 keeps the syscall number in `orig_ax`, arm64 in `syscallno`.
        pt_regs_syscall_nr: l
            .offset("pt_regs", "orig_ax", 8)
            .or_else(|_| l.offset("pt_regs", "syscallno", 8))?,
        tp_sys_enter_args,
        tp_sys_exit_ret,
    })
}

// ---- Flows workstream (issue 13): offsets for the close record's counters ----

/// Resolves [`FlowOffsets`]: the `tcp_sock` counters read at release, the
/// socket's drop counters (`sk_drop_counters` is new in 6.18 and optional),
/// and what exec capture reads (`mm_struct`, the exe file, the tracepoint's
/// `filename`).
pub fn resolve_flow(l: &Layout, tracefs: &Path) -> Result<FlowOffsets, BtfError> {
    let mut o = resolve_flow_in(l)?;
    o.tp_exec_filename =
        Format::read(tracefs, "sched", "sched_process_exec")?.offset("filename")?;
    Ok(o)
}

fn resolve_flow_in(l: &Layout) -> Result<FlowOffsets, BtfError> {
    let optional = |ty: &str, path: &str, size: usize| match l.offset(ty, path, size) {
        Ok(off) => Ok(off),
        Err(BtfError::NoMember { .. }) | Err(BtfError::NoStruct(_)) => Ok(ABSENT),
        Err(e) => Err(e),
    };
    let sk_drop_counters = optional("sock", "sk_drop_counters", 8)?;
    let (ndc_drops0, ndc_drops1) = if sk_drop_counters == ABSENT {
        (ABSENT, ABSENT)
    } else {
        (
            l.offset("numa_drop_counters", "drops0", 4)?,
            l.offset("numa_drop_counters", "drops1", 4)?,
        )
    };
    Ok(FlowOffsets {
        tcp_bytes_sent: l.offset("tcp_sock", "bytes_sent", 8)?,
        tcp_bytes_acked: l.offset("tcp_sock", "bytes_acked", 8)?,
        tcp_bytes_received: l.offset("tcp_sock", "bytes_received", 8)?,
        tcp_segs_in: l.offset("tcp_sock", "segs_in", 4)?,
        tcp_segs_out: l.offset("tcp_sock", "segs_out", 4)?,
        tcp_total_retrans: l.offset("tcp_sock", "total_retrans", 4)?,
        tcp_srtt_us: l.offset("tcp_sock", "srtt_us", 4)?,
        sk_drops: l.offset("sock", "sk_drops", 4)?,
        sk_drop_counters,
        ndc_drops0,
        ndc_drops1,
        task_mm: l.offset("task_struct", "mm", 8)?,
        task_real_parent: l.offset("task_struct", "real_parent", 8)?,
        mm_arg_start: l.offset("mm_struct", "arg_start", 8)?,
        mm_arg_end: l.offset("mm_struct", "arg_end", 8)?,
        mm_exe_file: l.offset("mm_struct", "exe_file", 8)?,
        inode_sb: l.offset("inode", "i_sb", 8)?,
        sb_dev: l.offset("super_block", "s_dev", 4)?,
        tp_exec_filename: 0,
    })
}

#[cfg(test)]
mod flow_tests {
    use super::*;

    /// On the running kernel every counter resolves, inside `tcp_sock`
    /// (beyond `sock`, which it starts with) and distinct from each other.
    #[test]
    fn flow_offsets_resolve_on_this_kernel() {
        if !Path::new(VMLINUX_BTF).exists() {
            return;
        }
        let l = Layout::from_file(VMLINUX_BTF).unwrap();
        let o = resolve_flow_in(&l).unwrap();
        let sock_size = l.named_struct("sock").unwrap().size() as u32;
        let tcp = [
            o.tcp_bytes_sent,
            o.tcp_bytes_acked,
            o.tcp_bytes_received,
            o.tcp_segs_in,
            o.tcp_segs_out,
            o.tcp_total_retrans,
            o.tcp_srtt_us,
        ];
        for off in tcp {
            assert!(off >= sock_size && off != ABSENT, "{o:?}");
        }
        let mut sorted = tcp.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), tcp.len());
        assert!(o.sk_drops < sock_size);
    }
}
