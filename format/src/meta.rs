//! The envelope every metadata file shares: a fixed little-endian header, then a postcard body.
//!
//! ```text
//! 0        8        10       12                16                24                                56
//! +--------+--------+--------+----------------+-----------------+--------------------------------+------
//! | magic  |version | kind   | reserved (0)   | body length     | BLAKE3 of the body             | body
//! +--------+--------+--------+----------------+-----------------+--------------------------------+------
//! ```
//! See `docs/FORMAT.md`, "Metadata files".

use std::cell::RefCell;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::MetadataError;
use crate::fixed::array;
use crate::limits::MAX_METADATA_BODY_BYTES;

/// Magic of every metadata file. As PNG's: a non-ASCII first byte catches 7-bit transfers and text sniffing,
/// `\r\n` and `\n` catch line-ending conversion, `\x1a` stops `type` on DOS; `BKM` names the family.
pub const METADATA_MAGIC: [u8; 8] = *b"\x89BKM\r\n\x1a\n";

/// The format version this build writes and reads (metadata files, journal segments and atom files share it).
pub const FORMAT_VERSION: u16 = 1;

/// Offset of the magic.
pub const META_MAGIC_OFFSET: usize = 0;
/// Offset of the format version (u16).
pub const META_VERSION_OFFSET: usize = META_MAGIC_OFFSET + 8;
/// Offset of the kind code (u16).
pub const META_KIND_OFFSET: usize = META_VERSION_OFFSET + 2;
/// Offset of the reserved field (u32, zero).
pub const META_RESERVED_OFFSET: usize = META_KIND_OFFSET + 2;
/// Offset of the body length (u64).
pub const META_BODY_LEN_OFFSET: usize = META_RESERVED_OFFSET + 4;
/// Offset of the BLAKE3 hash of the body (32 bytes).
pub const META_BODY_HASH_OFFSET: usize = META_BODY_LEN_OFFSET + 8;
/// Size of the metadata header; the body starts here.
pub const METADATA_HEADER_BYTES: usize = META_BODY_HASH_OFFSET + 32;
const _: () = assert!(METADATA_HEADER_BYTES == 56);

/// Which structure a metadata file holds. The code is stored as a u16 in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MetadataKind {
    /// The backup set's `state` file.
    State = 1,
    /// An element's `control/manifest`.
    Manifest = 2,
    /// An element's `control/catalog`.
    Catalog = 3,
    /// An element's `control/element`.
    ElementInfo = 4,
    /// The backup set's verification record, `verified`.
    Verification = 5,
}

impl MetadataKind {
    /// The kind's name, as error messages print it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Manifest => "manifest",
            Self::Catalog => "catalog",
            Self::ElementInfo => "element info",
            Self::Verification => "verification record",
        }
    }

    /// The kind for a stored code, if it is one.
    pub const fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(Self::State),
            2 => Some(Self::Manifest),
            3 => Some(Self::Catalog),
            4 => Some(Self::ElementInfo),
            5 => Some(Self::Verification),
            _ => None,
        }
    }
}

/// A structure stored as a metadata file.
pub trait Metadata: Serialize + DeserializeOwned {
    /// The kind code written in the header.
    const KIND: MetadataKind;

    /// Checks the rules the format puts on a decoded value beyond its encoding (order, uniqueness, ranges,
    /// limits). Returns what is wrong, naming the offending entry.
    fn validate(&self) -> Result<(), String>;
}

