//! The guest's initramfs: busybox, the virtio and 9p modules of the guest
//! kernel, the module-loader helper and `/init` (`init.sh`).
//!
//! Why so small: the guest needs nothing of its own but a way to reach this
//! machine's root (virtio-9p, shared read-only): every tool and test binary
//! comes from there. The archive is written here as an uncompressed `newc`
//! cpio (the kernel unpacks it as is; a few MB, so compressing would only
//! cost time), with modules decompressed (`.ko.xz`, `.ko.zst`), since
//! busybox's `insmod` loads plain `.ko` files only.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::debian::Kernel;

/// What the guest needs to mount the shared root, in load order (a module
/// absent from the package is built in).
const MODULES: &[&str] = &[
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "fs/fscache/fscache",
    "fs/netfs/netfs",
    "net/9p/9pnet",
    "net/9p/9pnet_virtio",
    "fs/9p/9p",
];

const INIT: &str = include_str!("init.sh");
const MODPROBE: &str = include_str!("modprobe-host.sh");

/// Where busybox-static installs its binary.
const BUSYBOX: &str = "/bin/busybox";

/// Writes the initramfs for `k` to `out`. `/init` runs `script plan` with
/// bash, chrooted into the shared root; `keep` are host paths the guest
/// must see even if they lie under `/tmp` or `/run` (its own tmpfs there).
pub fn build(
    k: &Kernel,
    script: &Path,
    plan: &Path,
    keep: &[PathBuf],
    out: &Path,
) -> anyhow::Result<()> {
    let mut a = Cpio::default();
    for d in [
        "bin", "lib", "lib/mod", "proc", "sys", "dev", "host", "tmp", "keep",
    ] {
        a.dir(d);
    }
    let busybox = fs::read(BUSYBOX).with_context(|| format!("{BUSYBOX} (busybox-static)"))?;
    a.file("bin/busybox", 0o755, &busybox);
    let mut order = Vec::new();
    for m in MODULES {
        let Some(bytes) = module(&k.modules().join("kernel"), m)? else {
            continue;
        };
        let name = format!("{}.ko", m.rsplit('/').next().unwrap_or(m));
        a.file(&format!("lib/mod/{name}"), 0o644, &bytes);
        order.push(name);
    }
    a.file("modules.order", 0o644, order.join(" ").as_bytes());
    let tree = path_str(&k.tree)?;
    a.file(
        "bin/modprobe-host",
        0o755,
        MODPROBE.replace("@TREE@", tree).as_bytes(),
    );
    let keep: Vec<&str> = keep.iter().map(|p| path_str(p)).collect::<Result<_, _>>()?;
    let init = INIT
        .replace("@KEEP@", &keep.join(" "))
        .replace("@SCRIPT@", path_str(script)?)
        .replace("@PLAN@", path_str(plan)?);
    a.file("init", 0o755, init.as_bytes());
    let bytes = a.finish();
    fs::File::create(out)
        .and_then(|mut f| f.write_all(&bytes))
        .with_context(|| format!("writing {}", out.display()))
}

/// A path the guest's shell scripts can use as one word.
fn path_str(p: &Path) -> anyhow::Result<&str> {
    match p.to_str() {
        Some(s)
            if s.starts_with('/')
                && !s.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) =>
        {
            Ok(s)
        }
        _ => bail!(
            "{} must be an absolute path without spaces or quotes",
            p.display()
        ),
    }
}

/// The module `m` (path without extension under `kernel/`), decompressed;
/// `None` if the package does not have it.
fn module(dir: &Path, m: &str) -> anyhow::Result<Option<Vec<u8>>> {
    for (ext, tool) in [
        (".ko", None),
        (".ko.xz", Some("xz")),
        (".ko.zst", Some("zstd")),
    ] {
        let f = dir.join(format!("{m}{ext}"));
        if !f.is_file() {
            continue;
        }
        let Some(tool) = tool else {
            return Ok(Some(fs::read(&f)?));
        };
        let out = Command::new(tool)
            .arg("-dc")
            .arg(&f)
            .output()
            .with_context(|| format!("{tool} -dc {}", f.display()))?;
        if !out.status.success() {
            bail!("{tool} -dc {} failed: {}", f.display(), out.status);
        }
        return Ok(Some(out.stdout));
    }
    Ok(None)
}

/// A `newc` cpio archive in memory.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, data);
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut a = Cpio::default();
        a.dir("bin");
        a.file("bin/x", 0o755, b"hello");
        let b = a.finish();
        assert_eq!(&b[..6], b"070701");
        assert!(b.len().is_multiple_of(4));
        // First entry: header (110 bytes) + "bin\0" (4) = 114, padded to 116.
        assert_eq!(&b[116..122], b"070701");
        let mode = u32::from_str_radix(std::str::from_utf8(&b[116 + 14..116 + 22]).unwrap(), 16);
        assert_eq!(mode.unwrap(), 0o100_755);
        assert!(b.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn paths_with_shell_metacharacters_are_refused() {
        assert!(path_str(Path::new("/work/a b")).is_err());
        assert!(path_str(Path::new("relative")).is_err());
        assert_eq!(path_str(Path::new("/work/x")).unwrap(), "/work/x");
    }
}
