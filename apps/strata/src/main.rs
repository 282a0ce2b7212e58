//! `strata`: the Strata node's command-line entry point.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// A peer-to-peer, end-to-end encrypted messaging node.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node's main job on embedded defaults.
    Demo,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo => anyhow::bail!("the demo is not built yet"),
    }
}
