//! `cargo xtask test`: the README's one test command.
//!
//! Order: setup → rustfmt check → clippy (user crates, and the kernel crate
//! for the BPF target) → every test of the workspace → `bench --quick`.
//! Tests that load eBPF run as root: when xtask is not root, cargo runs the
//! test binaries (and the benchmark) through `sudo -E`.

use std::process::Command;

use clap::Args;

use crate::{
    run::{cargo, exec, is_root, root},
    setup,
};

#[derive(Args)]
pub struct TestArgs {
    /// Skip the rustfmt and clippy checks.
    #[arg(long)]
    pub no_lint: bool,
    /// Skip `cargo xtask bench --quick` at the end.
    #[arg(long)]
    pub no_bench: bool,
}

pub fn run_lints() -> anyhow::Result<()> {
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
    let mut test = cargo();
    test.args(["test", "--workspace", "--exclude", "sockmon-ebpf"]);
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
