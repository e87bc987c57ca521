//! The options of `backset serve` in force: the command line over the `--config` file ([`crate::config`]) over the
//! defaults, with the ranges the store would refuse checked first (usage errors, exit 2).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use backset_format::limits::MAX_STORAGE_GROUPS;
use backset_refstore::limits::{
    DEFAULT_ATOM_BUCKETS, DEFAULT_RETAINED_JOURNAL_WARN_BYTES, DEFAULT_SEGMENT_BYTES, MAX_ARCHIVE_ATOMS,
    MAX_ATOM_BUCKETS, MAX_CONFIG_SEGMENT_BYTES, MAX_SMS, MIN_SEGMENT_BYTES,
};
use backset_refstore::workload::WorkloadConfig;

use crate::config::{FileConfig, Toggle};
use crate::logging::LogFormat;
use crate::usage::UsageError;

/// Options of `backset serve`. Each can also be set in the `--config` file (a key of the same name); the command line
/// wins.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML file with any of these options (same names, without `--`), labels per SM (`[[sm]]`) and a built-in
    /// workload (`[workload]`); see docs/CLI.md. Options given here win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8888). A non-loopback address needs `--auth-token-file`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Name of the embedded database (default demo).
    #[arg(long)]
    pub db_name: Option<String>,
    /// Directory of the embedded database (`database/`) and of the hot copy statuses (`admin/`) (default
    /// backset-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of SMs (archives 0..N-1; default 1). Fixed when the database is created. Each start gives the SMs new
    /// start ids, following the last ones.
    #[arg(long, allow_negative_numbers = true, value_parser = crate::cli::count::<usize>)]
    pub sms: Option<usize>,
    /// Storage groups SG1..SGN, group i served by archive (i-1) mod sms (needs N >= sms). Fixed when the database
    /// is created. Without it every SM holds all data.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = crate::cli::count::<usize>)]
    pub storage_groups: Option<usize>,
    /// Atoms per storage group (hash buckets the keys are spread over), 1 to 1048576. Fixed when the database is
    /// created (default 65536: atoms of about 16 KiB in an archive of 1 GiB, 16 MiB in one of 1 TiB); an existing
    /// database keeps its own, and giving another is refused. An incremental copies every atom changed since the
    /// previous one whole: more, smaller atoms make incrementals of scattered changes smaller.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = crate::cli::count::<u32>)]
    pub atom_buckets: Option<u32>,
    /// Whether the SMs keep their journal until a journal hot copy copied it (default enable; NuoDB's default is
    /// disable).
    #[arg(long, value_enum)]
    pub journal_hot_copy: Option<Toggle>,
    /// Size at which an SM's journal segment rolls over to a new one, bytes (4 KiB to 1 GiB; default 64 MiB).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = crate::cli::count::<u64>)]
    pub journal_segment_bytes: Option<u64>,
    /// Warn when the journal kept for journal hot copies grows past this many bytes (over all SMs; default 1 GiB).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = crate::cli::count::<u64>)]
    pub retained_journal_warn_bytes: Option<u64>,
    /// File holding a bearer token every request must carry (`Authorization: Bearer <token>`). Required to listen
    /// on a non-loopback address. The token is never logged.
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Format of the log on stderr: text (default; each line with its UTC time) or json (one JSON object a line).
    /// The level is RUST_LOG's (default info).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The options in force: the command line over the config file over the defaults.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) listen: SocketAddr,
    pub(super) db_name: String,
    pub(super) data_dir: PathBuf,
    pub(super) sms: usize,
    pub(super) storage_groups: Option<usize>,
    pub(super) atom_buckets: Option<u32>,
    pub(super) journal_hot_copy: Toggle,
    /// Per SM (archive id order) when the config file gives it per SM and the command line does not override it.
    pub(super) journal_hot_copy_per_sm: Option<Vec<Toggle>>,
    pub(super) journal_segment_bytes: u64,
    pub(super) retained_journal_warn_bytes: u64,
    pub(super) auth_token_file: Option<PathBuf>,
    pub(super) log_format: LogFormat,
    /// Extra labels per archive id.
    pub(super) labels: Vec<BTreeMap<String, String>>,
    pub(super) workload: Option<WorkloadConfig>,
    /// The `[s3]` table, checked (its secrets never shown).
    pub(super) s3: Option<backset_objstore::S3Overrides>,
}

