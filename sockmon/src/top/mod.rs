//! `sockmon top`: the live picture of who talks to whom, in the terminal.
//!
//! ```text
//! feed (daemon stream + list, or a local engine) ─▶ bounded channel ─▶ UI thread
//!   UI thread: apply batches to the model ─▶ every frame: screen ─▶ render
//! ```
//!
//! The cost is bounded by the frame rate, not the event rate: events only
//! bump counters in [`model`]; rows are built, sorted ([`order`], at most
//! once a second) and drawn once per frame ([`FRAME`]), and keys redraw at
//! once. The terminal is restored however `top` ends: `q`, Ctrl-C, SIGINT,
//! SIGTERM, SIGHUP (flags checked every frame; handlers installed even when
//! the signal was inherited as ignored) and panics (ratatui's hook).

pub mod decode;
pub mod feed;
pub mod filter;
pub mod input;
pub mod model;
pub mod order;
pub mod ports;
pub mod render;
pub mod screen;
pub mod text;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, TryRecvError},
    },
    time::{Duration, Instant},
};

use ratatui::{
    DefaultTerminal,
    crossterm::event::{self, Event as TermEvent},
};

use feed::Input;
use filter::TopFilter;
use input::{Action, Ui, View};
use model::Model;
use order::Order;
use screen::Screen;

/// Default time between frames.
pub const FRAME: Duration = Duration::from_millis(250);

/// How `top` runs.
pub struct Options {
    /// Shown in the header: `daemon PATH` or `alone`.
    pub source: String,
    pub frame: Duration,
    pub filter: TopFilter,
    pub filter_text: String,
    /// From a daemon: what the stream should carry (set every frame).
    pub wanted: Option<feed::Wanted>,
}

/// What the view on screen needs from a daemon's stream: sums while it
/// shows processes or listeners with a filter on processes only (the
/// sums cannot be split by port, protocol or state), else events, of the
/// selected process where the daemon can filter them.
pub fn want_of(view: &View, model: &Model) -> feed::Want {
    use feed::Want;
    match view {
        View::Processes | View::Listeners if model.per_process() => Want::Counters,
        View::Connections(model::RowKey::Pid(pid))
        | View::Events(Some(model::RowKey::Pid(pid))) => Want::Events(crate::filter::Filter {
            pids: vec![*pid],
            ..crate::filter::Filter::default()
        }),
        _ => Want::Events(crate::filter::Filter::default()),
    }
}

/// Takes over the terminal until the user quits or a signal arrives.
pub fn run(feed: Receiver<Input>, opts: Options) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("cannot install a signal handler: {e}"))?;
    }
    let mut terminal =
        ratatui::try_init().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let r = event_loop(&mut terminal, &feed, opts, &stop);
    let restored = ratatui::try_restore();
    r?;
    restored.map_err(|e| format!("cannot restore the terminal: {e}"))
}

struct Loop {
    model: Model,
    ui: Ui,
    order: Order,
    screen: Screen,
    notice: Option<String>,
    opts: Options,
}

impl Loop {
    /// Recomputes the frame and keeps the selection on its row. While
    /// paused, only keys (a new view, sort, filter) recompute it, not time.
    fn rebuild(&mut self, height: u16, now: Instant, periodic: bool) {
        if periodic && self.ui.paused {
            return;
        }
        self.screen = screen::build(
            &self.model,
            &self.ui,
            &mut self.order,
            &self.opts.source,
            now,
            height as usize,
            |t| t.local_hms_millis(),
        );
        self.screen.header.notice = self.notice.clone();
        if let (View::Processes, screen::Body::Processes(rows), Some(k)) =
            (&self.ui.view, &self.screen.body, &self.ui.selected_key)
            && let Some(i) = rows.iter().position(|r| r.key == *k)
        {
            self.ui.selected = i;
        }
    }

