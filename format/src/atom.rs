//! Atom files: a fixed header (atom id, LSN, body length, BLAKE3 of the body) and the SM's opaque body.
//!
//! ```text
//! | magic (8) | version (2) | reserved (6) | atom id (8) | LSN (8) | body length (8) | body BLAKE3 (32) | check (8) | body ...
//! ```

use crate::error::AtomError;
use crate::fixed::{array, check64, put, u16_at, u64_at};
use crate::limits::MAX_ATOM_BODY_BYTES;
use crate::meta::FORMAT_VERSION;

/// Magic of an atom file (see `METADATA_MAGIC` for the rationale; `BKA` names the family).
pub const ATOM_MAGIC: [u8; 8] = *b"\x89BKA\r\n\x1a\n";

/// Offset of the magic.
pub const ATOM_MAGIC_OFFSET: usize = 0;
/// Offset of the format version (u16).
pub const ATOM_VERSION_OFFSET: usize = ATOM_MAGIC_OFFSET + 8;
/// Offset of the reserved bytes (6, zero).
pub const ATOM_RESERVED_OFFSET: usize = ATOM_VERSION_OFFSET + 2;
/// Offset of the atom id (u64).
pub const ATOM_ID_OFFSET: usize = ATOM_RESERVED_OFFSET + 6;
/// Offset of the LSN (u64).
pub const ATOM_LSN_OFFSET: usize = ATOM_ID_OFFSET + 8;
/// Offset of the body length (u64).
pub const ATOM_BODY_LEN_OFFSET: usize = ATOM_LSN_OFFSET + 8;
/// Offset of the BLAKE3 of the body (32 bytes).
pub const ATOM_BODY_HASH_OFFSET: usize = ATOM_BODY_LEN_OFFSET + 8;
/// Offset of the header check (u64: BLAKE3 of bytes 0..72, first 8 bytes).
pub const ATOM_CHECK_OFFSET: usize = ATOM_BODY_HASH_OFFSET + 32;
/// Size of the atom header; the body starts here.
pub const ATOM_HEADER_BYTES: usize = ATOM_CHECK_OFFSET + 8;
const _: () = assert!(ATOM_HEADER_BYTES == 80);

/// The header of an atom file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomHeader {
    /// Atom id.
    pub atom_id: u64,
    /// Log sequence number: the last transaction id applied to the atom.
    pub lsn: u64,
    /// Body length in bytes.
    pub body_len: u64,
    /// BLAKE3 of the body.
    pub body_hash: [u8; 32],
}

impl AtomHeader {
    /// The header for `body`.
    pub fn for_body(atom_id: u64, lsn: u64, body: &[u8]) -> Self {
        Self { atom_id, lsn, body_len: body.len() as u64, body_hash: *blake3::hash(body).as_bytes() }
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; ATOM_HEADER_BYTES] {
        let mut b = [0u8; ATOM_HEADER_BYTES];
        put(&mut b, ATOM_MAGIC_OFFSET, &ATOM_MAGIC);
        put(&mut b, ATOM_VERSION_OFFSET, &FORMAT_VERSION.to_le_bytes());
        put(&mut b, ATOM_ID_OFFSET, &self.atom_id.to_le_bytes());
        put(&mut b, ATOM_LSN_OFFSET, &self.lsn.to_le_bytes());
        put(&mut b, ATOM_BODY_LEN_OFFSET, &self.body_len.to_le_bytes());
        put(&mut b, ATOM_BODY_HASH_OFFSET, &self.body_hash);
        let check = check64(&[&b[..ATOM_CHECK_OFFSET]]);
        put(&mut b, ATOM_CHECK_OFFSET, &check.to_le_bytes());
        b
    }

    /// Parses and checks the header at the start of `bytes` (the body is not read).
    pub fn parse(bytes: &[u8]) -> Result<Self, AtomError> {
        let bad = |reason: String| AtomError::BadHeader { reason };
        let Some(b) = bytes.get(..ATOM_HEADER_BYTES) else {
            return Err(bad(format!("{} bytes, a header needs {ATOM_HEADER_BYTES}", bytes.len())));
        };
        let magic: [u8; 8] = array(b, ATOM_MAGIC_OFFSET);
        if magic != ATOM_MAGIC {
            return Err(bad(format!("magic is {magic:02x?}")));
        }
        if u64_at(b, ATOM_CHECK_OFFSET) != check64(&[&b[..ATOM_CHECK_OFFSET]]) {
            return Err(bad("header check mismatch".into()));
        }
        let version = u16_at(b, ATOM_VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(bad(format!("format version {version}, this build reads {FORMAT_VERSION}")));
        }
        if b[ATOM_RESERVED_OFFSET..ATOM_ID_OFFSET].iter().any(|&x| x != 0) {
            return Err(bad("reserved bytes are not zero".into()));
        }
        let body_len = u64_at(b, ATOM_BODY_LEN_OFFSET);
        if body_len > MAX_ATOM_BODY_BYTES {
            return Err(bad(format!("body length {body_len} exceeds the limit of {MAX_ATOM_BODY_BYTES}")));
        }
        Ok(Self {
            atom_id: u64_at(b, ATOM_ID_OFFSET),
            lsn: u64_at(b, ATOM_LSN_OFFSET),
            body_len,
            body_hash: array(b, ATOM_BODY_HASH_OFFSET),
        })
    }

    /// Checks that `body` is exactly this header's body.
    pub fn verify_body(&self, body: &[u8]) -> Result<(), AtomError> {
        if body.len() as u64 != self.body_len {
            return Err(AtomError::LengthMismatch {
                atom_id: self.atom_id,
                declared: self.body_len,
                actual: body.len() as u64,
            });
        }
        if blake3::hash(body).as_bytes() != &self.body_hash {
            return Err(AtomError::ChecksumMismatch { atom_id: self.atom_id });
        }
        Ok(())
    }
}

/// A complete atom file: header then body. Refuses a body over `MAX_ATOM_BODY_BYTES`.
pub fn encode_atom(atom_id: u64, lsn: u64, body: &[u8]) -> Result<Vec<u8>, AtomError> {
    if body.len() as u64 > MAX_ATOM_BODY_BYTES {
        return Err(AtomError::BadHeader {
            reason: format!("body of {} bytes exceeds the limit of {MAX_ATOM_BODY_BYTES}", body.len()),
        });
    }
    let mut out = Vec::with_capacity(ATOM_HEADER_BYTES + body.len());
    out.extend_from_slice(&AtomHeader::for_body(atom_id, lsn, body).encode());
    out.extend_from_slice(body);
    Ok(out)
}

/// Parses a complete atom file and checks its body; returns the header and the body.
pub fn decode_atom(bytes: &[u8]) -> Result<(AtomHeader, &[u8]), AtomError> {
    let header = AtomHeader::parse(bytes)?;
    let body = &bytes[ATOM_HEADER_BYTES..];
    header.verify_body(body)?;
    Ok((header, body))
}