/// The `[s3]` table of the config file `cfg` as the engine takes it, checked as the environment it completes: the
/// retry settings in their ranges, the keys both or neither, the endpoint a URL (plain HTTP only to a loopback
/// address unless `allow-http`). Usage errors name the file and the key; no message carries a secret.
fn s3_overrides(t: crate::config::S3File, cfg: &str) -> Result<backset_objstore::S3Overrides> {
    use backset_objstore::limits::{MAX_CONFIG_RETRIES, MAX_CONFIG_RETRY_TIMEOUT};
    let usage = |msg: String| anyhow::Error::new(UsageError(format!("config file {cfg}: {msg}")));
    let mut retry = backset_objstore::RetrySettings::default();
    if let Some(n) = t.max_retries {
        if n > MAX_CONFIG_RETRIES {
            return Err(usage(format!("key `s3.max-retries`: {n}: give 0 to {MAX_CONFIG_RETRIES}")));
        }
        retry.max_retries = n;
    }
    if let Some(text) = &t.retry_timeout {
        let d = humantime::parse_duration(text.trim())
            .map_err(|e| usage(format!("key `s3.retry-timeout`: {text:?} is not a duration like 30s or 2m: {e}")))?;
        if d > MAX_CONFIG_RETRY_TIMEOUT {
            return Err(usage(format!(
                "key `s3.retry-timeout`: {text}: give at most {}",
                humantime::format_duration(MAX_CONFIG_RETRY_TIMEOUT)
            )));
        }
        retry.timeout = d;
    }
    let given = backset_objstore::S3Overrides {
        endpoint: t.endpoint_url,
        region: t.region,
        access_key_id: t.access_key_id,
        secret_access_key: t.secret_access_key.map(|s| s.0),
        session_token: t.session_token.map(|s| s.0),
        allow_http: t.allow_http,
        retry,
    };
    let config = backset_objstore::S3Config::from_env_with(&given).map_err(|e| usage(format!("[s3]: {e}")))?;
    config.checked_endpoint().map_err(|e| usage(format!("key `s3.endpoint-url`: {e}")))?;
    Ok(given)
}

/// Labels the server sets itself; the config file may not override them.
const RESERVED_LABELS: [&str; 2] = ["archive-id", "storage-groups"];

