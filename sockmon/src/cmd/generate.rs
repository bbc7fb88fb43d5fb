//! `sockmon generate man|completions DIR` (hidden): writes the manual pages
//! and the shell completions from the very clap definitions this binary
//! parses its command line with ([`crate::cli::Cli`]).
//!
//! Why the binary writes them (rather than `build.rs` or xtask): the pages
//! and completions then describe exactly the binary that is installed, every
//! subcommand included, however many are added later, with nothing to keep
//! in step by hand. `cargo xtask install` and `cargo xtask package` run the
//! release binary they install with this subcommand. It is hidden from
//! `--help`, the pages and the completions: it is a build step, not a tool
//! for administrators.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::fail;
use crate::cli::{Cli, GenerateArgs, GenerateWhat};

/// Manual section: system administration commands (sockmon needs root).
pub const MAN_SECTION: &str = "8";

/// Shells completions are written for, and their file names (as each
/// shell's completion loader expects them).
pub const SHELLS: &[(Shell, &str)] = &[
    (Shell::Bash, "sockmon"),
    (Shell::Zsh, "_sockmon"),
    (Shell::Fish, "sockmon.fish"),
];

pub fn run(args: &GenerateArgs) -> ExitCode {
    let written = match args.what {
        GenerateWhat::Man => man_pages(&args.dir),
        GenerateWhat::Completions => completions(&args.dir),
    };
    match written {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("writing into {}: {e}", args.dir.display()), 1),
    }
}

/// The clap command as users see it, built (so that every subcommand has
/// its display name, `sockmon-watch`, and bin name, `sockmon watch`), without
/// clap's `help` subcommand; hidden subcommands are skipped by the renderers
/// and by [`visible`].
fn public_command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Subcommands that get a page: those not hidden.
fn visible(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// `sockmon.8` and `sockmon-SUBCOMMAND.8` for every visible subcommand.
pub fn man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    write_page(&public_command(), dir, &mut written)?;
    Ok(written)
}

/// Renders `cmd` as `DISPLAY-NAME.8`, then its visible subcommands.
fn write_page(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(MAN_SECTION)
        .manual("sockmon manual")
        .source(format!("sockmon {}", env!("CARGO_PKG_VERSION")));
    let mut buf = Vec::new();
    if cmd.get_name() == "sockmon" {
        // The main page: clap's sections, then where things are.
        man.render_title(&mut buf)?;
        man.render_name_section(&mut buf)?;
        man.render_synopsis_section(&mut buf)?;
        man.render_description_section(&mut buf)?;
        man.render_options_section(&mut buf)?;
        man.render_subcommands_section(&mut buf)?;
        files_and_see_also().to_writer(&mut buf)?;
        man.render_version_section(&mut buf)?;
    } else {
        man.render(&mut buf)?;
    }
    let path = dir.join(man.get_filename());
    write_file(&path, &buf)?;
    written.push(path);
    for sub in visible(cmd) {
        write_page(sub, dir, written)?;
    }
    Ok(())
}

/// FILES and SEE ALSO of `sockmon(8)`.
fn files_and_see_also() -> clap_mangen::roff::Roff {
    use clap_mangen::roff::{Roff, bold, italic, roman};
    let mut r = Roff::new();
    r.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/sockmon/config.toml",
            "the daemon's configuration: every setting, commented out with its default; \
             systemctl reload sockmon re-reads what can change without a restart",
        ),
        (
            crate::api::server::DEFAULT_SOCKET,
            "the daemon's API socket (line-delimited JSON); members of the group sockmon may use it",
        ),
        (
            "/var/log/sockmon/",
            "the place for the event file sink (sinks.file.path)",
        ),
    ] {
        r.control("TP", []).text([bold(path)]).text([roman(what)]);
    }
    r.control("SH", ["LOGS"]);
    r.text([roman(
        "Under systemd the daemon logs to the journal with structured fields \
         (SOCKMON_*, TARGET, PRIORITY): journalctl -u sockmon. Elsewhere it logs to stderr; \
         RUST_LOG or the log.level setting choose the level.",
    )]);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("ss"),
        roman("(8), "),
        bold("lsof"),
        roman("(8), "),
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1); "),
        italic("/usr/share/doc/sockmon/"),
    ]);
    r
}

/// The command for the completion generators, which (unlike the page
/// renderer) offer hidden subcommands too: the same command rebuilt with
/// the visible subcommands only (clap cannot remove one).
fn completion_command() -> clap::Command {
    let cli = Cli::command();
    let mut cmd = clap::Command::new("sockmon")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .subcommand_required(cli.is_subcommand_required_set())
        .args(cli.get_arguments().cloned())
        .subcommands(visible(&cli).cloned());
    if let Some(about) = cli.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd
}

/// bash, zsh and fish completions for `sockmon`.
pub fn completions(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (shell, file) in SHELLS {
        let mut cmd = completion_command();
        let mut buf = Vec::new();
        clap_complete::generate(*shell, &mut cmd, "sockmon", &mut buf);
        let path = dir.join(file);
        write_file(&path, &buf)?;
        written.push(path);
    }
    Ok(written)
}

fn write_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sockmon-gen-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn one_page_per_visible_subcommand_and_none_for_generate() {
        let dir = scratch("man");
        let files = man_pages(&dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        // Pre-order: each command's page, then its visible subcommands'
        // (`sockmon policy check` is `sockmon-policy-check.8`).
        fn pages(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
            out.push(format!("{prefix}.8"));
            for s in visible(cmd) {
                pages(s, &format!("{prefix}-{}", s.get_name()), out);
            }
        }
        let mut expected = Vec::new();
        pages(&public_command(), "sockmon", &mut expected);
        assert_eq!(names, expected);
        assert!(
            names.contains(&"sockmon-policy-check.8".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"sockmon-watch.8".to_string()), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.contains("generate") || n.contains("help")),
            "{names:?}"
        );
        let main = fs::read_to_string(dir.join("sockmon.8")).unwrap();
        assert!(main.contains(".TH sockmon 8"), "{main}");
        assert!(main.contains("sockmon\\-watch(8)"), "{main}");
        let watch = fs::read_to_string(dir.join("sockmon-watch.8")).unwrap();
        assert!(watch.contains(".TH sockmon-watch 8"), "{watch}");
        assert!(watch.contains("\\-\\-json"), "{watch}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn completions_for_three_shells_without_generate() {
        let dir = scratch("comp");
        let files = completions(&dir).unwrap();
        assert_eq!(files.len(), 3);
        let bash = fs::read_to_string(dir.join("sockmon")).unwrap();
        assert!(bash.contains("complete -F _sockmon"), "{bash}");
        assert!(bash.contains("--json") && bash.contains("lookup"), "{bash}");
        assert!(!bash.contains("generate"), "{bash}");
        let zsh = fs::read_to_string(dir.join("_sockmon")).unwrap();
        assert!(zsh.starts_with("#compdef sockmon"), "{zsh}");
        let fish = fs::read_to_string(dir.join("sockmon.fish")).unwrap();
        assert!(fish.contains("complete -c sockmon"), "{fish}");
        let _ = fs::remove_dir_all(&dir);
    }
}
