//! `backset-objstore`: backup locations on object storage (`s3://bucket/prefix`) and the S3 operations a backup
//! set needs, over `object_store`'s S3 client (DESIGN.md, "Storage backends").
//!
//! - [`location`]: a location as an operator writes it, a local path or `s3://bucket/prefix`, checked with errors
//!   that say what to write instead.
//! - [`config`]: endpoint, region, credentials (the standard `AWS_*` variables, or given explicitly), the plain-HTTP
//!   policy and retries; secrets are never shown.
//! - [`client`]: [`ObjectClient`], blocking operations on one location: put, create-only put (the publish step),
//!   multipart upload from the caller's buffers with a bounded number of parts in flight, get, ranged get, a
//!   streamed get ([`ObjectReader`]), head, what stands at a name ([`Entry`]: an object or a prefix), list (every
//!   object below a prefix, or one level of it), delete: what the storage seam of a backup set reads and writes
//!   through.
//! - [`error`]: [`ObjStoreError`], each failure with what to do.
//! - [`limits`]: every bound and retry setting, named.
//!
//! A crate of its own so that the engine, and everything that links it, does not build an HTTP and TLS stack
//! until it uses object storage; it depends on nothing of Backset's.

pub mod client;
pub mod config;
pub mod error;
pub mod limits;
pub mod location;

pub use client::{DirListing, Entry, ObjectClient, ObjectInfo, ObjectReader, PendingPut, Stored, Upload};
pub use config::{RetrySettings, S3Config, S3Credentials, S3Overrides, Secret};
pub use error::ObjStoreError;
pub use location::{Location, LocationError, S3Url};
