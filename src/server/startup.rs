//! From the options to a listening server: the token, the store, the hot copy manager, the runtime and the signals;
//! and the way back: SIGINT or SIGTERM cancels the hot copies, ends the waits, lets the connections finish and
//! closes the store.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use backset_engine::hotcopy::HotCopyManager;
use backset_refstore::workload::Workload;
use backset_refstore::{Config, Database, StorageGroup};
use tokio::sync::watch;

use super::connections::{bind, idle_timeout, serve, LISTEN_BACKLOG};
use super::routes::router;
use super::settings::{Args, Settings};
use super::{connection_cap, App, MIN_TOKEN_BYTES, RETAINED_JOURNAL_POLL, SHUTDOWN_JOBS_TIMEOUT, WAIT_SHARE_DIVISOR};
use crate::api::{MAX_WAIT_PER_REQUEST, WAIT_PER_REQUEST_ENV};
use crate::config::Toggle;
use crate::usage::UsageError;

/// Runs `backset serve` until SIGINT or SIGTERM.
pub fn run(args: &Args) -> Result<()> {
    let args = &Settings::resolve(args)?;
    crate::logging::init(args.log_format, tracing_subscriber::filter::LevelFilter::INFO, true);
    if let Some(s3) = &args.s3 {
        backset_engine::set::object::configure(s3.clone());
    }
    if !args.listen.ip().is_loopback() && args.auth_token_file.is_none() {
        bail!(
            "listening on {} (not a loopback address) needs --auth-token-file: anyone who reaches it could start \
             and cancel hot copies and write data",
            args.listen
        );
    }
    let token = match &args.auth_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            let token = text.trim().to_string();
            ensure!(!token.is_empty(), "the auth token file {} is empty", path.display());
            ensure!(
                token.chars().all(|c| c.is_ascii_graphic()),
                "the auth token in {} must be printable ASCII without spaces",
                path.display()
            );
            if token.len() < MIN_TOKEN_BYTES {
                return Err(UsageError(format!(
                    "the auth token in {} has {} characters, fewer than {MIN_TOKEN_BYTES}: a short token can be \
                     guessed; write a longer one (e.g. `head -c 24 /dev/urandom | base64 > {}`)",
                    path.display(),
                    token.len(),
                    path.display()
                ))
                .into());
            }
            Some(token)
        }
        None => None,
    };
    let mut config = Config::new(args.db_name.clone());
    config.sms = args.sms;
    config.journal_hot_copy = args.journal_hot_copy == Toggle::Enable;
    config.journal_hot_copy_per_sm =
        args.journal_hot_copy_per_sm.as_ref().map(|v| v.iter().map(|&t| t == Toggle::Enable).collect());
    config.segment_bytes = args.journal_segment_bytes;
    config.atom_buckets = args.atom_buckets;
    if let Some(n) = args.storage_groups {
        config.storage_groups = Some(
            (1..=n)
                .map(|i| StorageGroup {
                    id: i as u32,
                    name: format!("SG{i}"),
                    archives: vec![((i - 1) % args.sms) as u64],
                })
                .collect(),
        );
    }
    // At start, not at the first hot copy: connections and journal segments share the limit from the first moment.
    let nofile = backset_copier::limits::raise_nofile_limit();
    let max_connections = connection_cap(nofile);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("backset-serve")
        .enable_all()
        .build()
        .context("start the async runtime")?;
    // Registered before anything else: a SIGINT or SIGTERM during the start (a client that found the port open may
    // send one at once) is held and stops the server cleanly once it runs.
    let signals = {
        let _runtime = rt.enter();
        Signals::register()
    };
    // Bound before the database is opened, so a serve that cannot have its address leaves nothing in the data
    // directory; it listens (and so accepts connections) only once the database is open, as before.
    let socket = bind(args.listen).with_context(|| format!("listen on {}", args.listen))?;
    backset_engine::lock::set_program_name("backset serve");
    let db_root = args.data_dir.join("database");
    let db = Arc::new(
        Database::open(&db_root, config).with_context(|| format!("open the database in {}", db_root.display()))?,
    );
    let manager = HotCopyManager::new(db.hot_copy_archives(), args.data_dir.join("admin"))
        .context("start the hot copy manager")?;
    let app = Arc::new(App {
        db: Arc::clone(&db),
        manager: manager.clone(),
        base_uri: format!("http://{}", args.listen),
        listen: args.listen,
        hostname: hostname(),
        token,
        labels: args.labels.clone(),
        wait_per_request: wait_per_request(),
        waits: AtomicUsize::new(0),
        max_waits: (max_connections / WAIT_SHARE_DIVISOR).max(1),
        stopping: watch::Sender::new(false),
    });
    let mut workload: Option<Workload> = None;
    let served = rt.block_on(async {
        tracing::info!(
            "database {} ({} SM{}, journal-hot-copy {}) in {}; admin API on http://{}{}",
            db.name(),
            args.sms,
            if args.sms == 1 { "" } else { "s" },
            match (&args.journal_hot_copy_per_sm, args.journal_hot_copy) {
                (Some(_), _) => "set per SM",
                (None, Toggle::Enable) => "enabled",
                (None, Toggle::Disable) => "disabled",
            },
            db_root.display(),
            args.listen,
            if app.token.is_some() { " (bearer token required)" } else { "" }
        );
        tracing::info!("{} atoms per storage group (chosen when the database was created)", db.meta().atom_buckets);
        tracing::info!(
            "descriptor limit {nofile}: at most {max_connections} connections, {} of them waiting for hot copies; \
             idle connections close after {:?}",
            app.max_waits,
            idle_timeout()
        );
        for archive in db.archives() {
            let id = archive.archive_id();
            let groups: Vec<u32> = archive.group_ids().to_vec();
            tracing::info!(
                "SM start id {} serves archive {id} in {}{}{}",
                manager.start_id(id).unwrap_or_default(),
                backset_engine::archive::Archive::dir(archive.as_ref()).display(),
                if groups.is_empty() { String::new() } else { format!(" (storage groups {groups:?})") },
                if args.journal_hot_copy_per_sm.is_some() {
                    let on = db.config().journal_hot_copy_of(id as usize);
                    format!(", journal-hot-copy {}", if on { "enabled" } else { "disabled" })
                } else {
                    String::new()
                }
            );
        }
        if let Some(w) = &args.workload {
            tracing::info!(
                "workload: {} thread{}, {}, {} keys, {}-byte values, delete fraction {}",
                w.threads,
                if w.threads == 1 { "" } else { "s" },
                w.rate_txns_per_second.map_or("unthrottled".to_string(), |r| format!("{r} transactions/s")),
                w.key_space,
                w.value_bytes.start(),
                w.delete_fraction
            );
            workload = Some(Workload::start(Arc::clone(&db), w.clone()));
        }
        tokio::spawn(watch_retained_journal(Arc::clone(&db), args.retained_journal_warn_bytes));
        // Last: once the port accepts connections, the lines above are out.
        let listener = socket.listen(LISTEN_BACKLOG).with_context(|| format!("listen on {}", args.listen))?;
        serve(listener, router(Arc::clone(&app)), max_connections, shutdown_signal(Arc::clone(&app), signals)).await;
        Ok::<(), anyhow::Error>(())
    });
    let left = manager.shutdown(SHUTDOWN_JOBS_TIMEOUT);
    // The workload stops before the store closes: its last commits are acknowledged and durable.
    if let Some(w) = workload {
        let report = w.stop();
        tracing::info!(
            "workload stopped: {} committed{}",
            crate::text::counted(report.acked.len() as u64, "transaction"),
            report.errors.first().map_or(String::new(), |e| format!("; error: {e}"))
        );
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    db.close().context("close the database")?;
    served?;
    tracing::info!(
        "server stopped; database closed{}",
        if left == 0 {
            String::new()
        } else {
            format!(" ({} did not end in time)", crate::text::plural(left as u64, "hot copy", "hot copies"))
        }
    );
    Ok(())
}

