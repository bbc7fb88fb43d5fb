//! Laying a [`Screen`] out on the terminal: header with the totals, the
//! view's tabs, its table, and a footer with the keys or the filter being
//! typed. The layout follows the terminal's size: columns that do not fit
//! are dropped, least useful first, and the header wraps.
//!
//! Every name shown (process names, units) went through
//! [`crate::output::escape::for_terminal`]: a process can name itself with
//! escape sequences, and none may reach the terminal.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState},
};

pub use super::text::{shown, unit_label};
use super::{
    input::{Ui, View},
    model::Group,
    ports,
    screen::{Body, Header, Screen},
};

/// One column: title, width, and priority (0 is never dropped; higher
/// numbers are dropped first when the terminal is narrow).
struct Col {
    title: &'static str,
    width: u16,
    prio: u8,
    right: bool,
    /// Takes the space left over (at least `width`).
    flex: bool,
}

const fn col(title: &'static str, width: u16, prio: u8) -> Col {
    Col {
        title,
        width,
        prio,
        right: true,
        flex: false,
    }
}

const fn text(title: &'static str, width: u16, prio: u8) -> Col {
    Col {
        title,
        width,
        prio,
        right: false,
        flex: false,
    }
}

const fn flex(title: &'static str, width: u16, prio: u8) -> Col {
    Col {
        title,
        width,
        prio,
        right: false,
        flex: true,
    }
}

/// Which columns fit in `width` (indices, in order).
fn fit(cols: &[Col], width: u16) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..cols.len()).collect();
    loop {
        let need: u16 = keep
            .iter()
            .map(|i| cols[*i].width + 1)
            .sum::<u16>()
            .saturating_sub(1);
        if need <= width {
            return keep;
        }
        // Drop the last column of the lowest priority.
        let Some(pos) = keep
            .iter()
            .enumerate()
            .filter(|(_, i)| cols[**i].prio > 0)
            .max_by_key(|(n, i)| (cols[**i].prio, *n))
            .map(|(n, _)| n)
        else {
            return keep;
        };
        keep.remove(pos);
    }
}

/// Draws the whole screen.
pub fn draw(f: &mut Frame<'_>, s: &Screen, ui: &Ui) {
    let area = f.area();
    let head = header_lines(&s.header, ui, area.width);
    let [top, tabs, main, foot] = Layout::vertical([
        Constraint::Length(head.len() as u16),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(head), top);
    f.render_widget(Paragraph::new(tab_line(s, ui)), tabs);
    table(f, s, ui, main);
    f.render_widget(Paragraph::new(footer(ui)), foot);
    if ui.help {
        help(f, area);
    }
}

fn rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = v;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// The header as lines no wider than `width` (chunks are kept whole).
fn header_lines(h: &Header, ui: &Ui, width: u16) -> Vec<Line<'static>> {
    let what = match ui.group {
        Group::Process => "processes",
        Group::Unit => "units",
    };
    let mut chunks = vec![
        format!("sockmon top · {}", h.source),
        format!("{} {what}", h.rows),
        format!("{} conns", h.conns),
        format!("{} listen", h.listeners),
        format!("{} conn/s", rate(h.rates.connects)),
        format!("{} fail/s", rate(h.rates.failed)),
        if h.flows_on {
            format!(
                "{}/s sent {}/s recv",
                bytes(h.rates.sent),
                bytes(h.rates.received)
            )
        } else {
            "bytes: off (no flow records)".to_string()
        },
        format!(
            "{} total in {}",
            h.total,
            crate::output::units::age(h.counting_for, false)
        ),
        format!("{} events/s", rate(h.events_per_s)),
        format!("lost {}", h.lost),
        format!(
            "sort {}{}",
            ui.sort.name(),
            if ui.reverse { "↑" } else { "↓" }
        ),
    ];
    if !ui.filter_text.is_empty() {
        chunks.push(format!("filter: {}", shown(ui.filter_text.as_bytes())));
    }
    if ui.paused {
        chunks.push("PAUSED".to_string());
    }
    if let Some(n) = &h.notice {
        chunks.push(n.clone());
    }
    let width = width.max(1) as usize;
    let mut lines: Vec<String> = vec![String::new()];
    for c in chunks {
        let Some(cur) = lines.last_mut() else { break };
        let len = cur.chars().count();
        if len > 0 && len + 3 + c.chars().count() > width {
            lines.push(c);
        } else {
            if len > 0 {
                cur.push_str(" · ");
            }
            cur.push_str(&c);
        }
    }
    lines.truncate(4);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let style = if i == 0 { bold } else { Style::default() };
            if ui.paused && l.contains("PAUSED") {
                Line::from(Span::styled(l, style.fg(Color::Yellow)))
            } else {
                Line::from(Span::styled(l, style))
            }
        })
        .collect()
}

