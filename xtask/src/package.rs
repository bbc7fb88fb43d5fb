//! `cargo xtask package`: the Debian package, built with cargo-deb from the
//! release binary. The package needs nothing of Rust on the machine it is
//! installed on: its `Depends:` are computed by `dpkg-shlibdeps` from the
//! binary (libc and libgcc), and the eBPF programs are inside the binary.
//!
//! 1. the release build (the same `cargo build` as `cargo xtask bench`, so
//!    `cargo xtask test`, which packages and benchmarks, builds once);
//! 2. that binary writes its own manual pages and completions
//!    (`sockmon generate man|completions DIR`, hidden), so they describe
//!    exactly the binary packaged, every subcommand included;
//! 3. the unit, `ExecStart=/usr/bin/sockmon daemon`;
//! 4. `cargo-deb --no-build` with `[package.metadata.deb]` of
//!    `sockmon/Cargo.toml`: those files, `packaging/config.toml` as the
//!    conffile `/etc/sockmon/config.toml`, and the maintainer scripts of
//!    `packaging/debian/` (group `sockmon`; nothing enabled or started;
//!    purge removes what the service made).
//!
//! What goes where in the package:
//!
//! | file | installed as |
//! |---|---|
//! | the binary | `/usr/bin/sockmon` |
//! | the unit | `/lib/systemd/system/sockmon.service` |
//! | the commented configuration | `/etc/sockmon/config.toml` (conffile) |
//! | `sockmon.8`, `sockmon-SUBCOMMAND.8` | `/usr/share/man/man8/*.8.gz` |
//! | bash, zsh, fish completions | `/usr/share/bash-completion/completions/sockmon`, `/usr/share/zsh/vendor-completions/_sockmon`, `/usr/share/fish/vendor_completions.d/sockmon.fish` |
//! | README, API, event schema | `/usr/share/doc/sockmon/` |

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{
    install,
    run::{cargo, describe, exec, root},
    setup,
};

/// Where the package installs the binary (the unit's `ExecStart=`).
pub const PACKAGED_BIN: &str = "/usr/bin/sockmon";

/// The release build, exactly as `cargo xtask bench` makes it (the same
/// package set, so the same feature resolution): one build serves both.
pub const RELEASE_BUILD: &[&str] = &["build", "--release", "-p", "sockmon", "-p", "xtask"];

/// The environment variable that hands the `.deb` to the package test
/// (`sockmon/tests/system/package.rs`).
pub const DEB_ENV: &str = "SOCKMON_DEB";

#[derive(Args)]
pub struct PackageArgs {
    /// Directory to write the `.deb` into.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

pub fn run(args: &PackageArgs) -> anyhow::Result<()> {
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| root().join("target/debian"));
    let deb = build(&out)?;
    eprintln!("xtask package: built {}", deb.display());
    println!("{}", deb.display());
    Ok(())
}

/// Builds the package into `out_dir` and returns the `.deb`'s path.
pub fn build(out_dir: &Path) -> anyhow::Result<PathBuf> {
    setup::all()?;
    setup::packaging()?;
    exec(cargo().args(RELEASE_BUILD))?;
    let bin = root().join("target/release/sockmon");
    // cargo-deb reads these through `target/release/sockmon-package/...`.
    let stage = root().join("target/release/sockmon-package");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    install::generate_docs(&bin, &stage)?;
    // Debian policy: pages compressed (cargo-deb leaves files it takes from
    // the target directory as they are). -n: no name or time in the header,
    // so the same page gives the same bytes.
    for page in fs::read_dir(stage.join("man"))? {
        exec(Command::new("gzip").args(["-9n", "--"]).arg(page?.path()))?;
    }
    let unit_src = root().join("packaging/systemd/sockmon.service");
    let unit =
        fs::read_to_string(&unit_src).with_context(|| format!("reading {}", unit_src.display()))?;
    let unit = install::with_exec_start(&unit, Path::new(PACKAGED_BIN))?;
    fs::write(stage.join("sockmon.service"), unit)?;

    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut deb = Command::new(setup::cargo_deb());
    deb.current_dir(root())
        .args(["--package", "sockmon", "--no-build", "--locked", "--output"])
        .arg(out_dir);
    eprintln!("xtask: running {}", describe(&deb));
    let done = deb
        .output()
        .with_context(|| format!("cannot start {}", describe(&deb)))?;
    let stderr = String::from_utf8_lossy(&done.stderr);
    eprint!("{stderr}");
    if !done.status.success() {
        bail!("{} failed: {}", describe(&deb), done.status);
    }
    // cargo-deb prints the path of the package it wrote.
    let stdout = String::from_utf8_lossy(&done.stdout);
    let path = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo-deb named no .deb in its output:\n{stdout}"))?;
    if !path.is_file() {
        bail!(
            "cargo-deb said it wrote {}, which is not there",
            path.display()
        );
    }
    Ok(path)
}
