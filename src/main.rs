//! The `backset` binary: command line, admin server and offline tools.

mod bench;
mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Backset: hot copies of a running database into backup sets, restore to any transaction, offline validation.
#[derive(Parser, Debug)]
#[command(name = "backset", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole cycle on the embedded default: a live database, full, journal, incremental and journal hot
    /// copies into a backup set, a restore to a transaction in the middle (proven equal to the acknowledged state),
    /// and a check of the set. Leaves its files in `./backset-demo` (or `--dir`).
    ///
    /// Example: `backset demo --dir /tmp/backset-demo`
    Demo(demo::Args),
    /// Measure the copier on this machine's disks.
    #[command(subcommand)]
    Bench(bench::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Bench(cmd) => bench::run(&cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backset: error: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The whole error chain on one line, leaving out a cause whose text its parent already includes (library errors
/// carry their OS error in their own message).
fn chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg = format!("{msg}: {text}");
        }
    }
    msg
}
