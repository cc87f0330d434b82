//! `lavin-train`: train LaVIN's adapters (no sub-command), `bench`, or `pretrain-base`.

use clap::Parser;
use lavin_train::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // On a CPU worker thread: see `lavin_model::backends::on_worker_thread`.
    let result = lavin_model::backends::on_worker_thread(|| match &cli.command {
        None => lavin_train::run::run(&cli.train, &Default::default()).map(|_| ()),
        Some(Command::Bench(b)) => lavin_train::bench::run(b).map(|_| ()),
        Some(Command::PretrainBase(p)) => pretrain(p),
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(feature = "ndarray")]
fn pretrain(p: &lavin_train::pretrain::PretrainArgs) -> anyhow::Result<()> {
    lavin_train::pretrain::run(p)?;
    Ok(())
}

#[cfg(not(feature = "ndarray"))]
fn pretrain(_: &lavin_train::pretrain::PretrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("pretrain-base needs the ndarray feature")
}
