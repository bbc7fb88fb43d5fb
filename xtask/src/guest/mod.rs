//! The real-kernel tests on Debian's kernels, booted under qemu.
//!
//! Why: sockmon promises one binary for every kernel with BTF, and the
//! kernels people run differ from this machine's (kprobes and trampolines
//! allowed, sock_diag as modules, changed function signatures). So
//! `cargo xtask test` boots Debian's 6.1 and 6.12 kernels ([`debian`]) and
//! runs the same test binaries inside each, built once on the host.
//!
//! How: a tiny initramfs ([`initramfs`]) mounts this machine's root
//! read-only over virtio-9p and runs `run.sh` chrooted into it; the guest
//! sees the host's files (test binaries, `ss`, `python3`, `jq`) but has its
//! own kernel, with the package's modules loadable on demand. `run.sh`
//! first refuses sock_diag's modules (the snapshot must fall back to
//! `/proc/net` by itself, with exact rows, and the daemon must start and
//! say so),
//! then runs the real-kernel tests once per attach mode the guest allows,
//! the snapshot tests and the daemon-vs-`ss` agreement. Each step is framed
//! by marker lines on the serial console; [`qemu`] boots with a deadline,
//! and [`Report`] reads the steps back: a step fails if it exits non-zero,
//! never ends, or passes no test.

mod debian;
mod initramfs;
mod qemu;

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::run::{cargo, describe, root};

/// Prefix of the lines `run.sh` and `init.sh` write for xtask.
pub const MARK: &str = "@@sockmon-guest";

const RUN_SH: &str = include_str!("run.sh");

/// A Debian kernel series the tests boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// Debian 12's own kernel.
    Debian61,
    /// Debian 12's backported 6.12 (Debian 13's series).
    Debian612,
}

impl Guest {
    pub const ALL: [Guest; 2] = [Guest::Debian61, Guest::Debian612];

    pub fn name(self) -> &'static str {
        match self {
            Guest::Debian61 => "debian-6.1",
            Guest::Debian612 => "debian-6.12",
        }
    }

    fn series(self) -> &'static str {
        match self {
            Guest::Debian61 => "6.1",
            Guest::Debian612 => "6.12",
        }
    }
}

/// How guests are run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// A guest still running after this is killed (and fails).
    pub timeout: Duration,
    /// vCPUs per guest.
    pub cpus: u32,
    /// Guests booted at the same time.
    pub at_once: usize,
}

/// Test binaries (built on the host) the guests run.
struct Binaries {
    kernel: PathBuf,
    /// The whole-system binary: its `snapshot::` and `daemon::` tests run.
    system: PathBuf,
    sockmon: PathBuf,
}

/// Runs the guest tests of `guests`; fails if any step of any guest failed.
pub fn run(guests: &[Guest], opts: Options) -> anyhow::Result<()> {
    if guests.is_empty() {
        return Ok(());
    }
    let bins = build_binaries()?;
    let work = root().join("target/guest");
    fs::create_dir_all(&work)?;
    let script = work.join("run.sh");
    fs::write(&script, RUN_SH)?;
    let mut prepared = Vec::new();
    for &g in guests {
        let k = debian::kernel(g.series()).with_context(|| format!("the {} kernel", g.name()))?;
        let dir = work.join(g.name());
        fs::create_dir_all(&dir)?;
        let plan = dir.join("plan.env");
        fs::write(&plan, plan_text(&bins, g)?)?;
        let initrd = dir.join("initramfs.cpio");
        let keep = [root(), work.clone(), k.tree.clone(), parent(&bins.kernel)];
        initramfs::build(&k, &script, &plan, &keep, &initrd)?;
        prepared.push((g, k, dir, initrd));
    }
    eprintln!(
        "xtask: booting {} guest(s), {} at once, {} vCPU each, software emulation; deadline {:?} each",
        prepared.len(),
        opts.at_once,
        opts.cpus,
        opts.timeout
    );
    let mut reports = Vec::new();
    for batch in prepared.chunks(opts.at_once.max(1)) {
        let results: Vec<anyhow::Result<Report>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|(g, k, dir, initrd)| {
                    s.spawn(move || {
                        let boot = qemu::boot(
                            k,
                            initrd,
                            opts.cpus,
                            &dir.join("console.log"),
                            opts.timeout,
                            g.name(),
                        )?;
                        Ok(Report::read(*g, k, &boot, &dir.join("console.log")))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a guest thread panicked")))
                })
                .collect()
        });
        for r in results {
            reports.push(r?);
        }
    }
    let mut text = String::new();
    for r in &reports {
        r.write_failures(&mut text);
    }
    let _ = writeln!(
        text,
        "xtask: guests ({} at once, {} vCPU each, wall time per guest and step):",
        opts.at_once, opts.cpus
    );
    for r in &reports {
        r.write_summary(&mut text);
    }
    let passed: usize = reports.iter().map(|r| r.passed()).sum();
    let failed: usize = reports.iter().map(|r| r.failed()).sum();
    let _ = writeln!(text, "guests: {passed} passed, {failed} failed");
    eprint!("{text}");
    if failed > 0 {
        bail!("{failed} guest step(s) failed (output above)");
    }
    Ok(())
}

