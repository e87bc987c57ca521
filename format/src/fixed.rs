//! Helpers for the fixed little-endian headers.

/// The `N` bytes of `bytes` at `offset`. Callers have checked the length.
pub(crate) fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

pub(crate) fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(array(bytes, offset))
}

pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(array(bytes, offset))
}

pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(array(bytes, offset))
}

pub(crate) fn put(out: &mut [u8], offset: usize, value: &[u8]) {
    out[offset..offset + value.len()].copy_from_slice(value);
}

/// The 8-byte check of a fixed header or record: the first 8 bytes of BLAKE3 over `parts`, read as a u64 LE.
pub(crate) fn check64(parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    u64_at(h.finalize().as_bytes(), 0)
}
