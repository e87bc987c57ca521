//! A backup location as an operator writes it: a local path, or `s3://bucket/prefix`.
//!
//! The rules, each with its error ([`LocationError`]):
//! - Anything with `://`, or starting with `s3:`, is a URL; every other string is a local path, as today.
//! - The only scheme is `s3` (lowercase). `http://`/`https://` endpoints go in `AWS_ENDPOINT_URL`, not in the
//!   location; `s3a://`, `gs://` and the rest are refused, naming what to write instead.
//! - The bucket follows S3's naming rules (3 to 63 characters of `a-z`, `0-9`, `.` and `-`, starting and ending with
//!   a letter or a digit, no `..`, not an IP address); no credentials in the URL (`user:secret@`), they go in the
//!   `AWS_*` variables.
//! - The prefix is `/`-separated segments of S3's safe characters (`A-Z a-z 0-9 ! - _ . * ' ( )`), no empty, `.` or
//!   `..` segment, at most [`MAX_PREFIX_BYTES`]. A trailing `/` is dropped; an empty prefix is the bucket's root.

use std::fmt;
use std::path::PathBuf;

use crate::limits::MAX_PREFIX_BYTES;

/// Where a backup set is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on this host.
    Local(PathBuf),
    /// A prefix in a bucket of an S3-compatible store.
    S3(S3Url),
}

impl Location {
    /// Parses what an operator wrote (see the [module docs](self)).
    pub fn parse(text: &str) -> Result<Self, LocationError> {
        let url_like = text.contains("://") || text.starts_with("s3:") || text.starts_with("S3:");
        if !url_like {
            if text.is_empty() {
                return Err(LocationError::new(text, "it is empty", "give a directory or an s3://bucket/prefix URL"));
            }
            return Ok(Self::Local(PathBuf::from(text)));
        }
        S3Url::parse(text).map(Self::S3)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3(url) => url.fmt(f),
        }
    }
}

/// `s3://bucket/prefix`, checked: see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Url {
    bucket: String,
    prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(text: &str) -> Result<Self, LocationError> {
        let err = |what: String, fix: &str| LocationError::new(text, &what, fix);
        let Some(rest) = text.strip_prefix("s3://") else {
            if let Some((scheme, _)) = text.split_once("://") {
                let fix = match scheme.to_ascii_lowercase().as_str() {
                    "s3" => "write the scheme in lowercase: s3://bucket/prefix",
                    "s3a" | "s3n" => "write s3://bucket/prefix (Hadoop's s3a/s3n names are not used here)",
                    "http" | "https" => {
                        "write s3://bucket/prefix and give the server's address in AWS_ENDPOINT_URL \
                         (for example AWS_ENDPOINT_URL=http://127.0.0.1:9000)"
                    }
                    "file" => "write the directory's path without file://",
                    _ => "object storage is S3-compatible only: write s3://bucket/prefix, or a directory's path",
                };
                return Err(err(format!("the scheme {scheme}:// is not supported"), fix));
            }
            // `s3:bucket/...`, `s3:/bucket/...`
            let after = text[3..].trim_start_matches('/');
            return Err(err("an s3 URL starts with s3:// (two slashes)".into(), &format!("write s3://{after}")));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(err(
                "the bucket is empty".into(),
                "write s3://bucket/prefix with the bucket right after s3:// (no third slash)",
            ));
        }
        if let Some((userinfo, _)) = bucket.rsplit_once('@') {
            let _ = userinfo;
            return Err(err(
                "credentials do not go in the URL".into(),
                "remove `...@` and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or serve --config) instead",
            ));
        }
        check_bucket(bucket).map_err(|what| err(what, "S3 bucket names are 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit"))?;
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        check_prefix(prefix).map_err(|(what, fix)| err(what, &fix))?;
        Ok(Self { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix below the bucket, without a leading or trailing `/` (empty: the bucket's root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key of `rel` (a `/`-separated name below the prefix).
    pub fn key(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{rel}", self.prefix),
        }
    }

    /// `s3://bucket/key` of `rel`, as messages show an object.
    pub fn show(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(rel))
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

fn check_bucket(bucket: &str) -> Result<(), String> {
    if let Some((i, c)) = bucket.char_indices().find(|&(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-')) {
        let what = if c.is_ascii_uppercase() { "an uppercase letter" } else { "a character not allowed" };
        return Err(format!("the bucket {bucket:?} has {what} ({c:?}) at position {}", i + 1));
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err(format!("the bucket {bucket:?} is {} characters long", bucket.len()));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(bucket.chars().next()) || !edge_ok(bucket.chars().last()) {
        return Err(format!("the bucket {bucket:?} must start and end with a letter or digit"));
    }
    if bucket.contains("..") {
        return Err(format!("the bucket {bucket:?} has two dots in a row"));
    }
    if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!("the bucket {bucket:?} is an IP address"));
    }
    Ok(())
}

fn check_prefix(prefix: &str) -> Result<(), (String, String)> {
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err((
            format!("the prefix is {} bytes long, over the limit of {MAX_PREFIX_BYTES}", prefix.len()),
            "use a shorter prefix (object keys below it must stay within S3's 1024 bytes)".into(),
        ));
    }
    if prefix.is_empty() {
        return Ok(());
    }
    for segment in prefix.split('/') {
        if segment.is_empty() {
            return Err((
                "the prefix has an empty segment (`//`)".into(),
                format!("write the prefix with single slashes: {}", collapse_slashes(prefix)),
            ));
        }
        if segment == "." || segment == ".." {
            return Err((
                format!("the prefix has a `{segment}` segment"),
                "write the prefix without `.` and `..` segments".into(),
            ));
        }
    }
    if let Some((i, c)) = prefix.char_indices().find(|&(_, c)| !is_safe_key_char(c)) {
        return Err((
            format!("the prefix has the character {c:?} at position {}", i + 1),
            "use only letters, digits and ! - _ . * ' ( ) between the slashes of a prefix".into(),
        ));
    }
    Ok(())
}

/// S3's "safe characters" for object keys (and `/`).
fn is_safe_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')' | '/')
}

