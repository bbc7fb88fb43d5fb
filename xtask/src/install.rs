//! `cargo xtask install`: build `sockmon` in release mode and install it as a
//! systemd service.
//!
//! | what | where |
//! |---|---|
//! | the binary | `$DESTDIR$PREFIX/bin/sockmon` |
//! | `packaging/systemd/sockmon.service`, `ExecStart=` pointed at that binary | `$DESTDIR/etc/systemd/system/sockmon.service` |
//! | `packaging/config.toml` (every setting, commented out) | `$DESTDIR/etc/sockmon/config.toml`, or `config.toml.new` beside an existing one, which is never overwritten |
//! | manual pages, written by that binary (`sockmon generate man`) | `$DESTDIR$PREFIX/share/man/man8/` |
//! | bash, zsh, fish completions (`sockmon generate completions`) | `$DESTDIR$PREFIX/share/{bash-completion/completions,zsh/site-functions,fish/vendor_completions.d}/` |
//!
//! Under `sudo`, the build runs as the invoking user (`SUDO_USER`, through
//! `setpriv`) and only the copying runs as root.
//!
//! Installing into the running system (no `--destdir`, as root) also creates
//! the system group `sockmon` (members may use the API socket) and, when
//! systemd is PID 1, runs `systemctl daemon-reload`; otherwise it says what
//! to run. With `--destdir` (staging for a package) nothing outside DESTDIR
//! is touched, and what the package's scripts should do is printed instead.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};
use clap::Args;

use crate::{
    run::{cargo, exec, is_root, root},
    setup,
};

/// Under `sudo`, runs `cmd` as the user who ran sudo (`SUDO_UID`,
/// `SUDO_GID`, `SUDO_USER`), so that compiling, build scripts included,
/// never runs as root: root only copies the result. Without sudo, as is.
fn as_invoking_user(cmd: &mut Command) -> anyhow::Result<&mut Command> {
    let (Ok(uid), Ok(gid), Ok(user)) = (
        std::env::var("SUDO_UID"),
        std::env::var("SUDO_GID"),
        std::env::var("SUDO_USER"),
    ) else {
        return Ok(cmd);
    };
    if !is_root() || uid == "0" {
        return Ok(cmd);
    }
    let target = root().join("target");
    if let Ok(meta) = fs::metadata(&target) {
        use std::os::unix::fs::MetadataExt as _;
        ensure!(
            meta.uid().to_string() == uid,
            "{} belongs to uid {}, not to {user} (uid {uid}) who ran sudo; the build runs as {user}: \
             `sudo chown -R {user}: {}` (or remove it) and run again",
            target.display(),
            meta.uid(),
            target.display()
        );
    }
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let mut wrapped = Command::new("setpriv");
    wrapped
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--init-groups".to_string(),
            "--reset-env".to_string(),
            "--".to_string(),
        ])
        .arg(program)
        .args(args)
        .current_dir(root());
    // --reset-env sets HOME, USER, PATH for that user; keep the PATH that
    // found cargo (sudo -E) so the user's toolchain is the one used.
    if let Some(path) = std::env::var_os("PATH") {
        wrapped.env("PATH", path);
    }
    *cmd = wrapped;
    Ok(cmd)
}

/// The group whose members may use the daemon's API socket (docs/api.md, Access).
const GROUP: &str = "sockmon";

#[derive(Args)]
pub struct InstallArgs {
    /// Installation prefix: the binary goes to PREFIX/bin (an absolute path).
    #[arg(long, value_name = "PREFIX", default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Stage every file under DIR instead of / (for building a package).
    #[arg(long, value_name = "DIR")]
    pub destdir: Option<PathBuf>,
}

