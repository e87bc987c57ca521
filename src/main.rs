//! The `backset` binary: command line, admin server and offline tools.

// Every `print!` and `println!` of the binary goes through [`out::print`]: these definitions come before the modules,
// so they shadow std's macros in all of them. A write to a closed pipe (`backset check SET | head -2`) ends the
// process quietly with status 0, like a writer's `BrokenPipe` error returned to `main`'s error boundary; std's macros
// would panic instead (exit 101). `eprint!` and `eprintln!` ignore a failed write: stderr is where it would be told.
#[allow(unused_macros)] // none yet: a `print!` added later goes through it too
macro_rules! print {
    ($($arg:tt)*) => { $crate::out::print(format_args!($($arg)*)) };
}
macro_rules! println {
    () => { $crate::out::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::print(format_args!("{}\n", format_args!($($arg)*))) };
}
#[allow(unused_macros)] // as `print!`
macro_rules! eprint {
    ($($arg:tt)*) => { $crate::out::eprint(format_args!($($arg)*)) };
}
macro_rules! eprintln {
    () => { $crate::out::eprint(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::eprint(format_args!("{}\n", format_args!($($arg)*))) };
}

mod api;
mod bench;
mod cli;
mod config;
mod demo;
mod error_bodies;
mod logging;
mod offline;
mod paging;
mod progress;
mod server;
mod text;
mod usage;

use std::process::ExitCode;

// The process filter parser lives in the library (the fuzz crate compiles it alone; see its docs).
use backset::process_filter;
use clap::{Parser, Subcommand};

/// Backset: hot copies of a running database into backup sets, restore to any transaction, offline validation.
#[derive(Parser, Debug)]
#[command(name = "backset", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// nuocmd's place for the client options (before the command); each client verb also takes them.
    #[command(flatten)]
    client: cli::LeadingClientArgs,
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
    /// Operations on a whole backup set: `copy` (between a directory and object storage), `gc` (a set on object
    /// storage).
    ///
    /// Example: `backset set gc s3://backups/demo/2026-w49`
    #[command(subcommand)]
    Set(offline::SetCommand),
    /// Inspect an archive directory that no SM is using: its data, its metadata, its checksums.
    ///
    /// Example: `backset archive info /tmp/restored`
    #[command(subcommand)]
    Archive(offline::ArchiveCommand),
    /// Run the admin server (nuoadmin's REST API and a data API) with the embedded reference database until SIGINT
    /// or SIGTERM.
    ///
    /// Example: `backset serve --data-dir /var/lib/backset --sms 2 --storage-groups 2`
    Serve(server::settings::Args),
    /// Start a hot copy (nuocmd's `hotcopy database`) through the admin server.
    ///
    /// Example: `backset hotcopy database --db-name demo --type full --backup-dirs 0 /backups/set1 --timeout 600`
    #[command(subcommand)]
    Hotcopy(cli::HotcopyCommand),
    /// Read from the admin server: `hotcopy-status`, `hotcopy-info`, `processes`.
    ///
    /// Example: `backset get hotcopy-status --coordinator-start-id 1 --hotcopy-id <ID>`
    #[command(subcommand)]
    Get(cli::GetCommand),
    /// Show the hot copies of a database, human readable: `hotcopy-info`.
    ///
    /// Example: `backset show hotcopy-info --db-name demo`
    #[command(subcommand)]
    Show(cli::ShowCommand),
    /// Cancel a running hot copy: `hotcopy`.
    ///
    /// Example: `backset cancel hotcopy --coordinator-start-id 1 --hotcopy-id <ID>`
    #[command(subcommand)]
    Cancel(cli::CancelCommand),
    /// Print a shell completion script for bash, zsh or fish.
    ///
    /// Example: `backset completion bash > /etc/bash_completion.d/backset`
    Completion(CompletionArgs),
}

/// Options of `backset completion`.
#[derive(clap::Args, Debug)]
struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

/// The shells `backset completion` writes for.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum Shell {
    /// bash (source it, or put it in bash-completion's directory).
    Bash,
    /// zsh (put it as `_backset` in a directory of `$fpath`).
    Zsh,
    /// fish (put it as `backset.fish` in `~/.config/fish/completions/`).
    Fish,
}

/// Prints the completion script of `shell` for the whole command line.
fn completion(args: &CompletionArgs) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "backset", &mut script);
    print!("{}", String::from_utf8_lossy(&script));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` installs its log once its options (command line and config file) are known.
    if !matches!(cli.command, Command::Serve(_)) {
        logging::init(logging::LogFormat::Text, tracing_subscriber::filter::LevelFilter::WARN, false);
    }
    let lead = &cli.client;
    let no_server = |name: &str, run: &dyn Fn() -> anyhow::Result<()>| lead.refuse_for(name).and_then(|()| run());
    let result = match cli.command {
        Command::Demo(args) => no_server("demo", &|| demo::run(&args)),
        Command::Bench(cmd) => no_server("bench", &|| bench::run(&cmd)),
        Command::Restore(args) => no_server("restore", &|| offline::run_restore(&args)),
        Command::Check(args) => no_server("check", &|| offline::run_check(&args)),
        Command::Archive(cmd) => no_server("archive", &|| offline::run_archive(&cmd)),
        Command::Set(cmd) => no_server("set", &|| offline::run_set(&cmd)),
        Command::Serve(args) => no_server("serve", &|| server::startup::run(&args)),
        Command::Completion(args) => no_server("completion", &|| completion(&args)),
        Command::Hotcopy(cli::HotcopyCommand::Database(args)) => {
            cli::hotcopy_database(&args.client.with_leading(lead), &args)
        }
        Command::Get(cli::GetCommand::HotcopyStatus(args)) => {
            cli::get_hotcopy_status(&args.client.with_leading(lead), &args)
        }
        Command::Get(cli::GetCommand::HotcopyInfo(args)) => {
            cli::get_hotcopy_info(&args.client.with_leading(lead), &args)
        }
        Command::Get(cli::GetCommand::Processes(args)) => cli::get_processes(&args.client.with_leading(lead), &args),
        Command::Show(cli::ShowCommand::HotcopyInfo(args)) => {
            cli::show_hotcopy_info(&args.client.with_leading(lead), &args)
        }
        Command::Cancel(cli::CancelCommand::Hotcopy(args)) => {
            cli::cancel_hotcopy(&args.client.with_leading(lead), &args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`backset archive dump DIR | head`) is not an error.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        // A mistake on the command line that clap could not see: clap's exit code.
        Err(e) if e.downcast_ref::<usage::UsageError>().is_some() => {
            if logging::json() {
                tracing::error!(usage = true, "{e}");
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(2)
        }
        Err(e) => {
            if logging::json() {
                tracing::error!("{}", chain(&e));
            } else {
                eprintln!("backset: error: {}", chain(&e));
            }
            ExitCode::from(1)
        }
    }
}

/// Standard output and error for the `print!` family of macros above.
mod out {
    use std::io::Write;

    /// Writes to stdout; a closed pipe ends the process with status 0, any other failure with status 1.
    pub fn print(args: std::fmt::Arguments<'_>) {
        if let Err(e) = std::io::stdout().lock().write_fmt(args) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprint(format_args!("backset: error: write to standard output: {e}\n"));
            std::process::exit(1);
        }
    }

    /// Writes to stderr, ignoring a failure (there is nowhere left to report it).
    pub fn eprint(args: std::fmt::Arguments<'_>) {
        let _ = std::io::stderr().lock().write_fmt(args);
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
