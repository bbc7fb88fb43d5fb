//! The keys of `sockmon top` and the view state they change. Pure: a key in,
//! the new state and what the caller must do out, so every binding is
//! unit-tested without a terminal.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{filter::TopFilter, model::Group, model::RowKey, order::SortKey};

/// Which view is shown.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum View {
    #[default]
    Processes,
    /// The sockets of one row of the Processes view.
    Connections(RowKey),
    Listeners,
    /// The live stream, of one row or of everything.
    Events(Option<RowKey>),
}

/// Everything the keys change.
#[derive(Debug, Default)]
pub struct Ui {
    pub view: View,
    /// Views to go back to with Esc.
    pub back: Vec<View>,
    /// Index of the selected row in the current view.
    pub selected: usize,
    /// The key of the selected Processes row (the selection follows it).
    pub selected_key: Option<RowKey>,
    pub sort: SortKey,
    pub reverse: bool,
    pub group: Group,
    pub paused: bool,
    pub help: bool,
    /// The filter being typed after `/`.
    pub editing: Option<String>,
    /// The filter in force, as typed.
    pub filter_text: String,
    pub filter_error: Option<String>,
}

/// What the caller does after a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing changed.
    None,
    /// Redraw (from the current data).
    Redraw,
    /// Recompute the rows, then redraw (view, sort or grouping changed).
    Refresh,
    /// A new filter: apply it to the model, then refresh.
    Filter(TopFilter),
    Quit,
}

impl Ui {
    /// Handles one key; `rows` is the number of rows of the current view
    /// and `row_key` the key of the Processes row at an index.
    pub fn key(
        &mut self,
        k: KeyEvent,
        rows: usize,
        row_key: &dyn Fn(usize) -> Option<RowKey>,
    ) -> Action {
        if k.kind == KeyEventKind::Release {
            return Action::None;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(text) = &mut self.editing {
            return match k.code {
                KeyCode::Esc => {
                    self.editing = None;
                    Action::Redraw
                }
                KeyCode::Enter => {
                    let text = self.editing.take().unwrap_or_default();
                    match TopFilter::parse(&text) {
                        Ok(f) => {
                            self.filter_text = text;
                            self.filter_error = None;
                            self.selected = 0;
                            Action::Filter(f)
                        }
                        Err(e) => {
                            self.filter_error = Some(e);
                            self.editing = Some(text);
                            Action::Redraw
                        }
                    }
                }
                KeyCode::Backspace => {
                    text.pop();
                    Action::Redraw
                }
                KeyCode::Char(c) if !c.is_control() && text.len() < 256 => {
                    text.push(c);
                    Action::Redraw
                }
                _ => Action::None,
            };
        }
        if self.help {
            self.help = false;
            return match k.code {
                KeyCode::Char('q') => Action::Quit,
                _ => Action::Redraw,
            };
        }
        let action = match k.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Char('?') | KeyCode::F(1) => {
                self.help = true;
                Action::Redraw
            }
            KeyCode::Char('/') => {
                self.editing = Some(self.filter_text.clone());
                self.filter_error = None;
                Action::Redraw
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                Action::Refresh
            }
            KeyCode::Char('s') => {
                self.sort = self.sort.cycle(true);
                Action::Refresh
            }
            KeyCode::Char('S') => {
                self.sort = self.sort.cycle(false);
                Action::Refresh
            }
            KeyCode::Char('r') => {
                self.reverse = !self.reverse;
                Action::Refresh
            }
            KeyCode::Char('u') => {
                self.group = match self.group {
                    Group::Process => Group::Unit,
                    Group::Unit => Group::Process,
                };
                self.selected = 0;
                self.selected_key = None;
                self.back.clear();
                self.view = View::Processes;
                Action::Refresh
            }
            KeyCode::Char('1') => self.go(View::Processes, false),
            KeyCode::Char('2') => self.go(View::Listeners, false),
            KeyCode::Char('3') => self.go(View::Events(None), false),
            KeyCode::Char('e') => {
                let key = match &self.view {
                    View::Processes => row_key(self.selected),
                    View::Connections(k) => Some(k.clone()),
                    _ => None,
                };
                self.go(View::Events(key), true)
            }
            KeyCode::Tab => {
                let next = match self.view {
                    View::Processes | View::Connections(_) => View::Listeners,
                    View::Listeners => View::Events(None),
                    View::Events(_) => View::Processes,
                };
                self.go(next, false)
            }
            KeyCode::Enter => match &self.view {
                View::Processes => match row_key(self.selected) {
                    Some(k) => self.go(View::Connections(k), true),
                    None => Action::None,
                },
                View::Connections(k) => {
                    let k = k.clone();
                    self.go(View::Events(Some(k)), true)
                }
                _ => Action::None,
            },
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => match self.back.pop() {
                Some(v) => {
                    self.view = v;
                    self.selected = 0;
                    Action::Refresh
                }
                None => Action::None,
            },
            KeyCode::Down | KeyCode::Char('j') => {
                self.select(self.selected.saturating_add(1), rows)
            }
            KeyCode::Up | KeyCode::Char('k') => self.select(self.selected.saturating_sub(1), rows),
            KeyCode::PageDown => self.select(self.selected.saturating_add(10), rows),
            KeyCode::PageUp => self.select(self.selected.saturating_sub(10), rows),
            KeyCode::Home | KeyCode::Char('g') => self.select(0, rows),
            KeyCode::End | KeyCode::Char('G') => self.select(usize::MAX, rows),
            _ => Action::None,
        };
        if self.view == View::Processes && action != Action::Quit {
            self.selected_key = row_key(self.selected).or(self.selected_key.take());
        }
        action
    }

