//! One module per hook family. Entry points are thin: they call a `try_`
//! function and count its failure; they never fail the hooked operation.
//!
//! Three families report bind, listen, connect and accept, one per attach
//! mode (ARCHITECTURE.md has the table): the kernel-function hooks
//! (`kfunc`, fexit, or `kprobe` where only kprobes load), the syscall tracepoints (`bind`, `listen`, `connect`,
//! `accept`, with `syscall`) and the socket-layer hooks (`post_bind`,
//! `sock_ops`, `getpeername`, `udp_connect`, with `origin`).
//! The rest serve both: `state` (connect outcomes), `close`, `udp`
//! (implicit binds) and `process`.

/// Reads one field of a program context (a volatile load, so the compiler
/// keeps it the width the verifier expects).
macro_rules! ctx_field {
    ($ctx:expr, $f:ident) => {
        // SAFETY: the context pointer is valid for the program's run.
        unsafe { core::ptr::read_volatile(&raw const (*$ctx).$f) }
    };
}

mod accept;
mod bind;
mod close;
mod connect;
mod exec;
mod flow;
mod getpeername;
mod kfunc;
mod kprobe;
mod listen;
mod origin;
mod post_bind;
mod process;
mod sock_ops;
mod state;
mod syscall;
mod udp;
mod udp_connect;
