//! `backset serve`: the admin server (axum on tokio) with the embedded reference store. nuoadmin's hot copy
//! endpoints, paths and JSON names, plus a data API for the reference store. See docs/CLI.md for every endpoint.
//!
//! Every answer is JSON; errors are `{"code": <status>, "message": ".."}`. Blocking engine calls (commits, hot copy
//! starts) run on tokio's blocking pool, so a slow request never stalls the others; a request waiting for a hot copy
//! to end (`timeoutSec`) holds no thread (it awaits the job's [`HotCopyManager::end_signal`]), and at most
//! [`WAIT_SHARE_DIVISOR`]'s share of the connections wait at once (503 past it). Connections are capped below the
//! descriptor limit ([`connection_cap`]) and closed when idle ([`CONNECTION_IDLE_TIMEOUT`]). SIGINT or SIGTERM cancels
//! the running hot copies (each leaves its set as it was), ends the waits, lets the open requests finish (at most
//! [`SHUTDOWN_DRAIN_TIMEOUT`]), closes the store durably (checkpoint) and exits 0; nothing of it runs on the blocking
//! pool, which clients can fill.
//!
//! The modules: [`settings`] (the options, from the command line and the config file), [`startup`] (from the
//! options to a listening server, and the shutdown), [`connections`] (the accept loop and its caps), [`http`] (the
//! plumbing every endpoint shares: errors, the body and query extractors, the token check), [`nuoadmin`] (the hot
//! copy and process endpoints), [`data`] (the reference store's data API), [`metrics`] (`GET /metrics`) and [`routes`]
//! (which joins them). The
//! limits and the state every request shares ([`App`]) are here.

mod connections;
mod data;
mod health;
mod http;
pub(crate) mod metrics;
mod nuoadmin;
mod routes;
pub mod settings;
pub mod startup;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use backset_engine::hotcopy::HotCopyManager;
use backset_format::limits::MAX_RECORD_PAYLOAD_BYTES;
use backset_refstore::limits::{MAX_OPS_PER_TXN, MAX_SMS};
use backset_refstore::Database;
use tokio::sync::watch;

/// Largest body of `POST .../transactions`: 32 MiB, twice what its operations may hold. A commit's keys and values
/// go into one journal record of at most `MAX_RECORD_PAYLOAD_BYTES` (16 MiB) per SM, and JSON escaping can double
/// them. (A transaction spread over several SMs' storage groups could hold more; it is split by its client.)
pub const MAX_TXN_BODY_BYTES: usize = 2 * MAX_RECORD_PAYLOAD_BYTES as usize;
/// Longest path a hot copy request names, bytes: Linux's `PATH_MAX`.
pub const PATH_MAX_BYTES: usize = 4096;
/// What a hot copy request's body may take for one archive it names: its entry in `backupSetDirs` or
/// `backupLocations` (an archive and a journal directory, each up to [`PATH_MAX_BYTES`], which JSON escaping can
/// double) and its id in `archiveIds`.
pub const HOTCOPY_BODY_PER_ARCHIVE_BYTES: usize = 2 * 2 * PATH_MAX_BYTES + 64;
/// What a hot copy request's body may take besides its archives: the default directory or location (two paths) and
/// the other fields.
pub const HOTCOPY_BODY_BASE_BYTES: usize = 2 * 2 * PATH_MAX_BYTES + 1024;
/// Largest body the server reads for any endpoint (a hot copy request naming [`MAX_SMS`] archives is the largest).
pub const MAX_BODY_BYTES: usize = max(MAX_TXN_BODY_BYTES, hot_copy_body_limit(MAX_SMS));

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// The largest body of a hot copy request to a server of `sms` SMs: 33 KiB for one SM.
pub const fn hot_copy_body_limit(sms: usize) -> usize {
    HOTCOPY_BODY_BASE_BYTES + sms * HOTCOPY_BODY_PER_ARCHIVE_BYTES
}

