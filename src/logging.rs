//! The log: every `tracing` event (the engine's warnings and errors, its hot copy start and end lines, `serve`'s own
//! lines) on stderr, through `tracing-subscriber`.
//!
//! - `serve`: level `info` by default, each line with its UTC time; `--log-format json` makes every line of stderr
//!   one JSON object (`timestamp`, `level`, `target`, `message` and the event's fields at the top level).
//! - Every other command: level `warn` by default (their results are on stdout; a warning, such as a failed clean-up
//!   after a failed restore, must not pass silently), text without a time.
//! - `RUST_LOG` overrides the level: `debug`, or per target `backset_engine=debug,warn` (the `target=level`
//!   directives of `tracing-subscriber`'s `Targets`; span and field filters are not supported).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The environment variable that overrides the default level.
pub const LOG_ENV: &str = "RUST_LOG";

/// `--log-format`.
#[derive(clap::ValueEnum, serde::Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `<time>  <LEVEL> <message> <field>=<value> ...`.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// Whether the installed log writes JSON: then the binary's last error goes through it too, so that stderr holds
/// JSON lines only.
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the log on stderr: `format`, level from `RUST_LOG` else `default`, with or without each line's time.
/// A second call does nothing.
pub fn init(format: LogFormat, default: LevelFilter, with_time: bool) {
    let (filter, bad) = match std::env::var(LOG_ENV) {
        Ok(v) if !v.trim().is_empty() => match Targets::from_str(v.trim()) {
            Ok(t) => (t, None),
            Err(e) => (Targets::new().with_default(default), Some((v, e))),
        },
        _ => (Targets::new().with_default(default), None),
    };
    let layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text if with_time => {
            tracing_subscriber::fmt::layer().with_target(false).with_writer(std::io::stderr).boxed()
        }
        LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_target(false).without_time().with_writer(std::io::stderr).boxed()
        }
    };
    if tracing_subscriber::registry().with(layer.with_filter(filter)).try_init().is_ok() {
        JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    }
    if let Some((value, e)) = bad {
        tracing::warn!(
            "{LOG_ENV}={value:?} is not a level or a list of target=level directives ({e}); logging at {default}"
        );
    }
}

/// Whether the installed log writes JSON (then the error that ends the command is logged, not printed).
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}