const BENCH_SH: &str = include_str!("bench.sh");

/// What `cargo xtask bench --kernel` brings back from a guest.
pub struct BenchRun {
    /// The Debian package the kernel came from.
    pub package: String,
    /// The report's markdown (sections 1 and 2: connection rate, syscall tax).
    pub markdown: String,
    pub wall: Duration,
}

/// Runs the rate and syscall-tax part of the benchmark inside guest `g`,
/// with the host's release build of xtask (`xtask`, which finds the
/// release `sockmon` beside it), and returns its report.
pub fn bench(
    g: Guest,
    xtask: &Path,
    rounds: u16,
    cpus: u32,
    timeout: Duration,
) -> anyhow::Result<BenchRun> {
    let k = debian::kernel(g.series()).with_context(|| format!("the {} kernel", g.name()))?;
    let dir = root()
        .join("target/guest")
        .join(format!("bench-{}", g.name()));
    fs::create_dir_all(&dir)?;
    let script = dir.join("bench.sh");
    fs::write(&script, BENCH_SH)?;
    let plan = dir.join("plan.env");
    let x = xtask
        .to_str()
        .filter(|v| {
            v.starts_with('/') && !v.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c))
        })
        .with_context(|| format!("{} cannot be handed to the guest's shell", xtask.display()))?;
    fs::write(&plan, format!("XTASK_BIN={x}\nROUNDS={rounds}\n"))?;
    let initrd = dir.join("initramfs.cpio");
    let keep = [root(), dir.clone(), k.tree.clone(), parent(xtask)];
    initramfs::build(&k, &script, &plan, &keep, &initrd)?;
    eprintln!(
        "xtask: benchmark in the {} guest ({cpus} vCPU, software emulation; deadline {timeout:?})",
        g.name()
    );
    let log = dir.join("console.log");
    let boot = qemu::boot(&k, &initrd, cpus, &log, timeout, g.name())?;
    let md_mark = format!("{MARK} md ");
    let log_mark = format!("{MARK} log ");
    let mut markdown = String::new();
    let mut end = None;
    for line in boot.console.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(md) = line.strip_prefix(&md_mark) {
            markdown.push_str(md);
            markdown.push('\n');
        } else if let Some(l) = line.strip_prefix(&log_mark) {
            eprintln!("xtask: [{}] {l}", g.name());
        } else if let Some(rest) = line.strip_prefix(&format!("{MARK} end bench ")) {
            end = Some(rest.to_string());
        }
    }
    match end {
        Some(e) if e.starts_with("rc=0 ") && !markdown.is_empty() => Ok(BenchRun {
            package: k.package.clone(),
            markdown,
            wall: boot.wall,
        }),
        Some(e) => bail!(
            "the benchmark in the {} guest failed ({e}); console: {}",
            g.name(),
            log.display()
        ),
        None => bail!(
            "the benchmark in the {} guest never ended{}; console: {}",
            g.name(),
            if boot.timed_out {
                " (killed at the deadline)"
            } else {
                ""
            },
            log.display()
        ),
    }
}

