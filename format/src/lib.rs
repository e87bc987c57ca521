//! `backset-format`: Backset's on-disk format, as bytes and parsers only (no I/O engine, no `unsafe`).
//!
//! - [`journal`]: journal segments of framed commit records, written by an SM and copied, indexed and replayed by
//!   Backset.
//! - [`atom`]: atom files (header with atom id, LSN and body hash, then the body).
//! - Backup-set metadata, each a metadata file ([`meta`]: fixed header + postcard body): the set's [`State`], and
//!   per element in `control/` the [`Manifest`], the atom [`Catalog`] and the [`ElementInfo`]; and the set's
//!   [`Verification`] record, which only check reads.
//! - [`layout`]: the names of files and directories; [`limits`]: every bound; [`fsio`]: reading metadata files and
//!   writing them atomically; [`dirfd`]: directories opened without following links, and every removal.
//!
//! The byte-by-byte specification, with the ordering invariants and the threat model, is `docs/FORMAT.md` in the
//! repository. Every parser returns a typed error on any input and never allocates past [`limits`].

pub mod atom;
pub mod catalog;
pub mod dirfd;
pub mod element;
pub mod error;
mod fixed;
pub mod fsio;
#[doc(hidden)]
pub mod fuzz;
pub mod journal;
pub mod layout;
pub mod limits;
pub mod manifest;
pub mod meta;
pub mod state;
pub mod verification;

pub use atom::{decode_atom, encode_atom, AtomHeader};
pub use catalog::{AtomState, Catalog, CatalogEntry};
pub use element::{ElementInfo, Participant};
pub use error::{AtomError, JournalError, MetadataError, NameError, ReadError, WriteError};
pub use journal::{
    encode_record, read_archive_segment, read_segment, ArchiveSegment, Record, RecordReader, SegmentHeader,
    SegmentWriter, Tail,
};
pub use layout::ElementName;
pub use manifest::{FileEntry, FileKind, Hash, Manifest};
pub use meta::{Metadata, MetadataKind, FORMAT_VERSION};
pub use state::{ElementEntry, ElementKind, ElementStatus, State, StorageGroup, TxnRange};
pub use verification::{Verification, Verified, VerifyResult};