fn collapse_slashes(prefix: &str) -> String {
    prefix.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/")
}

/// A location that is not a valid path or `s3://` URL: what is wrong and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backup location {text:?}: {what}: {fix}")]
pub struct LocationError {
    text: String,
    what: String,
    fix: String,
}

impl LocationError {
    fn new(text: &str, what: &str, fix: &str) -> Self {
        Self { text: text.to_owned(), what: what.to_owned(), fix: fix.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(text: &str) -> S3Url {
        match Location::parse(text) {
            Ok(Location::S3(url)) => url,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn refused(text: &str) -> String {
        Location::parse(text).expect_err(text).to_string()
    }

    #[test]
    fn paths_stay_paths() {
        for p in ["/var/backups/demo", "backups", "./s3:odd", "s3"] {
            assert_eq!(Location::parse(p).unwrap(), Location::Local(PathBuf::from(p)));
        }
        assert!(refused("").contains("it is empty"));
    }

    #[test]
    fn urls_parse_into_bucket_and_prefix() {
        let url = s3("s3://backups/demo/2026-w49");
        assert_eq!((url.bucket(), url.prefix()), ("backups", "demo/2026-w49"));
        assert_eq!(url.to_string(), "s3://backups/demo/2026-w49");
        assert_eq!(url.key("full/state"), "demo/2026-w49/full/state");
        assert_eq!(url.show("state"), "s3://backups/demo/2026-w49/state");
        let trailing = s3("s3://backups/demo/");
        assert_eq!(trailing.prefix(), "demo");
        let root = s3("s3://backups");
        assert_eq!((root.prefix(), root.key("state").as_str()), ("", "state"));
        assert_eq!(s3("s3://backups/").to_string(), "s3://backups");
    }

    #[test]
    fn wrong_schemes_say_what_to_write() {
        assert!(refused("https://s3.example.com/b/p").contains("AWS_ENDPOINT_URL"));
        assert!(refused("S3://backups/demo").contains("lowercase"));
        assert!(refused("s3a://backups/demo").contains("s3a/s3n"));
        assert!(refused("gs://backups/demo").contains("S3-compatible only"));
        assert!(refused("file:///var/backups").contains("without file://"));
        let one_slash = refused("s3:/backups/demo");
        assert!(one_slash.contains("write s3://backups/demo"), "{one_slash}");
        assert!(refused("s3:backups/demo").contains("write s3://backups/demo"));
    }

    #[test]
    fn bad_buckets_are_refused_with_the_rule() {
        assert!(refused("s3:///demo").contains("the bucket is empty"));
        assert!(refused("s3://").contains("the bucket is empty"));
        let upper = refused("s3://Backups/demo");
        assert!(upper.contains("uppercase letter ('B') at position 1"), "{upper}");
        assert!(upper.contains("3-63 characters"), "{upper}");
        assert!(refused("s3://ab/demo").contains("2 characters long"));
        assert!(refused(&format!("s3://{}/x", "a".repeat(64))).contains("64 characters long"));
        assert!(Location::parse(&format!("s3://{}/x", "a".repeat(63))).is_ok());
        assert!(Location::parse("s3://abc/x").is_ok());
        assert!(refused("s3://-backups/x").contains("start and end"));
        assert!(refused("s3://back..ups/x").contains("two dots"));
        assert!(refused("s3://192.168.1.10/x").contains("IP address"));
        assert!(refused("s3://back_ups/x").contains("'_'"));
        let creds = refused("s3://AKIA:secret@backups/demo");
        assert!(creds.contains("AWS_ACCESS_KEY_ID"), "{creds}");
    }

    #[test]
    fn bad_prefixes_are_refused_with_the_fix() {
        let double = refused("s3://backups/demo//w49");
        assert!(double.contains("write the prefix with single slashes: demo/w49"), "{double}");
        assert!(refused("s3://backups/demo/../other").contains("`..` segment"));
        assert!(refused("s3://backups/./demo").contains("`.` segment"));
        let space = refused("s3://backups/my demo");
        assert!(space.contains("' ' at position 3"), "{space}");
        assert!(refused("s3://backups/demo?versionId=1").contains("'?'"));
        assert!(refused("s3://backups/démo").contains("'é'"));
    }

    #[test]
    fn prefix_length_limit_at_the_edge() {
        let at = "p".repeat(MAX_PREFIX_BYTES);
        assert_eq!(s3(&format!("s3://backups/{at}")).prefix().len(), MAX_PREFIX_BYTES);
        let over = refused(&format!("s3://backups/{at}q"));
        assert!(over.contains(&format!("{} bytes long, over the limit of {MAX_PREFIX_BYTES}", MAX_PREFIX_BYTES + 1)));
    }
}
