//! The reference store's encodings: atom bodies and journal record payloads.
//!
//! Both are the [postcard](https://docs.rs/postcard) encodings of plain Rust values, written and read by hand so
//! that large byte strings are copied in one piece rather than byte by byte through serde (a test checks the bytes
//! against `postcard::to_allocvec`):
//!
//! - **atom body**: `Vec<(Vec<u8>, Vec<u8>)>`, the atom's key/value pairs in strictly increasing key order:
//!   a varint count, then per pair a varint key length, the key, a varint value length, the value.
//! - **record payload**: `Vec<Op>` with `Op { atom_id: u64, key: Vec<u8>, value: Option<Vec<u8>> }` (`None`: a
//!   delete): a varint count, then per op a varint atom id, a varint key length and the key, then `0` for a delete
//!   or `1`, a varint value length and the value for a put.
//!
//! Varints are LEB128, as postcard writes every integer wider than a byte.

use std::collections::BTreeMap;

/// One change of a transaction to one key, as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Atom holding the key.
    pub atom_id: u64,
    /// The key.
    pub key: Vec<u8>,
    /// The new value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// Bytes of the LEB128 varint of `v`.
pub(crate) fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes one key/value pair takes in an atom body.
pub(crate) fn entry_len(key: &[u8], value: &[u8]) -> u64 {
    varint_len(key.len() as u64) + key.len() as u64 + varint_len(value.len() as u64) + value.len() as u64
}

/// Encodes an atom body from pairs in strictly increasing key order.
pub(crate) fn encode_body<'a>(count: usize, entries: impl Iterator<Item = (&'a [u8], &'a [u8])>, out: &mut Vec<u8>) {
    put_varint(out, count as u64);
    for (k, v) in entries {
        put_varint(out, k.len() as u64);
        out.extend_from_slice(k);
        put_varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
}

/// Encodes a record payload.
pub(crate) fn encode_payload(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_len(ops) as usize);
    put_varint(&mut out, ops.len() as u64);
    for op in ops {
        put_varint(&mut out, op.atom_id);
        put_varint(&mut out, op.key.len() as u64);
        out.extend_from_slice(&op.key);
        match &op.value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                put_varint(&mut out, v.len() as u64);
                out.extend_from_slice(v);
            }
        }
    }
    out
}

/// Bytes [`encode_payload`] writes for `ops`, without encoding them.
pub(crate) fn payload_len(ops: &[Op]) -> u64 {
    varint_len(ops.len() as u64)
        + ops
            .iter()
            .map(|op| {
                varint_len(op.atom_id)
                    + varint_len(op.key.len() as u64)
                    + op.key.len() as u64
                    + 1
                    + op.value.as_ref().map_or(0, |v| varint_len(v.len() as u64) + v.len() as u64)
            })
            .sum::<u64>()
}

/// A cursor over encoded bytes; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b =
                *self.bytes.get(self.pos).ok_or_else(|| format!("varint runs past the end at byte {}", self.pos))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(format!("varint overflows 64 bits at byte {}", self.pos - 1));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()?;
        let rest = self.bytes.len() - self.pos;
        if len > rest as u64 {
            return Err(format!("byte string of {len} bytes at byte {} runs past the end ({rest} left)", self.pos));
        }
        let s = &self.bytes[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(s)
    }

    fn count(&mut self, min_item_bytes: usize) -> Result<usize, String> {
        let n = self.varint()?;
        let rest = (self.bytes.len() - self.pos) as u64;
        if n > rest / min_item_bytes as u64 {
            return Err(format!("list of {n} items cannot fit in the {rest} bytes left"));
        }
        Ok(n as usize)
    }

    fn finish(&self) -> Result<(), String> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.bytes.len() - self.pos))
        }
    }
}

/// Decodes an atom body; checks that keys strictly increase and that no byte is left over.
pub(crate) fn decode_body(bytes: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let n = c.count(2)?;
    let mut map = BTreeMap::new();
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n {
        let k = c.bytes()?;
        let v = c.bytes()?;
        if prev.is_some_and(|p| p >= k) {
            return Err(format!("keys are not in strictly increasing order at byte {}", c.pos));
        }
        prev = Some(k);
        map.insert(k.to_vec(), v.to_vec());
    }
    c.finish()?;
    Ok(map)
}

/// Decodes a record payload.
pub(crate) fn decode_payload(bytes: &[u8]) -> Result<Vec<Op>, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let n = c.count(3)?;
    let mut ops = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let atom_id = c.varint()?;
        let key = c.bytes()?.to_vec();
        let tag = *c.bytes.get(c.pos).ok_or("op tag runs past the end")?;
        c.pos += 1;
        let value = match tag {
            0 => None,
            1 => Some(c.bytes()?.to_vec()),
            t => return Err(format!("op tag {t} at byte {} (0 delete, 1 put)", c.pos - 1)),
        };
        ops.push(Op { atom_id, key, value });
    }
    c.finish()?;
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct PostcardOp {
        atom_id: u64,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    }

    #[test]
    fn body_and_payload_are_postcard() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> =
            vec![(b"a".to_vec(), vec![7u8; 300]), (b"b".to_vec(), vec![]), (vec![b'c'; 200], b"x".to_vec())];
        let mut body = Vec::new();
        encode_body(pairs.len(), pairs.iter().map(|(k, v)| (&k[..], &v[..])), &mut body);
        assert_eq!(body, postcard::to_allocvec(&pairs).unwrap());
        assert_eq!(decode_body(&body).unwrap(), pairs.iter().cloned().collect::<BTreeMap<_, _>>());
        assert_eq!(body.len() as u64, varint_len(3) + pairs.iter().map(|(k, v)| entry_len(k, v)).sum::<u64>());

        let ops = vec![
            Op { atom_id: 1 << 40, key: b"k".to_vec(), value: Some(vec![1; 130]) },
            Op { atom_id: 3, key: b"d".to_vec(), value: None },
        ];
        let p = encode_payload(&ops);
        let pc: Vec<PostcardOp> =
            ops.iter().map(|o| PostcardOp { atom_id: o.atom_id, key: o.key.clone(), value: o.value.clone() }).collect();
        assert_eq!(p, postcard::to_allocvec(&pc).unwrap());
        assert_eq!(p.len() as u64, payload_len(&ops));
        assert_eq!(decode_payload(&p).unwrap(), ops);
    }

    #[test]
    fn decoders_refuse_damage() {
        let mut body = Vec::new();
        encode_body(2, [(&b"b"[..], &b"1"[..]), (&b"a"[..], &b"2"[..])].into_iter(), &mut body);
        assert!(decode_body(&body).unwrap_err().contains("increasing"));
        assert!(decode_body(&[0xff; 11]).is_err());
        assert!(decode_body(&[200, 1]).unwrap_err().contains("cannot fit"));
        let p = encode_payload(&[Op { atom_id: 1, key: b"k".to_vec(), value: None }]);
        assert!(decode_payload(&p[..p.len() - 1]).is_err());
        let mut extra = p.clone();
        extra.push(0);
        assert!(decode_payload(&extra).unwrap_err().contains("trailing"));
        for v in [0u64, 127, 128, 16383, 16384, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len() as u64, varint_len(v));
        }
    }
}