// A transaction of MAX_OPS_PER_TXN operations of the shortest JSON (`"k":"",`, 7 bytes) fits the body limit.
const _: () = assert!(MAX_OPS_PER_TXN * 7 <= MAX_TXN_BODY_BYTES);
/// Shortest bearer token `--auth-token-file` may hold: 16 characters (a shorter one is refused at start, as a usage
/// error).
pub const MIN_TOKEN_BYTES: usize = 16;
/// How long a shutdown waits for the cancelled hot copies to end.
pub const SHUTDOWN_JOBS_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the retained journal is measured for the warning.
pub const RETAINED_JOURNAL_POLL: Duration = Duration::from_secs(2);
/// Most connections the server holds open at once, whatever the descriptor limit ([`connection_cap`]). Past the cap
/// the server stops accepting: new connections wait in the kernel's listen queue ([`LISTEN_BACKLOG`]) until one
/// closes.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections take at most this share of the descriptor limit (the soft `RLIMIT_NOFILE`, raised to the hard limit
/// at start): one half, leaving the other half to journal segments, atom files, status files, hot copies (each job
/// takes up to an eighth: `backset_copier::limits::NOFILE_SHARE_DIVISOR`) and the runtime.
pub const CONNECTION_SHARE_DIVISOR: u64 = 2;
/// A connection that has not sent a whole request head within this long, counted from when it connected or from its
/// last answer, is closed: an idle keep-alive connection and a half-sent head (slowloris) alike. A request being
/// answered (a long-poll included) is not idle.
pub const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Environment variable that shortens [`CONNECTION_IDLE_TIMEOUT`] to this many milliseconds, so tests reach it in
/// seconds. Never set it outside tests.
pub const IDLE_TIMEOUT_ENV: &str = "BACKSET_TEST_IDLE_TIMEOUT_MS";
/// Requests waiting for a hot copy to end (a non-zero `timeoutSec`) take at most this share of the connection cap:
/// one half. Past it a request that asks to wait answers 503 and does nothing, so waits never take every connection.
pub const WAIT_SHARE_DIVISOR: usize = 2;
/// How long a shutdown lets the open connections finish their requests (after cancelling the hot copies and ending
/// the waits) before it closes them.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the accept loop pauses after an accept that failed for want of a resource (EMFILE, ENFILE, ENOMEM),
/// before it tries again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// The descriptor limit assumed when it cannot be read.
const ASSUMED_NOFILE: u64 = 1024;

/// Connections the server holds at once under a descriptor limit of `nofile`: `nofile /`
/// [`CONNECTION_SHARE_DIVISOR`], at least 1 and at most [`MAX_CONNECTIONS`].
pub fn connection_cap(nofile: u64) -> usize {
    let share = if nofile == 0 { ASSUMED_NOFILE } else { nofile } / CONNECTION_SHARE_DIVISOR;
    usize::try_from(share).unwrap_or(usize::MAX).clamp(1, MAX_CONNECTIONS)
}

/// The server's shared state.
pub(super) struct App {
    pub(super) db: Arc<Database>,
    pub(super) manager: HotCopyManager,
    pub(super) base_uri: String,
    /// The listen address (the processes' `address` and `port`).
    pub(super) listen: SocketAddr,
    pub(super) hostname: String,
    pub(super) token: Option<String>,
    /// Extra labels per archive id (the config file's `[[sm]]` tables).
    pub(super) labels: Vec<BTreeMap<String, String>>,
    /// Longest a single request waits for a hot copy ([`MAX_WAIT_PER_REQUEST`]).
    pub(super) wait_per_request: Duration,
    /// Requests waiting for a hot copy now, and the most that may ([`WAIT_SHARE_DIVISOR`]).
    pub(super) waits: AtomicUsize,
    pub(super) max_waits: usize,
    /// `true` once the server stops: every wait ends and answers the status as it is.
    pub(super) stopping: watch::Sender<bool>,
}