impl Settings {
    pub(super) fn resolve(args: &Args) -> Result<Self> {
        let file = match &args.config {
            Some(p) => crate::config::load(p)?,
            None => FileConfig::default(),
        };
        let cfg = args.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let usage = |msg: String| anyhow::Error::new(UsageError(format!("config file {cfg}: {msg}")));
        let sms = args.sms.or(file.sms).unwrap_or(1);
        let journal_hot_copy = args.journal_hot_copy.or(file.journal_hot_copy);
        if !file.sm.is_empty() && file.sm.len() != sms {
            return Err(usage(format!("{} [[sm]] tables for {sms} SMs: give one per SM, or none", file.sm.len())));
        }
        // The command line's --journal-hot-copy applies to every SM; else each [[sm]]'s own, else the file's.
        let journal_hot_copy_per_sm = (args.journal_hot_copy.is_none()
            && file.sm.iter().any(|s| s.journal_hot_copy.is_some()))
        .then(|| file.sm.iter().map(|s| s.journal_hot_copy.or(journal_hot_copy).unwrap_or(Toggle::Enable)).collect());
        let mut labels = Vec::with_capacity(file.sm.len());
        for (i, sm) in file.sm.iter().enumerate() {
            if let Some(k) = sm.labels.keys().find(|k| RESERVED_LABELS.contains(&k.as_str())) {
                return Err(usage(format!("[[sm]] {i}: the label {k:?} is set by the server; choose another name")));
            }
            labels.push(sm.labels.clone());
        }
        let workload = match file.workload {
            None => None,
            Some(w) => {
                let c = WorkloadConfig {
                    seed: w.seed.unwrap_or(1),
                    threads: w.threads.unwrap_or(1),
                    rate_txns_per_second: w.rate,
                    key_space: w.key_space.unwrap_or(1000),
                    value_bytes: {
                        let n = w.value_bytes.unwrap_or(64);
                        n..=n
                    },
                    delete_fraction: w.delete_fraction.unwrap_or(0.2),
                    ..WorkloadConfig::default()
                };
                if !(1..=64).contains(&c.threads) {
                    return Err(usage(format!("workload.threads {}: give 1 to 64", c.threads)));
                }
                if c.key_space == 0 {
                    return Err(usage("workload.key-space 0: give at least 1".into()));
                }
                if !(1..=1 << 20).contains(w.value_bytes.as_ref().unwrap_or(&64)) {
                    return Err(usage("workload.value-bytes: give 1 to 1048576".into()));
                }
                if !(0.0..=1.0).contains(&c.delete_fraction) {
                    return Err(usage(format!("workload.delete-fraction {}: give 0 to 1", c.delete_fraction)));
                }
                if c.rate_txns_per_second.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                    return Err(usage("workload.rate: give a positive number of transactions per second".into()));
                }
                Some(c)
            }
        };
        let s3 = file.s3.map(|t| s3_overrides(t, &cfg)).transpose()?;
        let settings = Self {
            listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8888))),
            db_name: args.db_name.clone().or(file.db_name).unwrap_or_else(|| "demo".into()),
            data_dir: args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("backset-data")),
            sms,
            storage_groups: args.storage_groups.or(file.storage_groups),
            atom_buckets: args.atom_buckets.or(file.atom_buckets),
            journal_hot_copy: journal_hot_copy.unwrap_or(Toggle::Enable),
            journal_hot_copy_per_sm,
            journal_segment_bytes: args
                .journal_segment_bytes
                .or(file.journal_segment_bytes)
                .unwrap_or(DEFAULT_SEGMENT_BYTES),
            retained_journal_warn_bytes: args
                .retained_journal_warn_bytes
                .or(file.retained_journal_warn_bytes)
                .unwrap_or(DEFAULT_RETAINED_JOURNAL_WARN_BYTES),
            auth_token_file: args.auth_token_file.clone().or(file.auth_token_file),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            labels,
            workload,
            s3,
        };
        settings.check_ranges()?;
        Ok(settings)
    }

    /// Refuses, as usage errors naming the option, the values the store would refuse when it opens.
    fn check_ranges(&self) -> Result<()> {
        let usage = |msg: String| Err(anyhow::Error::new(UsageError(msg)));
        if !(1..=MAX_SMS).contains(&self.sms) {
            return usage(format!("--sms {}: give 1 to {MAX_SMS} SMs", self.sms));
        }
        if let Some(n) = self.storage_groups {
            if !(self.sms..=MAX_STORAGE_GROUPS).contains(&n) {
                return usage(format!(
                    "--storage-groups {n}: give at least one group per SM (--sms {}) and at most {MAX_STORAGE_GROUPS}",
                    self.sms
                ));
            }
        }
        if let Some(n) = self.atom_buckets.filter(|n| !(1..=MAX_ATOM_BUCKETS).contains(n)) {
            return usage(format!(
                "--atom-buckets {n}: give 1 to {MAX_ATOM_BUCKETS} atoms per storage group (default \
                 {DEFAULT_ATOM_BUCKETS})"
            ));
        }
        if let (Some(n), Some(groups)) = (self.atom_buckets, self.storage_groups) {
            // Group i is served by archive (i-1) mod sms: the first archive serves the most.
            let per_archive = groups.div_ceil(self.sms) as u64;
            if u64::from(n) * per_archive > MAX_ARCHIVE_ATOMS {
                return usage(format!(
                    "--atom-buckets {n} with {per_archive} storage groups on one archive gives {} atoms, more than \
                     the limit of {MAX_ARCHIVE_ATOMS} atoms per archive: give at most {} atom buckets",
                    u64::from(n) * per_archive,
                    MAX_ARCHIVE_ATOMS / per_archive
                ));
            }
        }
        if !(MIN_SEGMENT_BYTES..=MAX_CONFIG_SEGMENT_BYTES).contains(&self.journal_segment_bytes) {
            return usage(format!(
                "--journal-segment-bytes {}: give {MIN_SEGMENT_BYTES} to {MAX_CONFIG_SEGMENT_BYTES} bytes",
                self.journal_segment_bytes
            ));
        }
        Ok(())
    }
}
