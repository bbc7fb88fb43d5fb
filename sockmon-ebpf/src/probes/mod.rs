//! One module per hook family. Entry points are thin: they call a `try_`
//! function and count its failure; they never fail the hooked operation.

mod accept;
mod bind;
mod close;
mod connect;
mod exec;
mod flow;
mod listen;
mod process;
mod state;
mod syscall;
mod udp;
