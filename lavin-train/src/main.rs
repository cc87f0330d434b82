//! `lavin-train`: train LaVIN's adapters (no sub-command) or `bench` a training step.

use clap::Parser;
use lavin_train::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // On a CPU worker thread: see `lavin_backends::on_worker_thread`.
    let result = lavin_backends::on_worker_thread(|| match &cli.command {
        None => {
            let opts = lavin_train::run::RunOptions {
                train_limit: cli.train.train_limit.unwrap_or(0),
                val_limit: cli.train.val_limit.unwrap_or(0),
            };
            lavin_train::run::run(&cli.train, &opts).map(|_| ())
        }
        Some(Command::Bench(b)) => lavin_train::bench::run(b).map(|_| ()),
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
