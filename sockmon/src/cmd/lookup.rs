//! `sockmon lookup SRC DST`: the owner(s) of one socket. Exit status 1 when
//! nothing matches (so scripts can test it).

use std::{path::Path, process::ExitCode};

use serde_json::json;

use super::{Backend, EXIT_USAGE, backend, fail, fail_chain, ls, print};
use crate::{
    cli::{LookupArgs, ProtoArg},
    engine::{
        local,
        view::{self, Viewer},
    },
};

pub fn run(args: &LookupArgs, socket: &Path, no_daemon: bool) -> ExitCode {
    let proto = args.proto.map(ProtoArg::proto);
    let rows = match backend(socket, no_daemon) {
        Err(code) => return code,
        Ok(Backend::Daemon(mut client)) => {
            let mut req =
                json!({"op": "lookup", "src": args.src.to_string(), "dst": args.dst.to_string()});
            if let Some(p) = proto {
                req["proto"] = json!(p.name());
            }
            if let Some(n) = args.netns {
                req["netns"] = json!(n);
            }
            match client.request(&req) {
                Ok(r) => r.sockets.unwrap_or_default(),
                Err(e) => return fail(&e, 1),
            }
        }
        Ok(Backend::Alone) => match local::snapshot_table() {
            Ok(t) => {
                let query = view::Lookup {
                    proto,
                    src: args.src,
                    dst: args.dst,
                    netns: args.netns,
                };
                view::lookup(&t.table, &query, Viewer::ROOT, &t.boot)
            }
            Err(e) => return fail_chain(&e, EXIT_USAGE),
        },
    };
    if rows.is_empty() {
        eprintln!("sockmon: no socket {} → {}", args.src, args.dst);
        return ExitCode::from(1);
    }
    match print(&ls::render(&rows, args.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