/// Encodes `value` as a complete metadata file: header and body. Refuses a value that breaks a format rule, so no
/// writer can produce a file that readers reject.
pub fn encode<T: Metadata>(value: &T) -> Result<Vec<u8>, MetadataError> {
    let kind = T::KIND.name();
    value.validate().map_err(|reason| MetadataError::Invalid { kind, reason })?;
    let mut out = postcard::to_extend(value, vec![0u8; METADATA_HEADER_BYTES])
        .map_err(|e| MetadataError::Decode { kind, reason: format!("cannot encode: {e}") })?;
    let body_len = (out.len() - METADATA_HEADER_BYTES) as u64;
    if body_len > MAX_METADATA_BODY_BYTES {
        return Err(MetadataError::BodyTooLarge { declared: body_len, max: MAX_METADATA_BODY_BYTES });
    }
    let hash = blake3::hash(&out[METADATA_HEADER_BYTES..]);
    out[META_MAGIC_OFFSET..META_VERSION_OFFSET].copy_from_slice(&METADATA_MAGIC);
    out[META_VERSION_OFFSET..META_KIND_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[META_KIND_OFFSET..META_RESERVED_OFFSET].copy_from_slice(&(T::KIND as u16).to_le_bytes());
    out[META_RESERVED_OFFSET..META_BODY_LEN_OFFSET].copy_from_slice(&0u32.to_le_bytes());
    out[META_BODY_LEN_OFFSET..META_BODY_HASH_OFFSET].copy_from_slice(&body_len.to_le_bytes());
    out[META_BODY_HASH_OFFSET..METADATA_HEADER_BYTES].copy_from_slice(hash.as_bytes());
    Ok(out)
}

/// The header fields of a metadata file, checked for magic, version and reserved bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataHeader {
    /// Kind code (may be unknown to this build).
    pub kind_code: u16,
    /// Declared body length (at most `MAX_METADATA_BODY_BYTES`).
    pub body_len: u64,
    /// BLAKE3 of the body.
    pub body_hash: [u8; 32],
}

