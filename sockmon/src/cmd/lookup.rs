//! `sockmon lookup SRC DST`: the owner(s) of one socket. Exit status 1 when
//! nothing matches (so scripts can test it).

use std::{path::Path, process::ExitCode};

use super::{Backend, EXIT_USAGE, alone, backend, fail, fail_chain, print};
use crate::{
    cli::{LookupArgs, ProtoArg},
    view::{self, Viewer},
};

pub fn run(args: &LookupArgs, socket: &Path, no_daemon: bool) -> ExitCode {
    let query = view::Lookup {
        proto: args.proto.map(ProtoArg::proto),
        src: args.src,
        dst: args.dst,
        netns: args.netns,
    };
    let rows = match backend(socket, no_daemon) {
        Err(code) => return code,
        Ok(Backend::Daemon(mut client)) => match client.lookup(query) {
            Ok(rows) => rows,
            Err(e) => return fail(&e, 1),
        },
        Ok(Backend::Alone) => match alone::table_now() {
            Ok(t) => view::lookup(
                &t.table,
                &query,
                Viewer::ROOT,
                view::Joins::boot_only(&t.boot),
            ),
            Err(e) => return fail_chain(&e, EXIT_USAGE),
        },
    };
    if rows.is_empty() {
        eprintln!("sockmon: no socket {} → {}", args.src, args.dst);
        return ExitCode::from(1);
    }
    match print(&crate::output::sockets::render(&rows, args.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
