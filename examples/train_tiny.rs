//! Train the adapters of the bundled tiny LaVIN for a few steps from Rust code, then read the
//! summary: the same pipeline as `cargo run -p lavin-train --release`, cut short.
//!
//! ```bash
//! cargo run --release --example train_tiny
//! ```

use lavin_train::cli::TrainArgs;
use lavin_train::report::read_metrics;
use lavin_train::run::{run, RunOptions};

fn main() -> anyhow::Result<()> {
    let out = std::env::temp_dir().join("lavin-example-train-tiny");
    let args = TrainArgs {
        output_dir: Some(out.clone()),
        epochs: Some(2),
        ..TrainArgs::default() // everything else: the tiny preset's defaults
    };
    // 400 training examples (100 steps) and 40 val problems keep it to about half a minute.
    let summary = run(
        &args,
        &RunOptions {
            train_limit: 400,
            val_limit: 40,
        },
    )?;
    // Mean loss of the first and the last 10 steps (single batches are noisy).
    let losses: Vec<f64> = read_metrics(&out.join("metrics.jsonl"))?
        .iter()
        .map(|m| m.loss)
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let k = losses.len().min(10);
    println!(
        "loss {:.4} -> {:.4} (first / last {k} steps of {}), val accuracy {:.2} (chance {:.2}); outputs in {}",
        mean(&losses[..k]),
        mean(&losses[losses.len() - k..]),
        summary.steps,
        summary.val_accuracy.unwrap_or(f64::NAN),
        summary.chance_accuracy.unwrap_or(f64::NAN),
        out.display()
    );
    Ok(())
}
