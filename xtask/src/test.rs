//! `cargo xtask test`: the README's one test command.
//!
//! Order: setup → the layers check (`layers.rs`) → rustfmt check → clippy (user crates, and the kernel crate
//! for the BPF target) → every test of the workspace → `bench --quick` →
//! the real-kernel tests inside Debian's kernels under qemu (`guest`).
//! `--kernel` picks where: `host` (this machine's kernel: every test layer
//! and the benchmark's quick mode), `debian-6.1`, `debian-6.12`, or `all`
//! (the default).
//! On the host, the Debian package is built first (release build, reused by
//! `bench --quick`); the package test gets the `.deb` in `SOCKMON_DEB`.
//! Tests that load eBPF run as root: when xtask is not root, cargo runs the
//! test binaries (and the benchmark) through `sudo -E`. Guests need no root
//! on the host (qemu emulates; the guest runs its tests as its own root).

use std::{process::Command, time::Duration};

use clap::{Args, ValueEnum};

use crate::{
    guest::{self, Guest},
    run::{cargo, exec, is_root, root},
    setup,
};

/// Which kernels the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kernel {
    /// This machine's running kernel.
    Host,
    /// The newest Debian 6.1 kernel package, booted under qemu.
    #[value(name = "debian-6.1")]
    Debian61,
    /// The newest Debian 6.12 kernel package, booted under qemu.
    #[value(name = "debian-6.12")]
    Debian612,
    /// All of the above.
    All,
}

#[derive(Args)]
pub struct TestArgs {
    /// Skip the rustfmt and clippy checks.
    #[arg(long)]
    pub no_lint: bool,
    /// Skip `cargo xtask bench --quick` at the end.
    #[arg(long)]
    pub no_bench: bool,
    /// Where the tests run: this machine's kernel, a Debian kernel under qemu,
    /// or all; several separated by commas.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub kernel: Vec<Kernel>,
    /// Seconds a guest may run before it is killed (and fails).
    /// (On an idle machine a guest takes about 2 minutes; a loaded one can
    /// take ten times that: raise it there.)
    #[arg(long, default_value_t = 1200)]
    pub guest_timeout: u64,
    /// vCPUs per guest.
    #[arg(long, default_value_t = 1)]
    pub guest_cpus: u32,
    /// Guests booted at the same time.
    #[arg(long, default_value_t = 2)]
    pub guests_at_once: usize,
}

impl TestArgs {
    fn guests(&self) -> Vec<Guest> {
        let all = self.kernel.contains(&Kernel::All);
        Guest::ALL
            .into_iter()
            .filter(|g| {
                all || self.kernel.contains(match g {
                    Guest::Debian61 => &Kernel::Debian61,
                    Guest::Debian612 => &Kernel::Debian612,
                })
            })
            .collect()
    }

    fn host(&self) -> bool {
        self.kernel
            .iter()
            .any(|k| matches!(k, Kernel::Host | Kernel::All))
    }

    fn guest_options(&self) -> guest::Options {
        guest::Options {
            timeout: Duration::from_secs(self.guest_timeout),
            cpus: self.guest_cpus.max(1),
            at_once: self.guests_at_once.max(1),
        }
    }
}

pub fn run_lints() -> anyhow::Result<()> {
    crate::layers::check(&root())?;
    exec(cargo().args(["fmt", "--all", "--", "--check"]))?;
    exec(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The kernel crate only compiles for the BPF target, with the nightly.
    let mut bpf = Command::new("rustup");
    bpf.current_dir(root())
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--package",
            "sockmon-ebpf",
        ])
        .args([
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
        ])
        .arg("--target-dir")
        .arg(root().join("target/clippy-bpf"))
        .args(["--", "-D", "warnings"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    exec(&mut bpf)
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    setup::all()?;
    if !args.no_lint {
        run_lints()?;
    }
    if args.host() {
        host_tests(args)?;
    }
    guest::run(&args.guests(), args.guest_options())
}

/// Every test of the workspace on this machine's kernel, then the benchmark's quick mode.
fn host_tests(args: &TestArgs) -> anyhow::Result<()> {
    // The package test installs the real .deb (made from the release build
    // that `bench --quick` below then reuses).
    let deb = crate::package::build(&root().join("target/debian"))?;
    let mut test = cargo();
    test.args(["test", "--workspace", "--exclude", "sockmon-ebpf"])
        .env(crate::package::DEB_ENV, &deb);
    if !is_root() {
        test.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
    }
    exec(&mut test)?;
    // The real-kernel layer once more per pure attach mode (the run above
    // used `auto`), with the same assertions; documented differences between
    // modes are asserted as such inside the tests.
    for mode in ["socket", "syscalls"] {
        let mut kernel = cargo();
        kernel
            .args(["test", "--package", "sockmon", "--test", "kernel"])
            .env("SOCKMON_TEST_ATTACH", mode);
        if !is_root() {
            kernel.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
        }
        eprintln!("xtask: real-kernel tests in the `{mode}` attach mode");
        exec(&mut kernel)?;
    }
    // The benchmarks' quick mode proves the harness works (no values checked).
    if args.no_bench {
        return Ok(());
    }
    // A process of its own: the benchmark re-executes itself in release mode.
    let me = std::env::current_exe()?;
    let mut bench = if is_root() {
        Command::new(&me)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&me);
        c
    };
    exec(bench.args(["bench", "--quick"]).current_dir(root()))
}