fn parent(p: &Path) -> PathBuf {
    p.parent()
        .map_or_else(|| p.to_path_buf(), Path::to_path_buf)
}

/// The variables `run.sh` reads.
fn plan_text(b: &Binaries, g: Guest) -> anyhow::Result<String> {
    let mut s = String::new();
    // The kprobe variant of the `kfunc` mode is forced in one guest only:
    // wherever both load, trampolines win, so it needs forcing to be tested.
    let _ = writeln!(s, "FORCE_KPROBES={}", u8::from(g == Guest::Debian612));
    for (name, p) in [
        ("KERNEL_BIN", &b.kernel),
        ("SYSTEM_BIN", &b.system),
        ("SOCKMON_BIN", &b.sockmon),
        ("PKG_DIR", &root().join("sockmon")),
    ] {
        let v = p.to_str().filter(|v| {
            v.starts_with('/') && !v.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c))
        });
        let Some(v) = v else {
            bail!("{} cannot be handed to the guest's shell", p.display());
        };
        let _ = writeln!(s, "{name}={v}");
    }
    Ok(s)
}

/// Builds (or finds up to date) the test binaries and the `sockmon` binary,
/// their paths from cargo's JSON messages.
fn build_binaries() -> anyhow::Result<Binaries> {
    let mut cmd = cargo();
    cmd.args(["test", "-p", "sockmon", "--no-run"])
        .args(["--test", "kernel", "--test", "system"])
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(Stdio::piped());
    eprintln!("xtask: running {}", describe(&cmd));
    let out = cmd.output().context("cannot run cargo")?;
    if !out.status.success() {
        bail!("{} failed: {}", describe(&cmd), out.status);
    }
    let mut found = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(exe) = v["executable"].as_str() {
            let name = v["target"]["name"].as_str().unwrap_or_default().to_string();
            found.insert(name, PathBuf::from(exe));
        }
    }
    let mut take = |name: &str| {
        found
            .remove(name)
            .with_context(|| format!("cargo built no `{name}` executable"))
    };
    Ok(Binaries {
        kernel: take("kernel")?,
        system: take("system")?,
        sockmon: take("sockmon")?,
    })
}

/// One step of `run.sh` as read from the console.
#[derive(Debug, Default, PartialEq)]
struct Step {
    name: String,
    /// Exit status; `None` if the step never ended.
    rc: Option<i32>,
    ms: u64,
    /// The last `test result:` line of its output.
    summary: Option<String>,
    /// Tests that passed, from the summary.
    tests_passed: u64,
    output: String,
}

impl Step {
    fn ok(&self) -> bool {
        self.rc == Some(0) && self.tests_passed > 0
    }
}

/// What one guest did.
struct Report {
    guest: Guest,
    package: String,
    release: String,
    console_log: PathBuf,
    wall: Duration,
    cpu: Duration,
    timed_out: bool,
    /// `uname -r` and CPUs the guest reported.
    seen_kernel: Option<String>,
    modes: Option<String>,
    notes: Vec<String>,
    fatal: Vec<String>,
    steps: Vec<Step>,
    done: bool,
    /// The console's last lines, shown when the guest did not finish.
    tail: String,
}

impl Report {
    fn read(guest: Guest, k: &debian::Kernel, boot: &qemu::Boot, log: &Path) -> Report {
        let mut r = Report {
            guest,
            package: k.package.clone(),
            release: k.release.clone(),
            console_log: log.to_path_buf(),
            wall: boot.wall,
            cpu: boot.cpu,
            timed_out: boot.timed_out,
            seen_kernel: None,
            modes: None,
            notes: Vec::new(),
            fatal: Vec::new(),
            steps: Vec::new(),
            done: false,
            tail: String::new(),
        };
        r.parse(&boot.console);
        let lines: Vec<&str> = boot.console.lines().collect();
        r.tail = lines[lines.len().saturating_sub(120)..].join("\n");
        r
    }