fn tab_line(s: &Screen, ui: &Ui) -> Line<'static> {
    let on = Style::default().add_modifier(Modifier::REVERSED);
    let off = Style::default();
    let tab = |label: String, active: bool| Span::styled(label, if active { on } else { off });
    let mut spans = vec![
        tab(
            " 1 Processes ".into(),
            matches!(ui.view, View::Processes | View::Connections(_)),
        ),
        Span::raw(" "),
        tab(" 2 Listeners ".into(), ui.view == View::Listeners),
        Span::raw(" "),
        tab(" 3 Events ".into(), matches!(ui.view, View::Events(_))),
    ];
    match &s.body {
        Body::Connections { title, rows } => {
            let closed = rows.iter().filter(|r| r.closed).count();
            spans.push(Span::raw(format!(
                " › connections of {title}: {} open, {closed} closed",
                rows.len() - closed
            )))
        }
        Body::Events { title, .. } => spans.push(Span::raw(format!(" › {title}"))),
        _ => {}
    }
    Line::from(spans)
}

fn footer(ui: &Ui) -> Line<'static> {
    if let Some(t) = &ui.editing {
        let mut spans = vec![
            Span::styled("/", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(shown(t.as_bytes())),
            Span::styled(" ", Style::default().add_modifier(Modifier::REVERSED)),
        ];
        match &ui.filter_error {
            Some(e) => spans.push(Span::styled(
                format!("  {}", shown(e.as_bytes())),
                Style::default().fg(Color::Red),
            )),
            None => spans.push(Span::styled(
                "  port: pid: comm: proto: unit: state:  Enter apply, Esc cancel",
                Style::default().fg(Color::DarkGray),
            )),
        }
        return Line::from(spans);
    }
    Line::from(Span::styled(
        "q quit  ? help  / filter  s sort  r reverse  u unit/process  p pause  Enter details  Esc back  Tab view",
        Style::default().fg(Color::DarkGray),
    ))
}

fn help(f: &mut Frame<'_>, area: Rect) {
    let lines = [
        "q, Ctrl-C      quit",
        "?              this help (any key closes it)",
        "1  2  3  Tab   Processes, Listeners, Events",
        "Enter          connections of the selected row;",
        "               on a connection list: its events",
        "e              events of the selected row",
        "Esc            back",
        "Up Down PgUp PgDn Home End (j k g G)   select",
        "/              filter: key:value words, keys",
        "               port pid comm proto unit state;",
        "               same key: either, keys: all",
        "s  S           next / previous sort column",
        "r              reverse the sort",
        "u              rows per process / per unit",
        "p  Space       pause the display",
    ];
    let w = (lines.iter().map(|l| l.len()).max().unwrap_or(0) as u16 + 4).min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines.iter().map(|l| Line::raw(*l)).collect::<Vec<_>>())
            .block(Block::default().borders(Borders::ALL).title(" keys ")),
        r,
    );
}

/// Lays out `cells` rows under `cols`, keeping the columns that fit.
fn grid(
    f: &mut Frame<'_>,
    area: Rect,
    cols: &[Col],
    rows: Vec<(Vec<String>, Style)>,
    selected: Option<usize>,
) {
    let keep = fit(cols, area.width);
    let pad = |c: &Col, s: String| {
        if c.right {
            format!("{s:>w$}", w = c.width as usize)
        } else {
            s
        }
    };
    let widths: Vec<Constraint> = keep
        .iter()
        .map(|i| {
            if cols[*i].flex {
                Constraint::Min(cols[*i].width)
            } else {
                Constraint::Length(cols[*i].width)
            }
        })
        .collect();
    let head = Row::new(
        keep.iter()
            .map(|i| Cell::from(pad(&cols[*i], cols[*i].title.to_string())))
            .collect::<Vec<_>>(),
    )
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let body: Vec<Row<'_>> = rows
        .into_iter()
        .map(|(cells, style)| {
            let mut cells: Vec<Option<String>> = cells.into_iter().map(Some).collect();
            Row::new(
                keep.iter()
                    .map(|i| Cell::from(pad(&cols[*i], cells[*i].take().unwrap_or_default())))
                    .collect::<Vec<_>>(),
            )
            .style(style)
        })
        .collect();
    let mut state = TableState::default().with_selected(selected);
    f.render_stateful_widget(
        Table::new(body, widths)
            .header(head)
            .column_spacing(1)
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        area,
        &mut state,
    );
}

