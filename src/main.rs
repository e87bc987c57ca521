//! The `backset` binary: command line, admin server and offline tools.

mod api;
mod bench;
mod demo;
mod lbquery;
mod offline;
mod progress;
mod server;

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
    /// Restore a backup set into a new archive directory (offline), to its latest point, an element's end point
    /// (`--backup-element-id`) or a transaction (`--restore-snapshot`); or report its elements or transactions.
    ///
    /// Example: `backset restore --restore-dir /tmp/restored --restore-snapshot 4484 /backups/set1`
    Restore(offline::RestoreArgs),
    /// Validate a backup set (offline): every metadata file, the chain, and every data byte against its hashes.
    /// Prints each defect with its element and file; exits 1 when there is one.
    ///
    /// Example: `backset check /backups/set1`
    Check(offline::CheckArgs),
    /// Inspect an archive directory that no SM is using: its data, its metadata, its checksums.
    ///
    /// Example: `backset archive info /tmp/restored`
    #[command(subcommand)]
    Archive(offline::ArchiveCommand),
    /// Run the admin server (nuoadmin's REST API and a data API) with the embedded reference database until SIGINT
    /// or SIGTERM.
    ///
    /// Example: `backset serve --data-dir /var/lib/backset --sms 2 --storage-groups 2`
    Serve(server::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Bench(cmd) => bench::run(&cmd),
        Command::Restore(args) => offline::run_restore(&args),
        Command::Check(args) => offline::run_check(&args),
        Command::Archive(cmd) => offline::run_archive(&cmd),
        Command::Serve(args) => server::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`backset archive dump DIR | head`) is not an error.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backset: error: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}

/// Whether the error is a write to a closed pipe.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
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
