//! `backset-copier`: the io_uring copy engine with BLAKE3 on the fly and a per-SM rate limit.
//!
//! See DESIGN.md, "The copier" and "Rate limit".

pub mod limit;