    /// Applies everything waiting; `Err` when the source has stopped.
    fn drain(&mut self, feed: &Receiver<Input>, now: Instant) -> Result<(), String> {
        loop {
            match feed.try_recv() {
                Ok(Input::Updates(us)) => {
                    for u in us {
                        self.model.apply(u, now);
                    }
                }
                Ok(Input::Table { sockets, asked }) => self.model.apply_table(sockets, asked, now),
                Ok(Input::Notice(n)) => self.notice = (!n.is_empty()).then_some(n),
                Ok(Input::Fatal(e)) => return Err(e),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err("the event source stopped".into()),
            }
        }
    }
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    feed: &Receiver<Input>,
    opts: Options,
    stop: &AtomicBool,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("terminal: {e}");
    let now = Instant::now();
    let mut model = Model::new(now);
    model.set_filter(opts.filter.clone(), now);
    let ui = Ui {
        filter_text: opts.filter_text.clone(),
        ..Ui::default()
    };
    let mut order = Order::default();
    let height = terminal.size().map_err(io)?.height;
    let screen = screen::build(&model, &ui, &mut order, &opts.source, now, 0, |t| {
        t.local_hms_millis()
    });
    let mut l = Loop {
        model,
        ui,
        order,
        screen,
        notice: None,
        opts,
    };
    l.rebuild(height, now, false);
    let mut next = now;
    let mut dirty = true;
    while !stop.load(Ordering::Relaxed) {
        if hung_up() {
            // The terminal is gone (its emulator died without a SIGHUP
            // reaching us): nothing to draw on or restore; crossterm would
            // spin reading the dead tty.
            return Ok(());
        }
        let now = Instant::now();
        if let Some(w) = &l.opts.wanted {
            w.set(want_of(&l.ui.view, &l.model));
        }
        l.drain(feed, now)?;
        if now >= next {
            l.model.tick(now);
            l.rebuild(terminal.size().map_err(io)?.height, now, true);
            dirty = true;
            next = (next + l.opts.frame).max(now);
        }
        if dirty {
            terminal
                .draw(|f| render::draw(f, &l.screen, &l.ui))
                .map_err(io)?;
            dirty = false;
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        // Wait on the tty ourselves: crossterm's own poll spins, ignoring
        // its timeout, once the terminal has hung up. Then take every
        // event crossterm has (keys, and resizes from its SIGWINCH pipe).
        if wait_tty(wait) == Tty::HungUp {
            return Ok(());
        }
        loop {
            let ready = match event::poll(Duration::ZERO) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
                Err(e) => return Err(io(e)),
            };
            if !ready {
                break;
            }
            match event::read().map_err(io)? {
                TermEvent::Key(k) => {
                    let body = &l.screen.body;
                    match l.ui.key(k, body.len(), &|i| body.row_key(i)) {
                        Action::Quit => return Ok(()),
                        Action::None => {}
                        Action::Redraw => dirty = true,
                        Action::Refresh => {
                            l.rebuild(terminal.size().map_err(io)?.height, Instant::now(), false);
                            dirty = true;
                        }
                        Action::Filter(f) => {
                            let now = Instant::now();
                            l.model.set_filter(f, now);
                            l.rebuild(terminal.size().map_err(io)?.height, now, false);
                            dirty = true;
                        }
                    }
                }
                TermEvent::Resize(_, h) => {
                    l.rebuild(h, Instant::now(), true);
                    dirty = true;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[derive(PartialEq, Eq)]
enum Tty {
    Ready,
    HungUp,
}

/// Waits at most `wait` for input on the terminal (stdin).
fn wait_tty(wait: Duration) -> Tty {
    let mut p = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a timeout in ms.
    let n = unsafe { libc::poll(&mut p, 1, wait.as_millis() as i32) };
    if n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Tty::HungUp
    } else {
        Tty::Ready
    }
}

/// Whether the terminal on stdin has hung up.
fn hung_up() -> bool {
    let mut p = libc::pollfd {
        fd: 0,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}
