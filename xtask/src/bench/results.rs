//! What a run measured, part by part, and the machine it ran on: the
//! model that `report` renders and `targets` judges (both read it; it reads
//! neither), with the number formats they share.

use std::{fs, process::Command, time::Duration};

use anyhow::bail;
use serde::Serialize;

use super::{
    Plan, Tools, complete::CompletenessResults, lookup::LookupResults, memory::MemoryResults,
    rate::RateResults, soak::SoakResults, startup::StartupResults, stats::Summary, top::TopResults,
    tracers::SockmonMode,
};
use crate::run::output;

/// How a part ended.
#[derive(Debug, Serialize)]
#[serde(tag = "status", content = "data", rename_all = "lowercase")]
pub enum Outcome<T> {
    NotRun,
    Done(T),
    Failed(String),
    Skipped(String),
}

impl<T> From<anyhow::Result<T>> for Outcome<T> {
    fn from(r: anyhow::Result<T>) -> Self {
        match r {
            Ok(v) => Self::Done(v),
            Err(e) => {
                eprintln!("xtask bench: part failed: {e:#}");
                Self::Failed(format!("{e:#}"))
            }
        }
    }
}

impl<T> Outcome<T> {
    pub(super) fn done(&self) -> Option<&T> {
        match self {
            Self::Done(v) => Some(v),
            _ => None,
        }
    }

    fn ran(&self) -> bool {
        !matches!(self, Self::NotRun)
    }

    /// Whether the part ran and did not produce its numbers.
    fn lacks_numbers(&self, has: impl Fn(&T) -> bool) -> bool {
        self.ran() && !self.done().is_some_and(has)
    }

    /// A line saying why there is no table, if there is none.
    pub(super) fn why_not(&self) -> Option<String> {
        match self {
            Self::NotRun => Some("Not run.".into()),
            Self::Failed(e) => Some(format!("**Failed:** `{}`", one_line(e))),
            Self::Skipped(why) => Some(format!("**Skipped:** {why}.")),
            Self::Done(_) => None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub date_utc: String,
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub memory_gib: f64,
    pub sockmon_commit: String,
    pub bpftrace: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
}

impl Machine {
    pub fn probe(tools: &Tools) -> anyhow::Result<Self> {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Ok(Self {
            date_utc: output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
                .trim()
                .to_string(),
            cores: tools.cores,
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")?
                .trim()
                .to_string(),
            memory_gib: mem_kib / (1024.0 * 1024.0),
            sockmon_commit: output(
                Command::new("git")
                    .args(["-C"])
                    .arg(crate::run::root())
                    .args(["rev-parse", "--short", "HEAD"]),
            )
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
            bpftrace: output(Command::new("bpftrace").arg("--version"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "not installed".into()),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
        })
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub plan: Plan,
    pub sockmon_mode: SockmonMode,
    pub duration_s: f64,
    pub rate: Outcome<RateResults>,
    pub completeness: Outcome<CompletenessResults>,
    pub lookup: Outcome<LookupResults>,
    pub memory: Outcome<MemoryResults>,
    pub startup: Outcome<StartupResults>,
    pub soak: Outcome<SoakResults>,
    pub top: Outcome<TopResults>,
}

impl Results {
    pub fn new(machine: Machine, plan: Plan, sockmon_mode: SockmonMode) -> Self {
        Self {
            machine,
            plan,
            sockmon_mode,
            duration_s: 0.0,
            rate: Outcome::NotRun,
            completeness: Outcome::NotRun,
            lookup: Outcome::NotRun,
            memory: Outcome::NotRun,
            startup: Outcome::NotRun,
            soak: Outcome::NotRun,
            top: Outcome::NotRun,
        }
    }

    pub fn finish(&mut self, took: Duration) {
        self.duration_s = took.as_secs_f64();
        self.machine.loadavg_end = loadavg();
    }

    pub(super) fn all_parts_ran(&self) -> bool {
        self.rate.ran()
            && self.completeness.ran()
            && self.lookup.ran()
            && self.memory.ran()
            && self.startup.ran()
            && self.soak.ran()
            && self.top.ran()
    }

    /// Fails naming each part that ran but produced no numbers.
    pub fn check_numbers(&self) -> anyhow::Result<()> {
        let bad: Vec<&str> = [
            ("rate", self.rate.lacks_numbers(RateResults::has_numbers)),
            (
                "completeness",
                self.completeness
                    .lacks_numbers(CompletenessResults::has_numbers),
            ),
            (
                "lookup",
                self.lookup.lacks_numbers(LookupResults::has_numbers),
            ),
            (
                "memory",
                self.memory.lacks_numbers(MemoryResults::has_numbers),
            ),
            (
                "startup",
                self.startup.lacks_numbers(StartupResults::has_numbers),
            ),
            ("soak", self.soak.lacks_numbers(SoakResults::has_numbers)),
            ("top", self.top.lacks_numbers(TopResults::has_numbers)),
        ]
        .into_iter()
        .filter(|(_, lacks)| *lacks)
        .map(|(name, _)| name)
        .collect();
        if !bad.is_empty() {
            bail!(
                "these parts produced no numbers: {} (see the report above)",
                bad.join(", ")
            );
        }
        Ok(())
    }
}

pub(super) fn fmt_sum(s: Option<Summary>, digits: usize) -> String {
    s.map_or("–".into(), |s| {
        format!(
            "{} [{}–{}]",
            fmt_f(s.median, digits),
            fmt_f(s.min, digits),
            fmt_f(s.max, digits)
        )
    })
}

/// Fixed decimals; integers grouped by thousands.
pub(super) fn fmt_f(x: f64, digits: usize) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if digits == 0 {
        group(x)
    } else {
        format!("{x:.digits$}")
    }
}

/// A rounded number with thousands separators: 1234567 → "1,234,567".
pub(super) fn group(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `s` on one line of at most 300 characters, safe in a table cell.
pub(super) fn one_line(s: &str) -> String {
    let flat = s.replace(['\n', '`', '|'], " ");
    if flat.chars().count() > 300 {
        format!("{}…", flat.chars().take(300).collect::<String>())
    } else {
        flat
    }
}
