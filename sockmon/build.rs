//! Builds the kernel programs (`sockmon-ebpf`) for the BPF target with the
//! nightly toolchain and `bpf-linker`, and leaves the object in `OUT_DIR` for
//! `include_bytes!`. `cargo xtask setup` installs both; when `bpf-linker` is
//! not on `PATH` the copy `xtask` keeps in its cache is used.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    // The kernel crate is not a (lib) dependency, so say what it is built from.
    println!("cargo:rerun-if-changed=../sockmon-common/src");
    add_cached_bpf_linker_to_path();
    // aya-build relays the nested cargo's stderr as warnings; keep it to errors.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .ok_or_else(|| anyhow!("sockmon has no parent directory"))?
        .join("sockmon-ebpf");
    let root = root.to_str().context("non-UTF-8 path to sockmon-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sockmon-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the kernel programs failed; run `cargo xtask setup` to install the nightly rust-src component and bpf-linker")
}

/// `xtask setup` installs bpf-linker under `$XDG_CACHE_HOME/sockmon/tools/bin`
/// (or `~/.cache/...`). Put it on PATH for the nested cargo if nothing else is.
fn add_cached_bpf_linker_to_path() {
    let on_path = env::var_os("PATH")
        .map(|p| env::split_paths(&p).any(|d| d.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if on_path {
        return;
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    let Some(bin) = cache.map(|c| c.join("sockmon/tools/bin")) else {
        return;
    };
    if bin.join("bpf-linker").is_file() {
        let mut paths: Vec<PathBuf> = vec![bin];
        if let Some(p) = env::var_os("PATH") {
            paths.extend(env::split_paths(&p));
        }
        if let Ok(joined) = env::join_paths(paths) {
            // SAFETY: build scripts are single-threaded at this point.
            unsafe { env::set_var("PATH", joined) };
        }
    }
}
