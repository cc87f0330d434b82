//! The API through the official `openai` Python client (tests/openai/test_openai_client.py):
//! the test starts the real `lavin-infer serve` binary with the bundled tiny model.
//!
//! The Python comes from `LAVIN_PYTHON` (.ci/run makes a venv with a pinned `openai`). Under CI
//! (`CI` set) a missing `LAVIN_PYTHON` fails the test; elsewhere, without it, `python3` is tried
//! and the test is skipped (saying why) when it cannot import `openai`.

use std::path::Path;
use std::process::Command;

#[test]
fn official_openai_client_against_the_server() {
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let python = match std::env::var("LAVIN_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ if in_ci => panic!(
            "LAVIN_PYTHON is not set: under CI it must name a Python with the `openai` package \
             (.ci/run creates that venv and sets it)"
        ),
        _ => "python3".to_string(),
    };
    let has_openai = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_openai {
        assert!(
            !in_ci,
            "{python} cannot import `openai` (pip install openai into the venv .ci/run makes)"
        );
        eprintln!(
            "SKIPPED: {python} cannot import `openai`; set LAVIN_PYTHON to a Python that has it \
             (e.g. python3 -m venv v && v/bin/pip install openai) to run this test"
        );
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai");
    let status = Command::new(&python)
        .args(["-m", "unittest", "-v", "test_openai_client"])
        .current_dir(&dir)
        .env("LAVIN_INFER_BIN", env!("CARGO_BIN_EXE_lavin-infer"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        status.success(),
        "the openai client test failed ({status}); its output is above"
    );
}
