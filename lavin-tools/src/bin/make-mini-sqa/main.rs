//! `make-mini-sqa`: writes the bundled mini ScienceQA (`data/mini-sqa/`), deterministically.
//!
//! ```text
//! make-mini-sqa --out DIR [--seed N]     generate into DIR
//! make-mini-sqa --check DIR [--seed N]   regenerate into a temp dir, compare with DIR byte for
//!                                        byte; exit 1 on any difference
//! ```
//!
//! The dataset is small (1,600 problems, half with 224x224 pictures of flat shapes) and
//! learnable by the tiny preset: see `data/mini-sqa/README.md` for what it contains.

mod check;
mod dataset;
mod facts;
mod kinds;
mod png;
mod rng;
mod scene;
mod write;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The seed of the committed dataset.
const DEFAULT_SEED: u64 = 20230524;

const USAGE: &str = "usage: make-mini-sqa (--out DIR | --check DIR) [--seed N]

  --out DIR     write the dataset into DIR (created if needed; a previous output there is
                replaced, any other non-empty folder is refused)
  --check DIR   regenerate into a temporary folder and compare with DIR byte for byte;
                exits with status 1 and lists the differences if they differ
  --seed N      seed (unsigned 64-bit integer, default 20230524, the committed dataset's)";

enum Mode {
    Out(PathBuf),
    Check(PathBuf),
}

struct Args {
    mode: Mode,
    seed: u64,
}

/// Parses the command line; `Err` carries the message to print (usage included).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut mode = None;
    let mut seed = DEFAULT_SEED;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--out" | "--check" => {
                if mode.is_some() {
                    return Err(format!("give one of --out / --check, once\n\n{USAGE}"));
                }
                let dir = PathBuf::from(value(&a)?);
                mode = Some(if a == "--out" {
                    Mode::Out(dir)
                } else {
                    Mode::Check(dir)
                });
            }
            "--seed" => {
                let v = value("--seed")?;
                seed = v.parse().map_err(|_| {
                    format!("--seed: '{v}' is not an unsigned 64-bit integer\n\n{USAGE}")
                })?;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument '{other}'\n\n{USAGE}")),
        }
    }
    let mode = mode.ok_or_else(|| format!("give --out DIR or --check DIR\n\n{USAGE}"))?;
    Ok(Args { mode, seed })
}

/// Makes `dir` ready for a fresh output: creates it, or clears a previous output of ours.
/// Refuses a non-empty folder that is not ours, so a typo cannot wipe unrelated files.
fn prepare_out_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    if dir.exists() {
        let mut entries = fs::read_dir(dir).map_err(|e| format!("{shown}: {e}"))?;
        if entries.next().is_some() {
            let stats = fs::read_to_string(dir.join("stats.json")).unwrap_or_default();
            if !stats.contains("\"make-mini-sqa\"") {
                return Err(format!(
                    "{shown} is not empty and holds no previous make-mini-sqa output \
                     (stats.json); refusing to write there"
                ));
            }
            for name in write::OUTPUTS {
                let p = dir.join(name);
                let res = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else if p.exists() {
                    fs::remove_file(&p)
                } else {
                    Ok(())
                };
                res.map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
    }
    fs::create_dir_all(dir).map_err(|e| format!("{shown}: {e}"))
}

fn generate(dir: &Path, seed: u64) -> Result<(), String> {
    let ds = dataset::build(seed);
    write::write_all(&ds, seed, dir).map_err(|e| format!("writing {}: {e}", dir.display()))
}

fn run(args: Args) -> Result<ExitCode, String> {
    match args.mode {
        Mode::Out(dir) => {
            prepare_out_dir(&dir)?;
            generate(&dir, args.seed)?;
            eprintln!("wrote {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Mode::Check(dir) => {
            if !dir.is_dir() {
                return Err(format!("--check: {} is not a folder", dir.display()));
            }
            let tmp = check::TempDir::new().map_err(|e| format!("temp dir: {e}"))?;
            generate(&tmp.0, args.seed)?;
            let diffs = check::compare(&tmp.0, &dir).map_err(|e| format!("comparing: {e}"))?;
            if diffs.is_empty() {
                eprintln!("{} matches seed {} byte for byte", dir.display(), args.seed);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "{} differs from a fresh generation with seed {} ({} differences):",
                    dir.display(),
                    args.seed,
                    diffs.len()
                );
                for d in diffs.iter().take(20) {
                    eprintln!("  {d}");
                }
                if diffs.len() > 20 {
                    eprintln!("  ...");
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) if msg == USAGE => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("make-mini-sqa: {msg}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("make-mini-sqa: {msg}");
            ExitCode::from(2)
        }
    }
}
