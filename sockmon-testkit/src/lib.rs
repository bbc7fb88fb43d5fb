//! Real sockets for tests and benchmarks, and `ss`'s view of them.
//!
//! Why a crate of its own: the benchmark (`sockmon-bench`) and sockmon's
//! integration tests both need sockets whose owner is a process other than
//! themselves, and both hold sockmon's answers against `ss`. One holder
//! protocol and one parser of `ss`'s output, here, instead of one per user.
//!
//! - [`child`]: a child process that is stopped by its PID when dropped, so
//!   an error or a panic halfway leaves nothing running;
//! - [`holder`]: processes that hold sockets until told to let go (a small
//!   mixed set from python for attribution tests; N loopback connections
//!   spread over as many processes as the descriptor limit needs);
//! - [`ss`]: `ss` run and parsed, and its endpoints written as sockmon
//!   writes them.

pub mod child;
pub mod holder;
pub mod ss;
