//! `lavin-infer`: LaVIN evaluation, scoring, chat and serving. See `lavin-infer --help`.

use clap::Parser;

fn main() {
    let cli = lavin_infer::cli::Cli::parse();
    if let Err(e) = lavin_infer::cli::run(cli) {
        eprintln!("error: {}", lavin_infer::error_chain(e.as_ref()));
        std::process::exit(1);
    }
}
