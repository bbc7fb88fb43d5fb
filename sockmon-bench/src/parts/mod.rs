//! The parts of the benchmark, one module each: what it runs, what it
//! measured, how that reads in BENCHMARKS.md and which targets it judges,
//! all behind one trait, [`Part`]. Adding a part is a module here and one
//! line in the [`parts!`] list below.
//!
//! Why the list cannot go: it fixes the order of the report's sections, of
//! the targets table and of the JSON, and it gives each part its typed
//! fields in [`Plans`] and [`Outcomes`] (so the raw numbers serialise as
//! before, one key per part, and the guest run can read the rate part's
//! results by type). Everything else about a part is in its module.

use std::fmt::{Debug, Write as _};

use serde::{Serialize, Serializer};

use crate::{fmt::one_line, tools::Tools, tracers::SockmonMode};

/// One part of the benchmark.
pub trait Part {
    /// How long and how often it measures; its fields are flattened into
    /// the plan's JSON, so they carry the part's name.
    type Plan: Clone + Debug + Serialize;
    /// What it measured (its raw numbers in `target/bench/*.json`).
    type Results: Debug + Serialize;
    /// Its sections of the report, in order; numbered across all parts.
    const TITLES: &'static [&'static str];
    /// Whether it measures `sockmon daemon` (without one it is skipped,
    /// saying why).
    const NEEDS_DAEMON: bool;

    /// Its plan for this command line.
    fn plan(o: &Options) -> Self::Plan;
    /// Measures.
    fn run(plan: &Self::Plan, tools: &Tools) -> anyhow::Result<Self::Results>;
    /// Whether it produced the numbers it exists for (all `--quick` checks).
    fn has_numbers(r: &Self::Results) -> bool;
    /// The body of section `i` (of [`Part::TITLES`]).
    fn section(i: usize, r: &Self::Results, s: &mut String);
    /// Its rows of the targets table; with `None` (not measured) each row
    /// says "–" and gives no verdict.
    fn targets(r: Option<&Self::Results>, rows: &mut Vec<TargetRow>);
}

/// What the command line says about every part's plan.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Each part briefly, only to check that it produces numbers.
    pub quick: bool,
    /// `--rounds`, for the parts that repeat.
    pub rounds: Option<u16>,
    /// Inside a Debian guest (`bench --kernel`).
    pub guest: bool,
}

/// How long and how often each part measures.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub quick: bool,
    #[serde(flatten)]
    pub parts: Plans,
}

impl Plan {
    pub fn new(o: &Options) -> Self {
        Self {
            quick: o.quick,
            parts: Plans::new(o),
        }
    }
}

/// A row of the targets table: the target, what this run measured, and
/// whether it is met (`None`: the figure cannot say).
pub type TargetRow = (String, String, Option<bool>);

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
    pub fn done(&self) -> Option<&T> {
        match self {
            Self::Done(v) => Some(v),
            _ => None,
        }
    }

    fn ran(&self) -> bool {
        !matches!(self, Self::NotRun)
    }

    /// A line saying why there is no table, if there is none.
    pub fn why_not(&self) -> Option<String> {
        match self {
            Self::NotRun => Some("Not run.".into()),
            Self::Failed(e) => Some(format!("**Failed:** `{}`", one_line(e))),
            Self::Skipped(why) => Some(format!("**Skipped:** {why}.")),
            Self::Done(_) => None,
        }
    }
}

/// `### TITLE`, then the body, or the line saying why there is none.
pub fn section<T>(s: &mut String, title: &str, o: &Outcome<T>, body: impl FnOnce(&mut String, &T)) {
    let _ = writeln!(s, "### {title}\n");
    match o.done() {
        Some(v) => body(s, v),
        None => {
            let _ = writeln!(s, "{}\n", o.why_not().unwrap_or_default());
        }
    }
}