fn table(f: &mut Frame<'_>, s: &Screen, ui: &Ui, area: Rect) {
    let sel = (!s.body.is_empty()).then(|| ui.selected.min(s.body.len() - 1));
    let plain = Style::default();
    let flows = s.header.flows_on;
    let b = |v: f64| if flows { bytes(v) } else { "off".into() };
    match &s.body {
        Body::Processes(rows) => {
            let (first, name) = match ui.group {
                Group::Process => (col("PID", 7, 0), flex("NAME", 10, 0)),
                Group::Unit => (col("PROCS", 5, 1), flex("UNIT/CONTAINER", 14, 0)),
            };
            let cols = [
                first,
                name,
                col("CONNS", 6, 0),
                col("LISTEN", 6, 3),
                col("CONN/S", 7, 1),
                col("FAIL/S", 7, 2),
                col("SENT/S", 7, 4),
                col("RECV/S", 7, 4),
                col("TOTAL", 7, 3),
            ];
            let cells = rows
                .iter()
                .map(|r| {
                    let first = match ui.group {
                        Group::Process => r.pids.first().map_or(String::new(), u32::to_string),
                        Group::Unit => r.pids.len().to_string(),
                    };
                    let v = vec![
                        first,
                        r.name.clone(),
                        r.conns.to_string(),
                        r.listeners.to_string(),
                        rate(r.rates.connects),
                        rate(r.rates.failed),
                        b(r.rates.sent),
                        b(r.rates.received),
                        r.total.to_string(),
                    ];
                    (v, plain)
                })
                .collect();
            grid(f, area, &cols, cells, sel);
        }
        Body::Connections { rows, .. } => {
            let cols = [
                text("PROTO", 5, 3),
                flex("LOCAL", 21, 0),
                text("REMOTE", 21, 0),
                text("STATE", 10, 1),
                col("AGE", 7, 2),
                col("SENT", 7, 4),
                col("RECV", 7, 4),
                text("SOURCE", 9, 2),
                col("PID", 7, 5),
            ];
            let grey = Style::default().fg(Color::DarkGray);
            let cells = rows
                .iter()
                .map(|r| {
                    let v = vec![
                        r.proto.name().to_string(),
                        r.local.to_string(),
                        r.remote.to_string(),
                        r.state.to_string(),
                        crate::output::units::age(r.age, r.before_start),
                        if flows || r.bytes_known {
                            bytes(r.sent as f64)
                        } else {
                            "off".into()
                        },
                        if flows || r.bytes_known {
                            bytes(r.received as f64)
                        } else {
                            "off".into()
                        },
                        r.source.to_string(),
                        r.pid.to_string(),
                    ];
                    (v, if r.closed { grey } else { plain })
                })
                .collect();
            grid(f, area, &cols, cells, sel);
        }
        Body::Listeners(rows) => {
            let cols = [
                text("PROTO", 5, 2),
                flex("ADDRESS", 15, 0),
                col("PORT", 5, 0),
                text("CLASS", 10, 2),
                text("SCOPE", 10, 3),
                col("PID", 7, 1),
                text("NAME", 15, 1),
                text("UNIT", 20, 5),
                text("SOURCE", 9, 4),
            ];
            let cells = rows
                .iter()
                .map(|r| {
                    let name = if r.owners > 1 {
                        format!("{} +{}", r.name, r.owners - 1)
                    } else {
                        r.name.clone()
                    };
                    let v = vec![
                        r.proto.name().to_string(),
                        r.local.ip().to_string(),
                        r.local.port().to_string(),
                        ports::port_class(r.local.port()).to_string(),
                        ports::addr_scope(r.local.ip()).to_string(),
                        r.pid.to_string(),
                        name,
                        r.unit.clone().unwrap_or_else(|| "-".into()),
                        r.source.to_string(),
                    ];
                    (v, plain)
                })
                .collect();
            grid(f, area, &cols, cells, sel);
        }
        Body::Events { rows, .. } => {
            let cols = [
                text("TIME", 12, 2),
                text("EVENT", 7, 0),
                text("PROTO", 5, 3),
                col("PID", 7, 0),
                text("NAME", 15, 1),
                flex("LOCAL", 21, 2),
                text("REMOTE", 21, 1),
                text("RESULT", 12, 1),
            ];
            let cells = rows
                .iter()
                .map(|r| {
                    let v = vec![
                        r.time.clone(),
                        r.kind.to_string(),
                        r.proto.name().to_string(),
                        r.pid.to_string(),
                        r.name.clone(),
                        r.local.to_string(),
                        r.remote.to_string(),
                        r.result.clone(),
                    ];
                    let style = if r.result == "ok" || r.result == "in progress" {
                        plain
                    } else {
                        Style::default().fg(Color::Red)
                    };
                    (v, style)
                })
                .collect();
            grid(f, area, &cols, cells, sel);
        }
    }
}

#[cfg(test)]
mod tests;
