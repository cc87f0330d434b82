//! `lavin-infer parity`: the parity check lives in the development tools (`lavin-tools`), not
//! in this binary; the old spelling runs it with the same arguments and exit status.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

/// Runs `lavin-tools parity ARGS`: through cargo when this binary was started by `cargo run`
/// (same profile, same backend features), else the `lavin-tools` binary next to this one.
pub fn parity(args: &[OsString]) -> anyhow::Result<()> {
    let mut cmd = match std::env::var_os("CARGO") {
        Some(cargo) => {
            let mut c = Command::new(cargo);
            let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
            c.args([
                "run",
                "--quiet",
                "--manifest-path",
                manifest,
                "-p",
                "lavin-tools",
            ]);
            if !cfg!(debug_assertions) {
                c.arg("--release");
            }
            let features: Vec<&str> = lavin_backends::compiled_backends()
                .into_iter()
                .map(|b| b.cargo_feature())
                .collect();
            c.args(["--no-default-features", "--features", &features.join(",")]);
            c.arg("--");
            c
        }
        None => Command::new(sibling_tools()?),
    };
    cmd.arg("parity").args(args);
    let status = cmd
        .status()
        .with_context(|| format!("parity: cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// `lavin-tools` in this executable's folder.
fn sibling_tools() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("parity: where is this binary")?;
    let tools = exe.with_file_name(format!("lavin-tools{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        tools.is_file(),
        "parity is a development tool: build it with `cargo build --release -p lavin-tools` \
         (looked for {}), or run `cargo run --release -p lavin-tools -- parity DIR`",
        tools.display()
    );
    Ok(tools)
}
