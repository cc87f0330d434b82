//! burn-train's dashboard on a terminal, plain lines elsewhere: the real `lavin-train` under a
//! pseudo-terminal (util-linux's `script`) draws the dashboard on the alternate screen and
//! leaves it before its last lines; piped, or with `--no-tui`, it prints plain lines. Keys sent
//! through the terminal (Ctrl-C; the dashboard's `q` then `s` or `k`) stop the run after a step
//! with a checkpoint and exit 0.

#![cfg(all(feature = "tui", target_os = "linux"))]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The alternate screen, on and off (what the dashboard enters and leaves).
const ALT_ON: &str = "\x1b[?1049h";
const ALT_OFF: &str = "\x1b[?1049l";
const LIMIT: Duration = Duration::from_secs(120);

/// The default run's data and base, cut to a few seconds of work.
fn args(out: &Path, max_steps: u64) -> Vec<String> {
    let mut a: Vec<String> = [
        "--backend",
        "flex",
        "--train-limit",
        "96",
        "--val-limit",
        "4",
        "--batch-size",
        "4",
        "--seed",
        "3",
        "--max-steps",
    ]
    .map(String::from)
    .to_vec();
    a.push(max_steps.to_string());
    a.push("--output-dir".into());
    a.push(out.display().to_string());
    a
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `lavin-train` on a 120x40 pseudo-terminal; its output (stdout and stderr, as a terminal
/// shows them) collected as it comes.
struct Pty {
    child: Child,
    keys: ChildStdin,
    seen: Arc<Mutex<Vec<u8>>>,
    reader: JoinHandle<()>,
}

impl Pty {
    fn spawn(args: &[String]) -> Self {
        let mut line = String::from("stty cols 120 rows 40; exec ");
        line.push_str(&quote(env!("CARGO_BIN_EXE_lavin-train")));
        for a in args {
            line.push(' ');
            line.push_str(&quote(a));
        }
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("TERM", "xterm-256color")
            .env_remove("WORLD_SIZE")
            .env_remove("RANK")
            .env_remove("MASTER_ADDR")
            .env_remove("MASTER_PORT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("util-linux `script` (Debian: bsdutils) runs the test under a terminal");
        let keys = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            keys,
            seen,
            reader,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Wait until the output holds `needle`.
    fn wait_for(&mut self, needle: &str) {
        let t0 = Instant::now();
        while !self.text().contains(needle) {
            if t0.elapsed() > LIMIT || self.child.try_wait().unwrap().is_some() {
                let _ = self.child.kill();
                panic!("no {needle:?} in the output:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, keys: &[u8]) {
        self.keys.write_all(keys).unwrap();
        self.keys.flush().unwrap();
    }

    /// Wait for the end; the exit status and everything the terminal showed.
    fn finish(mut self) -> (ExitStatus, String) {
        let t0 = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if t0.elapsed() > LIMIT {
                let _ = self.child.kill();
                panic!("still running after {LIMIT:?}:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(self.keys);
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let text = String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned();
        (status, text)
    }
}

/// The output after the dashboard has left the alternate screen.
fn after_dashboard(text: &str) -> &str {
    let off = text
        .rfind(ALT_OFF)
        .expect("the dashboard leaves the alternate screen");
    &text[off..]
}

#[test]
fn dashboard_on_a_terminal_plain_lines_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let shown = tmp.path().join("tui");
    let (status, text) = Pty::spawn(&args(&shown, 2)).finish();
    assert!(status.success(), "{status}:\n{text}");
    assert!(text.contains(ALT_ON), "no dashboard:\n{text:?}");
    // What the run printed while the dashboard was up comes after it, on the normal screen.
    let rest = after_dashboard(&text);
    assert!(rest.contains("max_steps 2 reached"), "{text:?}");
    assert!(rest.contains("== lavin-train summary"), "{text:?}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(!lavin_train::checkpoint::list(&shown).is_empty());

    // Piped: no terminal, plain lines.
    let piped = tmp.path().join("piped");
    let out = Command::new(env!("CARGO_BIN_EXE_lavin-train"))
        .args(args(&piped, 2))
        .env_remove("WORLD_SIZE")
        .env_remove("RANK")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "{stderr:?}"
    );
    assert!(stderr.contains("lavin-train: step 1/"), "{stderr}");
    assert!(stderr.contains("max_steps 2 reached"), "{stderr}");

    // `--no-tui` on a terminal: plain lines too.
    let plain = tmp.path().join("plain");
    let mut a = args(&plain, 2);
    a.push("--no-tui".into());
    let (status, text) = Pty::spawn(&a).finish();
    assert!(status.success(), "{status}:\n{text}");
    assert!(!text.contains(ALT_ON), "{text:?}");
    assert!(text.contains("max_steps 2 reached"), "{text}");
}

/// Start a long run on a terminal, wait for its first step on the dashboard, press `keys`
/// (each after a pause: the dashboard reads keys every 100 ms); it stops after a step, with a
/// checkpoint, and exits 0.
fn stops_with_a_checkpoint(keys: &[&[u8]]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut a = args(&out, 10_000);
    a.extend(["--epochs".into(), "100".into()]);
    let mut pty = Pty::spawn(&a);
    pty.wait_for(ALT_ON);
    let t0 = Instant::now();
    while lavin_train::report::read_metrics(&out.join("metrics.jsonl"))
        .map_or(true, |m| m.is_empty())
    {
        assert!(t0.elapsed() < LIMIT, "no step logged:\n{}", pty.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    for k in keys {
        std::thread::sleep(Duration::from_millis(300));
        pty.send(k);
    }
    let (status, text) = pty.finish();
    assert!(status.success(), "{status}:\n{text}");
    let rest = after_dashboard(&text);
    // The dashboard says so when it closes before the run has stopped (a Ctrl-C may reach the
    // run first: it reads the same flag).
    if keys != [b"\x03".as_slice()] {
        assert!(
            rest.contains("stopping after the current optimizer step"),
            "{text:?}"
        );
    }
    assert!(
        rest.contains("interrupted after step") && rest.contains("--resume"),
        "{text:?}"
    );
    assert!(!text.contains("panicked"), "{text}");
    let cks = lavin_train::checkpoint::list(&out);
    let (step, _) = cks.last().expect("a checkpoint");
    assert!((1..10_000).contains(step), "{cks:?}");
}

#[test]
fn ctrl_c_on_the_dashboard_checkpoints_and_exits_0() {
    stops_with_a_checkpoint(&[b"\x03"]);
}

#[test]
fn the_dashboards_quit_checkpoints_and_exits_0() {
    stops_with_a_checkpoint(&[b"q", b"s"]);
}

#[test]
fn the_dashboards_kill_checkpoints_and_exits_0_too() {
    stops_with_a_checkpoint(&[b"q", b"k"]);
}
