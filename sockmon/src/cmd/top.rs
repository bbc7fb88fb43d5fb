//! `sockmon top`: the full-screen live view (see `crate::top`). With a
//! daemon running it reads the daemon's stream and table (the probes are
//! never loaded twice); otherwise it loads the probes itself, with a
//! start-up snapshot, like `watch` does.

use std::{io::IsTerminal as _, path::Path, process::ExitCode};

use super::{Backend, EXIT_USAGE, backend, fail, fail_chain};
use crate::{
    cli::TopArgs,
    engine::{Engine, EngineOptions},
    filter::Filter,
    top::{self, feed, filter::TopFilter},
};

pub fn run(args: &TopArgs, socket: &Path, no_daemon: bool) -> ExitCode {
    let text = args.filter.join(" ");
    let filter = match TopFilter::parse(&text) {
        Ok(f) => f,
        Err(e) => return fail(&format!("--filter: {e}"), EXIT_USAGE),
    };
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return fail(
            &"`top` needs a terminal; for pipes and files use `sockmon watch` or `sockmon ls`",
            EXIT_USAGE,
        );
    }
    let opts = |source: String, wanted| top::Options {
        source,
        frame: args.refresh,
        filter: filter.clone(),
        filter_text: text.clone(),
        wanted,
    };
    let result = match backend(socket, no_daemon) {
        Err(code) => return code,
        Ok(Backend::Daemon(_)) => {
            // What the first frame wants, so the stream does not switch at once.
            let now = std::time::Instant::now();
            let mut model = top::model::Model::new(now);
            model.set_filter(filter.clone(), now);
            let first = top::want_of(&top::input::View::default(), &model);
            let (rx, wanted) = feed::daemon(socket, args.refresh, first);
            top::run(rx, opts(feed::describe(socket), Some(wanted)))
        }
        Ok(Backend::Alone) => {
            let eopts = EngineOptions {
                snapshot: true,
                ..EngineOptions::default()
            };
            let mut prepared = match Engine::prepare(eopts) {
                Ok(p) => p,
                Err(e) => {
                    return fail_chain(&e, if e.is_privileges() { EXIT_USAGE } else { 1 });
                }
            };
            let sub = prepared.subscribe(Filter::default());
            let (rx, local) = match feed::local(prepared, sub) {
                Ok(v) => v,
                Err(e) => return fail(&format!("cannot start the engine: {e}"), 1),
            };
            let r = top::run(rx, opts("alone (probes loaded by top)".into(), None));
            local.stop();
            r
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, 1),
    }
}
