//! Debian's kernels from Debian's package registry, cached by version.
//!
//! Why at test time: Debian's archive keeps only the recent builds of each
//! series, so a pinned version would stop downloading within weeks. The
//! newest `linux-image-<series>.*-amd64` that apt knows is picked (the
//! generic flavour: cloud, rt, dbg and unsigned packages are left out),
//! downloaded with `apt-get download`, unpacked with `dpkg-deb -x` and
//! indexed with `depmod` once, under `~/.cache/sockmon/kernels/<package>`
//! (beside the tools cache). Older builds of the series there are removed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run::{exec, output, tools_dir};

/// An unpacked kernel package.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Package name, e.g. `linux-image-6.12.117+deb12-amd64`.
    pub package: String,
    /// The kernel release (`uname -r`), e.g. `6.12.117+deb12-amd64`.
    pub release: String,
    /// The unpacked package: `boot/vmlinuz-RELEASE`, `lib/modules/RELEASE/`.
    pub tree: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.tree.join(format!("boot/vmlinuz-{}", self.release))
    }

    pub fn modules(&self) -> PathBuf {
        self.tree.join(format!("lib/modules/{}", self.release))
    }
}

/// Where unpacked kernels are kept: a sibling of the tools cache.
pub fn cache_dir() -> PathBuf {
    tools_dir()
        .parent()
        .map_or_else(|| tools_dir().join("kernels"), |p| p.join("kernels"))
}

/// The newest generic amd64 kernel of `series` (`6.1`, `6.12`), unpacked.
pub fn kernel(series: &str) -> anyhow::Result<Kernel> {
    let mut packages = candidates(series)?;
    if packages.is_empty() {
        // Lists never fetched on this machine: fetch them once.
        apt_update()?;
        packages = candidates(series)?;
    }
    let cache = cache_dir();
    let Some(package) = packages.pop() else {
        bail!("apt knows no linux-image-{series}.*-amd64 package");
    };
    let dir = cache.join(&package);
    if let Ok(release) = fs::read_to_string(dir.join("ready")) {
        return Ok(Kernel {
            package,
            release: release.trim().to_string(),
            tree: dir.join("tree"),
        });
    }
    fs::create_dir_all(&cache)?;
    let k = match unpack(&package, &dir) {
        Ok(k) => k,
        Err(e) => {
            // The lists may name a build the archive no longer has.
            eprintln!("xtask: {e:#}; updating apt's lists and trying again");
            apt_update()?;
            let package = candidates(series)?
                .pop()
                .with_context(|| format!("no linux-image-{series}.*-amd64 after apt-get update"))?;
            let dir = cache.join(&package);
            unpack(&package, &dir)?
        }
    };
    prune(&cache, series, &k.package);
    Ok(k)
}

fn apt_update() -> anyhow::Result<()> {
    exec(Command::new("apt-get").args(["update", "-q", "-o", "DPkg::Lock::Timeout=600"]))
}

/// Generic amd64 kernel packages of `series` that apt knows, oldest first.
fn candidates(series: &str) -> anyhow::Result<Vec<String>> {
    let prefix = format!("linux-image-{series}.");
    let text = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        &format!("^linux-image-{}\\.", series.replace('.', "\\.")),
    ]))?;
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| generic(n, &prefix))
        .map(str::to_string)
        .collect();
    names.sort_by_key(|n| numbers(n[prefix.len()..].trim_end_matches("-amd64")));
    names.dedup();
    Ok(names)
}

/// `linux-image-6.1.0-57-amd64`, `linux-image-6.12.117+deb12-amd64`: yes;
/// cloud, rt, dbg, unsigned flavours and meta-packages: no.
fn generic(name: &str, prefix: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(prefix)
        .and_then(|r| r.strip_suffix("-amd64"))
    else {
        return false;
    };
    rest.starts_with(|c: char| c.is_ascii_digit())
        && rest
            .split(['-', '+'])
            .all(|part| !matches!(part, "cloud" | "rt" | "dbg" | "unsigned"))
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
}

/// The numbers in a version, for ordering: `0-57` → [0, 57], `117+deb12` → [117, 12].
fn numbers(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Downloads and unpacks `package` into `dir` (`tree/`, then the `ready` stamp).
fn unpack(package: &str, dir: &Path) -> anyhow::Result<Kernel> {
    let _ = fs::remove_dir_all(dir);
    let download = dir.join("download");
    fs::create_dir_all(&download)?;
    eprintln!("xtask: downloading {package} from Debian's package registry (once)");
    exec(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&download),
    )?;
    let deb = fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let tree = dir.join("tree");
    exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    fs::remove_dir_all(&download)?;
    let release = fs::read_dir(tree.join("lib/modules"))
        .context("the package has no lib/modules")?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("the package has no module tree")?;
    let k = Kernel {
        package: package.to_string(),
        release,
        tree,
    };
    if !k.vmlinuz().is_file() {
        bail!("{package} has no {}", k.vmlinuz().display());
    }
    exec(
        Command::new("depmod")
            .arg("-b")
            .arg(&k.tree)
            .arg(&k.release),
    )?;
    fs::write(dir.join("ready"), format!("{}\n", k.release))?;
    Ok(k)
}

/// Removes other builds of `series` from the cache.
fn prune(cache: &Path, series: &str, keep: &str) {
    let prefix = format!("linux-image-{series}.");
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != keep && generic(&name, &prefix) {
            eprintln!("xtask: removing the older {name} from the kernel cache");
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generic_flavours_of_the_series_are_candidates() {
        let p61 = "linux-image-6.1.";
        assert!(generic("linux-image-6.1.0-57-amd64", p61));
        for no in [
            "linux-image-6.1.0-57-cloud-amd64",
            "linux-image-6.1.0-57-rt-amd64",
            "linux-image-6.1.0-57-amd64-dbg",
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-amd64",
        ] {
            assert!(!generic(no, p61), "{no}");
        }
        let p612 = "linux-image-6.12.";
        assert!(generic("linux-image-6.12.117+deb12-amd64", p612));
        assert!(!generic("linux-image-6.12.117+deb12-rt-amd64", p612));
        assert!(!generic("linux-image-6.12.117+deb12-cloud-amd64", p612));
    }

    #[test]
    fn versions_order_by_their_numbers() {
        let mut v = ["0-9", "0-57", "0-100"].map(numbers);
        v.sort();
        assert_eq!(v[2], [0, 100]);
        assert!(numbers("117+deb12") > numbers("99+deb12"));
    }
}
