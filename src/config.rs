//! `backset serve --config FILE`: the TOML configuration file. Every serve flag has a key of the same name (without
//! the leading `--`); a flag given on the command line wins over the file. Beyond the flags: `[[sm]]` tables (labels
//! and `journal-hot-copy` per SM, in archive id order) and a `[workload]` table (a built-in workload run with the
//! server). Unknown keys and values of the wrong type are usage errors naming the file and the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;

use crate::usage::UsageError;

/// `enable` or `disable`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    /// On.
    Enable,
    /// Off.
    Disable,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--db-name`.
    pub db_name: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--sms`.
    pub sms: Option<usize>,
    /// `--storage-groups`.
    pub storage_groups: Option<usize>,
    /// `--atom-buckets`.
    pub atom_buckets: Option<u32>,
    /// `--journal-hot-copy`.
    pub journal_hot_copy: Option<Toggle>,
    /// `--journal-segment-bytes`.
    pub journal_segment_bytes: Option<u64>,
    /// `--retained-journal-warn-bytes`.
    pub retained_journal_warn_bytes: Option<u64>,
    /// `--auth-token-file`.
    pub auth_token_file: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<crate::logging::LogFormat>,
    /// One table per SM, archive 0 first.
    #[serde(default)]
    pub sm: Vec<SmConfig>,
    /// The built-in workload.
    pub workload: Option<WorkloadFile>,
    /// Object storage: endpoint, region, keys, plain-HTTP policy, retries.
    pub s3: Option<S3File>,
}

/// The `[s3]` table: what the standard `AWS_*` variables say, for the hot copies of this server; each key wins over
/// its variables (docs/CLI.md, "serve --config FILE"). `Debug` never shows the secrets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct S3File {
    /// `AWS_ENDPOINT_URL`: an S3-compatible server.
    pub endpoint_url: Option<String>,
    /// `AWS_REGION`.
    pub region: Option<String>,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<SecretString>,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<SecretString>,
    /// `AWS_ALLOW_HTTP`: plain `http://` to a host that is not a loopback address.
    pub allow_http: Option<bool>,
    /// Retries of a request that failed in a way worth retrying (0 to `MAX_CONFIG_RETRIES`).
    pub max_retries: Option<usize>,
    /// No retry after this long from a request's first attempt (`30s`, `2m`; at most `MAX_CONFIG_RETRY_TIMEOUT`).
    pub retry_timeout: Option<String>,
}

/// A secret read from the file: never shown (`Debug` prints `Secret(redacted)`).
#[derive(Debug, Deserialize)]
#[serde(from = "String")]
pub struct SecretString(pub backset_objstore::Secret);

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self(backset_objstore::Secret::new(s))
    }
}

/// An `[[sm]]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SmConfig {
    /// Extra labels, seen by `get processes` and the process filter's `label(KEY P)`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// This SM's `journal-hot-copy`; every SM must agree (the store has one setting for all).
    pub journal_hot_copy: Option<Toggle>,
}

/// The `[workload]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkloadFile {
    /// Committer threads (default 1).
    pub threads: Option<usize>,
    /// Target rate over all threads, transactions per second (default: as fast as commits return).
    pub rate: Option<f64>,
    /// Keys `key-0..key-<key-space - 1>` (default 1000).
    pub key_space: Option<u64>,
    /// Bytes per value written (default 64).
    pub value_bytes: Option<usize>,
    /// Probability that an operation is a delete (default 0.2).
    pub delete_fraction: Option<f64>,
    /// Seed of the generator (default 1).
    pub seed: Option<u64>,
}

/// Reads and parses `path`. A file that cannot be read is a failure (exit 1); one that does not parse, has an unknown
/// key or a value of the wrong type is a usage error (exit 2).
pub fn load(path: &Path) -> Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("read the config file {}: {e}", path.display()))?;
    parse(&text, path)
}

/// Parses the file's text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<FileConfig> {
    toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        let key = e.span().and_then(|s| key_at(text, s.start));
        anyhow::Error::new(UsageError(match key {
            Some(k) => format!("config file {}: key `{k}`: {msg}", path.display()),
            None => format!("config file {}: {msg}", path.display()),
        }))
    })
}

/// The dotted key (`workload.rate`) written on the line holding byte `pos`, with the table header above it.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let pos = pos.min(text.len());
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let line = text[start..end].trim();
    let header = |l: &str| l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
    if line.starts_with('[') {
        return Some(header(line));
    }
    let key = line.split('=').next()?.trim().trim_matches('"').to_string();
    if key.is_empty() {
        return None;
    }
    let table = text[..start].lines().rev().map(str::trim).find(|l| l.starts_with('[')).map(header);
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_and_wrong_type_name_the_key() {
        let p = Path::new("x.toml");
        let e = parse("sms = 2\nbogus = 1\n", p).unwrap_err().to_string();
        assert!(e.contains("key `bogus`") && e.contains("x.toml"), "{e}");
        let e = parse("[workload]\nrate = \"fast\"\n", p).unwrap_err().to_string();
        assert!(e.contains("key `workload.rate`"), "{e}");
        let c = parse("sms = 2\n[[sm]]\nlabels = { role = \"hotcopy\" }\n[[sm]]\n", p).unwrap();
        assert_eq!(c.sm.len(), 2);
        assert_eq!(c.sm[0].labels["role"], "hotcopy");
        let e = parse("[s3]\nendpoint = \"x\"\n", p).unwrap_err().to_string();
        assert!(e.contains("key `s3.endpoint`"), "{e}");
    }

    #[test]
    fn the_s3_table_is_read_and_its_secrets_are_not_shown() {
        let text = "[s3]\nendpoint-url = \"http://127.0.0.1:9000\"\naccess-key-id = \"AKID\"\n\
                    secret-access-key = \"very-secret-1\"\nsession-token = \"very-secret-2\"\nallow-http = true\n\
                    max-retries = 3\nretry-timeout = \"20s\"\n";
        let c = parse(text, Path::new("x.toml")).unwrap();
        let s3 = c.s3.as_ref().unwrap();
        assert_eq!(s3.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!((s3.allow_http, s3.max_retries), (Some(true), Some(3)));
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret-1") && !shown.contains("very-secret-2"), "{shown}");
    }
}