/// A part's place in a run: its name and how it ended.
pub struct Slot<P: Part> {
    /// The part's `--part` value and JSON key (its module's name).
    pub name: &'static str,
    pub outcome: Outcome<P::Results>,
}

impl<P: Part> Debug for Slot<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("name", &self.name)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// Only the outcome: the name is the key it is written under.
impl<P: Part> Serialize for Slot<P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.outcome.serialize(s)
    }
}

impl<P: Part> Slot<P> {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            outcome: Outcome::NotRun,
        }
    }

    /// Runs the part (or skips it, saying why) and keeps how it ended.
    pub fn run(&mut self, plan: &P::Plan, tools: &Tools) {
        self.outcome = if P::NEEDS_DAEMON && tools.sockmon.mode != SockmonMode::Daemon {
            Outcome::Skipped(format!(
                "needs `sockmon daemon`, which {} does not have yet",
                tools.sockmon.bin.display()
            ))
        } else {
            Outcome::from(P::run(plan, tools))
        };
    }
}

/// A part's slot as the report sees it, whatever its types.
pub trait Entry {
    fn name(&self) -> &'static str;
    /// Whether it ran (it may have failed or been skipped).
    fn ran(&self) -> bool;
    /// Whether it ran and did not produce its numbers.
    fn lacks_numbers(&self) -> bool;
    /// Its sections' titles.
    fn titles(&self) -> &'static [&'static str];
    /// Its section `i`, titled `title`.
    fn section(&self, title: &str, i: usize, s: &mut String);
    /// Its rows of the targets table.
    fn targets(&self, rows: &mut Vec<TargetRow>);
}

impl<P: Part> Entry for Slot<P> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn ran(&self) -> bool {
        self.outcome.ran()
    }

    fn lacks_numbers(&self) -> bool {
        self.outcome.ran() && !self.outcome.done().is_some_and(P::has_numbers)
    }

    fn titles(&self) -> &'static [&'static str] {
        P::TITLES
    }

    fn section(&self, title: &str, i: usize, s: &mut String) {
        section(s, title, &self.outcome, |s, v| P::section(i, v, s));
    }

    fn targets(&self, rows: &mut Vec<TargetRow>) {
        P::targets(self.outcome.done(), rows);
    }
}

/// The one list of parts: `module::Type`, in the report's order.
macro_rules! parts {
    ($($m:ident :: $t:ident),+ $(,)?) => {
        $(pub mod $m;)+

        /// The `--part` values, in the report's order.
        pub const NAMES: &[&str] = &[$(stringify!($m)),+];

        /// Every part's plan.
        #[derive(Clone, Debug, Serialize)]
        pub struct Plans {
            $(#[serde(flatten)] pub $m: <$m::$t as Part>::Plan,)+
        }

        impl Plans {
            fn new(o: &Options) -> Self {
                Self { $($m: <$m::$t as Part>::plan(o),)+ }
            }
        }

        /// How every part ended, each under its name.
        #[derive(Debug, Serialize)]
        pub struct Outcomes {
            $(pub $m: Slot<$m::$t>,)+
        }

        impl Default for Outcomes {
            fn default() -> Self {
                Self { $($m: Slot::new(stringify!($m)),)+ }
            }
        }

        impl Outcomes {
            /// Runs the part called `name` (one of [`NAMES`]); `false` if
            /// there is none.
            pub fn run(&mut self, name: &str, plans: &Plans, tools: &Tools) -> bool {
                $(
                    if name == stringify!($m) {
                        eprintln!("xtask bench: part {}", stringify!($t));
                        self.$m.run(&plans.$m, tools);
                        return true;
                    }
                )+
                false
            }

            /// Every part, in the report's order.
            pub fn entries(&self) -> Vec<&dyn Entry> {
                vec![$(&self.$m),+]
            }
        }
    };
}

parts! {
    rate::Rate,
    completeness::Completeness,
    lookup::Lookup,
    memory::Memory,
    startup::Startup,
    soak::Soak,
    top::Top,
}
