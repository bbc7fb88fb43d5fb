//! `cargo xtask watch`: the quickest way from a clone to a live view.

use std::process::Command;

use crate::{
    run::{cargo, exec, is_root, root},
    setup,
};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    setup::all()?;
    exec(cargo().args(["build", "--release", "--package", "sockmon"]))?;
    let bin = root().join("target/release/sockmon");
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg(&bin);
        c
    };
    cmd.arg("watch").args(args);
    // Ctrl-C reaches sockmon too (same process group); its clean exit is ours.
    exec(&mut cmd)
}