pub fn run(args: &InstallArgs) -> anyhow::Result<()> {
    let prefix = checked_prefix(&args.prefix)?;
    let destdir = args
        .destdir
        .as_deref()
        .filter(|d| !d.as_os_str().is_empty());
    let live = destdir.is_none();
    if live && !is_root() {
        bail!(
            "installing into the running system needs root: run `sudo -E cargo xtask install` \
             (or stage the files with --destdir DIR)"
        );
    }
    let under = |p: &Path| staged(destdir, p);

    setup::all()?;
    let mut build = cargo();
    build.args(["build", "--release", "--package", "sockmon"]);
    exec(as_invoking_user(&mut build)?)?;

    let bin_path = prefix.join("bin/sockmon");
    let built = root().join("target/release/sockmon");
    install_file(
        &fs::read(&built).with_context(|| format!("reading {}", built.display()))?,
        &under(&bin_path),
        0o755,
    )?;
    say(&format!("installed {}", under(&bin_path).display()));

    let unit_src = root().join("packaging/systemd/sockmon.service");
    let unit =
        fs::read_to_string(&unit_src).with_context(|| format!("reading {}", unit_src.display()))?;
    let unit = with_exec_start(&unit, &bin_path)?;
    let unit_path = under(Path::new("/etc/systemd/system/sockmon.service"));
    install_file(unit.as_bytes(), &unit_path, 0o644)?;
    say(&format!(
        "installed {} (ExecStart={} daemon; local changes belong in a drop-in: `systemctl edit sockmon`)",
        unit_path.display(),
        bin_path.display()
    ));

    let config_src = root().join("packaging/config.toml");
    let config =
        fs::read(&config_src).with_context(|| format!("reading {}", config_src.display()))?;
    let config_path = under(Path::new("/etc/sockmon/config.toml"));
    match fs::read(&config_path) {
        Ok(existing) if existing == config => {
            say(&format!(
                "{} is already the packaged one",
                config_path.display()
            ));
        }
        Ok(_) => {
            let new = config_path.with_extension("toml.new");
            install_file(&config, &new, 0o644)?;
            say(&format!(
                "{} exists and was left as it is; the packaged configuration is in {}: \
                 compare them and merge what you want",
                config_path.display(),
                new.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            install_file(&config, &config_path, 0o644)?;
            say(&format!("installed {}", config_path.display()));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", config_path.display())),
    }

    install_docs(&built, &prefix, &under)?;

    if live {
        ensure_group()?;
        if systemd_is_pid1() {
            exec(Command::new("systemctl").arg("daemon-reload"))?;
            say("next: systemctl enable --now sockmon");
        } else {
            say(
                "systemd is not PID 1 here: nothing reloaded. On a systemd machine run \
                 `systemctl daemon-reload && systemctl enable --now sockmon`",
            );
        }
    } else {
        say(&format!(
            "staged under {}; the package's post-install step should run \
             `getent group {GROUP} >/dev/null || groupadd --system {GROUP}` and \
             `systemctl daemon-reload`",
            destdir.unwrap_or(Path::new("/")).display()
        ));
    }
    Ok(())
}

/// Shell completion files: (file `sockmon generate completions` writes,
/// where it goes below PREFIX).
const COMPLETIONS: &[(&str, &str)] = &[
    ("sockmon", "share/bash-completion/completions/sockmon"),
    ("_sockmon", "share/zsh/site-functions/_sockmon"),
    (
        "sockmon.fish",
        "share/fish/vendor_completions.d/sockmon.fish",
    ),
];

/// The manual pages (PREFIX/share/man/man8) and shell completions, written
/// by the binary just built (`sockmon generate`), so they match it.
fn install_docs(
    built: &Path,
    prefix: &Path,
    under: &dyn Fn(&Path) -> PathBuf,
) -> anyhow::Result<()> {
    let stage = root().join("target/release/sockmon-install-docs");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    generate_docs(built, &stage)?;
    let man_dir = prefix.join("share/man/man8");
    let mut pages: Vec<PathBuf> = fs::read_dir(stage.join("man"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    pages.sort();
    for page in &pages {
        let name = page.file_name().context("a page without a name")?;
        install_file(&fs::read(page)?, &under(&man_dir.join(name)), 0o644)?;
    }
    say(&format!(
        "installed {} manual pages in {} (man sockmon)",
        pages.len(),
        under(&man_dir).display()
    ));
    for (file, dest) in COMPLETIONS {
        let dest = under(&prefix.join(dest));
        install_file(
            &fs::read(stage.join("completions").join(file))?,
            &dest,
            0o644,
        )?;
        say(&format!("installed {}", dest.display()));
    }
    Ok(())
}

/// The prefix, if it is absolute and can stand in a unit's `ExecStart=` unquoted.
fn checked_prefix(prefix: &Path) -> anyhow::Result<PathBuf> {
    ensure!(
        prefix.is_absolute(),
        "--prefix {} is not an absolute path",
        prefix.display()
    );
    let text = prefix
        .to_str()
        .with_context(|| format!("--prefix {} is not UTF-8", prefix.display()))?;
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"'\\$%;".contains(*c))
    {
        bail!("--prefix {text}: the character {c:?} is not supported in a unit's ExecStart=");
    }
    Ok(prefix.components().collect())
}

/// `path` (absolute) below `destdir`, or itself when there is none.
fn staged(destdir: Option<&Path>, path: &Path) -> PathBuf {
    match destdir {
        None => path.to_path_buf(),
        Some(d) => d.join(
            path.components()
                .filter(|c| !matches!(c, Component::RootDir))
                .collect::<PathBuf>(),
        ),
    }
}

/// Has `bin` write its manual pages into `dir/man` and its completions into
/// `dir/completions` (what `cargo xtask install` and the package install).
pub fn generate_docs(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    for (what, sub) in [("man", "man"), ("completions", "completions")] {
        let mut cmd = Command::new(bin);
        cmd.args(["generate", what]).arg(dir.join(sub));
        let out = cmd
            .output()
            .with_context(|| format!("cannot start {}", crate::run::describe(&cmd)))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}\n{}",
                crate::run::describe(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// `unit` with its one `ExecStart=` line running `bin daemon`.
pub fn with_exec_start(unit: &str, bin: &Path) -> anyhow::Result<String> {
    let count = unit.lines().filter(|l| l.starts_with("ExecStart=")).count();
    ensure!(
        count == 1,
        "packaging/systemd/sockmon.service has {count} ExecStart= lines, expected one"
    );
    let mut out = String::with_capacity(unit.len() + 64);
    for line in unit.lines() {
        if line.starts_with("ExecStart=") {
            out.push_str(&format!("ExecStart={} daemon", bin.display()));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// Writes `contents` to `dest` with `mode`, through a temporary file renamed
/// into place (replacing a running binary in place would fail with ETXTBSY).
fn install_file(contents: &[u8], dest: &Path, mode: u32) -> anyhow::Result<()> {
    let dir = dest.parent().context("destination has no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = dest.file_name().context("destination has no file name")?;
    let tmp = dir.join(format!(".{}.xtask-tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::anyhow!("installing {}: {e}", dest.display())
    })
}

/// Creates the system group `sockmon` unless it exists.
fn ensure_group() -> anyhow::Result<()> {
    let exists = Command::new("getent")
        .args(["group", GROUP])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if exists {
        say(&format!("group {GROUP} exists"));
        return Ok(());
    }
    exec(Command::new("groupadd").args(["--system", GROUP]))?;
    say(&format!(
        "created the system group {GROUP}: add users who may query the daemon with \
         `usermod -aG {GROUP} USER`"
    ));
    Ok(())
}

/// Whether the system was booted with systemd (what sd_booted(3) checks).
fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn say(msg: &str) {
    eprintln!("xtask install: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_points_at_the_installed_binary() {
        let unit =
            "[Service]\nType=notify\nExecStart=/usr/local/bin/sockmon daemon\nRestart=on-failure\n";
        let out = with_exec_start(unit, Path::new("/opt/sm/bin/sockmon")).unwrap();
        assert_eq!(
            out,
            "[Service]\nType=notify\nExecStart=/opt/sm/bin/sockmon daemon\nRestart=on-failure\n"
        );
        assert!(with_exec_start("[Service]\n", Path::new("/x")).is_err());
    }

    #[test]
    fn the_packaged_unit_has_one_exec_start() {
        let unit = fs::read_to_string(root().join("packaging/systemd/sockmon.service")).unwrap();
        let out = with_exec_start(&unit, Path::new("/usr/bin/sockmon")).unwrap();
        assert!(out.contains("\nExecStart=/usr/bin/sockmon daemon\n"));
    }

    #[test]
    fn destdir_and_prefix() {
        assert_eq!(
            staged(
                Some(Path::new("/tmp/stage")),
                Path::new("/usr/local/bin/sockmon")
            ),
            PathBuf::from("/tmp/stage/usr/local/bin/sockmon")
        );
        assert_eq!(
            staged(None, Path::new("/etc/sockmon/config.toml")),
            PathBuf::from("/etc/sockmon/config.toml")
        );
        assert_eq!(
            checked_prefix(Path::new("/usr/local/")).unwrap(),
            PathBuf::from("/usr/local")
        );
        assert!(checked_prefix(Path::new("usr")).is_err());
        assert!(checked_prefix(Path::new("/opt/my dir")).is_err());
        assert!(checked_prefix(Path::new("/opt/100%")).is_err());
    }
}