/// Parses and checks a metadata header from the first `METADATA_HEADER_BYTES` of `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<MetadataHeader, MetadataError> {
    let Some(header) = bytes.get(..METADATA_HEADER_BYTES) else {
        return Err(MetadataError::Truncated { len: bytes.len() as u64, needed: METADATA_HEADER_BYTES as u64 });
    };
    let magic: [u8; 8] = array(header, META_MAGIC_OFFSET);
    if magic != METADATA_MAGIC {
        return Err(MetadataError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes(array(header, META_VERSION_OFFSET));
    if version != FORMAT_VERSION {
        return Err(MetadataError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let reserved = u32::from_le_bytes(array(header, META_RESERVED_OFFSET));
    if reserved != 0 {
        return Err(MetadataError::ReservedNotZero { found: reserved });
    }
    let body_len = u64::from_le_bytes(array(header, META_BODY_LEN_OFFSET));
    if body_len > MAX_METADATA_BODY_BYTES {
        return Err(MetadataError::BodyTooLarge { declared: body_len, max: MAX_METADATA_BODY_BYTES });
    }
    Ok(MetadataHeader {
        kind_code: u16::from_le_bytes(array(header, META_KIND_OFFSET)),
        body_len,
        body_hash: array(header, META_BODY_HASH_OFFSET),
    })
}

/// Decodes a complete metadata file of kind `T`: header checks, exact length, body hash, postcard decoding with
/// every count bounded by `limits`, no trailing bytes, then `T::validate`.
pub fn decode<T: Metadata>(bytes: &[u8]) -> Result<T, MetadataError> {
    let kind = T::KIND.name();
    let header = parse_header(bytes)?;
    if header.kind_code != T::KIND as u16 {
        let found = MetadataKind::from_code(header.kind_code)
            .map_or_else(|| format!("unknown code {}", header.kind_code), |k| k.name().to_string());
        return Err(MetadataError::WrongKind { expected: kind, found });
    }
    let body = &bytes[METADATA_HEADER_BYTES..];
    if body.len() as u64 != header.body_len {
        return Err(MetadataError::LengthMismatch { declared: header.body_len, actual: body.len() as u64 });
    }
    let found = blake3::hash(body);
    if found.as_bytes() != &header.body_hash {
        return Err(MetadataError::ChecksumMismatch {
            expected: blake3::Hash::from(header.body_hash).to_hex().to_string(),
            found: found.to_hex().to_string(),
        });
    }
    decode_body(body)
}

/// Decodes a body without its header (no hash check). The fuzzers call this directly so that they reach the
/// decoder without having to forge a hash; `decode` is what readers use.
pub fn decode_body<T: Metadata>(body: &[u8]) -> Result<T, MetadataError> {
    let kind = T::KIND.name();
    LIMIT_VIOLATION.with(|v| v.borrow_mut().take());
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(|e| {
        let reason = LIMIT_VIOLATION.with(|v| v.borrow_mut().take()).unwrap_or_else(|| e.to_string());
        MetadataError::Decode { kind, reason }
    })?;
    if !rest.is_empty() {
        return Err(MetadataError::TrailingBytes { kind, extra: rest.len() as u64 });
    }
    value.validate().map_err(|reason| MetadataError::Invalid { kind, reason })?;
    Ok(value)
}

// postcard drops the text of custom decode errors, so the bounded decoders below leave the limit they hit here for
// `decode_body` to report. Decoding is synchronous, so a thread-local is exact.
thread_local! {
    static LIMIT_VIOLATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn limit_error<E: serde::de::Error>(reason: String) -> E {
    let err = E::custom(&reason);
    LIMIT_VIOLATION.with(|v| *v.borrow_mut() = Some(reason));
    err
}

/// Most elements a bounded sequence preallocates, whatever length its prefix claims: a short hostile body cannot
/// make the decoder reserve a large vector.
const PREALLOCATE_MAX: usize = 1024;

struct BoundedSeq<T> {
    max: usize,
    what: &'static str,
    marker: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for BoundedSeq<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a list of at most {} {}", self.max, self.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let claimed = seq.size_hint().unwrap_or(0);
        if claimed > self.max {
            return Err(limit_error(format!("{claimed} {} exceeds the limit of {}", self.what, self.max)));
        }
        let mut out = Vec::with_capacity(claimed.min(PREALLOCATE_MAX));
        while let Some(item) = seq.next_element()? {
            if out.len() == self.max {
                return Err(limit_error(format!("more {} than the limit of {}", self.what, self.max)));
            }
            out.push(item);
        }
        Ok(out)
    }
}

/// Deserializes a `Vec<T>` of at most `max` entries, failing before it allocates more.
pub(crate) fn bounded_vec<'de, D, T>(d: D, max: usize, what: &'static str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(BoundedSeq { max, what, marker: PhantomData })
}

struct BoundedStr {
    max: usize,
    what: &'static str,
}

impl Visitor<'_> for BoundedStr {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a {} of at most {} bytes", self.what, self.max)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        if v.len() > self.max {
            return Err(limit_error(format!("{} of {} bytes exceeds the limit of {}", self.what, v.len(), self.max)));
        }
        Ok(v.to_owned())
    }
}

/// Deserializes a UTF-8 string of at most `max` bytes, checking the length before copying it.
pub(crate) fn bounded_string<'de, D: Deserializer<'de>>(
    d: D,
    max: usize,
    what: &'static str,
) -> Result<String, D::Error> {
    d.deserialize_str(BoundedStr { max, what })
}

/// Fails with `what` when `items` is longer than `max` (the writer-side twin of `bounded_vec`).
pub(crate) fn check_len(len: usize, max: usize, what: &str) -> Result<(), String> {
    if len > max {
        Err(format!("{len} {what} exceeds the limit of {max}"))
    } else {
        Ok(())
    }
}

/// Fails unless `name` is 1..=`MAX_NAME_BYTES` bytes with no NUL and no `/` (names are ids, never paths).
pub(crate) fn check_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > crate::limits::MAX_NAME_BYTES {
        return Err(format!(
            "{what} {name:?} must be 1 to {} bytes long, it is {}",
            crate::limits::MAX_NAME_BYTES,
            name.len()
        ));
    }
    if name.contains(['\0', '/']) {
        return Err(format!("{what} {name:?} contains a NUL or '/'"));
    }
    Ok(())
}
