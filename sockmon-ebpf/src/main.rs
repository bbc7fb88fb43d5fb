//! sockmon's kernel programs.
//!
//! Each file under `probes/` holds the programs of one hook family; `sock.rs`
//! and `task.rs` are the only code that knows kernel struct layout (through offsets user
//! space resolved from BTF), `emit.rs` builds and submits records, `maps.rs`
//! declares every map and global. See ARCHITECTURE.md for the table of hooks.
#![no_std]
#![no_main]
// The BPF target has atomic loads and stores but no `fetch_add` in core;
// the intrinsic lowers to the instruction every kernel has (`lock xadd`,
// BPF_ATOMIC | BPF_ADD, its result unused): `probes/syscall.rs`.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "core_intrinsics, for atomic_xadd (above)")]

mod emit;
mod maps;
mod probes;
mod sock;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: eBPF programs cannot panic; the verifier rejects any path that reaches here.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
