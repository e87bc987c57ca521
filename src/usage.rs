//! A command line mistake the parser could not see: the error the binary exits with code 2 for, as for clap's own.

use std::fmt;

use anyhow::anyhow;

/// A command line mistake the parser could not see (exit code 2, like clap's).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow!(UsageError(msg.into()))
}
