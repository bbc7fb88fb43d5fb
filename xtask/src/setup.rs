//! Installing what is missing, idempotently: a second run does nothing.
//!
//! - the nightly toolchain's `rust-src` (the BPF target builds `core` from source);
//! - `bpf-linker`, built against the nightly's own LLVM (no matching LLVM is
//!   packaged here and prebuilt downloads are unreachable), cached under
//!   [`run::tools_dir`] with a stamp naming the LLVM it was built for;
//! - Debian packages the tests and benchmarks use;
//! - for `cargo xtask package` (and the tests of the package), cargo-deb,
//!   also cached there ([`packaging`]).

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::run::{self, exec, output, tools_dir};

/// Version of bpf-linker known to work with the nightly here.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages used by tests and benchmarks, and the command that proves each is present.
pub const PACKAGES: &[(&str, &str)] = &[
    ("jq", "jq"),                    // JSON stream consumer in the tests
    ("util-linux", "setpriv"),       // running without capabilities
    ("iproute2", "ss"),              // network namespaces, `ss` for agreement checks
    ("bpftool", "bpftool"),          // the systemd test lists loaded programs
    ("systemd", "systemd-analyze"),  // the real-systemd test boots it in a namespace
    ("python3", "/usr/bin/python3"), // network-namespace tests hold sockets with it
    ("nftables", "nft"),             // random loss, dropped SYNs in test namespaces
    // Guests with Debian's kernels (xtask/src/guest/): emulator, initramfs, modules.
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    ("kmod", "depmod"),
    ("xz-utils", "xz"),
    ("tmux", "tmux"), // `sockmon top` is read from a real terminal
    ("clickhouse-server", "/usr/sbin/clickhouse-server"), // the ClickHouse sink's tests (18.16)
    ("dpkg-dev", "dpkg-shlibdeps"), // cargo-deb computes the package's Depends with it
    ("binutils", "strip"), // cargo-deb strips the packaged binary
    ("man-db", "man"), // the package test reads `man sockmon`
    (
        "bash-completion",
        "/usr/share/bash-completion/bash_completion",
    ), // and completes in bash
];

/// Version of cargo-deb `cargo xtask package` builds the `.deb` with.
const CARGO_DEB_VERSION: &str = "3.8.0";

pub fn all() -> anyhow::Result<()> {
    lint_components()?;
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages(PACKAGES)?;
    Ok(())
}

/// What `cargo xtask package` needs besides [`all`]: cargo-deb, built once
/// from crates.io into [`run::tools_dir`] (a few minutes of CPU, once per
/// machine; see BENCHMARKS.md) unless that version is there.
pub fn packaging() -> anyhow::Result<()> {
    let tools = tools_dir();
    let bin = cargo_deb();
    let have = output(Command::new(&bin).arg("--version"))
        .is_ok_and(|v| v.trim() == format!("cargo-deb {CARGO_DEB_VERSION}"));
    if have {
        return Ok(());
    }
    eprintln!(
        "xtask: building cargo-deb {CARGO_DEB_VERSION} into {}; a few minutes, once",
        tools.display()
    );
    exec(
        Command::new("cargo")
            .args(["install", "cargo-deb", "--locked", "--force"])
            .args(["--version", &format!("={CARGO_DEB_VERSION}")])
            .arg("--root")
            .arg(&tools),
    )?;
    if !bin.is_file() {
        bail!("cargo-deb was not installed at {}", bin.display());
    }
    Ok(())
}

/// Where [`packaging`] puts cargo-deb.
pub fn cargo_deb() -> std::path::PathBuf {
    tools_dir().join("bin").join("cargo-deb")
}

/// `cargo fmt` and `cargo clippy` for the toolchain that builds the user side.
fn lint_components() -> anyhow::Result<()> {
    let works = |sub: &str| {
        run::cargo()
            .args([sub, "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("fmt") && works("clippy") {
        return Ok(());
    }
    exec(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let toolchains =
        output(Command::new("rustup").args(["toolchain", "list"])).context("rustup is required")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        exec(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
        return Ok(());
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        exec(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// The nightly's libLLVM file name and LLVM major version.
fn nightly_llvm() -> anyhow::Result<(std::path::PathBuf, String, String)> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let lib = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so") || n.starts_with("libLLVM-"))
        .with_context(|| format!("no libLLVM in {}", lib_dir.display()))?;
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV shows no LLVM version")?
        .to_string();
    Ok((lib_dir, lib, major))
}

fn bpf_linker() -> anyhow::Result<()> {
    let tools = tools_dir();
    let bin = tools.join("bin").join("bpf-linker");
    let stamp = tools.join("bpf-linker.llvm");
    let (lib_dir, lib, major) = nightly_llvm()?;
    let want = format!("{BPF_LINKER_VERSION} {lib}\n");
    if bin.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} ({lib}); about a minute, once"
    );
    let prefix = tools.join("llvm-prefix");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    // bpf-linker links `$LLVM_PREFIX/lib/libLLVM.so`; the runtime loader then
    // looks for the library's SONAME, so provide both names.
    for name in ["libLLVM.so", lib.as_str()] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&lib), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    exec(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--no-default-features",
            ])
            .args(["--version", &format!("={BPF_LINKER_VERSION}")])
            .args(["--features", &format!("llvm-{major}")])
            .arg("--root")
            .arg(&tools)
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bin.is_file() {
        bail!("bpf-linker was not installed at {}", bin.display());
    }
    fs::write(&stamp, want)?;
    Ok(())
}

/// Installs the packages whose command is missing (one `apt-get update` at most).
pub fn debian_packages(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, cmd)| !have(cmd))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let sudo = !run::is_root();
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            c.arg("apt-get");
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    exec(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    exec(&mut install)
}

/// Whether `cmd` is on PATH (or in the sbin directories apt puts tools in).
pub fn have(cmd: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(Into::into))
        .any(|d| d.join(cmd).is_file())
}