/// [`MAX_WAIT_PER_REQUEST`], or what [`WAIT_PER_REQUEST_ENV`] sets (tests).
fn wait_per_request() -> Duration {
    std::env::var(WAIT_PER_REQUEST_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(MAX_WAIT_PER_REQUEST, Duration::from_millis)
}

/// The host name for the process list.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Waits for SIGINT or SIGTERM, then cancels every running hot copy (so requests waiting on them see them end) and
/// ends the waits that remain, before the server stops taking requests. The cancel runs on a thread of its own, not
/// on the blocking pool: clients can fill that pool (commits waiting on a stalled journal), and a shutdown must not
/// queue behind them.
async fn shutdown_signal(app: Arc<App>, signals: Signals) {
    let name = signals.wait().await;
    tracing::info!("{name}: cancelling running hot copies and closing the database");
    let (done, cancelled) = tokio::sync::oneshot::channel();
    let manager = app.manager.clone();
    let spawned = std::thread::Builder::new().name("backset-shutdown".into()).spawn(move || {
        manager.shutdown(SHUTDOWN_JOBS_TIMEOUT);
        let _ = done.send(());
    });
    match spawned {
        // The manager is shut down again once the server stopped; here it only lets the waits see the jobs end.
        Err(e) => tracing::warn!(
            "cannot start the shutdown thread ({e}); the hot copies are cancelled after the server stopped"
        ),
        Ok(_) => drop(cancelled.await),
    }
    app.stopping.send_replace(true);
}

/// SIGINT and SIGTERM, caught from the moment they are registered (one that arrives before [`Signals::wait`] is
/// held for it).
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    /// Registers both; must run inside the runtime.
    fn register() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self(signal(SignalKind::interrupt()).ok().zip(signal(SignalKind::terminate()).ok()))
    }

    /// Waits for either; returns its name.
    async fn wait(self) -> &'static str {
        match self.0 {
            Some((mut int, mut term)) => tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            None => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}

/// Warns on stderr when the journal kept for journal hot copies grows past `limit`, and again after it fell back.
async fn watch_retained_journal(db: Arc<Database>, limit: u64) {
    let mut warned = false;
    let mut tick = tokio::time::interval(RETAINED_JOURNAL_POLL);
    loop {
        tick.tick().await;
        let bytes = db.retained_journal_bytes();
        if bytes > limit && !warned {
            tracing::warn!(
                "{bytes} bytes of journal are kept for journal hot copies (limit {limit}); run \
                 a journal hot copy of each SM's backup set, or restart with --journal-hot-copy disable"
            );
            warned = true;
        } else if bytes <= limit {
            warned = false;
        }
    }
}
