//! Process context at exec: the filename `execve` was given, argv, the
//! parent, the start time and the executable's device and inode, captured in
//! the kernel (`sched_process_exec`, called from `process.rs`) so a process
//! that connects and exits within a millisecond still has them.
//!
//! `bpf_d_path` is not available to tracepoints, so the filename is the one
//! exec was given (the tracepoint's `filename` string: `bprm->filename`);
//! user space prefers the canonical `/proc/PID/exe` while the process lives.
//! argv is read from the new program's memory (`mm->arg_start..arg_end`),
//! which exec has just filled, bounded by `EXEC_ARGS_BYTES`.
//!
//! The record (832 bytes) is too big for the BPF stack: it is reserved in
//! the ring buffer and filled in place.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_probe_read_kernel_str, bpf_probe_read_user},
    programs::TracePointContext,
};
use sockmon_common::{
    EventKind, KernelCounter,
    flow::{
        EXEC_ARGS_BYTES, EXEC_ARGS_TRUNCATED, EXEC_ARGS_UNREAD, EXEC_FILE_UNREAD,
        EXEC_FILENAME_BYTES, EXEC_FILENAME_TRUNCATED, ExecInfo,
    },
};

use crate::{
    emit::header,
    maps::{EVENTS, Fallible, count, flow_off, off, wakeup_bytes},
    sock::read,
    task,
};

pub fn exec_info(ctx: &TracePointContext) {
    let Some(mut entry) = EVENTS.reserve::<ExecInfo>(0) else {
        count(KernelCounter::RingFull);
        return;
    };
    let r = entry.as_mut_ptr();
    let t = task::current();
    let hdr = header(EventKind::ExecInfo, 0);
    let (_, start_ns) = task::process_identity(t).unwrap_or(([0; 16], 0));
    let ppid = read::<u64>(t, flow_off!(task_real_parent))
        .and_then(|p| read::<u32>(p, off!(task_tgid)))
        .unwrap_or(0);
    // SAFETY: `r` points to a reserved ring-buffer slot of `ExecInfo`'s size;
    // every field is written before submit (plain stores and helper fills).
    unsafe {
        (*r).header = hdr;
        (*r).pid = hdr.tgid;
        (*r).ppid = ppid;
        (*r).start_ns = start_ns;
        (*r)._pad = 0;
        let mut flags = 0u32;
        // The filename: a `__data_loc` (offset in the low 16 bits) into the record.
        let loc: u32 = ctx
            .read_at(flow_off!(tp_exec_filename) as usize)
            .unwrap_or(0);
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        let n = bpf_probe_read_kernel_str(
            (*r).filename.as_mut_ptr().cast(),
            EXEC_FILENAME_BYTES as u32,
            src.cast(),
        );
        let name_len = if n > 0 { n as u32 - 1 } else { 0 };
        (*r).filename_len = name_len as u16;
        if (loc >> 16) as usize > EXEC_FILENAME_BYTES {
            flags |= EXEC_FILENAME_TRUNCATED;
        }
        match exe_file(t) {
            Ok((dev, ino)) => {
                (*r).exe_dev = dev;
                (*r).exe_ino = ino;
            }
            Err(c) => {
                count(c);
                (*r).exe_dev = 0;
                (*r).exe_ino = 0;
                flags |= EXEC_FILE_UNREAD;
            }
        }
        (*r).args_len = 0;
        match arg_range(t) {
            Ok((start, end)) if end > start => {
                let mut len = end - start;
                if len > EXEC_ARGS_BYTES as u64 {
                    len = EXEC_ARGS_BYTES as u64;
                    flags |= EXEC_ARGS_TRUNCATED;
                }
                // Bounded for the verifier: 1..=EXEC_ARGS_BYTES.
                let len = ((len - 1) & (EXEC_ARGS_BYTES as u64 - 1)) + 1;
                if bpf_probe_read_user((*r).args.as_mut_ptr().cast(), len as u32, start as *const _)
                    == 0
                {
                    (*r).args_len = len as u16;
                } else {
                    flags |= EXEC_ARGS_UNREAD;
                }
            }
            Ok(_) => flags |= EXEC_ARGS_UNREAD,
            Err(c) => {
                count(c);
                flags |= EXEC_ARGS_UNREAD;
            }
        }
        (*r).flags = flags;
    }
    let backlog = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let wake = if backlog >= wakeup_bytes() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(wake as u64);
}

/// (`s_dev`, `i_ino`) of `task->mm->exe_file`.
#[inline(always)]
fn exe_file(t: u64) -> Fallible<(u32, u64)> {
    let mm: u64 = read(t, flow_off!(task_mm))?;
    let file: u64 = read(mm, flow_off!(mm_exe_file))?;
    let inode: u64 = read(file, off!(file_inode))?;
    let ino: u64 = read(inode, off!(inode_ino))?;
    let sb: u64 = read(inode, flow_off!(inode_sb))?;
    let dev: u32 = read(sb, flow_off!(sb_dev))?;
    Ok((dev, ino))
}

/// `mm->arg_start`, `mm->arg_end` of `task`.
#[inline(always)]
fn arg_range(t: u64) -> Fallible<(u64, u64)> {
    let mm: u64 = read(t, flow_off!(task_mm))?;
    if mm == 0 {
        return Ok((0, 0)); // a kernel thread has no arguments: not a failure
    }
    Ok((
        read(mm, flow_off!(mm_arg_start))?,
        read(mm, flow_off!(mm_arg_end))?,
    ))
}