    fn parse(&mut self, console: &str) {
        let mut current: Option<Step> = None;
        for raw in console.lines() {
            let line = raw.trim_end_matches('\r');
            let Some((_, rest)) = line.split_once(MARK) else {
                if let Some(s) = current.as_mut() {
                    s.output.push_str(line);
                    s.output.push('\n');
                    if let Some(at) = line.find("test result:") {
                        let summary = &line[at..];
                        s.tests_passed = passed_count(summary);
                        s.summary = Some(summary.to_string());
                    }
                }
                continue;
            };
            let rest = rest.trim();
            let (word, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            match word {
                "kernel" => self.seen_kernel = Some(arg.to_string()),
                "modes" => self.modes = Some(arg.trim().to_string()),
                "note" => self.notes.push(arg.to_string()),
                "fatal" => self.fatal.push(arg.to_string()),
                "done" => self.done = true,
                "begin" => {
                    if let Some(s) = current.take() {
                        self.steps.push(s);
                    }
                    current = Some(Step {
                        name: arg.to_string(),
                        ..Step::default()
                    });
                }
                "end" => {
                    let mut s = current.take().unwrap_or_default();
                    let mut f = arg.split_whitespace();
                    s.name = f.next().unwrap_or_default().to_string();
                    for kv in f {
                        match kv.split_once('=') {
                            Some(("rc", v)) => s.rc = v.parse().ok(),
                            Some(("ms", v)) => s.ms = v.parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                    self.steps.push(s);
                }
                _ => {}
            }
        }
        if let Some(s) = current {
            self.steps.push(s);
        }
    }

    /// Whether the guest ran the kernel it was meant to.
    fn right_kernel(&self) -> bool {
        self.seen_kernel
            .as_deref()
            .is_some_and(|k| k.split_whitespace().next() == Some(self.release.as_str()))
    }

    fn whole_guest_ok(&self) -> bool {
        !self.timed_out && self.done && self.fatal.is_empty() && self.right_kernel()
    }

    fn passed(&self) -> usize {
        self.steps.iter().filter(|s| s.ok()).count()
    }

    fn failed(&self) -> usize {
        self.steps.iter().filter(|s| !s.ok()).count() + usize::from(!self.whole_guest_ok())
    }

    fn write_failures(&self, o: &mut String) {
        let name = self.guest.name();
        for s in self.steps.iter().filter(|s| !s.ok()) {
            let _ = writeln!(
                o,
                "xtask: ---- [{name}] {} FAILED ({}); its output in the guest: ----\n{}",
                s.name,
                match s.rc {
                    Some(0) => "no test passed".to_string(),
                    Some(rc) => format!("exit status {rc}"),
                    None => "never ended".to_string(),
                },
                s.output
            );
        }
        if !self.whole_guest_ok() {
            let why = if self.timed_out {
                "killed at its deadline".to_string()
            } else if !self.right_kernel() {
                format!(
                    "expected kernel {}, the guest said {:?}",
                    self.release, self.seen_kernel
                )
            } else if !self.fatal.is_empty() {
                self.fatal.join("; ")
            } else {
                "it powered off before its plan was done".to_string()
            };
            let _ = writeln!(
                o,
                "xtask: ---- [{name}] guest FAILED: {why}; the console's last lines: ----\n{}",
                self.tail
            );
        }
        if self.failed() > 0 {
            let _ = writeln!(
                o,
                "xtask: [{name}] whole console: {}",
                self.console_log.display()
            );
        }
    }

    fn write_summary(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "  {:<4} {:<12} {} (kernel {}): {:.1} s wall, {:.1} s qemu CPU{}",
            if self.failed() == 0 { "ok" } else { "FAIL" },
            self.guest.name(),
            self.package,
            self.release,
            self.wall.as_secs_f64(),
            self.cpu.as_secs_f64(),
            if self.timed_out { ", killed" } else { "" }
        );
        if let Some(m) = &self.modes {
            let _ = writeln!(o, "       attach modes run: {m}");
        }
        for n in &self.notes {
            let _ = writeln!(o, "       note: {n}");
        }
        for s in &self.steps {
            let _ = writeln!(
                o,
                "       {:<4} {:<26} {:>7.1} s  {}",
                if s.ok() { "ok" } else { "FAIL" },
                s.name,
                s.ms as f64 / 1e3,
                s.summary.as_deref().unwrap_or("(no test result)")
            );
        }
    }
}

/// `test result: ok. 17 passed; 0 failed; ...` → 17.
fn passed_count(summary: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| part.trim().strip_suffix(" passed"))
        .and_then(|p| p.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(console: &str) -> Report {
        let k = debian::Kernel {
            package: "linux-image-6.12.1+deb12-amd64".into(),
            release: "6.12.1+deb12-amd64".into(),
            tree: "/x".into(),
        };
        let boot = qemu::Boot {
            console: console.into(),
            wall: Duration::from_secs(3),
            cpu: Duration::from_secs(2),
            timed_out: false,
        };
        Report::read(Guest::Debian612, &k, &boot, Path::new("/x/console.log"))
    }

    const GOOD: &str = "noise\r\n@@sockmon-guest kernel 6.12.1+deb12-amd64 cpus=1\n\
        @@sockmon-guest begin no-diag/snapshot\nrunning 1 test\n\
        test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 7 filtered out; finished in 2.00s\n\
        @@sockmon-guest end no-diag/snapshot rc=0 ms=2500\n\
        @@sockmon-guest modes auto socket\n\
        @@sockmon-guest begin kernel-tests/auto\n\
        test result: ok. 17 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 40.00s\n\
        @@sockmon-guest end kernel-tests/auto rc=0 ms=41000\n\
        @@sockmon-guest done\n@@sockmon-guest poweroff\n";

    #[test]
    fn a_complete_console_is_read_step_by_step() {
        let r = report(GOOD);
        assert!(r.whole_guest_ok());
        assert_eq!(r.modes.as_deref(), Some("auto socket"));
        assert_eq!(r.steps.len(), 2);
        assert_eq!(r.steps[1].name, "kernel-tests/auto");
        assert_eq!(
            (r.steps[1].rc, r.steps[1].ms, r.steps[1].tests_passed),
            (Some(0), 41000, 17)
        );
        assert_eq!((r.passed(), r.failed()), (2, 0));
    }

    #[test]
    fn failures_zero_tests_unfinished_steps_and_wrong_kernels_fail() {
        let failing = GOOD.replace("kernel-tests/auto rc=0", "kernel-tests/auto rc=101");
        assert_eq!(report(&failing).failed(), 1);
        let none = GOOD.replace("ok. 1 passed", "ok. 0 passed");
        assert_eq!(report(&none).failed(), 1);
        let cut = &GOOD[..GOOD.find("@@sockmon-guest end kernel-tests").unwrap()];
        let r = report(cut);
        assert_eq!(r.steps[1].rc, None);
        assert_eq!(r.failed(), 2, "the step and the unfinished guest");
        let mut text = String::new();
        r.write_failures(&mut text);
        assert!(
            text.contains("kernel-tests/auto FAILED (never ended)"),
            "{text}"
        );
        let other = GOOD.replace("kernel 6.12.1+deb12", "kernel 6.18.0");
        assert_eq!(report(&other).failed(), 1);
    }

    #[test]
    fn passed_counts_come_from_the_summary() {
        assert_eq!(passed_count("test result: ok. 17 passed; 0 failed"), 17);
        assert_eq!(passed_count("test result: FAILED. 3 passed; 2 failed"), 3);
        assert_eq!(passed_count("garbage"), 0);
    }
}
