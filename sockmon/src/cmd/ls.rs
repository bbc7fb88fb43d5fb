//! `sockmon ls`: the whole live table (from the daemon), or a snapshot of
//! this moment when no daemon runs. Human table or one JSON object per line.

use std::{path::Path, process::ExitCode};

use super::{Backend, EXIT_USAGE, alone, backend, fail, fail_chain, print};
use crate::{
    cli::LsArgs,
    output::sockets,
    view::{self, SocketView, Viewer},
};

pub fn run(args: &LsArgs, socket: &Path, no_daemon: bool) -> ExitCode {
    let filter = args.filter.resolve();
    let rows = match backend(socket, no_daemon) {
        Err(code) => return code,
        Ok(Backend::Daemon(mut client)) => match client.list(filter.clone()) {
            Ok(rows) => rows,
            Err(e) => return fail(&e, 1),
        },
        Ok(Backend::Alone) => match alone::table_now() {
            Ok(t) => view::list(
                &t.table,
                &filter,
                Viewer::ROOT,
                view::Joins::boot_only(&t.boot),
            ),
            Err(e) => return fail_chain(&e, EXIT_USAGE),
        },
    };
    let mut rows = narrow(rows, args);
    if let Some(key) = args.sort {
        sockets::sort(&mut rows, key);
    }
    let _ = print(&sockets::render(&rows, args.json));
    ExitCode::SUCCESS
}

/// `--port-class` and `--listening`, applied to the rows (whichever side answered).
fn narrow(mut rows: Vec<SocketView>, args: &LsArgs) -> Vec<SocketView> {
    if !args.port_class.is_empty() {
        let classes: Vec<&str> = args.port_class.iter().map(|c| c.class().name()).collect();
        rows.retain(|r| {
            let class = crate::policy::ports::PortClass::of(r.src_port).name();
            classes.contains(&class)
        });
    }
    if args.listening {
        rows.retain(|r| {
            r.state == "listen" || (r.proto == "udp" && r.state == "bound" && r.src_port != 0)
        });
    }
    rows
}
