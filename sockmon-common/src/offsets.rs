//! Kernel struct field offsets, resolved by user space from
//! `/sys/kernel/btf/vmlinux` and tracefs format files at load time.
//!
//! The Rust eBPF toolchain emits no CO-RE relocations, so the programs cannot
//! learn the layout of `task_struct`, `sock` and friends themselves. User space
//! fills one of these and hands it over as the read-only global
//! [`crate::OFFSETS_GLOBAL`]; nothing in the kernel programs hard-codes an
//! offset, so one binary runs on any BTF-enabled kernel.

/// Byte offsets of the fields the programs read. All `u32`, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    // task_struct -> files_struct -> fdtable -> file
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_private_data: u32,
    pub file_inode: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    // struct socket
    pub socket_sk: u32,
    pub socket_file: u32,
    // struct sock / sock_common
    pub sk_family: u32,
    pub sk_state: u32,
    pub sk_num: u32,
    pub sk_dport: u32,
    pub sk_rcv_saddr: u32,
    pub sk_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    pub sk_net: u32,
    pub sk_protocol: u32,
    pub sk_socket: u32,
    // struct inet_sock
    pub inet_sport: u32,
    // struct net
    pub net_inum: u32,
    // task_struct / signal_struct: process identity and lifecycle
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub task_start_boottime: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_signal: u32,
    pub signal_live: u32,
    // struct sock: the error a failed connect leaves (`sk_err`)
    pub sk_err: u32,
    // identity read from the task itself (hooks where the current-task
    // helpers for uid, comm or cgroup are refused): task -> cred -> uid,
    // task -> cgroups -> dfl_cgrp -> kn -> id
    pub task_cred: u32,
    pub cred_uid: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    // struct pt_regs: the syscall number a task is in (`orig_ax` on x86-64)
    pub pt_regs_syscall_nr: u32,
    // tracefs: offset of the first argument of a `syscalls:sys_enter_*` record
    // and of `ret` in a `syscalls:sys_exit_*` record.
    pub tp_sys_enter_args: u32,
    pub tp_sys_exit_ret: u32,
}

const _: () = assert!(size_of::<KernelOffsets>() == 40 * 4);

impl KernelOffsets {
    /// All zeroes: the placeholder compiled into the kernel object.
    pub const fn zeroed() -> Self {
        // SAFETY: every field is a u32, for which all-zero bits are valid.
        unsafe { core::mem::zeroed() }
    }
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, only `u32` fields, every bit pattern valid.
unsafe impl aya::Pod for KernelOffsets {}