    fn go(&mut self, v: View, remember: bool) -> Action {
        if v == self.view {
            return Action::None;
        }
        let old = std::mem::replace(&mut self.view, v);
        if remember {
            self.back.push(old);
        } else {
            self.back.clear();
        }
        self.selected = 0;
        Action::Refresh
    }

    fn select(&mut self, i: usize, rows: usize) -> Action {
        let i = i.min(rows.saturating_sub(1));
        if i == self.selected {
            return Action::None;
        }
        self.selected = i;
        Action::Redraw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn rows(i: usize) -> Option<RowKey> {
        (i < 3).then_some(RowKey::Pid(100 + i as u32))
    }

    fn press(ui: &mut Ui, code: KeyCode) -> Action {
        ui.key(key(code), 3, &rows)
    }

    #[test]
    fn enter_drills_down_and_esc_comes_back() {
        let mut ui = Ui::default();
        assert_eq!(press(&mut ui, KeyCode::Down), Action::Redraw);
        assert_eq!(ui.selected_key, Some(RowKey::Pid(101)));
        assert_eq!(press(&mut ui, KeyCode::Enter), Action::Refresh);
        assert_eq!(ui.view, View::Connections(RowKey::Pid(101)));
        assert_eq!(press(&mut ui, KeyCode::Enter), Action::Refresh);
        assert_eq!(ui.view, View::Events(Some(RowKey::Pid(101))));
        assert_eq!(press(&mut ui, KeyCode::Esc), Action::Refresh);
        assert_eq!(ui.view, View::Connections(RowKey::Pid(101)));
        assert_eq!(press(&mut ui, KeyCode::Esc), Action::Refresh);
        assert_eq!(ui.view, View::Processes);
        assert_eq!(press(&mut ui, KeyCode::Esc), Action::None);
        assert_eq!(press(&mut ui, KeyCode::Char('2')), Action::Refresh);
        assert_eq!(ui.view, View::Listeners);
        assert_eq!(press(&mut ui, KeyCode::Tab), Action::Refresh);
        assert_eq!(ui.view, View::Events(None));
        assert_eq!(press(&mut ui, KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn selection_stays_within_the_rows() {
        let mut ui = Ui::default();
        press(&mut ui, KeyCode::End);
        assert_eq!(ui.selected, 2);
        assert_eq!(press(&mut ui, KeyCode::Down), Action::None);
        press(&mut ui, KeyCode::PageUp);
        assert_eq!(ui.selected, 0);
        assert_eq!(press(&mut ui, KeyCode::Up), Action::None);
    }

    #[test]
    fn the_filter_is_typed_checked_and_applied() {
        let mut ui = Ui::default();
        press(&mut ui, KeyCode::Char('/'));
        for c in "port:x".chars() {
            press(&mut ui, KeyCode::Char(c));
        }
        // A bad filter stays in the editor with the reason.
        assert_eq!(press(&mut ui, KeyCode::Enter), Action::Redraw);
        assert!(ui.filter_error.as_deref().unwrap().contains("not a port"));
        assert_eq!(ui.editing.as_deref(), Some("port:x"));
        press(&mut ui, KeyCode::Backspace);
        press(&mut ui, KeyCode::Char('8'));
        let Action::Filter(f) = press(&mut ui, KeyCode::Enter) else {
            panic!("no filter");
        };
        assert_eq!(f.ports, vec![8]);
        assert_eq!(ui.filter_text, "port:8");
        assert_eq!(ui.editing, None);
        // `q` while typing is a letter, not quit.
        press(&mut ui, KeyCode::Char('/'));
        assert_eq!(press(&mut ui, KeyCode::Char('q')), Action::Redraw);
        assert_eq!(press(&mut ui, KeyCode::Esc), Action::Redraw);
        assert_eq!(ui.filter_text, "port:8");
    }

    #[test]
    fn sort_pause_group_help_and_ctrl_c() {
        let mut ui = Ui::default();
        press(&mut ui, KeyCode::Char('s'));
        assert_eq!(ui.sort, SortKey::Listeners);
        press(&mut ui, KeyCode::Char('S'));
        press(&mut ui, KeyCode::Char('S'));
        assert_eq!(ui.sort, SortKey::Name);
        press(&mut ui, KeyCode::Char('r'));
        assert!(ui.reverse);
        press(&mut ui, KeyCode::Char('p'));
        assert!(ui.paused);
        press(&mut ui, KeyCode::Char('u'));
        assert_eq!(ui.group, Group::Unit);
        press(&mut ui, KeyCode::Char('?'));
        assert!(ui.help);
        // Any key closes the help.
        assert_eq!(press(&mut ui, KeyCode::Char('x')), Action::Redraw);
        assert!(!ui.help);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(ui.key(ctrl_c, 3, &rows), Action::Quit);
    }
}
